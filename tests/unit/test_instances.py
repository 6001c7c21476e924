"""The product's own table of accelerated instance types; the suite's check of a deployed target's type."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fmbench.cloud.sagemaker import plan_deployment
from fmbench.config import SageMakerTarget, SuiteValidationError
from fmbench.instances import ACCELERATED_INSTANCES, gpu_count, instance_accelerators
from fmbench.pricing import bundled_table
from fmbench.suite import validate_suite_data

SUITE: dict[str, Any] = {
    "name": "instances",
    "targets": [],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
    "load": {"concurrency": [1], "requests_per_level": 10},
}


def deployed(**fields: Any) -> dict[str, Any]:
    return {
        "name": "llama",
        "platform": "sagemaker",
        "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
        "container": "vllm",
        "payload_format": "vllm-openai",
        "instance_type": "ml.g5.2xlarge",
        **fields,
    }


def problems_of(*targets: dict[str, Any], matrix: list[Any] | None = None) -> dict[str, str]:
    data = copy.deepcopy(SUITE)
    data["targets"] = list(targets)
    if matrix:
        data["matrix"] = matrix
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data)
    return {p.path: p.reason for p in caught.value.problems}


@pytest.mark.parametrize(
    ("instance_type", "kind", "count", "memory_gib"),
    [
        # The multi-GPU types the SageMaker SDK's table lacks.
        ("ml.g6.12xlarge", "gpu", 4, 96),
        ("ml.g6.48xlarge", "gpu", 8, 192),
        ("ml.g6e.12xlarge", "gpu", 4, 192),
        ("ml.g6e.48xlarge", "gpu", 8, 384),
        ("ml.p5e.48xlarge", "gpu", 8, 1128),
        ("ml.p5en.48xlarge", "gpu", 8, 1128),
        ("ml.p6-b200.48xlarge", "gpu", 8, 1440),
        ("ml.g4dn.xlarge", "gpu", 1, 16),
        ("ml.g5.12xlarge", "gpu", 4, 96),
        ("ml.p4d.24xlarge", "gpu", 8, 320),
        ("ml.p4de.24xlarge", "gpu", 8, 640),
        ("ml.inf2.48xlarge", "inferentia", 12, 384),
        ("ml.trn1.32xlarge", "trainium", 16, 512),
        ("ml.trn2.48xlarge", "trainium", 16, 1536),
    ],
)
def test_the_table_knows_current_accelerated_types(
    instance_type: str, kind: str, count: int, memory_gib: int
) -> None:
    known = instance_accelerators(instance_type)
    assert known is not None
    assert (known.kind, known.count, known.memory_gib) == (kind, count, memory_gib)


def test_every_priced_accelerated_type_is_in_the_table_and_only_gpus_count_as_gpus() -> None:
    priced = {name for region in bundled_table().sagemaker.values() for name in region}
    assert priced
    assert priced <= set(ACCELERATED_INSTANCES), sorted(priced - set(ACCELERATED_INSTANCES))
    assert gpu_count("ml.inf2.24xlarge") is None
    assert gpu_count("ml.g5.3xlarge") is None
    assert all(name.startswith("ml.") for name in ACCELERATED_INSTANCES)


@pytest.mark.parametrize(
    ("instance_type", "gpus"),
    [("ml.g6e.48xlarge", "8"), ("ml.p5en.48xlarge", "8"), ("ml.g6.12xlarge", "4"), ("ml.g6e.xlarge", "1")],
)
def test_vllm_and_tgi_shard_over_every_gpu_of_the_table(instance_type: str, gpus: str) -> None:
    target = SageMakerTarget.model_validate(deployed(instance_type=instance_type))
    assert plan_deployment(target, "us-east-1").environment["SM_VLLM_TENSOR_PARALLEL_SIZE"] == gpus
    tgi = SageMakerTarget.model_validate(
        deployed(instance_type=instance_type, container="tgi", payload_format="tgi")
    )
    assert plan_deployment(tgi, "us-east-1").environment["SM_NUM_GPUS"] == gpus


def test_an_unknown_instance_type_of_a_deployed_target_is_refused_with_its_path() -> None:
    problems = problems_of(
        {"name": "emu", "platform": "emulator", "instance_type": "ml.g5.3xlarge"},
        deployed(instance_type="ml.g5.3xlarge"),
    )
    assert list(problems) == ["targets.1.instance_type"]
    assert "'ml.g5.3xlarge' is not a SageMaker GPU" in problems["targets.1.instance_type"]
    assert "ml.g5.2xlarge" in problems["targets.1.instance_type"]  # the family's sizes are suggested
    assert "accelerators: N" in problems["targets.1.instance_type"]


def test_an_unknown_type_in_a_matrix_is_named_where_the_matrix_varies_it() -> None:
    matrix = [{"base": deployed(), "vary": {"instance_type": ["ml.g5.2xlarge", "ml.g9.2xlarge"]}}]
    problems = problems_of(matrix=matrix)
    assert list(problems) == ["matrix.0.vary.instance_type"]


def test_a_newer_type_is_deployed_with_the_accelerators_the_suite_gives() -> None:
    data = copy.deepcopy(SUITE)
    data["targets"] = [deployed(instance_type="ml.g7e.48xlarge", accelerators=8)]
    (target,) = validate_suite_data(data).expanded_targets()
    assert plan_deployment(target, "us-east-1").environment["SM_VLLM_TENSOR_PARALLEL_SIZE"] == "8"


def test_instance_types_of_what_is_not_deployed_only_price() -> None:
    data = copy.deepcopy(SUITE)
    data["targets"] = [
        {"name": "mine", "platform": "sagemaker", "endpoint_name": "mine", "instance_type": "ml.c7i.large"},
        {
            "name": "vllm",
            "platform": "openai",
            "endpoint_url": "http://127.0.0.1:1/v1",
            "instance_type": "ml.x.y",
        },
    ]
    assert len(validate_suite_data(data).expanded_targets()) == 2
    with pytest.raises(ValueError, match="accelerators applies to an endpoint the workflow deploys"):
        SageMakerTarget.model_validate(
            {"name": "mine", "platform": "sagemaker", "endpoint_name": "mine", "accelerators": 2}
        )
