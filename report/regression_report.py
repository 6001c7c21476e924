"""The comparison report of two runs and the history report of a suite: Markdown, HTML, JSON and charts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg"): no display backend is ever loaded
import numpy as np
import pandas as pd

from fmbench import layout, storage
from fmbench.config import RegressionOptions
from fmbench.plan import RunPlan
from report.compare import compare_runs, no_baseline
from report.history import latest_successful_run
from report.html import render_html
from report.query import accuracy_figures, has_records, request_samples
from report.result import RegressionFinding, RegressionResult

COMPARISON_MD = "comparison.md"
COMPARISON_HTML = "comparison.html"
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"
HISTORY_MD = "history.md"
HISTORY_HTML = "history.html"
HISTORY_PNG = "history.png"
DPI = 110
_COLOURS = {"regressed": "#c0392b", "improved": "#27ae60", "unchanged": "#7f8c8d", "skipped": "#bdc3c7"}
# Headline figures of the history: (column, label, scale to the shown unit).
HISTORY_FIGURES: tuple[tuple[str, str, float], ...] = (
    ("latency_p95_s", "p95 latency (s)", 1.0),
    ("ttft_p95_s", "p95 TTFT (s)", 1.0),
    ("transactions_per_minute", "transactions / min", 1.0),
    ("error_rate", "error rate (%)", 100.0),
)


def _load(finding: RegressionFinding) -> str:
    if finding.concurrency is not None:
        return f"c={finding.concurrency}"
    return f"{finding.request_rate_per_s:g}/s" if finding.request_rate_per_s is not None else "-"


def _figure(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric in ("error_rate", "accuracy"):
        return f"{value:.2%}"
    if metric == "transactions_per_minute":
        return f"{value:.1f}"
    return f"{value:.3f} s"


def _change(finding: RegressionFinding) -> tuple[str, str]:
    unit = " %" if finding.change_unit == "pct" else " pts"
    if finding.change is None:
        return "-", "-"
    interval = (
        f"[{finding.interval_low:+.1f}, {finding.interval_high:+.1f}]{unit}"
        if finding.interval_low is not None and finding.interval_high is not None
        else "-"
    )
    return f"{finding.change:+.1f}{unit}", interval


def comparison_markdown(result: RegressionResult, candidate_run_id: str, chart: str | None) -> str:
    baseline = result.baseline_run_id or "(none)"
    tests = sum(f.verdict != "skipped" for f in result.findings)
    per_test = 1.0 - (1.0 - result.confidence) / max(tests, 1)
    lines = [
        f"# Comparison: {candidate_run_id} against {baseline}",
        "",
        f"**Verdict: {result.verdict.upper()}**"
        + (f" (regressed: {', '.join(result.regressed_metrics)})" if result.regressed_metrics else ""),
        "",
        f"Method: {result.method} Confidence level: {result.confidence:.0%}.",
        "",
        f"{tests} test(s) made: each interval below is at {per_test:.2%}.",
        "",
    ]
    if chart:
        lines += [f"![Change per metric and load point]({chart})", ""]
    if result.findings:
        lines += [
            "| target | bin | load | metric | baseline | candidate | change | interval | threshold "
            "| verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in result.findings:
            change, interval = _change(f)
            unit = " %" if f.change_unit == "pct" else " pts"
            verdict = f.verdict if f.reason is None else f"{f.verdict}: {f.reason}"
            lines.append(
                f"| {f.target_name} | {f.payload_bin} | {_load(f)} | {f.metric} "
                f"| {_figure(f.baseline, f.metric)} | {_figure(f.candidate, f.metric)} "
                f"| {change} | {interval} | {f.threshold:g}{unit} | {verdict} |"
            )
        lines.append("")
    if result.unmatched:
        lines += ["## Unmatched load points (not compared)", ""]
        for point in result.unmatched:
            load = (
                f"c={point.concurrency}" if point.concurrency is not None else f"{point.request_rate_per_s}/s"
            )
            lines.append(f"- only in the {point.run}: {point.target_name} {load} bin {point.payload_bin}")
        lines.append("")
    return "\n".join(lines)


def comparison_chart(result: RegressionResult, path: Path) -> Path | None:
    """Each compared metric's change and interval, coloured by verdict; None when nothing was compared."""
    shown = [f for f in result.findings if f.change is not None]
    if not shown:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.5))
    try:
        positions = np.arange(len(shown))
        changes = np.array([f.change for f in shown], dtype=float)
        low = np.array(
            [f.interval_low if f.interval_low is not None else f.change for f in shown], dtype=float
        )
        high = np.array(
            [f.interval_high if f.interval_high is not None else f.change for f in shown], dtype=float
        )
        axes.barh(positions, changes, color=[_COLOURS[f.verdict] for f in shown])
        # The interval as drawn from its ends: a bootstrap interval need not be centred on (or even hold) the
        # point estimate, so it is not an error bar around the bar's end.
        axes.hlines(positions, low, high, colors="black")
        axes.axvline(0, color="black", linewidth=0.8)
        labels = [
            f"{f.metric} {f.target_name} {_load(f)} {f.payload_bin} "
            f"({'%' if f.change_unit == 'pct' else 'pts'})"
            for f in shown
        ]
        axes.set_yticks(positions, labels, fontsize=7)
        axes.invert_yaxis()
        axes.set_xlabel("change, candidate vs baseline (% or percentage points)")
        axes.set_title(f"Verdict: {result.verdict}")
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def write_comparison(result: RegressionResult, candidate_run_id: str, out_dir: str | Path) -> dict[str, Path]:
    """comparison.md, .html, .json and .png (when anything was compared) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart = comparison_chart(result, out / COMPARISON_PNG)
    markdown_text = comparison_markdown(result, candidate_run_id, chart.name if chart else None)
    files = {"md": out / COMPARISON_MD, "html": out / COMPARISON_HTML, "json": out / COMPARISON_JSON}
    files["md"].write_text(markdown_text, encoding="utf-8")
    images = {chart.name: chart} if chart else {}
    files["html"].write_text(
        render_html(markdown_text, f"Comparison {candidate_run_id}", images), encoding="utf-8"
    )
    document = {"candidate_run_id": candidate_run_id, **result.model_dump(mode="json")}
    files["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if chart:
        files["png"] = chart
    return files


def history_chart(history: pd.DataFrame, path: Path) -> Path | None:
    """Headline figures run after run, a red mark on each regressed run; None without any run."""
    if history.empty:
        return None
    figure, all_axes = plt.subplots(
        len(HISTORY_FIGURES), 1, figsize=(8, 2.2 * len(HISTORY_FIGURES)), sharex=True
    )
    try:
        positions = np.arange(len(history))
        regressed = (history["verdict"] == "regressed").fillna(False).to_numpy(dtype=bool)
        for axes, (column, label, scale) in zip(all_axes, HISTORY_FIGURES, strict=True):
            values = pd.to_numeric(history[column], errors="coerce").to_numpy(dtype=float) * scale
            axes.plot(positions, values, marker="o", color="#2c3e50")
            if regressed.any():
                axes.scatter(
                    positions[regressed],
                    values[regressed],
                    color="#c0392b",
                    s=80,
                    zorder=3,
                    label="regressed",
                )
                axes.legend(loc="best", fontsize=7)
            axes.set_ylabel(label, fontsize=8)
        all_axes[-1].set_xticks(
            positions, [str(r) for r in history["run_id"]], rotation=45, ha="right", fontsize=7
        )
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def history_markdown(history: pd.DataFrame, suite_name: str, chart: str | None) -> str:
    lines = [f"# History of suite {suite_name}", "", f"{len(history)} run(s), oldest first.", ""]
    if chart:
        lines += [f"![Headline figures across runs]({chart})", ""]
    lines += [
        "| run | started | status | verdict | best | p95 latency s | p95 TTFT s | tx/min | error rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: object, fmt: str) -> str:
        return "-" if value is None or pd.isna(value) else fmt.format(value)  # type: ignore[call-overload]

    for row in history.to_dict("records"):
        verdict = row["verdict"] if not pd.isna(row["verdict"]) else "-"
        if verdict == "regressed" and not pd.isna(row["regressed_metrics"]):
            verdict = f"**regressed** ({row['regressed_metrics']})"
        best = (
            "-"
            if pd.isna(row["best_target_name"])
            else f"{row['best_target_name']} bin {row['best_payload_bin']}"
        )
        lines.append(
            f"| {row['run_id']} | {cell(row['started_at'], '{:%Y-%m-%d %H:%M}')} | {row['status']} "
            f"| {verdict} | "
            f"{best} | {cell(row['latency_p95_s'], '{:.3f}')} | {cell(row['ttft_p95_s'], '{:.3f}')} | "
            f"{cell(row['transactions_per_minute'], '{:.1f}')} | {cell(row['error_rate'], '{:.2%}')} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_history(history: pd.DataFrame, suite_name: str, out_dir: str | Path) -> dict[str, Path]:
    """history.md, .html and the trend chart (when any run is there) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart = history_chart(history, out / HISTORY_PNG)
    markdown_text = history_markdown(history, suite_name, chart.name if chart else None)
    files = {"md": out / HISTORY_MD, "html": out / HISTORY_HTML}
    files["md"].write_text(markdown_text, encoding="utf-8")
    images = {chart.name: chart} if chart else {}
    files["html"].write_text(render_html(markdown_text, f"History {suite_name}", images), encoding="utf-8")
    if chart:
        files["png"] = chart
    return files


# ------------------------------------------------------------------------------- runs on a local root


class RunLookupError(LookupError):
    """A run named on the command line that is not where it was said to be."""


def resolve_run(reference: str, root: str | None) -> tuple[str, str]:
    """(results root, run id) of a run folder (an ``--out`` of ``fmbench run``) or of a run id under ``root``.

    A folder holding several runs means the run its result.json is of (the latest report written there).
    """
    if "://" in reference or (root is not None and "://" in root):
        raise RunLookupError(
            f"{reference}: runs in S3 are not compared by this command yet; download them or compare locally"
        )
    folder = Path(reference)
    if folder.is_dir() and (folder / layout.RECORDS).is_dir():
        runs = sorted(p.name.split("=", 1)[1] for p in (folder / layout.RECORDS).glob(f"{layout.RUN_KEY}=*"))
        result_json = folder / "result.json"
        if result_json.is_file():
            run_id = str(json.loads(result_json.read_text(encoding="utf-8")).get("run_id", ""))
            if run_id in runs:
                return str(folder.resolve()), run_id
        if len(runs) == 1:
            return str(folder.resolve()), runs[0]
        raise RunLookupError(
            f"{reference}: holds {len(runs)} runs and no result.json naming one; give a run id and --root"
        )
    if root is not None and has_records(root, reference):
        return str(Path(root).resolve()), reference
    where = f" under --root {root}" if root else " (give --root to name a run id)"
    raise RunLookupError(f"{reference}: not a run folder with records, nor a run id with records{where}")


def saved_regression_options(root: str, run_id: str) -> RegressionOptions | None:
    """The regression section of the suite the run was planned from, None when it has none or no plan."""
    try:
        plan = RunPlan.model_validate_json(storage.read_bytes(layout.run_plan_uri(root, run_id)))
    except storage.StorageNotFoundError:
        return None
    return plan.suite.regression


def compare_saved_runs(
    baseline: tuple[str, str], candidate: tuple[str, str], options: RegressionOptions
) -> RegressionResult:
    """Both runs' measured requests read with request_samples.sql, and their judgments (when judged) with
    accuracy.sql (DuckDB), then compared."""
    base_root, base_run = baseline
    cand_root, cand_run = candidate
    judged = "accuracy" in options.metrics
    return compare_runs(
        request_samples(base_root, base_run),
        request_samples(cand_root, cand_run),
        options,
        base_run,
        baseline_accuracy=accuracy_figures(base_root, base_run) if judged else None,
        candidate_accuracy=accuracy_figures(cand_root, cand_run) if judged else None,
    )


def regression_of_run(
    root: str, run_id: str, suite_name: str, options: RegressionOptions
) -> RegressionResult:
    """A finished local run against its baseline under the same root: a run id, or the latest success."""
    if options.baseline == "latest":
        baseline = latest_successful_run(root, suite_name, before_run_id=run_id)
        if baseline is None:
            return no_baseline(options, f"no earlier successful run of suite {suite_name!r} under {root}")
    else:
        baseline = options.baseline
        if not has_records(root, baseline):
            return no_baseline(options, f"baseline run {baseline!r} has no records under {root}")
    return compare_saved_runs((root, baseline), (root, run_id), options)


# ------------------------------------------------------------------ the verdict inside the run's report

REGRESSION_HEADING = "## Regression verdict"
_TITLE_ESCAPE = re.compile(r"\\(.)")


def regression_block(result: RegressionResult) -> str:
    """The report's block: baseline, verdict, and each regressed metric with its change and interval."""
    if result.baseline_run_id is None:
        return "\n".join(
            [
                REGRESSION_HEADING,
                "",
                f"**Verdict: {result.verdict.upper()}**: no baseline to compare with.",
                "",
            ]
        )
    tests = sum(f.verdict != "skipped" for f in result.findings)
    regressed = [f for f in result.findings if f.verdict == "regressed"]
    lines = [
        REGRESSION_HEADING,
        "",
        f"**Verdict: {result.verdict.upper()}** against baseline run `{result.baseline_run_id}`"
        + (f" (regressed: {', '.join(result.regressed_metrics)})." if result.regressed_metrics else "."),
        "",
        f"{tests} test(s) made at {result.confidence:.0%} confidence for the comparison as a whole; the "
        f"method and every finding are in [{COMPARISON_MD}]({COMPARISON_MD}).",
        "",
    ]
    if regressed:
        lines += [
            "| target | bin | load | metric | baseline | candidate | change | interval | threshold |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for f in regressed:
            change, interval = _change(f)
            unit = " %" if f.change_unit == "pct" else " pts"
            lines.append(
                f"| {f.target_name} | {f.payload_bin} | {_load(f)} | {f.metric} "
                f"| {_figure(f.baseline, f.metric)} | {_figure(f.candidate, f.metric)} "
                f"| {change} | {interval} | {f.threshold:g}{unit} |"
            )
        lines.append("")
    return "\n".join(lines)


def with_regression_block(markdown_text: str, result: RegressionResult) -> str:
    """report.md with the verdict block placed before its first section (any earlier block replaced)."""
    text = markdown_text
    start = text.find(f"\n{REGRESSION_HEADING}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + (text[end + 1 :] if end >= 0 else "")
    first_section = text.find("\n## ")
    block = regression_block(result) + "\n"
    if first_section < 0:
        return text.rstrip("\n") + "\n\n" + block
    return text[: first_section + 1] + block + text[first_section + 1 :]


def add_regression_to_report(report_dir: str | Path, result: RegressionResult) -> None:
    """Put the verdict into a rendered report: report.md gets the block, report.html is made from it again
    (with the same embedded charts, every PNG beside it)."""
    from report.render import REPORT_HTML, REPORT_MD

    folder = Path(report_dir)
    markdown_text = with_regression_block((folder / REPORT_MD).read_text(encoding="utf-8"), result)
    (folder / REPORT_MD).write_text(markdown_text, encoding="utf-8")
    first_line = markdown_text.split("\n", 1)[0]
    title = _TITLE_ESCAPE.sub(r"\1", first_line[2:] if first_line.startswith("# ") else first_line)
    images = {png.name: png for png in sorted(folder.glob("*.png")) if f"]({png.name})" in markdown_text}
    (folder / REPORT_HTML).write_text(render_html(markdown_text, title, images), encoding="utf-8")
