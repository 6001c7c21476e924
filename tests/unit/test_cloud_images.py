"""Serving-container images and container environments resolved when a run is planned (the SDK, offline)."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from fmbench.cloud.sagemaker import (
    SecretReferenceError,
    plan_deployment,
    resolve_environment,
    resolve_image_uri,
)
from fmbench.config import InferenceAmiVersion, SageMakerTarget
from fmbench.deployment import CUDA_13_INFERENCE_AMI_VERSION, ServingContainerError

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


# ------------------------------------------------------------------------- formats and environment


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


# ------------------------------------------------------------------------------------- host AMI


def test_the_pinned_ami_versions_are_botocores() -> None:
    """The suite's choices are exactly what CreateEndpointConfig accepts in the pinned botocore."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    assert set(typing.get_args(InferenceAmiVersion)) == set(
        model.shape_for("ProductionVariantInferenceAmiVersion").enum
    )
    assert CUDA_13_INFERENCE_AMI_VERSION in typing.get_args(InferenceAmiVersion)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        # vllm:0.30.0-gpu-py312-cu130-...: CUDA 13 needs the 580 driver, only on the AL2023 AMI.
        ("vllm", "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("vllm:0.23.0", "al2023-ami-sagemaker-inference-gpu-4-1"),
        ("lmi", None),  # cu128
        ("tgi", None),  # cu124
    ],
)
def test_the_host_ami_follows_the_images_cuda(container: str, expected: str | None) -> None:
    deployment = plan_deployment(target(container=container, payload_format="vllm-openai"), "us-east-1")
    assert deployment.inference_ami_version == expected


def test_the_suite_chooses_the_host_ami_and_an_unknown_one_is_refused() -> None:
    chosen = target(
        container="vllm",
        payload_format="vllm-openai",
        inference_ami_version="al2-ami-sagemaker-inference-gpu-3-1",
    )
    assert plan_deployment(chosen, "us-east-1").inference_ami_version == "al2-ami-sagemaker-inference-gpu-3-1"
    custom_image = target(image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1.0-cu131")
    assert plan_deployment(custom_image, "us-east-1").inference_ami_version == CUDA_13_INFERENCE_AMI_VERSION
    with pytest.raises(ValueError, match="inference_ami_version"):
        target(inference_ami_version="al2-ami-sagemaker-inference-gpu-5")
    with pytest.raises(ValueError, match="inference_ami_version applies to an endpoint the workflow deploys"):
        SageMakerTarget.model_validate(
            {
                "name": "mine",
                "platform": "sagemaker",
                "endpoint_name": "mine",
                "inference_ami_version": CUDA_13_INFERENCE_AMI_VERSION,
            }
        )
