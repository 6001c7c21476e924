"""`python app.py` synthesizes without error, offline and without AWS credentials or a default region."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_app_py_writes_a_cloud_assembly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        CDK_OUTDIR=str(tmp_path),
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        # Any attempt to reach AWS would fail fast instead of finding credentials on the machine.
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )

    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "manifest.json").is_file()
    templates = list(tmp_path.glob("*.template.json"))
    assert [t.name for t in templates] == ["FmbenchFlow.template.json"]
    resource_types = {r["Type"] for r in json.loads(templates[0].read_text())["Resources"].values()}
    assert {"AWS::S3::Bucket", "AWS::Glue::Database", "AWS::Glue::Table", "AWS::Athena::WorkGroup"} <= (
        resource_types
    )
