"""The Evaluate task: `fmbench evaluate` of a finished run as a Fargate task of the runner image, with a role
of its own that may invoke only the stack's judge models and judge endpoints (docs/accuracy.md, "In the
cloud")."""

from typing import Final

from aws_cdk import Aws, Duration
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from fmbench.pricing import foundation_model_id
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources
from infra.runner import Runner

EVALUATOR_CONTAINER_NAME: Final = "evaluator"
# The runner image's own entry point is the load runner; the Evaluate task runs the CLI instead, and the
# state machine gives its arguments (`evaluate s3://BUCKET --run-id R`) as the container's command.
EVALUATOR_ENTRY_POINT: Final = ["python", "-m", "fmbench.cli"]


def judge_model_arns(judge_models: tuple[str, ...]) -> list[str]:
    """The foundation models (any region: a cross-region profile routes to several) and the inference
    profiles of this account that the judge model ids name."""
    arns: list[str] = []
    for model_id in judge_models:
        arns.append(f"arn:{Aws.PARTITION}:bedrock:*::foundation-model/{foundation_model_id(model_id)}")
        if foundation_model_id(model_id) != model_id:
            arns.append(f"arn:{Aws.PARTITION}:bedrock:*:{Aws.ACCOUNT_ID}:inference-profile/{model_id}")
    return list(dict.fromkeys(arns))


def judge_endpoint_arns(judge_endpoints: tuple[str, ...]) -> list[str]:
    """The existing SageMaker endpoints the judge endpoint names name, in any region (a judge's target may
    name its region); SageMaker writes the name in lower case in the ARN."""
    return list(
        dict.fromkeys(
            f"arn:{Aws.PARTITION}:sagemaker:*:{Aws.ACCOUNT_ID}:endpoint/{name.lower()}"
            for name in judge_endpoints
        )
    )


class Evaluator(Construct):
    """One task per judged run, on the runner's cluster and network, after the branches."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        runner: Runner,
        judge_models: tuple[str, ...],
        cpu: int,
        judge_endpoints: tuple[str, ...] = (),
        memory_mib: int,
    ) -> None:
        super().__init__(scope, construct_id)
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
        self.container = self.task_definition.add_container(
            "Evaluator",
            container_name=EVALUATOR_CONTAINER_NAME,
            image=ecs.ContainerImage.from_docker_image_asset(runner.image),
            entry_point=EVALUATOR_ENTRY_POINT,
            essential=True,
            stop_timeout=Duration.seconds(30),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="evaluate", log_group=runner.log_group),
        )
        self.judge_model_arns = judge_model_arns(judge_models)
        # Converse and ConverseStream are authorized as these two actions.
        self._grant_judges(
            ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
            self.judge_model_arns,
            reason="The judge models of fmbench:judgeModels by exact id; the region is open because a "
            "cross-region inference profile routes a call to the model in another region.",
        )
        self.judge_endpoint_arns = judge_endpoint_arns(judge_endpoints)
        self._grant_judges(
            ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
            self.judge_endpoint_arns,
            reason="The judge endpoints of fmbench:judgeEndpoints by exact name; the region is open "
            "because a judge's target may name the region its endpoint is in.",
        )
        acknowledge_unscoped_actions(
            self.task_definition.obtain_execution_role(),
            ["ecr:GetAuthorizationToken"],
            reason="ecr:GetAuthorizationToken (to pull the runner image) supports no resource-level "
            "permissions; the image pull itself is scoped to the CDK asset repository.",
        )

    def _grant_judges(self, actions: list[str], arns: list[str], *, reason: str) -> None:
        """The task role may call these judges (none: no statement), with the reason their ARNs' open
        region is acknowledged."""
        if not arns:
            return
        self.task_role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=arns))
        acknowledge_wildcard_resources(self.task_role, arns, reason=reason)
