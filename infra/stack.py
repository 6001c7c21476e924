"""The FMBench Flow stack: composes one construct per concern and publishes what clients need to find."""

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.cleanup import Cleanup
from infra.ec2 import Ec2Serving
from infra.evaluator import Evaluator
from infra.functions import Functions
from infra.runner import Runner
from infra.schedules import Schedules
from infra.settings import LOG_RETENTION_DAYS, FmbenchSettings
from infra.storage import (
    DATASETS_PREFIX,
    EVALUATIONS_PREFIX,
    OUTCOMES_PREFIX,
    RECORDS_PREFIX,
    REPORTS_PREFIX,
    RUNS_PREFIX,
    SERVER_METRICS_PREFIX,
    SPECS_PREFIX,
    Storage,
)
from infra.workflow import Workflow


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
        log_retention = LOG_RETENTION_DAYS[settings.log_retention_days]

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
        # The Evaluate task of a judged run: the runner's image, cluster and network, its own role.
        self.evaluator = Evaluator(
            self,
            "Evaluator",
            runner=self.runner,
            judge_models=settings.judge_models,
            judge_endpoints=settings.judge_endpoints,
            cpu=settings.runner_cpu,
            memory_mib=settings.runner_memory_mib,
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
            existing_endpoint_names=settings.existing_endpoint_names,
            judge_models=settings.judge_models,
            judge_endpoints=settings.judge_endpoints,
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            functions=self.functions,
            runner=self.runner,
            evaluator=self.evaluator,
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

        # ec2 branches: the serving instances' role, their network (the runner's), tag-scoped EC2 grants.
        self.ec2 = Ec2Serving(
            self,
            "Ec2",
            functions=self.functions,
            runner=self.runner,
            cleanup_functions=[
                f for f in (self.cleanup.cleanup_function, self.cleanup.sweeper_function) if f is not None
            ],
            model_data_buckets=settings.model_data_buckets,
        )

        storage = self.storage
        storage.grant_prefixes(
            self.runner.task_role,
            read=[SPECS_PREFIX, RECORDS_PREFIX, DATASETS_PREFIX],
            write=[RECORDS_PREFIX, OUTCOMES_PREFIX, SERVER_METRICS_PREFIX],
        )
        # The Evaluate task reads the run's plan, records and prompts, and replaces its judgments (it lists
        # evaluations/ to empty earlier parts beyond the new ones); it records how the judging ended beside
        # the run's outcomes (outcomes/run_id=R/evaluation.json).
        storage.grant_prefixes(
            self.evaluator.task_role,
            read=[SPECS_PREFIX, RECORDS_PREFIX, DATASETS_PREFIX, EVALUATIONS_PREFIX],
            write=[EVALUATIONS_PREFIX, OUTCOMES_PREFIX],
        )
        # A report-only execution re-reads the plan.json of the run it reports on. The plan writes the run's
        # prompts under datasets/ and may read a dataset kept there (s3://BUCKET/datasets/...).
        storage.grant_prefixes(
            self.functions.plan, read=[SPECS_PREFIX, DATASETS_PREFIX], write=[SPECS_PREFIX, DATASETS_PREFIX]
        )
        # ... and registers the run's partitions of the records table before any runner writes.
        storage.grant_register_partitions(self.functions.plan)
        # An ec2 branch's Deploy writes the launched instance's URL into the branch's spec for its runner.
        storage.grant_prefixes(self.functions.deploy, read=[SPECS_PREFIX], write=[SPECS_PREFIX])
        # Once an endpoint is in service, the status step records how long deployment took.
        storage.grant_prefixes(self.functions.endpoint_status, write=[OUTCOMES_PREFIX])
        # ... and Teardown when the endpoint was deleted, for the run's actual cost.
        storage.grant_prefixes(self.functions.teardown, write=[OUTCOMES_PREFIX])
        # Render tells a branch without an outcome (failed before its runner wrote one) from a read it may
        # not make, so it may list the bucket. It saves the Map's results beside the outcomes, from which a
        # report-only execution renders the run again with each branch's reason.
        # Render also writes the run's row of the runs table (a re-render keeps the row's start).
        storage.grant_prefixes(
            self.functions.render,
            read=[SPECS_PREFIX, OUTCOMES_PREFIX, RUNS_PREFIX, SERVER_METRICS_PREFIX, EVALUATIONS_PREFIX],
            write=[REPORTS_PREFIX, OUTCOMES_PREFIX, RUNS_PREFIX, SERVER_METRICS_PREFIX],
            list_any_prefix=True,
        )
        # Render reads the Query state's result and runs one more query of its own (the TTFT samples).
        storage.grant_run_queries(self.functions.render)
        # Compare reads the plan, the published report and the run's row, queries both runs' requests and
        # the runs table (the latest baseline), and publishes the comparison and the row with the verdict.
        storage.grant_prefixes(
            self.functions.compare,
            read=[SPECS_PREFIX, REPORTS_PREFIX, RUNS_PREFIX],
            write=[REPORTS_PREFIX, RUNS_PREFIX],
            list_any_prefix=True,
        )
        storage.grant_run_queries(self.functions.compare)
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
