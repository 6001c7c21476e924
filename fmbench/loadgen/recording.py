"""Turns the engine's raw attempts into request records, part by part, off the engine's hot path."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fmbench.config import FIXED_OUTPUT_PLATFORMS
from fmbench.endpoints.base import InvocationResult
from fmbench.loadgen.points import MEASURED, WARMUP, LoadPoint, Phase
from fmbench.payloads import Prompt
from fmbench.records import RequestRecord, paced_slices
from fmbench.tokenizer import Tokenizer

if TYPE_CHECKING:
    from fmbench.loadgen.selfcheck import SelfCheck
    from fmbench.loadgen.timebase import EpochClock
    from fmbench.spec import BranchSpec

TOKEN_SOURCE_SERVER = "server"
TOKEN_SOURCE_TOKENIZER = "tokenizer"
# The server reported one of the two counts and the tokenizer supplied the other.
TOKEN_SOURCE_MIXED = "mixed"


@dataclass(slots=True)
class Attempt:
    """What the engine keeps per request while the load point runs: no conversion, no token counting."""

    seq: int
    phase: Phase
    scheduled_perf_s: float
    prompt: Prompt
    result: InvocationResult

    @property
    def is_warmup(self) -> bool:
        return self.phase == WARMUP

    @property
    def is_measured(self) -> bool:
        return self.phase == MEASURED

    @property
    def schedule_lag_s(self) -> float:
        return self.result.send_perf_s - self.scheduled_perf_s


@dataclass(frozen=True, slots=True)
class RecordContext:
    """The fields every record of a branch shares (the target's identity and price)."""

    suite_name: str
    branch_id: str
    target_name: str
    platform: str
    model: str | None
    container: str | None
    instance_type: str | None
    instance_count: int | None
    instance_price_per_hour_usd: float | None
    api: str | None

    @classmethod
    def for_branch(cls, spec: BranchSpec) -> RecordContext:
        target = spec.target
        return cls(
            suite_name=spec.suite_name,
            branch_id=spec.branch_id,
            target_name=target.name,
            platform=target.platform,
            model=target.model or None,
            container=target.container or None,
            instance_type=spec.instance_type,
            instance_count=target.instance_count,
            instance_price_per_hour_usd=spec.instance_price_per_hour_usd,
            api=getattr(target, "api", None),
        )


def request_id_for(branch_id: str, load_label: str, payload_bin: str, seq: int) -> str:
    """Unique within a branch: ``load_label`` is 'c4' (concurrency 4) or 'r2.5' (2.5 requests per second)."""
    return f"{branch_id}-{load_label}-{payload_bin}-{seq:06d}"


def build_record(
    attempt: Attempt,
    point: LoadPoint,
    context: RecordContext,
    clock: EpochClock,
    tokenizer: Tokenizer,
    check: SelfCheck | None = None,
) -> RequestRecord:
    """Token counts come from the server's usage when it gave them, else from the workload's tokenizer.

    The ``*_local`` counts are always the tokenizer's, so that where the server reported counts the two
    can be compared. The prompt's local count is the one ``build_payloads`` made with the workload's
    tokenizer on the same text, so it is reused rather than recounted. A failed request gets a completion
    count only from the server (a partial answer's count would look like a real output length).
    ``check`` is the client self-check of the part of the load point the attempt was written in.

    A reasoning model's reasoning tokens are completion tokens too (servers count them so): the local
    completion count adds the local count of the reasoning text, and ``reasoning_tokens`` is the server's
    count when its usage had one, else the local one.
    """
    result = attempt.result
    to_epoch_s = clock.to_epoch_s
    send_perf_s = result.send_perf_s
    first_perf_s = result.first_token_perf_s
    answer_perf_s = result.first_answer_perf_s
    chunks = result.chunk_perf_s
    ok = result.status == "ok"
    params = point.params

    prompt_tokens_local = attempt.prompt.prompt_tokens
    reasoning_tokens_local = tokenizer.count(result.reasoning_text) if result.reasoning_text else None
    reasoning_tokens = result.usage_reasoning_tokens
    if reasoning_tokens is None and ok:
        reasoning_tokens = reasoning_tokens_local
    completion_tokens_local = tokenizer.count(result.text) + (reasoning_tokens_local or 0) if ok else None
    prompt_tokens = result.usage_prompt_tokens
    completion_tokens = result.usage_completion_tokens
    from_server = 0
    local = 0
    if prompt_tokens is None:
        prompt_tokens = prompt_tokens_local
        local += 1
    else:
        from_server += 1
    if completion_tokens is None:
        if ok:
            completion_tokens = completion_tokens_local
            local += 1
    else:
        from_server += 1
    if from_server and local:
        token_source = TOKEN_SOURCE_MIXED
    elif from_server:
        token_source = TOKEN_SOURCE_SERVER
    else:
        token_source = TOKEN_SOURCE_TOKENIZER

    return RequestRecord(
        suite_name=context.suite_name,
        target_name=context.target_name,
        platform=context.platform,
        model=context.model,
        container=context.container,
        instance_type=context.instance_type,
        instance_count=context.instance_count,
        instance_price_per_hour_usd=context.instance_price_per_hour_usd,
        api=context.api,
        load_mode=point.load_mode,
        concurrency=point.concurrency,
        request_rate_per_s=point.request_rate_per_s,
        arrival=None if point.request_rate_per_s is None else point.arrival,
        max_in_flight=point.max_in_flight,
        payload_bin=point.payload_bin,
        request_id=request_id_for(context.branch_id, point.load_label, point.payload_bin, attempt.seq),
        prompt_id=attempt.prompt.record_id,
        phase=attempt.phase,
        scheduled_epoch_s=to_epoch_s(attempt.scheduled_perf_s),
        send_epoch_s=to_epoch_s(send_perf_s),
        first_token_epoch_s=None if first_perf_s is None else to_epoch_s(first_perf_s),
        end_epoch_s=to_epoch_s(result.end_perf_s),
        schedule_lag_s=send_perf_s - attempt.scheduled_perf_s,
        ttft_s=None if first_perf_s is None else first_perf_s - send_perf_s,
        latency_s=result.end_perf_s - send_perf_s,
        itl_s=[later - earlier for earlier, later in itertools.pairwise(chunks)],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        token_source=token_source,
        prompt_tokens_local=prompt_tokens_local,
        completion_tokens_local=completion_tokens_local,
        status=result.status,
        error_class=result.error_class,
        http_status=result.http_status,
        error_message=result.error_message,
        response_text=result.text if ok else (result.text or None),
        runner_cpu_fraction=None if check is None else check.runner_cpu_fraction,
        runner_cpu_count=None if check is None else check.runner_cpu_count,
        client_bound=False if check is None else check.client_bound,
        max_tokens_requested=params.max_new_tokens,
        min_tokens_requested=(
            params.max_new_tokens
            if params.fixed_output_tokens and context.platform in FIXED_OUTPUT_PLATFORMS
            else None
        ),
        first_answer_token_epoch_s=None if answer_perf_s is None else to_epoch_s(answer_perf_s),
        time_to_first_answer_s=None if answer_perf_s is None else answer_perf_s - send_perf_s,
        reasoning_tokens=reasoning_tokens,
        reasoning_tokens_local=reasoning_tokens_local,
        search_step=point.search_step,
    )


def build_records(
    attempts: list[Attempt],
    point: LoadPoint,
    context: RecordContext,
    clock: EpochClock,
    tokenizer: Tokenizer,
    check: SelfCheck | None = None,
    *,
    pause_s: float = 0.0,
) -> list[RequestRecord]:
    """Records of ``attempts``; ``pause_s`` paces the work beside a running load (see ``paced_slices``)."""
    return [
        build_record(attempt, point, context, clock, tokenizer, check)
        for piece in paced_slices(attempts, pause_s)
        for attempt in piece
    ]


@dataclass(frozen=True, slots=True)
class LoadPointSummary:
    """Counts the runner needs to judge a load point, warm-up separated from the measured window."""

    attempts: int
    errors: int
    measured: int
    measured_errors: int
    dominant_error_class: str | None
    sample_error_message: str | None

    @property
    def all_measured_failed(self) -> bool:
        return self.measured > 0 and self.measured_errors == self.measured


@dataclass(slots=True)
class LoadPointTally:
    """The counts behind ``LoadPointSummary``, added up part by part as a long load point is flushed."""

    attempts: int = 0
    errors: int = 0
    measured: int = 0
    measured_errors: int = 0
    error_classes: Counter[str] = field(default_factory=Counter)
    measured_error_classes: Counter[str] = field(default_factory=Counter)
    first_messages: dict[tuple[bool, str], str | None] = field(default_factory=dict)

    def add(self, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self.attempts += 1
            measured = attempt.is_measured
            self.measured += measured
            result = attempt.result
            if result.status != "error":
                continue
            error_class = result.error_class or "unknown"
            self.errors += 1
            self.error_classes[error_class] += 1
            self.first_messages.setdefault((False, error_class), result.error_message)
            if measured:
                self.measured_errors += 1
                self.measured_error_classes[error_class] += 1
                self.first_messages.setdefault((True, error_class), result.error_message)

    def summary(self) -> LoadPointSummary:
        """The dominant error class is taken over measured failures (all failures if none was measured)."""
        from_measured = bool(self.measured_error_classes)
        classes = self.measured_error_classes if from_measured else self.error_classes
        dominant = None
        sample = None
        if classes:
            dominant = classes.most_common(1)[0][0]
            sample = self.first_messages[(from_measured, dominant)]
        return LoadPointSummary(
            attempts=self.attempts,
            errors=self.errors,
            measured=self.measured,
            measured_errors=self.measured_errors,
            dominant_error_class=dominant,
            sample_error_message=sample,
        )


def summarize(attempts: list[Attempt]) -> LoadPointSummary:
    tally = LoadPointTally()
    tally.add(attempts)
    return tally.summary()
