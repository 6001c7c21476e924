"""Cleanup beyond the state machine, end to end: the synthesized rule, cleanup function and sweeper on moto.

Stopping an execution runs no Catch, so the Teardown of a branch in flight never runs. These tests stop a
real execution of the synthesized state machine while its endpoint is being created, deliver the "Step
Functions Execution Status Change" event as EventBridge would (matched against the deployed rule's
pattern, sent to the rule's target), and check what is left in SageMaker. The sweeper is fired through its
schedule rule, with the state machine ARN its template environment names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from harness import DeployedWorkflow, execution_status_change_event
from shims import wait_for_execution
from test_workflow_execution import sagemaker_target, suite

from fmbench.deployment import EXPIRES_AT_FORMAT, resource_names

DEPLOY = "lambdas.deploy.handler"
TEARDOWN = "lambdas.teardown.handler"
CLEANUP = "lambdas.cleanup.handler"
SWEEPER = "lambdas.sweeper.handler"
ROLE_ARN = "arn:aws:iam::123456789012:role/fmbench-sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
DEPLOYED_TIMEOUT_S = 60.0


@pytest.fixture
def started(workflow: DeployedWorkflow) -> Iterator[list[str]]:
    """ARNs of the executions a test starts; any still running at the end is stopped and waited for, so
    that no execution thread outlives its test (the next one resets moto)."""
    arns: list[str] = []
    yield arns
    sfn = boto3.client("stepfunctions")
    for arn in arns:
        if sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            sfn.stop_execution(executionArn=arn)
        wait_for_execution(sfn, arn, 30)


def start_stuck(workflow: DeployedWorkflow, started: list[str], run_id: str) -> str:
    """An execution of one SageMaker branch whose endpoint stays Creating; returns its endpoint's name once
    Deploy has created model, config and endpoint."""
    workflow.sagemaker_faults.never_in_service("sm-")
    started.append(
        workflow.start(suite(f"suite-{run_id}", [sagemaker_target("sm-stuck", "http://unused")]), run_id)
    )
    deadline = time.monotonic() + DEPLOYED_TIMEOUT_S
    while time.monotonic() < deadline:
        for call in workflow.lambdas.calls_of(DEPLOY):
            if call.event["run_id"] == run_id and call.result is not None:
                return str(call.result["endpoint_name"])
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id}: no endpoint deployed after {DEPLOYED_TIMEOUT_S:g} s")


def stop(execution_arn: str) -> dict[str, Any]:
    """Stop the execution as `aws stepfunctions stop-execution` does; the event EventBridge then gets."""
    sfn = boto3.client("stepfunctions")
    sfn.stop_execution(executionArn=execution_arn, error="UserStopped", cause="stopped by the test")
    assert wait_for_execution(sfn, execution_arn, 30)["status"] == "ABORTED"
    return execution_status_change_event(execution_arn)


def sagemaker_names() -> set[str]:
    """Every model, endpoint config and endpoint in moto, as kind/name."""
    sagemaker = boto3.client("sagemaker")
    return {
        *(f"model/{m['ModelName']}" for m in sagemaker.list_models()["Models"]),
        *(
            f"endpoint-config/{c['EndpointConfigName']}"
            for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]
        ),
        *(f"endpoint/{e['EndpointName']}" for e in sagemaker.list_endpoints()["Endpoints"]),
    }


def of(name: str) -> set[str]:
    """A branch's three resources, which share one name."""
    return {f"model/{name}", f"endpoint-config/{name}", f"endpoint/{name}"}


def create_resources(name: str, tags: dict[str, str] | None = None) -> set[str]:
    """Model, endpoint config and endpoint made outside the workflow (a user's own, or another stack's)."""
    sagemaker = boto3.client("sagemaker")
    tag_list = [{"Key": key, "Value": value} for key, value in (tags or {}).items()]
    sagemaker.create_model(
        ModelName=name, ExecutionRoleArn=ROLE_ARN, PrimaryContainer={"Image": IMAGE}, Tags=tag_list
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.g4dn.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
        Tags=tag_list,
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=tag_list)
    return of(name)


def users_own() -> set[str]:
    """A user's endpoint, and one named like the product's but without its run-id tag: never candidates."""
    return create_resources("users-llama-endpoint") | create_resources("fmb-not-from-a-run")


def test_a_stopped_execution_leaves_nothing_of_its_run_and_nobody_elses_is_touched(
    workflow: DeployedWorkflow, started: list[str]
) -> None:
    survivors = users_own()
    going = start_stuck(workflow, started, "run-going")
    stopped = start_stuck(workflow, started, "run-stopped")

    event = stop(started[1])
    (cleanup,) = workflow.deliver(event)

    assert cleanup.function_arn.endswith(f":function:{workflow.deployment.function_names[CLEANUP]}")
    assert cleanup.function_error is None, cleanup.payload
    assert cleanup.payload == {
        "run_id": "run-stopped",
        "status": "ABORTED",
        "regions": ["us-east-1"],
        "deleted": [f"endpoint/{stopped}", f"endpoint-config/{stopped}", f"model/{stopped}"],
        "busy": [],
        "skipped": None,
    }
    # The run that goes on, the user's endpoint and the untagged look-alike are all still there.
    assert sagemaker_names() == survivors | of(going)
    # Nothing ran after the stop: the cleanup, not the state machine's Teardown, deleted the branch.
    assert [call.event["run_id"] for call in workflow.lambdas.calls_of(TEARDOWN)] == []


def test_running_the_cleanup_again_finds_nothing_to_do(
    workflow: DeployedWorkflow, started: list[str]
) -> None:
    """EventBridge delivers at least once and Lambda retries: a second cleanup of a run must be harmless."""
    survivors = users_own()
    start_stuck(workflow, started, "run-twice")
    event = stop(started[0])

    first, second = workflow.deliver(event)[0], workflow.deliver(event)[0]

    assert (first.function_error, second.function_error) == (None, None)
    assert len(first.payload["deleted"]) == 3
    assert (second.payload["deleted"], second.payload["busy"]) == ([], [])
    assert sagemaker_names() == survivors


def test_the_rule_takes_only_ended_executions_of_this_state_machine(
    workflow: DeployedWorkflow, started: list[str]
) -> None:
    endpoint = start_stuck(workflow, started, "run-live")
    running = execution_status_change_event(started[0])
    other_machine = {
        **running,
        "detail": {
            **running["detail"],
            "status": "ABORTED",
            "stateMachineArn": running["detail"]["stateMachineArn"] + "-other",
        },
    }

    assert running["detail"]["status"] == "RUNNING"
    assert workflow.deliver(running) == []
    assert workflow.deliver(other_machine) == []
    assert of(endpoint) <= sagemaker_names()


def test_an_endpoint_still_creating_is_retried_until_sagemaker_lets_it_go(
    workflow: DeployedWorkflow, started: list[str]
) -> None:
    """SageMaker refuses to delete an endpoint while it is Creating: the cleanup deletes nothing of that
    branch and fails, so that Lambda retries the event; once the endpoint has left Creating, it goes."""
    workflow.sagemaker_faults.refuse_deleting_creating_endpoints = True
    endpoint = start_stuck(workflow, started, "run-busy")
    event = stop(started[0])

    (refused,) = workflow.deliver(event)

    assert refused.error_type == "EndpointBusyError"
    assert of(endpoint) <= sagemaker_names()

    workflow.sagemaker_faults.finish_creating(endpoint, "CapacityError: stopped waiting")
    (retried,) = workflow.deliver(event)

    assert retried.function_error is None, retried.payload
    assert sorted(retried.payload["deleted"]) == sorted(of(endpoint))
    assert sagemaker_names() == set()


def test_the_sweeper_deletes_ended_and_expired_runs_and_keeps_live_ones(
    workflow: DeployedWorkflow, started: list[str]
) -> None:
    survivors = users_own()
    going = start_stuck(workflow, started, "run-sweep-going")
    ended = start_stuck(workflow, started, "run-sweep-ended")
    stop(started[1])  # its event is lost: only the sweep can delete what it left
    # Another run's resources (no execution of this state machine has its id) whose time-to-live is over.
    expired_at = (datetime.now(UTC) - timedelta(minutes=5)).strftime(EXPIRES_AT_FORMAT)
    expired = resource_names("run-gone-long-ago", "b").endpoint
    create_resources(expired, {"fmbench:run-id": "run-gone-long-ago", "fmbench:expires-at": expired_at})

    (sweep,) = workflow.tick()

    assert sweep.function_arn.endswith(f":function:{workflow.deployment.function_names[SWEEPER]}")
    assert sweep.function_error is None, sweep.payload
    (region,) = sweep.payload["regions"].values()
    assert sorted(region["deleted"]) == sorted(of(ended) | of(expired))
    assert {(d["run_id"], d["reason"]) for d in region["decisions"]} == {
        ("run-sweep-ended", "run ended"),
        ("run-gone-long-ago", "expired"),
    }
    assert region["kept"] == 3
    assert sagemaker_names() == survivors | of(going)
