"""The report's view model: a run's results, built once and frozen, that every output shows.

Every load point is keyed by its branch id and ``LoadPointKey`` (level or rate, payload bin); outputs look
figures up by key and never pair a summary row with a planned point or a table row by position, so the
summary's row order cannot change what any output says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pandas as pd
import yaml

from fmbench.endpoints.base import ERROR_CLASSES
from fmbench.judging_outcome import EvaluationOutcome
from fmbench.plan import BranchOutcome, RunPlan
from fmbench.spec import BranchSpec
from report.accuracy import AccuracyView, accuracy_view
from report.analysis import (
    headline_bin_label,
    is_client_bound,
    meets_slo,
    python_value,
    select_best,
    selection_rule,
)
from report.capacity import branch_capacity, capacity_plan
from report.costs import EndpointLifetime, cost_summary
from report.evaluation_status import evaluation_status
from report.result import (
    BestConfiguration,
    BranchCapacity,
    BranchStatus,
    CapacityPlanResult,
    CostSummary,
    EvaluationStatus,
    SloSummary,
    overall_status,
)
from report.server_metrics import ServerMetricsView

NO_OUTCOME_REASON = "no outcome was reported for this branch"


class ViewError(ValueError):
    """The summary contradicts itself (e.g. two rows for one load point of one branch)."""


@dataclass(frozen=True, slots=True)
class LoadPointKey:
    """A load point of one branch: its level (closed loop) or rate (open loop), and its payload bin."""

    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str

    @classmethod
    def planned(cls, point: tuple[int | None, float | None, str]) -> LoadPointKey:
        concurrency, rate_per_s, label = point
        return cls(concurrency, rate_per_s, label)

    def display_order(self, bins: Sequence[str]) -> tuple[int, int, float]:
        """The per-load-point table's order: bins as the suite lists them, levels before rates, ascending."""
        bin_rank = bins.index(self.payload_bin) if self.payload_bin in bins else len(bins)
        if self.concurrency is not None:
            return bin_rank, 0, float(self.concurrency)
        return bin_rank, 1, self.request_rate_per_s if self.request_rate_per_s is not None else math.inf


@dataclass(frozen=True, slots=True)
class LoadPointView:
    """One row of the SQL summary: every figure as a plain Python value (None where the summary has none)."""

    key: LoadPointKey
    branch_id: str
    target_name: str
    figures: Mapping[str, Any]
    meets_slo: bool
    client_bound: bool
    completed: bool = True

    def __getitem__(self, column: str) -> Any:
        return self.figures[column]

    def report_order(self, bins: Sequence[str]) -> tuple[Any, ...]:
        """Bins in the suite's order (not alphabetical: '1000-2000' would sort before '50-500'), then load
        level, then rate; a missing level or rate sorts last."""
        bin_rank = bins.index(self.key.payload_bin) if self.key.payload_bin in bins else len(bins)
        concurrency, rate_per_s = self.key.concurrency, self.key.request_rate_per_s
        return (
            self.target_name,
            self.branch_id,
            bin_rank,
            self.key.payload_bin,
            concurrency is None,
            concurrency if concurrency is not None else 0,
            rate_per_s is None,
            rate_per_s if rate_per_s is not None else 0.0,
        )


# Errors whose class is outside the vocabulary (records of an older or newer client) are counted here.
OTHER_ERROR_CLASS = "other"


def _count(value: Any) -> int:
    """A count of the summary, 0 where it has none (a figure the query did not give is None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)


def errors_by_class(points: Iterable[LoadPointView]) -> dict[str, int]:
    """Class -> measured errors over ``points``, in the vocabulary's order (docs/metrics.md, "Error
    classes"); errors of no known class under ``OTHER_ERROR_CLASS``; classes with no error left out."""
    counts = dict.fromkeys(ERROR_CLASSES, 0)
    other = 0
    for point in points:
        classified = 0
        for name in ERROR_CLASSES:
            count = _count(point.figures.get(f"errors_{name}"))
            counts[name] += count
            classified += count
        other += max(0, _count(point.figures.get("errors")) - classified)
    if other:
        counts[OTHER_ERROR_CLASS] = other
    return {name: count for name, count in counts.items() if count}


@dataclass(frozen=True, slots=True)
class BranchView:
    """A branch as planned and as it ended, with its measured load points by key and the planned ones
    that have no measured request."""

    branch_id: str
    target_name: str
    platform: str
    model: str | None
    container: str | None
    instance_type: str | None
    instance_count: int | None
    instance_price_per_hour_usd: float | None
    status: BranchStatus
    reason: str | None
    requests_attempted: int
    records_written: int
    load_points_planned: int
    load_points_completed: int
    measured: Mapping[LoadPointKey, LoadPointView]
    not_measured: tuple[LoadPointKey, ...]

    @property
    def errors_by_class(self) -> dict[str, int]:
        """Measured errors of each class over the branch's load points (classes with none left out)."""
        return errors_by_class(self.measured.values())

    def table_rows(self, bins: Sequence[str]) -> tuple[LoadPointView | LoadPointKey, ...]:
        """The branch's table: each measured point, and each planned but unmeasured one in its place."""
        measured = tuple(self.measured.values())
        if not self.not_measured:
            return measured
        rows: list[LoadPointView | LoadPointKey] = [*measured, *self.not_measured]
        return tuple(
            sorted(
                rows, key=lambda row: (row.key if isinstance(row, LoadPointView) else row).display_order(bins)
            )
        )


@dataclass(frozen=True, slots=True)
class ClientCheckView:
    """The suite's client check, for the note under the tables when some load point was client-bound."""

    max_schedule_lag_p99_s: float
    max_runner_cpu_fraction: float
    max_loop_lag_p99_s: float
    open_loop_max_in_flight: int | None  # set only in an open loop with a cap on requests in flight


@dataclass(frozen=True, slots=True)
class PromptsView:
    """What was sent and how it was counted: the dataset (source, revision, content hash), the requests
    that reused a prompt, and the answers whose token counts are the local tokenizer's, not the server's."""

    source: str
    revision: str | None
    content_sha256: str | None
    malformed_rows: int
    duplicates: int
    prompts_per_bin: Mapping[str, int]
    truncated_bins: tuple[str, ...]
    repeat: str
    tokenizer: str
    measured_requests: int
    reused_prompt_requests: int
    measured_successes: int
    local_token_count_requests: int

    def notes(self) -> list[str]:
        """What the counts mean for the figures, in plain words (the Markdown and result.json say them)."""
        notes = []
        if self.reused_prompt_requests:
            notes.append(
                f"{self.reused_prompt_requests} of {self.measured_requests} measured requests reused a "
                "prompt that an earlier request of their branch had sent (the bin had fewer distinct "
                "prompts than requests; workload.repeat: cycle). A server with prefix caching (vLLM, "
                "SGLang) serves a repeated prompt's prefill from its cache, so these requests' TTFT, "
                "and the latency and throughput figures with it, are better than new prompts would get."
            )
        if self.local_token_count_requests:
            notes.append(
                f"{self.local_token_count_requests} of {self.measured_successes} successful measured "
                f"requests have token counts from the local tokenizer ({self.tokenizer}) because the server "
                "sent no usage: their token figures are that tokenizer's count, not the model's."
            )
        if self.truncated_bins:
            notes.append(
                f"Bin(s) {', '.join(self.truncated_bins)} held more prompts than the plan step materializes; "
                "only the first were sent."
            )
        return notes


@dataclass(frozen=True, slots=True)
class ReportView:
    run_id: str
    suite_name: str
    title: str
    generated_at: datetime
    status: BranchStatus
    slo: SloSummary
    selection_rule: str
    bins: tuple[str, ...]
    headline_bin: str | None
    best: BestConfiguration | None
    best_per_bin: Mapping[str, BestConfiguration | None]
    branches: tuple[BranchView, ...]
    load_points: tuple[LoadPointView, ...]  # every summary row, branches not in the plan too, report order
    cost: CostSummary | None
    cost_per_transactions: int
    client_check: ClientCheckView
    prompts: PromptsView | None = None
    accuracy: AccuracyView | None = None  # None: the run was not judged
    capacity: tuple[BranchCapacity, ...] = ()  # per branch in plan order (report/capacity.py)
    capacity_plan: CapacityPlanResult | None = None
    suite_yaml: str = ""  # the suite as run (as given, defaults left out), for reproducing the run
    prices_note: str = ""  # which price table priced the run (fmbench.plan.RunPlan.prices_note)
    server: ServerMetricsView | None = None  # the endpoints' own figures (report.server_metrics)
    evaluation: EvaluationStatus | None = None  # judged or why not (report.evaluation_status)

    @property
    def best_found(self) -> list[BestConfiguration]:
        return [best for best in self.best_per_bin.values() if best is not None]

    def in_bin(self, payload_bin: str | None) -> tuple[LoadPointView, ...]:
        return tuple(point for point in self.load_points if point.key.payload_bin == payload_bin)


# ------------------------------------------------------------------------------------------- builder


def _outcome_for(branch: BranchSpec, outcomes: Mapping[str, BranchOutcome]) -> BranchOutcome:
    """A branch the runner never reported on counts as failed, so it is never silently missing."""
    return outcomes.get(branch.branch_id) or BranchOutcome(
        branch_id=branch.branch_id,
        status="failed",
        reason=NO_OUTCOME_REASON,
        load_points_planned=branch.load_point_count,
    )


def _row_key(row: Mapping[str, Any]) -> LoadPointKey:
    concurrency, rate_per_s = row["concurrency"], row["request_rate_per_s"]
    if concurrency is not None:
        return LoadPointKey(int(concurrency), None, str(row["payload_bin"]))
    return LoadPointKey(None, None if rate_per_s is None else float(rate_per_s), str(row["payload_bin"]))


def _load_points(metrics: pd.DataFrame, plan: RunPlan, bins: Sequence[str]) -> tuple[LoadPointView, ...]:
    qualifies = meets_slo(metrics, plan.suite.slo).tolist()
    bound = is_client_bound(metrics).tolist()
    points = []
    for position, record in enumerate(metrics.to_dict(orient="records")):
        figures = {str(column): python_value(value) for column, value in record.items()}
        points.append(
            LoadPointView(
                key=_row_key(figures),
                branch_id=str(figures["branch_id"]),
                target_name=str(figures["target_name"]),
                figures=MappingProxyType(figures),
                meets_slo=bool(qualifies[position]),
                client_bound=bool(bound[position]),
            )
        )
    return tuple(sorted(points, key=lambda point: point.report_order(bins)))


def _branch_view(
    branch: BranchSpec, outcome: BranchOutcome, points: Sequence[LoadPointView]
) -> tuple[BranchView, tuple[LoadPointView, ...]]:
    """The branch's account, with each planned load point either measured or listed as not measured.

    The runner sweeps the load points in order, so every measured point before the last measured one was
    finished; the last is finished only if the runner counted it (a sweep stopped mid-point keeps the
    records of that point, flagged, and it is marked as not completed).
    """
    planned = [LoadPointKey.planned(point) for point in branch.planned_load_points()]
    position = {key: index for index, key in enumerate(planned)}
    measured_positions = [position[point.key] for point in points if point.key in position]
    finished = len(planned) if outcome.status == "succeeded" else outcome.load_points_completed
    if measured_positions:
        finished = max(finished, max(measured_positions))
    measured: dict[LoadPointKey, LoadPointView] = {}
    for point in points:
        if point.key in measured:
            raise ViewError(
                f"summary: branch {branch.branch_id} has two rows for one load point (concurrency "
                f"{point.key.concurrency}, rate {point.key.request_rate_per_s}, bin {point.key.payload_bin})"
            )
        completed = position.get(point.key, -1) < finished
        measured[point.key] = LoadPointView(
            key=point.key,
            branch_id=point.branch_id,
            target_name=point.target_name,
            figures=point.figures,
            meets_slo=point.meets_slo,
            client_bound=point.client_bound,
            completed=completed,
        )
    target = branch.target
    view = BranchView(
        branch_id=branch.branch_id,
        target_name=target.name,
        platform=target.platform,
        model=target.model or None,
        container=target.container or None,
        instance_type=branch.instance_type,
        instance_count=target.instance_count,
        instance_price_per_hour_usd=branch.instance_price_per_hour_usd,
        status=outcome.status,
        reason=outcome.reason,
        requests_attempted=outcome.requests_attempted,
        records_written=outcome.records_written,
        load_points_planned=outcome.load_points_planned or branch.load_point_count,
        load_points_completed=outcome.load_points_completed,
        measured=MappingProxyType(measured),
        not_measured=tuple(key for key in planned if key not in measured),
    )
    return view, tuple(measured.values())


def _metric_sum(metrics: pd.DataFrame, column: str) -> int:
    if column not in metrics.columns or metrics.empty:
        return 0
    return int(metrics[column].fillna(0).sum())


def _prompts_view(plan: RunPlan, metrics: pd.DataFrame) -> PromptsView:
    """From the plan's dataset summary (when the run materialized its prompts) and the summary's counts."""
    workload = plan.suite.workload
    dataset = plan.dataset
    source = "synthetic" if workload.synthetic is not None else workload.dataset.source
    return PromptsView(
        source=dataset.source if dataset is not None else source,
        revision=dataset.revision if dataset is not None else None,
        content_sha256=dataset.content_sha256 if dataset is not None else None,
        malformed_rows=dataset.malformed_rows if dataset is not None else 0,
        duplicates=dataset.duplicates if dataset is not None else 0,
        prompts_per_bin=MappingProxyType(dict(dataset.prompts_per_bin) if dataset is not None else {}),
        truncated_bins=tuple(dataset.truncated_bins) if dataset is not None else (),
        repeat=workload.repeat,
        tokenizer=workload.tokenizer,
        measured_requests=_metric_sum(metrics, "requests"),
        reused_prompt_requests=_metric_sum(metrics, "requests_reused_prompt"),
        measured_successes=_metric_sum(metrics, "successes"),
        local_token_count_requests=_metric_sum(metrics, "requests_local_token_counts"),
    )


def build_view(
    plan: RunPlan,
    outcomes: Sequence[BranchOutcome],
    metrics: pd.DataFrame,
    *,
    generated_at: datetime | None = None,
    endpoint_lifetimes: Mapping[str, EndpointLifetime] | None = None,
    accuracy: pd.DataFrame | None = None,
    server: ServerMetricsView | None = None,
    evaluation_outcome: EvaluationOutcome | None = None,
) -> ReportView:
    """The one view of a run: the SQL summary (columns ``report.query.METRIC_COLUMNS``, any row order),
    the plan and the branches' outcomes; ``accuracy`` (columns ``report.query.ACCURACY_COLUMNS``, None for
    a run never judged) adds the panel's accuracy and puts the suite's accuracy floor into the selection;
    ``server``: the endpoints' own figures, when there are any; ``evaluation_outcome``: how the latest
    judging ended (``fmbench.judging_outcome``), for the evaluation status."""
    suite = plan.suite
    bins = tuple(b.label for b in suite.workload.bins)
    headline = headline_bin_label(suite)
    judged = accuracy_view(accuracy, suite.slo.min_accuracy)
    selection = select_best(
        metrics,
        suite.slo,
        bins=bins,
        headline_bin=headline,
        accuracy=judged.accuracy_by_branch() if judged is not None else None,
    )
    by_id = {outcome.branch_id: outcome for outcome in outcomes}
    all_points = _load_points(metrics, plan, bins)
    branches = []
    placed: dict[tuple[str, LoadPointKey], LoadPointView] = {}
    for spec in plan.branches:
        own = [point for point in all_points if point.branch_id == spec.branch_id]
        branch, measured = _branch_view(spec, _outcome_for(spec, by_id), own)
        branches.append(branch)
        placed.update({(point.branch_id, point.key): point for point in measured})
    load = suite.load
    check = load.client_check
    return ReportView(
        run_id=plan.run_id,
        suite_name=suite.name,
        title=suite.report.title or f"FMBench Flow benchmark: {suite.name}",
        generated_at=(generated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0),
        status=overall_status([b.status for b in branches]),
        slo=SloSummary(**suite.slo.model_dump(include=set(SloSummary.model_fields))),
        selection_rule=selection_rule(suite.slo),
        bins=bins,
        headline_bin=headline,
        best=selection.best,
        best_per_bin=MappingProxyType(dict(selection.best_per_bin)),
        branches=tuple(branches),
        load_points=tuple(placed.get((point.branch_id, point.key), point) for point in all_points),
        cost=cost_summary(plan, by_id, metrics, endpoint_lifetimes, judged),
        cost_per_transactions=suite.report.cost_per_transactions,
        client_check=ClientCheckView(
            max_schedule_lag_p99_s=check.max_schedule_lag_p99_s,
            max_runner_cpu_fraction=check.max_runner_cpu_fraction,
            max_loop_lag_p99_s=check.max_loop_lag_p99_s,
            open_loop_max_in_flight=load.max_in_flight if load.rates_per_s else None,
        ),
        prompts=_prompts_view(plan, metrics),
        accuracy=judged,
        capacity=tuple(branch_capacity(spec, metrics, suite.slo, headline) for spec in plan.branches),
        capacity_plan=capacity_plan(plan, metrics, headline),
        suite_yaml=suite_yaml(plan),
        prices_note=plan.prices_note or "",
        server=server,
        evaluation=evaluation_status(plan, evaluation_outcome, judged),
    )


def suite_yaml(plan: RunPlan) -> str:
    """The run's suite as YAML: what ``fmbench run`` (or ``fmbench start``) takes to run it again."""
    document = plan.suite.model_dump(mode="json", exclude_unset=True)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
