"""report.md: the view model's tables and notes written into the Markdown template."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import jinja2

from report.accuracy import AccuracyView, MajorityAccuracy, answer_source_text
from report.capacity import capacity_markdown
from report.charts import CHARTS
from report.evaluation_status import evaluation_note, short_judge_notes
from report.formatting import (
    NOT_AVAILABLE,
    cores,
    goodput,
    goodput_slo_text,
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


def _best_rows(best: BestConfiguration, accuracy: AccuracyView | None = None) -> list[tuple[str, str]]:
    """FMBench's vertical Information | Value table: its field names, with our units beside them (and the
    branch's majority-vote accuracy when the run was judged)."""
    rate = [("`request_rate_per_s`", number(best.request_rate_per_s))] if best.request_rate_per_s else []
    judged = (
        [] if accuracy is None else [("`accuracy` (majority vote)", _accuracy_cell(accuracy, best.branch_id))]
    )
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
        *judged,
        ("`branch_id`", f"`{best.branch_id}`"),
    ]


def _best_per_bin_rows(
    best_per_bin: Mapping[str, BestConfiguration | None], accuracy: AccuracyView | None = None
) -> list[list[str]]:
    rows = []
    for label, best in best_per_bin.items():
        if best is None:
            rows.append([md(label), "no load point meets the SLO", *[""] * (7 if accuracy is None else 8)])
            continue
        judged = [] if accuracy is None else [_accuracy_cell(accuracy, best.branch_id)]
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
                *judged,
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


def _measured_row(point: LoadPointView, with_goodput: bool = False) -> list[str]:
    cells = [
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
    return [*cells, goodput(point["goodput_share"], point["goodput_per_s"])] if with_goodput else cells


def _not_measured_row(key: LoadPointKey, with_goodput: bool = False) -> list[str]:
    cells = [load_label(key.concurrency, key.request_rate_per_s), md(key.payload_bin)]
    return [*cells, f"**{NOT_MEASURED}**", *[""] * (14 if with_goodput else 13)]


def _with_goodput(view: ReportView) -> bool:
    """The per-load-point tables have a Goodput column when the suite sets a per-request SLO."""
    return bool(goodput_slo_text(view.slo))


def _load_point_rows(
    branch: BranchView, bins: tuple[str, ...], with_goodput: bool = False
) -> list[list[str]]:
    """One row per measured load point and one per planned point that has no measured request ("not
    measured"), each in its place; an incomplete point is marked."""
    return [
        _measured_row(row, with_goodput)
        if isinstance(row, LoadPointView)
        else _not_measured_row(row, with_goodput)
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
    rows.extend(_judging_cost_row(cost))
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
    if cost.judging is not None:
        text += " Judging is the sum of the judges' recorded call costs, in the actual total; not estimated."
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
    return _below_floor_hint(view) + hint


def _below_floor_hint(view: ReportView) -> str:
    """When the accuracy floor is what left the headline bin without a best configuration, say so."""
    if view.slo.min_accuracy is None:
        return ""
    accuracy = view.accuracy
    held_back = [
        point
        for point in view.in_bin(view.headline_bin)
        if point.meets_slo
        and not point.client_bound
        and (accuracy is None or not accuracy.meets_floor(point.branch_id))
    ]
    if not held_back:
        return ""
    why = "the run was not judged" if accuracy is None else "their branch is below it or was not judged"
    return (
        f"{len(held_back)} load point(s) of this bin met the latency and error limits but not the accuracy "
        f"floor of {view.slo.min_accuracy * 100:g}% ({why}). "
    )


def _status_text(view: ReportView) -> str:
    if not view.branches:
        return f"**{view.status}** (no branches)"
    counts = {s: sum(b.status == s for b in view.branches) for s in ("succeeded", "partial", "failed")}
    return f"**{view.status}** ({', '.join(f'{n} {s}' for s, n in counts.items() if n)})"


def _load_point_table(
    branch: BranchView, bins: tuple[str, ...], with_goodput: bool = False
) -> dict[str, object]:
    empty_reason = (
        f"the branch {branch.status}" + (f": {md(branch.reason)}" if branch.reason else "") + "."
        if branch.status != "succeeded"
        else "the branch wrote no measured requests."
    )
    if branch.not_measured:
        empty_reason += f" None of its {branch.load_points_planned} planned load point(s) was measured."
    return {
        "title": f"{md(branch.target_name)} (`{branch.branch_id}`)",
        "rows": _load_point_rows(branch, bins, with_goodput) if branch.measured else [],
        "empty_reason": empty_reason,
    }


# ------------------------------------------------------------------------------------------ accuracy

# A bin or candidate judged on fewer prompts than this gets a note: its interval is wide.
FEW_JUDGED_PROMPTS = 30


def _accuracy_cell(accuracy: AccuracyView, branch_id: str) -> str:
    """A branch's majority accuracy for the best-configuration tables ('not judged' without judgments)."""
    figures = accuracy.of_branch(branch_id)
    return percent(figures.accuracy) if figures is not None else "not judged"


def _interval_text(figures: MajorityAccuracy) -> str:
    if figures.interval is None:
        return NOT_AVAILABLE
    low, high = figures.interval
    return f"{low * 100:.1f}% to {high * 100:.1f}%"


def _kappa(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.3f}"


def _majority_rows(accuracy: AccuracyView) -> list[list[str]]:
    rows = []
    for c in accuracy.candidates:
        floor = (
            []
            if accuracy.min_accuracy is None
            else ["yes" if accuracy.meets_floor(c.branch_id) else "**no**"]
        )
        rows.append(
            [
                md(c.target_name),
                f"`{c.branch_id}`",
                str(c.prompts),
                str(c.majority_correct),
                str(c.majority_incorrect),
                str(c.no_majority),
                percent(c.accuracy),
                _interval_text(c),
                *floor,
            ]
        )
    return rows


def _bin_rows(accuracy: AccuracyView, bins: tuple[str, ...]) -> list[list[str]]:
    def order(c: MajorityAccuracy) -> tuple[str, str, int]:
        label = c.payload_bin or ""
        return c.target_name, c.branch_id, bins.index(label) if label in bins else len(bins)

    return [
        [
            md(c.target_name),
            md(c.payload_bin),
            str(c.prompts),
            str(c.majority_correct),
            str(c.no_majority),
            percent(c.accuracy),
            _interval_text(c),
        ]
        for c in sorted(accuracy.per_bin, key=order)
    ]


def _judge_rows(accuracy: AccuracyView) -> list[list[str]]:
    rows = [
        [
            md(j.judge),
            md(j.judge_model),
            str(j.verdicts),
            str(j.correct),
            str(j.incorrect),
            str(j.unparsed),
            str(j.error_verdicts),
            percent(j.share_correct),
            str(j.attempts),
            str(j.prompt_tokens),
            str(j.completion_tokens),
            usd(j.cost_usd) + (" + unknown" if j.verdicts_without_cost else ""),
        ]
        for j in accuracy.judges
    ]
    cost = usd(accuracy.cost_usd) + (" + unknown" if accuracy.verdicts_without_cost else "")
    rows.append(
        [
            "**Panel**",
            "",
            str(accuracy.verdicts),
            str(sum(j.correct for j in accuracy.judges)),
            str(sum(j.incorrect for j in accuracy.judges)),
            str(accuracy.unparsed),
            str(accuracy.error_verdicts),
            "",
            str(accuracy.attempts),
            str(accuracy.prompt_tokens),
            str(accuracy.completion_tokens),
            f"**{cost}**",
        ]
    )
    return rows


def _judge_candidate_table(accuracy: AccuracyView) -> dict[str, list[str] | list[list[str]]]:
    """Share correct of each judge's votes (rows) on each candidate (columns): a judge's bias shows here."""
    candidates = [(c.branch_id, c.target_name) for c in accuracy.candidates]
    shares = {(s.judge, s.branch_id): s for s in accuracy.judge_candidates}
    rows = []
    for judge in accuracy.judges:
        cells = []
        for branch_id, _ in candidates:
            share = shares.get((judge.judge, branch_id))
            votes = share.correct + share.incorrect if share is not None else 0
            cells.append(f"{percent(share.share_correct)} of {votes}" if share is not None and votes else "")
        rows.append([md(judge.judge), *cells])
    return {"columns": [md(name) for _, name in candidates], "rows": rows}


def _pair_rows(accuracy: AccuracyView) -> list[list[str]]:
    return [
        [md(p.judge), md(p.other_judge), str(p.prompts), percent(p.observed_agreement), _kappa(p.cohen_kappa)]
        for p in accuracy.pairs
    ]


def _accuracy_notes(accuracy: AccuracyView) -> list[str]:
    """What could make these figures mislead, for this run (docs/metrics.md, "Accuracy")."""
    notes = []
    ties = sum(c.no_majority for c in accuracy.candidates)
    if ties:
        notes.append(
            f"{ties} judged prompt(s) had no majority (the votes tied, or every judge's verdict was unparsed "
            "or an error): they count against the accuracy, never as correct or incorrect."
        )
    few = [c for c in accuracy.per_bin if c.prompts < FEW_JUDGED_PROMPTS]
    if few:
        notes.append(
            f"{len(few)} candidate x bin figure(s) rest on fewer than {FEW_JUDGED_PROMPTS} judged prompts: "
            "their intervals are wide, and a difference between them may be chance."
        )
    if len(accuracy.judges) % 2 == 0:
        notes.append(
            f"The panel has an even number of judges ({len(accuracy.judges)}): a prompt's votes can tie."
        )
    if accuracy.fleiss_kappa is not None and accuracy.fleiss_kappa < 0.4:
        notes.append(
            f"The judges agree little beyond chance (Fleiss' kappa {accuracy.fleiss_kappa:.2f}, below 0.4): "
            "the majority verdicts are noisy, and the accuracy depends on who sits on the panel."
        )
    return notes


def _unjudged_quality_note(view: ReportView) -> str:
    """Branches a quality pass left without a judged answer (its requests all failed, or its load did)."""
    accuracy = view.accuracy
    if accuracy is None or accuracy.answer_source != "quality_pass":
        return ""
    missing = [md(b.target_name) for b in view.branches if accuracy.of_branch(b.branch_id) is None]
    if not missing:
        return ""
    return (
        f" Not judged: {', '.join(missing)} (no successful answer of its quality pass; the answers under "
        "load are not judged instead)."
    )


def _accuracy_context(view: ReportView) -> dict[str, object] | None:
    accuracy = view.accuracy
    if accuracy is None:
        return None
    floor = (
        f" The SLO's accuracy floor is {accuracy.min_accuracy * 100:g}%: a branch below it is never the best "
        "configuration."
        if accuracy.min_accuracy is not None
        else ""
    )
    return {
        "intro": (
            f"{len(accuracy.judges)} judge(s) gave {accuracy.verdicts} verdicts on {accuracy.judged_prompts} "
            "answers (one per candidate and distinct prompt). Only 'correct' and 'incorrect' are votes; the "
            "majority of a prompt's votes decides it. Accuracy = majority-correct prompts / judged prompts, "
            f"with its {accuracy.confidence:.0%} Wilson interval.{floor} "
            f"{answer_source_text(accuracy.answer_source)}{_unjudged_quality_note(view)}"
        ),
        "floor_column": accuracy.min_accuracy is not None,
        "majority_rows": _majority_rows(accuracy),
        "bin_rows": _bin_rows(accuracy, view.bins),
        "judge_rows": _judge_rows(accuracy),
        "fleiss_text": (
            f"Fleiss' kappa over the panel: **{_kappa(accuracy.fleiss_kappa)}**, over the "
            f"{accuracy.rated_prompts} answers with at least two votes (1 = full agreement, 0 = what chance "
            "gives, below 0 = less than chance)."
        ),
        "pair_rows": _pair_rows(accuracy),
        "judge_candidates": _judge_candidate_table(accuracy),
        "notes": [md(note) for note in [*_accuracy_notes(accuracy), *short_judge_notes(accuracy)]],
    }


def _judging_cost_row(cost: CostSummary) -> list[list[str]]:
    judging = cost.judging
    if judging is None:
        return []
    spent = money(judging.usd) + ("" if judging.complete else " + unknown")
    basis = (
        f"sum of the judges' call costs ({judging.attempts} calls, {judging.prompt_tokens} prompt and "
        f"{judging.completion_tokens} completion tokens)"
    )
    return [["Judging (panel of LLM judges)", "", NOT_AVAILABLE, spent, basis]]


def _per_token_rows(view: ReportView) -> list[list[str]]:
    """Per load point: inter-token latency percentiles, per-user output speed and prices per 1M tokens."""
    return [
        [
            md(point.target_name),
            load_label(point.key.concurrency, point.key.request_rate_per_s),
            md(point.key.payload_bin),
            seconds(point.figures.get("itl_p50_s")),
            seconds(point.figures.get("itl_p95_s")),
            seconds(point.figures.get("itl_p99_s")),
            number(point.figures.get("output_tokens_per_s_per_user")),
            usd(point.figures.get("price_per_1m_input_tokens_usd")),
            usd(point.figures.get("price_per_1m_output_tokens_usd")),
            usd(point.figures.get("price_per_1m_total_tokens_usd")),
        ]
        for point in view.load_points
    ]


def _cost_phase_rows(cost: CostSummary | None) -> list[list[str]]:
    """The actual cost of each instance-billed branch split into deployment, load and idle time."""
    if cost is None:
        return []
    return [
        [
            md(part.target_name),
            f"`{part.branch_id}`",
            seconds(part.deployment_s),
            money(part.deployment_usd),
            money(part.load_usd),
            money(part.idle_usd),
        ]
        for part in cost.actual_parts
        if part.instance_seconds is not None
    ]


def _suite_block(suite_yaml: str) -> str:
    """The suite as a fenced YAML block, its fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", suite_yaml)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}yaml\n{suite_yaml.rstrip()}\n{fence}"


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
        "best_rows": _best_rows(view.best, view.accuracy) if view.best is not None else [],
        "no_best_hint": _no_best_hint(view),
        "best_per_bin_rows": _best_per_bin_rows(view.best_per_bin, view.accuracy),
        "accuracy": _accuracy_context(view),
        "evaluation_note": evaluation_note(view.evaluation, view.accuracy is not None),
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
        "load_point_tables": [
            _load_point_table(branch, view.bins, _with_goodput(view)) for branch in view.branches
        ],
        "goodput_column": _with_goodput(view),
        "client_bound_text": _client_bound_text(view),
        "token_rows": _token_rows(view),
        "error_class_table": _error_class_table(view),
        "prompts_lines": _prompts_lines(view),
        "charts": chart_entries,
        "capacity_section": capacity_markdown(view.capacity, view.capacity_plan),
        "per_token_rows": _per_token_rows(view),
        "cost_phase_rows": _cost_phase_rows(view.cost),
        "suite_block": _suite_block(view.suite_yaml) if view.suite_yaml else "",
        "prices_note": md(view.prices_note[:1].upper() + view.prices_note[1:]) if view.prices_note else "",
        "server_metrics_text": server_metrics_markdown(view),
    }
    return _environment().get_template("report.md.j2").render(**context)
