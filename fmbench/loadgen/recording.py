"""Turns the engine's raw attempts into request records, after the load point rather than during it."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fmbench.endpoints.base import InvocationResult
from fmbench.payloads import Prompt
from fmbench.records import RequestRecord
from fmbench.tokenizer import Tokenizer

if TYPE_CHECKING:
    from fmbench.loadgen.closed_loop import LoadPoint
    from fmbench.loadgen.timebase import EpochClock
    from fmbench.plan import BranchSpec

TOKEN_SOURCE_SERVER = "server"
TOKEN_SOURCE_TOKENIZER = "tokenizer"
# The server reported one of the two counts and the tokenizer supplied the other.
TOKEN_SOURCE_MIXED = "mixed"


@dataclass(slots=True)
class Attempt:
    """What the engine keeps per request while the load point runs: no conversion, no token counting."""

    seq: int
    is_warmup: bool
    scheduled_perf_s: float
    prompt: Prompt
    result: InvocationResult


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


def request_id_for(branch_id: str, concurrency: int, payload_bin: str, seq: int) -> str:
    return f"{branch_id}-c{concurrency}-{payload_bin}-{seq:06d}"


def build_record(
    attempt: Attempt,
    point: LoadPoint,
    context: RecordContext,
    clock: EpochClock,
    tokenizer: Tokenizer,
) -> RequestRecord:
    """Token counts come from the server's usage when it gave them, else from the workload's tokenizer.

    The prompt's local count is the one ``build_payloads`` made with the workload's tokenizer on the same
    text, so it is reused rather than recounted. A failed request gets a local completion count only from
    the server (a partial answer's count would look like a real output length).
    """
    result = attempt.result
    to_epoch_s = clock.to_epoch_s
    send_perf_s = result.send_perf_s
    first_perf_s = result.first_token_perf_s
    chunks = result.chunk_perf_s
    ok = result.status == "ok"

    prompt_tokens = result.usage_prompt_tokens
    completion_tokens = result.usage_completion_tokens
    from_server = 0
    local = 0
    if prompt_tokens is None:
        prompt_tokens = attempt.prompt.prompt_tokens
        local += 1
    else:
        from_server += 1
    if completion_tokens is None:
        if ok:
            completion_tokens = tokenizer.count(result.text)
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
        payload_bin=point.payload_bin,
        request_id=request_id_for(context.branch_id, point.concurrency, point.payload_bin, attempt.seq),
        prompt_id=attempt.prompt.record_id,
        is_warmup=attempt.is_warmup,
        scheduled_epoch_s=to_epoch_s(attempt.scheduled_perf_s),
        send_epoch_s=to_epoch_s(send_perf_s),
        first_token_epoch_s=None if first_perf_s is None else to_epoch_s(first_perf_s),
        end_epoch_s=to_epoch_s(result.end_perf_s),
        ttft_s=None if first_perf_s is None else first_perf_s - send_perf_s,
        latency_s=result.end_perf_s - send_perf_s,
        itl_s=[later - earlier for earlier, later in itertools.pairwise(chunks)],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        token_source=token_source,
        status=result.status,
        error_class=result.error_class,
        http_status=result.http_status,
        error_message=result.error_message,
        response_text=result.text if ok else (result.text or None),
    )


def build_records(
    attempts: list[Attempt],
    point: LoadPoint,
    context: RecordContext,
    clock: EpochClock,
    tokenizer: Tokenizer,
) -> list[RequestRecord]:
    return [build_record(attempt, point, context, clock, tokenizer) for attempt in attempts]


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


def summarize(attempts: list[Attempt]) -> LoadPointSummary:
    """The dominant error class is taken over measured failures (all failures if none was measured)."""
    measured = [a for a in attempts if not a.is_warmup]
    measured_failures = [a.result for a in measured if a.result.status == "error"]
    failures = measured_failures or [a.result for a in attempts if a.result.status == "error"]
    dominant = None
    sample = None
    if failures:
        dominant = Counter(f.error_class for f in failures).most_common(1)[0][0]
        sample = next(f.error_message for f in failures if f.error_class == dominant)
    return LoadPointSummary(
        attempts=len(attempts),
        errors=sum(1 for a in attempts if a.result.status == "error"),
        measured=len(measured),
        measured_errors=len(measured_failures),
        dominant_error_class=dominant,
        sample_error_message=sample,
    )
