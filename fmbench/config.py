"""The suite: what a user asks to benchmark, validated before anything is created or spent."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fmbench.tokenizer import TokenizerError, check_tokenizer_spec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"
BUILTIN_DATASET_PREFIX = "builtin:"


def _check_name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class StrictModel(BaseModel):
    """Every boundary model rejects unknown fields: a typo in a suite must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class _TargetBase(StrictModel):
    name: Name = Field(description="Unique name of this target in the suite.")
    model: str = Field(default="", description="Model id as the endpoint knows it.")
    container: str = Field(default="", description="Serving container (e.g. lmi, tgi, vllm).")
    instance_type: str | None = Field(default=None, description="Instance type, e.g. ml.g5.2xlarge.")
    instance_count: int = Field(default=1, ge=1, le=64)
    environment: dict[str, str] = Field(default_factory=dict, description="Container environment.")


class EmulatorOptions(StrictModel):
    profile: str | None = Field(
        default="g5-2xlarge",
        description="Named performance profile (see `fmbench emulator --list-profiles`).",
    )
    ttft_ms: float | None = Field(default=None, gt=0)
    itl_ms: float | None = Field(default=None, gt=0)
    output_tokens: int | None = Field(default=None, ge=1)
    error_500_rate: float = Field(default=0.0, ge=0, le=1)
    error_429_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    cut_stream_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _fixed_timing_is_all_or_nothing(self) -> EmulatorOptions:
        fixed = [self.ttft_ms, self.itl_ms, self.output_tokens]
        if any(v is not None for v in fixed) and not all(v is not None for v in fixed):
            raise ValueError("fixed timing needs all of ttft_ms, itl_ms and output_tokens")
        faults = self.error_500_rate + self.error_429_rate + self.hang_rate + self.cut_stream_rate
        if faults > 1:
            raise ValueError(
                f"fault rates add up to {faults:g}; one request gets at most one fault, so at most 1"
            )
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        from fmbench.emulator.profiles import PROFILES

        if value is not None and value not in PROFILES:
            raise ValueError(f"unknown profile {value!r}; known: {', '.join(sorted(PROFILES))}")
        return value


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
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class SageMakerModelSource(StrictModel):
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
    payload_format: Literal["lmi", "tgi", "vllm-openai", "custom"] = "lmi"

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


class BedrockTarget(_TargetBase):
    """An Amazon Bedrock model: nothing to deploy or tear down."""

    platform: Literal["bedrock"]
    model_id: str = Field(min_length=1)
    input_price_per_1k_tokens_usd: float | None = Field(default=None, ge=0)
    output_price_per_1k_tokens_usd: float | None = Field(default=None, ge=0)


Target = Annotated[
    EmulatorTarget | OpenAITarget | SageMakerTarget | BedrockTarget,
    Field(discriminator="platform"),
]
TARGET_ADAPTER: TypeAdapter[Any] = TypeAdapter(Target)
PLATFORMS = ("emulator", "openai", "sagemaker", "bedrock")


class MatrixSpec(StrictModel):
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


class DatasetSpec(StrictModel):
    source: str = Field(
        default="builtin:synthetic-qa",
        description="'builtin:NAME' or a path to a JSONL file (relative to the suite file).",
    )
    max_records: int | None = Field(default=None, ge=1, description="Read at most this many records.")


class TokenBin(StrictModel):
    """Prompts whose token count is in [min_tokens, max_tokens)."""

    min_tokens: int = Field(ge=0)
    max_tokens: int = Field(ge=1)
    name: Name | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TokenBin:
        if self.min_tokens >= self.max_tokens:
            raise ValueError("min_tokens must be below max_tokens")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.min_tokens}-{self.max_tokens}"


class InferenceParameters(StrictModel):
    max_new_tokens: int = Field(default=128, ge=1, le=32768)
    temperature: float = Field(default=0.1, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = True


class Workload(StrictModel):
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    prompt_template: str = Field(
        default="{context}\n\nQuestion: {question}\nAnswer:",
        description="Python format string over the dataset record's fields.",
    )
    bins: list[TokenBin] = Field(min_length=1)
    tokenizer: str = "simple"
    max_prompts_per_bin: int = Field(default=50, ge=1)
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
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ValueError(f"template fields must be plain names, got {{{field_name}}}")
        names.append(field_name)
    return names


# ----------------------------------------------------------------------------------------- load, slo


class LoadPlan(StrictModel):
    concurrency: list[int] = Field(min_length=1, description="Closed-loop concurrency levels, in order.")
    requests_per_level: int | None = Field(default=None, ge=1, description="Measured requests per level.")
    duration_s: float | None = Field(default=None, gt=0, description="Measured seconds per level.")
    warmup_requests: int = Field(default=0, ge=0, description="Requests before the window, per level.")
    request_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    @field_validator("concurrency")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if any(level < 1 or level > 4096 for level in value):
            raise ValueError("levels must be between 1 and 4096")
        if len(set(value)) != len(value):
            raise ValueError("levels must be unique")
        return value

    @model_validator(mode="after")
    def _one_stop_rule(self) -> LoadPlan:
        if (self.requests_per_level is None) == (self.duration_s is None):
            raise ValueError("give exactly one of requests_per_level or duration_s")
        return self


class Slo(StrictModel):
    p95_latency_s: float | None = Field(default=None, gt=0)
    p95_ttft_s: float | None = Field(default=None, gt=0)
    max_error_rate: float = Field(default=0.0, ge=0, le=1)


class Pricing(StrictModel):
    instance_price_per_hour_usd: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Overrides of the bundled on-demand price table."
    )


class ReportOptions(StrictModel):
    title: str | None = None
    headline_bin: str | None = Field(
        default=None, description="Prompt bin of the headline result; default: the largest bin."
    )
    cost_per_transactions: int = Field(default=10_000, ge=1, description="Scale of the price chart.")


class ExecutionOptions(StrictModel):
    max_parallel_branches: int = Field(default=4, ge=1, le=100)


# ---------------------------------------------------------------------------------------------- suite


class Suite(StrictModel):
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

    def expanded_targets(self) -> list[Any]:
        """Explicit targets followed by matrix combinations (already validated by ``load_suite``)."""
        targets, _ = expand_targets(self)
        return targets


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9]+", "-", str(value)).strip("-").lower()
    return text or "x"


def expand_targets(suite: Suite) -> tuple[list[Any], list[SuiteProblem]]:
    targets: list[Any] = list(suite.targets)
    problems: list[SuiteProblem] = []
    for m_index, spec in enumerate(suite.matrix):
        keys = list(spec.vary)
        base_name = str(spec.base.get("name", "matrix"))
        for values in itertools.product(*(spec.vary[k] for k in keys)):
            candidate = dict(spec.base)
            candidate.update(zip(keys, values, strict=True))
            candidate["name"] = "-".join([base_name, *(_slug(v) for v in values)])[:63]
            try:
                targets.append(TARGET_ADAPTER.validate_python(candidate))
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
    return targets, problems


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


def semantic_problems(suite: Suite, base_dir: Path | None) -> list[SuiteProblem]:
    """Checks that need the whole suite (and the dataset) rather than one field."""
    targets, problems = expand_targets(suite)
    if not targets and not problems:
        problems.append(
            SuiteProblem(path="targets", reason="the suite has no targets (give targets or matrix)")
        )
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            problems.append(
                SuiteProblem(path=f"targets.{index}.name", reason=f"duplicate target name {target.name!r}")
            )
        seen.setdefault(target.name, index)
    labels = [b.label for b in suite.workload.bins]
    if suite.report.headline_bin is not None and suite.report.headline_bin not in labels:
        problems.append(
            SuiteProblem(
                path="report.headline_bin",
                reason=f"{suite.report.headline_bin!r} is not a bin; bins: {', '.join(labels)}",
            )
        )
    from fmbench.payloads import DatasetError, check_dataset

    try:
        for bin_problem in check_dataset(suite.workload, base_dir=base_dir):
            problems.append(SuiteProblem(path=bin_problem[0], reason=bin_problem[1]))
    except DatasetError as exc:
        problems.append(SuiteProblem(path="workload.dataset.source", reason=str(exc)))
    return problems


def parse_suite_text(text: str, source: str = "<suite>") -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"not valid YAML/JSON at {where}")], source
        ) from None
    return data


def validate_suite_data(data: Any, base_dir: Path | None = None, source: str | None = None) -> Suite:
    """Validate a parsed suite (dict); raise ``SuiteValidationError`` listing every problem."""
    if not isinstance(data, dict):
        raise SuiteValidationError(
            [SuiteProblem(path="(suite)", reason=f"must be a mapping, got {type(data).__name__}")], source
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteValidationError(problems_from_validation_error(exc), source) from None
    problems = semantic_problems(suite, base_dir)
    if problems:
        raise SuiteValidationError(problems, source)
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read a YAML or JSON suite file and validate it completely."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"cannot read: {exc}")], str(file)
        ) from None
    data = parse_suite_text(text, str(file))
    return validate_suite_data(data, base_dir=file.resolve().parent, source=str(file))


def suite_json_schema() -> dict[str, Any]:
    schema = Suite.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "FMBench Flow suite"
    return schema


def write_suite_schema(path: Path) -> None:
    path.write_text(json.dumps(suite_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
