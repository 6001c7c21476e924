"""Capacity: each branch's knee, capacity under the SLO, best goodput point and capacity search, and the
capacity plan (instances and cost per target load). Definitions: docs/metrics.md ("Capacity").

Everything here reads the SQL summary (one row per load point) and the plan; the search is replayed from the
summary's rows with the runner's own state machine (``fmbench.search``), so the report lists the levels in
the order the runner tried them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd

from fmbench.config import BedrockTarget, LoadSearch, Slo, Suite
from fmbench.plan import RunPlan
from fmbench.search import replay
from fmbench.spec import BranchSpec
from report.analysis import is_client_bound, meets_slo, python_value
from report.formatting import md, money, number
from report.result import (
    BranchCapacity,
    CapacityLevel,
    CapacityPlanCell,
    CapacityPlanResult,
    CapacityPlanRow,
    SearchResult,
    SearchStepResult,
)

# The knee: throughput grows less than this fraction as fast as the load, in relative terms.
KNEE_ELASTICITY = 0.5
HOURS_PER_MONTH = 730
GOODPUT_BASIS = (
    "highest successful transactions per minute among the load points that meet the SLO (and are not "
    "client-bound); no separate goodput figure exists"
)
Mode = Literal["concurrency", "rate"]


def _level_column(mode: Mode) -> str:
    return "concurrency" if mode == "concurrency" else "request_rate_per_s"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(key): value for key, value in row.items()} for row in frame.to_dict(orient="records")]


def branch_mode(spec: BranchSpec, rows: pd.DataFrame) -> Mode | None:
    """The load mode a branch's capacity is read in: its search's, else concurrency when it has any."""
    if spec.load.search is not None:
        return spec.load.search.mode
    if rows["concurrency"].notna().any():
        return "concurrency"
    if rows["request_rate_per_s"].notna().any():
        return "rate"
    return None


def _level(row: Mapping[str, Any], mode: Mode) -> CapacityLevel:
    value = python_value(row[_level_column(mode)])
    return CapacityLevel(
        concurrency=int(value) if mode == "concurrency" else None,
        request_rate_per_s=float(value) if mode == "rate" else None,
        transactions_per_minute=python_value(row["transactions_per_minute"]),
        latency_p95_s=python_value(row["latency_p95_s"]),
        meets_slo=bool(row["_selectable"]),
    )


def knee(rows: Sequence[Mapping[str, Any]], mode: Mode) -> Mapping[str, Any] | None:
    """The last level before throughput stops rising with load while latency climbs.

    Levels in ascending order x(i), with transactions per minute T(i) and p95 latency L(i): the first i
    where the elasticity (T(i) / T(i-1) - 1) / (x(i) / x(i-1) - 1) is below ``KNEE_ELASTICITY`` and
    L(i) > L(i-1) makes x(i-1) the knee. None when no such step exists (throughput kept up with the load).
    """
    column = _level_column(mode)
    ordered = sorted(rows, key=lambda row: float(row[column]))
    for before, after in itertools.pairwise(ordered):
        t0, t1 = (
            python_value(before["transactions_per_minute"]),
            python_value(after["transactions_per_minute"]),
        )
        l0, l1 = python_value(before["latency_p95_s"]), python_value(after["latency_p95_s"])
        if not t0 or t1 is None or l0 is None or l1 is None:
            continue
        load_gain = float(after[column]) / float(before[column]) - 1
        elasticity = (t1 / t0 - 1) / load_gain
        if elasticity < KNEE_ELASTICITY and l1 > l0:
            return before
    return None


def _search_result(search: LoadSearch, rows: pd.DataFrame) -> SearchResult:
    """The search replayed from the summary: a level passes when every bin's point meets the SLO."""
    column = _level_column(search.mode)

    def verdict_of(level: float) -> Literal["pass", "fail", "client_bound"] | None:
        at = rows[rows[column].astype(float).round(9) == round(level, 9)]
        if at.empty:
            return None
        if at["_bound"].any():
            return "client_bound"
        return "pass" if at["_meets"].all() else "fail"

    state = replay(search, verdict_of)
    passing = state.passing
    return SearchResult(
        mode=search.mode,
        found=passing is not None,
        capacity_concurrency=int(passing) if passing is not None and search.mode == "concurrency" else None,
        capacity_rate_per_s=passing if search.mode == "rate" else None,
        stop_reason=state.stop_reason,
        points_tried=[
            SearchStepResult(
                step=index,
                concurrency=int(step.level) if search.mode == "concurrency" else None,
                request_rate_per_s=step.level if search.mode == "rate" else None,
                verdict=step.verdict,
            )
            for index, step in enumerate(state.steps)
        ],
    )


def branch_capacity(
    spec: BranchSpec, metrics: pd.DataFrame, slo: Slo, headline_bin: str | None
) -> BranchCapacity:
    """Knee, capacity under the SLO and best goodput point of one branch, in its headline bin."""
    own = metrics[metrics["branch_id"] == spec.branch_id].copy()
    own["_meets"] = meets_slo(own, slo)
    own["_bound"] = is_client_bound(own)
    own["_selectable"] = own["_meets"] & ~own["_bound"]
    mode = branch_mode(spec, own)
    search = spec.load.search
    empty = BranchCapacity(branch_id=spec.branch_id, target_name=spec.target.name, mode=mode)
    if mode is None:
        return empty
    column = _level_column(mode)
    in_bin = own[(own["payload_bin"] == headline_bin) & own[column].notna() & ~own["_bound"]]
    records = _records(in_bin)
    knee_row = knee(records, mode)
    passing = [row for row in records if row["_selectable"]]
    highest = max(passing, key=lambda row: float(row[column]), default=None)
    goodput = max(passing, key=lambda row: python_value(row["transactions_per_minute"]) or 0.0, default=None)
    result = _search_result(search, own) if search is not None else None
    if result is not None:
        # The search's capacity is the level that passed in every bin; its headline-bin row is shown.
        level = result.capacity_concurrency if mode == "concurrency" else result.capacity_rate_per_s
        highest = next((row for row in records if level is not None and float(row[column]) == level), None)
    return empty.model_copy(
        update={
            "knee": _level(knee_row, mode) if knee_row is not None else None,
            "capacity_under_slo": _level(highest, mode) if highest is not None else None,
            "best_goodput": _level(goodput, mode) if goodput is not None else None,
            "goodput_basis": GOODPUT_BASIS,
            "search": result,
        }
    )


# ------------------------------------------------------------------------------------------ the plan


def instances_needed(target_rpm: float, tpm_per_instance: float | None) -> int | None:
    """ceil(target / TPM per instance); None when the branch carries nothing under the SLO."""
    if tpm_per_instance is None or tpm_per_instance <= 0:
        return None
    return math.ceil(round(target_rpm / tpm_per_instance, 9))


def _bedrock_cost_per_request(target: BedrockTarget, row: Mapping[str, Any]) -> float | None:
    prompt, completion = python_value(row["prompt_tokens_mean"]), python_value(row["completion_tokens_mean"])
    if target.input_price_per_1k_tokens_usd is None or target.output_price_per_1k_tokens_usd is None:
        return None
    if prompt is None or completion is None:
        return None
    return (
        prompt * target.input_price_per_1k_tokens_usd + completion * target.output_price_per_1k_tokens_usd
    ) / 1000


def plan_cell(spec: BranchSpec, best: Mapping[str, Any] | None, target_rpm: float) -> CapacityPlanCell:
    """One branch at one target load: instances and cost from its best SLO-meeting point."""
    target = spec.target
    base = CapacityPlanCell(branch_id=spec.branch_id, target_name=target.name)
    if best is None:
        return base.model_copy(update={"note": "no load point met the SLO: cannot carry"})
    tpm = python_value(best["transactions_per_minute"]) or 0.0
    if isinstance(target, BedrockTarget):
        per_request = _bedrock_cost_per_request(target, best)
        if per_request is None:
            return base.model_copy(update={"note": "no instances (Bedrock); token price unknown: n/a"})
        per_hour = per_request * target_rpm * 60
        return base.model_copy(
            update={
                "usd_per_hour": per_hour,
                "usd_per_month": per_hour * HOURS_PER_MONTH,
                "note": "no instances (Bedrock): per-request token cost x volume; quotas not checked",
            }
        )
    count = int(python_value(best["instance_count"]) or target.instance_count or 1)
    per_instance = tpm / count
    instances = instances_needed(target_rpm, per_instance)
    if instances is None:
        return base.model_copy(update={"note": "no successful requests under the SLO: cannot carry"})
    price = spec.instance_price_per_hour_usd
    instances_per_hour = instances * price if price is not None else None
    return base.model_copy(
        update={
            "tpm_per_instance": per_instance,
            "instances": instances,
            "usd_per_hour": instances_per_hour,
            "usd_per_month": instances_per_hour * HOURS_PER_MONTH if instances_per_hour is not None else None,
            "note": None if price is not None else "instance price unknown",
        }
    )


def best_slo_point(spec: BranchSpec, metrics: pd.DataFrame, slo: Slo, headline_bin: str | None) -> Any:
    """The branch's SLO-meeting, not client-bound point of the headline bin with the most successful TPM."""
    own = metrics[(metrics["branch_id"] == spec.branch_id) & (metrics["payload_bin"] == headline_bin)]
    own = own[(meets_slo(own, slo) & ~is_client_bound(own)).to_numpy()]
    if own.empty:
        return None
    return max(
        own.to_dict(orient="records"), key=lambda row: python_value(row["transactions_per_minute"]) or 0.0
    )


def capacity_plan(
    plan: RunPlan, metrics: pd.DataFrame, headline_bin: str | None
) -> CapacityPlanResult | None:
    suite: Suite = plan.suite
    if suite.capacity is None:
        return None
    best = {spec.branch_id: best_slo_point(spec, metrics, suite.slo, headline_bin) for spec in plan.branches}
    rows = []
    for target_rpm in suite.capacity.target_requests_per_minute:
        cells = [plan_cell(spec, best[spec.branch_id], target_rpm) for spec in plan.branches]
        priced = [cell for cell in cells if cell.usd_per_hour is not None]
        cheapest = min(priced, key=lambda c: (c.usd_per_hour, c.instances or 0, c.target_name), default=None)
        rows.append(
            CapacityPlanRow(
                target_requests_per_minute=target_rpm,
                cells=cells,
                cheapest_branch_id=cheapest.branch_id if cheapest is not None else None,
            )
        )
    return CapacityPlanResult(
        payload_bin=headline_bin,
        hours_per_month=HOURS_PER_MONTH,
        basis=(
            "instances = ceil(target requests per minute / (successful TPM of the branch's best SLO-meeting "
            "point in the headline bin / its instance count)); $/h = instances x instance price; $/month = "
            f"$/h x {HOURS_PER_MONTH}. One instance's measured capacity is scaled linearly."
        ),
        rows=rows,
    )


# ------------------------------------------------------------------------------------------ Markdown


def _level_text(level: CapacityLevel | None) -> str:
    if level is None:
        return "n/a"
    load = f"c{level.concurrency}" if level.concurrency is not None else f"{level.request_rate_per_s:g} req/s"
    tpm = number(level.transactions_per_minute)
    p95 = f"{level.latency_p95_s:.3f} s" if level.latency_p95_s is not None else "n/a"
    return f"{load} ({tpm} TPM, p95 {p95})"


def capacity_markdown(branches: Sequence[BranchCapacity], plan: CapacityPlanResult | None) -> str:
    """The report's Capacity section (empty when no branch has a capacity figure and there is no plan)."""
    if not any(b.mode for b in branches) and plan is None:
        return ""
    lines = [
        "## Capacity",
        "",
        "Per branch, in the headline bin (definitions: *Knee*, *Capacity under SLO*, *Best goodput point* "
        "below). Client-bound load points are left out.",
        "",
        "| Target | Branch | Knee | Capacity under SLO | Best goodput point |",
        "|---|---|---|---|---|",
    ]
    for b in branches:
        lines.append(
            f"| {md(b.target_name)} | `{b.branch_id}` | {_level_text(b.knee)} | "
            f"{_level_text(b.capacity_under_slo)} | {_level_text(b.best_goodput)} |"
        )
    for b in branches:
        if b.search is None:
            continue
        tried = ", ".join(
            f"{(f'c{p.concurrency}' if p.concurrency is not None else f'{p.request_rate_per_s:g} req/s')} "
            f"{p.verdict.replace('_', '-')}"
            for p in b.search.points_tried
        )
        found = (
            f"capacity {b.search.capacity_concurrency or b.search.capacity_rate_per_s:g}"
            if b.search.found
            else "no level met the SLO"
        )
        lines += [
            "",
            f"**Search, {md(b.target_name)}** (`{b.branch_id}`): tried in order {tried or 'nothing'}; "
            f"{found}; stopped: {md(b.search.stop_reason or 'n/a')}.",
        ]
    if plan is not None:
        names = [cell.target_name for cell in plan.rows[0].cells] if plan.rows else []
        lines += [
            "",
            "### Capacity plan",
            "",
            md(plan.basis) + " **Bold**: the cheapest way to carry the target.",
            "",
            "| Target RPM | " + " | ".join(md(name) for name in names) + " |",
            "|---:|" + "---|" * len(names),
        ]
        for row in plan.rows:
            cells = []
            for cell in row.cells:
                text = _cell_text(cell)
                cells.append(f"**{text}**" if cell.branch_id == row.cheapest_branch_id else text)
            lines.append(f"| {row.target_requests_per_minute:,g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell_text(cell: CapacityPlanCell) -> str:
    parts = []
    if cell.instances is not None:
        parts.append(f"{cell.instances} inst.")
    if cell.usd_per_hour is not None and cell.usd_per_month is not None:
        parts.append(f"{money(cell.usd_per_hour)}/h, {money(cell.usd_per_month)}/month")
    elif cell.instances is not None:
        parts.append("n/a $")
    if cell.note and cell.instances is None:
        parts.append(md(cell.note))
    return "; ".join(parts) or "n/a"
