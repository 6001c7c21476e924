"""The report: metrics -> summary.parquet, charts, report.md, self-contained report.html and result.json."""

from __future__ import annotations

import base64
import html
import math
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markdown
import pandas as pd

from fmbench.config import Slo, Suite
from fmbench.estimate import usd_text
from fmbench.plan import BranchOutcome, RunPlan
from fmbench.spec import BranchSpec
from report import charts
from report.analysis import (
    SELECTION_RULE,
    Selection,
    headline_bin_label,
    is_client_bound,
    meets_slo,
    python_value,
    select_best,
)
from report.costs import EndpointLifetime, cost_summary
from report.query import compute_metrics, ttft_samples
from report.result import (
    Artifacts,
    BestConfiguration,
    BranchResult,
    CostSummary,
    LoadPointSummary,
    PlannedLoadPoint,
    ResultDocument,
    SloSummary,
    overall_status,
    write_result,
)

TEMPLATES_DIR = Path(__file__).parent / "templates"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY_PARQUET = "summary.parquet"
RESULT_JSON = "result.json"
NOT_AVAILABLE = "n/a"
CLIENT_BOUND_MARK = "†"
INCOMPLETE_MARK = "‡"
NOT_MEASURED = "not measured"
NO_OUTCOME_REASON = "no outcome was reported for this branch"


class ReportError(RuntimeError):
    """The report could not be produced as promised (e.g. an image the HTML cannot embed)."""


@dataclass(frozen=True, slots=True)
class ChartSpec:
    name: str
    title: str
    caption: str


# Report order. Captions are one line each; the headline bin and cost scale are filled in at render time.
CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "price_performance",
        "Price vs performance",
        "p95 latency against cost per {cost:,} transactions on bin {bin}, one mark per branch and load "
        "level; larger marks serve more transactions per minute; lower-left is better.",
    ),
    ChartSpec(
        "latency_vs_prompt_tokens",
        "Latency vs prompt length",
        "p95 (solid) and mean (dotted) end-to-end latency against the mean prompt tokens of each bin, "
        "one line per concurrency level, one panel per branch.",
    ),
    ChartSpec(
        "throughput_vs_concurrency",
        "Throughput vs concurrency",
        "Transactions per minute and completion tokens per second against concurrency on bin {bin}, "
        "one line per branch: where a line flattens, more concurrency no longer buys throughput.",
    ),
    ChartSpec(
        "ttft_distribution",
        "TTFT distribution",
        "Empirical CDF of time to first token per branch, successful streamed requests of all load points.",
    ),
    ChartSpec(
        "throughput_vs_rate",
        "Throughput vs offered rate",
        "Open loop, bin {bin}: successful requests per second achieved against the rate offered (dashed: "
        "achieved = offered), and p95 latency from the scheduled time; hollow marks are client-bound.",
    ),
    ChartSpec(
        "error_rate_vs_concurrency",
        "Error rate vs concurrency",
        "Share of measured requests that failed against concurrency on bin {bin}, one line per branch.",
    ),
)

HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1f2328; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: 8px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 40px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 90%; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
"""

# ---------------------------------------------------------------------------------------- formatting

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md(text: Any) -> str:
    """User text (names, error reasons) made safe for a Markdown table cell and for the HTML built from it."""
    if text is None:
        return NOT_AVAILABLE
    flat = " ".join(str(text).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)


def _number(value: Any, digits: int = 4) -> str:
    value = python_value(value)
    if value is None:
        return NOT_AVAILABLE
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _seconds(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:.3f}" if value >= 0.01 else f"{value:.3g}"


def _usd(value: Any) -> str:
    value = python_value(value)
    if value is None:
        return NOT_AVAILABLE
    return f"{value:,.4f}" if value >= 0.01 else f"{value:.3g}"


def _percent(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value * 100:.1f}%"


def _load_label(concurrency: Any, rate_per_s: Any) -> str:
    concurrency, rate_per_s = python_value(concurrency), python_value(rate_per_s)
    if concurrency is not None:
        return f"concurrency {concurrency}"
    if rate_per_s is not None:
        return f"{rate_per_s:g} req/s"
    return NOT_AVAILABLE


def _cores(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def _signed_percent(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:+.1f}%"


def slo_text(slo: Slo | SloSummary) -> str:
    latency = f"<= {slo.p95_latency_s:g} s" if slo.p95_latency_s is not None else "no limit"
    ttft = f"<= {slo.p95_ttft_s:g} s" if slo.p95_ttft_s is not None else "no limit"
    return f"p95 latency {latency}; p95 TTFT {ttft}; error rate <= {slo.max_error_rate * 100:g}%"


# ------------------------------------------------------------------------------------ result document


def _outcome_for(branch: BranchSpec, outcomes: dict[str, BranchOutcome]) -> BranchOutcome:
    """A branch the runner never reported on counts as failed, so it is never silently missing."""
    return outcomes.get(branch.branch_id) or BranchOutcome(
        branch_id=branch.branch_id,
        status="failed",
        reason=NO_OUTCOME_REASON,
        load_points_planned=branch.load_point_count,
    )


def _ordered_points(metrics: pd.DataFrame, bins: Sequence[str]) -> pd.DataFrame:
    """The suite's bin order (not alphabetical: '1000-2000' would sort before '50-500'), then load level."""
    bin_rank = {label: index for index, label in enumerate(bins)}
    ranked = metrics.assign(_bin_rank=metrics["payload_bin"].map(lambda b: bin_rank.get(b, len(bin_rank))))
    ranked = ranked.sort_values(
        ["target_name", "branch_id", "_bin_rank", "payload_bin", "concurrency", "request_rate_per_s"],
        kind="stable",
        na_position="last",
    )
    return ranked.drop(columns="_bin_rank")


LoadPointKey = tuple[int | None, float | None, str]


def _row_key(row: pd.Series) -> LoadPointKey:
    concurrency, rate_per_s = python_value(row["concurrency"]), python_value(row["request_rate_per_s"])
    if concurrency is not None:
        return int(concurrency), None, str(row["payload_bin"])
    return None, None if rate_per_s is None else float(rate_per_s), str(row["payload_bin"])


def _display_order(key: LoadPointKey, bins: Sequence[str]) -> tuple[int, int, float]:
    """The per-load-point table's order: bins as the suite lists them, levels before rates, ascending."""
    concurrency, rate_per_s, label = key
    bin_rank = bins.index(label) if label in bins else len(bins)
    if concurrency is not None:
        return bin_rank, 0, float(concurrency)
    return bin_rank, 1, rate_per_s if rate_per_s is not None else math.inf


def _load_point_summary(row: pd.Series, qualifies: bool, completed: bool = True) -> LoadPointSummary:
    def get(column: str) -> Any:
        return python_value(row[column])

    return LoadPointSummary(
        concurrency=get("concurrency"),
        request_rate_per_s=get("request_rate_per_s"),
        payload_bin=get("payload_bin"),
        requests=get("requests"),
        error_rate=get("error_rate"),
        latency_p50_s=get("latency_p50_s"),
        latency_p95_s=get("latency_p95_s"),
        ttft_p95_s=get("ttft_p95_s"),
        latency_from_schedule_p95_s=get("latency_from_schedule_p95_s"),
        transactions_per_minute=get("transactions_per_minute"),
        completion_token_throughput_per_s=get("completion_token_throughput_per_s"),
        price_per_txn_usd=get("price_per_txn_usd"),
        meets_slo=qualifies,
        client_bound=bool(get("client_bound")),
        schedule_lag_p99_s=get("schedule_lag_p99_s"),
        runner_cpu_fraction=get("runner_cpu_fraction"),
        completed=completed,
    )


def _branch_result(branch: BranchSpec, outcome: BranchOutcome, points: pd.DataFrame) -> BranchResult:
    """The branch's account, with each planned load point either measured or listed as not measured.

    The runner sweeps the load points in order, so every measured point before the last measured one was
    finished; the last is finished only if the runner counted it (a sweep stopped mid-point keeps the
    records of that point, flagged, and it is marked as not completed).
    """
    target = branch.target
    planned = branch.planned_load_points()
    position = {key: index for index, key in enumerate(planned)}
    keys = [_row_key(row) for _, row in points.iterrows()]
    measured_positions = [position[key] for key in keys if key in position]
    finished = len(planned) if outcome.status == "succeeded" else outcome.load_points_completed
    if measured_positions:
        finished = max(finished, max(measured_positions))
    summaries = [
        _load_point_summary(row, bool(row["meets_slo"]), position.get(key, -1) < finished)
        for key, (_, row) in zip(keys, points.iterrows(), strict=True)
    ]
    measured = set(keys)
    not_measured = [
        PlannedLoadPoint(concurrency=concurrency, request_rate_per_s=rate_per_s, payload_bin=label)
        for concurrency, rate_per_s, label in planned
        if (concurrency, rate_per_s, label) not in measured
    ]
    return BranchResult(
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
        load_points=summaries,
        load_points_not_measured=not_measured,
    )


def _join_location(base: str, name: str) -> str:
    return posixpath.join(base.rstrip("/"), name) if "://" in base else str(Path(base) / name)


def run_records_prefix(storage_root: str, run_id: str) -> str:
    root = storage_root if "://" in storage_root else str(Path(storage_root).resolve())
    return posixpath.join(root.rstrip("/"), "records", f"run_id={run_id}") + "/"


# ----------------------------------------------------------------------------------------- markdown


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=False,  # Markdown output: user text is escaped by the md filter instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md"] = md
    return environment


def _best_rows(best: BestConfiguration) -> list[tuple[str, str]]:
    """FMBench's vertical Information | Value table: its field names, with our units beside them."""
    rate = [("`request_rate_per_s`", _number(best.request_rate_per_s))] if best.request_rate_per_s else []
    return [
        ("`experiment_name`", md(best.experiment_name)),
        ("`payload_file`", md(best.payload_file)),
        ("`instance_type`", md(best.instance_type)),
        ("`instance_count`", _number(best.instance_count)),
        ("`concurrency`", _number(best.concurrency)),
        *rate,
        ("`error_rate`", _percent(best.error_rate)),
        ("`prompt_token_count_mean` (tokens)", _number(best.prompt_token_count_mean)),
        ("`prompt_token_throughput` (tokens/s)", _number(best.prompt_token_throughput)),
        ("`completion_token_count_mean` (tokens)", _number(best.completion_token_count_mean)),
        ("`completion_token_throughput` (tokens/s)", _number(best.completion_token_throughput)),
        ("`latency_mean` (s)", _seconds(best.latency_mean)),
        ("`latency_p50` (s)", _seconds(best.latency_p50)),
        ("`latency_p95` (s)", _seconds(best.latency_p95)),
        ("`latency_p99` (s)", _seconds(best.latency_p99)),
        ("`ttft_p95` (s)", _seconds(best.ttft_p95)),
        ("`transactions_per_minute`", _number(best.transactions_per_minute)),
        ("`price_per_txn` (USD)", _usd(best.price_per_txn)),
        ("`price_per_1m_output_tokens` (USD)", _usd(best.price_per_1m_output_tokens)),
        ("`branch_id`", f"`{best.branch_id}`"),
    ]


def _best_per_bin_rows(selection: Selection) -> list[list[str]]:
    rows = []
    for label, best in selection.best_per_bin.items():
        if best is None:
            rows.append([md(label), "no load point meets the SLO", *[""] * 7])
            continue
        rows.append(
            [
                md(label),
                md(best.experiment_name),
                md(best.instance_type),
                _load_label(best.concurrency, best.request_rate_per_s),
                _seconds(best.latency_p95),
                _seconds(best.ttft_p95),
                _number(best.transactions_per_minute),
                _usd(best.price_per_txn),
                _usd(best.price_per_1m_output_tokens),
            ]
        )
    return rows


def _branch_rows(results: list[BranchResult]) -> list[list[str]]:
    return [
        [
            md(b.target_name),
            f"`{b.branch_id}`",
            md(b.platform),
            md(b.instance_type)
            if b.instance_count in (None, 1)
            else f"{md(b.instance_type)} x {b.instance_count}",
            _usd(b.instance_price_per_hour_usd),
            f"**{b.status}**" if b.status != "succeeded" else b.status,
            str(b.requests_attempted),
            str(b.records_written),
            f"{b.load_points_completed} / {b.load_points_planned}",
            md(b.reason) if b.reason else "",
        ]
        for b in results
    ]


def _load_point_rows(
    points: pd.DataFrame, branch: BranchResult | None = None, bins: Sequence[str] = ()
) -> list[list[str]]:
    """One row per measured load point; with ``branch``, also one per planned point that has no measured
    request ("not measured"), each in its place, and an incomplete point marked."""
    bound = is_client_bound(points).tolist()
    completed = [summary.completed for summary in branch.load_points] if branch else [True] * len(points)
    rows = [
        [
            _load_label(row["concurrency"], row["request_rate_per_s"])
            + (f" {CLIENT_BOUND_MARK}" if bound[position] else "")
            + ("" if completed[position] else f" {INCOMPLETE_MARK}"),
            md(row["payload_bin"]),
            str(python_value(row["requests"])),
            _percent(row["error_rate"]),
            _seconds(row["latency_p50_s"]),
            _seconds(row["latency_p95_s"]),
            _seconds(row["latency_p99_s"]),
            _seconds(row["latency_from_schedule_p95_s"]),
            _seconds(row["ttft_p95_s"]),
            _seconds(row["tpot_p50_s"]),
            _number(row["transactions_per_minute"]),
            _number(row["completion_token_throughput_per_s"]),
            _usd(row["price_per_txn_usd"]),
            _seconds(row["schedule_lag_p99_s"]),
            _cores(row["runner_cpu_fraction"]),
            "yes" if row["meets_slo"] else "no",
        ]
        for position, (_, row) in enumerate(points.iterrows())
    ]
    if branch is None or not branch.load_points_not_measured:
        return rows
    keyed = [
        (_display_order(_row_key(row), bins), cells)
        for (_, row), cells in zip(points.iterrows(), rows, strict=True)
    ]
    for point in branch.load_points_not_measured:
        key = (point.concurrency, point.request_rate_per_s, point.payload_bin)
        cells = [_load_label(point.concurrency, point.request_rate_per_s), md(point.payload_bin)]
        keyed.append((_display_order(key, bins), [*cells, f"**{NOT_MEASURED}**", *[""] * 13]))
    return [cells for _, cells in sorted(keyed, key=lambda item: item[0])]


def _not_measured_lines(results: list[BranchResult]) -> list[str]:
    """Under the Branches table: which planned load points of a branch have no measured request."""
    lines = []
    for branch in results:
        missing = branch.load_points_not_measured
        if not missing:
            continue
        points = ", ".join(
            f"{_load_label(p.concurrency, p.request_rate_per_s)} on bin {md(p.payload_bin)}" for p in missing
        )
        lines.append(
            f"**{md(branch.target_name)}** (`{branch.branch_id}`): {len(missing)} of "
            f"{branch.load_points_planned} planned load point(s) {NOT_MEASURED}: {points}."
        )
    return lines


def _cost_rows(cost: CostSummary) -> list[list[str]]:
    actual = {part.branch_id: part for part in cost.actual_parts}
    rows = []
    for part in cost.estimate_parts:
        spent = actual.get(part.branch_id)
        rows.append(
            [
                md(part.target_name),
                f"`{part.branch_id}`",
                _money(part.usd) + (" (emulated)" if part.emulated else ""),
                _money(spent.usd if spent else None),
                md(spent.basis if spent else NOT_AVAILABLE),
            ]
        )
    estimate_total = _money(cost.estimate_usd) + ("" if cost.estimate_complete else " + unknown")
    actual_total = _money(cost.actual_usd) + ("" if cost.actual_complete else " + unknown")
    rows.append(["**Total**", "", f"**{estimate_total}**", f"**{actual_total}**", ""])
    return rows


def _money(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else usd_text(value)


def _cost_text(cost: CostSummary) -> str:
    text = (
        "The estimate is an upper bound made before anything ran (every request running into its timeout, "
        "every endpoint using its whole deployment allowance; the bounds are in docs/operations.md), and "
        "the suite's budget is checked against it. The actual cost counts instance seconds from endpoint "
        "creation to deletion x the hourly price, and for Bedrock the tokens of the measured requests."
    )
    if cost.emulated:
        text += " This run is emulated: the figures use the emulated instances' prices; nothing is billed."
    return text


def _client_bound_text(points: pd.DataFrame, suite: Suite) -> str:
    """The sentence under the per-load-point tables when some load point's client could not keep up.

    The remedy depends on the cause: a busy runner needs more CPU or less work, while in an open loop
    with max_in_flight a backlog at the cap means the endpoint did not keep up within the cap.
    """
    count = int(is_client_bound(points).sum())
    if not count:
        return ""
    load = suite.load
    check = load.client_check
    remedy = "Rerun it on a larger runner, with fewer branches in parallel, or at a lower load."
    if load.rates_per_s and load.max_in_flight is not None:
        remedy = (
            "Where its runner CPU stayed low in an open loop, the lag is arrivals waiting for the "
            f"`max_in_flight` cap of {load.max_in_flight}: the endpoint did not keep up with the offered "
            "rate within that many requests in flight (its queueing shows in the latency from schedule), and "
            "raising the cap or lowering the rate measures it. Otherwise rerun it on a larger runner, with "
            "fewer branches in parallel, or at a lower load."
        )
    return (
        f"**{CLIENT_BOUND_MARK} Client-bound** ({count} load point{'s' if count != 1 else ''}): the runner "
        f"did not send its requests on schedule (p99 schedule lag above {check.max_schedule_lag_p99_s:g} s), "
        f"used more than {check.max_runner_cpu_fraction:g} of a CPU core, or waited for a core (its event "
        f"loop late by more than {check.max_loop_lag_p99_s:g} s at p99), so these figures do not show "
        f"the endpoint's limit, and such a load point is never chosen as the best configuration. {remedy}"
    )


def _token_rows(points: pd.DataFrame) -> list[list[str]]:
    """Load points where the server reported token counts, with their disagreement from the tokenizer."""
    compared = points[
        points["prompt_tokens_local_diff_pct"].notna() | points["completion_tokens_local_diff_pct"].notna()
    ]
    return [
        [
            md(row["target_name"]),
            _load_label(row["concurrency"], row["request_rate_per_s"]),
            md(row["payload_bin"]),
            _signed_percent(row["prompt_tokens_local_diff_pct"]),
            _signed_percent(row["completion_tokens_local_diff_pct"]),
        ]
        for _, row in compared.iterrows()
    ]


def _no_best_hint(metrics: pd.DataFrame, suite: Suite, headline_bin: str | None) -> str:
    if metrics.empty:
        return "No branch produced measured results."
    in_bin = metrics[metrics["payload_bin"] == headline_bin]
    bound_but_met = int((meets_slo(in_bin, suite.slo) & is_client_bound(in_bin)).sum())
    hint = "See the results per load point below for how far each branch is from it."
    if bound_but_met:
        hint = (
            f"{bound_but_met} load point(s) of this bin met the SLO but were client-bound, so they cannot "
            f"be recommended: rerun them with a runner that keeps up. {hint}"
        )
    return hint


def render_markdown(
    document: ResultDocument,
    metrics: pd.DataFrame,
    chart_files: dict[str, str],
    selection: Selection,
    suite: Suite,
) -> str:
    """report.md. ``chart_files`` maps chart name -> the image reference to write (a relative file name)."""
    cost_per_transactions = suite.report.cost_per_transactions
    status_counts = {
        s: sum(b.status == s for b in document.branches) for s in ("succeeded", "partial", "failed")
    }
    status_text = f"**{document.status}** ({', '.join(f'{n} {s}' for s, n in status_counts.items() if n)})"
    if not document.branches:
        status_text = f"**{document.status}** (no branches)"
    tables = []
    bins = [b.label for b in suite.workload.bins]
    for branch in document.branches:
        points = metrics[metrics["branch_id"] == branch.branch_id]
        title = f"{md(branch.target_name)} (`{branch.branch_id}`)"
        empty_reason = (
            f"the branch {branch.status}" + (f": {md(branch.reason)}" if branch.reason else "") + "."
            if branch.status != "succeeded"
            else "the branch wrote no measured requests."
        )
        if branch.load_points_not_measured:
            empty_reason += f" None of its {branch.load_points_planned} planned load point(s) was measured."
        rows = _load_point_rows(points, branch, bins) if not points.empty else []
        tables.append({"title": title, "rows": rows, "empty_reason": empty_reason})
    incomplete = any(not point.completed for branch in document.branches for point in branch.load_points)
    bin_text = md(document.headline_bin or NOT_AVAILABLE)
    chart_entries = [
        {
            "title": spec.title,
            "src": chart_files[spec.name],
            "caption": spec.caption.format(cost=cost_per_transactions, bin=bin_text),
        }
        for spec in CHARTS
        if spec.name in chart_files
    ]
    no_best_hint = _no_best_hint(metrics, suite, document.headline_bin)
    context = {
        "title": document.title,
        "run_id": document.run_id,
        "suite_name": document.suite_name,
        "generated_at": document.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status_text": status_text,
        "slo_text": slo_text(document.slo),
        "headline_bin": document.headline_bin,
        "best_rows": _best_rows(document.best) if document.best is not None else [],
        "no_best_hint": no_best_hint,
        "best_per_bin_rows": _best_per_bin_rows(selection),
        "selection_rule": document.selection_rule,
        "branch_rows": _branch_rows(document.branches),
        "not_measured_lines": _not_measured_lines(document.branches),
        "cost_text": _cost_text(document.cost) if document.cost is not None else "",
        "cost_rows": _cost_rows(document.cost) if document.cost is not None else [],
        "incomplete_text": (
            f"**{INCOMPLETE_MARK} Not completed**: the branch's sweep stopped during or right after this "
            "load point (see the branch's reason), so it may hold fewer requests than planned."
            if incomplete
            else ""
        ),
        "load_point_tables": tables,
        "client_bound_text": _client_bound_text(metrics, suite),
        "token_rows": _token_rows(metrics),
        "charts": chart_entries,
    }
    return _environment().get_template("report.md.j2").render(**context)


# --------------------------------------------------------------------------------------------- html

_IMG_SRC = re.compile(r'<img\b[^>]*?\bsrc="([^"]*)"')


def render_html(markdown_text: str, title: str, image_files: dict[str, Path]) -> str:
    """A single file that opens anywhere offline: every chart embedded as a data URI, CSS inline.

    ``image_files`` maps the image reference used in the Markdown (a file name) to the PNG to embed.
    """
    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    for reference, png in image_files.items():
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        body = body.replace(f'src="{reference}"', f'src="data:image/png;base64,{encoded}"')
    external = [src for src in _IMG_SRC.findall(body) if not src.startswith("data:")]
    if external:
        raise ReportError(f"images the HTML report cannot embed: {', '.join(external)}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------------------------------- charts


def draw_charts(
    metrics: pd.DataFrame, samples: pd.DataFrame, suite: Suite, headline_bin: str | None, report_dir: Path
) -> dict[str, Path]:
    """Chart name -> PNG for every chart that has data (others are left out, not drawn empty)."""
    drawers: dict[str, Callable[[Path], Path | None]] = {
        "price_performance": lambda path: charts.price_performance_chart(
            metrics,
            headline_bin,
            path,
            cost_per_transactions=suite.report.cost_per_transactions,
            p95_latency_slo_s=suite.slo.p95_latency_s,
        ),
        "latency_vs_prompt_tokens": lambda path: charts.latency_vs_prompt_tokens_chart(metrics, path),
        "throughput_vs_concurrency": lambda path: charts.throughput_vs_concurrency_chart(
            metrics, headline_bin, path
        ),
        "throughput_vs_rate": lambda path: charts.throughput_vs_rate_chart(metrics, headline_bin, path),
        "ttft_distribution": lambda path: charts.ttft_distribution_chart(samples, path),
        "error_rate_vs_concurrency": lambda path: charts.error_rate_vs_concurrency_chart(
            metrics, headline_bin, path
        ),
    }
    drawn = {}
    for spec in CHARTS:
        path = report_dir / f"{spec.name}.png"
        path.unlink(missing_ok=True)  # a chart from an earlier render must not outlive its data
        written = drawers[spec.name](path)
        if written is not None:
            drawn[spec.name] = written
    return drawn


# --------------------------------------------------------------------------------------------- entry


def build_report(
    plan: RunPlan,
    outcomes: Sequence[BranchOutcome],
    metrics: pd.DataFrame,
    samples: pd.DataFrame,
    report_dir: str | Path,
    *,
    records_location: str,
    publish_uri: str | None = None,
    generated_at: datetime | None = None,
    endpoint_lifetimes: Mapping[str, EndpointLifetime] | None = None,
) -> ResultDocument:
    """Everything after the query: the same for DuckDB locally and Athena in the cloud.

    ``metrics`` has the columns of ``report.query.METRIC_COLUMNS``, ``samples`` those of
    ``TTFT_SAMPLE_COLUMNS``. ``publish_uri`` is where ``report_dir``'s files will be published (e.g. the
    run's s3:// reports prefix); artifact locations in result.json use it, else the local paths.
    ``endpoint_lifetimes`` (deployed branches: creation and deletion) make the actual cost.
    """
    suite = plan.suite
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    bins = [b.label for b in suite.workload.bins]
    headline = headline_bin_label(suite)
    selection = select_best(metrics, suite.slo, bins=bins, headline_bin=headline)
    points = _ordered_points(metrics.assign(meets_slo=meets_slo(metrics, suite.slo)), bins)

    by_id = {outcome.branch_id: outcome for outcome in outcomes}
    branches = [
        _branch_result(branch, _outcome_for(branch, by_id), points[points["branch_id"] == branch.branch_id])
        for branch in plan.branches
    ]

    metrics.to_parquet(out / SUMMARY_PARQUET, index=False)
    chart_paths = draw_charts(metrics, samples, suite, headline, out)

    base = publish_uri or str(out.resolve())
    document = ResultDocument(
        run_id=plan.run_id,
        suite_name=suite.name,
        title=suite.report.title or f"FMBench Flow benchmark: {suite.name}",
        generated_at=(generated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0),
        status=overall_status([b.status for b in branches]),
        slo=SloSummary(**suite.slo.model_dump()),
        selection_rule=SELECTION_RULE,
        headline_bin=headline,
        best=selection.best,
        best_per_bin=selection.found,
        branches=branches,
        cost=cost_summary(plan, by_id, metrics, endpoint_lifetimes),
        artifacts=Artifacts(
            report_md=_join_location(base, REPORT_MD),
            report_html=_join_location(base, REPORT_HTML),
            summary_parquet=_join_location(base, SUMMARY_PARQUET),
            result_json=_join_location(base, RESULT_JSON),
            charts={name: _join_location(base, path.name) for name, path in chart_paths.items()},
            records_prefix=records_location,
        ),
    )

    chart_refs = {name: path.name for name, path in chart_paths.items()}
    markdown_text = render_markdown(document, points, chart_refs, selection, suite)
    (out / REPORT_MD).write_text(markdown_text, encoding="utf-8")
    html_text = render_html(markdown_text, document.title, {path.name: path for path in chart_paths.values()})
    (out / REPORT_HTML).write_text(html_text, encoding="utf-8")
    write_result(document, out / RESULT_JSON)
    return document


def generate_report(
    plan: RunPlan,
    outcomes: list[BranchOutcome],
    storage_root: str,
    report_dir: str | Path,
    *,
    publish_uri: str | None = None,
    generated_at: datetime | None = None,
) -> ResultDocument:
    """The local report of a run: DuckDB over the records under ``storage_root`` (a local folder)."""
    metrics = compute_metrics(storage_root, plan.run_id)
    samples = ttft_samples(storage_root, plan.run_id)
    return build_report(
        plan,
        outcomes,
        metrics,
        samples,
        report_dir,
        records_location=run_records_prefix(storage_root, plan.run_id),
        publish_uri=publish_uri,
        generated_at=generated_at,
    )
