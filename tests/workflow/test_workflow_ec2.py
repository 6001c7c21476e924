"""ec2 branches through the synthesized state machine on moto (docs/ec2.md).

The "instance" is moto's; its private address is loopback (``LoopbackInstancesShim``) and the emulator
listens on the target's port there, so the runner, which calls the instance's URL from the spec Deploy
wrote, measures the emulator as it would measure the server inside the VPC. What the instance would run
is its user data, read back from EC2. Every path ends with no instance left running.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from harness import RESULTS_BUCKET, DeployedWorkflow, execution_status_change_event
from shims import wait_for_execution
from test_workflow_execution import suite

from fmbench.cloud import steps as cloud_steps

DEPLOY = "lambdas.deploy.handler"
TEARDOWN = "lambdas.teardown.handler"
CLEANUP = "lambdas.cleanup.handler"
AMI = "ami-03cf127a"  # one of the AMIs moto knows


def ec2_target(name: str, emulator_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "ec2",
        "instance_type": "g5.xlarge",
        "container": "vllm",
        "model": "served-model",
        "model_source": {"hf_model_id": "example-org/example-model"},
        "ami": AMI,
        "port": urlsplit(emulator_url).port,
        **fields,
    }


def outcome_of(run_id: str) -> dict[str, Any]:
    """The one branch's outcome.json, as its runner wrote it (what the report reads)."""
    s3 = boto3.client("s3")
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=RESULTS_BUCKET, Prefix=f"outcomes/run_id={run_id}/")["Contents"]
        if o["Key"].endswith("/outcome.json")
    ]
    (key,) = keys
    return dict(json.loads(s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()))


def lifetime_records(run_id: str) -> dict[str, dict[str, Any]]:
    """deployment.json and teardown.json of the run's branch: the instance's lifetime (actual cost)."""
    s3 = boto3.client("s3")
    found = {}
    for o in s3.list_objects_v2(Bucket=RESULTS_BUCKET, Prefix=f"outcomes/run_id={run_id}/")["Contents"]:
        name = o["Key"].rsplit("/", 1)[1]
        if name in ("deployment.json", "teardown.json"):
            found[name] = json.loads(s3.get_object(Bucket=RESULTS_BUCKET, Key=o["Key"])["Body"].read())
    return found


def instances() -> list[dict[str, Any]]:
    reservations = boto3.client("ec2").describe_instances()["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]


def running() -> list[str]:
    return [i["InstanceId"] for i in instances() if i["State"]["Name"] in ("pending", "running")]


def product_groups() -> list[str]:
    groups = boto3.client("ec2").describe_security_groups()["SecurityGroups"]
    return [g["GroupName"] for g in groups if g["GroupName"].startswith("fmb-")]


def user_data_of(instance_id: str) -> str:
    value = boto3.client("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(value["UserData"]["Value"]).decode()


def test_an_ec2_branch_launches_serves_is_measured_and_is_terminated(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    port = urlsplit(emulator_url).port
    workflow.run(suite("ec2-suite", [ec2_target("vllm-g5", emulator_url)]), "run-ec2-ok")

    outcome = outcome_of("run-ec2-ok")
    assert outcome["status"] == "succeeded", outcome["reason"]
    assert outcome["load_points_completed"] == 2 and outcome["records_written"] >= 8  # 2 levels x 4 requests
    (instance,) = instances()
    assert instance["State"]["Name"] == "terminated" and running() == []
    assert product_groups() == []
    script = user_data_of(instance["InstanceId"])
    assert f"-p {port}:8000" in script and "vllm/vllm-openai:v0.10.2" in script
    assert "--served-model-name served-model" in script and "--model example-org/example-model" in script
    (deploy_call,) = workflow.lambdas.calls_of(DEPLOY)
    assert deploy_call.result is not None and deploy_call.result["endpoint_name"].startswith("fmb-run-ec2-ok")
    (teardown_call,) = workflow.lambdas.calls_of(TEARDOWN)
    assert any(label.startswith("instance/i-") for label in teardown_call.result["deleted"])  # type: ignore[index]
    # the instance's lifetime, for the actual cost (report/costs.py reads these as for an endpoint)
    records = lifetime_records("run-ec2-ok")
    deployed, torn = records["deployment.json"], records["teardown.json"]
    assert deployed["endpoint_name"] == torn["endpoint_name"] == deploy_call.result["endpoint_name"]
    assert torn["created_epoch_s"] <= deployed["in_service_epoch_s"] <= torn["deleted_epoch_s"]


def test_a_server_that_never_answers_fails_the_branch_and_the_instance_goes(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    """The emulator answers 404 on this health path: the runner's bounded wait (the stack's deployment
    allowance, lowered here to 3 s in the Plan function's environment as cdk.json would) ends in a clear
    error, and Teardown terminates the instance."""
    plan_function = workflow.deployment.function_names["lambdas.plan.handler"]
    lambda_client = boto3.client("lambda")
    environment = lambda_client.get_function_configuration(FunctionName=plan_function)["Environment"]
    lambda_client.update_function_configuration(
        FunctionName=plan_function,
        Environment={"Variables": {**environment["Variables"], "FMBENCH_MAX_DEPLOY_SECONDS": "3"}},
    )
    target = ec2_target("never-ready", emulator_url, health_path="/never-ready")
    workflow.run(suite("ec2-suite", [target]), "run-ec2-never")

    outcome = outcome_of("run-ec2-never")
    assert outcome["status"] == "failed" and outcome["records_written"] == 0
    assert "did not answer" in outcome["reason"] and "/never-ready within 3 s" in outcome["reason"]
    (teardown_call,) = workflow.lambdas.calls_of(TEARDOWN)
    assert any(label.startswith("instance/i-") for label in teardown_call.result["deleted"])  # type: ignore[index]
    assert running() == [] and product_groups() == []


def test_an_instance_that_never_boots_times_out_and_is_terminated(
    workflow: DeployedWorkflow, emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_steps, "MAX_STATUS_POLLS", 3)
    workflow.instances.stay_pending()
    workflow.run(suite("ec2-suite", [ec2_target("stuck", emulator_url)]), "run-ec2-stuck")

    (teardown_call,) = workflow.lambdas.calls_of(TEARDOWN)
    assert teardown_call.event["error"]["Error"] == "EndpointTimeout"
    assert "not InService after 3 status polls" in teardown_call.event["error"]["Cause"]
    assert workflow.runner.runs == []  # no load against an instance that never came up
    assert running() == [] and product_groups() == []


def test_an_unknown_instance_type_fails_at_plan_and_launches_nothing(
    workflow: DeployedWorkflow, emulator_url: str
) -> None:
    target = ec2_target("typo", emulator_url, instance_type="g5.3xlarge")
    execution = workflow.run(suite("ec2-suite", [target]), "run-ec2-typo")
    assert execution.status == "FAILED"
    assert "targets.0.instance_type: 'g5.3xlarge' is not an EC2 instance type" in str(execution.cause)
    assert instances() == [] and workflow.lambdas.calls_of(DEPLOY) == []


def test_no_vcpu_quota_fails_at_plan(workflow: DeployedWorkflow, emulator_url: str) -> None:
    """g5.12xlarge has 48 vCPUs; two at once need 96 of the account's 64 (conftest's EC2_VCPU_QUOTAS)."""
    targets = [
        ec2_target(f"big-{index}", emulator_url, instance_type="g5.12xlarge", model_copies=4)
        for index in range(2)
    ]
    execution = workflow.run(suite("ec2-suite", targets), "run-ec2-quota")
    assert execution.status == "FAILED"
    assert "'Running On-Demand G and VT instances' (L-DB2E81BA) in us-east-1 is 64 vCPUs" in str(
        execution.cause
    )
    assert "may hold 96 at once" in str(execution.cause)
    assert instances() == []


@pytest.fixture
def started(workflow: DeployedWorkflow) -> Iterator[list[str]]:
    arns: list[str] = []
    yield arns
    sfn = boto3.client("stepfunctions")
    for arn in arns:
        if sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            sfn.stop_execution(executionArn=arn)
        wait_for_execution(sfn, arn, 30)


def test_an_aborted_execution_leaves_no_instance(
    workflow: DeployedWorkflow, emulator_url: str, started: list[str]
) -> None:
    """Stopping runs no Catch: the execution-end cleanup (its rule and function) terminates the instance."""
    workflow.instances.stay_pending()
    started.append(workflow.start(suite("ec2-suite", [ec2_target("aborted", emulator_url)]), "run-ec2-abort"))
    deadline = time.monotonic() + 60
    while not running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(running()) == 1

    sfn = boto3.client("stepfunctions")
    sfn.stop_execution(executionArn=started[0], error="UserStopped", cause="stopped by the test")
    assert wait_for_execution(sfn, started[0], 30)["status"] == "ABORTED"
    assert len(running()) == 1  # nothing in the state machine ran for it

    (invocation,) = workflow.deliver(execution_status_change_event(started[0]))
    assert invocation.function_error is None, invocation.payload
    assert invocation.payload["run_id"] == "run-ec2-abort"
    assert [label.split("/")[0] for label in invocation.payload["deleted"]] == ["instance", "security-group"]
    assert running() == [] and product_groups() == []
    assert workflow.lambdas.calls_of(CLEANUP)
