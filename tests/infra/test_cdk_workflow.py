"""The state machine as synthesized: the phases of docs/workflow.md, their error handling, logs and IAM."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from custom_context import SCHEDULED_SUITE
from template_queries import (
    actions_of,
    bucket_id,
    function_by_handler,
    only,
    render,
    resources,
    runner_task_definition,
    state_machine_definition,
    statement,
    statements_of_role,
)

from infra.app import BuiltApp, build_app
from infra.settings import ContextError, FmbenchSettings

LAMBDA_SERVICE_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
LAMBDA_INVOKE = "arn:${AWS::Partition}:states:::lambda:invoke"
WORKFLOW_FUNCTIONS = ["plan", "deploy", "endpoint_status", "teardown", "render", "compare"]
ECS_NOT_STARTED_ERRORS = ["ECS.AmazonECSException", "ECS.ServerException"]
ATHENA_SERVICE_ERRORS = ["Athena.TooManyRequestsException", "Athena.InternalServerException"]
# Per integration: the errors that mean the service throttled or failed the call, not that the work failed.
THROTTLING_AND_SERVICE_ERRORS = {
    LAMBDA_INVOKE: {"Lambda.TooManyRequestsException", "Lambda.ServiceException"},
    "arn:${AWS::Partition}:states:::ecs:runTask.sync": {"ECS.AmazonECSException", "ECS.ServerException"},
    "arn:${AWS::Partition}:states:::athena:startQueryExecution.sync": {
        "Athena.TooManyRequestsException",
        "Athena.InternalServerException",
    },
    "arn:${AWS::Partition}:states:::events:putEvents": {
        "EventBridge.FailedEntry",
        "EventBridge.InternalException",
    },
}


@pytest.fixture(scope="module")
def definition(template_json: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(template_json)


@pytest.fixture(scope="module")
def branch_states(definition: dict[str, Any]) -> dict[str, Any]:
    states: dict[str, Any] = definition["States"]["Branches"]["ItemProcessor"]["States"]
    return states


def _function_arn(template_json: dict[str, Any], handler: str) -> str:
    logical_id, _ = function_by_handler(template_json, handler)
    return f"${{{logical_id}.Arn}}"


def _tasks(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((name, state) for name, state in states.items() if state["Type"] == "Task")


def test_workflow_exposes_its_state_machine(built: BuiltApp) -> None:
    assert isinstance(built.stack.workflow.state_machine, sfn.StateMachine)


def test_phases_run_plan_branches_query_render_in_order(
    definition: dict[str, Any], template_json: dict[str, Any]
) -> None:
    states = definition["States"]
    path, name = [], definition["StartAt"]
    while name is not None:
        path.append(name)
        name = states[name].get("Next")

    assert path == ["Plan", "Branches", "EvaluateWanted"]  # then Query (tests/infra/test_cdk_evaluation.py)
    path, name = [], "Query"
    while name is not None:
        path.append(name)
        name = states[name].get("Next")
    assert path == ["Query", "Render", "CompareWanted"]
    # Compare runs only for a suite with a regression section; either way the run is announced, then Done.
    choice = states["CompareWanted"]
    assert choice["Choices"] == [{"Variable": "$.plan.compare", "BooleanEquals": True, "Next": "Compare"}]
    assert choice["Default"] == "AnnounceRun"
    assert (states["Compare"]["Next"], states["AnnounceRun"]["Next"]) == ("AnnounceRun", "Done")
    assert states["Done"]["Type"] == "Succeed"
    assert states["Done"]["OutputPath"] == "$.report.output"
    plan = states["Plan"]
    assert (plan["Resource"], plan["Parameters"]["FunctionName"]) == (
        LAMBDA_INVOKE,
        _function_arn(template_json, "lambdas.plan.handler"),
    )
    assert plan["Parameters"]["Payload"] == {"suite.$": "$", "execution_name.$": "$$.Execution.Name"}
    assert (plan["ResultSelector"], plan["ResultPath"]) == ({"plan.$": "$.Payload"}, "$")
    # An invalid suite fails the execution at Plan: nothing catches it there.
    assert "Catch" not in plan


def test_branches_map_takes_its_concurrency_from_the_plan(definition: dict[str, Any]) -> None:
    branches = definition["States"]["Branches"]

    assert branches["Type"] == "Map"
    assert branches["ItemsPath"] == "$.plan.branches"
    assert branches["MaxConcurrencyPath"] == "$.plan.max_concurrency"
    assert "MaxConcurrency" not in branches
    assert branches["ItemSelector"] == {"branch.$": "$$.Map.Item.Value", "polls": {"count": 0}, "failure": {}}
    assert branches["ResultPath"] == "$.branch_results"


def test_every_task_of_a_branch_catches_everything_into_the_teardown_path(
    branch_states: dict[str, Any],
) -> None:
    tasks = dict(_tasks(branch_states))
    assert set(tasks) == {"Deploy", "EndpointStatus", "RunLoad", "Teardown"}

    for name, task in tasks.items():
        (catch,) = task["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        if name == "Teardown":
            assert (catch["Next"], catch["ResultPath"]) == ("TeardownFailed", "$.teardown_error")
        else:
            assert (catch["Next"], catch["ResultPath"]) == ("Teardown", "$.failure.error"), name


def test_every_branch_ends_in_a_result_and_never_fails_the_map(branch_states: dict[str, Any]) -> None:
    ends = {name: state for name, state in branch_states.items() if state.get("End")}

    assert set(ends) == {"BranchSucceeded", "BranchFailed", "TeardownFailed"}
    assert {state["Type"] for state in ends.values()} == {"Pass"}
    assert {name: state["Parameters"] for name, state in ends.items()} == {
        "BranchSucceeded": {
            "branch_id.$": "$.branch.branch_id",
            "status": "succeeded",
            "error.$": "States.StringToJson('null')",
        },
        "BranchFailed": {
            "branch_id.$": "$.branch.branch_id",
            "status": "failed",
            # Teardown's copy of the error, cut short (the whole error goes to failure.json in S3).
            "error.$": "$.teardown.error",
        },
        "TeardownFailed": {
            "branch_id.$": "$.branch.branch_id",
            "status": "failed",
            "error.$": "$.teardown_error",
        },
    }
    assert not [s for s in branch_states.values() if s["Type"] == "Fail"]


def test_teardown_always_follows_and_receives_the_item_with_the_error(branch_states: dict[str, Any]) -> None:
    teardown = branch_states["Teardown"]

    assert branch_states["RunLoad"]["Next"] == "Teardown"
    assert branch_states["EndpointFailed"]["Next"] == branch_states["EndpointTimedOut"]["Next"] == "Teardown"
    assert teardown["Parameters"]["Payload.$"] == "States.JsonMerge($.branch, $.failure, false)"
    # Only the error it cut short is kept, for BranchFailed; what it deleted is in its logs and the history.
    assert teardown["ResultSelector"] == {"error.$": "$.Payload.error"}
    assert teardown["ResultPath"] == "$.teardown"
    result = branch_states[teardown["Next"]]
    assert result["Choices"] == [{"Variable": "$.failure.error", "IsPresent": True, "Next": "BranchFailed"}]
    assert result["Default"] == "BranchSucceeded"


def test_only_branches_that_deploy_wait_for_an_endpoint(branch_states: dict[str, Any]) -> None:
    needs_deploy = branch_states["NeedsDeploy"]

    assert needs_deploy["Choices"] == [
        {"Variable": "$.branch.needs_deploy", "BooleanEquals": True, "Next": "Deploy"}
    ]
    assert needs_deploy["Default"] == "RunLoad"
    assert branch_states["Deploy"]["Parameters"]["Payload.$"] == "$.branch"
    assert branch_states["Deploy"]["ResultPath"] is None


def test_status_polling_is_wait_check_choice_with_a_counted_bound(branch_states: dict[str, Any]) -> None:
    assert branch_states["Deploy"]["Next"] == "WaitForEndpoint"
    assert branch_states["WaitForEndpoint"] == {"Type": "Wait", "Seconds": 60, "Next": "EndpointStatus"}
    status = branch_states["EndpointStatus"]
    assert (status["Next"], status["ResultPath"]) == ("CountStatusPoll", "$.endpoint")
    assert branch_states["CountStatusPoll"]["Parameters"] == {"count.$": "States.MathAdd($.polls.count, 1)"}
    assert branch_states["CountStatusPoll"]["ResultPath"] == "$.polls"

    ready = branch_states["EndpointReady"]
    assert ready["Choices"] == [
        {"Variable": "$.endpoint.status", "StringEquals": "InService", "Next": "RunLoad"},
        {"Variable": "$.endpoint.status", "StringEquals": "Failed", "Next": "EndpointFailed"},
        {
            "Variable": "$.polls.count",
            "NumericGreaterThanEqualsPath": "$.branch.max_status_polls",
            "Next": "EndpointTimedOut",
        },
    ]
    assert ready["Default"] == "WaitForEndpoint"
    assert branch_states["EndpointTimedOut"]["Parameters"]["Error"] == "EndpointTimeout"
    assert branch_states["EndpointTimedOut"]["Parameters"]["Cause.$"].startswith("States.Format('timeout: ")
    assert branch_states["EndpointFailed"]["Parameters"]["Error"] == "EndpointFailed"


def test_run_load_is_a_fargate_task_waited_for_with_the_spec_uri_and_a_timeout(
    branch_states: dict[str, Any], template_json: dict[str, Any]
) -> None:
    run_load = branch_states["RunLoad"]
    cluster_id, _ = only(template_json, "AWS::ECS::Cluster")
    _, task_definition = runner_task_definition(template_json)
    (container,) = task_definition["ContainerDefinitions"]

    assert run_load["Resource"] == "arn:${AWS::Partition}:states:::ecs:runTask.sync"
    assert run_load["TimeoutSeconds"] == 240 * 60
    assert run_load["ResultPath"] is None
    parameters = run_load["Parameters"]
    assert (parameters["Cluster"], parameters["LaunchType"]) == (f"${{{cluster_id}.Arn}}", "FARGATE")
    assert parameters["TaskDefinition"] == task_definition["Family"]
    assert parameters["Overrides"] == {
        "ContainerOverrides": [
            {
                "Name": container["Name"],
                "Environment": [{"Name": "FMBENCH_BRANCH_SPEC_URI", "Value.$": "$.branch.spec_uri"}],
            }
        ]
    }


def test_lambda_service_errors_are_retried_with_backoff(
    definition: dict[str, Any], branch_states: dict[str, Any]
) -> None:
    lambda_tasks = {
        name: task
        for name, task in [*_tasks(definition["States"]), *_tasks(branch_states)]
        if task["Resource"] == LAMBDA_INVOKE
    }
    assert set(lambda_tasks) == {"Plan", "Render", "Compare", "Deploy", "EndpointStatus", "Teardown"}

    for name, task in lambda_tasks.items():
        first = task["Retry"][0]
        assert first["ErrorEquals"] == LAMBDA_SERVICE_ERRORS, name
        assert (first["BackoffRate"], first["JitterStrategy"]) == (2, "FULL"), name
    teardown_retries = [retry["ErrorEquals"] for retry in branch_states["Teardown"]["Retry"]]
    assert teardown_retries == [LAMBDA_SERVICE_ERRORS, ["EndpointBusyError"], ["States.ALL"]]


def test_every_task_retries_throttling_and_service_errors_with_bounded_backoff(
    definition: dict[str, Any], branch_states: dict[str, Any]
) -> None:
    tasks = dict([*_tasks(definition["States"]), *_tasks(branch_states)])
    assert set(tasks) == {
        "Plan",
        "Query",
        "Render",
        "Compare",
        "AnnounceRun",
        "AnnounceFailedRun",
        "Deploy",
        "EndpointStatus",
        "RunLoad",
        "Teardown",
        "Evaluate",
    }

    for name, task in tasks.items():
        wanted = THROTTLING_AND_SERVICE_ERRORS[task["Resource"]]
        (retry,) = [r for r in task.get("Retry", []) if wanted <= set(r["ErrorEquals"])]
        assert retry["BackoffRate"] > 1, name
        assert 2 <= retry["MaxAttempts"] <= 10, name
        assert retry["IntervalSeconds"] >= 1, name


def test_the_runner_is_retried_only_when_its_task_never_started(branch_states: dict[str, Any]) -> None:
    """A second runner of a branch would add its requests to the first's records: only errors of the
    RunTask call itself (throttled, no Fargate capacity, ECS server error) are retried, never a task that
    ran and failed (States.TaskFailed) or outlived its timeout (States.Timeout)."""
    (retry,) = branch_states["RunLoad"]["Retry"]

    assert retry == {
        "ErrorEquals": ECS_NOT_STARTED_ERRORS,
        "IntervalSeconds": 15,
        "MaxAttempts": 5,
        "BackoffRate": 2,
        "MaxDelaySeconds": 120,
        "JitterStrategy": "FULL",
    }


def test_query_runs_the_plans_metrics_sql_in_the_workgroup_and_render_outputs_the_summary(
    definition: dict[str, Any], template_json: dict[str, Any]
) -> None:
    query, render_state = definition["States"]["Query"], definition["States"]["Render"]
    (workgroup_id,) = resources(template_json, "AWS::Athena::WorkGroup")
    (database_id,) = resources(template_json, "AWS::Glue::Database")

    assert query["Resource"] == "arn:${AWS::Partition}:states:::athena:startQueryExecution.sync"
    assert query["Parameters"] == {
        "QueryString.$": "$.plan.metrics_query",
        "WorkGroup": f"${{{workgroup_id}}}",
        "QueryExecutionContext": {"Database": f"${{{database_id}}}"},
    }
    assert query["Retry"][0]["ErrorEquals"] == ATHENA_SERVICE_ERRORS
    # A query stuck in Athena's queue fails the execution in half an hour, not at its 24-hour timeout.
    assert query["TimeoutSeconds"] == 30 * 60
    assert render_state["Parameters"] == {
        "FunctionName": _function_arn(template_json, "lambdas.render.handler"),
        "Payload": {
            "run_id.$": "$.plan.run_id",
            "query_execution_id.$": "$.query.query_execution_id",
            "branch_results.$": "$.branch_results",
            "started_at.$": "$$.Execution.StartTime",
            # The Evaluate task's command and caught error, or {} when this execution judged nothing.
            "evaluation.$": "$.evaluation",
        },
    }
    assert (render_state["ResultSelector"], render_state["ResultPath"]) == (
        {"output.$": "$.Payload"},
        "$.report",
    )


def test_compare_replaces_the_summary_and_every_finished_run_is_announced_on_the_default_bus(
    definition: dict[str, Any], template_json: dict[str, Any]
) -> None:
    states = definition["States"]
    compare = states["Compare"]
    assert compare["Parameters"] == {
        "FunctionName": _function_arn(template_json, "lambdas.compare.handler"),
        "Payload": {"run_id.$": "$.plan.run_id", "report_only.$": "$.plan.report_only"},
    }
    assert (compare["ResultSelector"], compare["ResultPath"]) == ({"output.$": "$.Payload"}, "$.report")
    announce = states["AnnounceRun"]
    assert announce["Resource"] == "arn:${AWS::Partition}:states:::events:putEvents"
    (entry,) = announce["Parameters"]["Entries"]
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        "fmbench.flow",
        "FMBench Run Finished",
        "default",
    )
    assert {
        key: entry["Detail"][key]
        for key in ("run_id.$", "suite_name.$", "status.$", "verdict.$", "result_json.$", "best.$")
    } == {
        "run_id.$": "$.report.output.run_id",
        "suite_name.$": "$.report.output.suite_name",
        "status.$": "$.report.output.status",
        "verdict.$": "$.report.output.verdict",
        "result_json.$": "$.report.output.result_json",
        "best.$": "$.report.output.best",
    }
    assert announce["ResultPath"] == "$.announced"
    # Best effort: a run whose event could not be put still ends with its report's summary.
    assert announce["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "Done"}]
    # Query, Render and Compare failing: the run is announced as failed, then the execution fails with
    # the error caught (announcing is best effort).
    for name in ("Query", "Render", "Compare"):
        assert states[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.run_error", "Next": "AnnounceFailedRun"}
        ]
    failed = states["AnnounceFailedRun"]
    (failed_entry,) = failed["Parameters"]["Entries"]
    assert failed_entry["Detail"]["status"] == "failed"
    assert failed_entry["Detail"]["error.$"] == "$.run_error"
    assert failed["Next"] == "RunFailed"
    assert failed["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "RunFailed"}]
    assert (states["RunFailed"]["Error"], states["RunFailed"]["CausePath"]) == (
        "RunFailed",
        "States.Format('{}: {}', $.run_error.Error, $.run_error.Cause)",
    )


def test_state_machine_logs_every_event_without_execution_data_traces_and_times_out(
    template_json: dict[str, Any],
) -> None:
    state_machine_id, state_machine = only(template_json, "AWS::StepFunctions::StateMachine")
    logging = render(state_machine["LoggingConfiguration"])
    (destination,) = logging["Destinations"]
    log_group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"].strip("${}").removesuffix(".Arn")

    assert (logging["Level"], logging["IncludeExecutionData"]) == ("ALL", False)
    assert template_json["Resources"][log_group_id]["Properties"] == {
        "LogGroupName": "/aws/vendedlogs/states/FmbenchFlow-workflow",
        "RetentionInDays": 30,
    }
    assert state_machine["TracingConfiguration"] == {"Enabled": True}
    assert state_machine_definition(template_json)["TimeoutSeconds"] == 24 * 60 * 60
    assert template_json["Outputs"]["StateMachineArn"]["Value"] == {"Ref": state_machine_id}


def test_state_machine_role_is_scoped_to_the_workflows_resources(template_json: dict[str, Any]) -> None:
    _, state_machine = only(template_json, "AWS::StepFunctions::StateMachine")
    statements = statements_of_role(template_json, state_machine["RoleArn"]["Fn::GetAtt"][0])
    bucket = f"${{{bucket_id(template_json)}.Arn}}"
    task_definition_id, task_definition = runner_task_definition(template_json)
    (workgroup_id,) = resources(template_json, "AWS::Athena::WorkGroup")

    invokes = {r for s in statements if s["Action"] == ["lambda:InvokeFunction"] for r in s["Resource"]}
    # The workflow's five functions; not the cleanup and the sweeper, which EventBridge invokes.
    functions = [_function_arn(template_json, f"lambdas.{name}.handler") for name in WORKFLOW_FUNCTIONS]
    assert invokes == {*functions, *(f"{arn}:*" for arn in functions)}
    assert statement(["ecs:RunTask"], [f"${{{task_definition_id}}}"]) in statements
    assert (
        statement(
            ["iam:PassRole"],
            sorted(render([task_definition["TaskRoleArn"], task_definition["ExecutionRoleArn"]])),
        )
        in statements
    )
    workgroup = (
        f"arn:${{AWS::Partition}}:athena:${{AWS::Region}}:${{AWS::AccountId}}:workgroup/${{{workgroup_id}}}"
    )
    assert (
        statement(
            [
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
            ],
            [workgroup],
        )
        in statements
    )
    # What Athena needs of the caller when Lake Formation governs the catalog (AWS's documented policy
    # for startQueryExecution.sync): the default data catalog, and data access, which has no resource.
    assert (
        statement(
            ["athena:GetDataCatalog"],
            ["arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:datacatalog/AwsDataCatalog"],
        )
        in statements
    )
    assert statement(["lakeformation:GetDataAccess"], ["*"]) in statements
    glue = [s for s in statements if any(a.startswith("glue:") for a in s["Action"])]
    assert [sorted(s["Action"]) for s in glue] == [
        ["glue:GetDatabase", "glue:GetPartitions", "glue:GetTable"]
    ]
    s3_resources = {
        r for s in statements if any(a.startswith("s3:") for a in s["Action"]) for r in s["Resource"]
    }
    # evaluations/: the judgments table (report queries read it with the caller's permissions)
    assert s3_resources == {
        bucket,
        *(f"{bucket}/{prefix}/*" for prefix in ("records", "runs", "evaluations", "athena-results")),
    }
    # The run-finished event: the default bus of this account and region only.
    assert (
        statement(
            ["events:PutEvents"],
            ["arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"],
        )
        in statements
    )
    assert {r for s in statements if "s3:PutObject" in s["Action"] for r in s["Resource"]} == {
        f"{bucket}/athena-results/*"
    }
    wildcard_only = {a for s in statements if s["Resource"] == ["*"] for a in s["Action"]}
    assert wildcard_only == {
        "ecs:StopTask",
        "ecs:DescribeTasks",
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "lakeformation:GetDataAccess",
    }
    assert not any(a.startswith(("sagemaker:", "bedrock:")) for a in actions_of(statements))


def test_no_schedule_by_default(template: Template) -> None:
    template.resource_count_is("AWS::Scheduler::Schedule", 0)


def test_a_scheduled_suite_starts_the_state_machine_with_that_suite(
    custom_template_json: dict[str, Any],
) -> None:
    state_machine_id, _ = only(custom_template_json, "AWS::StepFunctions::StateMachine")
    _, schedule = only(custom_template_json, "AWS::Scheduler::Schedule")
    target = render(schedule["Target"])

    assert schedule["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert target["Arn"] == f"${{{state_machine_id}}}"
    assert json.loads(target["Input"]) == SCHEDULED_SUITE
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 3}
    (scheduler_role,) = [
        logical_id
        for logical_id, props in resources(custom_template_json, "AWS::IAM::Role").items()
        if props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "scheduler.amazonaws.com"}
    ]
    assert statements_of_role(custom_template_json, scheduler_role) == [
        statement(["states:StartExecution"], [f"${{{state_machine_id}}}"])
    ]


def test_context_reaches_the_definition(custom_template_json: dict[str, Any]) -> None:
    definition = state_machine_definition(custom_template_json)
    branch_states = definition["States"]["Branches"]["ItemProcessor"]["States"]

    assert branch_states["WaitForEndpoint"]["Seconds"] == 15
    assert branch_states["RunLoad"]["TimeoutSeconds"] == 60 * 60
    assert definition["TimeoutSeconds"] == 600 * 60


def test_an_invalid_scheduled_suite_fails_synth_naming_the_field() -> None:
    bad_suite = {**SCHEDULED_SUITE, "load": {"concurrency": [0], "requests_per_level": 10}}
    context = {"fmbench:schedules": [{"name": "nightly", "expression": "rate(1 day)", "suite": bad_suite}]}

    with pytest.raises(
        ContextError, match=r"(?s)^fmbench:schedules\.0\.suite: invalid suite: .*load\.concurrency: "
    ):
        build_app(context)


def test_a_scheduled_suite_names_its_baseline_policy_and_a_bad_one_fails_synth() -> None:
    assert SCHEDULED_SUITE["regression"] == {"baseline": "latest"}
    bad_suite = {**SCHEDULED_SUITE, "regression": {"baseline": "last week"}}
    context = {"fmbench:schedules": [{"name": "nightly", "expression": "rate(1 day)", "suite": bad_suite}]}

    with pytest.raises(ContextError, match=r"(?s)^fmbench:schedules\.0\.suite: .*regression\.baseline: "):
        build_app(context)


def test_a_runner_timeout_beyond_the_execution_timeout_is_refused() -> None:
    from infra.app import cdk_json_context

    context = {**cdk_json_context(), "fmbench:runnerTimeoutMinutes": 1440}

    with pytest.raises(ContextError, match=r"^fmbench:executionTimeoutMinutes: must exceed"):
        FmbenchSettings.from_context(context)
