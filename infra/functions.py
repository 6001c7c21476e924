"""The workflow's Lambda functions (plan, deploy, status, teardown, render, compare) and the endpoints'
role."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fmbench.deployment import NAME_PREFIX as SAGEMAKER_NAME_PREFIX
from fmbench.deployment import TAG_RUN_ID
from infra.evaluator import judge_endpoint_arns
from infra.image import LAMBDA_TARGET, build_image
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources

# Secrets a suite may refer to in an endpoint's environment (`secretsmanager:<arn>`, e.g. a Hugging Face
# token) must be named under this prefix: the deploy function reads those and no others.
SECRET_NAME_PREFIX: Final = "fmbench/"

# Where SageMaker publishes an endpoint's instance metrics (CPUUtilization, MemoryUtilization, GPU...).
SAGEMAKER_METRIC_NAMESPACES: Final = ("/aws/sagemaker/Endpoints", "/aws/sagemaker/Endpoints/*")

RESULTS_BUCKET_ENV: Final = "FMBENCH_RESULTS_BUCKET"
SAGEMAKER_ROLE_ARN_ENV: Final = "FMBENCH_SAGEMAKER_ROLE_ARN"
MAX_CONCURRENT_BRANCHES_ENV: Final = "FMBENCH_MAX_CONCURRENT_BRANCHES"
ATHENA_DATABASE_ENV: Final = "FMBENCH_ATHENA_DATABASE"
ATHENA_WORKGROUP_ENV: Final = "FMBENCH_ATHENA_WORKGROUP"
# The stack's bounds on a branch, for the plan: how long the workflow waits for an endpoint (the plan turns it
# into the item's max_status_polls) and the timeouts its cost estimate is bounded by.
STATUS_POLL_SECONDS_ENV: Final = "FMBENCH_STATUS_POLL_SECONDS"
MAX_DEPLOY_SECONDS_ENV: Final = "FMBENCH_MAX_DEPLOY_SECONDS"
RUNNER_TIMEOUT_SECONDS_ENV: Final = "FMBENCH_RUNNER_TIMEOUT_SECONDS"
EXECUTION_TIMEOUT_SECONDS_ENV: Final = "FMBENCH_EXECUTION_TIMEOUT_SECONDS"
# The existing endpoints the runner may invoke (cdk.json's fmbench:existingEndpointNames), as a JSON list:
# the plan refuses a suite whose endpoint the runner would be denied.
EXISTING_ENDPOINT_NAMES_ENV: Final = "FMBENCH_EXISTING_ENDPOINT_NAMES"
# The Bedrock models the Evaluate task may invoke as judges (cdk.json's fmbench:judgeModels), as a JSON list:
# the plan refuses a Bedrock judge outside it.
JUDGE_MODELS_ENV: Final = "FMBENCH_JUDGE_MODELS"
# The existing SageMaker endpoints the Evaluate task may invoke as judges (cdk.json's fmbench:judgeEndpoints),
# as a JSON list: the plan refuses a SageMaker judge outside it, and one that is not InService.
JUDGE_ENDPOINTS_ENV: Final = "FMBENCH_JUDGE_ENDPOINTS"


@dataclass(frozen=True, kw_only=True)
class FunctionEnvironment:
    """The values behind the handlers' settings models (fmbench.cloud.settings), by variable name."""

    results_bucket: str
    sagemaker_role_arn: str
    max_concurrent_branches: int
    athena_database: str
    athena_workgroup: str
    status_poll_seconds: int
    max_deploy_seconds: int
    runner_timeout_seconds: int
    execution_timeout_seconds: int
    existing_endpoint_names: tuple[str, ...] = ()
    judge_models: tuple[str, ...] = ()
    judge_endpoints: tuple[str, ...] = ()

    def as_variables(self) -> dict[str, str]:
        return {
            RESULTS_BUCKET_ENV: self.results_bucket,
            SAGEMAKER_ROLE_ARN_ENV: self.sagemaker_role_arn,
            MAX_CONCURRENT_BRANCHES_ENV: str(self.max_concurrent_branches),
            ATHENA_DATABASE_ENV: self.athena_database,
            ATHENA_WORKGROUP_ENV: self.athena_workgroup,
            STATUS_POLL_SECONDS_ENV: str(self.status_poll_seconds),
            MAX_DEPLOY_SECONDS_ENV: str(self.max_deploy_seconds),
            RUNNER_TIMEOUT_SECONDS_ENV: str(self.runner_timeout_seconds),
            EXECUTION_TIMEOUT_SECONDS_ENV: str(self.execution_timeout_seconds),
            EXISTING_ENDPOINT_NAMES_ENV: json.dumps(list(self.existing_endpoint_names)),
            JUDGE_MODELS_ENV: json.dumps(list(self.judge_models)),
            JUDGE_ENDPOINTS_ENV: json.dumps(list(self.judge_endpoints)),
        }


@dataclass(frozen=True, kw_only=True)
class FunctionSizing:
    """Per handler: what it imports and does decides memory (and with it CPU) and the time it may take;
    `environment` names the variables its settings model reads, and it gets only those."""

    handler: str
    memory_mib: int
    timeout: Duration
    description: str
    environment: tuple[str, ...]


# Sized to the work: plan validates the suite, tokenizes its dataset and resolves serving images with the
# SageMaker SDK; render runs pandas and matplotlib over a whole run's metrics and waits for a second query.
FUNCTION_SIZING: Final[dict[str, FunctionSizing]] = {
    "plan": FunctionSizing(
        handler="lambdas.plan.handler",
        memory_mib=1769,
        timeout=Duration.minutes(3),
        description="Validate the suite, check its cost and quotas, plan the branches, write their specs.",
        environment=(
            RESULTS_BUCKET_ENV,
            MAX_CONCURRENT_BRANCHES_ENV,
            STATUS_POLL_SECONDS_ENV,
            MAX_DEPLOY_SECONDS_ENV,
            RUNNER_TIMEOUT_SECONDS_ENV,
            EXECUTION_TIMEOUT_SECONDS_ENV,
            EXISTING_ENDPOINT_NAMES_ENV,
            JUDGE_MODELS_ENV,
            JUDGE_ENDPOINTS_ENV,
            # the Glue database whose records table gets the run's partitions (fmbench.cloud.catalog)
            ATHENA_DATABASE_ENV,
        ),
    ),
    "deploy": FunctionSizing(
        handler="lambdas.deploy.handler",
        memory_mib=512,
        timeout=Duration.minutes(2),
        description="Create (or find) a branch's SageMaker model, endpoint config and endpoint.",
        environment=(SAGEMAKER_ROLE_ARN_ENV,),
    ),
    "endpoint_status": FunctionSizing(
        handler="lambdas.endpoint_status.handler",
        memory_mib=512,
        timeout=Duration.seconds(30),
        description="Report a branch endpoint's status while it is being created.",
        environment=(RESULTS_BUCKET_ENV,),
    ),
    "teardown": FunctionSizing(
        handler="lambdas.teardown.handler",
        memory_mib=512,
        timeout=Duration.minutes(2),
        description="Delete a branch's endpoint, endpoint config and model (idempotent).",
        # Where it records when the endpoint was deleted (outcomes/), for the run's actual cost.
        environment=(RESULTS_BUCKET_ENV,),
    ),
    "render": FunctionSizing(
        handler="lambdas.render.handler",
        memory_mib=3008,
        timeout=Duration.minutes(10),
        description="Render the report and result.json from the run's metrics and outcomes.",
        environment=(RESULTS_BUCKET_ENV, ATHENA_DATABASE_ENV, ATHENA_WORKGROUP_ENV),
    ),
    # Bootstraps both runs' measured requests (numpy, seeded): memory for the resampled indices.
    "compare": FunctionSizing(
        handler="lambdas.compare.handler",
        memory_mib=3008,
        timeout=Duration.minutes(10),
        description="Compare the run with its baseline; publish the verdict beside the report.",
        environment=(RESULTS_BUCKET_ENV, ATHENA_DATABASE_ENV, ATHENA_WORKGROUP_ENV),
    ),
}


def handler_function(
    scope: Construct,
    construct_id: str,
    *,
    image: ecr_assets.DockerImageAsset,
    sizing: FunctionSizing,
    environment: Mapping[str, str],
    log_retention: logs.RetentionDays,
    retry_attempts: int | None = None,
    max_event_age: Duration | None = None,
    dead_letter_queue: sqs.IQueue | None = None,
) -> lambda_.DockerImageFunction:
    """A function of the product image running `sizing.handler`, with a role and a log group of its own.

    The role starts with nothing but this function's log group and X-Ray; the caller grants what the step
    does. `retry_attempts`, `max_event_age` and `dead_letter_queue` shape asynchronous invocations (an
    EventBridge target), which the workflow's synchronous tasks never make.
    """
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"FMBench {construct_id} function: {sizing.description}",
    )
    log_group = logs.LogGroup(
        scope, f"{construct_id}LogGroup", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
    )
    # Granted here because the role is not Lambda's default one (which would bring the broad
    # AWSLambdaBasicExecutionRole managed policy): write to this function's log group only.
    log_group.grant_write(role)
    acknowledge_unscoped_actions(
        role,
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        reason="Active X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no "
        "resource-level permissions (CDK adds them with tracing).",
    )
    return lambda_.DockerImageFunction(
        scope,
        construct_id,
        code=lambda_.DockerImageCode.from_ecr(
            image.repository, tag_or_digest=image.image_tag, cmd=[sizing.handler]
        ),
        description=sizing.description,
        architecture=lambda_.Architecture.X86_64,
        memory_size=sizing.memory_mib,
        timeout=sizing.timeout,
        role=role,
        log_group=log_group,
        tracing=lambda_.Tracing.ACTIVE,
        environment=dict(environment),
        retry_attempts=retry_attempts,
        max_event_age=max_event_age,
        dead_letter_queue=dead_letter_queue,
    )


class Functions(Construct):
    """Every function runs the `lambda` stage of the product image with its own handler, role and logs.

    One image for all (and for the runner) keeps the handlers on exactly the code and pinned wheels the
    runner uses. Each function has a role of its own holding only what its step does; S3 and Athena
    access is granted by the stack, where storage and functions meet.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        results_bucket: s3.IBucket,
        athena_database_name: str,
        athena_workgroup_name: str,
        max_concurrent_branches: int,
        status_poll_interval: Duration,
        max_deploy_wait: Duration,
        runner_timeout: Duration,
        execution_timeout: Duration,
        model_data_buckets: tuple[str, ...],
        log_retention: logs.RetentionDays,
        existing_endpoint_names: tuple[str, ...] = (),
        judge_models: tuple[str, ...] = (),
        judge_endpoints: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.image = build_image(self, "Image", target=LAMBDA_TARGET)
        self.sagemaker_role = self._sagemaker_execution_role(model_data_buckets)
        self.environment = FunctionEnvironment(
            results_bucket=results_bucket.bucket_name,
            sagemaker_role_arn=self.sagemaker_role.role_arn,
            max_concurrent_branches=max_concurrent_branches,
            athena_database=athena_database_name,
            athena_workgroup=athena_workgroup_name,
            status_poll_seconds=int(status_poll_interval.to_seconds()),
            max_deploy_seconds=int(max_deploy_wait.to_seconds()),
            runner_timeout_seconds=int(runner_timeout.to_seconds()),
            execution_timeout_seconds=int(execution_timeout.to_seconds()),
            existing_endpoint_names=existing_endpoint_names,
            judge_models=judge_models,
            judge_endpoints=judge_endpoints,
        )

        self.plan = self._function("Plan", FUNCTION_SIZING["plan"], log_retention)
        # huggingface_hub caches Hub datasets and tokenizers under HF_HOME; /tmp is all a function may write
        self.plan.add_environment("HF_HOME", "/tmp/huggingface")
        self.deploy = self._function("Deploy", FUNCTION_SIZING["deploy"], log_retention)
        self.endpoint_status = self._function(
            "EndpointStatus", FUNCTION_SIZING["endpoint_status"], log_retention
        )
        self.teardown = self._function("Teardown", FUNCTION_SIZING["teardown"], log_retention)
        self.render = self._function("Render", FUNCTION_SIZING["render"], log_retention)
        self.compare = self._function("Compare", FUNCTION_SIZING["compare"], log_retention)

        self._allow_reading_quotas()
        self._allow_reading_prices()
        self._allow_reading_endpoint_metrics()
        self._allow_checking_judge_models()
        self._allow_checking_judge_endpoints(judge_endpoints)
        self._allow_reading_secrets(self.plan)  # a Hub token for a gated dataset (workload.dataset.hub_token)
        self._allow_deploying()
        allow_describing(self.endpoint_status, ["endpoint"])
        self._allow_tearing_down()

    def _allow_checking_judge_models(self) -> None:
        """The Plan asks Bedrock whether the account may use each Bedrock judge before anything runs."""
        role = role_of(self.plan)
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["bedrock:GetFoundationModelAvailability"], resources=["*"])
        )
        acknowledge_unscoped_actions(
            role,
            ["bedrock:GetFoundationModelAvailability"],
            reason="bedrock:GetFoundationModelAvailability supports no resource-level permissions; it "
            "reads whether the account may use a model, nothing of the model itself.",
        )

    def _allow_checking_judge_endpoints(self, judge_endpoints: tuple[str, ...]) -> None:
        """The Plan asks SageMaker whether each SageMaker judge's endpoint is InService before anything runs:
        DescribeEndpoint on the stack's judge endpoints only."""
        if not judge_endpoints:
            return
        role = role_of(self.plan)
        arns = judge_endpoint_arns(judge_endpoints)
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint"], resources=arns)
        )
        acknowledge_wildcard_resources(
            role,
            arns,
            reason="The judge endpoints of fmbench:judgeEndpoints by exact name; the region is open "
            "because a judge's target may name the region its endpoint is in.",
        )

    @property
    def all(self) -> list[lambda_.DockerImageFunction]:
        return [self.plan, self.deploy, self.endpoint_status, self.teardown, self.render, self.compare]

    def _function(
        self, construct_id: str, sizing: FunctionSizing, log_retention: logs.RetentionDays
    ) -> lambda_.DockerImageFunction:
        variables = self.environment.as_variables()
        return handler_function(
            self,
            construct_id,
            image=self.image,
            sizing=sizing,
            environment={name: variables[name] for name in sizing.environment},
            log_retention=log_retention,
        )

    def _sagemaker_execution_role(self, model_data_buckets: tuple[str, ...]) -> iam.Role:
        """The role SageMaker assumes for the product's endpoints: pull the serving image, read model
        artifacts, write the endpoint's logs and metrics. Nothing else; the deploy function passes it
        and only it."""
        role = iam.Role(
            self,
            "SageMakerExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="FMBench endpoints: pull serving images, read model artifacts, write logs, metrics",
        )
        allow_pulling_images(
            role,
            reason="Serving images are AWS Deep Learning Containers in AWS-owned registries that differ by "
            "region (763104351884 in most, others in opt-in regions), or a user's image_uri; pull actions "
            "only, and cross-account pulls also need the repository's own policy.",
        )
        endpoint_logs = f"arn:{Aws.PARTITION}:logs:*:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/"
        log_resources = [
            f"{endpoint_logs}{SAGEMAKER_NAME_PREFIX}*",
            f"{endpoint_logs}{SAGEMAKER_NAME_PREFIX}*:log-stream:*",
        ]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                resources=log_resources,
            )
        )
        acknowledge_wildcard_resources(
            role,
            log_resources,
            reason="SageMaker names an endpoint's log group after the endpoint; the product's endpoints "
            "share the 'fmb-' prefix and each writes its own streams.",
        )
        # The endpoint's instance metrics (CPU, memory, disk, GPU) are published with this role; PutMetricData
        # has no resource, so the namespace condition is its only scope.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": list(SAGEMAKER_METRIC_NAMESPACES)}},
            )
        )
        acknowledge_unscoped_actions(
            role,
            ["cloudwatch:PutMetricData"],
            reason="cloudwatch:PutMetricData supports no resource-level permissions; the statement's "
            "cloudwatch:namespace condition limits it to SageMaker endpoint metrics.",
        )
        if model_data_buckets:
            artifacts = [f"arn:{Aws.PARTITION}:s3:::{name}/*" for name in model_data_buckets]
            role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=artifacts))
            acknowledge_wildcard_resources(
                role,
                artifacts,
                reason="Model artifacts (model_data_s3_uri) in the buckets the operator listed in "
                "fmbench:modelDataBuckets; read only.",
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{Aws.PARTITION}:s3:::{name}" for name in model_data_buckets],
                )
            )
        return role

    def _allow_reading_quotas(self) -> None:
        """The plan compares the instances a run may hold at once with the account's SageMaker quotas
        (fmbench.cloud.quotas): the applied values, else the defaults. Read only."""
        role = role_of(self.plan)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"],
                resources=["*"],
            )
        )
        acknowledge_unscoped_actions(
            role,
            ["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"],
            reason="servicequotas:ListServiceQuotas and servicequotas:ListAWSDefaultServiceQuotas support "
            "no resource-level permissions; they only read quota values (the plan's SageMaker quota check).",
        )

    def _allow_reading_prices(self) -> None:
        """A suite with pricing.from_api has the plan read on-demand prices from the AWS Price List API
        (fmbench.cloud.pricing). Read only; public price data."""
        role = role_of(self.plan)
        role.add_to_principal_policy(iam.PolicyStatement(actions=["pricing:GetProducts"], resources=["*"]))
        acknowledge_unscoped_actions(
            role,
            ["pricing:GetProducts"],
            reason="pricing:GetProducts supports no resource-level permissions; it reads AWS's public "
            "price list (the plan's prices with pricing.from_api).",
        )

    def _allow_reading_endpoint_metrics(self) -> None:
        """Render reads the SageMaker and Bedrock endpoints' CloudWatch metrics over each load point
        (fmbench.cloud.cloudwatch). Read only."""
        role = role_of(self.render)
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"])
        )
        acknowledge_unscoped_actions(
            role,
            ["cloudwatch:GetMetricData"],
            reason="cloudwatch:GetMetricData supports no resource-level permissions; it only reads metric "
            "values (the report's server-side figures of SageMaker and Bedrock branches).",
        )

    def _allow_reading_secrets(self, function: lambda_.DockerImageFunction) -> None:
        secrets = f"arn:{Aws.PARTITION}:secretsmanager:*:{Aws.ACCOUNT_ID}:secret:{SECRET_NAME_PREFIX}*"
        role_of(function).add_to_principal_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secrets])
        )
        acknowledge_wildcard_resources(
            role_of(function),
            [secrets],
            reason="Secrets a suite refers to (a Hugging Face token) are named under 'fmbench/' by "
            "convention (docs/architecture.md); Secrets Manager appends a random suffix to every secret "
            "ARN, so a name needs a wildcard.",
        )

    def _allow_deploying(self) -> None:
        allow_describing(self.deploy, ["model", "endpoint-config", "endpoint"])
        # Creating is allowed only with the run-id tag: everything created is then findable by the
        # cleanup outside the state machine. Tagging on create is authorized as AddTags.
        allow_sagemaker(
            self.deploy,
            [
                "sagemaker:CreateModel",
                "sagemaker:CreateEndpointConfig",
                "sagemaker:CreateEndpoint",
                "sagemaker:AddTags",
            ],
            ["model", "endpoint-config", "endpoint"],
            conditions={"Null": {f"aws:RequestTag/{TAG_RUN_ID}": "false"}},
        )
        # Values of the endpoint's environment written `secretsmanager:<arn>` are read at deploy time.
        secrets = f"arn:{Aws.PARTITION}:secretsmanager:*:{Aws.ACCOUNT_ID}:secret:{SECRET_NAME_PREFIX}*"
        role_of(self.deploy).add_to_principal_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secrets])
        )
        acknowledge_wildcard_resources(
            role_of(self.deploy),
            [secrets],
            reason="Secrets an endpoint's environment refers to (e.g. a Hugging Face token) are named "
            "under 'fmbench/' by convention (docs/architecture.md); Secrets Manager appends a random suffix "
            "to every secret ARN, so a name needs a wildcard.",
        )
        # CreateModel hands SageMaker the execution role: this role, to this service, nothing else.
        role_of(self.deploy).add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )

    def _allow_tearing_down(self) -> None:
        allow_describing(self.teardown, ["model", "endpoint-config", "endpoint"])
        # No tag condition: deleting what does not exist must answer "not found" (teardown is idempotent),
        # and a condition on a missing resource's tags answers "access denied" instead.
        allow_sagemaker(
            self.teardown,
            ["sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"],
            ["model", "endpoint-config", "endpoint"],
        )


def allow_describing(function: lambda_.IFunction, kinds: list[str]) -> None:
    """Describe and read the tags of the product's SageMaker resources of these kinds."""
    describe = {
        "model": "sagemaker:DescribeModel",
        "endpoint-config": "sagemaker:DescribeEndpointConfig",
        "endpoint": "sagemaker:DescribeEndpoint",
    }
    allow_sagemaker(function, [*(describe[kind] for kind in kinds), "sagemaker:ListTags"], kinds)


def allow_sagemaker(
    function: lambda_.IFunction,
    actions: list[str],
    kinds: list[str],
    conditions: dict[str, Any] | None = None,
) -> None:
    """SageMaker actions on the product's resources of these kinds only: names `fmb-*`, any region."""
    role = role_of(function)
    resources = sagemaker_arns(kinds)
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=actions, resources=resources, conditions=conditions)
    )
    acknowledge_wildcard_resources(
        role,
        resources,
        reason="The product's SageMaker resources only: names start with 'fmb-' and carry the run and "
        "branch (so they cannot be listed ahead), in the region a target names.",
    )


def role_of(function: lambda_.IFunction) -> iam.IRole:
    role = function.role
    assert role is not None  # every function here is given its own role
    return role


def sagemaker_arns(kinds: list[str]) -> list[str]:
    """Product resources of these kinds in any region of this account (a target may name its region)."""
    return [
        f"arn:{Aws.PARTITION}:sagemaker:*:{Aws.ACCOUNT_ID}:{kind}/{SAGEMAKER_NAME_PREFIX}*" for kind in kinds
    ]


def allow_pulling_images(role: iam.IRole, *, reason: str) -> None:
    """Pulls from any ECR repository (serving images live in AWS-owned registries that differ by region):
    the token, which has no resource, and the pull actions only; ``reason`` says why for cdk-nag."""
    role.add_to_principal_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
    acknowledge_unscoped_actions(
        role,
        ["ecr:GetAuthorizationToken"],
        reason="ecr:GetAuthorizationToken supports no resource-level permissions.",
    )
    repositories = f"arn:{Aws.PARTITION}:ecr:*:*:repository/*"
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            resources=[repositories],
        )
    )
    acknowledge_wildcard_resources(role, [repositories], reason=reason)
