"""`fmbench start` and `fmbench status` against moto (CloudFormation, Step Functions, S3); the examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from fmbench.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_REGRESSED, main
from fmbench.cloud.checks import cloud_suite_problems
from fmbench.suite import load_suite
from report.execution_output import BranchCounts, ExecutionOutput
from report.result import SloSummary

REGION = "us-east-1"
BUCKET = "fmbench-results-cli"
ROLE_ARN = "arn:aws:iam::123456789012:role/fmbench-states"
RUN_ID = "20250102T030405Z-cafe01"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
REPORT_FILES = {"report.md": b"# report\n", "report.html": b"<html></html>\n", "summary.parquet": b"PAR1"}


def suite_document() -> dict[str, Any]:
    return {
        "name": "cli-suite",
        "targets": [
            {"name": "haiku", "platform": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
            {"name": "mine", "platform": "sagemaker", "endpoint_name": "my-endpoint"},
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1, 2], "requests_per_level": 5},
    }


def result_document() -> dict[str, Any]:
    prefix = f"s3://{BUCKET}/reports/run_id={RUN_ID}"
    return {
        "run_id": RUN_ID,
        "status": "succeeded",
        "best": None,
        "branches": [
            {"branch_id": "haiku-1", "status": "succeeded", "records_written": 10, "reason": None},
            {"branch_id": "mine-2", "status": "succeeded", "records_written": 10, "deployment_s": None},
        ],
        "artifacts": {
            "report_md": f"{prefix}/report.md",
            "report_html": f"{prefix}/report.html",
            "result_json": f"{prefix}/result.json",
        },
    }


def execution_output_document() -> dict[str, Any]:
    """What the Render state returns as the execution's output: the summary pointing to result.json."""
    prefix = f"s3://{BUCKET}/reports/run_id={RUN_ID}"
    output = ExecutionOutput(
        run_id=RUN_ID,
        suite_name="cli-suite",
        generated_at=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
        status="succeeded",
        branches=BranchCounts(total=2, succeeded=2, partial=0, failed=0),
        slo=SloSummary(p95_latency_s=None, p95_ttft_s=None, max_error_rate=0.05),
        headline_bin=None,
        best=None,
        best_per_bin=[],
        result_json=f"{prefix}/result.json",
        report_html=f"{prefix}/report.html",
        report_md=f"{prefix}/report.md",
        report_prefix=f"{prefix}/",
    )
    return output.model_dump(mode="json")


def workflow_definition() -> str:
    """A stand-in with the real one's shape: Plan, a Map over the branches with per-branch states, Render."""
    branches = [{"branch_id": "haiku-1"}, {"branch_id": "mine-2"}]
    return json.dumps(
        {
            "StartAt": "Plan",
            "States": {
                "Plan": {"Type": "Pass", "Result": {"branches": branches}, "Next": "Branches"},
                "Branches": {
                    "Type": "Map",
                    "ItemsPath": "$.branches",
                    "ResultPath": None,
                    "Iterator": {
                        "StartAt": "RunLoad",
                        "States": {
                            "RunLoad": {"Type": "Pass", "Next": "Teardown"},
                            "Teardown": {"Type": "Pass", "End": True},
                        },
                    },
                    "Next": "Render",
                },
                "Render": {"Type": "Pass", "Result": execution_output_document(), "End": True},
            },
        }
    )


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def stepfunctions(mocked_aws: None) -> Any:
    return boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def state_machine(stepfunctions: Any) -> str:
    created = stepfunctions.create_state_machine(
        name="FmbenchWorkflow", definition=workflow_definition(), roleArn=ROLE_ARN
    )
    return str(created["stateMachineArn"])


@pytest.fixture
def stack(mocked_aws: None, state_machine: str) -> str:
    """The deployed stack as the CLI finds it: only its StateMachineArn output matters."""
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"StateMachineArn": {"Value": state_machine}},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="FmbenchFlow", TemplateBody=json.dumps(template)
    )
    return "FmbenchFlow"


@pytest.fixture
def s3(mocked_aws: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    for name, body in {**REPORT_FILES, "result.json": json.dumps(result_document()).encode()}.items():
        client.put_object(Bucket=BUCKET, Key=f"reports/run_id={RUN_ID}/{name}", Body=body)
    return client


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite_document()), encoding="utf-8")
    return path


def executions(stepfunctions: Any, machine: str) -> list[dict[str, Any]]:
    return list(stepfunctions.list_executions(stateMachineArn=machine)["executions"])


# -------------------------------------------------------------------------------------------- start


def test_start_runs_the_suite_as_an_execution_named_after_the_run(
    stack: str, state_machine: str, stepfunctions: Any, suite_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["start", str(suite_file), "--run-id", RUN_ID]) == EXIT_OK

    started = executions(stepfunctions, state_machine)
    assert [e["name"] for e in started] == [RUN_ID]
    described = stepfunctions.describe_execution(executionArn=started[0]["executionArn"])
    assert json.loads(described["input"]) == suite_document()
    out = capsys.readouterr().out
    assert f"Started run {RUN_ID}" in out
    assert f"fmbench status {RUN_ID}" in out


def test_start_wait_follows_each_branch_and_downloads_the_report(
    stack: str, s3: Any, suite_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code = main(
        [
            "start",
            str(suite_file),
            "--run-id",
            RUN_ID,
            "--wait",
            "--out",
            str(out_dir),
            "--poll-interval-s",
            "0.05",
        ]
    )

    assert code == EXIT_OK
    printed = capsys.readouterr().out
    for line in (
        "Plan",
        "haiku-1: RunLoad",
        "haiku-1: Teardown",
        "mine-2: RunLoad",
        "mine-2: Teardown",
        "Render",
    ):
        assert line in printed
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*REPORT_FILES, "result.json"])
    assert (out_dir / "report.md").read_bytes() == REPORT_FILES["report.md"]
    assert json.loads((out_dir / "result.json").read_text())["run_id"] == RUN_ID
    # The execution's output is a summary; the branch table comes from the downloaded result.json.
    assert "Result of run " + RUN_ID in printed and "mine-2" in printed


def test_an_invalid_suite_starts_nothing(
    stack: str, state_machine: str, stepfunctions: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = suite_document()
    broken["load"]["requests_per_level"] = 0
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert main(["start", str(path)]) == EXIT_INVALID
    assert "load.requests_per_level" in capsys.readouterr().err

    local_dataset = suite_document()
    local_dataset["workload"]["dataset"] = {"source": "prompts.jsonl"}
    (tmp_path / "prompts.jsonl").write_text(
        "\n".join(json.dumps({"context": "word " * 80, "question": "why?"}) for _ in range(3)) + "\n",
        encoding="utf-8",
    )
    path.write_text(yaml.safe_dump(local_dataset), encoding="utf-8")
    assert main(["start", str(path)]) == EXIT_INVALID
    message = capsys.readouterr().err
    assert "workload.dataset.source: a local file is not uploaded with the suite: copy it to S3" in message
    assert executions(stepfunctions, state_machine) == []


def test_start_without_the_stack_says_so(
    mocked_aws: None, suite_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["start", str(suite_file), "--stack", "Missing"]) == EXIT_FAILED
    assert "stack Missing does not exist" in capsys.readouterr().err


def test_start_with_a_state_machine_arn_needs_no_stack(
    state_machine: str, stepfunctions: Any, suite_file: Path
) -> None:
    assert (
        main(["start", str(suite_file), "--state-machine-arn", state_machine, "--run-id", RUN_ID]) == EXIT_OK
    )
    assert [e["name"] for e in executions(stepfunctions, state_machine)] == [RUN_ID]


def test_start_wait_exits_3_when_the_run_regressed(
    stepfunctions: Any,
    s3: Any,
    state_machine: str,
    suite_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The verdict is read from result.json in S3 (the execution's output is only a summary of it)."""
    regressed = {
        **result_document(),
        "regression": {
            "baseline_run_id": "20250101T030405Z-beef01",
            "verdict": "regressed",
            "regressed_metrics": ["latency_p95"],
        },
    }
    s3.put_object(
        Bucket=BUCKET, Key=f"reports/run_id={RUN_ID}/result.json", Body=json.dumps(regressed).encode()
    )
    arguments = [
        "start",
        str(suite_file),
        "--state-machine-arn",
        state_machine,
        "--wait",
        "--out",
        str(tmp_path),
    ]
    code = main([*arguments, "--run-id", RUN_ID, "--poll-interval-s", "0.05"])
    assert code == EXIT_REGRESSED
    assert "regressed: latency_p95" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- status


def test_status_shows_the_run_its_branches_and_its_report(
    stack: str, s3: Any, suite_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "start",
            str(suite_file),
            "--run-id",
            RUN_ID,
            "--wait",
            "--out",
            str(tmp_path),
            "--poll-interval-s",
            "0.05",
        ]
    )
    capsys.readouterr()

    assert main(["status", RUN_ID]) == EXIT_OK

    printed = capsys.readouterr().out
    assert f"Run {RUN_ID}: SUCCEEDED" in printed
    assert "haiku-1" in printed and "Teardown" in printed
    assert f"Result of run {RUN_ID}: succeeded (2 succeeded, 0 partial, 0 failed of 2 branches)" in printed
    assert f"Report: s3://{BUCKET}/reports/run_id={RUN_ID}/report.html" in printed


def test_status_of_an_unknown_run(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "no-such-run"]) == EXIT_FAILED
    assert "no execution" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_validates_offline_and_can_run_in_the_cloud(path: Path) -> None:
    suite = load_suite(path)
    if path.stem not in {"local-demo", "capacity-search"}:  # emulators run on this machine only
        assert cloud_suite_problems(suite, REGION) == []


def test_the_cloud_examples_are_there() -> None:
    assert {p.stem for p in EXAMPLES} >= {
        "sagemaker-instances",
        "bedrock-models",
        "byo-endpoint",
        "ec2-vllm",
        "eks-byo",
    }
