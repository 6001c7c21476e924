"""Waiting for absolute deadlines on the event loop's clock, to the tens of microseconds where the OS allows.

``asyncio.sleep`` is late by up to a millisecond and more: the loop waits in ``epoll_wait``, whose timeout is
in whole milliseconds and is rounded up. That is noise the emulator must not add to a known TTFT and the open
loop must not add to its schedule. On Linux a :class:`DeadlineTimer` arms one ``timerfd`` (a nanosecond
timer the loop watches as a file descriptor) for the earliest waiting deadline, so the loop wakes when it is
due, not at the next whole millisecond. Elsewhere it falls back to the loop's own timers (``call_at`` the
deadline), with that loop's precision.

One timer serves any number of waiters on one loop; a waiter cancelled while it waits is simply dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
# The loop's clock must be CLOCK_MONOTONIC for the timer's deadlines to be the loop's (give or take a read).
_CLOCK_AGREEMENT_S = 0.001
# The lead never exceeds this (a starved process would otherwise learn to spin for long). A late wake-up
# moves it up by this share of the overshoot, an early one down by the other share of the time spun: the
# lead settles where late wake-ups are about one in ten.
_MAX_LEAD_S = 0.0005
_LEAD_UP = 0.1
_LEAD_DOWN = 0.01


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


# (open a timerfd, make a function that arms one for an absolute CLOCK_MONOTONIC time or disarms it at 0)
_TimerfdApi = tuple[Callable[[], int], Callable[[], Callable[[int, float], None]]]


def _libc_timerfd() -> _TimerfdApi | None:
    """timerfd through libc (Python before 3.13 has no os.timerfd_*), on 64-bit Linux only."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    settime.restype = ctypes.c_int

    def open_fd() -> int:
        fd = int(create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        return fd

    def make_arm() -> Callable[[int, float], None]:
        # One argument buffer per timer, filled in place: building a struct per call cost more than the
        # call itself. Per timer, not shared: ctypes lets other threads run during the call.
        spec = _Itimerspec()
        value = spec.it_value
        spec_ref = ctypes.byref(spec)

        def arm(fd: int, deadline_s: float) -> None:
            seconds = nanos = 0  # an all-zero it_value disarms the timer
            if deadline_s > 0:
                seconds = math.floor(deadline_s)
                nanos = math.ceil((deadline_s - seconds) * 1e9)  # never before the deadline
                seconds, nanos = seconds + nanos // 1_000_000_000, nanos % 1_000_000_000
            value.tv_sec = seconds
            value.tv_nsec = nanos
            if settime(fd, _TFD_TIMER_ABSTIME, spec_ref, None) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

        return arm

    return open_fd, make_arm


def _os_timerfd() -> _TimerfdApi | None:
    """The standard library's timerfd (Python 3.13 and later)."""
    create = getattr(os, "timerfd_create", None)
    settime = getattr(os, "timerfd_settime", None)
    if create is None or settime is None:
        return None

    def open_fd() -> int:
        return int(create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC))  # type: ignore[attr-defined]

    def arm(fd: int, deadline_s: float) -> None:
        settime(fd, flags=os.TFD_TIMER_ABSTIME, initial=max(deadline_s, 0.0))  # type: ignore[attr-defined]

    return open_fd, lambda: arm


_TIMERFD = _os_timerfd() or _libc_timerfd()


class DeadlineTimer:
    """Wakes waiters at absolute deadlines of ``loop.time()``; precise where a timerfd can be watched.

    Waking a process takes time of its own (about 0.1-0.2 ms on a small VM), so the timer is armed that much
    before the deadline (the lead, learnt from the wake-ups seen so far) and a waiter released early yields
    to the loop until its deadline has come. Use it as a context manager (or call :meth:`close`) on the loop
    that waits on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []  # (fire at, order, waiter)
        self._order = itertools.count()
        self._armed_s: float | None = None  # when the timerfd is set to fire, None when disarmed
        self._lead_s = 0.0
        self._fd: int | None = None
        self._arm: Callable[[int, float], None] | None = None
        if _TIMERFD is not None and abs(self.loop.time() - time.monotonic()) < _CLOCK_AGREEMENT_S:
            open_fd, make_arm = _TIMERFD
            with contextlib.suppress(OSError, NotImplementedError):
                fd = open_fd()
                try:
                    self.loop.add_reader(fd, self._on_fired)
                except (NotImplementedError, RuntimeError, ValueError):
                    os.close(fd)  # a loop that cannot watch file descriptors (e.g. Windows' proactor)
                else:
                    self._fd, self._arm = fd, make_arm()

    @property
    def precise(self) -> bool:
        """True when deadlines are kept by a timerfd, False when by the loop's own timers."""
        return self._fd is not None

    @property
    def lead_s(self) -> float:
        """How long before a deadline the timer is armed now (the wake-up latency it has learnt)."""
        return self._lead_s

    async def sleep_until(self, deadline_s: float, *, exact: bool = True) -> None:
        """Return once ``loop.time()`` has reached ``deadline_s`` (at once, after one yield, if it has).

        ``exact`` waits are woken the learnt lead early and yield to the loop until the deadline: tens of
        microseconds late. Others are woken at the deadline, so late by the OS's wake-up latency (about
        0.1-0.2 ms on a small VM), and cost no yielding: for waits whose lateness averages out.
        """
        loop = self.loop
        lead_s = self._lead_s if exact else 0.0
        if self._fd is None:
            # The loop's own timers, at the absolute deadline: a relative asyncio.sleep would add whatever
            # passed between reading the clock and arming it (a preemption on a busy machine: milliseconds).
            if deadline_s > loop.time():
                woken: asyncio.Future[None] = loop.create_future()
                handle = loop.call_at(deadline_s, _wake, woken)
                try:
                    await woken
                finally:
                    handle.cancel()
            else:
                await asyncio.sleep(0)
        elif deadline_s - loop.time() > lead_s:
            waiter: asyncio.Future[None] = loop.create_future()
            fire_s = deadline_s - lead_s
            heapq.heappush(self._waiters, (fire_s, next(self._order), waiter))
            if self._armed_s is None or fire_s < self._armed_s:
                self._arm_at(fire_s)
            await waiter  # a cancelled waiter stays in the heap until it is due and is skipped then
            if exact:
                self._learn(loop.time() - deadline_s)
        else:
            await asyncio.sleep(0)
        while loop.time() < deadline_s:  # at most the lead (or the clock's resolution): yield, never block
            await asyncio.sleep(0)

    def _learn(self, overshoot_s: float) -> None:
        """Move the lead towards the wake-up latency that about nine wake-ups in ten stay within."""
        if overshoot_s > 0:
            self._lead_s = min(self._lead_s + _LEAD_UP * overshoot_s, _MAX_LEAD_S)
        else:
            self._lead_s = max(self._lead_s - _LEAD_DOWN * min(-overshoot_s, self._lead_s), 0.0)

    def _arm_at(self, fire_s: float | None) -> None:
        assert self._fd is not None and self._arm is not None
        self._arm(self._fd, fire_s or 0.0)
        self._armed_s = fire_s

    def _on_fired(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._fd, 8)  # the expiration count; reading it clears readiness
        now_s = self.loop.time()
        waiters = self._waiters
        while waiters and waiters[0][0] <= now_s:
            _, _, waiter = heapq.heappop(waiters)
            if not waiter.done():
                waiter.set_result(None)
        self._arm_at(waiters[0][0] if waiters else None)

    def close(self) -> None:
        """Stop watching the timer; waiters still waiting are cancelled."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.loop.remove_reader(fd)
            os.close(fd)
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()

    def __enter__(self) -> DeadlineTimer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a cancelled wait leaves its future done
        waiter.set_result(None)
