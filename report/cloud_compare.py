"""The cloud Compare step and the runs table in S3 (docs/regression.md, "In the cloud").

Render writes the run's row of the runs table (``record_run``). When the suite has a ``regression``
section, Compare then finds the baseline (a run id, or ``latest``: the latest succeeded run of the same
suite in the results bucket, from the runs table), reads both runs' measured requests with the same SQL
as a local comparison (``report/sql/request_samples.sql``) on Athena, as Render reads its metrics, and
compares them with ``report.compare``. The comparison files go under the run's reports folder, result.json
and the report gain the verdict, and the run's row is written again with it. A report-only execution keeps
the comparison the run was given (its comparison.json) rather than comparing with a later baseline.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fmbench import layout
from fmbench.cloud import s3 as s3_objects
from fmbench.cloud.events import CompareEvent
from fmbench.cloud.settings import RenderSettings
from fmbench.cloud.steps import read_run_plan
from fmbench.config import RegressionOptions
from fmbench.plan import RunPlan
from report.cloud import athena_result_frame, record_run, run_athena_query, saved_run_row
from report.compare import compare_runs, no_baseline
from report.history import typed_runs
from report.query import REQUEST_SAMPLE_COLUMNS, bind_parameters, load_sql, typed_frame
from report.regression_report import COMPARISON_JSON, add_regression_to_report, write_comparison
from report.render import REPORT_HTML, REPORT_MD, RESULT_JSON
from report.result import RegressionResult, ResultDocument, write_result

logger = logging.getLogger(__name__)


class ResultNotFoundError(LookupError):
    """Compare runs after Render: the run has no published result.json."""


# ------------------------------------------------------------------------------------------ Athena


def athena_frame(athena_client: Any, settings: RenderSettings, sql: str, **wait: Any) -> pd.DataFrame:
    query_execution_id = run_athena_query(
        athena_client,
        sql,
        workgroup=settings.athena_workgroup,
        database=settings.athena_database,
        **wait,
    )
    return athena_result_frame(athena_client, query_execution_id)


def athena_request_samples(
    athena_client: Any, settings: RenderSettings, run_id: str, **wait: Any
) -> pd.DataFrame:
    """A run's measured requests on Athena: request_samples.sql as a local comparison runs it on DuckDB.

    It names the run id only: the records table's partitions are registered, so no branch id is needed.
    """
    sql = bind_parameters(load_sql("request_samples"), "trino", run_id=run_id)
    frame = athena_frame(athena_client, settings, sql, **wait)
    return typed_frame(frame, REQUEST_SAMPLE_COLUMNS).reset_index(drop=True)


def latest_cloud_baseline(
    athena_client: Any,
    settings: RenderSettings,
    suite_name: str,
    run_id: str,
    started_at: datetime | None,
    **wait: Any,
) -> str | None:
    """``latest``: the newest run of the suite that succeeded and started before this one (runs table)."""
    sql = bind_parameters(load_sql("runs_history"), "trino", suite_name=suite_name)
    history = typed_runs(athena_frame(athena_client, settings, sql, **wait))
    done = history[(history["status"] == "succeeded") & (history["run_id"] != run_id)]
    if started_at is not None:
        done = done[done["started_at"] < pd.Timestamp(started_at)]
    return None if done.empty else str(done["run_id"].iloc[-1])


def cloud_regression(
    plan: RunPlan,
    options: RegressionOptions,
    athena_client: Any,
    settings: RenderSettings,
    started_at: datetime | None,
    **wait: Any,
) -> RegressionResult:
    """The run against its baseline, both read from the results bucket through Athena."""
    where = f"s3://{settings.results_bucket}"
    if options.baseline == "latest":
        baseline = latest_cloud_baseline(
            athena_client, settings, plan.suite.name, plan.run_id, started_at, **wait
        )
        if baseline is None:
            return no_baseline(options, f"no earlier successful run of suite {plan.suite.name!r} in {where}")
    else:
        baseline = options.baseline
        if baseline == plan.run_id:
            return no_baseline(options, f"the baseline {baseline!r} is this run")
    base = athena_request_samples(athena_client, settings, baseline, **wait)
    if base.empty:
        return no_baseline(options, f"baseline run {baseline!r} has no records in {where}")
    candidate = athena_request_samples(athena_client, settings, plan.run_id, **wait)
    return compare_runs(base, candidate, options, baseline)


# --------------------------------------------------------------------------------------------- step


def saved_comparison(s3_client: Any, prefix: str) -> RegressionResult | None:
    data = s3_objects.get_bytes(s3_client, f"{prefix}{COMPARISON_JSON}")
    if data is None:
        return None
    document = json.loads(data)
    document.pop("candidate_run_id", None)
    return RegressionResult.model_validate(document)


def compare_run(
    event: CompareEvent, settings: RenderSettings, s3_client: Any, athena_client: Any, **wait: Any
) -> ResultDocument:
    """Compare the rendered run with its baseline and publish the verdict beside its report."""
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    plan = read_run_plan(s3_client, storage_root, event.run_id)
    prefix = layout.reports_prefix(storage_root, event.run_id)
    data = s3_objects.get_bytes(s3_client, f"{prefix}{RESULT_JSON}")
    if data is None:
        raise ResultNotFoundError(f"no result.json at {prefix}{RESULT_JSON}: Compare runs after Render")
    document = ResultDocument.model_validate_json(data)
    options = plan.suite.regression
    if options is None:
        return document
    regression = saved_comparison(s3_client, prefix) if event.report_only else None
    if regression is None:
        row = saved_run_row(s3_client, storage_root, event.run_id)
        started_at = row["started_at"].iloc[0].to_pydatetime() if row is not None else None
        regression = cloud_regression(plan, options, athena_client, settings, started_at, **wait)
    document = document.model_copy(update={"regression": regression})
    with tempfile.TemporaryDirectory(prefix="fmbench-compare-") as folder:
        report_dir = Path(folder)
        s3_objects.download_prefix(s3_client, prefix, report_dir)
        written = write_comparison(regression, event.run_id, report_dir)
        add_regression_to_report(report_dir, regression)
        write_result(document, report_dir / RESULT_JSON)
        names = [REPORT_MD, REPORT_HTML, RESULT_JSON, *(path.name for path in written.values())]
        for name in names:
            s3_objects.put_bytes(s3_client, f"{prefix}{name}", (report_dir / name).read_bytes())
    record_run(s3_client, storage_root, document)
    logger.info(
        "run %s against %s: %s%s",
        event.run_id,
        regression.baseline_run_id or "no baseline",
        regression.verdict,
        f" ({', '.join(regression.regressed_metrics)})" if regression.regressed_metrics else "",
    )
    return document
