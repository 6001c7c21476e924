"""The workflow tier's harness: the synthesized template "deployed" into moto, and its executions.

Deploying creates, in an empty moto, what the state machine refers to: the results bucket, the Lambda
functions (with the image CMD and environment the template gives them), the ECS cluster and task
definition, the Athena workgroup; then the state machine itself, whose definition is the template's
``DefinitionString`` with its references resolved to those resources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import boto3
from shims import AthenaShim, EcsRunTaskShim, LambdaShim, SageMakerFaults, wait_for_execution

REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
RESULTS_BUCKET: Final = "fmbench-results-workflow"
EXECUTION_TIMEOUT_S: Final = 90.0


@dataclass
class Execution:
    status: str
    output: Any
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]


@dataclass
class DeployedWorkflow:
    state_machine_arn: str
    results_bucket: str
    lambdas: LambdaShim
    runner: EcsRunTaskShim
    athena: AthenaShim
    sagemaker_faults: SageMakerFaults

    def run(self, suite: dict[str, Any], name: str) -> Execution:
        sfn = boto3.client("stepfunctions")
        started = sfn.start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(suite)
        )
        described = wait_for_execution(sfn, started["executionArn"], EXECUTION_TIMEOUT_S)
        history = sfn.get_execution_history(executionArn=started["executionArn"], maxResults=1000)["events"]
        output = described.get("output")
        return Execution(
            status=described["status"],
            output=json.loads(output) if output else None,
            error=described.get("error"),
            cause=described.get("cause"),
            history=history,
        )


# ------------------------------------------------------------------------------------------ deploying


def _resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


class _References:
    """What Ref and Fn::GetAtt of the template's resources stand for in this moto deployment."""

    PSEUDO: Final = {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::URLSuffix": "amazonaws.com",
    }

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.values: dict[tuple[str, str | None], str] = {}

    def set(self, logical_id: str, attribute: str | None, value: str) -> None:
        self.values[(logical_id, attribute)] = value

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            name = value["Ref"]
            return self.PSEUDO[name] if name in self.PSEUDO else self._value(name, None)
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            return self._value(logical_id, attribute)
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self.resolve(part)) for part in parts)
        return {key: self.resolve(item) for key, item in value.items()}

    def _value(self, logical_id: str, attribute: str | None) -> str:
        if (logical_id, attribute) in self.values:
            return self.values[(logical_id, attribute)]
        resource_type = self.template["Resources"][logical_id]["Type"]
        # Network placement means nothing to the shims; any well-formed id will do.
        if resource_type == "AWS::EC2::Subnet" and attribute is None:
            return f"subnet-{logical_id.lower()[-8:]}"
        if resource_type == "AWS::EC2::SecurityGroup" and attribute == "GroupId":
            return f"sg-{logical_id.lower()[-8:]}"
        raise KeyError(f"the workflow tier does not deploy {logical_id} ({resource_type}).{attribute}")


def _role(iam: Any, name: str, service: str) -> str:
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"])


def _only(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    (item,) = resources.items()
    return item


def deploy(template: dict[str, Any]) -> str:
    """Create what the state machine refers to, then the state machine; its ARN."""
    refs = _References(template)
    iam, s3 = boto3.client("iam"), boto3.client("s3")

    bucket_id = next(
        logical_id
        for logical_id, props in _resources_of(template, "AWS::S3::Bucket").items()
        if "LifecycleConfiguration" in props
    )
    s3.create_bucket(Bucket=RESULTS_BUCKET)
    refs.set(bucket_id, None, RESULTS_BUCKET)
    refs.set(bucket_id, "Arn", f"arn:aws:s3:::{RESULTS_BUCKET}")

    sagemaker_role_id = next(
        logical_id
        for logical_id, props in _resources_of(template, "AWS::IAM::Role").items()
        if props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "sagemaker.amazonaws.com"}
    )
    refs.set(sagemaker_role_id, "Arn", _role(iam, "fmbench-sagemaker", "sagemaker.amazonaws.com"))

    database_id, database = _only(_resources_of(template, "AWS::Glue::Database"))
    refs.set(database_id, None, database["DatabaseInput"]["Name"])
    workgroup_id, workgroup = _only(_resources_of(template, "AWS::Athena::WorkGroup"))
    boto3.client("athena").create_work_group(
        Name=workgroup["Name"],
        Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{RESULTS_BUCKET}/athena-results/"}},
    )
    refs.set(workgroup_id, None, workgroup["Name"])

    ecs = boto3.client("ecs")
    cluster_id, _ = _only(_resources_of(template, "AWS::ECS::Cluster"))
    cluster = ecs.create_cluster(clusterName="fmbench-runner")["cluster"]
    refs.set(cluster_id, None, cluster["clusterName"])
    refs.set(cluster_id, "Arn", cluster["clusterArn"])
    task_definition_id, task_definition = _only(_resources_of(template, "AWS::ECS::TaskDefinition"))
    registered = ecs.register_task_definition(
        family=task_definition["Family"],
        requiresCompatibilities=task_definition["RequiresCompatibilities"],
        networkMode=task_definition["NetworkMode"],
        cpu=task_definition["Cpu"],
        memory=task_definition["Memory"],
        containerDefinitions=[
            {"name": container["Name"], "image": "runner-image", "essential": container["Essential"]}
            for container in task_definition["ContainerDefinitions"]
        ],
    )["taskDefinition"]
    refs.set(task_definition_id, None, registered["taskDefinitionArn"])

    lambda_client = boto3.client("lambda")
    lambda_role = _role(iam, "fmbench-functions", "lambda.amazonaws.com")
    for function_id, function in _resources_of(template, "AWS::Lambda::Function").items():
        created = lambda_client.create_function(
            FunctionName=function_id,
            Role=lambda_role,
            PackageType=function["PackageType"],
            Code={"ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fmbench-lambda:latest"},
            ImageConfig=refs.resolve(function["ImageConfig"]),
            Environment=refs.resolve(function.get("Environment", {"Variables": {}})),
            Timeout=function["Timeout"],
            MemorySize=function["MemorySize"],
        )
        refs.set(function_id, "Arn", created["FunctionArn"])

    _, state_machine = _only(_resources_of(template, "AWS::StepFunctions::StateMachine"))
    definition = refs.resolve(state_machine["DefinitionString"])
    created_machine = boto3.client("stepfunctions").create_state_machine(
        name="FmbenchFlowWorkflow",
        definition=definition,
        roleArn=_role(iam, "fmbench-workflow", "states.amazonaws.com"),
    )
    return str(created_machine["stateMachineArn"])
