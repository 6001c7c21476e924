"""cdk-nag acknowledgements of wildcard IAM resources, in the exact form cdk-nag 3 reports them."""

from collections.abc import Iterable
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

IAM5: str = "AwsSolutions-IAM5"


def acknowledge_wildcard_resources(scope: IConstruct, resources: Iterable[str], *, reason: str) -> None:
    """Acknowledge IAM5 for each wildcard resource of the policies at or below `scope`.

    cdk-nag 3 reports each wildcard resource as a finding of its own, `AwsSolutions-IAM5[Resource::<arn>]`
    with intrinsics written `<LogicalId.Attr>` / `<Ref>`, and matches acknowledgements by that exact id, so
    the id is built from the same token the policy holds. One reason per call: call once per purpose.
    """
    for resource in resources:
        rendered = _nag_form(Stack.of(scope).resolve(resource))
        Validations.of(scope).acknowledge(Acknowledgment(id=f"{IAM5}[Resource::{rendered}]", reason=reason))


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
