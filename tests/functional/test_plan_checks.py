"""The Plan step refuses what would spend badly (budget, quota, time-to-live) before anything is written or
deployed, and plans a report-only execution (moto; Service Quotas injected, or stubbed with Stubber)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto_service_quotas import sagemaker_endpoint_quotas

from fmbench.cloud.events import PlanEvent
from fmbench.cloud.quotas import (
    InstanceNeed,
    QuotaCheckError,
    QuotaExceededError,
    check_endpoint_quotas,
    endpoint_quotas,
)
from fmbench.cloud.settings import PlanSettings
from fmbench.cloud.steps import RunPlanNotFoundError, plan_run, read_run_plan
from fmbench.config import SuiteValidationError
from fmbench.estimate import BudgetExceededError
from fmbench.plan import RunPlan
from lambdas import plan

REGION = "us-east-1"
BUCKET = "fmbench-results-test"
RUN_ID = "20250101T000000Z-plan01"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
G4DN_USD_PER_HOUR = 0.736
# Per bin 12 requests at concurrency 1 and 4, each at most 30 + 1 s (15 x 31 s), two bins, the 10 s probe;
# deploy 60 polls x 60 s (the 60-minute allowance); teardown 600 s.
LIFETIME_S = 60 * 60 + (10 + 2 * 15 * 31) + 600


def target(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "sagemaker",
        "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
        "container": "lmi",
        "image_uri": IMAGE,
        "instance_type": "ml.g4dn.xlarge",
        **fields,
    }


def suite_data(*targets: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "name": "checked-suite",
        "targets": list(targets) or [target("llama")],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}],
        },
        "load": {
            "concurrency": [1, 4],
            "requests_per_level": 10,
            "warmup_requests": 2,
            "request_timeout_s": 30,
        },
        "pricing": {"instance_price_per_hour_usd": {"ml.g4dn.xlarge": G4DN_USD_PER_HOUR}},
        "execution": {"max_parallel_branches": 2},
        **overrides,
    }


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("FMBENCH_RESULTS_BUCKET", BUCKET)
    monkeypatch.setenv("FMBENCH_MAX_CONCURRENT_BRANCHES", "10")
    monkeypatch.setenv("FMBENCH_STATUS_POLL_SECONDS", "60")


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws(), sagemaker_endpoint_quotas({"ml.g4dn.xlarge": 2, "ml.g5.2xlarge": 4}):
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(s3: Any) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def nothing_created(s3: Any) -> bool:
    endpoints = boto3.client("sagemaker", region_name=REGION).list_endpoints()["Endpoints"]
    return keys(s3) == [] and endpoints == []


def run_plan(data: dict[str, Any], execution_name: str = RUN_ID) -> dict[str, Any]:
    return plan.handler({"suite": data, "execution_name": execution_name}, None)


# ------------------------------------------------------------------------------------------- budget


def test_the_plan_reports_the_estimate_and_the_quotas_it_checked(s3: Any) -> None:
    result = run_plan(suite_data(budget={"max_usd": 10}))

    assert result["cost_estimate_usd"] == pytest.approx(LIFETIME_S / 3600 * G4DN_USD_PER_HOUR, abs=1e-6)
    assert result["quota_check"] == ["ml.g4dn.xlarge in us-east-1: 1 at once, quota 2"]
    saved = RunPlan.model_validate_json(
        s3.get_object(Bucket=BUCKET, Key=f"specs/run_id={RUN_ID}/plan.json")["Body"].read()
    )
    assert saved.cost_estimate is not None
    (part,) = saved.cost_estimate.parts
    assert (part.deploy_s, part.teardown_s, part.lifetime_s) == (3600, 600, LIFETIME_S)
    assert {item["max_status_polls"] for item in result["branches"]} == {60}


def test_a_suite_over_its_budget_fails_at_plan_with_the_estimate_and_writes_nothing(s3: Any) -> None:
    with pytest.raises(BudgetExceededError) as caught:
        run_plan(suite_data(target("llama"), target("mistral"), budget={"max_usd": 2}))

    message = str(caught.value)
    lines = message.splitlines()
    total = 2 * LIFETIME_S / 3600 * G4DN_USD_PER_HOUR
    assert lines[0] == f"the estimated cost ${total:,.2f} (an upper bound) exceeds budget.max_usd $2.00"
    assert [line.strip().split(" (")[0] for line in lines[2:4]] == ["llama", "mistral"]
    assert (
        "ml.g4dn.xlarge x1 at $0.736/h for up to 1.43 h (deploy 1.00 h + load 0.26 h + teardown 0.17 h)"
        in message
    )
    assert nothing_created(s3)


def test_an_unpriced_instance_under_a_budget_is_refused(s3: Any) -> None:
    data = suite_data(target("llama", instance_type="ml.p5e.48xlarge"), budget={"max_usd": 1000})
    data["pricing"] = {}  # the bundled table has no ml.p5e price
    with pytest.raises(BudgetExceededError, match="cost of llama cannot be bounded"):
        run_plan(data)
    assert nothing_created(s3)


def test_an_endpoint_ttl_shorter_than_a_branch_could_live_is_refused(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FMBENCH_RUNNER_TIMEOUT_SECONDS", "14400")
    with pytest.raises(SuiteValidationError) as caught:
        run_plan(suite_data(execution={"endpoint_ttl_s": 3600}))
    assert [p.path for p in caught.value.problems] == ["execution.endpoint_ttl_s"]
    assert "the sweeper would delete its endpoint mid-run" in str(caught.value)
    assert nothing_created(s3)


# ------------------------------------------------------------------------------------------- quotas


def test_a_run_that_needs_more_instances_at_once_than_the_quota_fails_at_plan(s3: Any) -> None:
    data = suite_data(target("llama", instance_count=2), target("mistral"), target("phi"))
    with pytest.raises(QuotaExceededError) as caught:
        run_plan(data)
    message = str(caught.value)
    assert "SageMaker quota 'ml.g4dn.xlarge for endpoint usage' in us-east-1 is 2 instance(s)" in message
    assert "may hold 3 at once" in message and "max concurrency 2" in message
    assert nothing_created(s3)

    data["execution"] = {"max_parallel_branches": 1}  # one branch at a time: 2 at most
    assert run_plan(data)["quota_check"] == ["ml.g4dn.xlarge in us-east-1: 2 at once, quota 2"]


def test_an_instance_type_without_a_listed_quota_is_noted_not_refused(s3: Any) -> None:
    # Priced from the bundled table: a price for a type no target uses is refused as a typo.
    result = run_plan(suite_data(target("llama", instance_type="ml.p4d.24xlarge"), pricing={}))
    assert result["quota_check"] == ["ml.p4d.24xlarge in us-east-1: no quota listed, not checked"]


def quota_page(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    return [
        {"ServiceCode": "sagemaker", "QuotaCode": f"L-{i}", "QuotaName": name, "Value": value}
        for i, (name, value) in enumerate(pairs)
    ]


def test_applied_quotas_are_read_over_every_page_then_defaults_for_the_rest() -> None:
    """Stubbed (moto has no SageMaker quotas): the calls and their parameters are checked by Stubber."""
    client = boto3.client(
        "service-quotas", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "list_service_quotas",
            {"Quotas": quota_page(("ml.g5.2xlarge for training job usage", 9)), "NextToken": "t2"},
            {"ServiceCode": "sagemaker"},
        )
        stub.add_response(
            "list_service_quotas",
            {"Quotas": quota_page(("ml.g5.2xlarge for endpoint usage", 3))},
            {"ServiceCode": "sagemaker", "NextToken": "t2"},
        )
        stub.add_response(
            "list_aws_default_service_quotas",
            {"Quotas": quota_page(("ml.p4d.24xlarge for endpoint usage", 0))},
            {"ServiceCode": "sagemaker"},
        )
        quotas = endpoint_quotas(client, ["ml.g5.2xlarge", "ml.p4d.24xlarge", "ml.g6.xlarge"])
        stub.assert_no_pending_responses()
    assert quotas == {"ml.g5.2xlarge": 3.0, "ml.p4d.24xlarge": 0.0}


def test_a_quota_of_zero_refuses_and_a_denied_read_is_an_error_not_a_skip() -> None:
    need = InstanceNeed(region=REGION, instance_type="ml.p4d.24xlarge", instances=1, branch_ids=("big-1",))

    def stubbed(*responses: tuple[str, dict[str, Any] | str]) -> Any:
        client = boto3.client(
            "service-quotas", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )
        stub = Stubber(client)
        for operation, response in responses:
            if isinstance(response, str):
                stub.add_client_error(operation, service_error_code=response, http_status_code=400)
            else:
                stub.add_response(operation, response)
        stub.activate()
        return lambda service, region: client

    zero = stubbed(("list_service_quotas", {"Quotas": quota_page(("ml.p4d.24xlarge for endpoint usage", 0))}))
    with pytest.raises(QuotaExceededError, match="is 0 instance"):
        check_endpoint_quotas([need], zero, 1)
    with pytest.raises(QuotaCheckError, match="may not read SageMaker quotas"):
        check_endpoint_quotas([need], stubbed(("list_service_quotas", "AccessDeniedException")), 1)
    outage = stubbed(("list_service_quotas", "ServiceException"))
    assert check_endpoint_quotas([need], outage, 1) == [
        "ml.p4d.24xlarge in us-east-1: not checked (ServiceException)"
    ]


# -------------------------------------------------------------------------------------- report only


def test_a_report_only_input_plans_no_branch_and_the_saved_runs_query(s3: Any) -> None:
    first = run_plan(suite_data(target("llama"), {"name": "haiku", "platform": "bedrock", "model_id": "m"}))
    written_by_first = keys(s3)

    again = run_plan({"report_only": {"run_id": RUN_ID}}, execution_name=f"{RUN_ID}-report-1")

    assert again["run_id"] == RUN_ID  # the saved run's, not the execution's name
    assert (again["report_only"], again["branches"], again["max_concurrency"]) == (True, [], 1)
    assert again["report_branches"] == first["branches"]
    assert again["metrics_query"] == first["metrics_query"]
    assert again["cost_estimate_usd"] == first["cost_estimate_usd"]
    # the first plan's specs, plan.json and materialized prompts, nothing more
    assert keys(s3) == written_by_first
    assert any(key.endswith("/plan.json") for key in written_by_first)


def test_a_malformed_or_unknown_report_only_input_is_refused_clearly(s3: Any) -> None:
    with pytest.raises(SuiteValidationError) as caught:
        run_plan({"report_only": {"run_id": "not a run id!"}, "name": "x"})
    assert [p.path for p in caught.value.problems] == ["name", "report_only.run_id"]
    with pytest.raises(
        RunPlanNotFoundError, match=f"no plan at s3://{BUCKET}/specs/run_id=never-ran/plan.json"
    ):
        run_plan({"report_only": {"run_id": "never-ran"}})
    assert json.dumps(keys(s3)) == "[]"


def _denied_reads(s3: Any) -> None:
    """What a real account answers a caller that may list only under prefixes: 403 for any GetObject of a
    key that does not exist (S3 hides whether it exists), moto's answer otherwise."""

    def deny_missing(params: dict[str, Any], **_: Any) -> None:
        listed = s3.list_objects_v2(Bucket=params["Bucket"], Prefix=params["Key"]).get("Contents", [])
        if not any(item["Key"] == params["Key"] for item in listed):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")

    s3.meta.events.register("before-parameter-build.s3.GetObject", deny_missing)


def test_a_report_only_run_of_an_unknown_run_id_is_not_found_when_s3_answers_403(s3: Any) -> None:
    _denied_reads(s3)
    with pytest.raises(RunPlanNotFoundError, match=re.escape("specs/run_id=never-ran/plan.json")):
        plan_run(
            PlanEvent(suite={"report_only": {"run_id": "never-ran"}}),
            PlanSettings.from_environ(),
            s3,
            lambda run_id, branches: "SELECT 1",
        )


def test_a_denied_read_of_a_plan_that_exists_stays_access_denied(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"specs/run_id={RUN_ID}/plan.json", Body=b"{}")

    def deny(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")

    s3.meta.events.register("before-parameter-build.s3.GetObject", deny)
    with pytest.raises(ClientError, match="AccessDenied"):
        read_run_plan(s3, f"s3://{BUCKET}", RUN_ID)


# ------------------------------------------------------------------------------- existing endpoints


def test_an_existing_endpoint_the_stack_may_not_invoke_is_refused_before_anything_is_written(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FMBENCH_EXISTING_ENDPOINT_NAMES", '["listed-endpoint"]')
    data = suite_data(
        target("llama"),
        {"name": "mine", "platform": "sagemaker", "endpoint_name": "my-llama31-8b-endpoint"},
        {"name": "listed", "platform": "sagemaker", "endpoint_name": "Listed-Endpoint"},
        {"name": "ours", "platform": "sagemaker", "endpoint_name": "fmb-from-another-run"},
    )
    with pytest.raises(SuiteValidationError) as caught:
        run_plan(data)

    (problem,) = caught.value.problems
    assert problem.path == "targets.1.endpoint_name"
    assert "fmbench:existingEndpointNames" in problem.reason
    assert "(now: listed-endpoint)" in problem.reason
    names = '["listed-endpoint","my-llama31-8b-endpoint"]'
    assert f"npx aws-cdk@2 deploy -c 'fmbench:existingEndpointNames={names}'" in problem.reason
    assert nothing_created(s3)


def test_an_existing_endpoint_listed_in_the_stack_plans(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMBENCH_EXISTING_ENDPOINT_NAMES", '["my-llama31-8b-endpoint"]')
    result = run_plan(
        suite_data(
            target("llama"),
            {"name": "mine", "platform": "sagemaker", "endpoint_name": "my-llama31-8b-endpoint"},
        )
    )
    assert [item["endpoint_name"] for item in result["branches"] if not item["needs_deploy"]] == [
        "my-llama31-8b-endpoint"
    ]


def test_without_the_stacks_list_only_the_workflows_own_endpoints_may_be_named(s3: Any) -> None:
    with pytest.raises(SuiteValidationError, match=r"targets\.0\.endpoint_name: .*\(now: none\)"):
        run_plan(
            suite_data({"name": "mine", "platform": "sagemaker", "endpoint_name": "my-endpoint"}, pricing={})
        )
    assert nothing_created(s3)
