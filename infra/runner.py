"""The load runner: a Fargate task of the runner image, its network, and what it may call."""

from typing import Final

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from fmbench.deployment import NAME_PREFIX as SAGEMAKER_NAME_PREFIX
from infra.image import RUNNER_TARGET, build_image
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources
from infra.settings import NetworkSettings

RUNNER_CONTAINER_NAME: Final = "runner"
# The runner reads its branch spec from here; the state machine sets it per task (container override).
BRANCH_SPEC_URI_ENV: Final = "FMBENCH_BRANCH_SPEC_URI"


class Runner(Construct):
    """One Fargate task per branch drives the endpoint and writes the request records.

    Network: by default the construct creates a small VPC of public subnets without NAT gateways and
    starts tasks with a public IP. That keeps `cdk synth` offline (looking up the account's default VPC
    is an AWS call at synth) and the stack self-contained, and it costs nothing while idle (a NAT gateway
    costs by the hour). The tasks accept no inbound traffic. An existing VPC is named by its ids
    (`network`): still no lookup, so synth stays offline and environment-agnostic; reaching S3, the
    endpoints and the ECR image from its subnets (NAT or VPC endpoints) is then the VPC's business.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: NetworkSettings | None,
        existing_endpoint_names: tuple[str, ...],
        cpu: int,
        memory_mib: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)

        self.vpc: ec2.IVpc
        if network is None:
            self.vpc = self._own_vpc(log_retention)
            self.assign_public_ip = True
            self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        else:
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self, "Vpc", vpc_id=network.vpc_id, availability_zones=Stack.of(self).availability_zones
            )
            self.assign_public_ip = network.assign_public_ip
            self.subnets = ec2.SubnetSelection(
                subnets=[
                    ec2.Subnet.from_subnet_id(self, f"Subnet{index}", subnet_id)
                    for index, subnet_id in enumerate(network.subnet_ids)
                ]
            )

        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description="FMBench runner tasks: no inbound; outbound to benchmarked endpoints and AWS APIs",
            allow_all_outbound=True,
        )

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )

        self.log_group = logs.LogGroup(
            self, "LogGroup", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.image = build_image(self, "Image", target=RUNNER_TARGET)

        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=cpu,
            memory_limit_mib=memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.task_role: iam.IRole = self.task_definition.task_role
        # No environment here: the only per-task input, the spec URI, arrives as a container override, and
        # everything else the runner needs is in the spec.
        self.container = self.task_definition.add_container(
            "Runner",
            container_name=RUNNER_CONTAINER_NAME,
            image=ecs.ContainerImage.from_docker_image_asset(self.image),
            essential=True,
            # On SIGTERM (a timed-out or stopped task) the runner flushes its records and writes a
            # 'partial' outcome before exiting; Fargate allows at most 120 s.
            stop_timeout=Duration.seconds(60),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="branch", log_group=self.log_group),
        )
        self._allow_invoking_models(existing_endpoint_names)

    def _own_vpc(self, log_retention: logs.RetentionDays) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.60.0.0/20"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
            # Records go to S3 through the (free) gateway endpoint rather than over the internet.
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            # The recommended flag (cdk.json) would strip the default security group's rules through a custom
            # resource: a Node.js Lambda with the AWSLambdaBasicExecutionRole managed policy, outside the
            # product image and its scoped roles. Nothing here uses that group (tasks get their own), so
            # the VPC keeps AWS's default rules, as it did before the flag.
            restrict_default_security_group=False,
        )
        # Rejected traffic only: the tasks take no inbound connections, so a reject is worth a look, while
        # logging every accepted load-test packet would cost more than the benchmark.
        flow_log_group = logs.LogGroup(
            self, "FlowLogGroup", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        return vpc

    def _allow_invoking_models(self, existing_endpoint_names: tuple[str, ...]) -> None:
        """SageMaker endpoints of this product (any region: a target may name one), the existing endpoints
        the operator listed (targets with `endpoint_name`), and Bedrock models."""
        endpoint_arn = f"arn:{Aws.PARTITION}:sagemaker:*:{Aws.ACCOUNT_ID}:endpoint/"
        product_endpoints = f"{endpoint_arn}{SAGEMAKER_NAME_PREFIX}*"
        # SageMaker writes resource names in ARNs in lower case.
        existing_endpoints = [f"{endpoint_arn}{name.lower()}" for name in existing_endpoint_names]
        self.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
                resources=[product_endpoints, *existing_endpoints],
            )
        )
        acknowledge_wildcard_resources(
            self.task_role,
            [product_endpoints],
            reason="Endpoints the workflow deploys are named per run and branch under the product's "
            "'fmb-' prefix, in the region a target names; invoking is limited to those names.",
        )
        acknowledge_wildcard_resources(
            self.task_role,
            existing_endpoints,
            reason="Existing endpoints the operator listed in fmbench:existingEndpointNames, by exact name; "
            "the region is open because a target may name the region its endpoint is in.",
        )
        # Converse and ConverseStream are authorized as these two actions.
        models = [
            f"arn:{Aws.PARTITION}:bedrock:*::foundation-model/*",
            f"arn:{Aws.PARTITION}:bedrock:*:{Aws.ACCOUNT_ID}:inference-profile/*",
        ]
        self.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"], resources=models
            )
        )
        acknowledge_wildcard_resources(
            self.task_role,
            models,
            reason="Bedrock targets are whatever models and inference profiles a suite names (cross-region "
            "profiles route to foundation models in other regions); invoke actions only.",
        )
        # CDK's execution role policy: pulling the image needs an ECR token, which has no resource.
        acknowledge_unscoped_actions(
            self.task_definition.obtain_execution_role(),
            ["ecr:GetAuthorizationToken"],
            reason="ecr:GetAuthorizationToken (to pull the runner image) supports no resource-level "
            "permissions; the image pull itself is scoped to the CDK asset repository.",
        )
