"""The emulator's settings, declared once: for a suite's target, the command line and the child process.

A suite's emulator target (``fmbench.config.EmulatorOptions``) takes :class:`EmulatorBehaviour`'s fields;
``fmbench emulator`` makes one option of each :class:`EmulatorSettings` field (its name with dashes, its
description as help); a child process gets its settings as one JSON document. Adding a knob is one field.

This module imports only pydantic and the profiles, so that validating a suite does not load the server.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fmbench.emulator.profiles import DEFAULT_PROFILE, PROFILES, EmulatorProfile, get_profile


@dataclass(frozen=True)
class OptionGroup:
    """Marks a field whose command-line option is listed under a heading of its own in ``--help``."""

    title: str


_FIXED = OptionGroup("fixed timing (all three or none; overrides the profile's timing)")
_FAULTS = OptionGroup("fault injection (fractions of requests, in [0, 1])")
_ANSWERS = OptionGroup("answers (emulated accuracy, emulated judge; docs/accuracy.md)")

Rate = Annotated[float, Field(ge=0, le=1), _FAULTS]


class EmulatorBehaviour(BaseModel):
    """How fast an emulated endpoint answers and how it fails: what a suite's emulator target may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = Field(
        default=DEFAULT_PROFILE,
        description="Named performance profile (see `fmbench emulator --list-profiles`).",
    )
    ttft_ms: Annotated[float | None, _FIXED] = Field(
        default=None, ge=0, description="Time to first token of every request."
    )
    itl_ms: Annotated[float | None, _FIXED] = Field(
        default=None, ge=0, description="Gap between consecutive tokens."
    )
    output_tokens: Annotated[int | None, _FIXED] = Field(
        default=None, ge=1, description="Tokens generated (fewer if max_tokens is lower)."
    )
    reasoning_tokens: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Chat answers start with this many reasoning tokens (delta.reasoning_content, as vLLM "
        "and DeepSeek send them), counted in max_tokens and completion_tokens.",
    )
    error_500_rate: Rate = Field(default=0.0, description="Answer HTTP 500.")
    error_429_rate: Rate = Field(default=0.0, description="Answer HTTP 429 with Retry-After.")
    hang_rate: Rate = Field(default=0.0, description="Never answer (until the client leaves).")
    cut_stream_rate: Rate = Field(default=0.0, description="Drop the connection mid-response.")
    malformed_event_rate: Rate = Field(
        default=0.0,
        description="Send one unparsable event mid-stream (a bad CRC on Bedrock), or an unparsable body.",
    )
    seed: int = Field(default=0, description="Seed of the timing jitter and of the fault draws.")
    metrics_dialect: Literal["vllm", "tgi", "sglang"] = Field(
        default="vllm",
        description="Whose metric names /metrics publishes its figures under: vLLM's, TGI's or SGLang's.",
    )
    accuracy: Annotated[float | None, _ANSWERS] = Field(
        default=None,
        ge=0,
        le=1,
        description="Probability that an answer starts with the prompt's ground truth (from the run's "
        "prompts file), at a prompt of 0 tokens; otherwise it starts with another prompt's ground truth. "
        "Drawn once per prompt (seeded): the same prompt always gets the same answer.",
    )
    accuracy_drop_per_1k_tokens: Annotated[float, _ANSWERS] = Field(
        default=0.0,
        ge=0,
        le=1,
        description="How much the accuracy falls per 1,000 prompt tokens (linear, floored at 0).",
    )
    judge_error_rate: Annotated[float | None, _ANSWERS] = Field(
        default=None,
        ge=0,
        le=1,
        description="Act as a judge: a judge prompt of fmbench's gets a verdict from comparing its "
        "reference and candidate answers (normalized), flipped at this rate (seeded).",
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None) -> str | None:
        if name is not None and name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        fixed = (self.ttft_ms, self.itl_ms, self.output_tokens)
        if any(v is not None for v in fixed) and not all(v is not None for v in fixed):
            raise ValueError("fixed timing needs all of ttft_ms, itl_ms and output_tokens, or none of them")
        # One uniform draw per request picks at most one fault, so the rates share the unit interval.
        total = (
            self.error_500_rate
            + self.error_429_rate
            + self.hang_rate
            + self.cut_stream_rate
            + self.malformed_event_rate
        )
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault rates add up to {total:g}; one request gets at most one fault, so at most 1"
            )
        return self

    @property
    def fixed_timing(self) -> bool:
        return self.ttft_ms is not None


class EmulatorSettings(EmulatorBehaviour):
    """Everything that shapes one emulator: where it listens, how fast it is and how it fails."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=0, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    model: str = Field(default="emulated-model", min_length=1, description="Model id served.")
    sagemaker_format: Literal["lmi", "tgi", "vllm"] = Field(
        default="lmi",
        description="Answer style of SageMaker invocations with an {inputs, parameters} body (LMI or TGI); "
        "OpenAI chat bodies always get vLLM-style answers, and 'vllm' refuses any other body.",
    )

    prompts_file: str | None = Field(
        default=None,
        description="The run's materialized prompts (datasets/run_id=R/prompts.jsonl): the ground truth "
        "the accuracy option answers with.",
    )
    # Bedrock's control plane (GET /foundation-model-availability/{modelId}): every model id is AVAILABLE
    # and AUTHORIZED except these (a model the account has no access to), to test the Plan's refusal.
    unavailable_models: tuple[str, ...] = Field(
        default=(), description="Model ids the emulated Bedrock control plane reports as not authorized."
    )

    @classmethod
    def for_target(
        cls, behaviour_of_target: EmulatorBehaviour, model: str | None, *, prompts_file: str | None = None
    ) -> Self:
        """The emulator a suite's target asks for (its ``emulator`` options and ``model``), on a free
        loopback port. It takes the options rather than the target so the emulator never imports the suite."""
        behaviour = behaviour_of_target.model_dump()
        if behaviour["ttft_ms"] is not None:
            behaviour["profile"] = None  # fixed timing: the profile's timing is not used
        return cls(
            host="127.0.0.1", port=0, model=model or "emulated-model", prompts_file=prompts_file, **behaviour
        )

    @property
    def resolved_profile(self) -> EmulatorProfile:
        return get_profile(self.profile or DEFAULT_PROFILE)


# ------------------------------------------------------------------------------------------ command line

# Where the command line differs from the field: the port a person starts by hand is a fixed, known one.
_CLI_DEFAULTS: dict[str, Any] = {"port": 8080}
# The order of the options in --help (the fields' own order puts the behaviour first).
_CLI_ORDER = ("host", "port", "model", "profile")


def _option_type(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """The argparse ``type`` and ``choices`` of a field's annotation (``X | None`` reads as ``X``)."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return str, tuple(get_args(annotation))
    return annotation, None


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` option per settings field; one left out keeps the field's default (port: 8080)."""
    fields = EmulatorSettings.model_fields
    adders: dict[OptionGroup | None, Callable[..., argparse.Action]] = {None: parser.add_argument}
    names = [*_CLI_ORDER, *(name for name in fields if name not in _CLI_ORDER)]
    for name in names:
        info = fields[name]
        group = next((m for m in info.metadata if isinstance(m, OptionGroup)), None)
        if group is not None and group not in adders:
            adders[group] = parser.add_argument_group(group.title).add_argument
        option_type, choices = _option_type(info.annotation)
        default = _CLI_DEFAULTS.get(name, info.default)
        help_text = (info.description or "").rstrip(".")
        help_text = help_text[:1].lower() + help_text[1:]
        if default is not None:
            help_text += " (default: %(default)s)"
        adders[group](
            "--" + name.replace("_", "-"),
            dest=name,
            type=option_type,
            choices=choices,
            default=default,
            metavar="NAME" if name == "profile" else None,
            help=help_text,
        )


def settings_from_options(args: argparse.Namespace) -> EmulatorSettings:
    return EmulatorSettings(**{name: getattr(args, name) for name in EmulatorSettings.model_fields})
