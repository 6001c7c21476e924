"""The accelerators of SageMaker's ml.* GPU, Inferentia and Trainium instance types, known without AWS.

The SageMaker SDK's GPU table stops at g5 and p4/p5 and lists no Inferentia or Trainium; a deploy that
asked it how many GPUs an ml.g6e.48xlarge has got no answer, and TGI or vLLM then served from one GPU of
eight. This table is the product's own: the suite's check of instance types, the tensor-parallel default
of a deployed endpoint and the docs all read it. A type newer than the table is named in the suite with
``accelerators: N`` (fmbench.config's SageMaker target), so an old table never blocks a new instance.

Source: the Amazon EC2 "Accelerated computing" instance specifications (docs.aws.amazon.com/ec2/latest/
instancetypes/ac.html: GPUs or accelerators and their memory per size) and the AWS Neuron documentation's
Inf2, Trn1 and Trn2 architecture pages (devices per instance, device memory), as read on 2026-12-07. The
sizes are those SageMaker offers for real-time inference under the ``ml.`` prefix. Memory is the total
accelerator memory of the instance, in GiB as AWS states it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

AcceleratorKind = Literal["gpu", "inferentia", "trainium"]


@dataclass(frozen=True, slots=True)
class InstanceAccelerators:
    kind: AcceleratorKind
    count: int
    memory_gib: int  # all accelerators of the instance together


def _family(
    kind: AcceleratorKind, family: str, per_device_gib: int, sizes: dict[str, int]
) -> dict[str, InstanceAccelerators]:
    return {
        f"ml.{family}.{size}": InstanceAccelerators(kind, count, count * per_device_gib)
        for size, count in sizes.items()
    }


_SINGLE_GPU_SIZES: Final = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")

ACCELERATED_INSTANCES: Final[dict[str, InstanceAccelerators]] = {
    # NVIDIA T4, 16 GiB each
    **_family("gpu", "g4dn", 16, {**dict.fromkeys(_SINGLE_GPU_SIZES, 1), "12xlarge": 4}),
    # NVIDIA A10G, 24 GiB each
    **_family(
        "gpu", "g5", 24, {**dict.fromkeys(_SINGLE_GPU_SIZES, 1), "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
    ),
    # NVIDIA L4, 24 GiB each
    **_family(
        "gpu", "g6", 24, {**dict.fromkeys(_SINGLE_GPU_SIZES, 1), "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
    ),
    # NVIDIA L40S, 48 GiB each
    **_family(
        "gpu", "g6e", 48, {**dict.fromkeys(_SINGLE_GPU_SIZES, 1), "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
    ),
    # NVIDIA A100 40 GB and 80 GB
    **_family("gpu", "p4d", 40, {"24xlarge": 8}),
    **_family("gpu", "p4de", 80, {"24xlarge": 8}),
    # NVIDIA H100 80 GB, H200 141 GB
    **_family("gpu", "p5", 80, {"48xlarge": 8}),
    **_family("gpu", "p5e", 141, {"48xlarge": 8}),
    **_family("gpu", "p5en", 141, {"48xlarge": 8}),
    # NVIDIA B200, 1,440 GiB per instance (180 each)
    **_family("gpu", "p6-b200", 180, {"48xlarge": 8}),
    # AWS Inferentia2, 32 GiB per device (2 NeuronCores each)
    **_family("inferentia", "inf2", 32, {"xlarge": 1, "8xlarge": 1, "24xlarge": 6, "48xlarge": 12}),
    # AWS Trainium, 32 GiB per device; Trainium2, 96 GiB per device
    **_family("trainium", "trn1", 32, {"2xlarge": 1, "32xlarge": 16}),
    **_family("trainium", "trn1n", 32, {"32xlarge": 16}),
    **_family("trainium", "trn2", 96, {"48xlarge": 16}),
}


def instance_accelerators(instance_type: str | None) -> InstanceAccelerators | None:
    """The accelerators of a known instance type; None for a type the table does not list."""
    return ACCELERATED_INSTANCES.get(instance_type) if instance_type else None


def gpu_count(instance_type: str | None) -> int | None:
    """GPUs of a known GPU instance type; None for an unknown type or one whose accelerators are not GPUs."""
    known = instance_accelerators(instance_type)
    return known.count if known is not None and known.kind == "gpu" else None


def similar_instance_types(instance_type: str, limit: int = 8) -> list[str]:
    """Known types of the same family (``ml.g5.3xlarge`` -> the ml.g5 sizes), else a sample of all."""
    family = instance_type.rsplit(".", 1)[0] + "."
    same = [name for name in ACCELERATED_INSTANCES if name.startswith(family)]
    return same or sorted({name.rsplit(".", 1)[0] + ".*" for name in ACCELERATED_INSTANCES})[:limit]
