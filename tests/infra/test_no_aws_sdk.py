"""Synthesizing the stack loads no AWS SDK: cdk synth must work where boto3 would find no use (and no creds).

import-linter's infra-without-aws-sdk contract (pyproject.toml) checks the static imports; this checks what a
real build and synth actually load, including anything imported by name at run time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SDK_MODULES = ("boto3", "botocore", "aiobotocore", "sagemaker")


def test_building_and_synthesizing_the_app_leaves_the_aws_sdk_unloaded(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from infra.app import build_app\n"
        f"build_app(outdir={str(tmp_path / 'cdk.out')!r}).app.synth()\n"
        f"print(json.dumps([m for m in {SDK_MODULES!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "cdk.out" / "FmbenchFlow.template.json").is_file()
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
