"""ec2 branches in the stack (infra/ec2.py): every EC2 create and delete is held to the product's tags, the
instance role is passed to EC2 only, and the deploy step knows where instances go."""

from typing import Any

from template_queries import (
    function_by_handler,
    render,
    resources,
    role_id_of,
    statement,
    statements_of_role,
)

from fmbench.cloud.settings import DeploySettings

EC2 = "arn:${AWS::Partition}:ec2:*:${AWS::AccountId}"
TAGGED_REQUEST = {"Null": {"aws:RequestTag/fmbench:run-id": "false"}}
TAGGED_RESOURCE = {"Null": {"aws:ResourceTag/fmbench:run-id": "false"}}


def _role_statements(template_json: dict[str, Any], handler: str) -> Any:
    _, function = function_by_handler(template_json, handler)
    return statements_of_role(template_json, role_id_of(function["Role"]))


def _instance_role_id(template_json: dict[str, Any]) -> str:
    (role_id,) = [
        logical_id
        for logical_id, props in resources(template_json, "AWS::IAM::Role").items()
        if props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    ]
    return role_id


def test_deploy_creates_only_tagged_instances_and_groups(template_json: dict[str, Any]) -> None:
    deploy = _role_statements(template_json, "lambdas.deploy.handler")
    created = [f"{EC2}:instance/*", f"{EC2}:volume/*", f"{EC2}:security-group/*"]
    assert statement(["ec2:RunInstances", "ec2:CreateSecurityGroup"], created, TAGGED_REQUEST) in deploy
    tag_on_create = {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSecurityGroup"]}}
    assert statement(["ec2:CreateTags"], created, tag_on_create) in deploy
    changed = ["ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup"]
    assert statement(changed, [f"{EC2}:security-group/*"], TAGGED_RESOURCE) in deploy
    # no EC2 action of the deploy role that creates, changes or deletes goes without a tag condition,
    # except RunInstances on what an instance is launched from and into (AMI, subnet, its interface)
    for each in deploy:
        mutating = [a for a in each["Action"] if a.startswith("ec2:") and not a.startswith("ec2:Describe")]
        if mutating and "Condition" not in each:
            assert set(mutating) <= {"ec2:RunInstances", "ec2:CreateSecurityGroup"}, each
            assert not {f"{EC2}:instance/*", f"{EC2}:volume/*"} & set(each["Resource"]), each
    assert (
        statement(
            ["iam:PassRole"],
            [f"${{{_instance_role_id(template_json)}.Arn}}"],
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        )
        in deploy
    )
    assert statement(["ssm:GetParameter"], ["arn:${AWS::Partition}:ssm:*::parameter/aws/service/*"]) in deploy


def test_teardown_cleanup_and_sweeper_end_only_tagged_instances(template_json: dict[str, Any]) -> None:
    ended = [f"{EC2}:instance/*", f"{EC2}:security-group/*"]
    for handler in ("lambdas.teardown.handler", "lambdas.cleanup.handler", "lambdas.sweeper.handler"):
        statements = _role_statements(template_json, handler)
        assert (
            statement(["ec2:TerminateInstances", "ec2:DeleteSecurityGroup"], ended, TAGGED_RESOURCE)
            in statements
        )
        unconditioned = [
            s for s in statements if "ec2:TerminateInstances" in s["Action"] and "Condition" not in s
        ]
        assert unconditioned == [], handler


def test_the_instance_role_reads_only_the_suites_secrets(template_json: dict[str, Any]) -> None:
    statements = statements_of_role(template_json, _instance_role_id(template_json))
    secrets = "arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:fmbench/*"
    assert statement(["secretsmanager:GetSecretValue"], [secrets]) in statements
    assert not any(a.startswith(("ec2:", "sagemaker:", "iam:")) for s in statements for a in s["Action"])
    (profile,) = resources(template_json, "AWS::IAM::InstanceProfile").values()
    assert render(profile["Roles"]) == [f"${{{_instance_role_id(template_json)}}}"]


def test_the_deploy_step_gets_the_runners_subnets_group_and_the_profile(
    template_json: dict[str, Any],
) -> None:
    _, deploy = function_by_handler(template_json, "lambdas.deploy.handler")
    variables = render(deploy["Environment"]["Variables"])
    (group_id,) = [
        logical_id
        for logical_id, props in resources(template_json, "AWS::EC2::SecurityGroup").items()
        if "runner" in props["GroupDescription"].lower()
    ]
    assert variables["FMBENCH_RUNNER_SECURITY_GROUP_ID"] == f"${{{group_id}.GroupId}}"
    (profile_id,) = resources(template_json, "AWS::IAM::InstanceProfile")
    assert variables["FMBENCH_EC2_INSTANCE_PROFILE_ARN"] == f"${{{profile_id}.Arn}}"
    subnets = variables["FMBENCH_EC2_SUBNET_IDS"].split(",")
    assert len(subnets) == 2 and all(s.startswith("${") for s in subnets)
    # what the deploy step's settings read (fmbench.cloud.settings), with the references as real ids
    settings = DeploySettings.from_environ(
        {
            "AWS_REGION": "us-east-1",
            "FMBENCH_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/r",
            "FMBENCH_EC2_SUBNET_IDS": "subnet-0a,subnet-0b",
            "FMBENCH_RUNNER_SECURITY_GROUP_ID": "sg-0a",
            "FMBENCH_EC2_INSTANCE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/p",
        }
    )
    network = settings.ec2_network()
    assert network is not None and network.subnet_ids == ("subnet-0a", "subnet-0b")
    assert set(variables) >= {"FMBENCH_EC2_SUBNET_IDS", "FMBENCH_RUNNER_SECURITY_GROUP_ID"}
