"""Token schedules of the emulator: a continuous-batching engine and the fixed-timing ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from fmbench.deadlines import DeadlineTimer
from fmbench.emulator.profiles import EmulatorProfile

# When the process was starved of CPU for longer than this, the engine forgets the backlog instead of
# emitting a burst of overdue steps: a burst would distort the inter-token gaps more than the lost time.
_MAX_LAG_S = 0.5
_MIN_JITTER_FACTOR = 0.5


class Clock(Protocol):
    """Where the engine reads the time and waits, so that tests can substitute a virtual clock."""

    def now_s(self) -> float: ...

    async def sleep_until(self, deadline_s: float, *, exact: bool = False) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock, waited on with a :class:`DeadlineTimer`.

    Waiting for an absolute deadline (not for a duration) keeps the schedule from drifting by the time
    spent writing chunks between two waits; the timer keeps each wait to its deadline within tens of
    microseconds where the OS allows, where ``asyncio.sleep`` would be up to a millisecond late. The timer
    belongs to the loop it was first used on; :meth:`close` releases it.
    """

    def __init__(self) -> None:
        self._timer: DeadlineTimer | None = None

    def now_s(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline_s: float, *, exact: bool = False) -> None:
        timer = self._timer
        if timer is None or timer.loop is not asyncio.get_running_loop():
            self.close()
            timer = self._timer = DeadlineTimer()
        await timer.sleep_until(deadline_s, exact=exact)

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()


class VirtualClock:
    """Time that jumps straight to each deadline: schedules can be checked exactly, in no real time."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    async def sleep_until(self, deadline_s: float, *, exact: bool = False) -> None:
        self._now_s = max(self._now_s, deadline_s)
        await asyncio.sleep(0)


def fixed_token_times_s(start_s: float, ttft_ms: float, itl_ms: float, output_tokens: int) -> list[float]:
    """Emission times of the fixed-timing mode, where every request is served on its own."""
    return [start_s + (ttft_ms + i * itl_ms) / 1000.0 for i in range(output_tokens)]


@dataclass(eq=False)
class Sequence:
    """One request inside the batched engine; its handler waits on it for newly emitted tokens."""

    prompt_tokens: int
    max_tokens: int
    submitted_s: float
    token_times_s: list[float] = field(default_factory=list)
    aborted: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def emitted_tokens(self) -> int:
        return len(self.token_times_s)

    @property
    def finished(self) -> bool:
        return self.emitted_tokens >= self.max_tokens

    async def wait_for_tokens(self, seen_tokens: int) -> int:
        """Wait until more than ``seen_tokens`` tokens exist, or the sequence is finished or aborted."""
        while self.emitted_tokens <= seen_tokens and not self.finished and not self.aborted:
            self._changed.clear()
            await self._changed.wait()
        return self.emitted_tokens

    def _emit(self, time_s: float) -> None:
        self.token_times_s.append(time_s)
        self._changed.set()

    def _abort(self) -> None:
        self.aborted = True
        self._changed.set()


class EngineClosedError(RuntimeError):
    """A request was submitted to an engine that has been stopped."""


class BatchEngine:
    """Continuous batching in the manner of vLLM or TGI, reduced to its timing.

    Each iteration admits waiting sequences while fewer than ``max_batch`` run, stalls everyone for one
    prefill pass over the admitted prompts (no chunked prefill, so long prompts hurt the whole batch), which
    yields their first token, then runs one decode step whose duration grows with the batch and which
    yields one token for every running sequence. Requests beyond ``max_batch`` wait in a FIFO queue.
    """

    def __init__(self, profile: EmulatorProfile, *, seed: int = 0, clock: Clock | None = None) -> None:
        self.profile = profile
        self._clock: Clock = clock or LoopClock()
        self._rng = random.Random(seed)
        self._waiting: deque[Sequence] = deque()
        self._prefilling: list[Sequence] = []
        self._running: list[Sequence] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        # What the engine has done so far, as a server's /metrics counts it: prompt tokens prefilled and
        # tokens generated (a sequence cancelled half-way keeps the tokens it had).
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        """Sequences holding a batch slot, including those whose prefill is under way."""
        return len(self._prefilling) + len(self._running)

    @property
    def kv_tokens_held(self) -> int:
        """Tokens whose keys and values the batch holds: prompt and generated tokens of every slot."""
        return sum(seq.prompt_tokens + seq.emitted_tokens for seq in (*self._prefilling, *self._running))

    def submit(self, prompt_tokens: int, max_tokens: int) -> Sequence:
        if self._closed:
            raise EngineClosedError("the emulator engine is stopped")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        seq = Sequence(prompt_tokens=prompt_tokens, max_tokens=max_tokens, submitted_s=self._clock.now_s())
        self._waiting.append(seq)
        self._wakeup.set()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Forget a sequence whose client went away, so that it frees its batch slot at once."""
        if seq.finished:
            return
        seq._abort()
        for holder in (self._waiting, self._prefilling, self._running):
            with contextlib.suppress(ValueError):
                holder.remove(seq)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="fmbench-emulator-engine")

    def abort_all(self) -> None:
        """Refuse new work and release every waiting handler (used when the server shuts down)."""
        self._closed = True
        for seq in [*self._waiting, *self._prefilling, *self._running]:
            seq._abort()
        self._waiting.clear()
        self._prefilling.clear()
        self._running.clear()

    async def stop(self) -> None:
        self.abort_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _jittered_s(self, duration_ms: float) -> float:
        factor = 1.0
        if self.profile.jitter_frac > 0:
            factor = max(_MIN_JITTER_FACTOR, 1.0 + self.profile.jitter_frac * self._rng.gauss(0.0, 1.0))
        return duration_ms * factor / 1000.0

    def _admit(self) -> None:
        while self._waiting and self.running_count < self.profile.max_batch:
            self._prefilling.append(self._waiting.popleft())

    async def run(self) -> None:
        deadline_s = self._clock.now_s()
        while not self._closed:
            if not self._waiting and not self._running:
                self._wakeup.clear()
                await self._wakeup.wait()
                deadline_s = self._clock.now_s()
                continue
            deadline_s = max(deadline_s, self._clock.now_s() - _MAX_LAG_S)

            self._admit()
            if self._prefilling:
                prompt_tokens = sum(seq.prompt_tokens for seq in self._prefilling)
                deadline_s += self._jittered_s(self.profile.prefill_ms(prompt_tokens))
                await self._clock.sleep_until(deadline_s)
                # Sequences cancelled during the stall have already left _prefilling.
                admitted, self._prefilling = self._prefilling, []
                for seq in admitted:
                    seq._emit(deadline_s)
                self.prompt_tokens_total += sum(seq.prompt_tokens for seq in admitted)
                self.generation_tokens_total += len(admitted)
                self._running += [seq for seq in admitted if not seq.finished]

            if self._running:
                deadline_s += self._jittered_s(self.profile.decode_step_ms(len(self._running)))
                await self._clock.sleep_until(deadline_s)
                for seq in self._running:
                    seq._emit(deadline_s)
                self.generation_tokens_total += len(self._running)
                self._running = [seq for seq in self._running if not seq.finished]
