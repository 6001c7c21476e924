"""What one running emulator shares between its routes: its settings, engine, counters and fault draws."""

from __future__ import annotations

import asyncio
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
    requests_total: int = 0
    shutting_down: bool = False
    handler_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    answers: AnswerBook | None = None  # the run's prompts and their ground truth (settings.accuracy)
    scripted_answers: int = 0  # answers that gave a known prompt's (right or wrong) answer
    verdicts: int = 0  # judge prompts answered with a verdict

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
