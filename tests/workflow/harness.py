"""The workflow tier's harness: the synthesized template "deployed" into moto, and its executions.

Deploying creates, in an empty moto, what the state machine refers to: the results bucket, the Glue
database and tables, the Lambda functions (with the image CMD and environment the template gives them),
the ECS cluster and task definition, the Athena workgroup; then the state machine itself, whose
definition is the template's ``DefinitionString`` with its references resolved to those resources; then
what refers to the state machine: the functions whose environment names it, and the EventBridge rules
with their targets.

moto's EventBridge stores rules but delivers nothing to Lambda, and Step Functions sends it no events, so
``DeployedWorkflow.deliver`` plays EventBridge: it matches an event, built as AWS sends it, against every
deployed rule's pattern (with moto's own matcher) and invokes each matching rule's Lambda targets.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import boto3
from moto.events.models import EventPattern
from shims import (
    AthenaShim,
    EcsRunTaskShim,
    LambdaShim,
    LoopbackInstancesShim,
    SageMakerFaults,
    wait_for_execution,
)

REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
RESULTS_BUCKET: Final = "fmbench-results-workflow"
EXECUTION_TIMEOUT_S: Final = 240.0  # a bound for a loaded machine, not a measure of speed
STATE_MACHINE_NAME: Final = "FmbenchFlowWorkflow"


@dataclass
class Execution:
    status: str
    output: Any
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class Invocation:
    """What a Lambda invocation answered: the handler's result, or its error type and message."""

    function_arn: str
    payload: Any
    function_error: str | None

    @property
    def error_type(self) -> str | None:
        return str(self.payload["errorType"]) if self.function_error else None


@dataclass(frozen=True)
class Deployment:
    """What `deploy` created that the tests address: the state machine and the functions by handler."""

    state_machine_arn: str
    function_names: dict[str, str] = field(default_factory=dict)


@dataclass
class DeployedWorkflow:
    deployment: Deployment
    results_bucket: str
    lambdas: LambdaShim
    runner: EcsRunTaskShim
    athena: AthenaShim
    sagemaker_faults: SageMakerFaults
    instances: LoopbackInstancesShim

    @property
    def state_machine_arn(self) -> str:
        return self.deployment.state_machine_arn

    def start(self, suite: dict[str, Any], name: str) -> str:
        """Start an execution and return its ARN without waiting for it."""
        started = boto3.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(suite)
        )
        return str(started["executionArn"])

    def run(self, suite: dict[str, Any], name: str) -> Execution:
        sfn = boto3.client("stepfunctions")
        started = {"executionArn": self.start(suite, name)}
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

    def invoke(self, function_arn: str, event: Any) -> Invocation:
        """Invoke as EventBridge's target does, but wait for the answer (the shim runs the handler either
        way; waiting lets a test see what the handler returned or raised)."""
        answer = boto3.client("lambda").invoke(FunctionName=function_arn, Payload=json.dumps(event).encode())
        return Invocation(function_arn, json.loads(answer["Payload"].read()), answer.get("FunctionError"))

    def deliver(self, event: dict[str, Any]) -> list[Invocation]:
        """EventBridge's default bus: each enabled rule whose pattern matches sends the event on."""
        events = boto3.client("events")
        invocations = []
        for rule in events.list_rules()["Rules"]:
            pattern = rule.get("EventPattern")
            if (
                rule["State"] != "ENABLED"
                or not pattern
                or not EventPattern.load(pattern).matches_event(event)
            ):
                continue
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                invocations.append(self.invoke(target["Arn"], event))
        return invocations

    def tick(self) -> list[Invocation]:
        """Every scheduled rule fires once, with the event EventBridge sends for a schedule."""
        events = boto3.client("events")
        invocations = []
        for rule in events.list_rules()["Rules"]:
            if rule["State"] != "ENABLED" or not rule.get("ScheduleExpression"):
                continue
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": REGION,
                "resources": [rule["Arn"]],
                "detail": {},
            }
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                invocations.append(self.invoke(target["Arn"], event))
        return invocations


def execution_status_change_event(execution_arn: str) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event EventBridge receives for this execution's
    current status, field for field as Step Functions sends it (input and output as JSON text)."""
    described = boto3.client("stepfunctions").describe_execution(executionArn=execution_arn)

    def epoch_ms(value: datetime | None) -> int | None:
        return int(value.timestamp() * 1000) if value is not None else None

    stop_date = described.get("stopDate")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": ACCOUNT,
        "time": (stop_date or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [execution_arn],
        "detail": {
            "executionArn": execution_arn,
            "stateMachineArn": described["stateMachineArn"],
            "name": described["name"],
            "status": described["status"],
            "startDate": epoch_ms(described["startDate"]),
            "stopDate": epoch_ms(stop_date),
            "input": described.get("input"),
            "output": described.get("output"),
            "inputDetails": {"included": True},
            "outputDetails": {"included": True} if described.get("output") is not None else None,
            "error": described.get("error"),
            "cause": described.get("cause"),
        },
    }


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


def deploy(template: dict[str, Any]) -> Deployment:
    """Create what the state machine refers to, the state machine, then what refers to it."""
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
    _create_network(template, refs)

    database_id, database = _only(_resources_of(template, "AWS::Glue::Database"))
    refs.set(database_id, None, database["DatabaseInput"]["Name"])
    # The catalog as the template defines it: the Plan registers the records table's partitions there,
    # and the Athena shim reads only the partitions it holds.
    glue = boto3.client("glue")
    glue.create_database(DatabaseInput={"Name": database["DatabaseInput"]["Name"]})
    for table in _resources_of(template, "AWS::Glue::Table").values():
        table_input = refs.resolve(table["TableInput"])
        # CloudFormation passes the table's parameters as text, as Glue stores them ("false").
        table_input["Parameters"] = {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in table_input.get("Parameters", {}).items()
        }
        glue.create_table(DatabaseName=database["DatabaseInput"]["Name"], TableInput=table_input)
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
    # The load runner's and the Evaluate task's, each with its container's entry point (the image's own
    # when the template gives none), which the ECS shim runs.
    for task_definition_id, task_definition in _resources_of(template, "AWS::ECS::TaskDefinition").items():
        registered = ecs.register_task_definition(
            family=task_definition["Family"],
            requiresCompatibilities=task_definition["RequiresCompatibilities"],
            networkMode=task_definition["NetworkMode"],
            cpu=task_definition["Cpu"],
            memory=task_definition["Memory"],
            containerDefinitions=[
                {
                    "name": container["Name"],
                    "image": "runner-image",
                    "essential": container["Essential"],
                    **({"entryPoint": container["EntryPoint"]} if "EntryPoint" in container else {}),
                }
                for container in task_definition["ContainerDefinitions"]
            ],
        )["taskDefinition"]
        refs.set(task_definition_id, None, registered["taskDefinitionArn"])

    # What the rules fall back to when a delivery fails; nothing here reads it.
    for queue_id in _resources_of(template, "AWS::SQS::Queue"):
        queue_url = boto3.client("sqs").create_queue(QueueName=queue_id)["QueueUrl"]
        attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        refs.set(queue_id, "Arn", attributes["Attributes"]["QueueArn"])
        refs.set(queue_id, None, queue_url)

    # The workflow's functions first (the state machine refers to them), those that refer to the state
    # machine (the sweeper's environment) after it.
    lambda_role = _role(iam, "fmbench-functions", "lambda.amazonaws.com")
    functions = _resources_of(template, "AWS::Lambda::Function")
    _, state_machine = _only(_resources_of(template, "AWS::StepFunctions::StateMachine"))
    state_machine_id, _ = _only(_resources_of(template, "AWS::StepFunctions::StateMachine"))
    after_state_machine = {
        function_id for function_id, function in functions.items() if state_machine_id in json.dumps(function)
    }
    function_names: dict[str, str] = {}
    for function_id, function in functions.items():
        if function_id not in after_state_machine:
            function_names.update(_create_function(refs, lambda_role, function_id, function))

    definition = refs.resolve(state_machine["DefinitionString"])
    created_machine = boto3.client("stepfunctions").create_state_machine(
        name=STATE_MACHINE_NAME,
        definition=definition,
        roleArn=_role(iam, "fmbench-workflow", "states.amazonaws.com"),
    )
    state_machine_arn = str(created_machine["stateMachineArn"])
    refs.set(state_machine_id, None, state_machine_arn)
    refs.set(state_machine_id, "Arn", state_machine_arn)
    refs.set(state_machine_id, "Name", STATE_MACHINE_NAME)

    for function_id in sorted(after_state_machine):
        function_names.update(_create_function(refs, lambda_role, function_id, functions[function_id]))
    _create_rules(template, refs)
    return Deployment(state_machine_arn, function_names)


def _create_network(template: dict[str, Any], refs: _References) -> None:
    """What ec2 branches launch into: a moto VPC with the template's subnets and security groups, and its
    instance profiles (ids and ARNs the Deploy function's environment names)."""
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    vpc_id = ec2.create_vpc(CidrBlock="10.60.0.0/20")["Vpc"]["VpcId"]
    for index, subnet_id in enumerate(_resources_of(template, "AWS::EC2::Subnet")):
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.60.{index}.0/24")["Subnet"]
        refs.set(subnet_id, None, subnet["SubnetId"])
    for group_id, group in _resources_of(template, "AWS::EC2::SecurityGroup").items():
        created = ec2.create_security_group(
            GroupName=group_id, Description=group["GroupDescription"], VpcId=vpc_id
        )
        refs.set(group_id, "GroupId", created["GroupId"])
    for profile_id in _resources_of(template, "AWS::IAM::InstanceProfile"):
        profile = iam.create_instance_profile(InstanceProfileName=profile_id)["InstanceProfile"]
        refs.set(profile_id, "Arn", profile["Arn"])


def _create_function(
    refs: _References, role_arn: str, function_id: str, function: dict[str, Any]
) -> dict[str, str]:
    """Create the function as the template defines it; its handler -> its name."""
    created = boto3.client("lambda").create_function(
        FunctionName=function_id,
        Role=role_arn,
        PackageType=function["PackageType"],
        Code={"ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/fmbench-lambda:latest"},
        ImageConfig=refs.resolve(function["ImageConfig"]),
        Environment=refs.resolve(function.get("Environment", {"Variables": {}})),
        Timeout=function["Timeout"],
        MemorySize=function["MemorySize"],
    )
    refs.set(function_id, "Arn", created["FunctionArn"])
    (handler,) = function["ImageConfig"]["Command"]
    return {handler: function_id}


def _create_rules(template: dict[str, Any], refs: _References) -> None:
    """The template's EventBridge rules with their patterns, schedules and targets, references resolved."""
    events = boto3.client("events")
    for rule_id, rule in _resources_of(template, "AWS::Events::Rule").items():
        settings: dict[str, Any] = {"Name": rule_id, "State": rule.get("State", "ENABLED")}
        if "EventPattern" in rule:
            settings["EventPattern"] = json.dumps(refs.resolve(rule["EventPattern"]))
        if "ScheduleExpression" in rule:
            settings["ScheduleExpression"] = rule["ScheduleExpression"]
        refs.set(rule_id, "Arn", events.put_rule(**settings)["RuleArn"])
        events.put_targets(Rule=rule_id, Targets=refs.resolve(rule["Targets"]))
