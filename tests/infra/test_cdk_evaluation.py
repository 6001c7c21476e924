"""The Evaluate task of a judged run as synthesized: its state, its role's Bedrock grant (the stack's judge
models only) and SageMaker grant (the stack's judge endpoints only), its S3 prefixes, the Glue table of
judgments, the Plan's judge settings, and Render's input of how the Evaluate step ended."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Template
from template_queries import (
    bucket_id,
    function_by_handler,
    render,
    resources,
    role_id_of,
    state_machine_definition,
    statements_of_role,
)

from fmbench.config import DEFAULT_JUDGES
from fmbench.judgments import athena_columns
from fmbench.pricing import foundation_model_id
from infra.app import BuiltApp, build_app
from infra.evaluator import EVALUATOR_ENTRY_POINT

INVOKE = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}


def _role_id(built: BuiltApp, role: Any) -> str:
    return role_id_of(built.stack.resolve(role.role_arn))


def _bedrock_resources(template_json: dict[str, Any], role_id: str) -> dict[str, set[str]]:
    """Per Bedrock action the role is allowed, the resources it is allowed on."""
    allowed: dict[str, set[str]] = {}
    for each in statements_of_role(template_json, role_id):
        for action in each["Action"]:
            if action.startswith("bedrock:"):
                allowed.setdefault(action, set()).update(each["Resource"])
    return allowed


def _model_arns(model_ids: list[str]) -> set[str]:
    arns = set()
    for model_id in model_ids:
        arns.add(f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{foundation_model_id(model_id)}")
        if foundation_model_id(model_id) != model_id:
            arns.add(f"arn:${{AWS::Partition}}:bedrock:*:${{AWS::AccountId}}:inference-profile/{model_id}")
    return arns


def test_the_evaluate_task_role_may_invoke_only_the_default_judge_models(
    built: BuiltApp, template_json: dict[str, Any]
) -> None:
    role_id = _role_id(built, built.stack.evaluator.task_role)
    expected = _model_arns([judge["model_id"] for judge in DEFAULT_JUDGES])
    assert len(expected) == 6  # three foundation models, three US inference profiles
    assert _bedrock_resources(template_json, role_id) == dict.fromkeys(INVOKE, expected)
    # The load runner keeps its own grant: any model a Bedrock target names.
    runner = _bedrock_resources(template_json, _role_id(built, built.stack.runner.task_role))
    assert "arn:${AWS::Partition}:bedrock:*::foundation-model/*" in runner["bedrock:InvokeModel"]


def test_the_evaluate_task_reads_the_run_and_writes_only_its_evaluations(
    built: BuiltApp, template_json: dict[str, Any]
) -> None:
    bucket = bucket_id(template_json)
    statements = statements_of_role(template_json, _role_id(built, built.stack.evaluator.task_role))
    reads = {r for s in statements if "s3:GetObject" in s["Action"] for r in s["Resource"]}
    writes = {r for s in statements if "s3:PutObject" in s["Action"] for r in s["Resource"]}
    assert reads == {f"${{{bucket}.Arn}}/{p}/*" for p in ("specs", "records", "datasets", "evaluations")}
    # its judgments, and how the judging ended (outcomes/run_id=R/evaluation.json)
    assert writes == {f"${{{bucket}.Arn}}/evaluations/*", f"${{{bucket}.Arn}}/outcomes/*"}


def _sagemaker_resources(template_json: dict[str, Any], role_id: str) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for each in statements_of_role(template_json, role_id):
        for action in each["Action"]:
            if action.startswith("sagemaker:"):
                allowed.setdefault(action, set()).update(each["Resource"])
    return allowed


def test_the_evaluate_task_may_invoke_exactly_the_stacks_judge_endpoints(
    built: BuiltApp, template_json: dict[str, Any], custom: BuiltApp, custom_template_json: dict[str, Any]
) -> None:
    # By default (fmbench:judgeEndpoints: []) no SageMaker endpoint at all, and the Plan describes none.
    assert _sagemaker_resources(template_json, _role_id(built, built.stack.evaluator.task_role)) == {}
    _, plan = function_by_handler(template_json, "lambdas.plan.handler")
    assert json.loads(plan["Environment"]["Variables"]["FMBENCH_JUDGE_ENDPOINTS"]) == []
    assert _sagemaker_resources(template_json, role_id_of(plan["Role"])) == {}

    endpoint = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}:endpoint/"
    arns = {f"{endpoint}my-judge-endpoint", f"{endpoint}other-judge"}  # lower case, as in the ARN
    role_id = _role_id(custom, custom.stack.evaluator.task_role)
    assert _sagemaker_resources(custom_template_json, role_id) == {
        "sagemaker:InvokeEndpoint": arns,
        "sagemaker:InvokeEndpointWithResponseStream": arns,
    }
    _, plan = function_by_handler(custom_template_json, "lambdas.plan.handler")
    variables = plan["Environment"]["Variables"]
    assert json.loads(variables["FMBENCH_JUDGE_ENDPOINTS"]) == ["My-Judge-Endpoint", "other-judge"]
    # The Plan asks whether each is InService (DescribeEndpoint on exactly those), before anything runs.
    plan_sagemaker = _sagemaker_resources(custom_template_json, role_id_of(plan["Role"]))
    assert plan_sagemaker == {"sagemaker:DescribeEndpoint": arns}


def test_judge_models_are_a_stack_setting() -> None:
    built = build_app({"fmbench:judgeModels": json.dumps(["mistral.mistral-large-2407-v1:0"])})
    template_json = Template.from_stack(built.stack).to_json()
    role_id = _role_id(built, built.stack.evaluator.task_role)
    only_model = {"arn:${AWS::Partition}:bedrock:*::foundation-model/mistral.mistral-large-2407-v1:0"}
    assert _bedrock_resources(template_json, role_id) == dict.fromkeys(INVOKE, only_model)
    _, plan = function_by_handler(template_json, "lambdas.plan.handler")
    variables = plan["Environment"]["Variables"]
    assert json.loads(variables["FMBENCH_JUDGE_MODELS"]) == ["mistral.mistral-large-2407-v1:0"]


def test_the_plan_may_check_model_availability_and_knows_the_judge_models(
    template_json: dict[str, Any],
) -> None:
    _, plan = function_by_handler(template_json, "lambdas.plan.handler")
    variables = plan["Environment"]["Variables"]
    assert json.loads(variables["FMBENCH_JUDGE_MODELS"]) == [j["model_id"] for j in DEFAULT_JUDGES]
    statements = statements_of_role(template_json, role_id_of(plan["Role"]))
    assert _bedrock_resources(template_json, role_id_of(plan["Role"])) == {
        "bedrock:GetFoundationModelAvailability": {"*"}
    }
    assert statements


def test_the_judgments_table_takes_its_columns_from_the_judgment_schema(
    template_json: dict[str, Any],
) -> None:
    (table,) = [
        render(props["TableInput"])
        for props in resources(template_json, "AWS::Glue::Table").values()
        if props["TableInput"]["Name"] == "judgments"
    ]
    storage = table["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in storage["Columns"]] == athena_columns()
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == [
        ("run_id", "string"),
        ("branch_id", "string"),
    ]
    assert storage["Location"].endswith("/evaluations/")
    assert "projection.enabled" not in table.get("Parameters", {})  # partitions come from the Plan


def test_evaluate_runs_after_the_branches_only_for_a_judged_suite_and_never_fails_the_run(
    built: BuiltApp, template_json: dict[str, Any]
) -> None:
    states = state_machine_definition(template_json)["States"]
    assert states["Branches"]["Next"] == "EvaluateWanted"
    wanted = states["EvaluateWanted"]
    assert wanted["Choices"] == [
        {"Variable": "$.plan.evaluate", "BooleanEquals": True, "Next": "EvaluateCommand"}
    ]
    # Not judged here: Render gets an empty $.evaluation and reads the run's recorded judging.
    assert wanted["Default"] == "NotEvaluated"
    assert states["NotEvaluated"] == {
        "Type": "Pass",
        "Comment": states["NotEvaluated"]["Comment"],
        "Parameters": {},
        "ResultPath": "$.evaluation",
        "Next": "Query",
    }
    assert states["EvaluateCommand"]["Next"] == "Evaluate"
    evaluate = states["Evaluate"]
    assert evaluate["Resource"].endswith(":states:::ecs:runTask.sync")
    assert evaluate["Next"] == "Query"
    assert evaluate["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.evaluation.error", "Next": "Query"}
    ]
    assert evaluate["TimeoutSeconds"] > 0
    (override,) = evaluate["Parameters"]["Overrides"]["ContainerOverrides"]
    assert override["Command.$"] == "$.evaluation.command"
    # The task definition (by family) whose container runs the CLI, not the load runner.
    (definition,) = [
        props
        for props in resources(template_json, "AWS::ECS::TaskDefinition").values()
        if props["Family"] == evaluate["Parameters"]["TaskDefinition"]
    ]
    (container,) = definition["ContainerDefinitions"]
    assert container["Name"] == override["Name"] == "evaluator"
    assert container["EntryPoint"] == EVALUATOR_ENTRY_POINT
    assert role_id_of(definition["TaskRoleArn"]) == _role_id(built, built.stack.evaluator.task_role)
    # Render is told how the Evaluate step ended (its command, and the caught error when it failed).
    assert states["Render"]["Parameters"]["Payload"]["evaluation.$"] == "$.evaluation"
