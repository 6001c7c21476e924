"""The deployment vocabulary without AWS: names, tags, expiry, containers, secret references, needs_deploy."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmbench.config import BedrockTarget, SageMakerTarget
from fmbench.deployment import (
    MAX_NAME_CHARS,
    NAME_HASH_CHARS,
    NAME_PATTERN,
    NAME_PREFIX,
    TAG_BRANCH_ID,
    TAG_RUN_ID,
    TAG_SUITE,
    ServingContainerError,
    branch_tags,
    expires_at_text,
    parse_container,
    parse_expires_at,
    payload_format_problem,
    resource_names,
    secret_reference_problems,
)

RUN_ID = "20250101T000000Z-abc123"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:fmbench/hf-token-AbCdEf"


def target(**overrides: Any) -> SageMakerTarget:
    fields: dict[str, Any] = {
        "name": "llama",
        "platform": "sagemaker",
        "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
        "instance_type": "ml.g5.2xlarge",
        "container": "lmi",
    }
    fields.update(overrides)
    return SageMakerTarget.model_validate(fields)


# ------------------------------------------------------------------------------------------- names


def test_names_are_prefixed_valid_and_shared_by_the_three_resources() -> None:
    names = resource_names(RUN_ID, "llama-lmi-1a2b3c4d")
    assert names.model == names.endpoint_config == names.endpoint
    assert names.endpoint.startswith(NAME_PREFIX)
    assert NAME_PATTERN.match(names.endpoint)
    assert names.endpoint.startswith("fmb-20250101t000000z-abc123-llama-lmi-1a2b3c4d-")


def test_names_are_deterministic_and_differ_per_run_and_branch() -> None:
    first = resource_names(RUN_ID, "llama-lmi-1a2b3c4d")
    assert resource_names(RUN_ID, "llama-lmi-1a2b3c4d") == first
    assert resource_names(RUN_ID, "llama-tgi-1a2b3c4d").endpoint != first.endpoint
    assert resource_names("20250101T000000Z-abc124", "llama-lmi-1a2b3c4d").endpoint != first.endpoint


def test_long_ids_are_cut_to_63_characters_and_end_in_a_hash() -> None:
    long_branch = "llama-3-1-8b-instruct-lmi-ml-g5-12xlarge-" + "x" * 14 + "-1a2b3c4d"
    name = resource_names(RUN_ID, long_branch).endpoint
    # cut at 63 - len("-") - 8 hash characters, then the '-' the cut ended on is dropped
    assert name.startswith("fmb-20250101t000000z-abc123-llama-3-1-8b-instruct-lmi-")
    assert len(name) == MAX_NAME_CHARS - 1
    assert re.fullmatch(rf"fmb-[a-z0-9-]+-[0-9a-f]{{{NAME_HASH_CHARS}}}", name)
    # branches that differ only beyond the cut still get different names
    assert resource_names(RUN_ID, long_branch[:-1] + "e").endpoint != name


def test_case_and_punctuation_folded_by_the_slug_still_give_distinct_names() -> None:
    assert resource_names("Run_1", "b-1").endpoint != resource_names("run-1", "b-1").endpoint


@given(
    run_id=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    branch_id=st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True),
)
def test_every_possible_run_and_branch_id_gives_a_valid_name(run_id: str, branch_id: str) -> None:
    name = resource_names(run_id, branch_id).endpoint
    assert len(name) <= MAX_NAME_CHARS
    assert NAME_PATTERN.match(name), name
    assert name.startswith(NAME_PREFIX)


def test_branch_tags_name_suite_run_and_branch() -> None:
    tags = branch_tags(suite_name="demo", run_id=RUN_ID, branch_id="llama-lmi-1a2b3c4d")
    assert tags == {TAG_SUITE: "demo", TAG_RUN_ID: RUN_ID, TAG_BRANCH_ID: "llama-lmi-1a2b3c4d"}


def test_expiry_text_round_trips_to_the_second_and_foreign_values_are_none() -> None:
    assert expires_at_text(1_735_689_600.0) == "2025-01-01T00:00:00Z"
    assert parse_expires_at(expires_at_text(1_735_689_661.9)) == 1_735_689_661.0
    assert parse_expires_at("next tuesday") is None


# ------------------------------------------------------------------------------ what gets deployed


def test_only_a_sagemaker_target_without_an_endpoint_is_deployed() -> None:
    assert target().needs_deploy
    assert not target(endpoint_name="my-endpoint", model_source=None, container="").needs_deploy
    bedrock = BedrockTarget.model_validate({"name": "claude", "platform": "bedrock", "model_id": "m"})
    assert not bedrock.needs_deploy


def test_a_malformed_version_pin_is_rejected_without_the_sdk() -> None:
    with pytest.raises(ServingContainerError, match=r"must look like 0\.33\.0"):
        parse_container("lmi:latest-and-greatest!")


def test_payload_format_must_fit_the_container() -> None:
    assert payload_format_problem(target(container="lmi", payload_format="lmi")) is None
    assert payload_format_problem(target(container="tgi", payload_format="tgi")) is None
    assert payload_format_problem(target(container="vllm", payload_format="vllm-openai")) is None
    problem = payload_format_problem(target(container="tgi", payload_format="lmi"))
    assert problem is not None and "container tgi" in problem and "tgi" in problem.split("use one of:")[1]


# --------------------------------------------------------------------------------------- secrets


def test_a_secret_reference_must_name_a_secret_arn() -> None:
    assert secret_reference_problems({"HF_TOKEN": "secretsmanager:hf-token"}) == {
        "HF_TOKEN": "secretsmanager: must be followed by a Secrets Manager secret ARN"
    }
    assert secret_reference_problems({"HF_TOKEN": f"secretsmanager:{SECRET_ARN}"}) == {}


@pytest.mark.parametrize(
    "module", ["fmbench.deployment", "fmbench.plan", "fmbench.estimate", "fmbench.suite", "report.render"]
)
def test_planning_estimating_and_reporting_load_no_aws_sdk(module: str) -> None:
    """They use the vocabulary and run where AWS is not: a local run, the report of a saved run, cdk synth."""
    sdk = ("boto3", "botocore", "aiobotocore")
    code = f"import sys, {module}; print([m for m in {sdk!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
