"""cdk-nag acknowledgements of wildcard IAM resources, in the exact form cdk-nag 3 reports them."""

from collections.abc import Iterable
from typing import Any, Final

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

IAM5: str = "AwsSolutions-IAM5"
# Construct metadata naming the actions an acknowledgement of `Resource::*` was given for.
UNSCOPED_ACTIONS_METADATA: Final = "fmbench:unscoped-actions"


def acknowledge_wildcard_resources(scope: IConstruct, resources: Iterable[str], *, reason: str) -> None:
    """Acknowledge IAM5 for each wildcard resource of the policies at or below `scope`.

    cdk-nag 3 reports each wildcard resource as a finding of its own, `AwsSolutions-IAM5[Resource::<arn>]`
    with intrinsics written `<LogicalId.Attr>` / `<Ref>`, and matches acknowledgements by that exact id, so
    the id is built from the same token the policy holds. One reason per call: call once per purpose.
    `Resource::*` is not acknowledged here: it goes through `acknowledge_unscoped_actions`, which names
    the actions it is for.
    """
    for resource in resources:
        rendered = _nag_form(Stack.of(scope).resolve(resource))
        if rendered == "*":
            raise ValueError("acknowledge `*` with acknowledge_unscoped_actions, naming its actions")
        Validations.of(scope).acknowledge(Acknowledgment(id=f"{IAM5}[Resource::{rendered}]", reason=reason))


def acknowledge_unscoped_actions(scope: IConstruct, actions: Iterable[str], *, reason: str) -> None:
    """Acknowledge IAM5 `Resource::*` at `scope` (a role) for these actions, and record the actions.

    cdk-nag reports a policy's statements on `*` as one finding, `Resource::*`, whatever their actions, so
    its acknowledgement alone would let any later action on `*` through unseen. The actions are recorded
    on the construct and `unacknowledged_unscoped_actions` names every action granted on `*` that no
    acknowledgement lists (tests/infra/test_cdk_nag.py fails on any).
    """
    named = sorted(set(actions))
    if not named or any("*" in action for action in named):
        raise ValueError(f"name the exact actions granted on '*', got {named!r}")
    scope.node.add_metadata(UNSCOPED_ACTIONS_METADATA, named)
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{IAM5}[Resource::*]", reason=reason))


def unacknowledged_unscoped_actions(stack: Stack) -> list[str]:
    """`<construct path>: <action>` for every action an IAM policy of `stack` allows on `*` that no
    `acknowledge_unscoped_actions` at the policy or one of its parents names."""
    found: list[str] = []
    for construct in stack.node.find_all():
        if isinstance(construct, iam.CfnRole):
            documents = [
                stack.resolve(stack.resolve(policy).get("policyDocument"))
                for policy in stack.resolve(construct.policies) or []
            ]
        elif isinstance(construct, iam.CfnPolicy | iam.CfnManagedPolicy):
            documents = [stack.resolve(construct.policy_document)]
        else:
            continue
        acknowledged = _acknowledged_actions(construct)
        for document in documents:
            for statement in (document or {}).get("Statement", []):
                if statement.get("Effect") != "Allow" or "*" not in _as_list(statement.get("Resource")):
                    continue
                found += [
                    f"{construct.node.path}: {action}"
                    for action in _as_list(statement.get("Action"))
                    if action not in acknowledged
                ]
    return sorted(found)


def _acknowledged_actions(resource: CfnResource) -> set[str]:
    actions: set[str] = set()
    for scope in resource.node.scopes:
        for entry in scope.node.metadata:
            if entry.type == UNSCOPED_ACTIONS_METADATA:
                actions.update(entry.data)
    return actions


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _nag_form(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_nag_form(part) for part in parts)
    raise ValueError(f"cannot write {value!r} the way cdk-nag reports a resource")
