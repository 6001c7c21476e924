"""A judged run in the cloud: the Evaluate task after the branches, its judgments in S3 and the Glue table,
accuracy per branch in result.json; a failing Evaluate loses only the accuracy; the Plan refuses a judge the
stack may not invoke or the account may not use, before anything runs (docs/accuracy.md, "In the cloud").

The judges are Bedrock model ids answered by an emulator acting as a judge (``judge_error_rate``) through
their ``endpoint_url``; the Plan's availability check reaches Bedrock's control plane through
``AWS_ENDPOINT_URL_BEDROCK``, an emulator too (real botocore against a loopback stand-in).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import RESULTS_BUCKET, DeployedWorkflow
from shims import AthenaShim, s3_object_keys
from test_workflow_execution import by_target, openai_target, published_result, statuses

from fmbench.config import DEFAULT_JUDGES
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings

PROMPTS = 8  # distinct prompts each branch sends (2 levels x 4 requests, each a distinct ticket)
JUDGE_IDS = [judge["model_id"] for judge in DEFAULT_JUDGES]
TIMING: dict[str, Any] = {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 64}
UNAVAILABLE = "anthropic.claude-3-5-haiku-20241022-v1:0"  # the first default judge's model


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    """Judges that never err: a candidate is correct exactly when its answer holds the reference."""
    settings = EmulatorSettings(port=0, model="judge", judge_error_rate=0.0, **TIMING)
    with EmulatorProcess(settings) as emulator:
        yield emulator.url


@pytest.fixture
def bedrock_control_plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Bedrock's GetFoundationModelAvailability for every client: the first default judge is not available."""
    settings = EmulatorSettings(port=0, unavailable_models=(UNAVAILABLE,), **TIMING)
    with EmulatorProcess(settings) as emulator:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", emulator.url)
        yield emulator.url


def judged_suite(name: str, emulator_url: str, judge_url: str, model_ids: list[str]) -> dict[str, Any]:
    s3 = boto3.client("s3")
    key = "datasets/inputs/questions.jsonl"
    # References no filler answer of the emulated target holds: every answer is judged incorrect.
    lines = [
        json.dumps({"id": f"q-{i:02d}", "question": f"What is code {i}?", "answer": f"zebracorn{i}"})
        for i in range(40)
    ]
    s3.put_object(Bucket=RESULTS_BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())
    return {
        "name": name,
        "targets": [openai_target("cand-a", emulator_url), openai_target("cand-b", emulator_url)],
        "workload": {
            "dataset": {"source": f"s3://{RESULTS_BUCKET}/{key}", "ground_truth": "answer"},
            "prompt_template": "Question: {question}\nAnswer:",
            "bins": [{"min_tokens": 1, "max_tokens": 100}],
            "seed": 3,
            "inference": {"max_new_tokens": 6},
        },
        "load": {"concurrency": [1, 2], "requests_per_level": 4, "request_timeout_s": 10},
        "slo": {"p95_latency_s": 5.0},
        "evaluation": {
            "judges": [
                {"name": f"judge-{i}", "model_id": model_id, "endpoint_url": judge_url}
                for i, model_id in enumerate(model_ids)
            ],
            "max_concurrency": 2,
            "retries": 0,
        },
    }


def judgments_of(run_id: str, branch_id: str) -> dict[str, list[Any]]:
    s3 = boto3.client("s3")
    prefix = f"s3://{RESULTS_BUCKET}/evaluations/run_id={run_id}/branch_id={branch_id}/"
    parts = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()))
        for key in sorted(s3_object_keys(s3, prefix))
    ]
    return pa.concat_tables(parts).to_pydict() if parts else {}


def test_a_judged_run_is_evaluated_after_its_branches_and_reports_accuracy_per_branch(
    workflow: DeployedWorkflow, emulator_url: str, judge_url: str, bedrock_control_plane: str
) -> None:
    data = judged_suite("judged", emulator_url, judge_url, JUDGE_IDS[1:])

    execution = workflow.run(data, name="run-judged")

    branches = by_target(execution)
    assert statuses(branches) == {"cand-a": "succeeded", "cand-b": "succeeded"}
    # Two load runners, then one Evaluate task running the real CLI on the run's S3 root.
    evaluate = ["evaluate", f"s3://{RESULTS_BUCKET}", "--run-id", "run-judged"]
    assert workflow.runner.commands == [[], [], evaluate]
    assert [run.exit_code for run in workflow.runner.runs] == [0, 0, 0]
    for branch in branches.values():
        rows = judgments_of("run-judged", branch["branch_id"])
        # every distinct prompt judged once by each of the two judges, all incorrect (no reference held)
        assert len(rows["verdict"]) == PROMPTS * 2
        assert set(rows["verdict"]) == {"incorrect"}
        assert sorted(set(rows["judge_model"])) == sorted(JUDGE_IDS[1:])
        accuracy = branch["accuracy"]
        assert accuracy["judged_prompts"] == PROMPTS
        assert accuracy["majority_incorrect"] == PROMPTS
        assert accuracy["majority_correct"] == 0
        assert accuracy["majority_accuracy"] == 0.0
    # Render's accuracy query ran on the Glue table over the partitions the Plan registered.
    assert any("judgments" in query for query in workflow.athena.queries)
    registered = AthenaShim.registered_partitions("judgments")
    assert registered == {
        f"evaluations/run_id=run-judged/branch_id={branch['branch_id']}/" for branch in branches.values()
    }
    assert published_result("run-judged")["evaluation"] == {
        "status": "judged",
        "error": None,
        "rejudge": None,
    }
    assert execution.output["evaluation"] == published_result("run-judged")["evaluation"]


def test_a_failing_evaluate_task_does_not_fail_the_run_which_is_reported_without_accuracy(
    workflow: DeployedWorkflow, emulator_url: str, judge_url: str, bedrock_control_plane: str
) -> None:
    workflow.runner.break_command = "evaluate"
    data = judged_suite("judged-broken", emulator_url, judge_url, JUDGE_IDS[1:2])

    execution = workflow.run(data, name="run-judged-broken")

    branches = by_target(execution)  # the execution succeeded and published its result.json
    assert statuses(branches) == {"cand-a": "succeeded", "cand-b": "succeeded"}
    assert workflow.runner.commands[-1][0] == "evaluate"
    assert workflow.runner.runs[-1].exit_code != 0  # the real CLI refused the run it was given
    assert all(branch["accuracy"] is None for branch in branches.values())
    assert s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/evaluations/") == []
    assert not any("judgments" in query for query in workflow.athena.queries)
    # result.json and the report say that the Evaluate step failed, why, and how to judge the run again.
    exit_code = workflow.runner.runs[-1].exit_code
    evaluation = published_result("run-judged-broken")["evaluation"]
    assert evaluation["status"] == "failed"
    assert evaluation["error"] == (
        "the Evaluate step failed: States.TaskFailed: the task stopped (Essential container in task exited); "
        f"container evaluator exited with code {exit_code}; its output is in the runner's log group (stream "
        "prefix evaluate)"
    )
    rejudge = f"fmbench evaluate s3://{RESULTS_BUCKET} --run-id run-judged-broken"
    assert evaluation["rejudge"].startswith(f"judge again with `{rejudge}`")
    assert execution.output["evaluation"] == evaluation  # a caller of the API sees it without result.json
    s3 = boto3.client("s3")
    report = s3.get_object(Bucket=RESULTS_BUCKET, Key="reports/run_id=run-judged-broken/report.md")
    markdown = report["Body"].read().decode()
    section = markdown.split("## Accuracy\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip().startswith(
        "**Accuracy: not judged**: the Evaluate step failed: States.TaskFailed: "
    )
    assert f"container evaluator exited with code {exit_code}" in section
    assert f"`{rejudge}`" in section and "report-only execution" in section
    # Recorded beside the outcomes: a report-only re-render says the same.
    record = s3.get_object(Bucket=RESULTS_BUCKET, Key="outcomes/run_id=run-judged-broken/evaluation.json")
    assert json.loads(record["Body"].read())["status"] == "failed"
    rerender = workflow.run({"report_only": {"run_id": "run-judged-broken"}}, name="run-judged-broken-again")
    assert rerender.status == "SUCCEEDED", rerender.cause
    assert published_result("run-judged-broken")["evaluation"] == evaluation


@pytest.mark.parametrize(
    ("model_id", "reason"),
    [
        (JUDGE_IDS[0], f"is not available to the account ({UNAVAILABLE}: authorization NOT_AUTHORIZED"),
        ("us.amazon.nova-lite-v1:0", "is not allowed by the stack's judge models (fmbench:judgeModels"),
    ],
)
def test_the_plan_refuses_a_judge_the_stack_may_not_invoke_or_the_account_may_not_use(
    workflow: DeployedWorkflow,
    emulator_url: str,
    judge_url: str,
    bedrock_control_plane: str,
    model_id: str,
    reason: str,
) -> None:
    data = judged_suite("judged-refused", emulator_url, judge_url, [JUDGE_IDS[1], model_id])

    execution = workflow.run(data, name="run-judged-refused")

    assert execution.status == "FAILED"
    assert f"evaluation.judges.1.model_id: {model_id} {reason}" in str(execution.cause)
    assert workflow.runner.runs == []  # nothing ran, nothing was written
    assert s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/specs/") == []


# ------------------------------------------------------------------------------------ SageMaker judge

JUDGE_ENDPOINT = "judge-endpoint"  # the stack's fmbench:judgeEndpoints (conftest.WORKFLOW_CONTEXT)


def create_existing_endpoint(name: str) -> None:
    """An endpoint that exists before the run (judges are not deployed), InService in moto."""
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_model(
        ModelName=f"{name}-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/judge",
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/judge:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "main",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    assert sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"


def sagemaker_judged_suite(
    name: str, emulator_url: str, judge_url: str, endpoint_name: str
) -> dict[str, Any]:
    """One judge, an existing SageMaker endpoint speaking the OpenAI chat API, answered by the judge
    emulator's SageMaker runtime route (the target's endpoint_url)."""
    data = judged_suite(name, emulator_url, judge_url, [])
    judge_target = {
        "name": "sm-judge",
        "platform": "sagemaker",
        "endpoint_name": endpoint_name,
        "payload_format": "vllm-openai",
        "model": "judge",
        "endpoint_url": judge_url,
    }
    data["evaluation"]["judges"] = [{"name": "sm-judge", "target": judge_target}]
    return data


def test_a_sagemaker_judge_of_the_stacks_judge_endpoints_judges_the_run(
    workflow: DeployedWorkflow, emulator_url: str, judge_url: str
) -> None:
    create_existing_endpoint(JUDGE_ENDPOINT)
    data = sagemaker_judged_suite("judged-sm", emulator_url, judge_url, JUDGE_ENDPOINT)

    execution = workflow.run(data, name="run-judged-sm")

    branches = by_target(execution)
    assert statuses(branches) == {"cand-a": "succeeded", "cand-b": "succeeded"}
    assert workflow.runner.commands[-1][0] == "evaluate"
    assert workflow.runner.runs[-1].exit_code == 0
    for branch in branches.values():
        rows = judgments_of("run-judged-sm", branch["branch_id"])
        # every distinct prompt judged once by the endpoint, incorrect (no answer holds its reference)
        assert len(rows["verdict"]) == PROMPTS
        assert set(rows["verdict"]) == {"incorrect"}
        assert set(rows["judge"]) == {"sm-judge"}
        assert branch["accuracy"]["judged_prompts"] == PROMPTS
        assert branch["accuracy"]["majority_incorrect"] == PROMPTS
    assert published_result("run-judged-sm")["evaluation"]["status"] == "judged"


@pytest.mark.parametrize(
    ("endpoint_name", "reason"),
    [
        (
            "other-endpoint",
            "other-endpoint is not allowed by the stack's judge endpoints (fmbench:judgeEndpoints: "
            "judge-endpoint); add it there and deploy the stack again",
        ),
        (
            JUDGE_ENDPOINT,
            "endpoint judge-endpoint does not exist in the stack's region (judges are not deployed: "
            "create it first)",
        ),
    ],
)
def test_the_plan_refuses_a_sagemaker_judge_outside_the_stacks_list_or_not_in_service(
    workflow: DeployedWorkflow, emulator_url: str, judge_url: str, endpoint_name: str, reason: str
) -> None:
    create_existing_endpoint("other-endpoint")  # exists, but the stack may not invoke it
    data = sagemaker_judged_suite("judged-sm-refused", emulator_url, judge_url, endpoint_name)

    execution = workflow.run(data, name="run-judged-sm-refused")

    assert execution.status == "FAILED"
    assert f"evaluation.judges.0.target.endpoint_name: {reason}" in str(execution.cause)
    assert workflow.runner.runs == []  # nothing ran, nothing was written
    assert s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/specs/") == []


def test_a_quality_pass_in_the_cloud_is_judged_instead_of_the_load_and_stays_out_of_the_load_figures(
    workflow: DeployedWorkflow, emulator_url: str, judge_url: str, bedrock_control_plane: str
) -> None:
    data = judged_suite("judged-quality", emulator_url, judge_url, JUDGE_IDS[1:2])
    data["targets"] = data["targets"][:1]
    data["evaluation"] |= {"quality_pass": True, "max_answers_per_bin": 5}

    execution = workflow.run(data, name="run-judged-quality")

    (branch,) = by_target(execution).values()
    assert branch["status"] == "succeeded"
    s3 = boto3.client("s3")
    prefix = f"s3://{RESULTS_BUCKET}/records/run_id=run-judged-quality/branch_id={branch['branch_id']}/"
    records = pa.concat_tables(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()))
        for key in sorted(s3_object_keys(s3, prefix))
    ).to_pydict()
    quality = [
        rid for rid, phase in zip(records["request_id"], records["phase"], strict=True) if phase == "quality"
    ]
    assert len(quality) == 5  # the 5 judged prompts of the bin, once each, by the runner task
    assert records["phase"].count("measured") == PROMPTS
    # Judged: the quality answers, not the load's; the load figures count the measured requests only.
    rows = judgments_of("run-judged-quality", branch["branch_id"])
    assert sorted(rows["request_id"]) == sorted(quality)
    assert set(rows["answer_source"]) == {"quality_pass"}
    assert branch["accuracy"]["answer_source"] == "quality_pass"
    assert branch["accuracy"]["judged_prompts"] == 5
    assert sum(point["requests"] for point in branch["load_points"]) == PROMPTS
