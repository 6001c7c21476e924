"""Cleanup outside the state machine: the rule on ended executions, the sweeper's schedule, their IAM."""

import json
from typing import Any

from aws_cdk import App, Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from template_queries import (
    canonical,
    function_by_handler,
    only,
    render,
    resources,
    role_id_of,
    statement,
    statements_of_role,
)

from infra.cleanup import Cleanup
from infra.image import LAMBDA_TARGET, build_image

CLEANUP = "lambdas.cleanup.handler"
SWEEPER = "lambdas.sweeper.handler"
SAGEMAKER = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}"
PRODUCT_ARNS = [f"{SAGEMAKER}:{kind}/fmb-*" for kind in ("model", "endpoint-config", "endpoint")]
XRAY = statement(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"])


def _rules(template_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "pattern" if "EventPattern" in props else "schedule": render(props)
        for props in resources(template_json, "AWS::Events::Rule").values()
    }


def _queue_arn(template_json: dict[str, Any]) -> str:
    queue_id, _ = only(template_json, "AWS::SQS::Queue")
    return f"${{{queue_id}.Arn}}"


def _state_machine(template_json: dict[str, Any]) -> str:
    state_machine_id, _ = only(template_json, "AWS::StepFunctions::StateMachine")
    return state_machine_id


def _statements_of(template_json: dict[str, Any], handler: str) -> list[dict[str, Any]]:
    _, function = function_by_handler(template_json, handler)
    return statements_of_role(template_json, role_id_of(function["Role"]))


def _cleaning_statements(template_json: dict[str, Any], handler: str) -> list[dict[str, Any]]:
    """What both functions hold: their log group, X-Ray, listing SageMaker, describing and reading the tags
    of the product's resources, and deleting those that carry the run-id tag."""
    _, function = function_by_handler(template_json, handler)
    log_group = f"${{{function['LoggingConfig']['LogGroup']['Ref']}.Arn}}"
    return [
        statement(["logs:CreateLogStream", "logs:PutLogEvents"], [log_group]),
        XRAY,
        statement(
            ["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"], ["*"]
        ),
        statement(
            [
                "sagemaker:DescribeModel",
                "sagemaker:DescribeEndpointConfig",
                "sagemaker:DescribeEndpoint",
                "sagemaker:ListTags",
            ],
            PRODUCT_ARNS,
        ),
        statement(
            ["sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel"],
            PRODUCT_ARNS,
            {"Null": {"aws:ResourceTag/fmbench:run-id": "false"}},
        ),
        # ec2 branches' instances and security groups (infra/ec2.py), held to the same tag
        statement(["ec2:DescribeInstances", "ec2:DescribeSecurityGroups"], ["*"]),
        statement(
            ["ec2:TerminateInstances", "ec2:DeleteSecurityGroup"],
            [
                "arn:${AWS::Partition}:ec2:*:${AWS::AccountId}:instance/*",
                "arn:${AWS::Partition}:ec2:*:${AWS::AccountId}:security-group/*",
            ],
            {"Null": {"aws:ResourceTag/fmbench:run-id": "false"}},
        ),
    ]


def _executions(template_json: dict[str, Any]) -> str:
    return (
        "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:"
        f"${{{_state_machine(template_json)}.Name}}:*"
    )


def test_every_ended_execution_of_this_state_machine_goes_to_the_cleanup(
    template_json: dict[str, Any],
) -> None:
    rule = _rules(template_json)["pattern"]
    cleanup_id, _ = function_by_handler(template_json, CLEANUP)

    assert rule["State"] == "ENABLED"
    # SUCCEEDED too: a branch whose Teardown failed after its retries does not fail the execution.
    assert rule["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "stateMachineArn": [f"${{{_state_machine(template_json)}}}"],
            "status": ["ABORTED", "FAILED", "SUCCEEDED", "TIMED_OUT"],
        },
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == f"${{{cleanup_id}.Arn}}"
    assert "Input" not in target and "InputTransformer" not in target  # the event as EventBridge sends it
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 7200}
    assert target["DeadLetterConfig"] == {"Arn": _queue_arn(template_json)}


def test_a_cleanup_that_keeps_failing_lands_in_the_dead_letter_queue(template_json: dict[str, Any]) -> None:
    cleanup_id, cleanup = function_by_handler(template_json, CLEANUP)
    (invoke_config,) = [
        props
        for props in resources(template_json, "AWS::Lambda::EventInvokeConfig").values()
        if props["FunctionName"] == {"Ref": cleanup_id}
    ]

    assert render(cleanup["DeadLetterConfig"]) == {"TargetArn": _queue_arn(template_json)}
    assert (invoke_config["MaximumRetryAttempts"], invoke_config["MaximumEventAgeInSeconds"]) == (2, 3600)


def test_the_dead_letter_queue_is_encrypted_tls_only_and_written_only_by_the_rule(
    template_json: dict[str, Any],
) -> None:
    _, queue = only(template_json, "AWS::SQS::Queue")
    _, policy = only(template_json, "AWS::SQS::QueuePolicy")
    rule_id = next(
        logical_id
        for logical_id, props in resources(template_json, "AWS::Events::Rule").items()
        if "EventPattern" in props
    )
    statements = render(policy["PolicyDocument"]["Statement"])

    assert queue == {"MessageRetentionPeriod": 14 * 24 * 3600, "SqsManagedSseEnabled": True}
    assert {
        "Action": "sqs:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": _queue_arn(template_json),
    } in statements
    (allowed,) = [s for s in statements if s["Effect"] == "Allow"]
    assert (allowed["Principal"], allowed["Action"]) == (
        {"Service": "events.amazonaws.com"},
        "sqs:SendMessage",
    )
    assert allowed["Condition"] == {"ArnEquals": {"aws:SourceArn": f"${{{rule_id}.Arn}}"}}


def test_only_their_rules_may_invoke_the_cleanup_and_the_sweeper(template_json: dict[str, Any]) -> None:
    rule_ids = {
        ("pattern" if "EventPattern" in props else "schedule"): logical_id
        for logical_id, props in resources(template_json, "AWS::Events::Rule").items()
    }
    permissions = {
        render(props["FunctionName"]): (props["Principal"], render(props["SourceArn"]))
        for props in resources(template_json, "AWS::Lambda::Permission").values()
    }
    cleanup_id, _ = function_by_handler(template_json, CLEANUP)
    sweeper_id, _ = function_by_handler(template_json, SWEEPER)

    assert permissions == {
        f"${{{cleanup_id}.Arn}}": ("events.amazonaws.com", f"${{{rule_ids['pattern']}.Arn}}"),
        f"${{{sweeper_id}.Arn}}": ("events.amazonaws.com", f"${{{rule_ids['schedule']}.Arn}}"),
    }


def test_cleanup_deletes_only_tagged_product_resources_and_reads_only_this_workflows_executions(
    template_json: dict[str, Any],
) -> None:
    assert canonical(_statements_of(template_json, CLEANUP)) == canonical(
        [
            *_cleaning_statements(template_json, CLEANUP),
            statement(["states:GetExecutionHistory"], [_executions(template_json)]),
            # Lambda's dead-letter queue for a failed asynchronous invocation.
            statement(["sqs:SendMessage"], [_queue_arn(template_json)]),
        ]
    )


def test_the_sweeper_runs_every_hour_and_may_also_list_this_workflows_executions(
    template_json: dict[str, Any],
) -> None:
    schedule = _rules(template_json)["schedule"]
    sweeper_id, sweeper = function_by_handler(template_json, SWEEPER)

    assert (schedule["ScheduleExpression"], schedule["State"]) == ("rate(1 hour)", "ENABLED")
    (target,) = schedule["Targets"]
    assert target["Arn"] == f"${{{sweeper_id}.Arn}}"
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
    # The next sweep does what a failed one did not: Lambda does not retry it.
    (invoke_config,) = [
        props
        for props in resources(template_json, "AWS::Lambda::EventInvokeConfig").values()
        if props["FunctionName"] == {"Ref": sweeper_id}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert render(sweeper["Environment"]["Variables"]) == {
        "FMBENCH_STATE_MACHINE_ARN": f"${{{_state_machine(template_json)}}}"
    }
    assert canonical(_statements_of(template_json, SWEEPER)) == canonical(
        [
            *_cleaning_statements(template_json, SWEEPER),
            statement(
                ["states:DescribeExecution", "states:GetExecutionHistory"], [_executions(template_json)]
            ),
            statement(["states:ListExecutions"], [f"${{{_state_machine(template_json)}}}"]),
        ]
    )


def test_context_sets_the_sweep_interval_and_its_regions(custom_template_json: dict[str, Any]) -> None:
    schedule = _rules(custom_template_json)["schedule"]
    _, sweeper = function_by_handler(custom_template_json, SWEEPER)

    assert schedule["ScheduleExpression"] == "rate(15 minutes)"
    assert sweeper["Environment"]["Variables"]["FMBENCH_SWEEP_REGIONS"] == "eu-west-1,us-west-2"


def test_an_interval_of_zero_leaves_the_sweeper_out_and_the_cleanup_in() -> None:
    """The construct alone (the stack passes no interval for `fmbench:sweeperIntervalMinutes` 0)."""
    stack = Stack(App(), "CleanupOnly")
    state_machine = sfn.StateMachine(
        stack, "StateMachine", definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Nothing"))
    )
    cleanup = Cleanup(
        stack,
        "Cleanup",
        image=build_image(stack, "Image", target=LAMBDA_TARGET),
        state_machine=state_machine,
        sweeper_interval=None,
        sweep_regions=(),
        log_retention=logs.RetentionDays.ONE_WEEK,
    )
    template_json = Template.from_stack(stack).to_json()

    assert (cleanup.sweeper_function, cleanup.sweeper_rule) == (None, None)
    assert [
        json.dumps(props["ImageConfig"])
        for props in resources(template_json, "AWS::Lambda::Function").values()
    ] == [json.dumps({"Command": [CLEANUP]})]
    assert ["EventPattern" in props for props in resources(template_json, "AWS::Events::Rule").values()] == [
        True
    ]
