"""What an ``ec2`` branch launches, without AWS: the host image, the serving container, the user data script,
the vCPU quota it counts against, and the checks a target must pass before anything is launched.

The instance itself is launched, watched and terminated by ``fmbench.cloud.ec2``; this module only says what
to launch, so the planner, the suite checks and the tests can read it without an AWS SDK (docs/ec2.md).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from fmbench.config import DEFAULT_ENDPOINT_TTL_S, Ec2Target, StrictModel
from fmbench.deployment import SECRET_REFERENCE_PREFIX, resource_names
from fmbench.instances import ACCELERATED_INSTANCES, instance_accelerators

HostKind = Literal["gpu", "neuron", "cpu"]

# The public SSM parameters that name the latest AMI of each host kind in every region: the Deep Learning
# Base OSS Nvidia Driver GPU AMI (driver, Docker, NVIDIA Container Toolkit), the Neuron base DLAMI (Neuron
# driver and tools, for containers) and Amazon Linux 2023 (Docker is installed by the user data).
AMI_PARAMETERS: Final[dict[HostKind, str]] = {
    "gpu": "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id",
    "neuron": "/aws/service/neuron/dlami/base/amazon-linux-2023/latest/image_id",
    "cpu": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
}

# General-purpose, compute- and memory-optimized x86 families an ollama (CPU) target may name; the
# accelerated families are those of fmbench/instances.py.
CPU_FAMILIES: Final = ("c5", "c6i", "c7i", "m5", "m6i", "m7i", "m7a", "r6i", "r7i", "t3")
CPU_SIZES: Final = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge")

DEFAULT_READY_TIMEOUT_S: Final = 3600.0
MODEL_HOST_DIR: Final = "/opt/fmbench/model"
MODEL_CONTAINER_DIR: Final = "/opt/ml/model"
LOG_FILE: Final = "/var/log/fmbench-serving.log"
# The load balancer in front of several model copies (nginx, round robin).
BALANCER_IMAGE: Final = "public.ecr.aws/nginx/nginx:1.27"
DLC_ACCOUNT: Final = "763104351884"  # the AWS Deep Learning Containers registry (LMI images)


# ------------------------------------------------------------------------------------- instances


def ec2_accelerators(instance_type: str) -> tuple[HostKind, int] | None:
    """(host kind, accelerator count) of an EC2 type FMBench Flow knows; None for an unknown type."""
    known = instance_accelerators(f"ml.{instance_type}")
    if known is not None:
        return ("gpu" if known.kind == "gpu" else "neuron"), known.count
    family, _, size = instance_type.partition(".")
    if family in CPU_FAMILIES and size in CPU_SIZES:
        return "cpu", 0
    return None


def known_ec2_types_like(instance_type: str, limit: int = 8) -> list[str]:
    family = instance_type.split(".", 1)[0] + "."
    accelerated = [name.removeprefix("ml.") for name in ACCELERATED_INSTANCES]
    cpu = [f"{f}.{s}" for f in CPU_FAMILIES for s in CPU_SIZES]
    same = [name for name in [*accelerated, *cpu] if name.startswith(family)]
    return same[:limit] or sorted({n.split(".", 1)[0] + ".*" for n in [*accelerated, *cpu]})[:limit]


_SIZE = re.compile(r"^(\d*)xlarge$")


def instance_vcpus(instance_type: str) -> int | None:
    """vCPUs of an x86 type by its size: large 2, xlarge 4, Nxlarge 4N (true of every family this product
    knows, g4dn to p6-b200, inf2, trn1/2, c/m/r/t); None for another size (metal, medium)."""
    size = instance_type.partition(".")[2]
    if size == "large":
        return 2
    match = _SIZE.match(size)
    if match is None:
        return None
    return 4 * int(match.group(1) or 1)


@dataclass(frozen=True, slots=True)
class VcpuQuota:
    """The Service Quotas vCPU quota of EC2 that a family's running on-demand instances count against."""

    code: str
    name: str


# Service Quotas codes of EC2 (service code 'ec2'): running on-demand instances, counted in vCPUs.
VCPU_QUOTAS: Final[dict[str, VcpuQuota]] = {
    "G": VcpuQuota("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "P": VcpuQuota("L-417A185B", "Running On-Demand P instances"),
    "Inf": VcpuQuota("L-1945791B", "Running On-Demand Inf instances"),
    "Trn": VcpuQuota("L-2C3B7624", "Running On-Demand Trn instances"),
    "Standard": VcpuQuota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
}


def vcpu_quota_for(instance_type: str) -> VcpuQuota:
    family = instance_type.split(".", 1)[0]
    if family.startswith("inf"):
        return VCPU_QUOTAS["Inf"]
    if family.startswith("trn"):
        return VCPU_QUOTAS["Trn"]
    if family[0] in "gv":
        return VCPU_QUOTAS["G"]
    if family[0] == "p":
        return VCPU_QUOTAS["P"]
    return VCPU_QUOTAS["Standard"]


# ------------------------------------------------------------------------------ serving containers


@dataclass(frozen=True, slots=True)
class ServingArgs:
    """What a container's default arguments are made from."""

    model: str  # a Hub id, or the model's folder inside the container
    served_model: str
    shards: int  # accelerators per copy (tensor-parallel degree); 0 on a CPU host


@dataclass(frozen=True, slots=True)
class Ec2Container:
    name: str
    images: dict[HostKind, str]  # per host kind; {region} is filled in
    container_port: int
    health_path: str
    args: Callable[[ServingArgs], list[str]]
    environment: Callable[[ServingArgs], dict[str, str]] = lambda _: {}
    pulls_model: bool = False  # ollama: the model is pulled into a volume before the server starts

    @property
    def host_kinds(self) -> tuple[HostKind, ...]:
        return tuple(self.images)


def _tp(flag: str, a: ServingArgs) -> list[str]:
    return [flag, str(a.shards)] if a.shards > 1 else []


# Default images are pinned, so the same suite starts the same server until someone changes it here or
# gives image in the suite.
EC2_CONTAINERS: Final[dict[str, Ec2Container]] = {
    "vllm": Ec2Container(
        name="vllm",
        images={"gpu": "vllm/vllm-openai:v0.10.2"},
        container_port=8000,
        health_path="/health",
        args=lambda a: [
            "--model",
            a.model,
            "--served-model-name",
            a.served_model,
            "--port",
            "8000",
            *_tp("--tensor-parallel-size", a),
        ],
    ),
    "tgi": Ec2Container(
        name="tgi",
        images={"gpu": "ghcr.io/huggingface/text-generation-inference:3.3.6"},
        container_port=80,
        health_path="/health",
        args=lambda a: ["--model-id", a.model, "--port", "80", *_tp("--num-shard", a)],
    ),
    "sglang": Ec2Container(
        name="sglang",
        images={"gpu": "lmsysorg/sglang:v0.4.10.post2"},
        container_port=30000,
        health_path="/health",
        args=lambda a: [
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            a.model,
            "--served-model-name",
            a.served_model,
            "--host",
            "0.0.0.0",
            "--port",
            "30000",
            *_tp("--tp", a),
        ],
    ),
    "lmi": Ec2Container(
        name="lmi",
        images={
            "gpu": f"{DLC_ACCOUNT}.dkr.ecr.{{region}}.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128",
            "neuron": (
                f"{DLC_ACCOUNT}.dkr.ecr.{{region}}.amazonaws.com/djl-inference:0.29.0-neuronx-sdk2.19.1"
            ),
        },
        container_port=8080,
        health_path="/ping",
        args=lambda a: [],
        environment=lambda a: {
            "HF_MODEL_ID": a.model,
            "SERVING_LOAD_MODELS": "",
            **({"OPTION_TENSOR_PARALLEL_DEGREE": str(a.shards)} if a.shards else {}),
        },
    ),
    "ollama": Ec2Container(
        name="ollama",
        images={"gpu": "ollama/ollama:0.11.10", "cpu": "ollama/ollama:0.11.10"},
        container_port=11434,
        health_path="/",
        args=lambda a: [],
        environment=lambda a: {"OLLAMA_HOST": "0.0.0.0:11434"},
        pulls_model=True,
    ),
}


def ec2_container(target: Ec2Target) -> Ec2Container:
    return EC2_CONTAINERS[target.container]


def host_kind(target: Ec2Target) -> HostKind | None:
    known = ec2_accelerators(target.instance_type)
    return known[0] if known is not None else None


# -------------------------------------------------------------------------------------- checks


def ec2_target_problems(target: Ec2Target) -> list[tuple[str, str]]:
    """(field, reason) for each way an ec2 target would fail once its instance is paid for."""
    known = ec2_accelerators(target.instance_type)
    if known is None:
        like = ", ".join(known_ec2_types_like(target.instance_type))
        return [
            (
                "instance_type",
                f"{target.instance_type!r} is not an EC2 instance type FMBench Flow knows (GPU, Inferentia "
                f"and Trainium types of fmbench/instances.py without ml., or {', '.join(CPU_FAMILIES)} "
                f"sizes); e.g. {like}",
            )
        ]
    kind, count = known
    container = ec2_container(target)
    problems: list[tuple[str, str]] = []
    if kind not in container.host_kinds and target.image is None:
        problems.append(
            (
                "container",
                f"{container.name} runs on {' or '.join(container.host_kinds)} hosts; {target.instance_type} "
                f"is a {kind} instance (choose another instance type or container, or give image)",
            )
        )
    if target.model_copies > 1:
        if kind != "gpu":
            problems.append(
                ("model_copies", f"several copies need a GPU instance; {target.instance_type} is {kind}")
            )
        elif count % target.model_copies:
            problems.append(
                (
                    "model_copies",
                    f"{target.model_copies} copies do not divide the {count} GPU(s) of "
                    f"{target.instance_type}",
                )
            )
        elif target.port + target.model_copies > 65535:
            problems.append(("port", "the copies listen on the ports after it: choose a lower port"))
    if instance_vcpus(target.instance_type) is None:
        problems.append(
            ("instance_type", f"{target.instance_type}: only sizes large and NxLarge are supported")
        )
    return problems


# ---------------------------------------------------------------------------------- deployment


class Ec2Deployment(StrictModel):
    """What the deploy step launches for an ec2 branch, resolved at planning time (docs/ec2.md)."""

    region: str
    instance_type: str
    instance_name: str = Field(description="Name tag, security group name and RunInstances client token.")
    ami_id: str | None = Field(default=None, description="The suite's AMI; None: ami_parameter's.")
    ami_parameter: str | None = Field(default=None, description="Public SSM parameter naming the AMI.")
    image: str
    user_data: str = Field(description="The boot script; refers to secrets, never holds their values.")
    port: int
    copy_ports: list[int] = Field(description="Ports the readiness check asks: each copy's, or the one.")
    health_path: str
    api_base_path: str
    served_model: str
    root_volume_gib: int
    endpoint_ttl_s: int = Field(default=DEFAULT_ENDPOINT_TTL_S, ge=1)
    ready_timeout_s: float = Field(
        default=DEFAULT_READY_TIMEOUT_S,
        gt=0,
        description="How long the runner waits for the server to answer its health path (the stack's "
        "deployment allowance).",
    )

    def endpoint_url(self, private_ip: str) -> str:
        """The OpenAI-compatible base URL the runner calls, inside the VPC."""
        return f"http://{private_ip}:{self.port}{self.api_base_path}"


def _model_ref(target: Ec2Target) -> str:
    source = target.model_source
    if source is None or source.model_data_s3_uri:
        return MODEL_CONTAINER_DIR if source is not None else target.served_model
    return str(source.hf_model_id)


def _device_flags(kind: HostKind, devices: list[int], copies: int) -> list[str]:
    if kind == "gpu":
        # docker's --gpus takes a device list inside double quotes (the shell word is '"device=0,1"')
        return ["--gpus", "all" if copies == 1 else f'"device={",".join(map(str, devices))}"']
    if kind == "neuron":
        return [f"--device=/dev/neuron{d}" for d in devices]
    return []


def _q(words: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def build_user_data(
    target: Ec2Target, *, region: str, run_id: str, branch_id: str, image: str, copy_ports: list[int]
) -> str:
    """The instance's boot script: Docker, the token (read with the instance role), the model from S3 when
    it comes from there, then one server container per model copy (and nginx in front of several).

    The script holds the secret's ARN, never its value: the value is read at boot into the environment and
    passed on by name (``-e HF_TOKEN``), so it is in no command line, no user data and no describe call.
    """
    container = ec2_container(target)
    kind = host_kind(target) or "cpu"
    count = (ec2_accelerators(target.instance_type) or ("cpu", 0))[1]
    copies = target.model_copies
    shards = count // copies if kind != "cpu" else 0
    args = ServingArgs(model=_model_ref(target), served_model=target.served_model, shards=shards)
    lines = [
        "#!/bin/bash",
        f"# FMBench Flow: {container.name} for branch {branch_id} of run {run_id} (docs/ec2.md)",
        "set -euo pipefail",
        f"exec > >(tee -a {LOG_FILE}) 2>&1",
        f"REGION={shlex.quote(region)}",
        "command -v docker >/dev/null || dnf install -y docker",
        "systemctl enable --now docker",
    ]
    if f"{DLC_ACCOUNT}.dkr.ecr." in image:
        registry = image.split("/", 1)[0]
        lines.append(
            f'aws ecr get-login-password --region "$REGION" | docker login --username AWS --password-stdin '
            f"{shlex.quote(registry)}"
        )
    env_flags: list[str] = []
    if target.hf_token_secret:
        arn = target.hf_token_secret[len(SECRET_REFERENCE_PREFIX) :]
        lines += [
            f'HF_TOKEN="$(aws secretsmanager get-secret-value --region {shlex.quote(arn.split(":")[3])} '
            f'--secret-id {shlex.quote(arn)} --query SecretString --output text)"',
            'export HF_TOKEN HUGGING_FACE_HUB_TOKEN="$HF_TOKEN"',
        ]
        env_flags += ["-e", "HF_TOKEN", "-e", "HUGGING_FACE_HUB_TOKEN"]
    volume: list[str] = []
    source = target.model_source
    if source is not None and source.model_data_s3_uri:
        uri = source.model_data_s3_uri
        lines.append(f"mkdir -p {MODEL_HOST_DIR}")
        if uri.endswith(".tar.gz"):
            lines.append(f'aws s3 cp {shlex.quote(uri)} - --region "$REGION" | tar -xz -C {MODEL_HOST_DIR}')
        else:
            lines.append(
                f'aws s3 sync {shlex.quote(uri.rstrip("/") + "/")} {MODEL_HOST_DIR} --region "$REGION"'
            )
        volume = ["-v", f"{MODEL_HOST_DIR}:{MODEL_CONTAINER_DIR}:ro"]
    lines.append(f"docker pull {shlex.quote(image)}")
    for name, value in container.environment(args).items():
        env_flags += ["-e", f"{name}={value}"]
    server_args = target.args if target.args is not None else container.args(args)
    if container.pulls_model:
        volume = ["-v", "ollama:/root/.ollama"]
        lines += [
            _q(["docker", "run", "-d", "--name", "fmbench-pull", *volume, image]),
            "until docker exec fmbench-pull ollama list >/dev/null 2>&1; do sleep 2; done",
            _q(["docker", "exec", "fmbench-pull", "ollama", "pull", target.served_model]),
            "docker rm -f fmbench-pull",
        ]
    for index, host_port in enumerate(copy_ports):
        devices = list(range(index * shards, (index + 1) * shards)) if kind != "cpu" else []
        run = [
            "docker",
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "--name",
            f"fmbench-serve-{index}",
            "--shm-size",
            "16g",
            "-p",
            f"{host_port}:{container.container_port}",
            *env_flags,
            *volume,
        ]
        lines.append(_q([*run, *_device_flags(kind, devices, copies), image, *server_args]))
    if copies > 1:
        upstreams = " ".join(f"server 127.0.0.1:{p};" for p in copy_ports)
        lines += [
            "mkdir -p /opt/fmbench/nginx",
            "cat > /opt/fmbench/nginx/default.conf <<'NGINX'",
            f"upstream copies {{ {upstreams} }}",
            f"server {{ listen {target.port}; location / {{ proxy_pass http://copies; proxy_buffering off; "
            "proxy_read_timeout 3600s; } }",
            "NGINX",
            _q(
                [
                    "docker",
                    "run",
                    "-d",
                    "--restart",
                    "unless-stopped",
                    "--name",
                    "fmbench-balancer",
                    "--network",
                    "host",
                    "-v",
                    "/opt/fmbench/nginx/default.conf:/etc/nginx/conf.d/default.conf:ro",
                    BALANCER_IMAGE,
                ]
            ),
        ]
    return "\n".join(lines) + "\n"


def plan_ec2_deployment(
    target: Ec2Target,
    *,
    region: str,
    run_id: str,
    branch_id: str,
    endpoint_ttl_s: int = DEFAULT_ENDPOINT_TTL_S,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> Ec2Deployment:
    """AMI, image, ports and the user data of an ec2 target: everything Deploy needs, fixed at Plan."""
    problems = ec2_target_problems(target)
    if problems:
        raise ValueError("; ".join(f"{field}: {reason}" for field, reason in problems))
    kind = host_kind(target) or "cpu"
    container = ec2_container(target)
    image = target.image or container.images.get(kind, next(iter(container.images.values())))
    image = image.format(region=region)
    copies = target.model_copies
    copy_ports = [target.port] if copies == 1 else [target.port + 1 + i for i in range(copies)]
    name = resource_names(run_id, branch_id).endpoint
    return Ec2Deployment(
        region=region,
        instance_type=target.instance_type,
        instance_name=name,
        ami_id=target.ami,
        ami_parameter=None if target.ami else AMI_PARAMETERS[kind],
        image=image,
        user_data=build_user_data(
            target, region=region, run_id=run_id, branch_id=branch_id, image=image, copy_ports=copy_ports
        ),
        port=target.port,
        copy_ports=copy_ports,
        health_path=target.health_path or container.health_path,
        api_base_path=target.api_base_path,
        served_model=target.served_model,
        root_volume_gib=target.root_volume_gib,
        endpoint_ttl_s=endpoint_ttl_s,
        ready_timeout_s=ready_timeout_s,
    )
