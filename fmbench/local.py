"""The embedded run: the whole workflow on one machine (emulators or endpoints, a folder, DuckDB)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmbench.config import EmulatorTarget, Suite
from fmbench.plan import BranchOutcome, BranchSpec, RunPlan, plan_suite
from fmbench.runner import ProgressEvent, run_branch

if TYPE_CHECKING:
    from fmbench.emulator.server import EmulatorSettings


def emulator_settings_for(target: EmulatorTarget) -> EmulatorSettings:
    """The emulator a target asks for, on a free loopback port."""
    from fmbench.emulator.server import EmulatorSettings

    options = target.emulator
    fixed = options.ttft_ms is not None
    return EmulatorSettings(
        host="127.0.0.1",
        port=0,
        model=target.model or "emulated-model",
        profile=None if fixed else options.profile,
        ttft_ms=options.ttft_ms,
        itl_ms=options.itl_ms,
        output_tokens=options.output_tokens,
        error_500_rate=options.error_500_rate,
        error_429_rate=options.error_429_rate,
        hang_rate=options.hang_rate,
        cut_stream_rate=options.cut_stream_rate,
        malformed_event_rate=options.malformed_event_rate,
        seed=options.seed,
    )


@contextlib.asynccontextmanager
async def endpoint_for(spec: BranchSpec) -> AsyncIterator[str | None]:
    """Start the branch's emulator as a child process, so it never shares the runner's event loop.

    Starting and stopping block for a moment; they run in a thread so that the other branches' load,
    timed on this event loop, is not disturbed.
    """
    if not isinstance(spec.target, EmulatorTarget):
        yield None
        return
    from fmbench.emulator.process import EmulatorProcess

    process = EmulatorProcess(emulator_settings_for(spec.target))
    await asyncio.to_thread(process.__enter__)
    try:
        yield process.url
    finally:
        await asyncio.to_thread(process.__exit__, None, None, None)


async def _run_one(
    spec: BranchSpec, gate: asyncio.Semaphore, on_progress: Callable[[ProgressEvent], None] | None
) -> BranchOutcome:
    async with gate:
        started = time.time()
        try:
            async with endpoint_for(spec) as url:
                return await run_branch(spec, endpoint_url=url, on_progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - one broken branch must not take the others down
            return BranchOutcome(
                branch_id=spec.branch_id,
                status="failed",
                reason=f"{type(exc).__name__}: {exc}",
                load_points_planned=spec.load_point_count,
                started_epoch_s=started,
                ended_epoch_s=time.time(),
            )


async def run_branches(
    plan: RunPlan, max_parallel: int, on_progress: Callable[[ProgressEvent], None] | None = None
) -> list[BranchOutcome]:
    gate = asyncio.Semaphore(max_parallel)
    return list(await asyncio.gather(*(_run_one(spec, gate, on_progress) for spec in plan.branches)))


@dataclass
class LocalRun:
    plan: RunPlan
    outcomes: list[BranchOutcome]
    result: Any
    report_dir: Path
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    suite_dir: Path | None = None,
    run_id: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
) -> LocalRun:
    """Plan, run every branch (bounded parallelism), compute the metrics and render the report into out_dir.

    Records go to ``out_dir/records/run_id=.../branch_id=...`` (the storage layout); the report files go
    straight into ``out_dir`` so that a local run's folder reads like one report.
    """
    from report.render import generate_report

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_suite(
        suite, storage_root=str(out), run_id=run_id, dataset_base_dir=str(suite_dir) if suite_dir else None
    )
    outcomes = asyncio.run(run_branches(plan, suite.execution.max_parallel_branches, on_progress))
    result = generate_report(plan, outcomes, storage_root=str(out), report_dir=out)
    return LocalRun(plan, outcomes, result, out, time.perf_counter() - started)


def is_interactive() -> bool:
    return sys.stdout.isatty()
