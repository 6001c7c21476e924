"""The FMBench Flow stack: composes one construct per concern and publishes what clients need to find."""

from typing import Final

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.cleanup import Cleanup
from infra.functions import Functions
from infra.runner import Runner
from infra.schedules import Schedules
from infra.settings import FmbenchSettings
from infra.storage import (
    OUTCOMES_PREFIX,
    RECORDS_PREFIX,
    REPORTS_PREFIX,
    SPECS_PREFIX,
    Storage,
)
from infra.workflow import Workflow

_RETENTION: Final = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


class FmbenchStack(Stack):
    """Environment-agnostic on purpose: synth needs no account or region, so it works offline and in CI.

    The grants are made here, where the constructs meet: each names the key prefixes of the results
    bucket that one step reads or writes.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: FmbenchSettings,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=settings.stack_name,
            description="FMBench Flow: benchmark foundation-model endpoints (workflow, runner, storage).",
        )
        self.settings = settings
        log_retention = _RETENTION[settings.log_retention_days]

        self.storage = Storage(
            self,
            "Storage",
            records_retention_days=settings.records_retention_days,
            athena_bytes_scanned_cutoff=settings.athena_bytes_scanned_cutoff,
        )
        self.runner = Runner(
            self,
            "Runner",
            network=settings.network,
            existing_endpoint_names=settings.existing_endpoint_names,
            cpu=settings.runner_cpu,
            memory_mib=settings.runner_memory_mib,
            log_retention=log_retention,
        )
        self.functions = Functions(
            self,
            "Functions",
            results_bucket=self.storage.bucket,
            athena_database_name=self.storage.database.database_name,
            athena_workgroup_name=self.storage.workgroup.ref,
            max_concurrent_branches=settings.max_concurrent_branches,
            status_poll_interval=Duration.seconds(settings.status_poll_seconds),
            max_deploy_wait=Duration.minutes(settings.max_deploy_minutes),
            runner_timeout=Duration.minutes(settings.runner_timeout_minutes),
            execution_timeout=Duration.minutes(settings.execution_timeout_minutes),
            model_data_buckets=settings.model_data_buckets,
            log_retention=log_retention,
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            functions=self.functions,
            runner=self.runner,
            athena_workgroup_name=self.storage.workgroup.ref,
            athena_database_name=self.storage.database.database_name,
            status_poll_interval=Duration.seconds(settings.status_poll_seconds),
            runner_timeout=Duration.minutes(settings.runner_timeout_minutes),
            execution_timeout=Duration.minutes(settings.execution_timeout_minutes),
            log_retention=log_retention,
        )
        self.schedules = Schedules(
            self, "Schedules", state_machine=self.workflow.state_machine, schedules=settings.schedules
        )
        self.cleanup = Cleanup(
            self,
            "Cleanup",
            image=self.functions.image,
            state_machine=self.workflow.state_machine,
            sweeper_interval=(
                Duration.minutes(settings.sweeper_interval_minutes)
                if settings.sweeper_interval_minutes
                else None
            ),
            sweep_regions=settings.sweep_regions,
            log_retention=log_retention,
        )

        storage = self.storage
        storage.grant_prefixes(
            self.runner.task_role,
            read=[SPECS_PREFIX, RECORDS_PREFIX],
            write=[RECORDS_PREFIX, OUTCOMES_PREFIX],
        )
        # A report-only execution re-reads the plan.json of the run it reports on.
        storage.grant_prefixes(self.functions.plan, read=[SPECS_PREFIX], write=[SPECS_PREFIX])
        storage.grant_prefixes(self.functions.deploy, read=[SPECS_PREFIX])
        # Once an endpoint is in service, the status step records how long deployment took.
        storage.grant_prefixes(self.functions.endpoint_status, write=[OUTCOMES_PREFIX])
        # ... and Teardown when the endpoint was deleted, for the run's actual cost.
        storage.grant_prefixes(self.functions.teardown, write=[OUTCOMES_PREFIX])
        # Render tells a branch without an outcome (failed before its runner wrote one) from a read it may
        # not make, so it may list the bucket. It saves the Map's results beside the outcomes, from which a
        # report-only execution renders the run again with each branch's reason.
        storage.grant_prefixes(
            self.functions.render,
            read=[SPECS_PREFIX, OUTCOMES_PREFIX],
            write=[REPORTS_PREFIX, OUTCOMES_PREFIX],
            list_any_prefix=True,
        )
        # Render reads the Query state's result and runs one more query of its own (the TTFT samples).
        storage.grant_run_queries(self.functions.render)
        storage.grant_run_queries(self.workflow.state_machine)

        # The CLI and operators find the deployment through these instead of guessing generated names.
        CfnOutput(
            self,
            "StateMachineArn",
            value=self.workflow.state_machine.state_machine_arn,
            description="The benchmark workflow: start an execution with a suite (JSON) as its input.",
        )
        CfnOutput(
            self,
            "ResultsBucketName",
            value=self.storage.bucket.bucket_name,
            description="S3 bucket holding records/, reports/ and athena-results/.",
        )
        CfnOutput(
            self,
            "AthenaWorkGroupName",
            value=self.storage.workgroup.ref,
            description="Athena workgroup the report queries must run in.",
        )
        CfnOutput(
            self,
            "GlueDatabaseName",
            value=self.storage.database.database_name,
            description="Glue database holding the records table.",
        )
        CfnOutput(
            self,
            "RecordsTableName",
            value=self.storage.records_table.table_name,
            description="Glue table over records/ (partition projection on run_id and branch_id).",
        )
        CfnOutput(
            self,
            "CleanupDeadLetterQueueUrl",
            value=self.cleanup.dead_letter_queue.queue_url,
            description="Ended executions whose cleanup did not finish; the sweeper deletes what they left.",
        )
        CfnOutput(
            self,
            "RunnerLogGroupName",
            value=self.runner.log_group.log_group_name,
            description="CloudWatch log group of the load runner tasks (one stream per branch task).",
        )
