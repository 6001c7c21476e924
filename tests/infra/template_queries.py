"""Reading a synthesized template the way a reviewer would: resources by what they are, never by logical id.

Intrinsics are rendered as readable strings (``{"Ref": "X"}`` -> ``${X}``, ``{"Fn::GetAtt": ["X", "Arn"]}``
-> ``${X.Arn}``, ``Fn::Join`` concatenated) so that IAM resources and the state machine definition can be
compared as plain text; logical ids inside them are looked up from the template, not hard-coded.
"""

from __future__ import annotations

import json
from typing import Any


def render(value: Any) -> Any:
    """The value with every intrinsic written as text (lists and objects kept)."""
    if isinstance(value, list):
        return [render(item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return f"${{{value['Ref']}}}"
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"${{{logical_id}.{attribute}}}"
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(str(render(part)) for part in parts)
    return {key: render(item) for key, item in value.items()}


def resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Properties of every resource of a type, by logical id."""
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def only(template: dict[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    found = resources(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.items()))


def function_by_handler(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    found = {
        logical_id: props
        for logical_id, props in resources(template, "AWS::Lambda::Function").items()
        if props.get("ImageConfig", {}).get("Command") == [handler]
    }
    assert len(found) == 1, f"expected one function running {handler}, found {sorted(found)}"
    return next(iter(found.items()))


def role_id_of(arn_value: Any) -> str:
    """The role's logical id from a `{"Fn::GetAtt": [role, "Arn"]}` reference."""
    logical_id, attribute = arn_value["Fn::GetAtt"]
    assert attribute == "Arn"
    return str(logical_id)


class Statements(list[dict[str, Any]]):
    """A role's statements, compared by what they allow rather than by how CDK grouped them.

    With `@aws-cdk/aws-iam:minimizePolicies` CDK merges statements that share resources (or actions) and
    a condition, so `statement(...) in statements` asks whether every action of the expected statement is
    allowed on every one of its resources under its condition, in whichever statements.
    """

    def __contains__(self, expected: object) -> bool:
        if not isinstance(expected, dict):
            return False
        return set(_grants([expected])) <= set(_grants(self))


def _grants(statements: list[dict[str, Any]]) -> list[str]:
    """Each (effect, action, resource, condition) a list of statements holds, as JSON text."""
    return sorted(
        {
            json.dumps([each["Effect"], action, resource, each.get("Condition")], sort_keys=True)
            for each in statements
            for action in normalized(each)["Action"]
            for resource in normalized(each)["Resource"]
        }
    )


def statements_of_role(template: dict[str, Any], role_id: str) -> Statements:
    """Every statement of every policy attached to the role (inline and AWS::IAM::Policy), rendered."""
    statements: list[dict[str, Any]] = []
    role = template["Resources"][role_id]["Properties"]
    for policy in role.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    for props in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in props.get("Roles", []):
            statements += props["PolicyDocument"]["Statement"]
    return Statements(normalized(statement) for statement in render(statements))


def normalized(statement: dict[str, Any]) -> dict[str, Any]:
    """Action and Resource always as sorted lists, so statements compare regardless of CDK's merging."""
    result = dict(statement)
    for key in ("Action", "Resource"):
        if key in result:
            value = result[key]
            result[key] = sorted(value) if isinstance(value, list) else [value]
    return result


def statement(actions: list[str], resources_: list[str], condition: Any = None) -> dict[str, Any]:
    expected: dict[str, Any] = {"Effect": "Allow", "Action": sorted(actions), "Resource": sorted(resources_)}
    if condition is not None:
        expected["Condition"] = condition
    return expected


def canonical(statements: list[dict[str, Any]]) -> list[str]:
    """What statements allow, one (effect, action, resource, condition) per line: two policies compare
    equal when they allow the same, however CDK merged their statements (minimizePolicies)."""
    return _grants(statements)


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in s["Action"]}


def state_machine_definition(template: dict[str, Any]) -> dict[str, Any]:
    """The ASL of the stack's state machine, parsed, with its references written as `${...}` text."""
    _, props = only(template, "AWS::StepFunctions::StateMachine")
    definition: dict[str, Any] = json.loads(render(props["DefinitionString"]))
    return definition


def bucket_id(template: dict[str, Any]) -> str:
    """The results bucket: the one with a lifecycle (records expire); the other holds access logs."""
    (found,) = [
        logical_id
        for logical_id, props in resources(template, "AWS::S3::Bucket").items()
        if "LifecycleConfiguration" in props
    ]
    return found


def runner_task_definition(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The load runner's task definition (its container is `runner`; the Evaluate task's is `evaluator`)."""
    (found,) = [
        (logical_id, props)
        for logical_id, props in resources(template, "AWS::ECS::TaskDefinition").items()
        if [c["Name"] for c in props["ContainerDefinitions"]] == ["runner"]
    ]
    return found
