"""One conversion from perf_counter readings to epoch seconds, shared by every record of a branch."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Maps the monotonic perf_counter onto wall-clock epoch seconds through a single anchor pair.

    Reading time.time() per event would mix two clocks (and NTP steps) into one record; one anchor keeps
    every epoch field of a branch consistent and monotonic, and differences exact to perf_counter.
    """

    anchor_epoch_s: float
    anchor_perf_s: float

    @classmethod
    def start(cls) -> EpochClock:
        return cls(anchor_epoch_s=time.time(), anchor_perf_s=time.perf_counter())

    def to_epoch_s(self, perf_s: float) -> float:
        return self.anchor_epoch_s + (perf_s - self.anchor_perf_s)
