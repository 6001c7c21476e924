"""Cleanup outside the state machine: after every execution ends, and a scheduled sweep as the backstop."""

from typing import Final

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from fmbench.deployment import ENDED_STATUSES, TAG_RUN_ID
from infra.functions import FunctionSizing, allow_describing, allow_sagemaker, handler_function, role_of
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources

STATE_MACHINE_ARN_ENV: Final = "FMBENCH_STATE_MACHINE_ARN"
SWEEP_REGIONS_ENV: Final = "FMBENCH_SWEEP_REGIONS"

# What EventBridge calls the events Step Functions sends for every status change of a standard workflow's
# executions, and the statuses after which nothing of the run may exist any more. SUCCEEDED is among them
# (fmbench.cloud.cleanup): a branch whose Teardown failed after all its retries ends in TeardownFailed,
# which does not fail the execution, and its endpoint is still up.
EXECUTION_STATUS_CHANGE: Final = "Step Functions Execution Status Change"
CLEANUP_STATUSES: Final = sorted(ENDED_STATUSES)

CLEANUP_SIZING: Final = FunctionSizing(
    handler="lambdas.cleanup.handler",
    memory_mib=512,
    timeout=Duration.minutes(5),
    description="Delete what an ended execution's run left behind, found by its fmbench:run-id tag.",
    environment=(),
)
SWEEPER_SIZING: Final = FunctionSizing(
    handler="lambdas.sweeper.handler",
    memory_mib=512,
    timeout=Duration.minutes(10),
    description="Delete product resources whose run has ended or whose time-to-live has passed.",
    environment=(STATE_MACHINE_ARN_ENV, SWEEP_REGIONS_ENV),
)

_PRODUCT_KINDS: Final = ["model", "endpoint-config", "endpoint"]


class Cleanup(Construct):
    """Deletes the SageMaker resources of runs whose execution skipped its own Teardown.

    Stopping an execution and an execution's timeout run no Catch, so Teardown never runs for the
    branches still in flight; a Teardown that failed after its retries leaves its endpoint too. An
    EventBridge rule on this state machine's executions sends each ended execution to the cleanup function,
    which deletes everything tagged with that run's id. The sweeper runs on a schedule and deletes what
    the cleanup could not (an endpoint still being created, an event that was never delivered) and what
    outlived its time-to-live.

    Both functions may list SageMaker resources (no resource-level permission exists for listing), describe
    and read the tags of those named `fmb-*`, and delete only those that also carry the `fmbench:run-id`
    tag, so a user's own endpoint is out of reach even for a bug in the handlers. The sweeper learns the state
    machine's ARN from its environment: the state machine does not refer to either function, so the
    reference adds no dependency cycle.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        image: ecr_assets.DockerImageAsset,
        state_machine: sfn.StateMachine,
        sweeper_interval: Duration | None,
        sweep_regions: tuple[str, ...],
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self._state_machine = state_machine
        # Events EventBridge could not deliver and events the cleanup failed on after Lambda's retries
        # (typically an endpoint still Creating, which SageMaker will not delete yet): the sweeper deletes
        # those resources later, and the messages say which executions to look at.
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.cleanup_function = handler_function(
            self,
            "Cleanup",
            image=image,
            sizing=CLEANUP_SIZING,
            environment={},
            log_retention=log_retention,
            # Lambda's own retries of a failed asynchronous invocation (at most two, about a minute and
            # two minutes later), then the dead-letter queue.
            retry_attempts=2,
            max_event_age=Duration.hours(1),
            dead_letter_queue=self.dead_letter_queue,
        )
        self.execution_ended_rule = events.Rule(
            self,
            "ExecutionEnded",
            description="An execution of the FMBench workflow ended: delete whatever its run left behind.",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=[EXECUTION_STATUS_CHANGE],
                detail={"stateMachineArn": [state_machine.state_machine_arn], "status": CLEANUP_STATUSES},
            ),
            targets=[
                # Delivery retries cover Lambda refusing the invocation (throttling, service errors); an
                # event still undelivered after them goes to the dead-letter queue rather than being lost.
                targets.LambdaFunction(
                    self.cleanup_function,
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=10,
                    max_event_age=Duration.hours(2),
                )
            ],
        )
        self._allow_cleaning_up(self.cleanup_function)
        self._allow_reading_executions(self.cleanup_function, ["states:GetExecutionHistory"])

        self.sweeper_function: lambda_.DockerImageFunction | None = None
        self.sweeper_rule: events.Rule | None = None
        if sweeper_interval is not None:
            self._sweeper(image, sweeper_interval, sweep_regions, log_retention)

    def _sweeper(
        self,
        image: ecr_assets.DockerImageAsset,
        interval: Duration,
        sweep_regions: tuple[str, ...],
        log_retention: logs.RetentionDays,
    ) -> None:
        environment = {STATE_MACHINE_ARN_ENV: self._state_machine.state_machine_arn}
        if sweep_regions:
            environment[SWEEP_REGIONS_ENV] = ",".join(sweep_regions)
        sweeper = handler_function(
            self,
            "Sweeper",
            image=image,
            sizing=SWEEPER_SIZING,
            environment=environment,
            log_retention=log_retention,
            # A failed sweep is not retried: the next one comes within the interval and does the same.
            retry_attempts=0,
        )
        self.sweeper_function = sweeper
        self.sweeper_rule = events.Rule(
            self,
            "SweepSchedule",
            description="Sweep the FMBench workflow's SageMaker resources whose run ended or expired.",
            schedule=events.Schedule.rate(interval),
            targets=[targets.LambdaFunction(sweeper, retry_attempts=2, max_event_age=Duration.hours(1))],
        )
        self._allow_cleaning_up(sweeper)
        self._allow_reading_executions(sweeper, ["states:DescribeExecution", "states:GetExecutionHistory"])
        # Which runs are still going: the state machine's running executions.
        role_of(sweeper).add_to_principal_policy(
            iam.PolicyStatement(
                actions=["states:ListExecutions"], resources=[self._state_machine.state_machine_arn]
            )
        )

    def _allow_cleaning_up(self, function: lambda_.IFunction) -> None:
        role = role_of(function)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"],
                resources=["*"],
            )
        )
        acknowledge_unscoped_actions(
            role,
            ["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"],
            reason="sagemaker:ListEndpoints, ListEndpointConfigs and ListModels support no resource-level "
            "permissions; they return names only, and the function reads tags and deletes only 'fmb-*' "
            "resources tagged fmbench:run-id (statements below).",
        )
        # Tags tell a run's resources from anyone else's. Describing tells an endpoint that is still
        # Creating from a real error, and a resource deleted since the listing (whose delete the tag
        # condition below answers with "access denied") from one that is still there.
        allow_describing(function, _PRODUCT_KINDS)
        # Only what the product tagged: the handlers find resources by the tag, and IAM holds them to it.
        # (Teardown's role has no such condition: it deletes by derived name and must see "not found" for
        # what is gone.)
        allow_sagemaker(
            function,
            ["sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"],
            _PRODUCT_KINDS,
            conditions={"Null": {f"aws:ResourceTag/{TAG_RUN_ID}": "false"}},
        )

    def _allow_reading_executions(self, function: lambda_.IFunction, actions: list[str]) -> None:
        """The run id of an execution is in its Plan state's output, read from the execution's history."""
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self._state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role = role_of(function)
        role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[executions]))
        acknowledge_wildcard_resources(
            role,
            [executions],
            reason="Executions of this stack's state machine only (execution ARNs are the state machine's "
            "name plus an execution name not known in advance); read-only actions.",
        )
