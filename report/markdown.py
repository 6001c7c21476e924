"""report.md: the view model's tables and notes written into the Markdown template."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2

from report.charts import CHARTS
from report.formatting import (
    NOT_AVAILABLE,
    cores,
    load_label,
    md,
    money,
    number,
    percent,
    seconds,
    signed_percent,
    slo_text,
    usd,
)
from report.result import BestConfiguration, CostSummary
from report.server_section import server_metrics_markdown
from report.view import BranchView, LoadPointKey, LoadPointView, ReportView, errors_by_class

TEMPLATES_DIR = Path(__file__).parent / "templates"
CLIENT_BOUND_MARK = "†"
INCOMPLETE_MARK = "‡"
NOT_MEASURED = "not measured"


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
    rate = [("`request_rate_per_s`", number(best.request_rate_per_s))] if best.request_rate_per_s else []
    return [
        ("`experiment_name`", md(best.experiment_name)),
        ("`payload_file`", md(best.payload_file)),
        ("`instance_type`", md(best.instance_type)),
        ("`instance_count`", number(best.instance_count)),
        ("`concurrency`", number(best.concurrency)),
        *rate,
        ("`error_rate`", percent(best.error_rate)),
        ("`prompt_token_count_mean` (tokens)", number(best.prompt_token_count_mean)),
        ("`prompt_token_throughput` (tokens/s)", number(best.prompt_token_throughput)),
        ("`completion_token_count_mean` (tokens)", number(best.completion_token_count_mean)),
        ("`completion_token_throughput` (tokens/s)", number(best.completion_token_throughput)),
        ("`latency_mean` (s)", seconds(best.latency_mean)),
        ("`latency_p50` (s)", seconds(best.latency_p50)),
        ("`latency_p95` (s)", seconds(best.latency_p95)),
        ("`latency_p99` (s)", seconds(best.latency_p99)),
        ("`ttft_p95` (s)", seconds(best.ttft_p95)),
        ("`transactions_per_minute`", number(best.transactions_per_minute)),
        ("`price_per_txn` (USD)", usd(best.price_per_txn)),
        ("`price_per_1m_output_tokens` (USD)", usd(best.price_per_1m_output_tokens)),
        ("`branch_id`", f"`{best.branch_id}`"),
    ]


def _best_per_bin_rows(best_per_bin: Mapping[str, BestConfiguration | None]) -> list[list[str]]:
    rows = []
    for label, best in best_per_bin.items():
        if best is None:
            rows.append([md(label), "no load point meets the SLO", *[""] * 7])
            continue
        rows.append(
            [
                md(label),
                md(best.experiment_name),
                md(best.instance_type),
                load_label(best.concurrency, best.request_rate_per_s),
                seconds(best.latency_p95),
                seconds(best.ttft_p95),
                number(best.transactions_per_minute),
                usd(best.price_per_txn),
                usd(best.price_per_1m_output_tokens),
            ]
        )
    return rows


def _branch_rows(branches: tuple[BranchView, ...]) -> list[list[str]]:
    return [
        [
            md(b.target_name),
            f"`{b.branch_id}`",
            md(b.platform),
            md(b.instance_type)
            if b.instance_count in (None, 1)
            else f"{md(b.instance_type)} x {b.instance_count}",
            usd(b.instance_price_per_hour_usd),
            f"**{b.status}**" if b.status != "succeeded" else b.status,
            str(b.requests_attempted),
            str(b.records_written),
            f"{b.load_points_completed} / {b.load_points_planned}",
            md(b.reason) if b.reason else "",
        ]
        for b in branches
    ]


def _measured_row(point: LoadPointView) -> list[str]:
    return [
        load_label(point.key.concurrency, point.key.request_rate_per_s)
        + (f" {CLIENT_BOUND_MARK}" if point.client_bound else "")
        + ("" if point.completed else f" {INCOMPLETE_MARK}"),
        md(point.key.payload_bin),
        str(point["requests"]),
        percent(point["error_rate"]),
        seconds(point["latency_p50_s"]),
        seconds(point["latency_p95_s"]),
        seconds(point["latency_p99_s"]),
        seconds(point["latency_from_schedule_p95_s"]),
        seconds(point["ttft_p95_s"]),
        seconds(point["tpot_p50_s"]),
        number(point["transactions_per_minute"]),
        number(point["completion_token_throughput_per_s"]),
        usd(point["price_per_txn_usd"]),
        seconds(point["schedule_lag_p99_s"]),
        cores(point["runner_cpu_fraction"]),
        "yes" if point.meets_slo else "no",
    ]


def _not_measured_row(key: LoadPointKey) -> list[str]:
    cells = [load_label(key.concurrency, key.request_rate_per_s), md(key.payload_bin)]
    return [*cells, f"**{NOT_MEASURED}**", *[""] * 13]


def _load_point_rows(branch: BranchView, bins: tuple[str, ...]) -> list[list[str]]:
    """One row per measured load point and one per planned point that has no measured request ("not
    measured"), each in its place; an incomplete point is marked."""
    return [
        _measured_row(row) if isinstance(row, LoadPointView) else _not_measured_row(row)
        for row in branch.table_rows(bins)
    ]


def _not_measured_lines(branches: tuple[BranchView, ...]) -> list[str]:
    """Under the Branches table: which planned load points of a branch have no measured request."""
    lines = []
    for branch in branches:
        missing = branch.not_measured
        if not missing:
            continue
        points = ", ".join(
            f"{load_label(p.concurrency, p.request_rate_per_s)} on bin {md(p.payload_bin)}" for p in missing
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
                money(part.usd) + (" (emulated)" if part.emulated else ""),
                money(spent.usd if spent else None),
                md(spent.basis if spent else NOT_AVAILABLE),
            ]
        )
    estimate_total = money(cost.estimate_usd) + ("" if cost.estimate_complete else " + unknown")
    actual_total = money(cost.actual_usd) + ("" if cost.actual_complete else " + unknown")
    rows.append(["**Total**", "", f"**{estimate_total}**", f"**{actual_total}**", ""])
    return rows


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


def _client_bound_text(view: ReportView) -> str:
    """The sentence under the per-load-point tables when some load point's client could not keep up.

    The remedy depends on the cause: a busy runner needs more CPU or less work, while in an open loop
    with max_in_flight a backlog at the cap means the endpoint did not keep up within the cap.
    """
    count = sum(point.client_bound for point in view.load_points)
    if not count:
        return ""
    check = view.client_check
    remedy = "Rerun it on a larger runner, with fewer branches in parallel, or at a lower load."
    if check.open_loop_max_in_flight is not None:
        remedy = (
            "Where its runner CPU stayed low in an open loop, the lag is arrivals waiting for the "
            f"`max_in_flight` cap of {check.open_loop_max_in_flight}: the endpoint did not keep up with the "
            "offered rate within that many requests in flight (its queueing shows in the latency from "
            "schedule), and raising the cap or lowering the rate measures it. Otherwise rerun it on a larger "
            "runner, with fewer branches in parallel, or at a lower load."
        )
    return (
        f"**{CLIENT_BOUND_MARK} Client-bound** ({count} load point{'s' if count != 1 else ''}): the runner "
        f"did not send its requests on schedule (p99 schedule lag above {check.max_schedule_lag_p99_s:g} s), "
        f"used more than {check.max_runner_cpu_fraction:g} of a CPU core, or waited for a core (its event "
        f"loop late by more than {check.max_loop_lag_p99_s:g} s at p99), so these figures do not show "
        f"the endpoint's limit, and such a load point is never chosen as the best configuration. {remedy}"
    )


def _token_rows(view: ReportView) -> list[list[str]]:
    """Load points where the server reported token counts, with their disagreement from the tokenizer."""
    return [
        [
            md(point.target_name),
            load_label(point.key.concurrency, point.key.request_rate_per_s),
            md(point.key.payload_bin),
            signed_percent(point["prompt_tokens_local_diff_pct"]),
            signed_percent(point["completion_tokens_local_diff_pct"]),
        ]
        for point in view.load_points
        if point["prompt_tokens_local_diff_pct"] is not None
        or point["completion_tokens_local_diff_pct"] is not None
    ]


def _error_class_table(view: ReportView) -> dict[str, list[str] | list[list[str]]]:
    """Measured errors per class: one row per branch (its total), then one per load point that had
    errors; only the classes that occurred get a column. Empty when no measured request failed."""
    columns = list(errors_by_class(view.load_points))
    if not columns:
        return {"columns": [], "rows": []}
    rows = []
    for branch in view.branches:
        total = branch.errors_by_class
        if not total:
            continue
        rows.append([f"**{md(branch.target_name)}**", "all", "all", *(str(total.get(c, 0)) for c in columns)])
        for point in branch.measured.values():
            counts = errors_by_class([point])
            if counts:
                load = load_label(point.key.concurrency, point.key.request_rate_per_s)
                cells = [str(counts.get(c, 0)) for c in columns]
                rows.append([md(branch.target_name), load, md(point.key.payload_bin), *cells])
    return {"columns": columns, "rows": rows}


def _prompts_lines(view: ReportView) -> list[str]:
    """The dataset named exactly (source, revision, content hash), then what reuse and local counts mean."""
    prompts = view.prompts
    if prompts is None:
        return []
    named = f"`{md(prompts.source)}`"
    if prompts.revision:
        named += f" at revision `{md(prompts.revision)}`"
    if prompts.content_sha256:
        named += f", content SHA-256 `{prompts.content_sha256}`"
    lines = [
        f"Prompts: {named}; tokens counted with `{md(prompts.tokenizer)}`; repeat policy `{prompts.repeat}`."
    ]
    if prompts.prompts_per_bin:
        counts = ", ".join(f"{md(label)}: {n}" for label, n in prompts.prompts_per_bin.items())
        lines.append(f"Distinct prompts per bin: {counts}.")
    left_out = []
    if prompts.malformed_rows:
        left_out.append(f"{prompts.malformed_rows} malformed row(s) left out")
    if prompts.duplicates:
        left_out.append(f"{prompts.duplicates} duplicate prompt(s) sent once")
    if left_out:
        lines.append("; ".join(left_out).capitalize() + ".")
    if not prompts.reused_prompt_requests and prompts.measured_requests:
        lines.append("Every measured request sent a prompt no earlier request of its branch had sent.")
    lines.extend(md(note) for note in prompts.notes())
    return lines


def _no_best_hint(view: ReportView) -> str:
    if not view.load_points:
        return "No branch produced measured results."
    bound_but_met = sum(point.meets_slo and point.client_bound for point in view.in_bin(view.headline_bin))
    hint = "See the results per load point below for how far each branch is from it."
    if bound_but_met:
        hint = (
            f"{bound_but_met} load point(s) of this bin met the SLO but were client-bound, so they cannot "
            f"be recommended: rerun them with a runner that keeps up. {hint}"
        )
    return hint


def _status_text(view: ReportView) -> str:
    if not view.branches:
        return f"**{view.status}** (no branches)"
    counts = {s: sum(b.status == s for b in view.branches) for s in ("succeeded", "partial", "failed")}
    return f"**{view.status}** ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})"


def _load_point_table(branch: BranchView, bins: tuple[str, ...]) -> dict[str, object]:
    empty_reason = (
        f"the branch {branch.status}" + (f": {md(branch.reason)}" if branch.reason else "") + "."
        if branch.status != "succeeded"
        else "the branch wrote no measured requests."
    )
    if branch.not_measured:
        empty_reason += f" None of its {branch.load_points_planned} planned load point(s) was measured."
    return {
        "title": f"{md(branch.target_name)} (`{branch.branch_id}`)",
        "rows": _load_point_rows(branch, bins) if branch.measured else [],
        "empty_reason": empty_reason,
    }


def render_markdown(view: ReportView, chart_files: Mapping[str, str]) -> str:
    """report.md. ``chart_files`` maps chart name -> the image reference to write (a relative file name)."""
    incomplete = any(not point.completed for branch in view.branches for point in branch.measured.values())
    bin_text = md(view.headline_bin or NOT_AVAILABLE)
    chart_entries = [
        {
            "title": spec.title,
            "src": chart_files[spec.name],
            "caption": spec.caption.format(cost=view.cost_per_transactions, bin=bin_text),
        }
        for spec in CHARTS
        if spec.name in chart_files
    ]
    context = {
        "title": view.title,
        "run_id": view.run_id,
        "suite_name": view.suite_name,
        "generated_at": view.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status_text": _status_text(view),
        "slo_text": slo_text(view.slo),
        "headline_bin": view.headline_bin,
        "best_rows": _best_rows(view.best) if view.best is not None else [],
        "no_best_hint": _no_best_hint(view),
        "best_per_bin_rows": _best_per_bin_rows(view.best_per_bin),
        "selection_rule": view.selection_rule,
        "branch_rows": _branch_rows(view.branches),
        "not_measured_lines": _not_measured_lines(view.branches),
        "cost_text": _cost_text(view.cost) if view.cost is not None else "",
        "cost_rows": _cost_rows(view.cost) if view.cost is not None else [],
        "incomplete_text": (
            f"**{INCOMPLETE_MARK} Not completed**: the branch's sweep stopped during or right after this "
            "load point (see the branch's reason), so it may hold fewer requests than planned."
            if incomplete
            else ""
        ),
        "load_point_tables": [_load_point_table(branch, view.bins) for branch in view.branches],
        "client_bound_text": _client_bound_text(view),
        "token_rows": _token_rows(view),
        "error_class_table": _error_class_table(view),
        "prompts_lines": _prompts_lines(view),
        "charts": chart_entries,
        "server_metrics_text": server_metrics_markdown(view),
    }
    return _environment().get_template("report.md.j2").render(**context)
