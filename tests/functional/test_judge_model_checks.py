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

from fmbench.cloud.catalog import JUDGMENTS_TABLE, partition_inputs
from fmbench.cloud.checks import judge_model_problems
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
