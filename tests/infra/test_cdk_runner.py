"""The runner: a Fargate task of the runner image, its own small VPC, and a task role scoped to its work."""

from typing import Any

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk.assertions import Match, Template
from template_queries import (
    actions_of,
    bucket_id,
    canonical,
    only,
    render,
    resources,
    role_id_of,
    runner_task_definition,
    state_machine_definition,
    statement,
    statements_of_role,
)

from infra.app import BuiltApp

ENDPOINTS = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}:endpoint/fmb-*"
FOUNDATION_MODELS = "arn:${AWS::Partition}:bedrock:*::foundation-model/*"
INFERENCE_PROFILES = "arn:${AWS::Partition}:bedrock:*:${AWS::AccountId}:inference-profile/*"


def _task_definition(template_json: dict[str, Any]) -> dict[str, Any]:
    return runner_task_definition(template_json)[1]


def test_runner_exposes_its_resources(built: BuiltApp) -> None:
    runner = built.stack.runner

    assert isinstance(runner.cluster, ecs.Cluster)
    assert isinstance(runner.task_definition, ecs.FargateTaskDefinition)
    assert runner.container.container_name == "runner"
    assert isinstance(runner.security_group, ec2.SecurityGroup)
    assert runner.assign_public_ip is True


def test_cluster_has_container_insights(template: Template) -> None:
    template.resource_count_is("AWS::ECS::Cluster", 1)
    template.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )


def test_task_is_fargate_x86_with_the_runner_image_and_no_plain_environment(
    template_json: dict[str, Any],
) -> None:
    task = render(_task_definition(template_json))

    assert (task["RequiresCompatibilities"], task["NetworkMode"]) == (["FARGATE"], "awsvpc")
    assert (task["Cpu"], task["Memory"]) == ("2048", "4096")
    assert task["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    (container,) = task["ContainerDefinitions"]
    assert container["Name"] == "runner"
    assert container["Essential"] is True
    assert container["StopTimeout"] == 60
    # The image is the CDK asset (built from runner_image/Dockerfile at deploy time), not a public tag.
    assert "cdk-hnb659fds-container-assets" in container["Image"]["Fn::Sub"]
    # The spec URI arrives as a container override per branch; nothing else is configured in plain text.
    assert "Environment" not in container and "Secrets" not in container


def test_runner_logs_go_to_a_log_group_with_retention(template_json: dict[str, Any]) -> None:
    (container,) = render(_task_definition(template_json))["ContainerDefinitions"]
    log_options = container["LogConfiguration"]["Options"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    log_group_id = log_options["awslogs-group"].strip("${}")

    assert template_json["Resources"][log_group_id]["Properties"]["RetentionInDays"] == 30
    assert template_json["Outputs"]["RunnerLogGroupName"]["Value"] == {"Ref": log_group_id}


def test_task_role_writes_records_and_outcomes_reads_specs_and_invokes_product_endpoints(
    template_json: dict[str, Any],
) -> None:
    bucket = f"${{{bucket_id(template_json)}.Arn}}"
    statements = statements_of_role(template_json, role_id_of(_task_definition(template_json)["TaskRoleArn"]))

    # Exactly these and nothing else (compared as sets of statements, order aside).
    expected = [
        statement(["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"], [ENDPOINTS]),
        statement(
            ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
            [FOUNDATION_MODELS, INFERENCE_PROFILES],
        ),
        # Its own parts' metadata is read back to count what this run wrote; the run's prompts (datasets/)
        # are what every branch sends.
        statement(["s3:GetObject"], [f"{bucket}/specs/*", f"{bucket}/records/*", f"{bucket}/datasets/*"]),
        # server_metrics/: the server's /metrics scraped during each load point.
        statement(
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            [f"{bucket}/records/*", f"{bucket}/outcomes/*", f"{bucket}/server_metrics/*"],
        ),
        statement(
            ["s3:ListBucket"],
            [bucket],
            {
                "StringLike": {
                    "s3:prefix": ["datasets/*", "outcomes/*", "records/*", "server_metrics/*", "specs/*"]
                }
            },
        ),
    ]
    assert canonical(statements) == canonical(expected)


def test_execution_role_only_pulls_the_image_and_writes_the_log_group(template_json: dict[str, Any]) -> None:
    task = _task_definition(template_json)
    statements = statements_of_role(template_json, role_id_of(task["ExecutionRoleArn"]))

    assert actions_of(statements) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetAuthorizationToken",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    (token,) = [s for s in statements if s["Action"] == ["ecr:GetAuthorizationToken"]]
    assert token["Resource"] == ["*"]  # the one action that has no resource to scope to
    assert all(s["Resource"] != ["*"] for s in statements if s is not token)


def test_own_vpc_has_public_subnets_no_nat_an_s3_endpoint_and_rejected_flows_logged(
    template: Template, template_json: dict[str, Any]
) -> None:
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::Subnet", 2)
    template.all_resources_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": True})
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Gateway", "ServiceName": Match.object_like({"Fn::Join": Match.any_value()})},
    )
    _, flow_log = only(template_json, "AWS::EC2::FlowLog")
    assert (flow_log["TrafficType"], flow_log["LogDestinationType"]) == ("REJECT", "cloud-watch-logs")


def test_tasks_take_no_inbound_traffic_and_get_a_public_ip_in_public_subnets(
    template_json: dict[str, Any],
) -> None:
    (security_group,) = resources(template_json, "AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in security_group
    assert resources(template_json, "AWS::EC2::SecurityGroupIngress") == {}

    run_load = state_machine_definition(template_json)["States"]["Branches"]["ItemProcessor"]["States"][
        "RunLoad"
    ]
    network = run_load["Parameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    public_subnets = {
        f"${{{logical_id}}}"
        for logical_id, props in resources(template_json, "AWS::EC2::Subnet").items()
        if props["MapPublicIpOnLaunch"]
    }
    assert network["AssignPublicIp"] == "ENABLED"
    assert set(network["Subnets"]) == public_subnets
    assert network["SecurityGroups"] == [
        f"${{{next(iter(resources(template_json, 'AWS::EC2::SecurityGroup')))}.GroupId}}"
    ]


def test_an_existing_vpc_is_used_by_its_ids_without_a_lookup(
    custom: BuiltApp, custom_template_json: dict[str, Any]
) -> None:
    assert custom.stack.environment == "aws://unknown-account/unknown-region"
    assert resources(custom_template_json, "AWS::EC2::VPC") == {}
    assert resources(custom_template_json, "AWS::EC2::FlowLog") == {}
    (security_group,) = resources(custom_template_json, "AWS::EC2::SecurityGroup").values()
    assert security_group["VpcId"] == "vpc-0123456789abcdef0"
    run_load = state_machine_definition(custom_template_json)["States"]["Branches"]["ItemProcessor"][
        "States"
    ]["RunLoad"]
    network = run_load["Parameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
    assert "AssignPublicIp" not in network  # DISABLED: private subnets reach out through the VPC's own NAT


def test_existing_endpoints_from_context_are_invokable_by_exact_name(
    custom_template_json: dict[str, Any],
) -> None:
    task = _task_definition(custom_template_json)
    statements = statements_of_role(custom_template_json, role_id_of(task["TaskRoleArn"]))
    existing = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}:endpoint/my-llama31-8b-endpoint"

    assert (
        statement(
            ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"], [ENDPOINTS, existing]
        )
        in statements
    )


def test_task_size_follows_context(custom_template_json: dict[str, Any]) -> None:
    task = _task_definition(custom_template_json)
    assert (task["Cpu"], task["Memory"]) == ("4096", "8192")
