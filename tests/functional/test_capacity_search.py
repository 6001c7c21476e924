"""The capacity search against an emulator of known capacity (profile flat-batch-8), over loopback.

The profile serves at most B requests at once, each in the same service time S (no prefill stall, a decode
step that does not grow with the batch), and queues the rest: below B in flight the latency is S, at 2B it
is about 2S. With the SLO's p95 latency at 1.5 S, a closed loop meets it up to concurrency B, and an open
loop up to about B / S requests per second. B comes from the emulator's /health, S from the profile.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds

from fmbench.emulator.profiles import get_profile
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import RunPlan, plan_suite
from fmbench.runner import run_branch
from fmbench.suite import validate_suite_data
from report.document import result_document
from report.markdown import render_markdown
from report.query import compute_metrics
from report.result import Artifacts, SearchResult
from report.view import ReportView, build_view

PROFILE = "flat-batch-8"
TOKENS = 9  # the first token at admission, then 8 decode steps
SERVICE_S = (TOKENS - 1) * get_profile(PROFILE).decode_base_ms / 1000  # 0.2 s
SLO_S = 1.5 * SERVICE_S
LENIENT_CHECK = {"max_schedule_lag_p99_s": 1.0, "max_loop_lag_p99_s": 0.1, "max_runner_cpu_fraction": 2.0}
ARTIFACTS = Artifacts(
    report_md="report.md",
    report_html="report.html",
    summary_parquet="summary.parquet",
    result_json="result.json",
    charts={},
    records_prefix="records/",
)


def run_plan(tmp_path: Path, load: dict[str, Any]) -> RunPlan:
    data = {
        "name": "capacity-test",
        "targets": [{"name": "emu", "platform": "emulator", "emulator": {"profile": PROFILE}}],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": TOKENS},
            "max_prompts_per_bin": 5,
            "repeat": "cycle",
        },
        # The emulator shares the runner's event loop here, on a machine other tests load too: a late loop
        # would make a level client-bound and end the search early, so the check only flags gross lateness
        # (the SLO's margin of S / 2 on either side absorbs the rest).
        "load": {"client_check": LENIENT_CHECK, **load},
        "slo": {"p95_latency_s": SLO_S},
        "capacity": {"target_requests_per_minute": [600, 6000]},
    }
    return plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="search")


async def max_batch(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
        return int((await response.json())["max_batch"])


async def search_records(tmp_path: Path, plan: RunPlan) -> tuple[int, list[dict[str, Any]], ReportView]:
    """Runs the branch; returns the emulator's batch limit, the records and the report's view of the run."""
    (spec,) = plan.branches
    async with running_emulator(EmulatorSettings(profile=PROFILE)) as url:
        batch = await max_batch(url)
        outcome = await run_branch(spec, endpoint_url=url)
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    dataset = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive")
    view = build_view(plan, [outcome], compute_metrics(str(tmp_path), "search"))
    return batch, dataset.to_table().to_pylist(), view


def tried_in_order(rows: list[dict[str, Any]], column: str) -> list[float]:
    steps = {row["search_step"]: row[column] for row in rows}
    assert sorted(steps) == list(range(len(steps)))  # every step of the search, each one level
    return [steps[step] for step in sorted(steps)]


def reported_search(view: ReportView) -> SearchResult:
    (capacity,) = view.capacity
    assert capacity.search is not None
    return capacity.search


async def test_closed_loop_search_finds_the_batch_limit(tmp_path: Path) -> None:
    plan = run_plan(
        tmp_path,
        {
            "search": {"mode": "concurrency", "start": 4, "max": 32, "max_points": 8},
            "requests_per_level": 24,
            "request_timeout_s": 10,
        },
    )
    batch, rows, view = await search_records(tmp_path, plan)
    order = tried_in_order(rows, "concurrency")
    assert order[:3] == [4, 8, 16]  # doubling from start until a level fails
    per_level = Counter(row["concurrency"] for row in rows if row["phase"] == "measured")
    assert set(per_level.values()) == {24}  # every level tried is a whole load point
    passing = max(level for level in order if _passes(rows, level))
    assert abs(passing - batch) <= 1  # the capacity under the SLO: the batch limit, within one step

    # The report replays the search from the SQL summary: the same levels in the same order, the same end.
    search = reported_search(view)
    assert [p.concurrency for p in search.points_tried] == order
    assert search.found and search.capacity_concurrency == passing
    (capacity,) = view.capacity
    assert capacity.capacity_under_slo is not None and capacity.capacity_under_slo.concurrency == passing
    # Throughput stops at B / S while latency climbs: the knee is the batch limit.
    assert capacity.knee is not None and abs((capacity.knee.concurrency or 0) - batch) <= 1

    # The plan: instances = ceil(target / TPM of the best SLO-meeting point), one instance here.
    assert view.capacity_plan is not None
    best_tpm = capacity.best_goodput.transactions_per_minute if capacity.best_goodput else None
    assert best_tpm is not None
    for row in view.capacity_plan.rows:
        (cell,) = row.cells
        assert cell.instances == math.ceil(row.target_requests_per_minute / best_tpm)
        assert row.cheapest_branch_id == cell.branch_id
    document = result_document(view, ARTIFACTS)
    (branch_result,) = document.branches
    assert branch_result.capacity is not None and branch_result.capacity.search == search
    assert document.capacity_plan == view.capacity_plan
    text = render_markdown(view, {})
    assert "## Capacity" in text and "### Capacity plan" in text
    assert "tried in order c4 pass, c8 pass, c16 fail" in text


async def test_open_loop_search_finds_batch_over_service_time(tmp_path: Path) -> None:
    plan = run_plan(
        tmp_path,
        {
            "search": {"mode": "rate", "start": 20, "max": 160, "max_points": 8, "tolerance": 0.1},
            "arrival": "constant",
            "requests_per_level": 48,
            "request_timeout_s": 10,
        },
    )
    batch, rows, view = await search_records(tmp_path, plan)
    order = tried_in_order(rows, "request_rate_per_s")
    assert order[:3] == [20, 40, 80]
    capacity = batch / SERVICE_S  # 40 requests per second
    passing = max(level for level in order if _passes(rows, level))
    # Within the tolerance below; above it a short point also passes a slight overload (its queue has not
    # grown past the SLO by the point's end: about B / (2 x 0.95 x requests) of the rate, here 9 %).
    assert capacity * 0.9 <= passing <= capacity * 1.25
    search = reported_search(view)
    assert [p.request_rate_per_s for p in search.points_tried] == order
    assert search.capacity_rate_per_s == passing


def _passes(rows: list[dict[str, Any]], level: float) -> bool:
    """Whether the level's measured requests meet the SLO, from the records (numpy's p95)."""
    import numpy as np

    column = "concurrency" if rows[0]["load_mode"] == "concurrency" else "request_rate_per_s"
    latencies = [
        row["latency_s"]
        for row in rows
        if row[column] == level and row["phase"] == "measured" and row["status"] == "ok"
    ]
    return bool(latencies) and float(np.quantile(latencies, 0.95)) <= SLO_S


async def test_a_time_budget_ends_the_search_and_the_report_says_where(tmp_path: Path) -> None:
    """No level starts after max_duration_s: here only the first runs; the report replays up to it."""
    plan = run_plan(
        tmp_path,
        {
            "search": {"mode": "concurrency", "start": 2, "max": 64, "max_duration_s": 0.001},
            "requests_per_level": 4,
            "request_timeout_s": 10,
        },
    )
    _, rows, view = await search_records(tmp_path, plan)
    assert tried_in_order(rows, "concurrency") == [2]
    search = reported_search(view)
    assert [p.concurrency for p in search.points_tried] == [2]
    assert search.found and search.capacity_concurrency == 2
    assert "level 4 was not measured" in (search.stop_reason or "")
    (branch,) = view.branches
    assert branch.not_measured == ()  # search levels are not planned points: none is missing
