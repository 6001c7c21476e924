"""One branch's life, the same locally and in the cloud runner: placeholder outcome, endpoint, sweep, outcome.

The local run (``fmbench.local``) lives a branch through ``live_branch``; the runner container
(``fmbench.runner_main``) uses the same parts (``BranchStorage``, ``endpoint_for``, ``sweep_branch``,
``ended_outcome``) around its own signal handling, JSON log and exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from fmbench import layout, storage
from fmbench.config import EmulatorTarget
from fmbench.plan import BranchOutcome
from fmbench.runner import ProgressEvent, run_branch
from fmbench.spec import BranchSpec

# Called with the emulator's URL and process id once it serves.
EmulatorStarted = Callable[[str, int | None], None]
ProgressListener = Callable[[ProgressEvent], None]


class BranchStorage:
    """The branch's two places in storage: its records folder and its outcome file."""

    def __init__(self, spec: BranchSpec) -> None:
        self.spec = spec
        self.records_uri = layout.records_prefix(spec.storage_root, spec.run_id, spec.branch_id)
        self.outcome_uri = layout.outcome_uri(spec.storage_root, spec.run_id, spec.branch_id)
        self._parts_before: set[str] = set()

    def _parts(self) -> tuple[pafs.FileSystem, set[str]]:
        filesystem, path = storage.resolve_filesystem(self.records_uri)
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return filesystem, {info.path for info in infos if info.base_name.endswith(layout.PART_SUFFIX)}

    def prepare(self, placeholder: BranchOutcome) -> None:
        """Prove the storage writable before any request is sent, and leave an outcome that says 'failed'
        until the final one replaces it: a branch whose run is killed without warning (OOM, SIGKILL,
        Ctrl-C) still leaves its branch accounted for."""
        try:
            filesystem, path = storage.resolve_filesystem(self.records_uri)
            filesystem.create_dir(path, recursive=True)
            _, self._parts_before = self._parts()
        except OSError as exc:
            raise storage.StorageAccessError(self.records_uri, "write", exc) from exc
        self.write_outcome(placeholder)

    def records_written_by_this_run(self) -> int:
        """Rows in the parts this run added: exact even when the sweep was cancelled mid-point (a retried
        task of the same branch adds parts next to its predecessor's, which are not counted)."""
        filesystem, parts = self._parts()
        return sum(
            pq.read_metadata(part, filesystem=filesystem).num_rows for part in parts - self._parts_before
        )

    def write_outcome(self, outcome: BranchOutcome) -> None:
        data = (outcome.model_dump_json(indent=2) + "\n").encode()
        storage.write_bytes(self.outcome_uri, data, content_type="application/json")


def ended_outcome(
    spec: BranchSpec,
    status: Literal["partial", "failed"],
    reason: str,
    records_written: int,
    load_points_completed: int,
    started_epoch_s: float,
) -> BranchOutcome:
    """The outcome of a branch whose sweep gave no verdict of its own (stopped, failed to set up, crashed)."""
    return BranchOutcome(
        branch_id=spec.branch_id,
        status=status,
        reason=reason,
        requests_attempted=records_written,  # every attempt becomes exactly one record
        records_written=records_written,
        load_points_planned=spec.load_point_count,
        load_points_completed=load_points_completed,
        started_epoch_s=started_epoch_s,
        ended_epoch_s=time.time(),
    )


@contextlib.asynccontextmanager
async def endpoint_for(
    spec: BranchSpec, on_emulator_started: EmulatorStarted | None = None
) -> AsyncIterator[str | None]:
    """The emulator of an emulator target as a child process (its event loop never competes with the
    load's); None for other targets, which the runner reaches at their own URL.

    Starting and stopping block for a moment; they run in a thread so that other branches' load, timed on
    this event loop, is not disturbed. A cancellation that arrives while the child is starting waits for
    the start to finish and then stops the child, so no emulator outlives its branch.
    """
    if not isinstance(spec.target, EmulatorTarget):
        yield None
        return
    from fmbench.emulator.process import EmulatorProcess
    from fmbench.emulator.settings import EmulatorSettings

    process = EmulatorProcess(EmulatorSettings.for_target(spec.target.emulator, spec.target.model))
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))
    try:
        url = await asyncio.shield(starting)
        if on_emulator_started is not None:
            on_emulator_started(url, process.pid)
        yield url
    finally:
        await asyncio.wait([starting])
        if not starting.cancelled():
            starting.exception()  # retrieved here so that asyncio does not report it as lost
        await asyncio.to_thread(process.__exit__, None, None, None)


async def sweep_branch(
    spec: BranchSpec,
    on_progress: ProgressListener | None = None,
    on_emulator_started: EmulatorStarted | None = None,
) -> BranchOutcome:
    """The branch's endpoint, then every load point against it; the runner's verdict is the outcome."""
    async with endpoint_for(spec, on_emulator_started) as url:
        return await run_branch(spec, endpoint_url=url, on_progress=on_progress)


async def live_branch(
    spec: BranchSpec, not_finished_reason: str, on_progress: ProgressListener | None = None
) -> BranchOutcome:
    """The whole life of a branch in a process that runs several: any failure of the branch becomes its
    'failed' outcome rather than an exception, so one broken branch does not take the others down."""
    started_epoch_s = time.time()
    branch_storage = BranchStorage(spec)
    placeholder = BranchOutcome(
        branch_id=spec.branch_id,
        status="failed",
        reason=not_finished_reason,
        load_points_planned=spec.load_point_count,
        started_epoch_s=started_epoch_s,
    )
    # Only the placeholder: this process counts no records of its own (its sweep's verdict does).
    await asyncio.to_thread(branch_storage.write_outcome, placeholder)
    try:
        outcome = await sweep_branch(spec, on_progress)
    except Exception as exc:  # noqa: BLE001 - the branch's failure is its outcome
        outcome = BranchOutcome(
            branch_id=spec.branch_id,
            status="failed",
            reason=f"{type(exc).__name__}: {exc}",
            load_points_planned=spec.load_point_count,
            started_epoch_s=started_epoch_s,
            ended_epoch_s=time.time(),
        )
    await asyncio.to_thread(branch_storage.write_outcome, outcome)
    return outcome
