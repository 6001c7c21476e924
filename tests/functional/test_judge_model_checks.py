"""The cloud Plan's check of the judges, before anything is deployed: a Bedrock judge
(fmbench.cloud.checks.judge_model_problems) allowed by the stack's fmbench:judgeModels and available to the
account in the judge's own region, asked of real botocore's Bedrock client against the emulator's
GetFoundationModelAvailability route on 127.0.0.1; a SageMaker judge (judge_endpoint_problems) allowed by the
stack's fmbench:judgeEndpoints and InService, asked of moto's SageMaker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fmbench.cloud.catalog import JUDGMENTS_TABLE, partition_inputs
from fmbench.cloud.checks import judge_endpoint_problems, judge_model_problems
from fmbench.cloud.steps import regional_clients
from fmbench.config import DEFAULT_JUDGES
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.suite import validate_suite_data

DEFAULT_IDS = tuple(judge["model_id"] for judge in DEFAULT_JUDGES)
UNAVAILABLE = "meta.llama3-3-70b-instruct-v1:0"  # the second default judge's model


@pytest.fixture(scope="module")
def bedrock() -> Iterator[Any]:
    settings = EmulatorSettings(
        port=0, unavailable_models=(UNAVAILABLE,), ttft_ms=1, itl_ms=1, output_tokens=8
    )
    with EmulatorProcess(settings) as emulator:
        yield boto3.client(
            "bedrock",
            region_name="us-east-1",
            endpoint_url=emulator.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def judged(tmp_path: Path, judges: list[dict[str, Any]]) -> Any:
    rows = [{"id": f"q{i}", "question": f"What is {i}?", "answer": str(i)} for i in range(4)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = {
        "name": "judged",
        "targets": [
            {"name": "t", "platform": "openai", "endpoint_url": "http://127.0.0.1:9/v1", "model": "m"}
        ],
        "workload": {
            "dataset": {"source": "qa.jsonl", "ground_truth": "answer"},
            "prompt_template": "{question}",
            "bins": [{"min_tokens": 1, "max_tokens": 100}],
        },
        "load": {"concurrency": [1], "requests_per_level": 2},
        "slo": {"p95_latency_s": 5.0},
        "evaluation": {"judges": judges},
    }
    return validate_suite_data(data, base_dir=tmp_path)


def test_default_judges_are_allowed_and_those_the_account_may_use_pass(tmp_path: Path, bedrock: Any) -> None:
    suite = judged(
        tmp_path, [{"name": "a", "model_id": DEFAULT_IDS[0]}, {"name": "c", "model_id": DEFAULT_IDS[2]}]
    )
    assert judge_model_problems(suite, DEFAULT_IDS, lambda region: bedrock) == []
    # An inference profile id allows its foundation model, called directly.
    direct = judged(tmp_path, [{"name": "a", "model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"}])
    assert judge_model_problems(direct, DEFAULT_IDS, lambda region: bedrock) == []


def test_a_judge_outside_the_stacks_models_or_without_access_is_named_by_its_field(
    tmp_path: Path, bedrock: Any
) -> None:
    suite = judged(
        tmp_path,
        [
            {"name": "a", "model_id": DEFAULT_IDS[0]},
            {"name": "b", "model_id": DEFAULT_IDS[1]},  # its model is not available to the account
            {
                "name": "c",
                "target": {"name": "c", "platform": "bedrock", "model_id": "amazon.nova-lite-v1:0"},
            },
        ],
    )
    problems = [str(problem) for problem in judge_model_problems(suite, DEFAULT_IDS, lambda region: bedrock)]
    assert len(problems) == 2
    assert problems[0].startswith(
        f"evaluation.judges.1.model_id: {DEFAULT_IDS[1]} is not available to the account ({UNAVAILABLE}: "
        "authorization NOT_AUTHORIZED, entitlement NOT_AVAILABLE)"
    )
    assert problems[1].startswith(
        "evaluation.judges.2.target.model_id: amazon.nova-lite-v1:0 is not allowed by the stack's judge "
        "models (fmbench:judgeModels: "
    )
    # Without the stack's list (an older stack) only availability is asked.
    assert len(judge_model_problems(suite, None, lambda region: bedrock)) == 1


def test_judgment_partitions_point_at_each_branchs_evaluations_folder() -> None:
    inputs = partition_inputs({"Columns": []}, "s3://bucket", "run-1", ["a-1", "b-2"], JUDGMENTS_TABLE)
    assert [(i["Values"], i["StorageDescriptor"]["Location"]) for i in inputs] == [
        (["run-1", "a-1"], "s3://bucket/evaluations/run_id=run-1/branch_id=a-1/"),
        (["run-1", "b-2"], "s3://bucket/evaluations/run_id=run-1/branch_id=b-2/"),
    ]


# ----------------------------------------------------------------------------------- judges' regions

OTHER_REGION = "eu-west-1"


@pytest.fixture(scope="module")
def bedrock_everywhere_available() -> Iterator[str]:
    """Bedrock's control plane of the stack's region: every model available."""
    settings = EmulatorSettings(port=0, ttft_ms=1, itl_ms=1, output_tokens=8)
    with EmulatorProcess(settings) as emulator:
        yield emulator.url


def test_each_bedrock_judge_is_checked_in_its_own_region(
    tmp_path: Path, bedrock: Any, bedrock_everywhere_available: str
) -> None:
    """The stack's region answers 'available' for every model; the other region (where the second judge
    says it runs) does not have the llama model: only that judge is refused, and it is asked there."""
    asked: list[str | None] = []
    in_stack_region = boto3.client(
        "bedrock",
        region_name="us-east-1",
        endpoint_url=bedrock_everywhere_available,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def bedrock_for(region: str | None) -> Any:
        asked.append(region)
        return bedrock if region == OTHER_REGION else in_stack_region

    suite = judged(
        tmp_path,
        [
            {"name": "a", "model_id": DEFAULT_IDS[1]},  # the stack's region: available there
            {"name": "b", "model_id": DEFAULT_IDS[1], "region": OTHER_REGION},  # not available there
        ],
    )
    problems = [str(problem) for problem in judge_model_problems(suite, DEFAULT_IDS, bedrock_for)]

    assert asked == [None, OTHER_REGION]
    assert problems == [
        f"evaluation.judges.1.model_id: {DEFAULT_IDS[1]} is not available to the account ({UNAVAILABLE}: "
        f"authorization NOT_AUTHORIZED, entitlement NOT_AVAILABLE); request model access in the Bedrock "
        f"console in {OTHER_REGION}"
    ]


def test_the_plan_makes_one_client_per_judge_region() -> None:
    made: list[tuple[str, str]] = []

    def factory(service: str, region: str) -> Any:
        made.append((service, region))
        return object()

    bedrock_for = regional_clients(factory, "bedrock", "us-east-1")
    assert bedrock_for is not None
    first = bedrock_for(None)
    assert bedrock_for("us-east-1") is first  # the stack's region, named or not: one client
    assert bedrock_for(OTHER_REGION) is not first
    assert bedrock_for(OTHER_REGION) is bedrock_for(OTHER_REGION)
    assert made == [("bedrock", "us-east-1"), ("bedrock", OTHER_REGION)]
    assert regional_clients(None, "bedrock", "us-east-1") is None


# ---------------------------------------------------------------------------------- SageMaker judges

JUDGE_ENDPOINT = "Judge-Endpoint"


@pytest.fixture
def sagemaker_judge_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An InService endpoint in us-east-1 (moto), and nothing in any other region."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        sagemaker.create_model(
            ModelName="judge-model",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/judge:1"},
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName="judge-config",
            ProductionVariants=[
                {
                    "VariantName": "main",
                    "ModelName": "judge-model",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.g4dn.xlarge",
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=JUDGE_ENDPOINT, EndpointConfigName="judge-config")
        yield


def sagemaker_judge(name: str, endpoint_name: str, region: str | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {"name": name, "platform": "sagemaker", "endpoint_name": endpoint_name}
    if region is not None:
        target["region"] = region
    return {"name": name, "target": target}


def test_a_sagemaker_judge_must_be_a_stack_judge_endpoint_in_service_in_its_region(
    tmp_path: Path, sagemaker_judge_endpoint: None
) -> None:
    asked: list[str | None] = []

    def sagemaker_for(region: str | None) -> Any:
        asked.append(region)
        return boto3.client("sagemaker", region_name=region or "us-east-1")

    allowed = ("judge-endpoint", "missing-judge")  # names compare without case, as in the endpoint's ARN
    ok = judged(tmp_path, [sagemaker_judge("a", JUDGE_ENDPOINT)])
    assert judge_endpoint_problems(ok, allowed, sagemaker_for) == []

    suite = judged(
        tmp_path,
        [
            sagemaker_judge("a", JUDGE_ENDPOINT),
            sagemaker_judge("b", "not-listed"),
            sagemaker_judge("c", "missing-judge"),
            sagemaker_judge("d", JUDGE_ENDPOINT, region="us-west-2"),  # it exists in us-east-1 only
            {"name": "e", "model_id": DEFAULT_IDS[0]},  # a Bedrock judge: not this check's business
        ],
    )
    asked.clear()
    problems = [str(problem) for problem in judge_endpoint_problems(suite, allowed, sagemaker_for)]

    assert problems == [
        "evaluation.judges.1.target.endpoint_name: not-listed is not allowed by the stack's judge endpoints "
        "(fmbench:judgeEndpoints: judge-endpoint, missing-judge); add it there and deploy the stack again",
        "evaluation.judges.2.target.endpoint_name: endpoint missing-judge does not exist in the stack's "
        "region (judges are not deployed: create it first)",
        f"evaluation.judges.3.target.endpoint_name: endpoint {JUDGE_ENDPOINT} does not exist in us-west-2 "
        "(judges are not deployed: create it first)",
    ]
    assert asked == [None, None, "us-west-2"]  # the disallowed one is not even described
    # An older stack (no list): only whether each endpoint is in service is asked.
    assert len(judge_endpoint_problems(suite, None, sagemaker_for)) == 3
    # Without clients (no AWS access), only the list.
    assert len(judge_endpoint_problems(suite, allowed, None)) == 1
