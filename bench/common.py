"""What the load-runner benchmarks share: prompts, CPU accounting, exact percentiles, tables and JSON."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import aiohttp
import numpy as np
import psutil

from fmbench.endpoints.base import EndpointClient
from fmbench.loadgen import (
    Attempt,
    EpochClock,
    LoadPoint,
    LoadPointRun,
    PartRecorder,
    PointPart,
    PointResult,
    RecordContext,
)
from fmbench.payloads import Prompt
from fmbench.records import RecordWriter, RequestRecord
from fmbench.tokenizer import get_tokenizer

T = TypeVar("T")

BENCH_MODEL = "bench-model"
# One request is bounded by this in the runner; far above any latency a benchmark level should see, so a
# timeout in a benchmark's figures means something broke rather than something was slow.
REQUEST_TIMEOUT_S = 120.0


def bench_prompts(count: int) -> list[Prompt]:
    """Short, distinct prompts: the text names its request, so an instrumented emulator can key timings by it.

    The runner cycles through its prompts (``seq % len``), so ``count`` at least the number of requests keeps
    every request's text unique.
    """
    template = "bench request {index:08d}: write a short answer."
    prompt_tokens = get_tokenizer("simple").count(template.format(index=0))
    return [
        Prompt(f"bench-{index}", template.format(index=index), prompt_tokens, None) for index in range(count)
    ]


def chat_body(prompt_text: str, max_tokens: int) -> bytes:
    """The body OpenAIClient sends for a streamed chat request, so a reference client asks the same work."""
    body = {
        "model": BENCH_MODEL,
        "messages": [{"role": "user", "content": prompt_text}],
        "max_tokens": max_tokens,
        "temperature": 0.1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body).encode()


BENCH_CONTEXT = RecordContext(
    suite_name="bench",
    branch_id="bench",
    target_name="emulator",
    platform="emulator",
    model=BENCH_MODEL,
    container=None,
    instance_type=None,
    instance_count=None,
    instance_price_per_hour_usd=None,
    api="chat",
)


@dataclass(frozen=True, slots=True)
class RunnerRun:
    """One load point as the branch runner ran it: every attempt, its records and the runner's verdict."""

    attempts: list[Attempt]
    records: list[RequestRecord]
    result: PointResult


async def run_point_like_the_runner(
    client: EndpointClient, point: LoadPoint, storage_root: Path
) -> RunnerRun:
    """The load point exactly as ``fmbench.runner._sweep`` runs it, so a benchmark pays what a user pays.

    That includes the parts cut during the load point, whose records are built and written as Parquet in a
    worker thread while requests are in flight.
    """
    clock = EpochClock.start()
    tokenizer = get_tokenizer("simple")
    writer = RecordWriter(str(storage_root), "bench", BENCH_CONTEXT.branch_id)
    attempts: list[Attempt] = []
    records: list[RequestRecord] = []

    record_part = PartRecorder(writer, point, BENCH_CONTEXT, clock, tokenizer)

    def write_part(part: PointPart) -> None:
        records.extend(record_part.record(part))
        attempts.extend(part.attempts)

    result = await LoadPointRun(client, point, write_part=write_part).run()
    return RunnerRun(attempts, records, result)


def window_s(attempts: Iterable[Attempt]) -> float:
    """The measured window of docs/metrics.md: last end minus first send over the measured requests."""
    measured = [attempt.result for attempt in attempts if attempt.is_measured]
    if not measured:
        return 0.0
    return max(r.end_perf_s for r in measured) - min(r.send_perf_s for r in measured)


def available_cores() -> int:
    affinity = psutil.Process().cpu_affinity()
    return len(affinity) if affinity else os.cpu_count() or 1


# ------------------------------------------------------------------------------------------- CPU


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU over one measurement in cores: 1.0 is one core busy for the whole wall time."""

    wall_s: float
    client_cores: float
    emulator_cores: float
    machine_busy_cores: float
    steal_cores: float

    @property
    def other_cores(self) -> float:
        """What the rest of the (shared) machine took: the reader's sign that a figure was starved."""
        return max(0.0, self.machine_busy_cores - self.client_cores - self.emulator_cores)


def _busy_s(times: Any) -> tuple[float, float]:
    busy_s = (
        times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    )
    return busy_s, getattr(times, "steal", 0.0)


class MachineCpuMeter:
    """Reads the client (this process), the emulator child and the whole machine from creation to ``stop``.

    On two shared cores, whoever sits at one full core is the limit of a throughput figure; the machine's
    total tells whether other work squeezed both.
    """

    def __init__(self, emulator_pid: int | None) -> None:
        self._client = psutil.Process()
        self._emulator = psutil.Process(emulator_pid) if emulator_pid is not None else None
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        client = self._client.cpu_times()
        emulator_s = 0.0
        if self._emulator is not None:
            emulator = self._emulator.cpu_times()
            emulator_s = emulator.user + emulator.system
        busy_s, steal_s = _busy_s(psutil.cpu_times())
        return perf_counter(), client.user + client.system, emulator_s, busy_s, steal_s

    def stop(self) -> CpuUsage:
        end = self._read()
        wall_s, client_s, emulator_s, busy_s, steal_s = (b - a for a, b in zip(self._start, end, strict=True))
        wall_s = max(wall_s, 1e-9)
        return CpuUsage(
            wall_s=wall_s,
            client_cores=client_s / wall_s,
            emulator_cores=emulator_s / wall_s,
            machine_busy_cores=busy_s / wall_s,
            steal_cores=steal_s / wall_s,
        )


async def wait_for_quiet(
    emulator_pid: int | None, max_wait_s: float, threshold_cores: float = 0.25, sample_s: float = 1.0
) -> float:
    """Wait (at most ``max_wait_s``) until the rest of a shared machine uses under ``threshold_cores``.

    Returns the other processes' cores in the last sample, so the caller can say it gave up waiting.
    """
    if max_wait_s <= 0:
        return float("nan")
    deadline_s = perf_counter() + max_wait_s
    while True:
        meter = MachineCpuMeter(emulator_pid)
        await asyncio.sleep(sample_s)
        other_cores = meter.stop().other_cores
        if other_cores < threshold_cores or perf_counter() >= deadline_s:
            return other_cores


def starvation_note(other_cores: Iterable[float], threshold_cores: float = 0.25) -> str | None:
    """A warning for the reader when other processes took a share of the machine during the measurement."""
    worst = max(other_cores, default=0.0)
    if not worst > threshold_cores:
        return None
    return (
        f"WARNING: other processes on this machine used up to {worst:.2f} core(s) during the measurement; "
        "figures of the runs marked so describe a starved machine, not the runner."
    )


# ------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """Exact percentile with linear interpolation (Hyndman-Fan type 7), the method of docs/metrics.md."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


# ------------------------------------------------------------------------------------------- output


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing was measured
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain fixed-width text: it reads in a terminal and pastes into Markdown as a code block."""
    cells = [list(headers)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_metadata() -> dict[str, Any]:
    """Enough about the machine and the software for a figure to be compared with a later one."""
    load_1m, load_5m, load_15m = os.getloadavg()
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "cores": available_cores(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [load_1m, load_5m, load_15m],
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe_machine(meta: dict[str, Any]) -> str:
    load = ", ".join(f"{value:.2f}" for value in meta["load_average_at_start"])
    return (
        f"{meta['date_utc']}  {meta['cores']} cores ({meta['cpu_model']})  Python {meta['python']}  "
        f"aiohttp {meta['aiohttp']}  load average at start {load}"
    )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _plain(value: Any) -> Any:
    """NaN (nothing measured) becomes null and numpy scalars plain numbers: strict JSON for other tools."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if value != value else float(value)
    return value


# ------------------------------------------------------------------------------------------- options


def comma_separated(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse type for lists such as ``1,4,16``."""
    return lambda text: [kind(part) for part in text.split(",")]


def add_emulator_options(
    parser: argparse.ArgumentParser, *, ttft_ms: float, itl_ms: float, output_tokens: int
) -> None:
    """The fixed timings of the benchmark's emulator, with this benchmark's defaults."""
    parser.add_argument("--ttft-ms", type=float, default=ttft_ms, help="emulator TTFT (default: %(default)g)")
    parser.add_argument(
        "--itl-ms", type=float, default=itl_ms, help="emulator inter-token time (default: %(default)g)"
    )
    parser.add_argument(
        "--output-tokens", type=int, default=output_tokens, help="tokens per answer (default: %(default)s)"
    )


def add_run_options(parser: argparse.ArgumentParser, *, quick_help: str) -> None:
    """What every benchmark takes: waiting for a quiet machine, a smoke run, and a JSON file of figures."""
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=0.0,
        help="on a shared machine, wait up to this long before each run for other processes to use under "
        "0.25 core (default: 0, do not wait)",
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every figure to this JSON file")
