"""The load engine: schedules that drive an endpoint client and the records they produce."""

from fmbench.loadgen.closed_loop import ClosedLoop
from fmbench.loadgen.driver import (
    FLUSH_INTERVAL_S,
    FLUSH_MAX_RECORDS,
    LoadPointRun,
    PartRecorder,
    PointPart,
    PointResult,
    make_engine,
)
from fmbench.loadgen.engine import TIMEOUT_GRACE_S, LoadEngine
from fmbench.loadgen.open_loop import OpenLoop, arrival_offsets_s, schedule_s
from fmbench.loadgen.points import (
    COOLDOWN,
    MEASURED,
    PHASES,
    QUALITY,
    WARMUP,
    LoadPoint,
    LoadPointError,
    Phase,
)
from fmbench.loadgen.recording import (
    Attempt,
    LoadPointSummary,
    LoadPointTally,
    RecordContext,
    build_record,
    build_records,
    request_id_for,
    summarize,
)
from fmbench.loadgen.selfcheck import CpuMeter, SelfCheck, judge, process_cpu_s, usable_cpu_count
from fmbench.loadgen.timebase import EpochClock

__all__ = [
    "COOLDOWN",
    "FLUSH_INTERVAL_S",
    "FLUSH_MAX_RECORDS",
    "MEASURED",
    "PHASES",
    "QUALITY",
    "TIMEOUT_GRACE_S",
    "WARMUP",
    "Attempt",
    "ClosedLoop",
    "CpuMeter",
    "EpochClock",
    "LoadEngine",
    "LoadPoint",
    "LoadPointError",
    "LoadPointRun",
    "LoadPointSummary",
    "LoadPointTally",
    "OpenLoop",
    "PartRecorder",
    "Phase",
    "PointPart",
    "PointResult",
    "RecordContext",
    "SelfCheck",
    "arrival_offsets_s",
    "build_record",
    "build_records",
    "judge",
    "make_engine",
    "process_cpu_s",
    "request_id_for",
    "schedule_s",
    "summarize",
    "usable_cpu_count",
]
