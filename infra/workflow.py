"""The benchmark state machine of docs/workflow.md: plan, one branch per target, query, render."""

from typing import Final, TypeVar

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from fmbench.deployment import EndpointBusyError
from infra.evaluator import Evaluator
from infra.functions import Functions
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources
from infra.runner import BRANCH_SPEC_URI_ENV, Runner

# Transient failures of the Lambda service itself, not of a handler: retrying them is always safe here,
# because every handler is idempotent (a retried Deploy finds what the first attempt created).
LAMBDA_TRANSIENT_ERRORS: Final = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
ATHENA_TRANSIENT_ERRORS: Final = ["Athena.TooManyRequestsException", "Athena.InternalServerException"]
# EventBridge refusing an entry (throttled: the entry's FailedEntry) or failing the call itself.
EVENTS_TRANSIENT_ERRORS: Final = [
    "EventBridge.FailedEntry",
    "EventBridge.InternalException",
    "EventBridge.AmazonEventBridgeException",
]
# The metrics query reads megabytes of one run's records (seconds in Athena); a query still queued or running
# after this long is stopped (Step Functions stops the .sync query on timeout) and the execution fails with
# States.Timeout instead of waiting until the execution's own timeout.
QUERY_TIMEOUT: Final = Duration.minutes(30)
# Actions CDK grants the state machine role without a resource, for tracing and for log delivery.
TRACING_ACTIONS: Final = [
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
]
LOG_DELIVERY_ACTIONS: Final = [
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
]
# RunTask refusing to start the runner: throttling ("Rate exceeded"), Fargate capacity not available, ECS
# server errors. Step Functions raises them from the RunTask call itself, before any task exists, so a retry
# cannot start a second runner beside a first. A runner that started and then failed or timed out ends as
# States.TaskFailed or States.Timeout, which are never retried: its requests are already in the records.
ECS_TASK_NOT_STARTED_ERRORS: Final = ["ECS.AmazonECSException", "ECS.ServerException"]
# Error names a branch reports when its endpoint never served (the Cause says why).
ENDPOINT_FAILED_ERROR: Final = "EndpointFailed"
ENDPOINT_TIMEOUT_ERROR: Final = "EndpointTimeout"
# A handler's exception reaches Step Functions as its class name (fmbench.deployment.EndpointBusyError).
ENDPOINT_BUSY_ERROR: Final = EndpointBusyError.__name__

# Where a branch keeps its state: the plan's item, the status-poll count, and the error that sent it to
# the teardown. `failure` starts empty and gets `error` from a Catch, so that the teardown's event is the
# branch item merged with `failure`: exactly the item on the success path, the item plus `error` after a
# failure (docs/workflow.md). Step Functions JSONPath cannot write a literal null, hence presence, not null.
BRANCH: Final = "$.branch"
FAILURE: Final = "$.failure"
ERROR: Final = "$.failure.error"
POLLS: Final = "$.polls"
# Teardown's answer: the branch's error, its cause cut short, which BranchFailed leaves in the Map's results.
TEARDOWN: Final = "$.teardown"
# Render's answer (then Compare's): the execution's output, the bounded summary of result.json.
REPORT_OUTPUT: Final = "$.report.output"
# What failed after the plan (Query, Render, Compare): caught here, announced, then the execution fails.
RUN_ERROR: Final = "$.run_error"
RUN_FAILED_ERROR: Final = "RunFailed"
# The Evaluate task's command, and the error that stopped it (the run goes on without accuracy).
EVALUATION: Final = "$.evaluation"
EVALUATION_ERROR: Final = "$.evaluation.error"
# The event every finished run sends to the account's default event bus (docs/regression.md).
EVENT_SOURCE: Final = "fmbench.flow"
EVENT_DETAIL_TYPE: Final = "FMBench Run Finished"
DEFAULT_EVENT_BUS: Final = "default"


class Workflow(Construct):
    """Builds each phase with its own helper, then the state machine with logging and tracing on.

    Inside a branch every Task catches `States.ALL` into the teardown, and polling is Wait -> check ->
    Choice with a bound, so a branch always ends in a `BranchResult` and one failed branch never fails
    the Map (or leaves an endpoint running).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Functions,
        runner: Runner,
        evaluator: Evaluator | None = None,
        athena_workgroup_name: str,
        athena_database_name: str,
        status_poll_interval: Duration,
        runner_timeout: Duration,
        execution_timeout: Duration,
        log_retention: logs.RetentionDays,
        include_execution_data: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self._functions = functions
        self._runner = runner
        self._evaluator = evaluator
        self._status_poll_interval = status_poll_interval
        self._runner_timeout = runner_timeout

        run_failed = self._run_failed()
        notify = self._notify()
        compare = self._compare(run_failed).next(notify)
        query = _catch_run_error(
            self._query(workgroup_name=athena_workgroup_name, database_name=athena_database_name), run_failed
        )
        after_branches: sfn.IChainable = query
        if evaluator is not None:
            after_branches = (
                sfn.Choice(self, "EvaluateWanted", comment="The suite has an evaluation section.")
                .when(sfn.Condition.boolean_equals("$.plan.evaluate", True), self._evaluate(evaluator, query))
                .otherwise(
                    sfn.Pass(
                        self,
                        "NotEvaluated",
                        comment="Nothing judged in this execution: Render reads the run's recorded judging.",
                        parameters={},
                        result_path=EVALUATION,
                    ).next(query)
                )
            )
        definition = self._plan().next(self._branches()).next(after_branches)
        (
            query.next(_catch_run_error(self._render(), run_failed)).next(
                sfn.Choice(self, "CompareWanted", comment="The suite has a regression section.")
                .when(sfn.Condition.boolean_equals("$.plan.compare", True), compare)
                .otherwise(notify)
            )
        )
        done = sfn.Succeed(
            self, "Done", comment="The output is the summary of result.json.", output_path=REPORT_OUTPUT
        )
        # Announcing is best effort: the report is published whether or not the event could be put.
        notify.add_catch(done, errors=[sfn.Errors.ALL], result_path=sfn.JsonPath.DISCARD)
        notify.next(done)

        # Under /aws/vendedlogs/: CloudWatch Logs then needs no resource policy per log group for the
        # state machine's log delivery (an account's resource policies are few and small).
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/vendedlogs/states/{Stack.of(self).stack_name}-workflow",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="FMBench Flow: plan, benchmark every branch (deploy, load, teardown), query, render.",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=execution_timeout,
            tracing_enabled=True,
            # Every event, but no state input or output: those carry the suite, which may hold headers or
            # other values a user would not want copied into logs.
            logs=sfn.LogOptions(
                destination=self.log_group,
                level=sfn.LogLevel.ALL,
                include_execution_data=include_execution_data,
            ),
        )
        # The run-finished event goes to this account's default bus in this region, and nowhere else.
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["events:PutEvents"],
                resources=[
                    Stack.of(self).format_arn(
                        service="events", resource="event-bus", resource_name=DEFAULT_EVENT_BUS
                    )
                ],
            )
        )
        self._acknowledge_generated_wildcards()

    def _acknowledge_generated_wildcards(self) -> None:
        """The wildcards CDK's task and logging integrations put into the state machine's role."""
        role = self.state_machine.role
        acknowledge_wildcard_resources(
            role,
            [f"{function.function_arn}:*" for function in self._functions.all],
            reason="LambdaInvoke grants each of the workflow's functions together with its versions and "
            "aliases (ARN:*); no other function is invocable.",
        )
        acknowledge_unscoped_actions(
            role,
            [
                *TRACING_ACTIONS,
                *LOG_DELIVERY_ACTIONS,
                "ecs:DescribeTasks",
                "ecs:StopTask",
            ],
            reason="Actions without resource-level permissions that CDK grants for the features used: "
            "X-Ray tracing, CloudWatch Logs vended log delivery, and ecs:DescribeTasks/StopTask polled and "
            "called by runTask.sync on task ARNs unknown until the task starts.",
        )

    # --------------------------------------------------------------------------------------- phases

    def _plan(self) -> sfn.TaskStateBase:
        plan = tasks.LambdaInvoke(
            self,
            "Plan",
            comment="Validate the suite and plan its branches; an invalid suite fails the execution here.",
            lambda_function=self._functions.plan,
            payload=sfn.TaskInput.from_object(
                {"suite": sfn.JsonPath.entire_payload, "execution_name": sfn.JsonPath.execution_name}
            ),
            retry_on_service_exceptions=False,
            result_selector={"plan": sfn.JsonPath.object_at("$.Payload")},
            result_path="$",
        )
        return _retry_lambda_service_errors(plan)

    def _branches(self) -> sfn.Map:
        branches = sfn.Map(
            self,
            "Branches",
            comment="One branch per planned target; concurrency is the plan's, capped by the stack.",
            items_path="$.plan.branches",
            max_concurrency_path="$.plan.max_concurrency",
            item_selector={
                "branch": sfn.JsonPath.object_at("$$.Map.Item.Value"),
                "polls": {"count": 0},
                "failure": {},
            },
            result_path="$.branch_results",
        )
        branches.item_processor(self._branch())
        return branches

    def _branch(self) -> sfn.IChainable:
        teardown = self._teardown()
        run_load = self._run_load(teardown)
        deploy = self._deploy_and_wait(teardown, run_load)
        return (
            sfn.Choice(self, "NeedsDeploy", comment="Only branches that deploy an endpoint wait for one.")
            .when(sfn.Condition.boolean_equals(f"{BRANCH}.needs_deploy", True), deploy)
            .otherwise(run_load)
        )

    def _deploy_and_wait(self, teardown: sfn.IChainable, run_load: sfn.IChainable) -> sfn.IChainable:
        deploy = _catch_into(
            _retry_lambda_service_errors(
                tasks.LambdaInvoke(
                    self,
                    "Deploy",
                    lambda_function=self._functions.deploy,
                    payload=sfn.TaskInput.from_json_path_at(BRANCH),
                    retry_on_service_exceptions=False,
                    result_path=sfn.JsonPath.DISCARD,
                )
            ),
            teardown,
        )
        wait_for_endpoint = sfn.Wait(
            self, "WaitForEndpoint", time=sfn.WaitTime.duration(self._status_poll_interval)
        )
        endpoint_status = _catch_into(
            _retry_lambda_service_errors(
                tasks.LambdaInvoke(
                    self,
                    "EndpointStatus",
                    lambda_function=self._functions.endpoint_status,
                    payload=sfn.TaskInput.from_json_path_at(BRANCH),
                    retry_on_service_exceptions=False,
                    result_selector={
                        "status": sfn.JsonPath.string_at("$.Payload.status"),
                        "failure_reason": sfn.JsonPath.string_at("$.Payload.failure_reason"),
                    },
                    result_path="$.endpoint",
                )
            ),
            teardown,
        )
        count_poll = sfn.Pass(
            self,
            "CountStatusPoll",
            parameters={"count": sfn.JsonPath.math_add(sfn.JsonPath.number_at(f"{POLLS}.count"), 1)},
            result_path=POLLS,
        )
        endpoint_failed = sfn.Pass(
            self,
            "EndpointFailed",
            parameters={
                "Error": ENDPOINT_FAILED_ERROR,
                "Cause": sfn.JsonPath.format(
                    "endpoint {} failed: {}",
                    sfn.JsonPath.string_at(f"{BRANCH}.endpoint_name"),
                    sfn.JsonPath.string_at("$.endpoint.failure_reason"),
                ),
            },
            result_path=ERROR,
        ).next(teardown)
        endpoint_timed_out = sfn.Pass(
            self,
            "EndpointTimedOut",
            parameters={
                "Error": ENDPOINT_TIMEOUT_ERROR,
                "Cause": sfn.JsonPath.format(
                    "timeout: endpoint {} not InService after {} status polls",
                    sfn.JsonPath.string_at(f"{BRANCH}.endpoint_name"),
                    sfn.JsonPath.string_at(f"{POLLS}.count"),
                ),
            },
            result_path=ERROR,
        ).next(teardown)
        endpoint_ready = (
            sfn.Choice(self, "EndpointReady")
            .when(sfn.Condition.string_equals("$.endpoint.status", "InService"), run_load)
            .when(sfn.Condition.string_equals("$.endpoint.status", "Failed"), endpoint_failed)
            .when(
                sfn.Condition.number_greater_than_equals_json_path(
                    f"{POLLS}.count", f"{BRANCH}.max_status_polls"
                ),
                endpoint_timed_out,
            )
            .otherwise(wait_for_endpoint)
        )
        deploy.next(wait_for_endpoint)
        wait_for_endpoint.next(endpoint_status)
        endpoint_status.next(count_poll).next(endpoint_ready)
        return deploy

    def _fargate_task(
        self,
        construct_id: str,
        comment: str,
        task_definition: ecs.TaskDefinition,
        override: tasks.ContainerOverride,
    ) -> tasks.EcsRunTask:
        """A Fargate task of the runner image on the runner's cluster and network (`.sync`), bounded by the
        runner timeout, retried only when RunTask refused to start it (so a retry never starts a second
        task beside a first)."""
        runner = self._runner
        task = tasks.EcsRunTask(
            self,
            construct_id,
            comment=comment,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            cluster=runner.cluster,
            task_definition=task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(platform_version=ecs.FargatePlatformVersion.LATEST),
            assign_public_ip=runner.assign_public_ip,
            subnets=runner.subnets,
            security_groups=[runner.security_group],
            container_overrides=[override],
            # A stuck task is stopped and caught long before the execution times out.
            task_timeout=sfn.Timeout.duration(self._runner_timeout),
            result_path=sfn.JsonPath.DISCARD,
        )
        # A deployed endpoint is billed while RunTask waits for Fargate capacity: a few minutes at most,
        # then the Catch tears it down.
        task.add_retry(
            errors=ECS_TASK_NOT_STARTED_ERRORS,
            interval=Duration.seconds(15),
            max_attempts=5,
            backoff_rate=2,
            max_delay=Duration.minutes(2),
            jitter_strategy=sfn.JitterType.FULL,
        )
        return task

    def _run_load(self, teardown: sfn.IChainable) -> sfn.IChainable:
        runner = self._runner
        run_load = self._fargate_task(
            "RunLoad",
            "The load runner as a Fargate task; it writes the records and the branch outcome.",
            runner.task_definition,
            tasks.ContainerOverride(
                container_definition=runner.container,
                environment=[
                    tasks.TaskEnvironmentVariable(
                        name=BRANCH_SPEC_URI_ENV, value=sfn.JsonPath.string_at(f"{BRANCH}.spec_uri")
                    )
                ],
            ),
        )
        return _catch_into(run_load, teardown).next(teardown)

    def _evaluate(self, evaluator: Evaluator, query: sfn.IChainable) -> sfn.IChainable:
        """`fmbench evaluate s3://BUCKET --run-id R` as a Fargate task: the judges' verdicts on the run's
        answers, into evaluations/. A failed or timed-out task is caught (its error kept under
        `evaluation.error`) and the run is reported without accuracy."""
        command = sfn.Pass(
            self,
            "EvaluateCommand",
            parameters={
                "command": sfn.JsonPath.array(
                    "evaluate",
                    sfn.JsonPath.string_at("$.plan.storage_root"),
                    "--run-id",
                    sfn.JsonPath.string_at("$.plan.run_id"),
                )
            },
            result_path=EVALUATION,
        )
        evaluate = self._fargate_task(
            "Evaluate",
            "The judges' verdicts on the run's answers; a failure loses only the accuracy.",
            evaluator.task_definition,
            tasks.ContainerOverride(
                container_definition=evaluator.container,
                command=sfn.JsonPath.list_at(f"{EVALUATION}.command"),
            ),
        )
        evaluate.add_catch(query, errors=[sfn.Errors.ALL], result_path=EVALUATION_ERROR)
        return command.next(evaluate.next(query))

    def _teardown(self) -> sfn.IChainable:
        teardown = tasks.LambdaInvoke(
            self,
            "Teardown",
            comment="Always runs, also from every Catch: delete the branch's endpoint, config and model.",
            lambda_function=self._functions.teardown,
            payload=sfn.TaskInput.from_json_path_at(
                sfn.JsonPath.json_merge(sfn.JsonPath.object_at(BRANCH), sfn.JsonPath.object_at(FAILURE))
            ),
            retry_on_service_exceptions=False,
            # The branch's error cut short (the whole one goes to failure.json): the Map's result keeps it.
            result_selector={"error": sfn.JsonPath.object_at("$.Payload.error")},
            result_path=TEARDOWN,
        )
        _retry_lambda_service_errors(teardown)
        # SageMaker refuses to delete an endpoint that is still being created (the handler raises
        # EndpointBusyError before deleting anything): wait it out, as a timed-out endpoint soon fails.
        teardown.add_retry(
            errors=[ENDPOINT_BUSY_ERROR],
            interval=Duration.seconds(60),
            max_attempts=30,
            backoff_rate=1,
        )
        # A leaked endpoint costs by the hour: any other teardown failure is worth a few more tries.
        teardown.add_retry(
            errors=[sfn.Errors.ALL],
            interval=Duration.seconds(10),
            max_attempts=3,
            backoff_rate=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        branch_id = sfn.JsonPath.string_at(f"{BRANCH}.branch_id")
        teardown_failed = sfn.Pass(
            self,
            "TeardownFailed",
            comment="The branch's resources may still exist; the error says which teardown call failed.",
            parameters={
                "branch_id": branch_id,
                "status": "failed",
                "error": sfn.JsonPath.object_at("$.teardown_error"),
            },
        )
        teardown.add_catch(teardown_failed, errors=[sfn.Errors.ALL], result_path="$.teardown_error")
        branch_failed = sfn.Pass(
            self,
            "BranchFailed",
            parameters={
                "branch_id": branch_id,
                "status": "failed",
                "error": sfn.JsonPath.object_at(f"{TEARDOWN}.error"),
            },
        )
        branch_succeeded = sfn.Pass(
            self,
            "BranchSucceeded",
            # `null` spelled as an intrinsic: CDK drops None values from a state's parameters.
            parameters={
                "branch_id": branch_id,
                "status": "succeeded",
                "error": sfn.JsonPath.string_to_json("null"),
            },
        )
        return teardown.next(
            sfn.Choice(self, "BranchResult", comment="The branch's outcome as the Map collects it.")
            .when(sfn.Condition.is_present(ERROR), branch_failed)
            .otherwise(branch_succeeded)
        )

    def _query(self, *, workgroup_name: str, database_name: str) -> sfn.CustomState:
        # A CustomState rather than tasks.AthenaStartQueryExecution: that construct grants s3:GetObject on
        # every bucket and Glue writes; the stack grants this state machine a scoped set instead
        # (Storage.grant_run_queries). The state itself is the standard optimized integration.
        query = sfn.CustomState(
            self,
            "Query",
            state_json={
                "Type": "Task",
                "Comment": "Per-load-point metrics of the run (report/sql/metrics.sql, built by the plan).",
                "Resource": f"arn:{Aws.PARTITION}:states:::athena:startQueryExecution.sync",
                "Parameters": {
                    "QueryString.$": "$.plan.metrics_query",
                    "WorkGroup": workgroup_name,
                    "QueryExecutionContext": {"Database": database_name},
                },
                "ResultSelector": {"query_execution_id.$": "$.QueryExecution.QueryExecutionId"},
                "ResultPath": "$.query",
                "TimeoutSeconds": int(QUERY_TIMEOUT.to_seconds()),
            },
        )
        query.add_retry(
            errors=ATHENA_TRANSIENT_ERRORS,
            interval=Duration.seconds(5),
            max_attempts=4,
            backoff_rate=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return query

    def _render(self) -> sfn.TaskStateBase:
        payload: dict[str, object] = {
            "run_id": sfn.JsonPath.string_at("$.plan.run_id"),
            "query_execution_id": sfn.JsonPath.string_at("$.query.query_execution_id"),
            "branch_results": sfn.JsonPath.list_at("$.branch_results"),
            "started_at": sfn.JsonPath.string_at("$$.Execution.StartTime"),
        }
        if self._evaluator is not None:
            # Set on every path to Query: the Evaluate command and its caught error, or {} (not judged here).
            payload["evaluation"] = sfn.JsonPath.object_at(EVALUATION)
        render = tasks.LambdaInvoke(
            self,
            "Render",
            lambda_function=self._functions.render,
            payload=sfn.TaskInput.from_object(payload),
            retry_on_service_exceptions=False,
            result_selector={"output": sfn.JsonPath.object_at("$.Payload")},
            result_path="$.report",
        )
        return _retry_lambda_service_errors(render)

    def _compare(self, run_failed: sfn.IChainable) -> sfn.TaskStateBase:
        compare = tasks.LambdaInvoke(
            self,
            "Compare",
            comment="The run against its baseline (docs/regression.md): the verdict into result.json.",
            lambda_function=self._functions.compare,
            payload=sfn.TaskInput.from_object(
                {
                    "run_id": sfn.JsonPath.string_at("$.plan.run_id"),
                    "report_only": sfn.JsonPath.string_at("$.plan.report_only"),
                }
            ),
            retry_on_service_exceptions=False,
            result_selector={"output": sfn.JsonPath.object_at("$.Payload")},
            result_path="$.report",
        )
        return _catch_run_error(_retry_lambda_service_errors(compare), run_failed)

    def _put_event(self, construct_id: str, detail: dict[str, object], comment: str) -> sfn.CustomState:
        """An EventBridge PutEvents task (the optimized integration) onto the account's default bus."""
        state = sfn.CustomState(
            self,
            construct_id,
            state_json={
                "Type": "Task",
                "Comment": comment,
                "Resource": f"arn:{Aws.PARTITION}:states:::events:putEvents",
                "Parameters": {
                    "Entries": [
                        {
                            "Source": EVENT_SOURCE,
                            "DetailType": EVENT_DETAIL_TYPE,
                            "EventBusName": DEFAULT_EVENT_BUS,
                            "Detail": detail,
                        }
                    ]
                },
                # The PutEvents answer (entry ids) beside the state, not over it.
                "ResultPath": "$.announced",
            },
        )
        state.add_retry(
            errors=EVENTS_TRANSIENT_ERRORS,
            interval=Duration.seconds(2),
            max_attempts=3,
            backoff_rate=2,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return state

    def _notify(self) -> sfn.CustomState:
        return self._put_event(
            "AnnounceRun",
            {
                "run_id.$": f"{REPORT_OUTPUT}.run_id",
                "suite_name.$": f"{REPORT_OUTPUT}.suite_name",
                "status.$": f"{REPORT_OUTPUT}.status",
                "verdict.$": f"{REPORT_OUTPUT}.verdict",
                "regression.$": f"{REPORT_OUTPUT}.regression",
                "best.$": f"{REPORT_OUTPUT}.best",
                "result_json.$": f"{REPORT_OUTPUT}.result_json",
                "report_html.$": f"{REPORT_OUTPUT}.report_html",
                "execution_arn.$": "$$.Execution.Id",
            },
            "A finished run: its status, verdict and best configuration on the default event bus.",
        )

    def _run_failed(self) -> sfn.IChainable:
        """Query, Render or Compare failed: the run is announced as failed, then the execution fails with
        the error it caught."""
        announce = self._put_event(
            "AnnounceFailedRun",
            {
                "run_id.$": "$.plan.run_id",
                "suite_name.$": "$.plan.suite_name",
                "status": "failed",
                "verdict.$": "States.StringToJson('null')",
                "regression.$": "States.StringToJson('null')",
                "best.$": "States.StringToJson('null')",
                "result_json.$": "States.StringToJson('null')",
                "report_html.$": "States.StringToJson('null')",
                "execution_arn.$": "$$.Execution.Id",
                "error.$": RUN_ERROR,
            },
            "A run that failed after its plan, announced before the execution fails.",
        )
        # Announcing is best effort: the execution fails with the run's own error either way.
        # A Fail state may not raise a `States.` error (States.TaskFailed, the usual one here), so the
        # error is RunFailed and the cause names the caught error and its cause.
        failed = sfn.Fail(
            self,
            "RunFailed",
            comment="Query, Render or Compare failed; the cause says with what.",
            error=RUN_FAILED_ERROR,
            cause_path=f"States.Format('{{}}: {{}}', {RUN_ERROR}.Error, {RUN_ERROR}.Cause)",
        )
        announce.add_catch(failed, errors=[sfn.Errors.ALL], result_path=sfn.JsonPath.DISCARD)
        return announce.next(failed)


_Task = TypeVar("_Task", sfn.TaskStateBase, sfn.CustomState)


def _retry_lambda_service_errors(task: _Task) -> _Task:
    task.add_retry(
        errors=LAMBDA_TRANSIENT_ERRORS,
        interval=Duration.seconds(2),
        max_attempts=5,
        backoff_rate=2,
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task


def _catch_run_error(task: _Task, handler: sfn.IChainable) -> _Task:
    task.add_catch(handler, errors=[sfn.Errors.ALL], result_path=RUN_ERROR)
    return task


def _catch_into(task: _Task, handler: sfn.IChainable) -> _Task:
    task.add_catch(handler, errors=[sfn.Errors.ALL], result_path=ERROR)
    return task
