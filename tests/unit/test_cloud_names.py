"""SageMaker names, serving-container images and container environments of deployed branches (no AWS)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmbench.cloud.sagemaker import (
    MAX_NAME_CHARS,
    NAME_HASH_CHARS,
    NAME_PATTERN,
    NAME_PREFIX,
    SecretReferenceError,
    ServingContainerError,
    parse_container,
    payload_format_problem,
    plan_deployment,
    resolve_environment,
    resolve_image_uri,
    resource_names,
    secret_reference_problems,
)
from fmbench.config import SageMakerTarget

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


# -------------------------------------------------------------------------------------- image URIs


@pytest.mark.parametrize(
    ("container", "instance_type", "region", "expected"),
    [
        (
            "lmi",
            "ml.g5.2xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128",
        ),
        (
            "lmi",
            "ml.g5.2xlarge",
            "eu-central-1",
            "763104351884.dkr.ecr.eu-central-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128",
        ),
        (
            "djl",
            "ml.g5.2xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128",
        ),
        (
            "lmi:0.31.0",
            "ml.g5.12xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124",
        ),
        (
            "tgi",
            "ml.g5.2xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:"
            "2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04",
        ),
        (
            "vllm",
            "ml.g5.2xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.30.0-gpu-py312-cu130-ubuntu24.04-sagemaker",
        ),
        (
            "tei",
            "ml.g5.2xlarge",
            "eu-central-1",
            "492215442770.dkr.ecr.eu-central-1.amazonaws.com/tei:2.0.1-tei1.8.2-gpu-py310-cu122-ubuntu22.04",
        ),
        (
            "neuron",
            "ml.inf2.xlarge",
            "us-east-1",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1",
        ),
    ],
)
def test_containers_resolve_to_their_images_offline(
    container: str, instance_type: str, region: str, expected: str
) -> None:
    assert resolve_image_uri(target(container=container, instance_type=instance_type), region) == expected


def test_an_explicit_image_uri_wins_over_the_container() -> None:
    image = "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-trtllm:1"
    assert resolve_image_uri(target(container="my-own-label", image_uri=image), "us-east-1") == image


def test_an_unknown_container_is_named_with_the_known_ones() -> None:
    with pytest.raises(ServingContainerError) as caught:
        resolve_image_uri(target(container="triton"), "us-east-1")
    assert caught.value.field == "container"
    assert "unknown container 'triton'" in str(caught.value)
    assert "lmi, tgi, vllm, tei, neuron" in str(caught.value)


def test_a_version_the_sdk_does_not_know_is_an_error_on_the_container_field() -> None:
    with pytest.raises(ServingContainerError) as caught:
        resolve_image_uri(target(container="lmi:9.9.9"), "us-east-1")
    assert caught.value.field == "container"
    assert "version 9.9.9" in str(caught.value)


def test_a_malformed_version_pin_is_rejected_without_the_sdk() -> None:
    with pytest.raises(ServingContainerError, match=r"must look like 0\.33\.0"):
        parse_container("lmi:latest-and-greatest!")


# ------------------------------------------------------------------------- formats and environment


def test_payload_format_must_fit_the_container() -> None:
    assert payload_format_problem(target(container="lmi", payload_format="lmi")) is None
    assert payload_format_problem(target(container="tgi", payload_format="tgi")) is None
    assert payload_format_problem(target(container="vllm", payload_format="vllm-openai")) is None
    problem = payload_format_problem(target(container="tgi", payload_format="lmi"))
    assert problem is not None and "container tgi" in problem and "tgi" in problem.split("use one of:")[1]


def test_tgi_shards_over_every_gpu_and_the_suite_environment_wins() -> None:
    deployment = plan_deployment(
        target(container="tgi", instance_type="ml.g5.12xlarge", environment={"MAX_TOTAL_TOKENS": "8192"}),
        "us-east-1",
    )
    assert deployment.region == "us-east-1"
    assert deployment.environment == {
        "HF_MODEL_ID": "meta-llama/Llama-3.1-8B-Instruct",
        "SM_NUM_GPUS": "4",
        "MAX_TOTAL_TOKENS": "8192",
    }
    overridden = plan_deployment(
        target(container="tgi", instance_type="ml.g5.12xlarge", environment={"SM_NUM_GPUS": "2"}), "us-east-1"
    )
    assert overridden.environment["SM_NUM_GPUS"] == "2"


def test_vllm_reads_its_own_variables_and_s3_models_are_mounted() -> None:
    deployment = plan_deployment(
        target(
            container="vllm",
            payload_format="vllm-openai",
            region="eu-west-1",
            model_source={"model_data_s3_uri": "s3://models/llama/"},
        ),
        "us-east-1",
    )
    assert deployment.region == "eu-west-1"
    assert deployment.image_uri.startswith("763104351884.dkr.ecr.eu-west-1.amazonaws.com/vllm:")
    assert deployment.environment == {"SM_VLLM_MODEL": "/opt/ml/model", "SM_VLLM_TENSOR_PARALLEL_SIZE": "1"}


def test_secret_references_are_resolved_only_when_the_model_is_created() -> None:
    environment = {"HF_TOKEN": f"secretsmanager:{SECRET_ARN}", "OPTION_MAX_MODEL_LEN": "8192"}
    deployment = plan_deployment(target(environment=environment), "us-east-1")
    assert deployment.environment["HF_TOKEN"] == f"secretsmanager:{SECRET_ARN}"
    resolved = resolve_environment(deployment.environment, {SECRET_ARN: "hf_secret"}.__getitem__)
    assert resolved["HF_TOKEN"] == "hf_secret"
    assert resolved["OPTION_MAX_MODEL_LEN"] == "8192"
    with pytest.raises(SecretReferenceError, match="HF_TOKEN"):
        resolve_environment(deployment.environment, None)


def test_a_secret_reference_must_name_a_secret_arn() -> None:
    assert secret_reference_problems({"HF_TOKEN": "secretsmanager:hf-token"}) == {
        "HF_TOKEN": "secretsmanager: must be followed by a Secrets Manager secret ARN"
    }
    assert secret_reference_problems({"HF_TOKEN": f"secretsmanager:{SECRET_ARN}"}) == {}
