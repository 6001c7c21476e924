"""The embedded run: the whole workflow on one machine (emulators or endpoints, a folder, DuckDB)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmbench import storage
from fmbench.branch import live_branch
from fmbench.config import Suite
from fmbench.estimate import check_budget
from fmbench.layout import outcome_uri, run_plan_uri
from fmbench.plan import BranchOutcome, RunPlan, plan_suite
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


class SavedRunNotFoundError(LookupError):
    """No saved plan for the run id under the root: the id or the folder is wrong."""


def save_plan(plan: RunPlan, storage_root: str) -> None:
    """``specs/run_id=<run>/plan.json``, as the cloud plan step writes it: the run can be reported again."""
    document = plan.model_dump_json(indent=2, exclude_unset=True) + "\n"
    storage.write_bytes(run_plan_uri(storage_root, plan.run_id), document.encode(), "application/json")


async def _run_one(
    spec: BranchSpec, gate: asyncio.Semaphore, on_progress: Callable[[ProgressEvent], None] | None
) -> BranchOutcome:
    async with gate:
        return await live_branch(spec, NOT_FINISHED_REASON, on_progress)


async def run_branches(
    plan: RunPlan, max_parallel: int, on_progress: Callable[[ProgressEvent], None] | None = None
) -> list[BranchOutcome]:
    gate = asyncio.Semaphore(max_parallel)
    # Before any branch sends load: done later, in one branch's set-up, it would stall the others' loads.
    await asyncio.to_thread(warm_up_conversion)
    return list(await asyncio.gather(*(_run_one(spec, gate, on_progress) for spec in plan.branches)))


@dataclass
class LocalRun:
    plan: RunPlan
    outcomes: list[BranchOutcome]
    result: Any
    report_dir: Path
    elapsed_s: float


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
    plan = plan_suite(
        suite, storage_root=str(out), run_id=run_id, dataset_base_dir=str(suite_dir) if suite_dir else None
    )
    if plan.cost_estimate is not None:
        check_budget(plan.cost_estimate, suite.budget)
    out.mkdir(parents=True, exist_ok=True)
    # the prompts are made once, for every branch alike, and named in the report
    plan = materialize_plan(plan, suite_dir)
    save_plan(plan, str(out))
    outcomes = asyncio.run(run_branches(plan, suite.execution.max_parallel_branches, on_progress))
    result = generate_report(plan, outcomes, storage_root=str(out), report_dir=out)
    result = _finish_run(suite, result, out, started_at)
    return LocalRun(plan, outcomes, result, out, time.perf_counter() - started)


def _finish_run(suite: Suite, result: ResultDocument, out: Path, started_at: datetime) -> ResultDocument:
    """Compare with the baseline when the suite asks (result.json gains ``regression``, comparison.* are
    written beside the report), then add the run's row to the runs table: a run is in the history whatever
    its outcome, and its row carries the verdict."""
    from report.history import run_row, write_run_row
    from report.regression_report import regression_of_run, write_comparison
    from report.render import RESULT_JSON
    from report.result import write_result

    if suite.regression is not None:
        regression = regression_of_run(str(out), result.run_id, suite.name, suite.regression)
        result = result.model_copy(update={"regression": regression})
        write_result(result, out / RESULT_JSON)
        write_comparison(regression, result.run_id, out)
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


def read_saved_outcomes(plan: RunPlan, storage_root: str) -> list[BranchOutcome]:
    """The outcomes the run saved; a branch without one is left out (the report counts it as failed)."""
    outcomes = []
    for spec in plan.branches:
        try:
            data = storage.read_bytes(outcome_uri(storage_root, plan.run_id, spec.branch_id))
        except storage.StorageNotFoundError:
            continue
        outcomes.append(BranchOutcome.model_validate_json(data))
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
