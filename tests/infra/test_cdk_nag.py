"""cdk-nag AwsSolutions: the stack has no unacknowledged finding, and the check is known to bite."""

import re

from aws_cdk import App, Stack, Stage, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.app import BuiltApp
from infra.nag import (
    UNSCOPED_ACTIONS_METADATA,
    acknowledge_unscoped_actions,
    acknowledge_wildcard_resources,
    unacknowledged_unscoped_actions,
)

# Every acknowledged finding as (construct path, rule id). Adding one is a reviewed change to this set.
# All are IAM5 (wildcard resources), each for one resource: key prefixes of the results bucket, the
# product's `fmb-` SageMaker names, Bedrock model families, the executions of this stack's state machine,
# and `*` for the actions that have no resource at all (X-Ray; Service Quotas and SageMaker listing; ECR
# tokens; Lake Formation; metrics), which cdk-nag reports as one finding per policy whatever its actions,
# so those actions are pinned one by one in _UNSCOPED_ACTIONS.
# Hashed logical ids are written without their hash (`<StorageResultsBucket.Arn>`).
BUCKET = "<StorageResultsBucket.Arn>"
SAGEMAKER = "arn:<AWS::Partition>:sagemaker:*:<AWS::AccountId>"
SAGEMAKER_ARNS = {f"{SAGEMAKER}:{kind}/fmb-*" for kind in ("model", "endpoint-config", "endpoint")}
EXECUTIONS = (
    "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<WorkflowStateMachine.Name>:*"
)
ENDPOINT_LOGS = "arn:<AWS::Partition>:logs:*:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/fmb-*"
_WILDCARDS: dict[str, set[str]] = {
    "Runner/TaskDefinition/TaskRole": {
        f"{SAGEMAKER}:endpoint/fmb-*",
        "arn:<AWS::Partition>:bedrock:*::foundation-model/*",
        "arn:<AWS::Partition>:bedrock:*:<AWS::AccountId>:inference-profile/*",
        f"{BUCKET}/specs/*",
        f"{BUCKET}/records/*",
        f"{BUCKET}/outcomes/*",
        f"{BUCKET}/datasets/*",
        f"{BUCKET}/server_metrics/*",
    },
    "Runner/TaskDefinition/ExecutionRole": {"*"},
    # The Evaluate task: the default judge models by id (foundation model in any region, this account's
    # inference profile), the run's inputs and its evaluations/.
    "Evaluator/TaskDefinition/TaskRole": {
        *(
            arn
            for model in (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "meta.llama3-3-70b-instruct-v1:0",
                "amazon.nova-pro-v1:0",
            )
            for arn in (
                f"arn:<AWS::Partition>:bedrock:*::foundation-model/{model}",
                f"arn:<AWS::Partition>:bedrock:*:<AWS::AccountId>:inference-profile/us.{model}",
            )
        ),
        *(f"{BUCKET}/{prefix}/*" for prefix in ("specs", "records", "datasets", "evaluations", "outcomes")),
    },
    "Evaluator/TaskDefinition/ExecutionRole": {"*"},
    "Functions/SageMakerExecutionRole": {
        "*",
        "arn:<AWS::Partition>:ecr:*:*:repository/*",
        ENDPOINT_LOGS,
        f"{ENDPOINT_LOGS}:log-stream:*",
    },
    "Functions/PlanRole": {
        "*",
        f"{BUCKET}/specs/*",
        f"{BUCKET}/datasets/*",
        "arn:<AWS::Partition>:secretsmanager:*:<AWS::AccountId>:secret:fmbench/*",
    },
    "Functions/DeployRole": {
        "*",
        *SAGEMAKER_ARNS,
        "arn:<AWS::Partition>:secretsmanager:*:<AWS::AccountId>:secret:fmbench/*",
        f"{BUCKET}/specs/*",
    },
    "Functions/EndpointStatusRole": {"*", f"{SAGEMAKER}:endpoint/fmb-*", f"{BUCKET}/outcomes/*"},
    "Functions/TeardownRole": {"*", *SAGEMAKER_ARNS, f"{BUCKET}/outcomes/*"},
    "Functions/RenderRole": {
        "*",
        *(
            f"{BUCKET}/{prefix}/*"
            for prefix in (
                "specs",
                "outcomes",
                "reports",
                "records",
                "runs",
                "athena-results",
                "server_metrics",
                "evaluations",
            )
        ),
    },
    "Functions/CompareRole": {
        "*",
        *(
            f"{BUCKET}/{prefix}/*"
            for prefix in ("specs", "reports", "records", "runs", "athena-results", "evaluations")
        ),
    },
    "Cleanup/CleanupRole": {"*", *SAGEMAKER_ARNS, EXECUTIONS},
    "Cleanup/SweeperRole": {"*", *SAGEMAKER_ARNS, EXECUTIONS},
    "Workflow/StateMachine/Role": {
        "*",
        *(
            f"<Functions{name}.Arn>:*"
            for name in ("Plan", "Deploy", "EndpointStatus", "Teardown", "Render", "Compare")
        ),
        f"{BUCKET}/records/*",
        f"{BUCKET}/runs/*",
        f"{BUCKET}/evaluations/*",
        f"{BUCKET}/athena-results/*",
    },
}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
SAGEMAKER_LISTING = {"sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"}
# Per role, every action it is allowed on `*`; an action on `*` outside this map fails the test below.
_UNSCOPED_ACTIONS: dict[str, set[str]] = {
    "Runner/TaskDefinition/ExecutionRole": {"ecr:GetAuthorizationToken"},
    "Evaluator/TaskDefinition/ExecutionRole": {"ecr:GetAuthorizationToken"},
    "Functions/SageMakerExecutionRole": {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"},
    "Functions/PlanRole": {
        *XRAY,
        "servicequotas:ListServiceQuotas",
        "servicequotas:ListAWSDefaultServiceQuotas",
        "pricing:GetProducts",
        "bedrock:GetFoundationModelAvailability",
    },
    "Functions/DeployRole": XRAY,
    "Functions/EndpointStatusRole": XRAY,
    "Functions/TeardownRole": XRAY,
    "Functions/RenderRole": {*XRAY, "lakeformation:GetDataAccess", "cloudwatch:GetMetricData"},
    "Functions/CompareRole": {*XRAY, "lakeformation:GetDataAccess"},
    "Cleanup/CleanupRole": {*XRAY, *SAGEMAKER_LISTING},
    "Cleanup/SweeperRole": {*XRAY, *SAGEMAKER_LISTING},
    "Workflow/StateMachine/Role": {
        *XRAY,
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "lakeformation:GetDataAccess",
    },
}
# ec2 branches (infra/ec2.py): the instances' role, and tag-scoped EC2 grants on the functions' roles.
EC2 = "arn:<AWS::Partition>:ec2:*:<AWS::AccountId>"
EC2_TERMINATED = {f"{EC2}:instance/*", f"{EC2}:security-group/*"}
EC2_LAUNCHED = {
    *EC2_TERMINATED,
    f"{EC2}:volume/*",
    "arn:<AWS::Partition>:ec2:*::image/*",
    *(f"{EC2}:{kind}/*" for kind in ("image", "subnet", "network-interface", "vpc")),
    "arn:<AWS::Partition>:ssm:*::parameter/aws/service/*",
}
EC2_DESCRIBE = {"ec2:DescribeInstances", "ec2:DescribeSecurityGroups"}
_WILDCARDS["Ec2/InstanceRole"] = {
    "*",
    "arn:<AWS::Partition>:secretsmanager:*:<AWS::AccountId>:secret:fmbench/*",
    "arn:<AWS::Partition>:ecr:*:*:repository/*",
}
_WILDCARDS["Functions/DeployRole"] |= EC2_LAUNCHED
for _path in ("Functions/TeardownRole", "Cleanup/CleanupRole", "Cleanup/SweeperRole"):
    _WILDCARDS[_path] |= EC2_TERMINATED
    _UNSCOPED_ACTIONS[_path] = _UNSCOPED_ACTIONS[_path] | EC2_DESCRIBE
_UNSCOPED_ACTIONS["Ec2/InstanceRole"] = {"ecr:GetAuthorizationToken"}
_UNSCOPED_ACTIONS["Functions/PlanRole"] = _UNSCOPED_ACTIONS["Functions/PlanRole"] | {
    "servicequotas:GetServiceQuota",
    "servicequotas:GetAWSDefaultServiceQuota",
}
_UNSCOPED_ACTIONS["Functions/DeployRole"] = XRAY | EC2_DESCRIBE | {"ec2:DescribeImages"}
_UNSCOPED_ACTIONS["Functions/EndpointStatusRole"] = XRAY | EC2_DESCRIBE
EXPECTED_ACKNOWLEDGEMENTS: set[tuple[str, str]] = {
    (f"FmbenchFlow/{path}", f"AwsSolutions-IAM5[Resource::{resource}]")
    for path, resources in _WILDCARDS.items()
    for resource in resources
}
_LOGICAL_ID_HASH = re.compile(r"<([A-Za-z0-9]+?)[0-9A-F]{8}((?:\.[A-Za-z]+)?)>")
# CDK records where an acknowledgement applies ("Annotation::AwsSolutions-IAM5[...]"); the prefix is dropped.
_SOURCE = re.compile(r"^(?:Annotation|AwsSolutions)::")
# aws-cdk-lib acknowledges some of CDK's own CloudFormation validation rules itself (W3010 on any stack that
# reads its availability zones, F3002/F3003 on a VPC flow log): the library's, not this app's, not pinned.
_LIBRARY_OWN = "CloudFormation-Validate::"
PLACEHOLDER_REASONS = {"todo", "tbd", "n/a", "na", "none", "ignore", "suppressed", "fixme", "test"}


def _findings(stack: Stack) -> list[str]:
    report = AwsSolutionsChecks().validate_scope(stack)
    return [
        f"{violation.rule_name} ({violation.severity}) at "
        + ", ".join(str(r.construct_path or r.resource_logical_id) for r in violation.violating_resources)
        for violation in report.violations
    ]


def test_no_aws_solutions_findings(built: BuiltApp) -> None:
    """Runs the pack directly (no synth) so a failure names each finding instead of erroring a fixture."""
    assert _findings(built.stack) == []


def test_no_errors_or_warnings_annotated(built: BuiltApp, template: Template) -> None:
    """cdk-nag 3 reports through CDK policy validation (which the `template` fixture's synth already
    ran, failing on any finding), not annotations; the annotation channel is checked as well so that
    neither a v2-style nag report nor any other CDK error or warning (deprecations, misconfigurations)
    slips through, and `cdk synth --strict` stays green.
    """
    annotations = Annotations.from_stack(built.stack)
    nag_rule = Match.string_like_regexp("AwsSolutions-.*")

    assert annotations.find_error("*", nag_rule) == []
    assert annotations.find_warning("*", nag_rule) == []
    assert annotations.find_error("*", Match.any_value()) == []
    assert annotations.find_warning("*", Match.any_value()) == []


def test_checker_reports_a_noncompliant_bucket() -> None:
    """Guards against an empty-findings result that only means the checker did not run."""
    stack = Stack(App(), "Canary")
    s3.Bucket(stack, "Plain")

    findings = _findings(stack)

    assert any(f.startswith("AwsSolutions-S1 ") for f in findings), findings
    assert any(f.startswith("AwsSolutions-S10 ") for f in findings), findings


def test_acknowledgements_are_scoped_to_resources_and_explained(built: BuiltApp) -> None:
    acknowledged: set[tuple[str, str]] = set()
    for construct in built.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            for rule_id, reason in entry.data.items():
                if rule_id.startswith(_LIBRARY_OWN):
                    continue
                assert not isinstance(construct, Stack | Stage), (
                    f"{construct.node.path}: acknowledge on the resource, not the whole stack or app"
                )
                assert len(reason) >= 40 and reason.strip().lower() not in PLACEHOLDER_REASONS, (
                    f"{construct.node.path} {rule_id}: reason must say why the finding does not apply"
                )
                acknowledged.add(
                    (construct.node.path, _LOGICAL_ID_HASH.sub(r"<\1\2>", _SOURCE.sub("", rule_id)))
                )

    assert acknowledged == EXPECTED_ACKNOWLEDGEMENTS


def test_actions_on_every_resource_are_the_acknowledged_ones(built: BuiltApp) -> None:
    """cdk-nag's `Resource::*` finding does not say which actions a role holds on `*`: each
    acknowledgement names them, every action on `*` in the template is one of those, and the named
    actions are pinned here per role."""
    acknowledged: dict[str, set[str]] = {}
    for construct in built.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == UNSCOPED_ACTIONS_METADATA:
                path = construct.node.path.removeprefix("FmbenchFlow/")
                acknowledged.setdefault(path, set()).update(entry.data)

    assert unacknowledged_unscoped_actions(built.stack) == []
    assert acknowledged == _UNSCOPED_ACTIONS


def test_a_new_wildcard_on_an_acknowledged_role_is_a_finding() -> None:
    """Acknowledgements name one resource pattern or the actions on `*`: a wildcard added beside them
    (another key prefix, a wildcard action, another action on `*`) is reported, by cdk-nag or by the
    check of actions on `*`."""
    stack = Stack(App(), "Canary")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::bucket/specs/*"])
    )
    role.add_to_principal_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
    acknowledge_wildcard_resources(role, ["arn:aws:s3:::bucket/specs/*"], reason="x" * 40)
    acknowledge_unscoped_actions(role, ["ecr:GetAuthorizationToken"], reason="x" * 40)
    assert (_findings(stack), unacknowledged_unscoped_actions(stack)) == ([], [])

    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::bucket/records/*"])
    )
    role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:Get*"], resources=["arn:aws:s3:::bucket"]))
    role.add_to_principal_policy(iam.PolicyStatement(actions=["ecr:BatchGetImage"], resources=["*"]))

    rule_ids = {violation.rule_name for violation in AwsSolutionsChecks().validate_scope(stack).violations}
    assert rule_ids == {
        "AwsSolutions-IAM5[Resource::arn:aws:s3:::bucket/records/*]",
        "AwsSolutions-IAM5[Action::s3:Get*]",
    }
    # cdk-nag's `Resource::*` finding is already acknowledged: only the action check sees this one.
    assert unacknowledged_unscoped_actions(stack) == ["Canary/Role/DefaultPolicy/Resource: ecr:BatchGetImage"]
