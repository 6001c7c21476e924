"""Stack-wide security properties, checked over every policy of the template rather than role by role.

The per-construct tests pin each role's statements; these hold for any role a later change adds.
"""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from template_queries import function_by_handler, render, resources, role_id_of

# A SageMaker resource of the product: a model, endpoint config or endpoint named `fmb-*`, any region.
PRODUCT_SAGEMAKER_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:sagemaker:\*:\$\{AWS::AccountId\}:(model|endpoint-config|endpoint)/fmb-\*$"
)
# SageMaker actions that have no resource-level permission: IAM only accepts "*" for them.
SAGEMAKER_LIST_ACTIONS = {"sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"}
# The existing endpoint of the custom context (fmbench:existingEndpointNames), which the runner invokes.
EXISTING_ENDPOINT = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}:endpoint/my-llama31-8b-endpoint"
# The custom context's fmbench:judgeEndpoints: the Evaluate task invokes them, the Plan describes them.
JUDGE_ENDPOINTS = {
    f"arn:${{AWS::Partition}}:sagemaker:*:${{AWS::AccountId}}:endpoint/{name}"
    for name in ("my-judge-endpoint", "other-judge")
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _allow_statements(template_json: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner logical id, statement) of every Allow in identity and resource policies, rendered."""
    documents: list[tuple[str, dict[str, Any]]] = []
    for logical_id, props in resources(template_json, "AWS::IAM::Policy").items():
        documents.append((logical_id, props["PolicyDocument"]))
    for logical_id, props in resources(template_json, "AWS::IAM::Role").items():
        documents += [(logical_id, policy["PolicyDocument"]) for policy in props.get("Policies", [])]
    for resource_type in ("AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy"):
        for logical_id, props in resources(template_json, resource_type).items():
            documents.append((logical_id, props["PolicyDocument"]))
    for owner, document in documents:
        for each in render(document["Statement"]):
            assert "NotAction" not in each and "NotResource" not in each, owner
            if each["Effect"] == "Allow":
                yield owner, each


@pytest.fixture(params=["default", "custom"])
def any_template(
    request: pytest.FixtureRequest, template_json: dict[str, Any], custom_template_json: dict[str, Any]
) -> dict[str, Any]:
    return template_json if request.param == "default" else custom_template_json


def test_no_allow_grants_every_action_or_every_action_of_a_service(any_template: dict[str, Any]) -> None:
    """Denies may (the TLS-only bucket and queue policies deny `s3:*` / `sqs:*` without TLS)."""
    wildcard = re.compile(r"^(\*|[a-z0-9-]+:\*)$")

    for owner, each in _allow_statements(any_template):
        assert not [action for action in _as_list(each["Action"]) if wildcard.match(action)], owner


def test_sagemaker_is_reached_only_for_product_resources(any_template: dict[str, Any]) -> None:
    """Every SageMaker action of every role is on `fmb-*` names (create and delete further need the run-id
    tag), on an existing endpoint or judge endpoint the operator named, or is a list action, which has no
    resource."""
    found = 0
    for owner, each in _allow_statements(any_template):
        actions = {a for a in _as_list(each["Action"]) if a.startswith("sagemaker:")}
        if not actions:
            continue
        found += 1
        for resource in _as_list(each["Resource"]):
            if resource == "*":
                assert actions <= SAGEMAKER_LIST_ACTIONS, (owner, actions)
            elif resource == EXISTING_ENDPOINT:
                assert actions <= {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"}
            elif resource in JUDGE_ENDPOINTS:
                assert actions <= {
                    "sagemaker:InvokeEndpoint",
                    "sagemaker:InvokeEndpointWithResponseStream",
                    "sagemaker:DescribeEndpoint",
                }
            else:
                assert PRODUCT_SAGEMAKER_ARN.match(resource), (owner, resource)
        if actions & {"sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint"}:
            assert each["Condition"] == {"Null": {"aws:RequestTag/fmbench:run-id": "false"}}, owner
    assert found >= 10  # deploy, status, teardown, cleanup, sweeper, runner: the check saw them


def test_only_deploy_and_plan_read_secrets_and_only_those_named_fmbench(
    template_json: dict[str, Any],
) -> None:
    """Deploy reads a model's Hub token for the container; Plan reads a Hub dataset's token
    (workload.dataset.hub_token). Nothing else reads secrets, and only those named fmbench/..."""
    readers = {
        (owner, tuple(_as_list(each["Action"])), tuple(_as_list(each["Resource"])))
        for owner, each in _allow_statements(template_json)
        if any(a.startswith("secretsmanager:") for a in _as_list(each["Action"]))
    }

    def policy_of(handler: str) -> str:
        _, function = function_by_handler(template_json, handler)
        (policy,) = [
            logical_id
            for logical_id, props in resources(template_json, "AWS::IAM::Policy").items()
            if props["Roles"] == [{"Ref": role_id_of(function["Role"])}]
        ]
        return policy

    named_fmbench = ("arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:fmbench/*",)
    # ... and an ec2 branch's instance reads its hf_token_secret at boot (infra/ec2.py)
    (instance_policy,) = [
        logical_id
        for logical_id, props in resources(template_json, "AWS::IAM::Policy").items()
        if any(
            resources(template_json, "AWS::IAM::Role")[ref["Ref"]]["AssumeRolePolicyDocument"]["Statement"][
                0
            ]["Principal"]
            == {"Service": "ec2.amazonaws.com"}
            for ref in props["Roles"]
        )
    ]
    assert readers == {
        (policy_of("lambdas.deploy.handler"), ("secretsmanager:GetSecretValue",), named_fmbench),
        (policy_of("lambdas.plan.handler"), ("secretsmanager:GetSecretValue",), named_fmbench),
        (instance_policy, ("secretsmanager:GetSecretValue",), named_fmbench),
    }


def test_no_role_has_a_managed_policy(any_template: dict[str, Any]) -> None:
    roles = resources(any_template, "AWS::IAM::Role")

    assert roles
    assert {logical_id: props.get("ManagedPolicyArns") for logical_id, props in roles.items()} == {
        logical_id: None for logical_id in roles
    }
