"""The report: metrics -> one view model -> summary.parquet, charts, report.md, report.html, result.json."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from fmbench import layout
from fmbench.judging_outcome import EvaluationOutcome, read_evaluation_outcome
from fmbench.plan import BranchOutcome, RunPlan
from report.charts import draw_charts
from report.costs import EndpointLifetime
from report.document import result_document
from report.html import ReportError, render_html
from report.markdown import render_markdown
from report.prices import priced_metrics
from report.query import accuracy_figures, compute_metrics, ttft_samples
from report.result import Artifacts, ResultDocument, write_result
from report.server_metrics import ServerMetricsView, server_metrics_view
from report.view import NO_OUTCOME_REASON, build_view

__all__ = [
    "NO_OUTCOME_REASON",
    "REPORT_HTML",
    "REPORT_MD",
    "RESULT_JSON",
    "SUMMARY_PARQUET",
    "ReportError",
    "build_report",
    "generate_report",
    "run_records_prefix",
]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY_PARQUET = "summary.parquet"
RESULT_JSON = "result.json"


def _join_location(base: str, name: str) -> str:
    return posixpath.join(base.rstrip("/"), name) if "://" in base else str(Path(base) / name)


def run_records_prefix(storage_root: str, run_id: str) -> str:
    root = storage_root if "://" in storage_root else str(Path(storage_root).resolve())
    return layout.run_records_prefix(root, run_id)


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
    accuracy: pd.DataFrame | None = None,
    server: ServerMetricsView | None = None,
    evaluation_outcome: EvaluationOutcome | None = None,
) -> ResultDocument:
    """Everything after the query: the same for DuckDB locally and Athena in the cloud.

    ``metrics`` has the columns of ``report.query.METRIC_COLUMNS``, ``samples`` those of
    ``TTFT_SAMPLE_COLUMNS``. ``publish_uri`` is where ``report_dir``'s files will be published (e.g. the
    run's s3:// reports prefix); artifact locations in result.json use it, else the local paths.
    ``endpoint_lifetimes`` (deployed branches: creation and deletion) make the actual cost. ``accuracy``
    (columns ``ACCURACY_COLUMNS``; None for a run never judged) adds the judges' accuracy;
    ``evaluation_outcome`` (how the latest judging ended) says why a judged suite has none.
    The view is built once; every file below is drawn or written from it.
    """
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = priced_metrics(plan, metrics)
    view = build_view(
        plan,
        outcomes,
        metrics,
        generated_at=generated_at,
        endpoint_lifetimes=endpoint_lifetimes,
        accuracy=accuracy,
        server=server,
        evaluation_outcome=evaluation_outcome,
    )

    metrics.to_parquet(out / SUMMARY_PARQUET, index=False)
    chart_paths = draw_charts(view, samples, out)

    base = publish_uri or str(out.resolve())
    artifacts = Artifacts(
        report_md=_join_location(base, REPORT_MD),
        report_html=_join_location(base, REPORT_HTML),
        summary_parquet=_join_location(base, SUMMARY_PARQUET),
        result_json=_join_location(base, RESULT_JSON),
        charts={name: _join_location(base, path.name) for name, path in chart_paths.items()},
        records_prefix=records_location,
    )
    document = result_document(view, artifacts)

    markdown_text = render_markdown(view, {name: path.name for name, path in chart_paths.items()})
    (out / REPORT_MD).write_text(markdown_text, encoding="utf-8")
    html_text = render_html(markdown_text, view.title, {path.name: path for path in chart_paths.values()})
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
    """The local report of a run: DuckDB over the records (and judgments, when the run was judged) under
    ``storage_root`` (a local folder)."""
    metrics = compute_metrics(storage_root, plan.run_id, plan.suite.slo)
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
        accuracy=accuracy_figures(storage_root, plan.run_id),
        server=server_metrics_view(storage_root, plan.run_id),
        evaluation_outcome=read_evaluation_outcome(storage_root, plan.run_id),
    )
