"""The embedded run: the whole workflow on one machine (emulators or endpoints, a folder, DuckDB)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmbench import layout, storage
from fmbench.branch import BranchStorage, ended_outcome, live_branch
from fmbench.config import EmulatorTarget, Evaluation, Suite
from fmbench.estimate import check_budget
from fmbench.evaluation.run import EvaluationError, EvaluationSummary, evaluate_run
from fmbench.judging_outcome import (
    EvaluationOutcome,
    failed_outcome,
    judged_outcome,
    write_evaluation_outcome,
)
from fmbench.layout import outcome_uri, run_plan_uri
from fmbench.plan import BranchOutcome, RunPlan, new_run_id, plan_suite
from fmbench.pricing import PriceTable
from fmbench.prompt_store import materialize_plan
from fmbench.records import warm_up_conversion
from fmbench.runner import ProgressEvent
from fmbench.spec import BranchSpec

if TYPE_CHECKING:
    from report.result import ResultDocument

# Left as a branch's outcome until its run ends: a run interrupted (Ctrl-C, a crash) still accounts for it.
NOT_FINISHED_REASON = (
    "the local run did not finish (interrupted); the records of every load point it finished are kept"
)

logger = logging.getLogger(__name__)

# Lists the report files fmbench copied to the top of a run folder, and the run they show: a file of the
# same name that is not listed there is the user's, and is not overwritten.
TOP_REPORT_MANIFEST = ".fmbench-report.json"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Reasons (``fmbench.branch.live_branch``) of a branch ended by this machine, not by its endpoint.
RUN_FAULT_PREFIXES = ("the emulator process exited", "storage error:")


class SavedRunNotFoundError(LookupError):
    """No saved plan for the run id under the root: the id or the folder is wrong."""


class OutFolderError(ValueError):
    """The output folder cannot take this run (a file, not writable, or the run id is taken): raised
    before any load is sent."""


class StopRequest:
    """SIGINT or SIGTERM during a local run: the branches are cancelled once (each flushes what it
    measured and writes an outcome counting it); a second signal is ignored, the stop is under way."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.signum: int | None = None
        self.tasks: list[asyncio.Task[BranchOutcome]] = []
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int) -> None:
        if self.signal_name is not None:
            return
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        for task in self.tasks:
            task.cancel()

    def reason(self) -> str | None:
        return None if self.signal_name is None else f"stopped by {self.signal_name}"

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self, signum)
        return True

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        """The handlers of before (the command's: a stop while the report renders ends it cleanly)."""
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
            previous = self._previous.get(signum)
            if previous is not None:
                signal.signal(signum, previous)


def save_plan(plan: RunPlan, storage_root: str) -> None:
    """``specs/run_id=<run>/plan.json``, as the cloud plan step writes it: the run can be reported again."""
    document = plan.model_dump_json(indent=2, exclude_unset=True) + "\n"
    storage.write_bytes(run_plan_uri(storage_root, plan.run_id), document.encode(), "application/json")


async def _run_one(
    spec: BranchSpec,
    gate: asyncio.Semaphore,
    on_progress: Callable[[ProgressEvent], None] | None,
    stop: StopRequest,
) -> BranchOutcome:
    async with gate:
        return await live_branch(spec, NOT_FINISHED_REASON, on_progress, stop.reason)


def _stopped_outcome(spec: BranchSpec, stop: StopRequest) -> BranchOutcome:
    """The outcome a cancelled branch wrote, or, for one stopped before it started, one that says so."""
    try:
        data = storage.read_bytes(outcome_uri(spec.storage_root, spec.run_id, spec.branch_id))
        outcome = BranchOutcome.model_validate_json(data)
        if outcome.reason != NOT_FINISHED_REASON:
            return outcome
    except storage.StorageNotFoundError:
        pass
    reason = f"{stop.reason() or 'cancelled'} before the branch started"
    outcome = ended_outcome(spec, "failed", reason, 0, 0, time.time())
    BranchStorage(spec).write_outcome(outcome)
    return outcome


async def run_branches(
    plan: RunPlan,
    max_parallel: int,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    stop: StopRequest | None = None,
) -> list[BranchOutcome]:
    """Every branch, at most ``max_parallel`` at once. With ``stop`` (and on the main thread), SIGINT
    and SIGTERM stop the run cleanly: the outcomes returned then say how each branch was stopped."""
    stop = stop or StopRequest()
    loop = asyncio.get_running_loop()
    installed = stop.install(loop)
    try:
        gate = asyncio.Semaphore(max_parallel)
        # Before any load: done later, in one branch's set-up, it would stall the others' loads.
        await asyncio.to_thread(warm_up_conversion)
        stop.tasks = [
            asyncio.create_task(_run_one(spec, gate, on_progress, stop), name=f"fmbench-{spec.branch_id}")
            for spec in plan.branches
        ]
        if stop.signal_name is not None:
            for task in stop.tasks:
                task.cancel()
        results = await asyncio.gather(*stop.tasks, return_exceptions=True)
    finally:
        if installed:
            stop.uninstall(loop)
    outcomes = []
    for spec, result in zip(plan.branches, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            outcomes.append(await asyncio.to_thread(_stopped_outcome, spec, stop))
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes.append(result)
    return outcomes


@dataclass
class LocalRun:
    """``result`` is None when the run was stopped (``stopped_by`` names the signal) or its report could
    not be written (``report_error``): ``report_command`` renders it from what is on storage."""

    plan: RunPlan
    outcomes: list[BranchOutcome]
    result: Any
    report_dir: Path
    elapsed_s: float
    stopped_by: int | None = None
    report_error: str | None = None
    notes: list[str] = field(default_factory=list)
    evaluation: EvaluationSummary | None = None
    evaluation_error: str | None = None

    @property
    def report_command(self) -> str:
        return report_command(self.plan.run_id, self.report_dir)

    @property
    def faults(self) -> list[str]:
        """Branches ended by a fault of this machine rather than of the endpoint: their figures are not
        the endpoint's, so the run must not look like a success."""
        return [
            f"{outcome.branch_id}: {outcome.reason}"
            for outcome in self.outcomes
            if (outcome.reason or "").startswith(RUN_FAULT_PREFIXES)
        ]


def report_command(run_id: str, root: Path) -> str:
    """The exact command that renders a run's report from what it left on storage."""
    return f"fmbench report {run_id} --root {shlex.quote(str(root))}"


def check_out_folder(out: Path, run_id: str | None) -> None:
    """The folder can take the run: it is (or can be made) a writable folder, and the run id is not taken
    by an earlier execution, whose records a second one would be mixed with."""
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"{out} is a file, not a folder: give --out a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutFolderError(f"cannot create the folder {out}: {exc.strerror or exc}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".fmbench-probe-"):
            pass
    except OSError as exc:
        raise OutFolderError(f"cannot write in {out}: {exc.strerror or exc}") from None
    if run_id is None:
        return
    root = str(out)
    taken = [
        folder
        for folder in (layout.RECORDS, layout.SPECS, layout.OUTCOMES)
        if Path(layout.run_folder(root, folder, run_id)).exists()
    ]
    if taken:
        raise OutFolderError(
            f"run id {run_id!r} is already used in {out} ({', '.join(taken)}): a run id names one "
            f"execution, and a second one would be mixed with the first's records. Give another --run-id "
            f"(or none, for a new one), another --out, or delete {out}/*/run_id={run_id} to start it clean"
        )


def run_report_dir(root: Path, run_id: str) -> Path:
    """``<root>/reports/run_id=<run>/``: each run's report stays addressable when the folder is reused."""
    return Path(layout.reports_prefix(str(root), run_id))


def _ours(out: Path) -> set[str]:
    try:
        return set(json.loads((out / TOP_REPORT_MANIFEST).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        return set()


def _written_before_manifests(out: Path) -> bool:
    """A folder whose top-level report an fmbench without the manifest wrote: its result.json names a
    run saved in the same folder."""
    if (out / TOP_REPORT_MANIFEST).exists():
        return False
    try:
        run_id = json.loads((out / "result.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(run_id, str) and Path(layout.run_folder(str(out), layout.SPECS, run_id)).is_dir()


def publish_top_report(out: Path, run_id: str, report_dir: Path) -> list[str]:
    """Copy a run's report files to the top of ``out`` (where a local run's folder reads as one report),
    skipping any file of the user's; the manifest names the run they show. Returns notes for the user."""
    ours = _ours(out)
    legacy = _written_before_manifests(out)
    notes: list[str] = []
    copied: list[str] = []
    for source in sorted(report_dir.iterdir()):
        target = out / source.name
        if not source.is_file():
            continue
        if target.exists() and source.name not in ours and not legacy:
            notes.append(f"{target} is not a report fmbench wrote: left as it is; run {run_id}'s is {source}")
            continue
        temporary = target.with_name(f"{target.name}.tmp-report")
        shutil.copyfile(source, temporary)
        temporary.replace(target)
        copied.append(source.name)
    for name in ours - set(copied):  # a chart the earlier run drew and this one did not
        if name not in {source.name for source in report_dir.iterdir()}:
            with contextlib.suppress(OSError):
                (out / name).unlink()
    manifest = {"run_id": run_id, "report_dir": str(report_dir), "files": copied}
    (out / TOP_REPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return notes


def run_price_table(suite: Suite) -> tuple[PriceTable | None, str | None]:
    """The Price List API's table when the suite asks for it (pricing.from_api), else none (the bundled
    table); any failure of the API falls back to the bundled table, and the note says so."""
    if not suite.pricing.from_api:
        return None, None
    from fmbench.cloud.pricing import api_errors, plan_price_table, pricing_client

    try:
        client = pricing_client()
    except api_errors() as exc:  # no usable boto3 configuration: the bundled table, with a note
        return None, f"prices: no Price List client ({exc}); the bundled table is used"
    return plan_price_table(client)


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    suite_dir: Path | None = None,
    run_id: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
) -> LocalRun:
    """Plan, run every branch (bounded parallelism), compute the metrics and render the report into out_dir.

    Records go to ``out_dir/records/run_id=.../branch_id=...`` (the storage layout), the plan and the
    branches' outcomes under ``specs/`` and ``outcomes/`` as in the cloud (``report_saved_run`` renders
    the report again from them); the report files go straight into ``out_dir`` so that a local run's
    folder reads like one report. A suite whose estimate exceeds its budget raises
    ``BudgetExceededError`` before anything runs or is written.
    """
    from report.render import generate_report

    started = time.perf_counter()
    started_at = datetime.now(UTC)
    out = Path(out_dir).resolve()
    prices, prices_note = run_price_table(suite)
    plan = plan_suite(
        suite,
        storage_root=str(out),
        run_id=run_id or new_run_id(),
        dataset_base_dir=str(suite_dir) if suite_dir else None,
        prices=prices,
    )
    if prices_note is not None:
        plan = plan.model_copy(update={"prices_note": prices_note})
    if plan.cost_estimate is not None:
        check_budget(plan.cost_estimate, suite.budget)
    check_out_folder(out, plan.run_id)
    # the prompts are made once, for every branch alike, and named in the report
    plan = materialize_plan(plan, suite_dir)
    save_plan(plan, str(out))
    stop = StopRequest()
    outcomes = asyncio.run(run_branches(plan, suite.execution.max_parallel_branches, on_progress, stop))
    run = LocalRun(plan, outcomes, None, out, 0.0, stopped_by=stop.signum)
    if stop.signum is None and suite.evaluation is not None:
        run.evaluation, run.evaluation_error = judge_saved_run(plan, str(out))
    if stop.signum is None:
        report_dir = run_report_dir(out, plan.run_id)
        try:
            result = generate_report(plan, outcomes, storage_root=str(out), report_dir=report_dir)
            run.result = _finish_run(suite, result, out, report_dir, started_at)
            run.notes = publish_top_report(out, plan.run_id, report_dir)
        except OSError as exc:
            run.report_error = f"the report could not be written: {exc}"
    run.elapsed_s = time.perf_counter() - started
    return run


@contextlib.contextmanager
def judge_emulators(evaluation: Evaluation) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The panel's emulator judges, each an emulator child like a branch's, started together: ({judge: base
    URL}, {judge: why it did not start}). A judge that does not start is left out; its rows say so."""
    from concurrent.futures import ThreadPoolExecutor

    from fmbench.emulator.process import EmulatorProcess, EmulatorStartError
    from fmbench.emulator.settings import EmulatorSettings

    processes = {
        judge.name: EmulatorProcess(EmulatorSettings.for_target(judge.target.emulator, judge.target.model))
        for judge in evaluation.judges
        if isinstance(judge.target, EmulatorTarget)
    }
    urls: dict[str, str] = {}
    failed: dict[str, str] = {}
    try:
        if processes:
            with ThreadPoolExecutor(max_workers=len(processes)) as pool:
                started = {name: pool.submit(process.start) for name, process in processes.items()}
            for name, future in started.items():
                try:
                    urls[name] = future.result()
                except EmulatorStartError as exc:
                    failed[name] = str(exc)
        yield urls, failed
    finally:
        for process in processes.values():
            process.stop()


def judge_saved_run(plan: RunPlan, root: str) -> tuple[EvaluationSummary | None, str | None]:
    """Judge a run's answers with its suite's panel (emulator judges started here); (summary, None), or
    (None, why not): a failed judging, whatever its error, never costs the run its records or its report,
    and its record (``fmbench.judging_outcome``) makes the report say why the run has no accuracy."""
    assert plan.suite.evaluation is not None
    try:
        with judge_emulators(plan.suite.evaluation) as (urls, _failed):
            summary = evaluate_run(plan, root, judge_urls=urls)
    except Exception as exc:  # the run is measured: any judging fault must keep it
        if not isinstance(exc, EvaluationError | OSError | ValueError):
            logger.exception("run %s: the judging crashed", plan.run_id)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EvaluationError) else str(exc)
        _record_judging(root, plan.run_id, failed_outcome(message))
        return None, f"the answers could not be judged: {exc}"
    _record_judging(root, plan.run_id, judged_outcome())
    return summary, None


def _record_judging(root: str, run_id: str, outcome: EvaluationOutcome) -> None:
    """Best effort: without the record only the report's words on the judging are lost, not the run."""
    try:
        write_evaluation_outcome(root, run_id, outcome)
    except OSError as exc:
        logger.warning("run %s: the judging's outcome not recorded: %s", run_id, exc)


def _finish_run(
    suite: Suite, result: ResultDocument, out: Path, report_dir: Path, started_at: datetime
) -> ResultDocument:
    """Compare with the baseline when the suite asks (result.json gains ``regression``, comparison.* are
    written beside the report), then add the run's row to the runs table: a run is in the history whatever
    its outcome, and its row carries the verdict."""
    from report.history import run_row, write_run_row
    from report.regression_report import add_regression_to_report, regression_of_run, write_comparison
    from report.render import RESULT_JSON
    from report.result import write_result

    if suite.regression is not None:
        regression = regression_of_run(str(out), result.run_id, suite.name, suite.regression)
        result = result.model_copy(update={"regression": regression})
        write_result(result, report_dir / RESULT_JSON)
        write_comparison(regression, result.run_id, report_dir)
        add_regression_to_report(report_dir, regression)
    write_run_row(str(out), run_row(result, started_at, datetime.now(UTC)))
    return result


def read_saved_plan(storage_root: str, run_id: str) -> RunPlan:
    try:
        data = storage.read_bytes(run_plan_uri(storage_root, run_id))
    except storage.StorageNotFoundError:
        raise SavedRunNotFoundError(
            f"no saved run {run_id!r} under {storage_root}: no {run_plan_uri(storage_root, run_id)}"
        ) from None
    return RunPlan.model_validate_json(data)


def recount_unfinished(spec: BranchSpec, storage_root: str, outcome: BranchOutcome) -> BranchOutcome:
    """An outcome still saying 'did not finish' (its process was killed before it could say more):
    counted again from the records on storage, so that the report does not show 0 records beside load
    points with measured requests. A point counts as completed when a later one has records, or when it
    has all its planned requests and none was cut off ('cancelled')."""
    import pyarrow.dataset as ds

    folder = layout.records_prefix(storage_root, spec.run_id, spec.branch_id)
    if not Path(folder).is_dir():
        return outcome
    columns = ["concurrency", "request_rate_per_s", "payload_bin", "error_message", "phase"]
    rows = ds.dataset(folder, format="parquet").to_table(columns=columns).to_pylist()
    attempted = len(rows)
    rows = [row for row in rows if row["phase"] != "quality"]  # the quality pass is no load point
    if not attempted:
        return outcome
    per_point: dict[tuple[int | None, float | None, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["concurrency"], row["request_rate_per_s"], row["payload_bin"])
        per_point.setdefault(key, []).append(row)
    planned = spec.planned_load_points()
    measured = [index for index, key in enumerate(planned) if key in per_point]
    completed = max(measured, default=-1)  # every point before the last one with records finished
    if measured:
        last = per_point[planned[completed]]
        whole = spec.load.requests_per_point
        cut_off = any(row["error_message"] == "cancelled" for row in last)
        if whole is not None and len(last) >= whole and not cut_off:
            completed += 1
    reason = (
        f"{outcome.reason}; {attempted} record(s) and {completed} finished load point(s) found on storage"
    )
    return outcome.model_copy(
        update={
            "status": "partial" if completed else "failed",
            "reason": reason,
            "requests_attempted": attempted,
            "records_written": attempted,
            "load_points_completed": completed,
        }
    )


def read_saved_outcomes(plan: RunPlan, storage_root: str) -> list[BranchOutcome]:
    """The outcomes the run saved; a branch without one is left out (the report counts it as failed)."""
    outcomes = []
    for spec in plan.branches:
        try:
            data = storage.read_bytes(outcome_uri(storage_root, plan.run_id, spec.branch_id))
        except storage.StorageNotFoundError:
            continue
        outcome = BranchOutcome.model_validate_json(data)
        # the placeholders of a local run and of the runner container (fmbench.runner_main)
        if outcome.reason == NOT_FINISHED_REASON or (outcome.reason or "").startswith("the runner did not"):
            outcome = recount_unfinished(spec, storage_root, outcome)
        outcomes.append(outcome)
    return outcomes


def report_saved_run(storage_root: str | Path, run_id: str, report_dir: str | Path) -> ResultDocument:
    """The report of an earlier local run, rendered again from its records, plan and outcomes alone: after
    a failed or interrupted report step, or with a newer renderer. Nothing is run again."""
    from report.render import generate_report

    root = str(Path(storage_root).resolve())
    plan = read_saved_plan(root, run_id)
    # The plan names the root it was run under; the records are read where they are now.
    outcomes = read_saved_outcomes(plan, root)
    return generate_report(plan, outcomes, storage_root=root, report_dir=report_dir)
