"""The Lambda functions: one image, one handler, one role and log group each; IAM scoped to their step."""

import json
import re
from typing import Any

import pytest
from template_queries import (
    actions_of,
    bucket_id,
    canonical,
    function_by_handler,
    render,
    resources,
    role_id_of,
    statement,
    statements_of_role,
)

from fmbench.cloud.settings import PlanSettings
from fmbench.config import DEFAULT_JUDGES

HANDLERS = {
    "plan": "lambdas.plan.handler",
    "deploy": "lambdas.deploy.handler",
    "endpoint_status": "lambdas.endpoint_status.handler",
    "teardown": "lambdas.teardown.handler",
    "render": "lambdas.render.handler",
    "compare": "lambdas.compare.handler",
    "cleanup": "lambdas.cleanup.handler",
    "sweeper": "lambdas.sweeper.handler",
}
SAGEMAKER = "arn:${AWS::Partition}:sagemaker:*:${AWS::AccountId}"
MODELS, CONFIGS, ENDPOINTS = (
    f"{SAGEMAKER}:{kind}/fmb-*" for kind in ("model", "endpoint-config", "endpoint")
)
XRAY = statement(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"])
DATA_CATALOG = "arn:${AWS::Partition}:athena:${AWS::Region}:${AWS::AccountId}:datacatalog/AwsDataCatalog"


def _statements(template_json: dict[str, Any], name: str) -> list[dict[str, Any]]:
    _, function = function_by_handler(template_json, HANDLERS[name])
    return statements_of_role(template_json, role_id_of(function["Role"]))


def _sagemaker_role_id(template_json: dict[str, Any]) -> str:
    (role_id,) = [
        logical_id
        for logical_id, props in resources(template_json, "AWS::IAM::Role").items()
        if props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "sagemaker.amazonaws.com"}
    ]
    return role_id


def _own_log_group_writes(template_json: dict[str, Any], name: str) -> dict[str, Any]:
    _, function = function_by_handler(template_json, HANDLERS[name])
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]
    return statement(["logs:CreateLogStream", "logs:PutLogEvents"], [f"${{{log_group_id}.Arn}}"])


def _same(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert canonical(actual) == canonical(expected)


def _without_ec2(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements without the EC2 grants of ec2 branches (pinned in test_cdk_ec2.py)."""
    kept = []
    for each in statements:
        actions = [a for a in each["Action"] if not a.startswith(("ec2:", "ssm:"))]
        to_ec2 = each.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
        if actions and to_ec2 != "ec2.amazonaws.com":
            kept.append({**each, "Action": actions})
    return kept


def test_every_function_runs_its_handler_from_the_one_lambda_image(template_json: dict[str, Any]) -> None:
    functions = resources(template_json, "AWS::Lambda::Function")
    assert len(functions) == 8

    assert sorted(f["ImageConfig"]["Command"][0] for f in functions.values()) == sorted(HANDLERS.values())
    assert {f["PackageType"] for f in functions.values()} == {"Image"}
    assert len({repr(f["Code"]["ImageUri"]) for f in functions.values()}) == 1
    assert {tuple(f["Architectures"]) for f in functions.values()} == {("x86_64",)}


@pytest.mark.parametrize(
    ("name", "memory_mib", "timeout_s"),
    [
        ("plan", 1769, 180),
        ("deploy", 512, 120),
        ("endpoint_status", 512, 30),
        ("teardown", 512, 120),
        ("render", 3008, 600),
        ("compare", 3008, 600),
        ("cleanup", 512, 300),
        ("sweeper", 512, 600),
    ],
)
def test_functions_are_sized_to_their_work(
    template_json: dict[str, Any], name: str, memory_mib: int, timeout_s: int
) -> None:
    _, function = function_by_handler(template_json, HANDLERS[name])
    assert (function["MemorySize"], function["Timeout"]) == (memory_mib, timeout_s)


def test_functions_are_traced_and_log_to_their_own_group_with_retention(
    template_json: dict[str, Any],
) -> None:
    functions = resources(template_json, "AWS::Lambda::Function").values()
    log_groups = {f["LoggingConfig"]["LogGroup"]["Ref"] for f in functions}

    assert {f["TracingConfig"]["Mode"] for f in functions} == {"Active"}
    assert len(log_groups) == 8
    assert {template_json["Resources"][g]["Properties"]["RetentionInDays"] for g in log_groups} == {30}


def test_each_function_gets_only_the_variables_its_settings_model_reads(
    template_json: dict[str, Any],
) -> None:
    bucket = f"${{{bucket_id(template_json)}}}"
    environments = {
        name: render(
            function_by_handler(template_json, handler)[1].get("Environment", {}).get("Variables", {})
        )
        for name, handler in HANDLERS.items()
    }
    (database_id,) = resources(template_json, "AWS::Glue::Database")
    (workgroup_id,) = resources(template_json, "AWS::Athena::WorkGroup")
    (state_machine_id,) = resources(template_json, "AWS::StepFunctions::StateMachine")

    assert environments == {
        # cdk.json: 60 s between status polls, at most 60 minutes of deployment, a 240-minute runner
        # timeout inside a 1440-minute execution.
        "plan": {
            "FMBENCH_RESULTS_BUCKET": bucket,
            "FMBENCH_MAX_CONCURRENT_BRANCHES": "10",
            "FMBENCH_STATUS_POLL_SECONDS": "60",
            "FMBENCH_MAX_DEPLOY_SECONDS": "3600",
            "FMBENCH_RUNNER_TIMEOUT_SECONDS": "14400",
            "FMBENCH_EXECUTION_TIMEOUT_SECONDS": "86400",
            "FMBENCH_EXISTING_ENDPOINT_NAMES": "[]",
            # The Bedrock judges the Evaluate task may invoke (the default panel's models).
            "FMBENCH_JUDGE_MODELS": json.dumps([judge["model_id"] for judge in DEFAULT_JUDGES]),
            # The existing SageMaker endpoints it may invoke as judges (none by default).
            "FMBENCH_JUDGE_ENDPOINTS": "[]",
            # The catalog whose records table gets the run's partitions.
            "FMBENCH_ATHENA_DATABASE": f"${{{database_id}}}",
            # Not a setting: huggingface_hub's cache of Hub datasets and tokenizers (the writable /tmp).
            "HF_HOME": "/tmp/huggingface",
        },
        "deploy": {
            "FMBENCH_SAGEMAKER_ROLE_ARN": f"${{{_sagemaker_role_id(template_json)}.Arn}}",
            # where ec2 branches' instances go (their values: test_cdk_ec2.py)
            **{
                name: environments["deploy"][name]
                for name in (
                    "FMBENCH_EC2_SUBNET_IDS",
                    "FMBENCH_RUNNER_SECURITY_GROUP_ID",
                    "FMBENCH_EC2_INSTANCE_PROFILE_ARN",
                )
            },
        },
        "endpoint_status": {"FMBENCH_RESULTS_BUCKET": bucket},
        "teardown": {"FMBENCH_RESULTS_BUCKET": bucket},
        "render": {
            "FMBENCH_RESULTS_BUCKET": bucket,
            "FMBENCH_ATHENA_DATABASE": f"${{{database_id}}}",
            "FMBENCH_ATHENA_WORKGROUP": f"${{{workgroup_id}}}",
        },
        "compare": {
            "FMBENCH_RESULTS_BUCKET": bucket,
            "FMBENCH_ATHENA_DATABASE": f"${{{database_id}}}",
            "FMBENCH_ATHENA_WORKGROUP": f"${{{workgroup_id}}}",
        },
        "cleanup": {},
        # The state machine does not refer to the sweeper, so this reference makes no dependency cycle.
        "sweeper": {"FMBENCH_STATE_MACHINE_ARN": f"${{{state_machine_id}}}"},
    }


def test_context_reaches_the_plans_bounds(custom_template_json: dict[str, Any]) -> None:
    _, plan = function_by_handler(custom_template_json, HANDLERS["plan"])
    variables = plan["Environment"]["Variables"]

    # 15 s polls, 30 minutes of deployment, a 60-minute runner inside a 600-minute execution.
    assert {name: value for name, value in variables.items() if name.endswith("_SECONDS")} == {
        "FMBENCH_STATUS_POLL_SECONDS": "15",
        "FMBENCH_MAX_DEPLOY_SECONDS": "1800",
        "FMBENCH_RUNNER_TIMEOUT_SECONDS": "3600",
        "FMBENCH_EXECUTION_TIMEOUT_SECONDS": "36000",
    }


def test_the_plan_knows_which_existing_endpoints_the_runner_may_invoke(
    custom_template_json: dict[str, Any],
) -> None:
    """The names the runner's role grants reach the plan's settings, which refuses any other endpoint."""
    _, plan = function_by_handler(custom_template_json, HANDLERS["plan"])
    names = plan["Environment"]["Variables"]["FMBENCH_EXISTING_ENDPOINT_NAMES"]
    # The other variables are CloudFormation references here; the plan's settings read this one as given.
    settings = PlanSettings.from_environ(
        {
            "AWS_REGION": "us-east-1",
            "FMBENCH_RESULTS_BUCKET": "results-bucket",
            "FMBENCH_MAX_CONCURRENT_BRANCHES": "1",
            "FMBENCH_EXISTING_ENDPOINT_NAMES": names,
        }
    )
    # The same list the runner's role grants (tests/infra/test_cdk_runner.py checks the grant).
    assert settings.existing_endpoint_names == ("My-Llama31-8B-Endpoint",)


def test_each_function_has_its_own_role_without_managed_policies(template_json: dict[str, Any]) -> None:
    roles = {
        role_id_of(function["Role"])
        for function in resources(template_json, "AWS::Lambda::Function").values()
    }

    assert len(roles) == 8
    for role_id in roles:
        props = template_json["Resources"][role_id]["Properties"]
        assert "ManagedPolicyArns" not in props
        assert props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "lambda.amazonaws.com"
        }


def test_deploy_may_create_tagged_product_resources_and_pass_only_the_endpoint_role(
    template_json: dict[str, Any],
) -> None:
    bucket = f"${{{bucket_id(template_json)}.Arn}}"
    sagemaker_role = f"${{{_sagemaker_role_id(template_json)}.Arn}}"

    _same(
        _without_ec2(_statements(template_json, "deploy")),
        [
            _own_log_group_writes(template_json, "deploy"),
            XRAY,
            statement(
                [
                    "sagemaker:DescribeModel",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:ListTags",
                ],
                [MODELS, CONFIGS, ENDPOINTS],
            ),
            statement(
                [
                    "sagemaker:CreateModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:AddTags",
                ],
                [MODELS, CONFIGS, ENDPOINTS],
                {"Null": {"aws:RequestTag/fmbench:run-id": "false"}},
            ),
            statement(
                ["secretsmanager:GetSecretValue"],
                ["arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:fmbench/*"],
            ),
            statement(
                ["iam:PassRole"],
                [sagemaker_role],
                {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
            statement(["s3:GetObject"], [f"{bucket}/specs/*"]),
            statement(["s3:ListBucket"], [bucket], {"StringLike": {"s3:prefix": ["specs/*"]}}),
            # an ec2 branch's Deploy writes the instance's URL into the branch's spec
            statement(["s3:PutObject", "s3:AbortMultipartUpload"], [f"{bucket}/specs/*"]),
        ],
    )


def test_teardown_may_only_describe_and_delete_product_resources_and_record_when(
    template_json: dict[str, Any],
) -> None:
    bucket = f"${{{bucket_id(template_json)}.Arn}}"
    statements = _statements(template_json, "teardown")

    assert actions_of(statements) - {"logs:CreateLogStream", "logs:PutLogEvents", *XRAY["Action"]} == {
        "sagemaker:DescribeModel",
        "sagemaker:DescribeEndpointConfig",
        "sagemaker:DescribeEndpoint",
        "sagemaker:ListTags",
        "sagemaker:DeleteEndpoint",
        "sagemaker:DeleteEndpointConfig",
        "sagemaker:DeleteModel",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        # an ec2 branch's instance and security group (test_cdk_ec2.py)
        "ec2:DescribeInstances",
        "ec2:DescribeSecurityGroups",
        "ec2:TerminateInstances",
        "ec2:DeleteSecurityGroup",
    }
    sagemaker_statements = [s for s in statements if any(a.startswith("sagemaker:") for a in s["Action"])]
    assert {tuple(s["Resource"]) for s in sagemaker_statements} == {
        tuple(sorted([MODELS, CONFIGS, ENDPOINTS]))
    }
    # teardown.json, beside the branch's outcome: nothing else in the bucket.
    assert {
        r for s in statements if any(a.startswith("s3:") for a in s["Action"]) for r in s["Resource"]
    } == {
        bucket,
        f"{bucket}/outcomes/*",
    }


def test_plan_status_and_render_touch_only_their_prefixes(template_json: dict[str, Any]) -> None:
    bucket = f"${{{bucket_id(template_json)}.Arn}}"

    plan = _statements(template_json, "plan")
    assert actions_of(plan) == {"logs:CreateLogStream", "logs:PutLogEvents", *XRAY["Action"]} | {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListBucket",
        "servicequotas:ListServiceQuotas",
        "servicequotas:ListAWSDefaultServiceQuotas",
        # Prices from the AWS Price List API (pricing.from_api).
        "pricing:GetProducts",
        # the EC2 vCPU quotas of ec2 branches
        "servicequotas:GetServiceQuota",
        "servicequotas:GetAWSDefaultServiceQuota",
        # A Hub dataset's token, from a secret named fmbench/... (workload.dataset.hub_token).
        "secretsmanager:GetSecretValue",
        # The run's partitions of the records table (fmbench.cloud.catalog).
        "glue:GetTable",
        "glue:BatchCreatePartition",
        # Whether the account may use each Bedrock judge (docs/accuracy.md, "In the cloud").
        "bedrock:GetFoundationModelAvailability",
    }
    # A report-only execution reads the plan.json of an earlier run; the plan writes specs/ and the run's
    # materialized prompts (datasets/) only.
    assert {r for s in plan if any(a.startswith("s3:Get") for a in s["Action"]) for r in s["Resource"]} == {
        f"{bucket}/specs/*",
        f"{bucket}/datasets/*",
    }
    assert {r for s in plan if "s3:PutObject" in s["Action"] for r in s["Resource"]} == {
        f"{bucket}/specs/*",
        f"{bucket}/datasets/*",
    }
    # A report-only run of an unknown run id lists its run's folder to tell "no plan" from a denied read.
    listing = {"StringLike": {"s3:prefix": ["datasets/*", "specs/*"]}}
    assert statement(["s3:ListBucket"], [bucket], listing) in plan
    # The quota check reads quota values; Service Quotas has no resource to scope listing to.
    assert (
        statement(["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"], ["*"])
        in plan
    )
    assert statement(["pricing:GetProducts"], ["*"]) in plan

    status = _statements(template_json, "endpoint_status")
    assert statement(["sagemaker:DescribeEndpoint", "sagemaker:ListTags"], [ENDPOINTS]) in status
    assert {r for s in status if "s3:PutObject" in s["Action"] for r in s["Resource"]} == {
        f"{bucket}/outcomes/*"
    }

    (database_id,) = resources(template_json, "AWS::Glue::Database")
    (records_id,) = [
        table_id
        for table_id, table in resources(template_json, "AWS::Glue::Table").items()
        if table["TableInput"]["Name"] == "records"
    ]
    (judgments_id,) = [
        table_id
        for table_id, table in resources(template_json, "AWS::Glue::Table").items()
        if table["TableInput"]["Name"] == "judgments"
    ]
    glue = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
    assert (
        statement(
            ["glue:GetTable", "glue:BatchCreatePartition"],
            [
                f"{glue}:catalog",
                f"{glue}:database/${{{database_id}}}",
                f"{glue}:table/${{{database_id}}}/${{{records_id}}}",
                f"{glue}:table/${{{database_id}}}/${{{judgments_id}}}",
            ],
        )
        in plan
    )

    render_statements = _statements(template_json, "render")
    assert not any(a.startswith(("sagemaker:", "iam:")) for a in actions_of(render_statements))
    # outcomes/: the Map's results (branch_results.json), which a report-only execution renders again;
    # runs/: the run's row of the runs table.
    assert {r for s in render_statements if "s3:PutObject" in s["Action"] for r in s["Resource"]} == {
        f"{bucket}/reports/*",
        f"{bucket}/outcomes/*",
        f"{bucket}/runs/*",
        f"{bucket}/athena-results/*",
        f"{bucket}/server_metrics/*",
    }
    # The SageMaker and Bedrock branches' CloudWatch metrics; GetMetricData has no resource to scope to.
    assert statement(["cloudwatch:GetMetricData"], ["*"]) in render_statements
    # Listing the bucket lets render tell a branch without an outcome (404) from a denied read (403).
    assert statement(["s3:ListBucket"], [bucket]) in render_statements
    # Render starts the TTFT query itself: what Athena needs of its caller under Lake Formation too.
    assert statement(["athena:GetDataCatalog"], [DATA_CATALOG]) in render_statements
    assert statement(["lakeformation:GetDataAccess"], ["*"]) in render_statements

    compare = _statements(template_json, "compare")
    assert not any(a.startswith(("sagemaker:", "iam:", "glue:BatchCreate")) for a in actions_of(compare))
    # The comparison beside the report, and the run's row again with the verdict.
    assert {r for s in compare if "s3:PutObject" in s["Action"] for r in s["Resource"]} == {
        f"{bucket}/reports/*",
        f"{bucket}/runs/*",
        f"{bucket}/athena-results/*",
    }
    # Athena reads both runs' records and the runs table (the latest baseline) as the caller.
    assert {r for s in compare if "s3:GetObject" in s["Action"] for r in s["Resource"]} >= {
        f"{bucket}/records/*",
        f"{bucket}/runs/*",
        f"{bucket}/specs/*",
        f"{bucket}/reports/*",
    }


def test_sagemaker_endpoints_role_pulls_images_and_writes_endpoint_logs_and_metrics_only(
    template_json: dict[str, Any],
) -> None:
    role_id = _sagemaker_role_id(template_json)
    logs = "arn:${AWS::Partition}:logs:*:${AWS::AccountId}:log-group:/aws/sagemaker/Endpoints/fmb-*"

    _same(
        statements_of_role(template_json, role_id),
        [
            statement(["ecr:GetAuthorizationToken"], ["*"]),
            statement(
                ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                ["arn:${AWS::Partition}:ecr:*:*:repository/*"],
            ),
            statement(
                [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                [logs, f"{logs}:log-stream:*"],
            ),
            # The endpoint's instance metrics, in SageMaker's endpoint namespace only.
            statement(
                ["cloudwatch:PutMetricData"],
                ["*"],
                {
                    "StringLike": {
                        "cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "/aws/sagemaker/Endpoints/*"]
                    }
                },
            ),
        ],
    )


def test_model_artifact_buckets_from_context_are_readable_by_the_endpoints(
    custom_template_json: dict[str, Any],
) -> None:
    statements = statements_of_role(custom_template_json, _sagemaker_role_id(custom_template_json))

    assert statement(["s3:GetObject"], ["arn:${AWS::Partition}:s3:::my-model-artifacts/*"]) in statements
    assert statement(["s3:ListBucket"], ["arn:${AWS::Partition}:s3:::my-model-artifacts"]) in statements


def test_no_policy_grants_every_action_or_every_action_of_a_service(template_json: dict[str, Any]) -> None:
    wildcard = re.compile(r"^(\*|[a-z0-9-]+:\*)$")
    for policy_id, policy in resources(template_json, "AWS::IAM::Policy").items():
        for each in policy["PolicyDocument"]["Statement"]:
            actions = each["Action"] if isinstance(each["Action"], list) else [each["Action"]]
            assert not [a for a in actions if wildcard.match(a)], policy_id
            assert each["Effect"] == "Allow"


def test_iam_pass_role_names_its_roles_and_only_the_deploy_function_passes_the_endpoint_role(
    template_json: dict[str, Any],
) -> None:
    sagemaker_role = f"${{{_sagemaker_role_id(template_json)}.Arn}}"
    passes = {
        policy_id: [s for s in render(policy["PolicyDocument"]["Statement"]) if "iam:PassRole" in s["Action"]]
        for policy_id, policy in resources(template_json, "AWS::IAM::Policy").items()
    }
    passes = {policy_id: found for policy_id, found in passes.items() if found}

    assert all(s["Resource"] != "*" for found in passes.values() for s in found)
    passing_sagemaker_role = [
        policy_id
        for policy_id, found in passes.items()
        if any(
            sagemaker_role in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
            for s in found
        )
    ]
    (deploy_role,) = [
        role_id_of(f["Role"])
        for f in resources(template_json, "AWS::Lambda::Function").values()
        if f["ImageConfig"]["Command"] == [HANDLERS["deploy"]]
    ]
    assert [template_json["Resources"][p]["Properties"]["Roles"] for p in passing_sagemaker_role] == [
        [{"Ref": deploy_role}]
    ]
