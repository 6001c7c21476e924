"""The load engine: schedules that drive an endpoint client and the records they produce."""

from fmbench.loadgen.closed_loop import ClosedLoop, LoadPoint, LoadPointError
from fmbench.loadgen.recording import (
    Attempt,
    LoadPointSummary,
    RecordContext,
    build_record,
    build_records,
    request_id_for,
    summarize,
)
from fmbench.loadgen.timebase import EpochClock

__all__ = [
    "Attempt",
    "ClosedLoop",
    "EpochClock",
    "LoadPoint",
    "LoadPointError",
    "LoadPointSummary",
    "RecordContext",
    "build_record",
    "build_records",
    "request_id_for",
    "summarize",
]
