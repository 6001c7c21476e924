"""Step Functions' limits at the edges: every state's data under 256 KiB, every history under 25,000 events.

The payloads are the real ones: the Plan, Teardown and Render handlers run against moto, and the Map's
results are built from Teardown's answers exactly as the BranchFailed and TeardownFailed Pass states build
them (infra/workflow.py). The history bound itself is checked against the definition in tests/infra and
against moto's recorded history in tests/workflow.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pandas as pd
import pytest
from moto import mock_aws
from moto.athena.models import athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto_catalog import create_records_catalog
from moto_service_quotas import sagemaker_endpoint_quotas
from test_handlers import athena_result, finished_query, synthetic_metrics

from fmbench.cloud.limits import (
    MAX_ERROR_CAUSE_BYTES,
    MAX_HISTORY_EVENTS,
    MAX_STATE_PAYLOAD_BYTES,
    branch_history_events,
    history_events_bound,
    json_size,
    max_branch_result_bytes,
    max_deployed_branches,
)
from fmbench.config import SuiteValidationError
from fmbench.layout import failure_record_uri, outcome_uri
from fmbench.plan import BranchOutcome
from lambdas import plan, render
from lambdas import teardown as teardown_lambda
from report.query import METRIC_COLUMNS, typed_frame
from report.result import ResultDocument

REGION = "us-east-1"
BUCKET = "fmbench-results-limits"
RUN_ID = "20250101T000000Z-limits"
# A failed Fargate task's Cause is the task's JSON, about 4 KiB; a Lambda's may carry a long message.
LONG_CAUSE_BYTES = 10 * 1024


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "FMBENCH_RESULTS_BUCKET": BUCKET,
        "FMBENCH_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/fmbench-sagemaker",
        "FMBENCH_MAX_CONCURRENT_BRANCHES": "2",
        "FMBENCH_ATHENA_DATABASE": "fmbench",
        "FMBENCH_ATHENA_WORKGROUP": "fmbench",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws(), sagemaker_endpoint_quotas({"ml.g4dn.xlarge": 4}):
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        create_records_catalog(REGION, BUCKET)
        yield client


@pytest.fixture
def athena(s3: Any) -> Any:
    client = boto3.client("athena", region_name=REGION)
    client.create_work_group(
        Name="fmbench",
        Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena-results/"}},
    )
    return client


def openai_target(index: int) -> dict[str, Any]:
    return {
        "name": f"served-{index:03d}",
        "platform": "openai",
        "endpoint_url": "http://127.0.0.1:9/v1",
        "model": "served-model",
    }


def deployed_target(index: int) -> dict[str, Any]:
    return {
        "name": f"deployed-{index:03d}",
        "platform": "sagemaker",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
        "container": "lmi",
        "instance_type": "ml.g4dn.xlarge",
    }


BIN = "50-500"


def suite(targets: list[dict[str, Any]], *, levels: int = 2) -> dict[str, Any]:
    return {
        "name": "edges",
        "targets": targets,
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
        },
        "load": {"concurrency": list(range(1, levels + 1)), "requests_per_level": 5},
    }


def plan_of(data: dict[str, Any], run_id: str = RUN_ID) -> dict[str, Any]:
    result: dict[str, Any] = plan.handler({"suite": data, "execution_name": run_id}, None)
    return result


def long_failure(item: dict[str, Any]) -> dict[str, Any]:
    """A Catch's error as RunLoad's leaves it: States.TaskFailed with the stopped task's JSON (10 KiB)."""
    task = {"TaskArn": f"arn:aws:ecs:{REGION}:123456789012:task/fmbench/{item['branch_id']}"}
    task["StoppedReason"] = "Essential container in task exited; " + "é x" * 1270 + " end-of-cause"
    cause = json.dumps(task)
    assert LONG_CAUSE_BYTES - 100 < len(cause) < LONG_CAUSE_BYTES + 100
    return {"Error": "States.TaskFailed", "Cause": cause}


def branch_failed(item: dict[str, Any], teardown_output: dict[str, Any]) -> dict[str, Any]:
    """The BranchFailed Pass state's output: branch id, status and Teardown's cut-short error."""
    return {"branch_id": item["branch_id"], "status": "failed", "error": teardown_output["error"]}


def teardown_failed(item: dict[str, Any]) -> dict[str, Any]:
    """The TeardownFailed Pass state's output, its error as Lambda reports the handler's exception."""
    broken = {**item, "region": "not-a-region-" * 100}  # Teardown cannot even make its client
    with pytest.raises(Exception) as raised:
        teardown_lambda.handler(broken, None)
    error = raised.value
    cause = {  # the Python runtime's error document
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_list(traceback.extract_tb(error.__traceback__)),
    }
    return {
        "branch_id": item["branch_id"],
        "status": "failed",
        "error": {"Error": type(error).__name__, "Cause": json.dumps(cause)},
    }


# ----------------------------------------------------------------------------------- failed branches


def test_a_branch_failing_with_a_long_cause_leaves_a_bounded_result_and_the_whole_cause_in_the_report(
    s3: Any, athena: Any
) -> None:
    planned = plan_of(suite([deployed_target(0), openai_target(1)]))
    failing, served = planned["branches"]
    failure = long_failure(failing)

    answer = teardown_lambda.handler({**failing, "error": failure}, None)

    item = branch_failed(failing, answer)
    assert json_size(item) <= max_branch_result_bytes()
    assert len(json.dumps(item)) < 1024 < len(failure["Cause"])
    assert item["error"]["Error"] == "States.TaskFailed"
    assert item["error"]["Cause"].startswith(failure["Cause"][:100])
    assert item["error"]["Cause"].endswith(f"[cut: {json_size(failure['Cause']) - 2} bytes in all]")
    record_key = failure_record_uri(f"s3://{BUCKET}", RUN_ID, failing["branch_id"]).split("/", 3)[3]
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read())["error"] == failure

    outcome = BranchOutcome(branch_id=served["branch_id"], status="succeeded", load_points_planned=2)
    served_key = outcome_uri(f"s3://{BUCKET}", RUN_ID, served["branch_id"]).split("/", 3)[3]
    s3.put_object(Bucket=BUCKET, Key=served_key, Body=outcome.model_dump_json())
    queue = athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue
    queue.extend([athena_result(synthetic_metrics([served["branch_id"]])), athena_result(pd.DataFrame())])
    ok = {"branch_id": served["branch_id"], "status": "succeeded", "error": None}
    render.handler(
        {
            "run_id": RUN_ID,
            "query_execution_id": finished_query(athena, planned["metrics_query"]),
            "branch_results": [item, ok],
        },
        None,
    )

    document = ResultDocument.model_validate_json(
        s3.get_object(Bucket=BUCKET, Key=f"reports/run_id={RUN_ID}/result.json")["Body"].read()
    )
    reasons = {branch.branch_id: branch.reason for branch in document.branches}
    assert reasons[failing["branch_id"]] == f"States.TaskFailed: {failure['Cause']}"  # whole, from S3
    report = s3.get_object(Bucket=BUCKET, Key=f"reports/run_id={RUN_ID}/report.md")["Body"].read().decode()
    assert "end-of-cause" in report and "[cut:" not in report


def test_a_failing_teardown_reports_a_bounded_cause() -> None:
    item = {
        "run_id": RUN_ID,
        "branch_id": "b-1",
        "spec_uri": f"s3://{BUCKET}/specs/x.json",
        "platform": "sagemaker",
        "needs_deploy": True,
        "endpoint_name": "fmb-x",
        "max_status_polls": 3,
    }
    result = teardown_failed(item)

    assert result["error"]["Error"] == "TeardownFailedError"
    assert json_size(result["error"]["Cause"]) <= MAX_ERROR_CAUSE_BYTES
    assert json_size(result) <= max_branch_result_bytes()
    message = json.loads(result["error"]["Cause"])["errorMessage"]
    assert message.startswith("InvalidRegionError: Provided region_name")


# ------------------------------------------------------------------------------------------- edges


def state_data_sizes(planned: dict[str, Any], branch_results: list[dict[str, Any]]) -> dict[str, int]:
    """Each state's input or output that carries the plan or the Map's results, as Step Functions builds
    them (infra/workflow.py: Plan's ResultSelector, the Map's and Query's ResultPath, Render's Payload)."""
    after_plan = {"plan": planned}
    after_map = {**after_plan, "branch_results": branch_results}
    after_query = {**after_map, "query": {"query_execution_id": str(uuid.uuid4())}}
    render_event = {
        "run_id": planned["run_id"],
        "query_execution_id": after_query["query"]["query_execution_id"],
        "branch_results": branch_results,
    }
    return {
        "Plan output": json_size(after_plan),
        "Branches output": json_size(after_map),
        "Query output": json_size(after_query),
        "Render input (Payload)": json_size(render_event),
    }


def largest_accepted(make_target: Any, start: int) -> int:
    """The most targets of this kind one plan accepts, counting up from ``start``."""
    count = start
    while True:
        try:
            plan_of(suite([make_target(i) for i in range(count + 1)]), run_id=f"probe-{count + 1}")
        except SuiteValidationError:
            return count
        count += 1


def test_the_largest_suites_the_plan_accepts_stay_within_every_limit_even_when_every_branch_fails(
    s3: Any,
) -> None:
    # Branches that deploy nothing: the history bound allows about 160 of them.
    per_other = branch_history_events(deploys=False, max_status_polls=60)
    most = largest_accepted(openai_target, (MAX_HISTORY_EVENTS - 400) // per_other - 3)
    planned = plan_of(suite([openai_target(i) for i in range(most)]))
    assert len(planned["branches"]) == most > 100
    assert history_events_bound(deployed_branches=0, other_branches=most, max_status_polls=60) <= (
        MAX_HISTORY_EVENTS
    )
    every_failed = [
        branch_failed(item, teardown_lambda.handler({**item, "error": long_failure(item)}, None))
        for item in planned["branches"]
    ]
    teardowns_failed = [teardown_failed(item) for item in planned["branches"]]
    for results in (every_failed, teardowns_failed):
        sizes = state_data_sizes(planned, results)
        assert max(sizes.values()) < MAX_STATE_PAYLOAD_BYTES, sizes

    # One more is refused at Plan, naming the limit, before anything is written.
    with pytest.raises(SuiteValidationError) as refused:
        plan_of(suite([openai_target(i) for i in range(most + 1)]), run_id="one-too-many")
    assert "targets: " in str(refused.value)
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix="specs/run_id=one-too-many/").get("Contents")


def test_deployed_branches_are_bounded_by_their_status_polls(s3: Any) -> None:
    most = max_deployed_branches(60)
    assert most == 14  # 1,733 events each at 60 polls (docs/workflow.md)
    planned = plan_of(suite([deployed_target(i) for i in range(most)]))
    assert len(planned["branches"]) == most
    assert {item["max_status_polls"] for item in planned["branches"]} == {60}
    every_failed = [
        branch_failed(item, teardown_lambda.handler({**item, "error": long_failure(item)}, None))
        for item in planned["branches"]
    ]
    assert max(state_data_sizes(planned, every_failed).values()) < MAX_STATE_PAYLOAD_BYTES

    with pytest.raises(SuiteValidationError) as refused:
        plan_of(suite([deployed_target(i) for i in range(most + 1)]), run_id="too-many-deployed")
    (problem,) = refused.value.problems
    assert problem.path == "targets"
    assert problem.reason.startswith("15 branches (15 deploying an endpoint, polled up to 60 times) may")
    assert "one Step Functions execution holds 25,000" in problem.reason
    assert "at most 14 deployed branches each at 60 polls" in problem.reason
    assert "fmbench:maxDeployMinutes" in problem.reason


def metrics_for(branch_id: str, levels: int) -> pd.DataFrame:
    """One measured row per load point of the branch."""
    template = synthetic_metrics([branch_id]).iloc[0].to_dict()
    rows = [{**template, "concurrency": level, "payload_bin": BIN} for level in range(1, levels + 1)]
    return typed_frame(pd.DataFrame(rows), METRIC_COLUMNS)


def render_output(s3: Any, athena: Any, run_id: str, *, levels: int) -> tuple[int, int]:
    """Render a run of one branch with ``levels`` measured load points: the sizes of the execution output
    and of result.json."""
    planned = plan_of(suite([openai_target(0)], levels=levels), run_id=run_id)
    (item,) = planned["branches"]
    outcome = BranchOutcome(
        branch_id=item["branch_id"],
        status="succeeded",
        load_points_planned=levels,
        load_points_completed=levels,
    )
    key = outcome_uri(f"s3://{BUCKET}", run_id, item["branch_id"]).split("/", 3)[3]
    s3.put_object(Bucket=BUCKET, Key=key, Body=outcome.model_dump_json())
    queue = athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue
    queue.extend([athena_result(metrics_for(item["branch_id"], levels)), athena_result(pd.DataFrame())])
    output = render.handler(
        {
            "run_id": run_id,
            "query_execution_id": finished_query(athena, planned["metrics_query"]),
            "branch_results": [{"branch_id": item["branch_id"], "status": "succeeded", "error": None}],
        },
        None,
    )
    result = s3.get_object(Bucket=BUCKET, Key=f"reports/run_id={run_id}/result.json")["Body"].read()
    document = ResultDocument.model_validate_json(result)
    assert sum(len(branch.load_points) for branch in document.branches) == levels
    return json_size(output), len(result)


def test_render_output_stays_small_for_hundreds_of_load_points(s3: Any, athena: Any) -> None:
    few_output, few_result = render_output(s3, athena, "run-few-points", levels=4)
    many_output, many_result = render_output(s3, athena, "run-many-points", levels=400)

    # result.json grows by about 600 bytes a load point: a few more and it alone would fail the state.
    assert many_result > 200_000 and (many_result - few_result) / (400 - 4) > 500
    assert many_output < 10_000
    # 400 load points or 4: the summary does not grow; only the digits of its figures (costs) differ
    assert abs(many_output - few_output) <= 32
