"""One branch's life, the same locally and in the cloud runner: placeholder outcome, endpoint, sweep, outcome.

The local run (``fmbench.local``) lives a branch through ``live_branch``; the runner container
(``fmbench.runner_main``) uses the same parts (``BranchStorage``, ``endpoint_for``, ``sweep_branch``,
``ended_outcome``) around its own signal handling, JSON log and exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from fmbench import layout, storage
from fmbench.config import Ec2Target, EmulatorTarget
from fmbench.plan import BranchOutcome
from fmbench.prompt_store import PROMPTS_NAME
from fmbench.readiness import wait_until_ready
from fmbench.records import RecordsNotWrittenError
from fmbench.runner import ProgressEvent, run_branch
from fmbench.spec import BranchSpec

# The placeholder outcome is padded to this size, so that on a full disk the final outcome can still be
# written over it in place (``storage.overwrite_in_place``) rather than lost with the space.
OUTCOME_RESERVE_BYTES = 8192
# How often a branch checks that its emulator child still lives.
EMULATOR_WATCH_INTERVAL_S = 0.2

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
        self.write_outcome(placeholder, reserve=True)

    def records_written_by_this_run(self) -> int:
        """Rows in the parts this run added: exact even when the sweep was cancelled mid-point (a retried
        task of the same branch adds parts next to its predecessor's, which are not counted)."""
        filesystem, parts = self._parts()
        return sum(
            pq.read_metadata(part, filesystem=filesystem).num_rows for part in parts - self._parts_before
        )

    def write_outcome(self, outcome: BranchOutcome, *, reserve: bool = False) -> None:
        """``reserve``: pad the document (JSON allows trailing blanks) to ``OUTCOME_RESERVE_BYTES``, so
        that a later outcome that finds the disk full is written over it instead of being lost."""
        data = (outcome.model_dump_json(indent=2) + "\n").encode()
        if reserve:
            data = data.ljust(OUTCOME_RESERVE_BYTES)
        try:
            storage.write_bytes(self.outcome_uri, data, content_type="application/json")
        except storage.StorageAccessError as exc:
            full = getattr(exc.__cause__, "errno", None) == errno.ENOSPC or "No space left" in str(exc)
            if not (full and storage.overwrite_in_place(self.outcome_uri, data)):
                raise


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


class EmulatorDiedError(RuntimeError):
    """The branch's emulator child exited while its load ran: what followed measured a dead endpoint."""


def emulator_prompts_file(spec: BranchSpec) -> str | None:
    """The run's prompts file an emulator target with ``accuracy`` answers from (a local run's; the
    emulator reads local files only), else None."""
    if not isinstance(spec.target, EmulatorTarget) or spec.target.emulator.accuracy is None:
        return None
    if spec.prompts_uri is None or "://" in spec.prompts_uri:
        return None
    return f"{spec.prompts_uri.rstrip('/')}/{PROMPTS_NAME}"


@contextlib.asynccontextmanager
async def endpoint_for(
    spec: BranchSpec, on_emulator_started: EmulatorStarted | None = None
) -> AsyncIterator[str | None]:
    """The emulator of an emulator target as a child process (its event loop never competes with the
    load's); None for other targets, which the runner reaches at their own URL.

    Starting and stopping block for a moment; they run in a thread so that other branches' load, timed on
    this event loop, is not disturbed. A cancellation that arrives while the child is starting waits for
    the start to finish and then stops the child, so no emulator outlives its branch. While the branch
    runs, the child is watched: if it exits, the sweep is cancelled (its records flushed) and
    ``EmulatorDiedError`` says so, instead of the dead child being measured as the endpoint.
    """
    if isinstance(spec.target, Ec2Target):
        # the instance is launched by the workflow; its server answers once the model is loaded
        await wait_until_ready(spec)
        yield spec.ec2_endpoint_url
        return
    if not isinstance(spec.target, EmulatorTarget):
        yield None
        return
    from fmbench.emulator.process import EmulatorProcess
    from fmbench.emulator.settings import EmulatorSettings

    settings = EmulatorSettings.for_target(
        spec.target.emulator, spec.target.model, prompts_file=emulator_prompts_file(spec)
    )
    process = EmulatorProcess(settings)
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))
    watch: asyncio.Task[None] | None = None
    died: list[int] = []
    try:
        url = await asyncio.shield(starting)
        if on_emulator_started is not None:
            on_emulator_started(url, process.pid)
        branch_task = asyncio.current_task()

        async def watch_child() -> None:
            while (code := process.returncode) is None:
                await asyncio.sleep(EMULATOR_WATCH_INTERVAL_S)
            died.append(code)
            if branch_task is not None:
                branch_task.cancel()

        watch = asyncio.create_task(watch_child(), name=f"fmbench-emulator-watch-{spec.branch_id}")
        try:
            yield url
        except asyncio.CancelledError:
            if not died:
                raise
            if branch_task is not None:
                branch_task.uncancel()
            raise EmulatorDiedError(f"the emulator process exited with code {died[0]} mid-run") from None
    finally:
        if watch is not None:
            watch.cancel()
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


class PointsFinished:
    """Passes progress events on and counts the load points finished: the account of a sweep that was
    cancelled or failed before it could give its own."""

    def __init__(self, listener: ProgressListener | None) -> None:
        self.listener = listener
        self.count = 0

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "load_point_finished":
            self.count += 1
        if self.listener is not None:
            self.listener(event)


def counted_outcome(
    spec: BranchSpec,
    branch_storage: BranchStorage,
    reason: str,
    load_points_completed: int,
    started_epoch_s: float,
    records_not_written: int = 0,
) -> BranchOutcome:
    """The outcome of a branch ended from outside (a signal, a dead emulator, a full disk): its records
    are counted on storage, so that it says what a report of the run will find."""
    try:
        records = branch_storage.records_written_by_this_run()
    except OSError:
        records = 0
    status: Literal["partial", "failed"] = "partial" if records else "failed"
    outcome = ended_outcome(spec, status, reason, records, load_points_completed, started_epoch_s)
    if records_not_written:
        outcome = outcome.model_copy(update={"requests_attempted": records + records_not_written})
    return outcome


async def live_branch(
    spec: BranchSpec,
    not_finished_reason: str,
    on_progress: ProgressListener | None = None,
    stop_reason: Callable[[], str | None] = lambda: None,
) -> BranchOutcome:
    """The whole life of a branch in a process that runs several: any failure of the branch becomes its
    'failed' outcome rather than an exception, so one broken branch does not take the others down.

    Cancelled (``stop_reason`` says why: a signal), it writes an outcome that counts the records on
    storage (the sweep flushed them before the cancellation reached here) and the cancellation goes on.
    """
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
    await asyncio.to_thread(branch_storage.prepare, placeholder)
    finished = PointsFinished(on_progress)
    try:
        outcome = await sweep_branch(spec, finished)
    except asyncio.CancelledError:
        reason = (stop_reason() or "cancelled") + (
            f" after {finished.count} of {spec.load_point_count} load point(s)"
        )
        outcome = counted_outcome(spec, branch_storage, reason, finished.count, started_epoch_s)
        branch_storage.write_outcome(outcome)  # no await: the task is being cancelled
        raise
    except RecordsNotWrittenError as exc:
        reason = f"storage error: {exc}"
        outcome = counted_outcome(
            spec, branch_storage, reason, finished.count, started_epoch_s, exc.records_not_written
        )
    except EmulatorDiedError as exc:
        reason = f"{exc}; the records measured before are kept"
        outcome = counted_outcome(spec, branch_storage, reason, finished.count, started_epoch_s)
    except Exception as exc:  # noqa: BLE001 - the branch's failure is its outcome
        outcome = BranchOutcome(
            branch_id=spec.branch_id,
            status="failed",
            reason=f"{type(exc).__name__}: {exc}",
            load_points_planned=spec.load_point_count,
            started_epoch_s=started_epoch_s,
            ended_epoch_s=time.time(),
        )
    await _write_outcome_whole(branch_storage, outcome)
    return outcome


async def _write_outcome_whole(branch_storage: BranchStorage, outcome: BranchOutcome) -> None:
    """The final outcome, written in a worker thread that a cancellation cannot drop.

    A stop that lands after the sweep ended, while this write waits for its thread, would otherwise leave
    the placeholder (no requests counted) beside a fully measured branch: ``asyncio.to_thread`` cancelled
    before its job starts drops the job. Here the job always runs, and a cancelled caller waits for it.
    """
    done = threading.Event()

    def job() -> None:
        try:
            branch_storage.write_outcome(outcome)
        finally:
            done.set()

    written = asyncio.get_running_loop().run_in_executor(None, job)
    try:
        await asyncio.shield(written)
    except asyncio.CancelledError:
        done.wait()  # blocking: nothing else should run before the outcome is on storage
        raise
