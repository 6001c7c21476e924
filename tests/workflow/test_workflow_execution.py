"""The synthesized state machine, executed by moto: branches succeed, fail, time out, and always tear down.

SageMaker targets are deployed and torn down through moto and invoked at the emulator (which speaks the
SageMaker runtime API: ``endpoint_url``); 'openai' targets call the emulator directly. moto's SageMaker
knows an older list of instance types, hence g4dn rather than g5 below.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import RESULTS_BUCKET, DeployedWorkflow, Execution
from shims import s3_object_keys

from fmbench.cloud import steps as cloud_steps
from fmbench.cloud.limits import branch_history_events, history_events_bound
from report.execution_output import execution_output
from report.result import ResultDocument

DEPLOY = "lambdas.deploy.handler"
STATUS = "lambdas.endpoint_status.handler"
TEARDOWN = "lambdas.teardown.handler"
NOTHING_LEFT: dict[str, list[str]] = {"models": [], "endpoint_configs": [], "endpoints": []}


def sagemaker_target(name: str, emulator_url: str, instance_type: str = "ml.g4dn.xlarge") -> dict[str, Any]:
    return {
        "name": name,
        "platform": "sagemaker",
        "model": "served-model",
        "container": "lmi",
        "payload_format": "lmi",
        "model_source": {"hf_model_id": "example-org/example-model"},
        "instance_type": instance_type,
        "endpoint_url": emulator_url,
    }


def openai_target(name: str, emulator_url: str) -> dict[str, Any]:
    return {"name": name, "platform": "openai", "endpoint_url": f"{emulator_url}/v1", "model": "served-model"}


def suite(name: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "targets": targets,
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "max_prompts_per_bin": 4,
            "inference": {"max_new_tokens": 6},
        },
        "load": {"concurrency": [1, 2], "requests_per_level": 4, "request_timeout_s": 10},
        "slo": {"p95_latency_s": 5.0},
        "execution": {"max_parallel_branches": 3},
    }


def by_target(execution: Execution) -> dict[str, dict[str, Any]]:
    """result.json's branch entries by target name (result.json in S3, where the execution output points)."""
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    document = published_result(execution.output["run_id"])
    assert_output_summarizes(execution.output, document)
    return {branch["target_name"]: branch for branch in document["branches"]}


def assert_output_summarizes(output: dict[str, Any], document: dict[str, Any]) -> None:
    """The execution's output is the bounded summary of the published result.json, pointing to it."""
    expected = execution_output(ResultDocument.model_validate(document)).model_dump(mode="json")
    assert output == expected
    assert output["result_json"] == f"s3://{RESULTS_BUCKET}/reports/run_id={document['run_id']}/result.json"


def statuses(branches: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Status per target, with the reason of each failed one (so that a failing assertion says why)."""
    return {
        name: branch["status"] if branch["status"] == "succeeded" else f"failed: {branch['reason']}"
        for name, branch in branches.items()
    }


def sagemaker_leftovers() -> dict[str, list[str]]:
    sagemaker = boto3.client("sagemaker")
    return {
        "models": [model["ModelName"] for model in sagemaker.list_models()["Models"]],
        "endpoint_configs": [
            config["EndpointConfigName"] for config in sagemaker.list_endpoint_configs()["EndpointConfigs"]
        ],
        "endpoints": [endpoint["EndpointName"] for endpoint in sagemaker.list_endpoints()["Endpoints"]],
    }


def teardown_event_of(workflow: DeployedWorkflow, branch_id: str) -> dict[str, Any]:
    (call,) = [c for c in workflow.lambdas.calls_of(TEARDOWN) if c.event["branch_id"] == branch_id]
    assert call.error_type is None
    event: dict[str, Any] = call.event
    return event


def records_frame(s3: Any, branch_id: str, run_id: str) -> dict[str, list[Any]]:
    """A branch's request records, read from its Parquet parts in S3 in send order."""
    prefix = f"s3://{RESULTS_BUCKET}/records/run_id={run_id}/branch_id={branch_id}/"
    parts = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()))
        for key in sorted(s3_object_keys(s3, prefix))
    ]
    return pa.concat_tables(parts).sort_by("send_epoch_s").to_pydict()


def published_result(run_id: str) -> Any:
    key = f"reports/run_id={run_id}/result.json"
    return json.loads(boto3.client("s3").get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read())


def test_three_branches_succeed_and_everything_deployed_is_deleted(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    targets = [
        sagemaker_target("sm-small", emulator_url, "ml.g4dn.xlarge"),
        sagemaker_target("sm-large", emulator_url, "ml.g4dn.2xlarge"),
        openai_target("byo", emulator_url),
    ]

    execution = workflow.run(suite("three-branches", targets), name="run-three")

    branches = by_target(execution)
    assert statuses(branches) == {
        "sm-small": "succeeded",
        "sm-large": "succeeded",
        "byo": "succeeded",
    }
    assert all(branch["records_written"] == 8 for branch in branches.values())
    # Only the two SageMaker targets deploy; every branch tears down, and nothing is left behind.
    assert sorted(call.event["branch_id"] for call in workflow.lambdas.calls_of(DEPLOY)) == sorted(
        branches[name]["branch_id"] for name in ("sm-small", "sm-large")
    )
    assert len(workflow.lambdas.calls_of(TEARDOWN)) == 3
    assert all("error" not in call.event for call in workflow.lambdas.calls_of(TEARDOWN))
    assert sagemaker_leftovers() == NOTHING_LEFT
    assert sorted(run.exit_code for run in workflow.runner.runs) == [0, 0, 0]
    records = s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/records/run_id=run-three/")
    assert {key.split("/")[2] for key in records} == {
        f"branch_id={b['branch_id']}" for b in branches.values()
    }
    # The metrics came through the Query state (Athena, run by the shim on DuckDB) into the report.
    assert all(len(branch["load_points"]) == 2 for branch in branches.values())
    # The 'openai' runner scraped the emulator's /metrics into S3 and Render reported them per load point;
    # moto's CloudWatch has no datapoints of the SageMaker endpoints, so theirs are absent.
    scraped = s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/server_metrics/run_id=run-three/")
    assert {key.split("/")[2] for key in scraped} == {f"branch_id={branches['byo']['branch_id']}"}
    assert all(point["server"]["running_max"] is not None for point in branches["byo"]["load_points"])
    assert all(
        point["server"] is None
        for name in ("sm-small", "sm-large")
        for point in branches[name]["load_points"]
    )


def test_a_failed_deployment_fails_its_branch_only_and_is_torn_down(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    workflow.sagemaker_faults.fail("sm-broken", "CannotStartContainerError: the container did not start")
    targets = [
        sagemaker_target("sm-ok", emulator_url),
        sagemaker_target("sm-broken", emulator_url),
        openai_target("byo", emulator_url),
    ]

    execution = workflow.run(suite("one-fails", targets), name="run-one-fails")

    branches = by_target(execution)
    assert statuses(branches) == {
        "sm-ok": "succeeded",
        "sm-broken": f"failed: {branches['sm-broken']['reason']}",
        "byo": "succeeded",
    }
    broken = branches["sm-broken"]
    assert broken["reason"].startswith("EndpointFailed: endpoint fmb-")
    assert broken["reason"].endswith("failed: CannotStartContainerError: the container did not start")
    assert teardown_event_of(workflow, broken["branch_id"])["error"]["Error"] == "EndpointFailed"
    # No runner for the broken branch; its model, config and endpoint are gone like everyone else's.
    assert len(workflow.runner.runs) == 2
    assert sagemaker_leftovers() == NOTHING_LEFT


def test_a_failing_runner_task_is_caught_and_its_endpoint_torn_down(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    workflow.runner.break_spec_of("sm-crash")
    targets = [sagemaker_target("sm-crash", emulator_url), openai_target("byo", emulator_url)]

    execution = workflow.run(suite("runner-fails", targets), name="run-runner-fails")

    branches = by_target(execution)
    assert statuses(branches) == {
        "sm-crash": f"failed: {branches['sm-crash']['reason']}",
        "byo": "succeeded",
    }
    crashed = branches["sm-crash"]
    # The runner exited 2 (its spec was not there): the ECS task failed, the Catch sent it to teardown.
    assert sorted(run.exit_code for run in workflow.runner.runs) == [0, 2]
    error = teardown_event_of(workflow, crashed["branch_id"])["error"]
    assert error["Error"] == "States.TaskFailed"
    (container,) = json.loads(error["Cause"])["Containers"]
    assert (container["Name"], container["ExitCode"]) == ("runner", 2)
    assert crashed["reason"].startswith("States.TaskFailed: ")
    assert crashed["records_written"] == 0
    assert sagemaker_leftovers() == NOTHING_LEFT


def test_an_endpoint_that_never_serves_times_out_after_the_poll_bound_and_is_torn_down(
    workflow: DeployedWorkflow, emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This tier's two-minute deployment wait (120 checks, one a second) cut to 3 by the plan's cap.
    monkeypatch.setattr(cloud_steps, "MAX_STATUS_POLLS", 3)
    workflow.sagemaker_faults.never_in_service("sm-stuck")

    execution = workflow.run(suite("stuck", [sagemaker_target("sm-stuck", emulator_url)]), name="run-stuck")

    (stuck,) = by_target(execution).values()
    assert stuck["status"] == "failed"
    assert stuck["reason"].startswith("EndpointTimeout: timeout: endpoint fmb-")
    assert stuck["reason"].endswith("not InService after 3 status polls")
    assert [call.result["status"] for call in workflow.lambdas.calls_of(STATUS)] == ["Creating"] * 3
    assert teardown_event_of(workflow, stuck["branch_id"])["error"]["Error"] == "EndpointTimeout"
    assert workflow.runner.runs == []
    assert sagemaker_leftovers() == NOTHING_LEFT
    assert_history_within_the_plans_bound(execution, polls=3)


def assert_history_within_the_plans_bound(execution: Execution, *, polls: int) -> None:
    """The history moto recorded for one deployed branch stays within the bound the plan enforces.

    Without retries the branch's path has a known count: NeedsDeploy, Deploy, ``polls`` x (Wait,
    EndpointStatus, CountStatusPoll, EndpointReady), EndpointTimedOut, Teardown, BranchResult, BranchFailed,
    and the iteration's start and end (docs/workflow.md, "Limits").
    """
    types = [event["type"] for event in execution.history]
    start, end = types.index("MapIterationStarted"), types.index("MapIterationSucceeded")
    branch_events = end - start + 1
    no_retries = 2 + 2 + 5 + polls * (2 + 5 + 2 + 2) + 2 + 5 + 2 + 2
    assert branch_events == no_retries, types[start : end + 1]
    assert branch_events <= branch_history_events(deploys=True, max_status_polls=polls)
    assert len(types) <= history_events_bound(deployed_branches=1, other_branches=0, max_status_polls=polls)


def test_a_report_only_execution_renders_a_run_again_without_running_a_branch(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    workflow.sagemaker_faults.fail("sm-broken", "CannotStartContainerError: the container did not start")
    targets = [sagemaker_target("sm-broken", emulator_url), openai_target("byo", emulator_url)]
    first = by_target(workflow.run(suite("rendered-twice", targets), name="run-rendered"))
    calls_before, runners_before = len(workflow.lambdas.invocations), len(workflow.runner.runs)

    again = workflow.run({"report_only": {"run_id": "run-rendered"}}, name="run-rendered-again")

    # The Map had no item: no deploy, no status check, no runner, no teardown; Plan and Render ran.
    handlers = [call.handler for call in workflow.lambdas.invocations[calls_before:]]
    assert handlers == ["lambdas.plan.handler", "lambdas.render.handler"]
    assert len(workflow.runner.runs) == runners_before
    rendered = by_target(again)
    assert again.output["run_id"] == "run-rendered"
    # The same branches with the same metrics, and the failed one keeps its reason.
    assert statuses(rendered) == statuses(first)
    assert rendered["sm-broken"]["reason"] == first["sm-broken"]["reason"]
    assert rendered["byo"]["load_points"] == first["byo"]["load_points"]


def test_a_run_over_its_budget_is_refused_at_plan_and_nothing_is_deployed(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    data = suite(
        "over-budget", [sagemaker_target("sm-a", emulator_url), sagemaker_target("sm-b", emulator_url)]
    )
    data["pricing"] = {"instance_price_per_hour_usd": {"ml.g4dn.xlarge": 0.736}}
    data["budget"] = {"max_usd": 0.1}

    execution = workflow.run(data, name="run-over-budget")

    assert execution.status == "FAILED"
    assert execution.error == "BudgetExceededError"
    message = json.loads(execution.cause or "{}")["errorMessage"]
    assert message.startswith("the estimated cost $0.3255 (an upper bound) exceeds budget.max_usd"), message
    assert "sm-a" in message and "sm-b" in message  # the estimate names each branch's share
    assert_nothing_spent(workflow, "run-over-budget")


def test_a_run_beyond_the_endpoint_quota_is_refused_at_plan_and_nothing_is_deployed(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    # Three instances each, up to three branches at once: 6 ml.g4dn.xlarge, where the account allows 4.
    targets = [sagemaker_target(name, emulator_url) | {"instance_count": 3} for name in ("sm-a", "sm-b")]
    data = suite("over-quota", targets)

    execution = workflow.run(data, name="run-over-quota")

    assert execution.status == "FAILED"
    assert execution.error == "QuotaExceededError"
    message = json.loads(execution.cause or "{}")["errorMessage"]
    assert "SageMaker quota 'ml.g4dn.xlarge for endpoint usage' in us-east-1 is 4 instance(s)" in message
    assert "may hold 6 at once" in message, message
    assert_nothing_spent(workflow, "run-over-quota")


def assert_nothing_spent(workflow: DeployedWorkflow, run_id: str) -> None:
    """Refused before anything was created or spent: no deploy, no runner task, no endpoint, no records."""
    assert workflow.lambdas.calls_of(DEPLOY) == []
    assert workflow.runner.runs == []
    assert sagemaker_leftovers() == NOTHING_LEFT
    assert s3_object_keys(boto3.client("s3"), f"s3://{RESULTS_BUCKET}/records/run_id={run_id}/") == []


def test_an_s3_jsonl_dataset_is_materialized_once_and_every_branch_sends_its_prompts(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    s3 = boto3.client("s3")
    lines = [
        json.dumps({"id": f"ticket-{i:02d}", "ticket": f"My order {i} arrived damaged.", "reply": "ok"})
        for i in range(40)
    ]
    key = "datasets/inputs/tickets.jsonl"  # under datasets/, which the plan function may read
    s3.put_object(Bucket=RESULTS_BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())
    data = suite("s3-dataset", [openai_target("byo-a", emulator_url), openai_target("byo-b", emulator_url)])
    data["workload"] = {
        "dataset": {"source": f"s3://{RESULTS_BUCKET}/{key}", "ground_truth": "reply"},
        "prompt_template": "Ticket: {ticket}\nReply:",
        "bins": [{"min_tokens": 1, "max_tokens": 100}],
        "seed": 3,
        "inference": {"max_new_tokens": 6},
    }

    execution = workflow.run(data, name="run-s3-dataset")

    branches = by_target(execution)
    assert statuses(branches) == {"byo-a": "succeeded", "byo-b": "succeeded"}
    # The plan wrote the binned prompts once; every branch's spec points at them.
    prefix = f"s3://{RESULTS_BUCKET}/datasets/run_id=run-s3-dataset/"
    written = sorted(k.rsplit("/", 1)[1] for k in s3_object_keys(s3, prefix))
    assert written == ["manifest.json", "prompts.jsonl"]
    sent: dict[str, list[str]] = {}
    for name, branch in branches.items():
        spec_key = f"specs/run_id=run-s3-dataset/branch_id={branch['branch_id']}.json"
        spec = json.loads(s3.get_object(Bucket=RESULTS_BUCKET, Key=spec_key)["Body"].read())
        assert spec["prompts_uri"] == prefix.rstrip("/")
        frame = records_frame(s3, branch["branch_id"], "run-s3-dataset")
        sent[name] = list(frame["prompt_id"])
    # 2 levels x 4 requests, each a distinct ticket of the dataset, the same ones for both targets
    for ids in sent.values():
        assert len(ids) == 8 and len(set(ids)) == 8
        assert all(i.startswith("ticket-") for i in ids)
    assert sorted(sent["byo-a"]) == sorted(sent["byo-b"])
    prompts = published_result("run-s3-dataset")["prompts"]  # result.json; the output only summarizes it
    assert prompts["source"] == f"s3://{RESULTS_BUCKET}/{key}"
    assert len(prompts["content_sha256"]) == 64
    assert prompts["reused_prompt_requests"] == 0
