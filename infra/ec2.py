"""What ec2 branches need from the stack (docs/ec2.md): the serving instances' role and profile, where the
instances go (the runner's subnets, reachable from the runner's security group only), and the functions'
EC2 permissions, every create and delete held to the product's tags."""

from typing import Final

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from fmbench.deployment import NAME_PREFIX, TAG_RUN_ID
from infra.functions import SECRET_NAME_PREFIX, Functions, allow_pulling_images, role_of
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources
from infra.runner import Runner

EC2_SUBNET_IDS_ENV: Final = "FMBENCH_EC2_SUBNET_IDS"
RUNNER_SECURITY_GROUP_ID_ENV: Final = "FMBENCH_RUNNER_SECURITY_GROUP_ID"
EC2_INSTANCE_PROFILE_ARN_ENV: Final = "FMBENCH_EC2_INSTANCE_PROFILE_ARN"
# Describe calls have no resource-level permissions in EC2.
DESCRIBE_ACTIONS: Final = ["ec2:DescribeInstances", "ec2:DescribeSecurityGroups"]
_TAGGED_REQUEST: Final = {"Null": {f"aws:RequestTag/{TAG_RUN_ID}": "false"}}
_TAGGED_RESOURCE: Final = {"Null": {f"aws:ResourceTag/{TAG_RUN_ID}": "false"}}


def _ec2_arn(resource: str) -> str:
    return f"arn:{Aws.PARTITION}:ec2:*:{Aws.ACCOUNT_ID}:{resource}"


class Ec2Serving(Construct):
    """The instance role and profile, the deploy function's environment, and each function's EC2 grants."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Functions,
        runner: Runner,
        cleanup_functions: list[lambda_.IFunction],
        model_data_buckets: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        self.instance_role = self._instance_role(model_data_buckets)
        self.instance_profile = iam.CfnInstanceProfile(
            self, "InstanceProfile", roles=[self.instance_role.role_name]
        )
        selection = runner.subnets
        subnet_ids = (
            [subnet.subnet_id for subnet in selection.subnets]  # an existing VPC's, named by id
            if selection.subnets
            else runner.vpc.select_subnets(subnet_type=selection.subnet_type).subnet_ids
        )
        functions.deploy.add_environment(EC2_SUBNET_IDS_ENV, ",".join(subnet_ids))
        functions.deploy.add_environment(
            RUNNER_SECURITY_GROUP_ID_ENV, runner.security_group.security_group_id
        )
        functions.deploy.add_environment(EC2_INSTANCE_PROFILE_ARN_ENV, self.instance_profile.attr_arn)
        self._allow_launching(functions.deploy)
        self._allow_describing(functions.endpoint_status)
        for function in [functions.teardown, *cleanup_functions]:
            self._allow_terminating(function)
        self._allow_reading_vcpu_quotas(functions.plan)

    def _instance_role(self, model_data_buckets: tuple[str, ...]) -> iam.Role:
        """What the user data does with the instance's credentials: read the suite's token (fmbench/
        secrets), pull an AWS Deep Learning Container (LMI), read a model from the listed buckets."""
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="FMBench serving instances: read the Hub token and model data, pull the image",
        )
        secrets = f"arn:{Aws.PARTITION}:secretsmanager:*:{Aws.ACCOUNT_ID}:secret:{SECRET_NAME_PREFIX}*"
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secrets])
        )
        acknowledge_wildcard_resources(
            role,
            [secrets],
            reason="The Hugging Face token an ec2 target names (hf_token_secret) is under 'fmbench/'; "
            "Secrets Manager appends a random suffix to every secret ARN.",
        )
        allow_pulling_images(
            role,
            reason="LMI images are AWS Deep Learning Containers in registries that differ by region; pull "
            "actions only.",
        )
        if model_data_buckets:
            objects = [f"arn:{Aws.PARTITION}:s3:::{name}/*" for name in model_data_buckets]
            role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=objects))
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{Aws.PARTITION}:s3:::{name}" for name in model_data_buckets],
                )
            )
            acknowledge_wildcard_resources(
                role,
                objects,
                reason="Model data (model_data_s3_uri) in the buckets listed in fmbench:modelDataBuckets; "
                "read only.",
            )
        return role

    def _describe(self, function: lambda_.IFunction) -> None:
        role = role_of(function)
        role.add_to_principal_policy(iam.PolicyStatement(actions=DESCRIBE_ACTIONS, resources=["*"]))
        acknowledge_unscoped_actions(
            role,
            DESCRIBE_ACTIONS,
            reason="EC2 Describe actions support no resource-level permissions; read only, and the "
            "functions act only on what carries the product's tags.",
        )

    def _allow_launching(self, function: lambda_.IFunction) -> None:
        role = role_of(function)
        self._describe(function)
        role.add_to_principal_policy(iam.PolicyStatement(actions=["ec2:DescribeImages"], resources=["*"]))
        acknowledge_unscoped_actions(
            role, ["ec2:DescribeImages"], reason="ec2:DescribeImages supports no resource-level permissions."
        )
        tagged = [_ec2_arn("instance/*"), _ec2_arn("volume/*"), _ec2_arn("security-group/*")]
        # What is created must carry the run-id tag (so the cleanup finds it)...
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ec2:RunInstances", "ec2:CreateSecurityGroup"],
                resources=tagged,
                conditions=_TAGGED_REQUEST,
            )
        )
        # ... and may be tagged only while it is being created.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ec2:CreateTags"],
                resources=tagged,
                conditions={"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSecurityGroup"]}},
            )
        )
        # What an instance is launched from and into: public AMIs, the runner's subnets and VPC.
        used = [
            f"arn:{Aws.PARTITION}:ec2:*::image/*",
            _ec2_arn("image/*"),
            _ec2_arn("subnet/*"),
            _ec2_arn("network-interface/*"),
            _ec2_arn("vpc/*"),
        ]
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ec2:RunInstances", "ec2:CreateSecurityGroup"], resources=used)
        )
        # The branch's own group: its ingress rule, and its deletion when a launch was refused.
        groups = [_ec2_arn("security-group/*")]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteSecurityGroup", "ec2:RunInstances"],
                resources=groups,
                conditions=_TAGGED_RESOURCE,
            )
        )
        parameters = f"arn:{Aws.PARTITION}:ssm:*::parameter/aws/service/*"
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[parameters])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.instance_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            )
        )
        acknowledge_wildcard_resources(
            role,
            [*tagged, *used, parameters],
            reason="EC2 resources of an ec2 branch do not exist before RunInstances; creating requires the "
            "fmbench:run-id request tag, changing and deleting the resource tag. AMIs are public (SSM "
            "parameters under /aws/service/) or the suite's.",
        )

    def _allow_describing(self, function: lambda_.IFunction) -> None:
        self._describe(function)

    def _allow_terminating(self, function: lambda_.IFunction) -> None:
        self._describe(function)
        resources = [_ec2_arn("instance/*"), _ec2_arn("security-group/*")]
        role_of(function).add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ec2:TerminateInstances", "ec2:DeleteSecurityGroup"],
                resources=resources,
                conditions=_TAGGED_RESOURCE,
            )
        )
        acknowledge_wildcard_resources(
            role_of(function),
            resources,
            reason=f"Instances and security groups of ec2 branches (named '{NAME_PREFIX}*', found by their "
            "tags); terminating and deleting require the fmbench:run-id resource tag.",
        )

    def _allow_reading_vcpu_quotas(self, function: lambda_.IFunction) -> None:
        actions = ["servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"]
        role_of(function).add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=["*"]))
        acknowledge_unscoped_actions(
            role_of(function),
            actions,
            reason="The plan's EC2 vCPU quota check reads quota values; resource-level permissions would "
            "need one ARN per quota and region.",
        )
