"""`python app.py` synthesizes without error, offline, without AWS credentials and without Docker."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "runner_image" / "Dockerfile"


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], Path]:
    """The cloud assembly of `python app.py`, with every way to reach AWS or Docker closed off.

    CDK runs `$CDK_DOCKER` (else `docker` on PATH) when it builds an image asset; both point at a stand-in
    that leaves a mark, so a synth that tried to build would be caught even where Docker exists.
    """
    out = tmp_path_factory.mktemp("cdk.out")
    bin_dir = tmp_path_factory.mktemp("bin")
    mark = bin_dir / "docker-was-called"
    fake_docker = bin_dir / "docker"
    fake_docker.write_text(f'#!/bin/sh\necho "$@" >> {mark}\nexit 1\n')
    fake_docker.chmod(fake_docker.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        CDK_OUTDIR=str(out),
        CDK_DOCKER=str(fake_docker),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
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
    return out, result, mark


def _docker_images(out: Path) -> dict[str, Any]:
    images: dict[str, Any] = json.loads((out / "FmbenchFlow.assets.json").read_text())["dockerImages"]
    return images


def test_app_py_writes_a_cloud_assembly(
    assembly: tuple[Path, subprocess.CompletedProcess[str], Path],
) -> None:
    out, result, _ = assembly

    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "manifest.json").is_file()
    templates = list(out.glob("*.template.json"))
    assert [t.name for t in templates] == ["FmbenchFlow.template.json"]
    resource_types = {r["Type"] for r in json.loads(templates[0].read_text())["Resources"].values()}
    assert {
        "AWS::S3::Bucket",
        "AWS::Glue::Database",
        "AWS::Glue::Table",
        "AWS::Athena::WorkGroup",
        "AWS::StepFunctions::StateMachine",
        "AWS::Lambda::Function",
        "AWS::ECS::TaskDefinition",
    } <= resource_types


def test_synth_stages_the_images_without_building_them(
    assembly: tuple[Path, subprocess.CompletedProcess[str], Path],
) -> None:
    out, result, mark = assembly
    assert result.returncode == 0, result.stderr[-4000:]

    assert not mark.exists(), f"synth ran docker: {mark.read_text()}"
    images = _docker_images(out)
    assert sorted(image["source"]["dockerBuildTarget"] for image in images.values()) == ["lambda", "runner"]
    for image in images.values():
        assert image["source"]["dockerFile"] == "runner_image/Dockerfile"
        assert image["source"]["platform"] == "linux/amd64"


def test_the_staged_build_context_holds_what_the_dockerfile_copies_and_nothing_else(
    assembly: tuple[Path, subprocess.CompletedProcess[str], Path],
) -> None:
    out, result, _ = assembly
    assert result.returncode == 0, result.stderr[-4000:]
    copied = [
        source
        for line in DOCKERFILE.read_text().splitlines()
        if (match := re.match(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", line.strip()))
        for source in match.group(1).split()
    ]
    assert copied, "no COPY from the build context found in runner_image/Dockerfile"

    for image in _docker_images(out).values():
        context = out / image["source"]["directory"]
        top_level = {path.name for path in context.iterdir()}
        assert (context / "runner_image" / "Dockerfile").is_file()
        assert all((context / source).exists() for source in copied), copied
        assert {"fmbench", "report", "lambdas", "pyproject.toml", "README.md"} <= top_level
        assert not top_level & {".venv", ".git", "tests", "results", "cdk.out", "infra", "bench"}
