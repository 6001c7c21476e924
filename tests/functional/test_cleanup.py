"""Cleanup beyond the state machine's Catch, against moto: after an execution ends, and the scheduled sweep.

Resources are created by the real ``deploy``, as the Deploy step would; a user's own resources (untagged,
or tagged but not named ``fmb-``) and another run's live endpoint must survive every cleanup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from fmbench.cloud import cleanup
from fmbench.cloud.cleanup import cleanup_after_execution, cleanup_run, sweep
from fmbench.cloud.sagemaker import deploy, plan_deployment
from fmbench.deployment import TAG_EXPIRES_AT, TAG_RUN_ID, EndpointBusyError, resource_names
from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from lambdas import cleanup as cleanup_lambda
from lambdas import sweeper as sweeper_lambda

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/fmbench-sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
HOUR_S = 3600


def suite_data(*target_names: str) -> dict[str, Any]:
    return {
        "name": "cleanup-suite",
        "targets": [
            {
                "name": name,
                "platform": "sagemaker",
                "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
                "container": "lmi",
                "image_uri": IMAGE,
                "instance_type": "ml.g4dn.xlarge",
            }
            for name in target_names or ("llama",)
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }


def deployed(
    sm: Any, run_id: str, *target_names: str, clock: Any = time.time, ttl_s: int = 8 * HOUR_S
) -> list[BranchSpec]:
    """The run's branches deployed by the real deploy step (model, config, endpoint, tags)."""
    plan = plan_suite(validate_suite_data(suite_data(*target_names)), storage_root="s3://b", run_id=run_id)
    specs = []
    for spec in plan.branches:
        spec = spec.model_copy(update={"sagemaker_deployment": plan_deployment(spec.target, REGION, ttl_s)})
        deploy(sm, spec, ROLE_ARN, clock=clock)
        specs.append(spec)
    return specs


def users_own_resources(sm: Any) -> None:
    """An untagged endpoint named like ours, and a resource tagged like ours but not named like ours."""
    sm.create_model(ModelName="users-model", ExecutionRoleArn=ROLE_ARN, PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(
        EndpointConfigName="users-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "users-model",
                "InstanceType": "ml.g4dn.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
        Tags=[{"Key": TAG_RUN_ID, "Value": "run-x"}],
    )
    sm.create_endpoint(EndpointName="users-endpoint", EndpointConfigName="users-config")
    sm.create_endpoint(EndpointName="fmb-lookalike", EndpointConfigName="users-config")


def inventory(sm: Any) -> dict[str, str | None]:
    """Every model, config and endpoint -> its fmbench:run-id tag (None: untagged)."""
    found: dict[str, str | None] = {}
    listings = [
        ("endpoint", sm.list_endpoints()["Endpoints"], "EndpointName", "EndpointArn"),
        (
            "endpoint-config",
            sm.list_endpoint_configs()["EndpointConfigs"],
            "EndpointConfigName",
            "EndpointConfigArn",
        ),
        ("model", sm.list_models()["Models"], "ModelName", "ModelArn"),
    ]
    for kind, items, name_key, arn_key in listings:
        for item in items:
            tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=item[arn_key])["Tags"]}
            found[f"{kind}/{item[name_key]}"] = tags.get(TAG_RUN_ID)
    return found


def labels(spec: BranchSpec) -> list[str]:
    name = resource_names(spec.run_id, spec.branch_id).endpoint
    return [f"endpoint/{name}", f"endpoint-config/{name}", f"model/{name}"]


def status_event(execution_arn: str, state_machine_arn: str, name: str, status: str) -> dict[str, Any]:
    """EventBridge's "Step Functions Execution Status Change" event, execution input included."""
    return {
        "version": "0",
        "id": "6c8a3b4e-0000-0000-0000-000000000000",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": "123456789012",
        "time": "2025-01-01T00:10:00Z",
        "region": REGION,
        "resources": [execution_arn],
        "detail": {
            "executionArn": execution_arn,
            "stateMachineArn": state_machine_arn,
            "name": name,
            "status": status,
            "startDate": 1735689600000,
            "stopDate": 1735690200000,
            "input": json.dumps(suite_data()),
            "output": None,
        },
    }


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def sm(mocked_aws: None) -> Any:
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def sfn(mocked_aws: None) -> Any:
    return boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def state_machine(sfn: Any) -> str:
    definition = {"StartAt": "Plan", "States": {"Plan": {"Type": "Pass", "End": True}}}
    return str(
        sfn.create_state_machine(
            name="fmbench-workflow",
            definition=json.dumps(definition),
            roleArn="arn:aws:iam::123456789012:role/fmbench-workflow",
        )["stateMachineArn"]
    )


def start(sfn: Any, state_machine: str, name: str) -> str:
    return str(sfn.start_execution(stateMachineArn=state_machine, name=name, input="{}")["executionArn"])


# ------------------------------------------------------------------------------ after an execution


def test_a_stopped_execution_leaves_nothing_of_its_run_and_nobody_elses_is_touched(
    sm: Any, sfn: Any, state_machine: str
) -> None:
    users_own_resources(sm)
    stopped_arn = start(sfn, state_machine, "run-x")
    start(sfn, state_machine, "run-y")
    run_x = deployed(sm, "run-x", "llama", "mistral")  # both branches of X had deployed when it stopped
    (run_y,) = deployed(sm, "run-y")  # another run, still going
    sfn.stop_execution(executionArn=stopped_arn)
    event = status_event(stopped_arn, state_machine, "run-x", "ABORTED")

    first = cleanup_lambda.handler(event, None)
    second = cleanup_lambda.handler(event, None)

    expected = labels(run_x[0]) + labels(run_x[1])
    assert sorted(first["deleted"]) == sorted(expected)
    kinds = [label.split("/")[0] for label in first["deleted"]]
    assert kinds == sorted(kinds, key=["endpoint", "endpoint-config", "model"].index)  # endpoints first
    assert (first["run_id"], first["status"], first["busy"], first["regions"]) == (
        "run-x",
        "ABORTED",
        [],
        [REGION],
    )
    assert second["deleted"] == [] and second["busy"] == []
    left = inventory(sm)
    assert [label for label, run in left.items() if run == "run-x"] == ["endpoint-config/users-config"]
    assert set(labels(run_y)) <= set(left)
    assert {"endpoint/users-endpoint", "endpoint/fmb-lookalike", "model/users-model"} <= set(left)


@pytest.mark.parametrize("status", ["TIMED_OUT", "FAILED", "SUCCEEDED"])
def test_every_ended_execution_is_cleaned_and_a_running_one_is_not(
    sm: Any, sfn: Any, state_machine: str, status: str
) -> None:
    arn = start(sfn, state_machine, "run-x")
    (spec,) = deployed(sm, "run-x")

    running = cleanup_lambda.handler(status_event(arn, state_machine, "run-x", "RUNNING"), None)
    assert (running["deleted"], running["skipped"]) == ([], "execution not ended")
    ended = cleanup_lambda.handler(status_event(arn, state_machine, "run-x", status), None)
    assert sorted(ended["deleted"]) == sorted(labels(spec))


class HistoryOf:
    """moto's Step Functions, except that the execution history holds the Plan state's real output."""

    def __init__(self, sfn: Any, plan_output: dict[str, Any]) -> None:
        self._sfn = sfn
        self._plan_output = plan_output

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sfn, name)

    def get_execution_history(self, **kwargs: Any) -> dict[str, Any]:
        events: list[dict[str, Any]] = [
            {"id": 1, "type": "ExecutionStarted", "executionStartedEventDetails": {"input": "{}"}},
            {
                "id": 2,
                "type": "TaskStateEntered",
                "stateEnteredEventDetails": {"name": "Plan", "input": "{}"},
            },
        ]
        page: dict[str, Any] = {"events": events, "nextToken": "page-2"}
        if kwargs.get("nextToken") == "page-2":
            output = json.dumps({"plan": self._plan_output})
            exited = {"name": "Plan", "output": output, "outputDetails": {"truncated": False}}
            page = {"events": [{"id": 3, "type": "TaskStateExited", "stateExitedEventDetails": exited}]}
        return page


def test_a_generated_run_id_is_read_from_the_plan_output_in_the_history(
    sm: Any, sfn: Any, state_machine: str
) -> None:
    """An execution name that is no run id (here: too long) makes the plan generate one."""
    name = "nightly-regression-of-the-llama-endpoints-on-g4dn-instances-with-lmi-and-tgi"
    arn = start(sfn, state_machine, name)
    (spec,) = deployed(sm, "20250101T000000Z-abc123")
    (other,) = deployed(sm, name[:64])  # a run that happens to be named like the first 64 characters
    plan_output = {
        "run_id": "20250101T000000Z-abc123",
        "branches": [{"branch_id": spec.branch_id, "needs_deploy": True, "region": REGION}],
    }

    def factory(service: str, region: str) -> Any:
        client = boto3.client(service, region_name=region)
        return HistoryOf(client, plan_output) if service == "stepfunctions" else client

    event = cleanup.ExecutionStatusEvent.model_validate(status_event(arn, state_machine, name, "FAILED"))
    result = cleanup_after_execution(event, REGION, factory)

    assert result.run_id == "20250101T000000Z-abc123"
    assert sorted(result.deleted) == sorted(labels(spec))
    assert set(labels(other)) <= set(inventory(sm))

    report_only = cleanup_after_execution(
        event, REGION, lambda service, region: HistoryOf(sfn, {**plan_output, "report_only": True})
    )
    assert (report_only.deleted, report_only.skipped) == ([], "report-only execution: it deploys nothing")


class StillCreating:
    """moto's SageMaker, except that one endpoint is still Creating: SageMaker refuses to delete it."""

    def __init__(self, sm: Any, endpoint_name: str) -> None:
        self._sm = sm
        self._busy = endpoint_name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sm, name)

    def delete_endpoint(self, EndpointName: str) -> Any:
        if EndpointName == self._busy:
            error = {
                "Error": {"Code": "ValidationException", "Message": "Cannot delete in-progress endpoint"}
            }
            raise ClientError(error, "DeleteEndpoint")  # type: ignore[arg-type]
        return self._sm.delete_endpoint(EndpointName=EndpointName)

    def describe_endpoint(self, EndpointName: str) -> Any:
        described = self._sm.describe_endpoint(EndpointName=EndpointName)
        return {**described, "EndpointStatus": "Creating"} if EndpointName == self._busy else described


def test_an_endpoint_still_creating_keeps_its_config_and_model_and_the_handler_asks_for_a_retry(
    sm: Any, sfn: Any, state_machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = start(sfn, state_machine, "run-x")
    busy, done = deployed(sm, "run-x", "llama", "mistral")
    busy_name = resource_names("run-x", busy.branch_id).endpoint

    def factory(service: str, region: str) -> Any:
        client = boto3.client(service, region_name=region)
        return StillCreating(client, busy_name) if service == "sagemaker" else client

    monkeypatch.setattr(cleanup_lambda, "client", factory)
    with pytest.raises(EndpointBusyError, match="not deletable yet"):
        cleanup_lambda.handler(status_event(arn, state_machine, "run-x", "ABORTED"), None)

    left = inventory(sm)
    assert not set(labels(done)) & set(left)  # the other branch is gone
    assert set(labels(busy)) <= set(left)  # the busy branch is whole, for the retry or the sweeper
    assert sorted(cleanup_run(StillCreating(sm, busy_name), "run-x").busy) == sorted(labels(busy))


# --------------------------------------------------------------------------------------------- sweep


def test_the_sweep_removes_ended_and_expired_runs_and_keeps_live_ones(
    sm: Any, sfn: Any, state_machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cleanup, "LIST_PAGE_SIZE", 1)  # every listing takes many pages
    now = datetime.now(UTC)
    users_own_resources(sm)
    ended_arn = start(sfn, state_machine, "run-ended")
    start(sfn, state_machine, "run-live")
    start(sfn, state_machine, "run-expired")
    (ended,) = deployed(sm, "run-ended")
    (live,) = deployed(sm, "run-live")
    (expired,) = deployed(sm, "run-expired", clock=lambda: (now - timedelta(hours=9)).timestamp())
    (stranger,) = deployed(sm, "run-of-another-stack")  # no execution here: left to its time-to-live
    (untimed,) = deployed(sm, "run-untimed")  # created before expires-at tags existed
    for label in labels(untimed):
        arn = {
            "endpoint": lambda n: sm.describe_endpoint(EndpointName=n)["EndpointArn"],
            "endpoint-config": lambda n: sm.describe_endpoint_config(EndpointConfigName=n)[
                "EndpointConfigArn"
            ],
            "model": lambda n: sm.describe_model(ModelName=n)["ModelArn"],
        }[label.split("/")[0]](label.split("/")[1])
        sm.delete_tags(ResourceArn=arn, TagKeys=[TAG_EXPIRES_AT])
    sfn.stop_execution(executionArn=ended_arn)
    later = now + timedelta(hours=2)  # untimed: created now, default time-to-live 1 h

    first = sweep(sm, sfn, state_machine, later, default_ttl_s=HOUR_S)
    second = sweep(sm, sfn, state_machine, later, default_ttl_s=HOUR_S)

    reasons = {decision.resource: decision.reason for decision in first.decisions}
    assert reasons == {
        **dict.fromkeys(labels(ended), "run ended"),
        **dict.fromkeys(labels(expired), "expired"),
        **dict.fromkeys(labels(untimed), "expired"),
    }
    assert sorted(first.deleted) == sorted(reasons)
    assert (first.busy, first.kept) == ([], 6)
    assert (second.deleted, second.kept) == ([], 6)
    left = inventory(sm)
    assert set(labels(live)) | set(labels(stranger)) <= set(left)
    assert {"endpoint/users-endpoint", "endpoint/fmb-lookalike", "model/users-model"} <= set(left)
    assert not (set(reasons) & set(left))


def test_the_sweeper_handler_sweeps_its_regions_now(
    sm: Any, sfn: Any, state_machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended_arn = start(sfn, state_machine, "run-ended")
    start(sfn, state_machine, "run-live")
    (ended,) = deployed(sm, "run-ended")
    (live,) = deployed(sm, "run-live")
    sfn.stop_execution(executionArn=ended_arn)
    monkeypatch.setenv("FMBENCH_STATE_MACHINE_ARN", state_machine)

    result = sweeper_lambda.handler({"source": "aws.scheduler"}, None)

    assert list(result["regions"]) == [REGION]
    assert sorted(result["regions"][REGION]["deleted"]) == sorted(labels(ended))
    assert set(labels(live)) <= set(inventory(sm))


class TagConditionedDeletes:
    """moto's SageMaker answering deletes as the cleanup functions' IAM policy makes AWS answer them: the
    delete permission requires the run-id tag, so deleting what is already gone is "access denied"."""

    def __init__(self, sm: Any) -> None:
        self._sm = sm

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._sm, name)
        if not name.startswith("delete_"):
            return attribute

        def delete(**kwargs: Any) -> Any:
            try:
                return attribute(**kwargs)
            except ClientError as exc:
                error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
                raise ClientError(error, exc.operation_name) from exc  # type: ignore[arg-type]

        return delete


def test_what_a_teardown_deleted_after_the_listing_is_done_not_denied(sm: Any) -> None:
    (spec,) = deployed(sm, "run-x")
    listed = list(cleanup.product_resources(sm))
    cleanup_run(sm, "run-x")  # a Teardown (or the other cleanup) gets there first

    result = cleanup.delete_resources(TagConditionedDeletes(sm), listed)

    assert (result.deleted, result.busy) == ([], [])
    assert [r.label for r in listed] == labels(spec)
