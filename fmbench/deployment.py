"""What the product calls the SageMaker resources it deploys: names, tags, statuses, serving containers.

A branch's resources are named from its run id and branch id (``resource_names``), so a retried step finds
what an earlier attempt created instead of creating it twice, and teardown can only ever touch the resources
of its own branch. The planner, the cost estimate, the report, the CDK stack and the cleanup all need these
words; none of them needs AWS to say them, so this module imports no AWS SDK (import-linter checks it;
docs/architecture.md). What calls SageMaker is ``fmbench.cloud.sagemaker``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import Field

from fmbench.config import DEFAULT_ENDPOINT_TTL_S, StrictModel

# The product's IAM policy scopes SageMaker actions to resources whose names start with this prefix.
NAME_PREFIX: Final = "fmb-"
# The cdk.json key listing the existing SageMaker endpoints the stack's runner may invoke (besides its own
# ``fmb-*`` ones): the stack reads it, and Plan names it when a suite's endpoint is not in it.
EXISTING_ENDPOINTS_KEY: Final = "fmbench:existingEndpointNames"
# The existing SageMaker endpoints the Evaluate task may invoke as judges (cdk.json; docs/accuracy.md).
JUDGE_ENDPOINTS_KEY: Final = "fmbench:judgeEndpoints"


def stack_may_invoke(endpoint_name: str, existing_endpoint_names: Iterable[str]) -> bool:
    """Whether the runner's role grants InvokeEndpoint on the endpoint: SageMaker writes the name in lower
    case in the endpoint's ARN, and the role names ARNs, so names compare without case."""
    name = endpoint_name.lower()
    return name.startswith(NAME_PREFIX) or name in {n.lower() for n in existing_endpoint_names}


MAX_NAME_CHARS: Final = 63
NAME_HASH_CHARS: Final = 8
NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")

TAG_SUITE: Final = "fmbench:suite"
TAG_RUN_ID: Final = "fmbench:run-id"
TAG_BRANCH_ID: Final = "fmbench:branch-id"
# When the sweeper may delete the resource whatever its run's state (UTC, EXPIRES_AT_FORMAT): the backstop
# for an endpoint whose run ended without a teardown and without a cleanup.
TAG_EXPIRES_AT: Final = "fmbench:expires-at"
EXPIRES_AT_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

# Where SageMaker mounts model data given as ModelDataUrl / ModelDataSource.
MODEL_DIR: Final = "/opt/ml/model"
DEFAULT_MODEL_ENV_VAR: Final = "HF_MODEL_ID"

SECRET_REFERENCE_PREFIX: Final = "secretsmanager:"
SECRET_ARN_PATTERN: Final = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^\s]+$")

# The workflow's Choice knows three statuses: Creating (wait), InService (run the load), Failed (tear down).
WorkflowStatus = Literal["Creating", "InService", "Failed"]
IN_SERVICE: Final = "InService"
FAILED: Final = "Failed"
CREATING: Final = "Creating"
# Cap of the Wait -> EndpointStatus loop, whatever the deployment allowance: it bounds the state
# transitions (and their cost) of one branch. The bound itself is the stack's deployment allowance
# (fmbench:maxDeployMinutes, 60: the 30-minute model download plus the 30-minute startup health check
# Deploy allows) over its poll interval (fmbench:statusPollSeconds, 60): 60 polls. The stack checks its
# settings against it, the workflow's plan step applies it.
MAX_STATUS_POLLS: Final = 120
# Execution statuses after which nothing of the run should exist any more. SUCCEEDED too: a branch whose
# Teardown failed after its retries ends the execution successfully and leaves its endpoint up. The
# stack's cleanup rule listens for them; the cleanup handler checks them.
ENDED_STATUSES: Final = frozenset({"ABORTED", "TIMED_OUT", "FAILED", "SUCCEEDED"})


class EndpointBusyError(RuntimeError):
    """The endpoint is still being created or updated and cannot be deleted yet: try teardown again later.

    The state machine retries Teardown on this error name, so an endpoint that was still Creating when a
    branch gave up is deleted as soon as SageMaker allows it, instead of being left running. The CDK stack
    names it in the retry, which is why it lives here and not beside the AWS calls that raise it.
    """


class ServingContainerError(ValueError):
    """A target's container or image cannot be resolved; ``field`` is the target field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


# ------------------------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class ResourceNames:
    model: str
    endpoint_config: str
    endpoint: str


def resource_names(run_id: str, branch_id: str) -> ResourceNames:
    """SageMaker names of a branch's model, endpoint config and endpoint: derived, never stored.

    Models, endpoint configs and endpoints are separate namespaces, so all three share one name, which
    makes a branch's resources easy to find together. The name is the prefix, a readable slug of run and
    branch id (lower case, other characters as '-') cut to fit 63 characters, and a hash of the exact ids:
    the slug is lossy (case, '_' and '.' are folded, long ids are cut), the hash keeps names unique.
    """
    digest = hashlib.sha256(f"{run_id}\n{branch_id}".encode()).hexdigest()[:NAME_HASH_CHARS]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{run_id}-{branch_id}".lower()).strip("-")
    room = MAX_NAME_CHARS - len(NAME_PREFIX) - 1 - NAME_HASH_CHARS
    slug = slug[:room].rstrip("-")
    name = f"{NAME_PREFIX}{slug}-{digest}" if slug else f"{NAME_PREFIX}{digest}"
    return ResourceNames(model=name, endpoint_config=name, endpoint=name)


def branch_tags(*, suite_name: str, run_id: str, branch_id: str) -> dict[str, str]:
    """The tags that let a cleanup outside the workflow find a branch's resources (docs/operations.md)."""
    return {TAG_SUITE: suite_name, TAG_RUN_ID: run_id, TAG_BRANCH_ID: branch_id}


def expires_at_text(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime(EXPIRES_AT_FORMAT)


def parse_expires_at(text: str) -> float | None:
    """The epoch seconds of an ``fmbench:expires-at`` value; None for a value this product did not write."""
    try:
        return datetime.strptime(text, EXPIRES_AT_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------------------ serving containers


@dataclass(frozen=True, slots=True)
class ServingContainer:
    """One serving container the suite can name, and the conventions its image follows."""

    name: str
    framework: str  # the framework name in the SageMaker SDK's image_uris
    default_version: str
    model_env_var: str = DEFAULT_MODEL_ENV_VAR
    gpu_count_env_var: str | None = None
    payload_formats: frozenset[str] = frozenset()


# Default versions are pinned (not the SDK's 'latest') so that the same suite deploys the same image until
# someone changes it here or pins another version in the suite (`container: "lmi:0.33.0"`).
SERVING_CONTAINERS: Final[dict[str, ServingContainer]] = {
    "lmi": ServingContainer(
        name="lmi",
        framework="djl-lmi",
        default_version="0.33.0",
        payload_formats=frozenset({"lmi", "vllm-openai", "custom"}),
    ),
    "tgi": ServingContainer(
        name="tgi",
        framework="huggingface-llm",
        default_version="3.3.6",
        gpu_count_env_var="SM_NUM_GPUS",
        payload_formats=frozenset({"tgi", "vllm-openai", "custom"}),
    ),
    "vllm": ServingContainer(
        name="vllm",
        framework="vllm",
        default_version="0.30.0",
        model_env_var="SM_VLLM_MODEL",
        gpu_count_env_var="SM_VLLM_TENSOR_PARALLEL_SIZE",
        payload_formats=frozenset({"vllm-openai", "custom"}),
    ),
    "tei": ServingContainer(
        name="tei",
        framework="huggingface-tei",
        default_version="1.8.2",
        payload_formats=frozenset({"custom"}),
    ),
    "neuron": ServingContainer(
        name="neuron",
        framework="djl-neuronx",
        default_version="0.29.0",
        payload_formats=frozenset({"lmi", "custom"}),
    ),
}
CONTAINER_ALIASES: Final = {"djl": "lmi"}
_VERSION_PATTERN = re.compile(r"^[0-9][A-Za-z0-9._-]*$")


def known_containers() -> str:
    names = [*SERVING_CONTAINERS, *(f"{alias} (= {name})" for alias, name in CONTAINER_ALIASES.items())]
    return ", ".join(names)


def parse_container(text: str) -> tuple[ServingContainer, str | None]:
    """``lmi`` or ``lmi:0.33.0`` -> the container and the pinned version (None: the default)."""
    name, _, version = text.strip().partition(":")
    key = CONTAINER_ALIASES.get(name.lower(), name.lower())
    container = SERVING_CONTAINERS.get(key)
    if container is None:
        raise ServingContainerError(
            "container", f"unknown container {text!r}; known: {known_containers()}; or give image_uri"
        )
    if ":" in text and not _VERSION_PATTERN.match(version):
        raise ServingContainerError("container", f"{text!r}: the version after ':' must look like 0.33.0")
    return container, version or None


def known_container(text: str) -> ServingContainer | None:
    """The container ``text`` names, or None: next to an explicit image_uri, container is only a label."""
    try:
        return parse_container(text)[0] if text else None
    except ServingContainerError:
        return None


def payload_format_problem(target: Any) -> str | None:
    """Why the target's payload format does not fit its container (an endpoint that answers every request
    with an error is an expensive way to learn it), or None."""
    container = known_container(target.container)
    if container is None or target.payload_format in container.payload_formats:
        return None
    fitting = ", ".join(sorted(container.payload_formats))
    return (
        f"{target.payload_format!r} is not what container {container.name} speaks on SageMaker; "
        f"use one of: {fitting}"
    )


# --------------------------------------------------------------------------------------- secrets


def secret_references(environment: Mapping[str, str]) -> dict[str, str]:
    """Variable name -> secret ARN for each value written as ``secretsmanager:<arn>``."""
    return {
        name: value[len(SECRET_REFERENCE_PREFIX) :]
        for name, value in environment.items()
        if value.startswith(SECRET_REFERENCE_PREFIX)
    }


def secret_reference_problems(environment: Mapping[str, str]) -> dict[str, str]:
    """Variable name -> what is wrong with its secret reference."""
    return {
        name: f"{SECRET_REFERENCE_PREFIX} must be followed by a Secrets Manager secret ARN"
        for name, arn in secret_references(environment).items()
        if not SECRET_ARN_PATTERN.match(arn)
    }


# ---------------------------------------------------------------------------------------- planning


# The host AMI an image's CUDA needs. An image's tag names its CUDA build (``cu130``: 13.0). CUDA 13 needs
# NVIDIA driver 580 or later, which among SageMaker's inference AMIs only this one carries (the others: 535
# for CUDA 12.2, 550 for 12.4); the default host of most instance types is older still. CUDA 12 images
# carry CUDA's forward-compatibility libraries and run on the default host, so they get no AMI set.
CUDA_13_INFERENCE_AMI_VERSION: Final = "al2023-ami-sagemaker-inference-gpu-4-1"
_CUDA_TAG = re.compile(r"[-_.]cu(\d{2})(\d)(?=[-_.]|$)")


def image_cuda_major(image_uri: str) -> int | None:
    """The CUDA major version an image is built on, from its tag (``...-cu130-...`` -> 13), or None."""
    tag = image_uri.rsplit("/", 1)[-1].partition(":")[2]
    match = _CUDA_TAG.search(tag)
    return int(match.group(1)) if match else None


def inference_ami_version_for(image_uri: str) -> str | None:
    """The InferenceAmiVersion an image needs, or None where SageMaker's default host serves it."""
    major = image_cuda_major(image_uri)
    return CUDA_13_INFERENCE_AMI_VERSION if major is not None and major >= 13 else None


class SageMakerDeployment(StrictModel):
    """What the deploy step creates for a branch, resolved at planning time."""

    region: str = Field(description="Region the endpoint is created in (and the image is from).")
    image_uri: str
    environment: dict[str, str] = Field(
        description="Container environment; secrets stay references (secretsmanager:<arn>) until deploy."
    )
    endpoint_ttl_s: int = Field(
        default=DEFAULT_ENDPOINT_TTL_S,
        ge=1,
        description="Seconds after creation when the sweeper may delete the resources (fmbench:expires-at).",
    )
    inference_ami_version: str | None = Field(
        default=None,
        description="The production variant's InferenceAmiVersion (None: SageMaker's default host).",
    )
