"""A load point (one level of a sweep over one bin) and the phases its requests fall into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fmbench.config import Arrival, InferenceParameters, LoadPlan, PlannedPoint
from fmbench.payloads import Prompt, PromptDeck

Phase = Literal["warmup", "measured", "cooldown", "quality"]
WARMUP: Phase = "warmup"
MEASURED: Phase = "measured"
COOLDOWN: Phase = "cooldown"
# The requests of a branch's quality pass (``evaluation.quality_pass``): answers to judge, in no latency
# figure (every figure reads phase 'measured' only).
QUALITY: Phase = "quality"
PHASES: tuple[Phase, ...] = (WARMUP, MEASURED, COOLDOWN, QUALITY)


class LoadPointError(ValueError):
    """A load point that cannot be run as described."""


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One step of a sweep: a concurrency level or an arrival rate over the prompts of one bin.

    Each phase (warm-up, measured window, cool-down) ends after a number of requests or a number of
    seconds; the measured window needs one of the two, warm-up and cool-down are optional.
    """

    concurrency: int | None
    payload_bin: str
    prompts: Sequence[Prompt]
    params: InferenceParameters
    timeout_s: float
    warmup_requests: int = 0
    requests: int | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    cooldown_requests: int = 0
    cooldown_s: float | None = None
    request_rate_per_s: float | None = None
    arrival: Arrival = "poisson"
    max_in_flight: int | None = None
    seed: int = 0
    ramp_up_s: float = 0.0
    deck: PromptDeck | None = None
    search_step: int | None = None
    quality: bool = False

    # ``deck`` (the branch's deck of this bin, shared by all its load points) gives each request the next
    # prompt of the branch's seeded order; without one, request ``seq`` gets ``prompts[seq % len]``.
    # ``search_step``: the position (0-based) of the point's level in the branch's capacity search, in the
    # order tried; None for a sweep's point.
    # ``quality``: the branch's quality pass (``fmbench.runner``): its window's requests are of phase
    # 'quality', not 'measured', and its request ids say 'quality' where a load point's say 'c4'.

    def __post_init__(self) -> None:
        # Only what the engines themselves rely on: which loop to run, prompts to cycle through, and when
        # the measured window ends. The suite's rules (positive counts, one length per phase, settings
        # that apply to one kind of loop) are LoadPlan's, checked once when the suite is validated.
        if (self.concurrency is None) == (self.request_rate_per_s is None):
            raise LoadPointError("give exactly one of concurrency or request_rate_per_s")
        if not self.prompts:
            raise LoadPointError(f"bin {self.payload_bin} has no prompts")
        if (self.requests is None) == (self.duration_s is None):
            raise LoadPointError("give exactly one of requests or duration_s")

    @classmethod
    def of_plan(
        cls,
        load: LoadPlan,
        planned: PlannedPoint,
        prompts: Sequence[Prompt] | PromptDeck,
        params: InferenceParameters,
    ) -> LoadPoint:
        """The runtime form of one point of a validated sweep (``LoadPlan.points``), in the engine's terms.

        Given a deck, the point draws from it (so a branch's load points continue one order of prompts).
        """
        closed = planned.concurrency is not None
        deck = prompts if isinstance(prompts, PromptDeck) else None
        fixed = prompts.prompts if isinstance(prompts, PromptDeck) else prompts
        return cls(
            concurrency=planned.concurrency,
            request_rate_per_s=planned.request_rate_per_s,
            arrival=load.arrival,
            max_in_flight=None if closed else load.max_in_flight,
            seed=load.seed,
            payload_bin=planned.payload_bin,
            prompts=fixed,
            deck=deck,
            params=params,
            timeout_s=load.request_timeout_s,
            warmup_requests=load.warmup_requests,
            warmup_s=load.warmup_s,
            requests=load.requests_per_level,
            duration_s=load.duration_s,
            cooldown_requests=load.cooldown_requests,
            cooldown_s=load.cooldown_s,
            ramp_up_s=load.ramp_up_s if closed else 0.0,
        )

    @property
    def load_mode(self) -> str:
        return "concurrency" if self.concurrency is not None else "rate"

    @property
    def load_label(self) -> str:
        """Short and unique within a branch: 'c4' for concurrency 4, 'r2.5' for 2.5 requests per second,
        'quality' for the quality pass."""
        if self.quality:
            return "quality"
        if self.concurrency is not None:
            return f"c{self.concurrency}"
        return f"r{self.request_rate_per_s:g}"

    @property
    def total_requests(self) -> int | None:
        """Warm-up, measured and cool-down requests; None when a phase is timed."""
        if self.requests is None or self.warmup_s is not None or self.cooldown_s is not None:
            return None
        return self.warmup_requests + self.requests + self.cooldown_requests


class PhaseTracker:
    """Assigns each request, in start order, to a phase, or says the load point is over (None).

    Requests are classified by their order (phases counted in requests) or by their start offset from
    the beginning of the load point (phases in seconds): the arrival time in an open loop, the time a
    worker took the request in a closed loop. Offsets must not decrease from one call to the next. The
    measured window starts with its first request, so even a closed loop whose warm-up requests outlast
    ``warmup_s`` measures something; a timed cool-down follows the window's planned end.
    The tracker is plain state with no await, so the engines may call it atomically.
    """

    def __init__(self, point: LoadPoint) -> None:
        self._point = point
        self._phase: Phase | None = WARMUP
        self._count = 0
        self._phase_start_s = 0.0
        self.measured_start_s: float | None = None
        self._window: Phase = QUALITY if point.quality else MEASURED  # what a window's request is

    def classify(self, offset_s: float) -> Phase | None:
        point = self._point
        if self._phase == WARMUP:
            if point.warmup_s is not None and offset_s < point.warmup_s:
                return self._take(WARMUP)
            if point.warmup_s is None and self._count < point.warmup_requests:
                return self._take(WARMUP)
            self._enter(MEASURED, offset_s)
            self.measured_start_s = offset_s
        if self._phase == MEASURED:
            if point.duration_s is not None:
                end_s = self._phase_start_s + point.duration_s
                if offset_s < end_s:
                    return self._take(self._window)
                self._enter(COOLDOWN, end_s)
            elif self._count < (point.requests or 0):
                return self._take(self._window)
            else:
                self._enter(COOLDOWN, offset_s)
        if self._phase == COOLDOWN:
            if point.cooldown_s is not None:
                if offset_s < self._phase_start_s + point.cooldown_s:
                    return self._take(COOLDOWN)
            elif self._count < point.cooldown_requests:
                return self._take(COOLDOWN)
            self._phase = None
        return None

    def _take(self, phase: Phase) -> Phase:
        self._count += 1
        return phase

    def _enter(self, phase: Phase, start_s: float) -> None:
        self._phase = phase
        self._count = 0
        self._phase_start_s = start_s
