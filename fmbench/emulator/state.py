"""What one running emulator shares between its routes: its settings, engine, counters and fault draws."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fmbench.emulator.answers import AnswerBook, Script, chunks, judge_script
from fmbench.emulator.engine import BatchEngine, LoopClock
from fmbench.emulator.profiles import EmulatorProfile
from fmbench.emulator.protocol import DEFAULT_MAX_TOKENS, ParsedRequest
from fmbench.emulator.settings import EmulatorSettings


class Fault(enum.Enum):
    """What goes wrong with one request (at most one thing), drawn when it arrives."""

    NONE = "none"
    ERROR_500 = "error_500"
    ERROR_429 = "error_429"
    HANG = "hang"
    CUT_STREAM = "cut_stream"
    MALFORMED = "malformed"


# Upper bounds of the latency histograms /metrics exposes, in seconds (about vLLM's own buckets).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0,
)  # fmt: skip


@dataclass
class LatencyHistogram:
    """A histogram as Prometheus keeps one: a count per bucket (not cumulative here), the sum and count."""

    bounds_s: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0
    count: int = 0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(self.bounds_s, value_s)] += 1
        self.sum_s += value_s
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, cumulative, ending with ``+Inf``: what the exposition format wants."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(str, self.bounds_s), "+Inf"), self.counts, strict=True):
            running += n
            pairs.append((bound, float(running)))
        return pairs


@dataclass
class ServedTotals:
    """What /metrics and /health count across requests (tokens of the fixed-timing mode; the engine
    counts its own), filled as each request ends."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    succeeded: dict[str, int] = field(default_factory=dict)  # finish_reason -> requests
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram)
    e2e: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass
class EmulatorState:
    """One emulator's shared state; ``/health`` reports its counters."""

    settings: EmulatorSettings
    profile: EmulatorProfile
    engine: BatchEngine | None
    fault_rng: random.Random
    clock: LoopClock = field(default_factory=LoopClock)
    in_flight: int = 0
    peak_in_flight: int = 0
    # Requests in flight whose tokens come from the batch engine (between opening and closing their feed):
    # the others in flight (a hang, an embedding, fixed timing) hold no engine slot but are served all
    # the same, so ``occupancy`` counts them as running.
    in_engine: int = 0
    requests_total: int = 0
    shutting_down: bool = False
    handler_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    answers: AnswerBook | None = None  # the run's prompts and their ground truth (settings.accuracy)
    scripted_answers: int = 0  # answers that gave a known prompt's (right or wrong) answer
    verdicts: int = 0  # judge prompts answered with a verdict
    embeddings_total: int = 0  # texts embedded (Bedrock InvokeModel, Titan text embeddings)
    totals: ServedTotals = field(default_factory=ServedTotals)
    temperatures: dict[str, int] = field(default_factory=dict)  # requests per temperature asked ('none')

    def count_temperature(self, parsed: ParsedRequest) -> None:
        key = "none" if parsed.temperature is None else f"{parsed.temperature:g}"
        self.temperatures[key] = self.temperatures.get(key, 0) + 1

    def scripted(self, parsed: ParsedRequest) -> ParsedRequest:
        """The request with the words its answer says (``emulator/answers.py``), when the settings ask."""
        s = self.settings
        script: Script | None = None
        if s.judge_error_rate is not None:
            script = judge_script(parsed.user_text, s.judge_error_rate, s.seed, parsed.model or s.model)
            if script is not None:
                self.verdicts += 1
        if script is None and s.accuracy is not None and self.answers is not None:
            answer = self.answers.answer(
                parsed.user_text, parsed.prompt_tokens, s.accuracy, s.accuracy_drop_per_1k_tokens, s.seed
            )
            if answer is not None:
                self.scripted_answers += 1
                script = Script(chunks(" " + answer), ends=False)
        return parsed if script is None else dataclasses.replace(parsed, script=script)

    @property
    def prompt_tokens_total(self) -> int:
        return self.engine.prompt_tokens_total if self.engine is not None else self.totals.prompt_tokens

    @property
    def generation_tokens_total(self) -> int:
        return (
            self.engine.generation_tokens_total if self.engine is not None else self.totals.generation_tokens
        )

    @property
    def occupancy(self) -> tuple[int, int]:
        """``(running, waiting)``: what ``/health`` and ``/metrics`` report, from the in-flight count.

        Every request in flight is running or waiting. Waiting are the batch engine's queued sequences (none
        without the engine). Running are the engine's batch (its prefilling and decoding sequences) plus
        every request in flight outside the engine; without the engine that is every request in flight.
        A sequence that has finished but whose handler is still sending the end of its answer is in
        neither (it no longer holds a batch slot).
        """
        engine = self.engine
        if engine is None:
            return self.in_flight, 0
        outside = max(0, self.in_flight - self.in_engine)
        return engine.running_count + outside, engine.waiting_count

    @property
    def succeeded_total(self) -> int:
        return sum(self.totals.succeeded.values())

    def request_ended(
        self,
        *,
        prompt_tokens: int,
        generated: int,
        ttft_s: float | None,
        succeeded: str | None,
        latency_s: float,
    ) -> None:
        """Count one generation that ended: ``succeeded`` is its finish_reason when it was answered whole."""
        t = self.totals
        if self.engine is None and generated > 0:
            t.prompt_tokens += prompt_tokens
            t.generation_tokens += generated
        if ttft_s is not None:
            t.ttft.observe(ttft_s)
        if succeeded is not None:
            t.succeeded[succeeded] = t.succeeded.get(succeeded, 0) + 1
            t.e2e.observe(latency_s)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request in flight (and its peak) while its handler runs; shutdown cancels the handler."""
        self.requests_total += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        task = asyncio.current_task()
        if task is not None:
            self.handler_tasks.add(task)
        try:
            yield
        finally:
            self.in_flight -= 1
            if task is not None:
                self.handler_tasks.discard(task)

    def draw_fault(self) -> Fault:
        s = self.settings
        if not (
            s.error_500_rate or s.error_429_rate or s.hang_rate or s.cut_stream_rate or s.malformed_event_rate
        ):
            return Fault.NONE
        draw = self.fault_rng.random()
        for fault, rate in (
            (Fault.ERROR_500, s.error_500_rate),
            (Fault.ERROR_429, s.error_429_rate),
            (Fault.HANG, s.hang_rate),
            (Fault.CUT_STREAM, s.cut_stream_rate),
            (Fault.MALFORMED, s.malformed_event_rate),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return Fault.NONE

    def output_plan(self, parsed: ParsedRequest) -> tuple[int, str]:
        """How many tokens to generate, and the finish_reason to report.

        The answer's natural length (``output_tokens``) ends early at ``max_tokens``; vLLM's ``ignore_eos``
        runs on to ``max_tokens`` and ``min_tokens`` lengthens it to at least that many.
        """
        s = self.settings
        if parsed.script is not None and parsed.script.ends:
            natural = max(len(parsed.script.tokens), parsed.min_tokens, 1)
            if parsed.max_tokens is None or parsed.max_tokens >= natural:
                return natural, "stop"
            return parsed.max_tokens, "length"
        if s.output_tokens is not None:
            natural = s.output_tokens
            if parsed.ignore_eos and parsed.max_tokens is not None:
                natural = parsed.max_tokens
            natural = max(natural, parsed.min_tokens)
            if parsed.max_tokens is None:
                return natural, "stop"
            n_tokens = min(parsed.max_tokens, natural)
            return n_tokens, "length" if n_tokens == parsed.max_tokens else "stop"
        return max(parsed.max_tokens or DEFAULT_MAX_TOKENS, parsed.min_tokens), "length"


STATE_KEY = web.AppKey("fmbench_emulator_state", EmulatorState)
