"""The suite: what a user asks to benchmark, validated before anything is created or spent."""

from __future__ import annotations

import itertools
import json
import math
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fmbench.custom_format import RequestTemplate, TextPath
from fmbench.emulator.settings import EmulatorBehaviour
from fmbench.judge_format import JudgeFamily, family_of
from fmbench.tokenizer import TokenizerError, check_tokenizer_spec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"
# A price's key: a SageMaker type (ml.g5.2xlarge) or an EC2 one (g5.2xlarge, an ec2 target's).
PRICED_INSTANCE_TYPE_PATTERN = r"^(ml\.[a-z0-9-]+\.[a-z0-9]+|[a-z]+[0-9][a-z0-9-]*\.[a-z0-9]+)$"
# SageMaker's ProductionVariantInferenceAmiVersion values (the host image and its GPU or Neuron driver).
# Pinned here because the suite's models import no AWS SDK; tests/unit/test_cloud_images.py compares it with
# botocore's SageMaker model, so a botocore upgrade that adds or drops one fails there.
InferenceAmiVersion = Literal[
    "al2-ami-sagemaker-inference-gpu-2",
    "al2-ami-sagemaker-inference-gpu-2-1",
    "al2-ami-sagemaker-inference-gpu-3-1",
    "al2-ami-sagemaker-inference-neuron-2",
    "al2023-ami-sagemaker-inference-gpu-4-1",
]
BUILTIN_DATASET_PREFIX = "builtin:"
HUB_DATASET_PREFIX = "hf:"
# Upper bounds of suite sizes (in the schema as maxima): a million requests or a day per phase of a level,
# ten million tokens per prompt, are beyond any run the tool is meant for, and below them a typo
# (2**70, 1e12) is refused instead of planning a run that never ends.
MAX_REQUESTS_PER_PHASE = 1_000_000
MAX_PHASE_S = 86_400.0
MAX_TOKENS = 10_000_000
HUB_REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"


def _check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class StrictModel(BaseModel):
    """Every boundary model rejects unknown fields: a typo in a suite must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SuiteModel(StrictModel):
    """A part of a suite: numbers are finite (``.inf`` and ``.nan`` are valid YAML, never a valid setting)
    and a YAML boolean (``yes``, ``on``) is no number, though pydantic would read it as 1."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        # A field validator would have to skip the targets' discriminator, so the booleans are swapped
        # here for a value no number field accepts, and the field's own error names the field.
        if not isinstance(data, dict):
            return data
        swapped = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None or not _reads_numbers(field.annotation):
                continue
            if isinstance(value, bool):
                swapped[name] = NotANumber(value)
            elif isinstance(value, list) and any(isinstance(item, bool) for item in value):
                swapped[name] = [NotANumber(item) if isinstance(item, bool) else item for item in value]
        return swapped


@dataclass(frozen=True, slots=True)
class NotANumber:
    """A YAML boolean given where a number is due; its field's error says so (see ``_reason``)."""

    value: bool


def _reads_numbers(annotation: Any) -> bool:
    """Whether a field of this type takes numbers and not booleans."""
    seen: set[Any] = set()
    stack = [annotation]
    while stack:
        each = stack.pop()
        if each in seen:
            continue
        seen.add(each)
        stack.extend(typing.get_args(each))
    return bool(seen & {int, float}) and bool not in seen


class SuiteProblem(StrictModel):
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class SuiteValidationError(ValueError):
    """A suite with one or more problems; ``problems`` lists each with its field path."""

    def __init__(self, problems: list[SuiteProblem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid suite{where}: {len(problems)} problem(s)\n{lines}")


# --------------------------------------------------------------------------------------------- targets


class _TargetBase(SuiteModel):
    name: Name = Field(description="Unique name of this target in the suite.")
    model: str = Field(default="", description="Model id as the endpoint knows it.")
    container: str = Field(default="", description="Serving container (e.g. lmi, tgi, vllm).")
    instance_type: str | None = Field(
        default=None, pattern=INSTANCE_TYPE_PATTERN, description="Instance type, e.g. ml.g5.2xlarge."
    )
    instance_count: int = Field(default=1, ge=1, le=64)
    environment: dict[str, str] = Field(default_factory=dict, description="Container environment.")

    @property
    def needs_deploy(self) -> bool:
        """Whether the workflow deploys this target before the load and tears it down after."""
        return False


class EmulatorOptions(SuiteModel, EmulatorBehaviour):
    """How fast a suite's emulator answers and how it fails: the options of `fmbench emulator`, in a suite."""

    # A suite's endpoint takes time to answer; the zero-delay mode of the emulator is for benches.
    ttft_ms: float | None = Field(default=None, gt=0, description="Time to first token of every request.")
    itl_ms: float | None = Field(default=None, gt=0, description="Gap between consecutive tokens.")


class EmulatorTarget(_TargetBase):
    """A local emulator started for this branch on a free loopback port."""

    platform: Literal["emulator"]
    emulator: EmulatorOptions = Field(default_factory=EmulatorOptions)
    api: Literal["chat", "completions"] = "chat"


class OpenAITarget(_TargetBase):
    """Any reachable OpenAI-compatible endpoint (vLLM, TGI, Ollama, LiteLLM, ...), used as it is."""

    platform: Literal["openai"]
    endpoint_url: str = Field(description="Base URL including the API prefix, e.g. http://127.0.0.1:8000/v1")
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = Field(
        default=None, description="Name of an environment variable holding the API key (never the key)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged into every request body last (it wins over fmbench's own fields), e.g. "
        "{chat_template_kwargs: {enable_thinking: false}}.",
    )
    metrics_url: str | None = Field(
        default=None,
        description="The server's Prometheus metrics, scraped during each load point (load.server_metrics); "
        "default: endpoint_url without a trailing /v1, plus /metrics.",
    )

    @field_validator("metrics_url")
    @classmethod
    def _metrics_http_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


AWS_REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"


def _check_http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class SageMakerModelSource(SuiteModel):
    hf_model_id: str | None = None
    model_data_s3_uri: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+")

    @model_validator(mode="after")
    def _exactly_one(self) -> SageMakerModelSource:
        if (self.hf_model_id is None) == (self.model_data_s3_uri is None):
            raise ValueError("give exactly one of hf_model_id or model_data_s3_uri")
        return self


class SageMakerTarget(_TargetBase):
    """A SageMaker real-time endpoint, deployed by the workflow or brought as it is."""

    platform: Literal["sagemaker"]
    endpoint_name: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="An existing endpoint to use as is: nothing is deployed or deleted.",
    )
    model_source: SageMakerModelSource | None = None
    image_uri: str | None = None
    payload_format: Literal["lmi", "tgi", "vllm-openai", "custom"] = Field(
        default="lmi",
        description="Body the container speaks: lmi (DJL LMI), tgi (Hugging Face TGI), vllm-openai (OpenAI "
        "chat completions inside the SageMaker body), custom (request_template + response_text_path).",
    )
    request_template: str | None = Field(
        default=None,
        description='custom format: a JSON body with "{prompt}" and optionally "{max_new_tokens}", '
        '"{temperature}", "{top_p}" as string values, e.g. {"inputs": "{prompt}", "max_length": '
        '"{max_new_tokens}"}.',
    )
    response_text_path: str | None = Field(
        default=None,
        description="custom format: where the generated text is in the answer (and, when streaming, in "
        "each JSON line), e.g. generated_text, [0].generated_text, choices.0.delta.content.",
    )
    region: str | None = Field(
        default=None,
        pattern=AWS_REGION_PATTERN,
        description="AWS region of the endpoint; default: the runner's (AWS_REGION, AWS_DEFAULT_REGION).",
    )
    endpoint_url: HttpUrl | None = Field(
        default=None,
        description="SageMaker runtime URL override (a VPC interface endpoint, or a local emulator).",
    )
    inference_ami_version: InferenceAmiVersion | None = Field(
        default=None,
        description="The endpoint host's AMI (its GPU driver), SageMaker's InferenceAmiVersion; default: "
        "what the image needs (a CUDA 13 image: al2023-ami-sagemaker-inference-gpu-4-1), else SageMaker's.",
    )

    accelerators: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="GPUs (or Inferentia/Trainium devices) of an instance type newer than FMBench Flow's "
        "table (fmbench/instances.py); 0 for a CPU instance. Also the tensor-parallel degree of TGI and "
        "vLLM.",
    )

    @property
    def needs_deploy(self) -> bool:
        """A SageMaker target without an existing endpoint is deployed (and torn down) by the workflow."""
        return self.endpoint_name is None

    @model_validator(mode="after")
    def _host_options_only_when_deployed(self) -> SageMakerTarget:
        if self.endpoint_name is not None:
            given = [f for f in ("inference_ami_version", "accelerators") if getattr(self, f) is not None]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(
                    f"{' and '.join(given)} {verb} to an endpoint the workflow deploys, not endpoint_name"
                )
        return self

    @model_validator(mode="after")
    def _deployable_or_existing(self) -> SageMakerTarget:
        if self.endpoint_name is None:
            if self.model_source is None:
                raise ValueError("give model_source to deploy, or endpoint_name to use an existing endpoint")
            if self.instance_type is None:
                raise ValueError("instance_type is required to deploy an endpoint")
            if not self.container and not self.image_uri:
                raise ValueError("give container (lmi, tgi, vllm, tei, neuron) or image_uri")
        return self

    @model_validator(mode="after")
    def _custom_format_is_complete(self) -> SageMakerTarget:
        custom_fields = {
            "request_template": self.request_template,
            "response_text_path": self.response_text_path,
        }
        if self.payload_format == "custom":
            missing = [name for name, value in custom_fields.items() if value is None]
            if missing:
                raise ValueError(f"payload_format custom needs {' and '.join(missing)}")
            RequestTemplate(self.request_template or "")
            TextPath(self.response_text_path or "")
        else:
            given = [name for name, value in custom_fields.items() if value is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} only apply to payload_format custom")
        return self


class BedrockTarget(_TargetBase):
    """An Amazon Bedrock model: nothing to deploy or tear down."""

    platform: Literal["bedrock"]
    model_id: str = Field(min_length=1, description="Model id, inference profile id or ARN.")
    input_price_per_1k_tokens_usd: float | None = Field(default=None, ge=0)
    output_price_per_1k_tokens_usd: float | None = Field(default=None, ge=0)
    region: str | None = Field(
        default=None,
        pattern=AWS_REGION_PATTERN,
        description="AWS region of the model; default: the runner's (AWS_REGION, AWS_DEFAULT_REGION).",
    )
    endpoint_url: HttpUrl | None = Field(
        default=None,
        description="Bedrock runtime URL override (a VPC interface endpoint, or a local emulator).",
    )
    provisioned_model_units: int | None = Field(
        default=None,
        ge=1,
        description="Model units of provisioned throughput behind model_id: the branch is then charged "
        "price_per_hour_usd x units by the hour instead of by the token.",
    )
    price_per_hour_usd: float | None = Field(
        default=None, ge=0, description="USD per model unit-hour of provisioned throughput."
    )

    @model_validator(mode="after")
    def _provisioned_is_complete(self) -> BedrockTarget:
        if (self.provisioned_model_units is None) != (self.price_per_hour_usd is None):
            raise ValueError(
                "provisioned throughput needs both provisioned_model_units and price_per_hour_usd"
            )
        return self


# --------------------------------------------------------------------------------- EC2 target (docs/ec2.md)

# An EC2 instance type (``g5.2xlarge``, ``inf2.xlarge``, ``m7i.2xlarge``): SageMaker's names without ``ml.``.
EC2_INSTANCE_TYPE_PATTERN = r"^[a-z]+[0-9][a-z0-9-]*\.[a-z0-9]+$"  # the family has a digit
EC2_AMI_PATTERN = r"^ami-[0-9a-f]{8,17}$"
Ec2ContainerName = Literal["vllm", "tgi", "lmi", "sglang", "ollama"]


class Ec2Target(_TargetBase):
    """One EC2 instance the workflow launches for the branch, running a serving container (docs/ec2.md)."""

    platform: Literal["ec2"]
    instance_type: str = Field(
        pattern=EC2_INSTANCE_TYPE_PATTERN,
        description="EC2 instance type, e.g. g5.2xlarge, inf2.xlarge, m7i.2xlarge (no ml. prefix).",
    )
    instance_count: int = Field(default=1, ge=1, le=1, description="Always one instance per branch.")
    container: Ec2ContainerName = Field(
        description="Serving container started by the instance's user data: vllm, tgi, lmi, sglang, ollama."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[^\s'\"$`\\]+$",
        description="Container image instead of the container's pinned default.",
    )
    args: list[Annotated[str, Field(pattern=r"^[^\n]*$")]] | None = Field(
        default=None,
        description="Server arguments instead of the container's defaults (quoted for the shell).",
    )
    model_source: SageMakerModelSource | None = Field(
        default=None, description="The model: hf_model_id (from the Hub) or model_data_s3_uri (from S3)."
    )
    hf_token_secret: str | None = Field(
        default=None,
        pattern=r"^secretsmanager:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^\s'\"$`\\]+$",
        description="secretsmanager:<arn> of the Hugging Face token; read at boot by the instance role, "
        "never written into the user data.",
    )
    model_copies: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Copies of the model, each on its share of the instance's GPUs, behind one port.",
    )
    ami: str | None = Field(
        default=None,
        pattern=EC2_AMI_PATTERN,
        description="AMI id instead of the public SSM parameter of the instance's accelerator kind.",
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Port the server answers on.")
    health_path: str | None = Field(
        default=None, pattern=r"^/\S*$", description="Readiness path; default: the container's."
    )
    api_base_path: str = Field(
        default="/v1", pattern=r"^/\S*$", description="Prefix of the OpenAI-compatible routes."
    )
    api: Literal["chat", "completions"] = "chat"
    root_volume_gib: int = Field(default=200, ge=30, le=16384, description="Root EBS volume (gp3).")

    @property
    def needs_deploy(self) -> bool:
        return True

    @property
    def served_model(self) -> str:
        """The model name the server answers to (the OpenAI ``model`` field)."""
        if self.model:
            return self.model
        source = self.model_source
        if source is not None and source.hf_model_id:
            return f"hf.co/{source.hf_model_id}" if self.container == "ollama" else source.hf_model_id
        return "model"

    @model_validator(mode="after")
    def _has_a_model(self) -> Ec2Target:
        if self.model_source is None and not (self.container == "ollama" and self.model):
            raise ValueError("give model_source (hf_model_id or model_data_s3_uri)")
        if self.container == "ollama" and self.model_source and self.model_source.model_data_s3_uri:
            raise ValueError("ollama pulls its model: give hf_model_id (a GGUF repo) or model, not S3")
        if self.hf_token_secret and self.model_source and self.model_source.model_data_s3_uri:
            raise ValueError("hf_token_secret applies to a model from the Hub, not model_data_s3_uri")
        if self.environment:
            raise ValueError("environment is not used by ec2 targets: give args (or image)")
        return self


Target = Annotated[
    EmulatorTarget | OpenAITarget | SageMakerTarget | BedrockTarget | Ec2Target,
    Field(discriminator="platform"),
]
TARGET_ADAPTER: TypeAdapter[Any] = TypeAdapter(Target)
PLATFORMS = ("emulator", "openai", "sagemaker", "bedrock", "ec2")


class MatrixSpec(SuiteModel):
    """Expands into one target per combination of the ``vary`` values applied to ``base``."""

    base: dict[str, Any] = Field(description="Target fields shared by every combination; needs a name.")
    vary: dict[str, list[Any]] = Field(description="Field -> values; the cross product becomes targets.")

    @field_validator("vary")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not value:
            raise ValueError("must name at least one field to vary")
        for key, values in value.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
            if key == "name":
                raise ValueError("name cannot be varied: names are derived from the values")
        return value


# ------------------------------------------------------------------------------------------ workload


DATASET_FORMATS = ("jsonl", "json", "csv", "parquet")


class DatasetSpec(SuiteModel):
    """Where the records come from and which of their fields make a prompt."""

    source: str = Field(
        default="builtin:synthetic-qa",
        min_length=1,
        description="'builtin:NAME'; a JSONL, JSON, CSV or Parquet file (path relative to the suite file, "
        "or s3://bucket/key); or 'hf:OWNER/NAME', a dataset on the Hugging Face Hub (its data files for "
        "config and split are read; token from HF_TOKEN).",
    )
    hub_token: str | None = Field(
        default=None,
        pattern=r"^secretsmanager:",
        description="In the cloud: 'secretsmanager:<arn>' of a secret (named fmbench/...) holding a Hugging "
        "Face token for a gated or private Hub dataset, read by the plan step. Locally HF_TOKEN is used.",
    )
    format: Literal["jsonl", "json", "csv", "parquet"] | None = Field(
        default=None, description="File format; default: from the file name (.jsonl, .json, .csv, .parquet)."
    )
    config: str | None = Field(default=None, min_length=1, description="Hub dataset: the config (subset).")
    split: str | None = Field(
        default=None, min_length=1, description="Hub dataset: the split; default: train."
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Hub dataset: branch, tag or commit; default: main."
    )
    records_key: str | None = Field(
        default=None,
        min_length=1,
        description="JSON file holding an object: the key of its list of records; default: its only list.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Template field -> record field, for template fields named unlike the dataset's "
        "(e.g. {question: input}); unmapped template fields read the record field of the same name.",
    )
    ground_truth: str | None = Field(
        default=None,
        min_length=1,
        description="Record field with the reference answer (a string or a list of strings), kept on "
        "every prompt; default: the first of answer, answers, reference_answer, ground_truth, output.",
    )
    system_prompt: str | None = Field(
        default=None, min_length=1, description="Record field with a system prompt sent before the prompt."
    )
    messages: str | None = Field(
        default=None,
        min_length=1,
        description="Record field with a chat conversation (a list of {role, content} or ShareGPT "
        "{from, value}) sent as chat messages up to its last user turn; the prompt template is unused.",
    )
    id_field: str | None = Field(
        default=None,
        min_length=1,
        description="Record field with the record id; default: id, else its position.",
    )
    malformed_rows: Literal["error", "skip"] = Field(
        default="error",
        description="A row that is not an object or lacks a field: 'error' refuses the dataset naming the "
        "rows (file, line); 'skip' leaves them out, counted and named.",
    )
    max_records: int | None = Field(default=None, ge=1, description="Read at most this many records.")

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value.startswith(HUB_DATASET_PREFIX):
            repo_id = value[len(HUB_DATASET_PREFIX) :]
            if not re.match(HUB_REPO_ID_PATTERN, repo_id):
                raise ValueError("a Hub dataset is hf:OWNER/NAME (letters, digits, '-', '_', '.')")
        elif "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError(f"unsupported scheme {value.split('://', 1)[0]}://; give a path, s3:// or hf:")
        return value

    @model_validator(mode="after")
    def _hub_options_need_a_hub_source(self) -> DatasetSpec:
        hub_only = [name for name in ("config", "split", "revision") if getattr(self, name) is not None]
        if hub_only and not self.source.startswith(HUB_DATASET_PREFIX):
            raise ValueError(f"{', '.join(hub_only)} apply to Hub datasets (source: hf:OWNER/NAME) only")
        return self


class UniformLength(SuiteModel):
    """Every length in [min_tokens, max_tokens] equally likely."""

    distribution: Literal["uniform"]
    min_tokens: int = Field(ge=1)
    max_tokens: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self


class NormalLength(SuiteModel):
    """Lengths around mean_tokens, rounded; draws outside [min_tokens, max_tokens] are drawn again."""

    distribution: Literal["normal"]
    mean_tokens: float = Field(gt=0)
    stddev_tokens: float = Field(ge=0)
    min_tokens: int | None = Field(default=None, ge=1, description="Default: one above the shared prefix.")
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> NormalLength:
        if self.max_tokens is not None and (self.min_tokens or 1) > self.max_tokens:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self


LengthDistribution = Annotated[UniformLength | NormalLength, Field(discriminator="distribution")]


class SyntheticSpec(SuiteModel):
    """Prompts of random words made to an exact length in the workload tokenizer's tokens."""

    prompt_tokens: int | LengthDistribution = Field(
        description="Prompt length in tokens: a number, or {distribution: uniform, min_tokens, max_tokens}, "
        "or {distribution: normal, mean_tokens, stddev_tokens[, min_tokens, max_tokens]}."
    )
    shared_prefix_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens every prompt starts with, identical across prompts (measures prefix caching).",
    )

    @field_validator("prompt_tokens")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _prefix_fits(self) -> SyntheticSpec:
        lengths = self.prompt_tokens
        shortest = lengths if isinstance(lengths, int) else lengths.min_tokens
        if shortest is not None and self.shared_prefix_tokens and self.shared_prefix_tokens >= shortest:
            raise ValueError(
                f"shared_prefix_tokens ({self.shared_prefix_tokens}) must be below the shortest prompt "
                f"({shortest} tokens)"
            )
        return self


class TokenBin(SuiteModel):
    """Prompts whose token count is in [min_tokens, max_tokens)."""

    min_tokens: int = Field(ge=0, le=MAX_TOKENS)
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    name: Name | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TokenBin:
        if self.min_tokens >= self.max_tokens:
            raise ValueError("min_tokens must be below max_tokens")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.min_tokens}-{self.max_tokens}"


# Platforms whose servers take vLLM's ``min_tokens`` and ``ignore_eos`` (OpenAI-compatible ones).
FIXED_OUTPUT_PLATFORMS = ("openai", "emulator")


class InferenceParameters(SuiteModel):
    max_new_tokens: int = Field(default=128, ge=1, le=32768)
    temperature: float = Field(default=0.1, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = True
    fixed_output_tokens: bool = Field(
        default=False,
        description="Ask for exactly max_new_tokens output tokens (ignore_eos: true and min_tokens = "
        "max_tokens, vLLM's extensions), so that configurations are compared on equal work. "
        "OpenAI-compatible targets (openai, emulator) only.",
    )


DEFAULT_PROMPT_TEMPLATE = "{context}\n\nQuestion: {question}\nAnswer:"


class Workload(SuiteModel):
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    synthetic: SyntheticSpec | None = Field(
        default=None, description="Synthetic prompts of exact token lengths instead of a dataset."
    )
    prompt_template: str = Field(
        default=DEFAULT_PROMPT_TEMPLATE,
        description="Python format string over the dataset record's fields.",
    )
    bins: list[TokenBin] = Field(min_length=1)
    tokenizer: str = Field(
        default="simple",
        description="'simple' (words and punctuation marks), or hf:MODEL_ID[@REVISION] (the model's "
        "tokenizer.json from the Hub), hf:PATH (a tokenizer.json or a folder holding one) or "
        "hf:s3://bucket/key.",
    )
    max_prompts_per_bin: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REQUESTS_PER_PHASE,
        description="At most this many prompts per bin (the first in dataset order); default: all.",
    )
    repeat: Literal["cycle", "error"] = Field(
        default="cycle",
        description="When a bin has fewer distinct prompts than requests: 'cycle' reuses them in the same "
        "order (the reuse is counted and reported), 'error' refuses to send a prompt twice.",
    )
    seed: int = Field(default=0, description="Seed of the prompt order and of synthetic prompts.")
    inference: InferenceParameters = Field(default_factory=InferenceParameters)

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, value: str) -> str:
        try:
            return check_tokenizer_spec(value)
        except TokenizerError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("prompt_template")
    @classmethod
    def _parsable_template(cls, value: str) -> str:
        template_fields(value)
        return value

    @model_validator(mode="after")
    def _one_prompt_source(self) -> Workload:
        # Compared with the defaults rather than with the fields given, so that a dumped branch spec (all
        # defaults written out) validates again unchanged.
        if self.synthetic is not None and self.dataset != DatasetSpec():
            raise ValueError("give dataset or synthetic, not both")
        template_given = self.prompt_template != DEFAULT_PROMPT_TEMPLATE
        if template_given and (self.synthetic is not None or self.dataset.messages is not None):
            where = "synthetic prompts" if self.synthetic is not None else "dataset.messages"
            raise ValueError(f"prompt_template does not apply to {where}")
        return self

    @model_validator(mode="after")
    def _bins_disjoint(self) -> Workload:
        ordered = sorted(self.bins, key=lambda b: b.min_tokens)
        for left, right in itertools.pairwise(ordered):
            if right.min_tokens < left.max_tokens:
                raise ValueError(f"bins {left.label} and {right.label} overlap")
        labels = [b.label for b in self.bins]
        if len(set(labels)) != len(labels):
            raise ValueError("bin names must be unique")
        return self


def template_fields(template: str) -> list[str]:
    """Names a prompt template reads; raises ValueError for a malformed template."""
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed template: {exc}") from exc
    names = []
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ValueError(f"template fields must be plain names, got {{{field_name}}}")
        # A format spec pads or truncates text (and {question:>5000000} makes 5 MB of every prompt); a
        # conversion (!r) quotes it: neither has a place in a prompt, so neither is formatted at all.
        if format_spec or conversion:
            shown = (
                field_name
                + (f"!{conversion}" if conversion else "")
                + (f":{format_spec}" if format_spec else "")
            )
            raise ValueError(f"template fields take no format spec or conversion, got {{{shown}}}")
        names.append(field_name)
    return names


# ----------------------------------------------------------------------------------------- load, slo


Arrival = Literal["poisson", "constant"]


class ClientCheck(SuiteModel):
    """Limits past which a load point measures the runner rather than the endpoint (it is client-bound)."""

    max_schedule_lag_p99_s: float = Field(
        default=0.05,
        ge=0,
        description="Highest p99 schedule lag (send time minus scheduled time) of the measured requests, s.",
    )
    max_runner_cpu_fraction: float = Field(
        default=0.9,
        ge=0,
        description="Highest runner process CPU time / wall time over the load point (1.0 = one core busy).",
    )
    max_loop_lag_p99_s: float = Field(
        default=0.02,
        ge=0,
        description="Highest p99 lateness of the runner's event loop (a heartbeat every 10 ms), s: above "
        "it the runner waited for a CPU core (other processes, or its own work), so its timestamps are late.",
    )


class ServerMetricsOptions(SuiteModel):
    """Scraping an OpenAI-compatible server's Prometheus ``/metrics`` while each load point runs."""

    enabled: bool = Field(default=True, description="Scrape emulator and openai targets' /metrics.")
    scrape_interval_s: float = Field(
        default=1.0, ge=0.1, le=60, description="Seconds between two scrapes of one load point."
    )


class Level(NamedTuple):
    """One step of a sweep: a closed-loop concurrency or an open-loop arrival rate (the other is None)."""

    concurrency: int | None
    request_rate_per_s: float | None


class PlannedPoint(NamedTuple):
    """One load point of a sweep: a level over the prompts of one bin."""

    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str


SearchMode = Literal["concurrency", "rate"]


class LoadSearch(SuiteModel):
    """Find each branch's highest load that meets the suite's SLO (docs/capacity.md).

    The runner expands from ``start`` (doubling) until a level fails the SLO or ``max`` is reached, then
    bisects between the last passing and the first failing level until the bracket is within ``step``
    (concurrency) or ``tolerance`` (rate, relative), ``max_points`` levels were tried, or ``max_duration_s``
    has passed. Every level tried is a load point like a sweep's, over every bin.
    """

    mode: SearchMode = Field(
        description="concurrency: closed loop (requests in flight); rate: open loop (requests per second)."
    )
    start: float = Field(gt=0, le=100_000, description="First level tried (a whole number for concurrency).")
    max: float = Field(gt=0, le=100_000, description="Highest level tried (a whole number for concurrency).")
    max_points: int = Field(
        default=8, ge=1, le=64, description="Most levels tried (each runs once per bin); bounds the estimate."
    )
    max_duration_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_PHASE_S,
        description="No new level starts after this many seconds of search (the level under way finishes).",
    )
    step: int = Field(
        default=1, ge=1, le=4096, description="Concurrency: stop when the bracket is at most this wide."
    )
    tolerance: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Rate: stop when the bracket's width is at most this fraction of its passing end.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> LoadSearch:
        if self.start > self.max:
            raise ValueError(f"start {self.start:g} is above max {self.max:g}")
        whole = self.start == int(self.start) and self.max == int(self.max) and self.max <= 4096
        if self.mode == "concurrency" and not whole:
            raise ValueError("concurrency start and max must be whole numbers between 1 and 4096")
        return self

    def level(self, value: float) -> Level:
        """A level of this search as a sweep's level: a concurrency or a rate."""
        return Level(int(value), None) if self.mode == "concurrency" else Level(None, value)


def _searches(info: ValidationInfo, mode: SearchMode) -> bool:
    """Whether the plan validated so far has a search of this mode (its settings then apply too)."""
    search = info.data.get("search")
    return isinstance(search, LoadSearch) and search.mode == mode


class LoadPlan(SuiteModel):
    """The sweep: closed-loop concurrency levels and/or open-loop request rates, each across every bin.

    Both kinds may be given; they run as separate sweeps (concurrency levels first). The cross-field
    checks are field validators, not one model validator, so that each problem names its own field.
    Field order matters for them: a validator sees only the fields declared above it.
    """

    concurrency: list[int] = Field(
        default_factory=list, description="Closed-loop concurrency levels (requests in flight), in order."
    )
    rates_per_s: list[float] = Field(
        default_factory=list, description="Open-loop arrival rates in requests per second, in order."
    )
    search: LoadSearch | None = Field(
        default=None,
        description="Search each branch's highest load that meets the SLO, after the sweep "
        "(docs/capacity.md).",
    )
    arrival: Arrival = Field(
        default="poisson",
        description="Open-loop arrivals: 'poisson' (exponential gaps, seeded) or 'constant' (1/rate apart).",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Open loop: cap on requests in flight; arrivals beyond it wait, and the wait is lag.",
    )
    seed: int = Field(default=0, description="Seed of the Poisson arrival schedule (same for every target).")
    requests_per_level: int | None = Field(
        default=None, ge=1, le=MAX_REQUESTS_PER_PHASE, description="Measured requests per level."
    )
    duration_s: float | None = Field(
        default=None, gt=0, le=MAX_PHASE_S, description="Measured seconds per level."
    )
    warmup_requests: int = Field(
        default=0, ge=0, le=MAX_REQUESTS_PER_PHASE, description="Requests before the window, per level."
    )
    warmup_s: float | None = Field(
        default=None, gt=0, le=MAX_PHASE_S, description="Seconds before the window, per level."
    )
    cooldown_requests: int = Field(
        default=0, ge=0, le=MAX_REQUESTS_PER_PHASE, description="Requests after the window, per level."
    )
    cooldown_s: float | None = Field(
        default=None, gt=0, le=MAX_PHASE_S, description="Seconds after the window, per level."
    )
    ramp_up_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description=(
            "Closed loop: spread the workers' first requests evenly over this many seconds (worker i of N "
            "starts i x ramp_up_s / N after the level's start); 0 starts them together. With answers of "
            "equal length, workers that start together stay in step and reach the endpoint in bursts."
        ),
    )
    request_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    client_check: ClientCheck = Field(default_factory=ClientCheck)
    server_metrics: ServerMetricsOptions = Field(default_factory=ServerMetricsOptions)

    @field_validator("concurrency")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if any(level < 1 or level > 4096 for level in value):
            raise ValueError("levels must be between 1 and 4096")
        if len(set(value)) != len(value):
            raise ValueError("levels must be unique")
        return value

    @field_validator("rates_per_s")
    @classmethod
    def _positive_unique_rates(cls, value: list[float]) -> list[float]:
        if any(not 0 < rate <= 100_000 for rate in value):
            raise ValueError("rates must be above 0 and at most 100000 requests per second")
        if len(set(value)) != len(value):
            raise ValueError("rates must be unique")
        return value

    @field_validator("search")
    @classmethod
    def _search_replaces_its_sweep(cls, value: LoadSearch | None, info: ValidationInfo) -> LoadSearch | None:
        if value is None:
            return value
        swept = "concurrency" if value.mode == "concurrency" else "rates_per_s"
        if info.data.get(swept):
            raise ValueError(
                f"a {value.mode} search and {swept} levels would measure the same levels twice: give one"
            )
        return value

    # Field validators run only for values the user gave, so these flag the settings that would otherwise
    # be ignored silently. The default arrival passes, so that a dumped plan validates again unchanged.
    # A field that failed its own validation is absent from info.data.
    @field_validator("arrival", "max_in_flight")
    @classmethod
    def _open_loop_only(cls, value: Any, info: ValidationInfo) -> Any:
        if (
            value not in (None, "poisson")
            and info.data.get("rates_per_s") == []
            and not _searches(info, "rate")
        ):
            raise ValueError("applies to rates_per_s (open loop) only; a closed loop's cap is its level")
        return value

    @field_validator("ramp_up_s")
    @classmethod
    def _closed_loop_only(cls, value: float, info: ValidationInfo) -> float:
        if value and info.data.get("concurrency") == [] and not _searches(info, "concurrency"):
            raise ValueError("applies to concurrency levels (closed loop) only")
        return value

    @field_validator("warmup_s")
    @classmethod
    def _one_warmup_rule(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("warmup_requests", 0) > 0:
            raise ValueError("give warmup_requests or warmup_s, not both")
        return value

    @field_validator("cooldown_s")
    @classmethod
    def _one_cooldown_rule(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("cooldown_requests", 0) > 0:
            raise ValueError("give cooldown_requests or cooldown_s, not both")
        return value

    @model_validator(mode="after")
    def _one_stop_rule(self) -> LoadPlan:
        if not self.concurrency and not self.rates_per_s and self.search is None:
            raise ValueError("give concurrency (closed loop), rates_per_s (open loop), search, or several")
        if (self.requests_per_level is None) == (self.duration_s is None):
            raise ValueError("give exactly one of requests_per_level or duration_s")
        return self

    @property
    def level_count(self) -> int:
        """The sweep's levels plus, with a search, the most levels it may try (an upper bound)."""
        searched = self.search.max_points if self.search is not None else 0
        return len(self.concurrency) + len(self.rates_per_s) + searched

    def levels(self) -> list[Level]:
        """The sweep's order, written only here: every concurrency level, then every rate."""
        return [Level(level, None) for level in self.concurrency] + [
            Level(None, rate) for rate in self.rates_per_s
        ]

    def points(self, bin_labels: Sequence[str]) -> list[PlannedPoint]:
        """Every load point in the order the runner sweeps them: each level across all the bins."""
        return [PlannedPoint(*level, label) for level in self.levels() for label in bin_labels]

    @property
    def requests_per_point(self) -> int | None:
        """Requests one load point sends, all phases included; None when any phase is timed."""
        if self.requests_per_level is None or self.warmup_s is not None or self.cooldown_s is not None:
            return None
        return self.warmup_requests + self.requests_per_level + self.cooldown_requests

    @property
    def connection_pool_size(self) -> int:
        """Connections a client needs so that its pool never holds a request back.

        A request waiting for a pooled connection is already timed as sent, so a pool smaller than the
        requests in flight would bill a queue inside the client to the endpoint's latency. An uncapped
        open loop has at most the arrivals of one request timeout in flight; the factor 2 covers Poisson
        bursts. The pool is a limit, not an allocation: a large one costs nothing until used.
        """
        sizes = list(self.concurrency)
        rates = list(self.rates_per_s)
        search = self.search
        if search is not None:
            if search.mode == "concurrency":
                sizes.append(int(search.max))
            else:
                rates.append(search.max)
        if rates:
            uncapped = math.ceil(max(rates) * self.request_timeout_s * 2)
            sizes.append(self.max_in_flight or uncapped)
        return max(1, *sizes)


class Slo(SuiteModel):
    p95_latency_s: float | None = Field(default=None, gt=0)
    p95_ttft_s: float | None = Field(default=None, gt=0)
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The accuracy floor: the share of judged prompts whose majority verdict is 'correct' "
        "(a prompt without a majority counts against it); needs the suite's evaluation section.",
    )
    # Per-request SLOs: goodput counts the measured requests that met every one set (docs/metrics.md).
    request_ttft_s: float | None = Field(
        default=None, gt=0, description="Goodput: a request's time to first token at most this, seconds."
    )
    request_tpot_s: float | None = Field(
        default=None, gt=0, description="Goodput: a request's time per output token at most this, seconds."
    )
    request_latency_s: float | None = Field(
        default=None, gt=0, description="Goodput: a request's end-to-end latency at most this, seconds."
    )


class Pricing(SuiteModel):
    instance_price_per_hour_usd: dict[
        Annotated[str, Field(pattern=PRICED_INSTANCE_TYPE_PATTERN)], Annotated[float, Field(ge=0)]
    ] = Field(
        default_factory=dict,
        description="Overrides of the bundled on-demand price table, finite and at least 0. Every key "
        "must be the instance_type of a target of the suite: a price that applies to none is refused, "
        "with the nearest instance type in use when it looks like a typo of one.",
    )
    from_api: bool = Field(
        default=False,
        description="Read prices from the AWS Price List API when the run is planned (falls back to the "
        "bundled table, with a note, when the API cannot be read).",
    )


class ReportOptions(SuiteModel):
    title: str | None = None
    headline_bin: str | None = Field(
        default=None, description="Prompt bin of the headline result; default: the largest bin."
    )
    cost_per_transactions: int = Field(
        default=10_000, ge=1, le=1_000_000_000, description="Scale of the price chart."
    )


# Longer than the longest branch the stack's defaults allow (1 h to deploy, the 4 h runner timeout, 10 min to
# delete: 5.2 h); short enough that an endpoint leaked by every other safeguard costs hours, not days.
DEFAULT_ENDPOINT_TTL_S = 6 * 3600


class ExecutionOptions(SuiteModel):
    max_parallel_branches: int = Field(default=4, ge=1, le=100)
    endpoint_ttl_s: int = Field(
        default=DEFAULT_ENDPOINT_TTL_S,
        ge=900,
        le=7 * 24 * 3600,
        description="Seconds after its creation when a deployed endpoint may be deleted by the sweeper, "
        "whether or not its run still goes on (tag fmbench:expires-at); the backstop for a run that "
        "leaked it.",
    )


class Budget(SuiteModel):
    """The most a run may cost; checked against the cost estimate before anything is deployed."""

    max_usd: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Refuse the suite when its estimated cost (an upper bound: see docs/operations.md) "
        "exceeds this many USD; null: no limit.",
    )


RegressionMetric = Literal["latency_p95", "ttft_p95", "transactions_per_minute", "error_rate", "accuracy"]
REGRESSION_METRICS: tuple[RegressionMetric, ...] = (
    "latency_p95",
    "ttft_p95",
    "transactions_per_minute",
    "error_rate",
    "accuracy",
)
RUN_ID_TEXT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RegressionThresholds(SuiteModel):
    """How large a change must be to count, in the direction that is worse; each also needs significance."""

    latency_p95_pct: float = Field(default=10.0, gt=0, description="p95 end-to-end latency rise, percent.")
    ttft_p95_pct: float = Field(default=10.0, gt=0, description="p95 time-to-first-token rise, percent.")
    transactions_per_minute_pct: float = Field(
        default=10.0, gt=0, lt=100, description="Drop of successful transactions per minute, percent."
    )
    error_rate_points: float = Field(
        default=1.0, gt=0, le=100, description="Rise of the error rate, percentage points."
    )
    accuracy_points: float = Field(
        default=2.0,
        gt=0,
        le=100,
        description="Drop of judged accuracy, percentage points; skipped while a run has no judgments.",
    )


class RegressionOptions(SuiteModel):
    """Compare every run with a baseline and call it regressed or pass (docs/regression.md)."""

    baseline: str = Field(
        default="latest",
        description="A run id, or 'latest': the latest successful run of the same suite name under the same "
        "results root.",
    )
    metrics: list[RegressionMetric] = Field(
        default_factory=lambda: list(REGRESSION_METRICS), min_length=1, description="Metrics compared."
    )
    thresholds: RegressionThresholds = Field(default_factory=RegressionThresholds)
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="Confidence level of the intervals and tests (0.95: 95 %)."
    )
    resamples: int = Field(default=2000, ge=200, le=100_000, description="Bootstrap resamples per metric.")
    seed: int = Field(default=0, description="Seed of the bootstrap, so a comparison repeats exactly.")

    @field_validator("baseline")
    @classmethod
    def _baseline_text(cls, value: str) -> str:
        if value != "latest" and not RUN_ID_TEXT.match(value):
            raise ValueError("must be 'latest' or a run id (1-64 letters, digits, '_', '.' or '-')")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[RegressionMetric]) -> list[RegressionMetric]:
        if len(set(value)) != len(value):
            raise ValueError("names a metric twice")
        return value


# ----------------------------------------------------------------------------------------- evaluation


class Judge(SuiteModel):
    """One judge of the panel: a Bedrock model (``model_id``) or a target definition (``target``)."""

    name: Name = Field(description="The judge's name in the panel (and in the judgment rows).")
    model_id: str | None = Field(
        default=None,
        min_length=1,
        description="Bedrock model id or inference profile id (the usual way), called through Converse.",
    )
    target: Target | None = Field(
        default=None,
        description="Any target definition instead (platform openai, sagemaker with endpoint_name, "
        "emulator, bedrock): the judge is called as a branch calls that target.",
    )
    family: JudgeFamily | None = Field(
        default=None,
        description="The judge prompt template (anthropic, llama, mistral, nova, generic); default: "
        "detected from the model id (or the target's model).",
    )
    region: str | None = Field(
        default=None,
        pattern=AWS_REGION_PATTERN,
        description="Bedrock judge: AWS region; default: the runner's.",
    )
    endpoint_url: HttpUrl | None = Field(
        default=None, description="Bedrock judge: runtime URL override (a VPC endpoint, or an emulator)."
    )
    input_price_per_1k_tokens_usd: float = Field(
        default=0.0, ge=0, description="Price of 1,000 judge prompt tokens, USD (on-demand)."
    )
    output_price_per_1k_tokens_usd: float = Field(
        default=0.0, ge=0, description="Price of 1,000 judge answer tokens, USD (on-demand)."
    )

    @model_validator(mode="after")
    def _one_model(self) -> Judge:
        if (self.model_id is None) == (self.target is None):
            raise ValueError("give exactly one of model_id (a Bedrock model) or target")
        if self.target is not None and (self.region is not None or self.endpoint_url is not None):
            raise ValueError("region and endpoint_url apply to a model_id judge; set them in the target")
        if isinstance(self.target, SageMakerTarget) and self.target.needs_deploy:
            raise ValueError("a SageMaker judge needs endpoint_name (judges are not deployed)")
        if isinstance(self.target, Ec2Target):
            raise ValueError(
                "an ec2 judge would be launched, and judges are not deployed: give the server you run as an "
                "openai target (its URL)"
            )
        return self

    @property
    def model(self) -> str:
        """The judge's model id, as the judgment rows name it."""
        if self.model_id is not None:
            return self.model_id
        target = self.target
        if isinstance(target, BedrockTarget):
            return target.model_id
        return (target.model if target is not None else "") or (target.name if target is not None else "")

    @property
    def resolved_family(self) -> JudgeFamily:
        return self.family or family_of(self.model)


# The default panel (PoLL: judges of different families). Bedrock model ids (US cross-region inference
# profiles, which these models need for on-demand calls in us-east-1) and their on-demand prices in USD per
# 1,000 tokens, input and output, as listed on https://aws.amazon.com/bedrock/pricing/ (2025). Prices
# change: check before quoting them.
DEFAULT_JUDGES: tuple[dict[str, Any], ...] = (
    {
        "name": "claude-3-5-haiku",
        "model_id": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "input_price_per_1k_tokens_usd": 0.0008,
        "output_price_per_1k_tokens_usd": 0.004,
    },
    {
        "name": "llama-3-3-70b",
        "model_id": "us.meta.llama3-3-70b-instruct-v1:0",
        "input_price_per_1k_tokens_usd": 0.00072,
        "output_price_per_1k_tokens_usd": 0.00072,
    },
    {
        "name": "nova-pro",
        "model_id": "us.amazon.nova-pro-v1:0",
        "input_price_per_1k_tokens_usd": 0.0008,
        "output_price_per_1k_tokens_usd": 0.0032,
    },
)


def _default_judges() -> list[Judge]:
    return [Judge.model_validate(judge) for judge in DEFAULT_JUDGES]


class JudgeInference(SuiteModel):
    temperature: float = Field(default=0.0, ge=0, le=2, description="Judge sampling temperature.")
    max_tokens: int = Field(default=256, ge=16, le=4096, description="Most tokens of one verdict.")


class EmbeddingsSpec(SuiteModel):
    """Where the answers' embeddings come from, for their cosine similarity to the reference."""

    model_id: str | None = Field(
        default=None,
        min_length=1,
        description="A Bedrock embeddings model, e.g. amazon.titan-embed-text-v2:0.",
    )
    url: HttpUrl | None = Field(
        default=None, description="An OpenAI-compatible embeddings API base URL (…/v1; /embeddings is added)."
    )
    model: str = Field(default="", description="The model name sent to the OpenAI-compatible API.")
    region: str | None = Field(default=None, pattern=AWS_REGION_PATTERN)
    endpoint_url: HttpUrl | None = Field(default=None, description="Bedrock runtime URL override.")
    price_per_1k_tokens_usd: float = Field(default=0.0, ge=0, description="Price of 1,000 embedded tokens.")

    @model_validator(mode="after")
    def _one_source(self) -> EmbeddingsSpec:
        if (self.model_id is None) == (self.url is None):
            raise ValueError("give exactly one of model_id (Bedrock) or url (OpenAI-compatible)")
        return self


class Evaluation(SuiteModel):
    """Accuracy by a panel of LLM judges (PoLL), each prompt decided by the majority of their votes."""

    judges: list[Judge] = Field(
        default_factory=_default_judges,
        min_length=1,
        max_length=9,
        description="The panel; default: Claude 3.5 Haiku, Llama 3.3 70B Instruct and Amazon Nova Pro on "
        "Bedrock (docs/accuracy.md). An odd number avoids ties.",
    )
    max_answers_per_bin: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Answers judged per candidate and bin: one per distinct prompt (the same prompts for "
        "every candidate, in a seeded order), at most this many.",
    )
    inference: JudgeInference = Field(default_factory=JudgeInference)
    max_concurrency: int = Field(default=4, ge=1, le=256, description="Calls in flight per judge.")
    retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries of a throttled, timed-out or failed (5xx, connection) judge call, with "
        "exponential backoff.",
    )
    backoff_s: float = Field(default=1.0, ge=0, le=60, description="First retry's wait; doubled each time.")
    request_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="Bound of one judge call.")
    lexical: bool = Field(
        default=True, description="Also compute token F1 and ROUGE-L of each answer against its reference."
    )
    embeddings: EmbeddingsSpec | None = Field(
        default=None, description="Also compute the cosine similarity of answer and reference embeddings."
    )
    seed: int = Field(default=0, description="Seed of which prompts are judged when a bin has more.")
    quality_pass: bool = Field(
        default=False,
        description="After each branch's load, send every prompt that is judged once more, one at a time "
        "(concurrency 1) at temperature 0, and judge those answers instead of the answers under load "
        "(docs/accuracy.md). Its requests are records of phase 'quality', in no latency figure.",
    )

    @field_validator("judges")
    @classmethod
    def _unique_judges(cls, value: list[Judge]) -> list[Judge]:
        names = [judge.name for judge in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"judge names must be unique: {', '.join(twice)}")
        return value


class CapacityPlanOptions(SuiteModel):
    """Instances each branch needs to carry target loads, from its best SLO-meeting point
    (docs/capacity.md).
    """

    target_requests_per_minute: list[float] = Field(
        min_length=1,
        max_length=50,
        description="Loads to plan for, in successful requests per minute (each above 0).",
    )

    @field_validator("target_requests_per_minute")
    @classmethod
    def _positive_unique_targets(cls, value: list[float]) -> list[float]:
        if any(not 0 < rpm <= 1e9 for rpm in value):
            raise ValueError("targets must be above 0 and at most 1e9 requests per minute")
        if len(set(value)) != len(value):
            raise ValueError("targets must be unique")
        return value


# ---------------------------------------------------------------------------------------------- suite


class Suite(SuiteModel):
    """One benchmark: targets x workload x load, judged against the SLOs."""

    name: Name
    description: str = ""
    targets: list[Target] = Field(default_factory=list)
    matrix: list[MatrixSpec] = Field(default_factory=list)
    workload: Workload
    load: LoadPlan
    slo: Slo = Field(default_factory=Slo)
    pricing: Pricing = Field(default_factory=Pricing)
    report: ReportOptions = Field(default_factory=ReportOptions)
    execution: ExecutionOptions = Field(default_factory=ExecutionOptions)
    budget: Budget = Field(default_factory=Budget)
    regression: RegressionOptions | None = Field(
        default=None, description="Compare each run with a baseline run; null: no comparison."
    )
    evaluation: Evaluation | None = Field(
        default=None,
        description="Judge the answers' accuracy with a panel of LLM judges (docs/accuracy.md); null: none.",
    )
    capacity: CapacityPlanOptions | None = Field(
        default=None, description="Plan instances for target loads from the measured capacity; null: none."
    )

    def expanded_targets(self) -> list[Any]:
        """Explicit targets followed by matrix combinations (already validated by ``load_suite``)."""
        return [expanded.target for expanded in self.expanded()]

    def expanded(self) -> list[ExpandedTarget]:
        """Every target with where the user wrote it (already validated by ``load_suite``)."""
        expanded, _ = expand_targets(self)
        return expanded


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9]+", "-", str(value)).strip("-").lower()
    return text or "x"


@dataclass(frozen=True, slots=True)
class ExpandedTarget:
    """One target of the suite and where it is written: ``targets.N``, or ``matrix.N`` (which varies
    ``varied`` over a base); a problem found later in one of its fields is reported at that place."""

    target: Any
    location: str
    varied: frozenset[str] = frozenset()

    @property
    def from_matrix(self) -> bool:
        return self.location.startswith("matrix.")

    def field_path(self, field: str) -> str:
        """Where the user wrote ``field`` (dotted) of this target."""
        if not self.from_matrix:
            return f"{self.location}.{field}"
        part = "vary" if field.split(".", 1)[0] in self.varied else "base"
        return f"{self.location}.{part}.{field}"


def expand_targets(suite: Suite) -> tuple[list[ExpandedTarget], list[SuiteProblem]]:
    """The suite's targets (explicit ones, then each matrix's combinations) and the problems of the
    combinations that are not valid targets, each at the place it is written."""
    expanded = [ExpandedTarget(t, f"targets.{index}") for index, t in enumerate(suite.targets)]
    problems: list[SuiteProblem] = []
    for m_index, spec in enumerate(suite.matrix):
        keys = list(spec.vary)
        base_name = str(spec.base.get("name", "matrix"))
        for values in itertools.product(*(spec.vary[k] for k in keys)):
            candidate = dict(spec.base)
            candidate.update(zip(keys, values, strict=True))
            candidate["name"] = "-".join([base_name, *(_slug(v) for v in values)])[:63]
            try:
                target = TARGET_ADAPTER.validate_python(candidate)
            except ValidationError as exc:
                for error in exc.errors():
                    loc = _strip_union_tags(error["loc"])
                    field = str(loc[0]) if loc else ""
                    prefix = (
                        f"matrix.{m_index}.vary.{field}" if field in spec.vary else f"matrix.{m_index}.base"
                    )
                    rest = ".".join(str(p) for p in loc[1:]) if field in spec.vary else _join(loc)
                    combo = ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
                    path = f"{prefix}.{rest}" if rest else prefix
                    problems.append(SuiteProblem(path=path, reason=f"{_reason(error)} (combination {combo})"))
            else:
                expanded.append(ExpandedTarget(target, f"matrix.{m_index}", frozenset(keys)))
    return expanded, problems


# ------------------------------------------------------------------------------------------ loading


def _strip_union_tags(loc: Iterable[Any]) -> tuple[Any, ...]:
    """Pydantic puts the discriminator value into the location of a tagged union; users never wrote it."""
    parts = list(loc)
    return tuple(
        p for i, p in enumerate(parts) if not (p in PLATFORMS and (i == 0 or isinstance(parts[i - 1], int)))
    )


def _join(loc: Iterable[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _reason(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if (
        error["type"] == "string_pattern_mismatch"
        and error.get("ctx", {}).get("pattern") == INSTANCE_TYPE_PATTERN
    ):
        message = "not an instance type: must look like ml.FAMILY.SIZE, e.g. ml.g5.2xlarge"
    if (
        error["type"] == "string_pattern_mismatch"
        and error.get("ctx", {}).get("pattern") == PRICED_INSTANCE_TYPE_PATTERN
    ):
        message = (
            "not an instance type: must look like ml.FAMILY.SIZE (SageMaker) or FAMILY.SIZE (an ec2 "
            "target's), e.g. ml.g5.2xlarge, g5.2xlarge"
        )
    if (
        error["type"] == "string_pattern_mismatch"
        and error.get("ctx", {}).get("pattern") == EC2_INSTANCE_TYPE_PATTERN
    ):
        message = "not an EC2 instance type: must look like FAMILY.SIZE, e.g. g5.2xlarge (no ml. prefix)"
    if isinstance(error.get("input"), NotANumber):
        message = "must be a number, not a boolean (yes/no/true/false/on/off)"
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see schema/suite.schema.json)"
    return message


def problems_from_validation_error(exc: ValidationError, prefix: str = "") -> list[SuiteProblem]:
    problems = []
    for error in exc.errors():
        loc = _strip_union_tags(error["loc"])
        path = _join(loc) or "(suite)"
        if prefix:
            path = f"{prefix}.{path}" if loc else prefix
        problems.append(SuiteProblem(path=path, reason=_reason(error)))
    return problems


def suite_json_schema() -> dict[str, Any]:
    schema = Suite.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "FMBench Flow suite"
    return schema


def write_suite_schema(path: Path) -> None:
    path.write_text(json.dumps(suite_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
