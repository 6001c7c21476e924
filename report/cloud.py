"""The cloud render step: Athena's metrics (and accuracy, for a judged run), the plan and outcomes in S3 ->
the report, published to S3.

The report itself is built by ``report.render.build_report``, exactly as a local run builds it; this module
only fetches its inputs from Athena and S3 and publishes its files under ``reports/run_id=<run>/``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
from botocore.exceptions import ClientError

from fmbench.cloud import s3 as s3_objects
from fmbench.cloud.aws import error_message
from fmbench.cloud.cloudwatch import record_cloudwatch_metrics
from fmbench.cloud.events import (
    BranchResultItem,
    DeploymentRecord,
    FailureRecord,
    RenderEvent,
    TeardownRecord,
)
from fmbench.cloud.settings import RenderSettings
from fmbench.cloud.steps import (
    RunPlanNotFoundError,  # noqa: F401 - re-exported: callers of read_plan catch it from here
    read_run_plan,
)
from fmbench.judging_outcome import (
    CLOUD_STEP,
    EvaluationOutcome,
    failed_outcome,
    judged_outcome,
    step_error_text,
)
from fmbench.layout import (
    EVALUATIONS,
    branch_results_uri,
    deployment_record_uri,
    evaluation_outcome_uri,
    failure_record_uri,
    outcome_uri,
    reports_prefix,
    run_folder,
    run_records_prefix,
    run_row_uri,
    teardown_record_uri,
)
from fmbench.plan import BranchOutcome, RunPlan
from fmbench.spec import BranchSpec
from report.costs import EndpointLifetime
from report.history import RUN_ROW_CONTENT_TYPE, read_run_row, run_row, run_row_bytes
from report.query import (
    ACCURACY_COLUMNS,
    METRIC_COLUMNS,
    SORT_COLUMNS,
    TTFT_SAMPLE_COLUMNS,
    athena_accuracy_query,
    athena_ttft_samples_query,
    sort_accuracy,
    typed_frame,
)
from report.render import NO_OUTCOME_REASON, RESULT_JSON, build_report
from report.result import ResultDocument, write_result
from report.server_metrics import ServerMetricsView, server_metrics_view

logger = logging.getLogger(__name__)

# The TTFT samples query runs inside the render Lambda: bounded well within a Lambda's 15 minutes.
TTFT_QUERY_TIMEOUT_S: Final = 300.0
QUERY_POLL_INTERVAL_S: Final = 2.0

_INTEGER_TYPES: Final = frozenset({"tinyint", "smallint", "integer", "int", "bigint"})
_FLOAT_TYPES: Final = frozenset({"double", "real", "float", "decimal"})


class AthenaQueryError(RuntimeError):
    """An Athena query the render step started failed, was cancelled or did not finish in time."""


# ----------------------------------------------------------------------------------------- Athena


def _athena_value(cell: dict[str, Any], athena_type: str) -> Any:
    """One cell of GetQueryResults (all text; NULL has no VarCharValue) as a Python value."""
    if "VarCharValue" not in cell:
        return None
    text = str(cell["VarCharValue"])
    base_type = athena_type.split("(", 1)[0].strip().lower()
    if base_type in _INTEGER_TYPES:
        return int(text)
    if base_type in _FLOAT_TYPES:
        return float(text)  # float() reads Athena's NaN and Infinity too
    if base_type == "boolean":
        return text.lower() == "true"
    return text


def athena_result_frame(athena_client: Any, query_execution_id: str) -> pd.DataFrame:
    """Every row of a finished query, typed by Athena's column types.

    GetQueryResults pages hold 1,000 rows; the first row of a SELECT's result repeats the column names and
    is dropped.
    """
    names: list[str] = []
    types: list[str] = []
    rows: list[list[Any]] = []
    paginator = athena_client.get_paginator("get_query_results")
    for page_index, page in enumerate(paginator.paginate(QueryExecutionId=query_execution_id)):
        result_set = page["ResultSet"]
        if not names:
            columns = result_set.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            names = [str(column["Name"]) for column in columns]
            types = [str(column.get("Type", "varchar")) for column in columns]
        page_rows = result_set.get("Rows", [])
        if page_index == 0 and page_rows:
            first = [cell.get("VarCharValue") for cell in page_rows[0]["Data"]]
            if first == names:
                page_rows = page_rows[1:]
        for row in page_rows:
            cells = row["Data"]
            rows.append([_athena_value(cell, kind) for cell, kind in zip(cells, types, strict=True)])
    return pd.DataFrame(rows, columns=names)


def run_athena_query(
    athena_client: Any,
    sql: str,
    *,
    workgroup: str,
    database: str,
    timeout_s: float = TTFT_QUERY_TIMEOUT_S,
    poll_interval_s: float = QUERY_POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Start a query and wait for it, at most ``timeout_s`` (then it is stopped); its execution id."""
    started = athena_client.start_query_execution(
        QueryString=sql, WorkGroup=workgroup, QueryExecutionContext={"Database": database}
    )
    query_execution_id = str(started["QueryExecutionId"])
    deadline = clock() + timeout_s
    while True:
        status = athena_client.get_query_execution(QueryExecutionId=query_execution_id)["QueryExecution"]
        state = status["Status"]["State"]
        if state == "SUCCEEDED":
            return query_execution_id
        if state in ("FAILED", "CANCELLED"):
            reason = status["Status"].get("StateChangeReason") or state
            raise AthenaQueryError(f"query {query_execution_id} {state.lower()}: {reason}")
        if clock() >= deadline:
            athena_client.stop_query_execution(QueryExecutionId=query_execution_id)
            raise AthenaQueryError(f"query {query_execution_id} did not finish within {timeout_s:g} s")
        sleep(poll_interval_s)


def metrics_frame(athena_client: Any, query_execution_id: str) -> pd.DataFrame:
    """The Query state's result shaped as ``report.query.compute_metrics`` shapes it locally."""
    frame = typed_frame(athena_result_frame(athena_client, query_execution_id), METRIC_COLUMNS)
    return frame.sort_values(SORT_COLUMNS, kind="stable", na_position="last").reset_index(drop=True)


def ttft_samples_frame(
    athena_client: Any, settings: RenderSettings, run_id: str, branch_ids: list[str], **wait: Any
) -> pd.DataFrame:
    """TTFT samples for the TTFT chart; without them (a failed query) the report leaves that chart out."""
    try:
        query_execution_id = run_athena_query(
            athena_client,
            athena_ttft_samples_query(run_id, branch_ids),
            workgroup=settings.athena_workgroup,
            database=settings.athena_database,
            **wait,
        )
        frame = athena_result_frame(athena_client, query_execution_id)
    except (AthenaQueryError, ClientError) as exc:
        # Only the chart depends on this query: the report goes out without it rather than not at all.
        logger.warning("run %s: no TTFT chart: %s", run_id, error_message(exc))
        return typed_frame(pd.DataFrame(), TTFT_SAMPLE_COLUMNS)
    return typed_frame(frame, TTFT_SAMPLE_COLUMNS).reset_index(drop=True)


def accuracy_frame(
    s3_client: Any,
    athena_client: Any,
    settings: RenderSettings,
    storage_root: str,
    run_id: str,
    branch_ids: list[str],
    **wait: Any,
) -> pd.DataFrame | None:
    """The run's accuracy counts (accuracy.sql on the Glue table of judgments), or None when the run has no
    judgment in S3 (it was not judged: no query is run) or the query failed (the report then has no accuracy
    section, and a suite's accuracy floor chooses nothing, as for an unjudged run)."""
    if not branch_ids:
        return None
    try:
        # A stack whose Render role may not list evaluations/ (older than judging) reports without accuracy.
        if not s3_objects.list_keys(s3_client, run_folder(storage_root, EVALUATIONS, run_id)):
            return None
        query_execution_id = run_athena_query(
            athena_client,
            athena_accuracy_query(run_id, branch_ids),
            workgroup=settings.athena_workgroup,
            database=settings.athena_database,
            **wait,
        )
        frame = athena_result_frame(athena_client, query_execution_id)
    except (AthenaQueryError, ClientError) as exc:
        logger.warning("run %s: no accuracy in the report: %s", run_id, error_message(exc))
        return None
    return sort_accuracy(typed_frame(frame, ACCURACY_COLUMNS))


# --------------------------------------------------------------------------------------------- S3


def read_plan(s3_client: Any, storage_root: str, run_id: str) -> RunPlan:
    return read_run_plan(s3_client, storage_root, run_id)


def read_outcome(s3_client: Any, spec: BranchSpec, branch_result: BranchResultItem | None) -> BranchOutcome:
    """The runner's outcome; a branch without one failed before or while running, as its Catch says."""
    data = s3_objects.get_bytes(s3_client, outcome_uri(spec.storage_root, spec.run_id, spec.branch_id))
    if data is not None:
        return BranchOutcome.model_validate_json(data)
    # The whole error Teardown recorded; the Map's result carries it cut short.
    failure = s3_objects.get_bytes(
        s3_client, failure_record_uri(spec.storage_root, spec.run_id, spec.branch_id)
    )
    if failure is not None:
        error = FailureRecord.model_validate_json(failure).error
        branch_result = BranchResultItem(branch_id=spec.branch_id, status="failed", error=error)
    reason = branch_result.error_reason() if branch_result is not None else None
    return BranchOutcome(
        branch_id=spec.branch_id,
        status="failed",
        reason=reason or NO_OUTCOME_REASON,
        load_points_planned=spec.load_point_count,
    )


def read_deployment(s3_client: Any, spec: BranchSpec) -> DeploymentRecord | None:
    data = s3_objects.get_bytes(
        s3_client, deployment_record_uri(spec.storage_root, spec.run_id, spec.branch_id)
    )
    return DeploymentRecord.model_validate_json(data) if data is not None else None


def read_teardown(s3_client: Any, spec: BranchSpec) -> TeardownRecord | None:
    uri = teardown_record_uri(spec.storage_root, spec.run_id, spec.branch_id)
    data = s3_objects.get_bytes(s3_client, uri)
    return TeardownRecord.model_validate_json(data) if data is not None else None


def endpoint_lifetimes(
    s3_client: Any, plan: RunPlan, deployments: dict[str, DeploymentRecord]
) -> dict[str, EndpointLifetime]:
    """Creation and deletion of each deployed endpoint: Teardown's record, else creation alone (from the
    status step's record), from which the actual cost is a lower bound up to the end of the load."""
    lifetimes = {}
    for spec in plan.branches:
        if not spec.target.needs_deploy:
            continue
        teardown = read_teardown(s3_client, spec)
        deployment = deployments.get(spec.branch_id)
        in_service = deployment.in_service_epoch_s if deployment is not None else None
        if teardown is not None:
            lifetimes[spec.branch_id] = EndpointLifetime(
                teardown.created_epoch_s, teardown.deleted_epoch_s, in_service
            )
        elif deployment is not None:
            lifetimes[spec.branch_id] = EndpointLifetime(deployment.created_epoch_s, None, in_service)
    return lifetimes


def branch_results_for(s3_client: Any, storage_root: str, event: RenderEvent) -> list[BranchResultItem]:
    """The Map's results, saved before anything else so that a re-render keeps each branch's reason.

    A report-only execution's Map runs no branch: its (empty) results are replaced by the saved ones.
    Saving is best-effort: without it only a later re-render loses the reasons, not this report.
    """
    uri = branch_results_uri(storage_root, event.run_id)
    if event.branch_results:
        document = [item.model_dump(mode="json") for item in event.branch_results]
        try:
            s3_objects.put_json(s3_client, uri, document)
        except ClientError as exc:
            logger.warning("run %s: branch results not saved: %s", event.run_id, error_message(exc))
        return list(event.branch_results)
    data = s3_objects.get_bytes(s3_client, uri)
    if data is None:
        return []
    return [BranchResultItem.model_validate(item) for item in json.loads(data)]


def with_deployment_times(
    document: ResultDocument, deployments: dict[str, DeploymentRecord]
) -> ResultDocument:
    """result.json's ``deployment_s`` per deployed branch: endpoint creation to InService."""
    branches = [
        branch.model_copy(update={"deployment_s": round(deployments[branch.branch_id].deployment_s, 3)})
        if branch.branch_id in deployments
        else branch
        for branch in document.branches
    ]
    return document.model_copy(update={"branches": branches})


def evaluation_outcome_for(s3_client: Any, storage_root: str, event: RenderEvent) -> EvaluationOutcome | None:
    """How the run's latest judging ended. When this execution's Evaluate task ran, its outcome (the Catch's
    error, with what the task itself recorded, when it failed) is recorded now, so that a report-only
    re-render says the same; otherwise the recorded one (``fmbench evaluate`` records a later judging)."""
    uri = evaluation_outcome_uri(storage_root, event.run_id)
    try:
        data = s3_objects.get_bytes(s3_client, uri)
    except ClientError as exc:
        logger.warning("run %s: the judging's outcome not read: %s", event.run_id, error_message(exc))
        data = None
    recorded = EvaluationOutcome.model_validate_json(data) if data is not None else None
    step = event.evaluation
    if step is None or not step.ran:
        return recorded
    if step.error is None:
        outcome = judged_outcome(step=CLOUD_STEP)
    else:
        error = step_error_text(step.error)
        if recorded is not None and recorded.status == "failed" and recorded.error:
            error += f"; the task said: {recorded.error}"
        outcome = failed_outcome(error, step=CLOUD_STEP)
    try:
        s3_objects.put_json(s3_client, uri, outcome.model_dump(mode="json"))
    except ClientError as exc:  # the report still says it; only a re-render would not
        logger.warning("run %s: the judging's outcome not recorded: %s", event.run_id, error_message(exc))
    return outcome


# ------------------------------------------------------------------------------------- runs table


def saved_run_row(s3_client: Any, storage_root: str, run_id: str) -> pd.DataFrame | None:
    data = s3_objects.get_bytes(s3_client, run_row_uri(storage_root, run_id))
    return read_run_row(data) if data is not None else None


def record_run(
    s3_client: Any,
    storage_root: str,
    document: ResultDocument,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> str:
    """Write the run's row of the runs table to S3; returns where.

    A row already there keeps its start (a re-render or the Compare step does not move when the run
    started) and, when ``ended_at`` is not given, its end.
    """
    saved = saved_run_row(s3_client, storage_root, document.run_id)
    now = datetime.now(UTC)
    if saved is not None:
        started_at = saved["started_at"].iloc[0].to_pydatetime()
        if ended_at is None:
            ended_at = saved["ended_at"].iloc[0].to_pydatetime()
    row = run_row(document, started_at or now, ended_at or now)
    uri = run_row_uri(storage_root, document.run_id)
    s3_objects.put_bytes(s3_client, uri, run_row_bytes(row), RUN_ROW_CONTENT_TYPE)
    return uri


def _server_metrics(storage_root: str, run_id: str) -> ServerMetricsView | None:
    """The endpoints' own figures; a report without them rather than none when they cannot be read."""
    try:
        return server_metrics_view(storage_root, run_id)
    except OSError as exc:
        logger.warning("run %s: server metrics not read: %s", run_id, exc)
        return None


# ------------------------------------------------------------------------------------------- step


def render_run(
    event: RenderEvent,
    settings: RenderSettings,
    s3_client: Any,
    athena_client: Any,
    cloudwatch_for: Callable[[str | None], Any] | None = None,
    **ttft_wait: Any,
) -> ResultDocument:
    """Build the run's report from Athena and S3 and publish it to ``reports/run_id=<run>/``.

    With ``cloudwatch_for`` (region -> CloudWatch client), the SageMaker and Bedrock branches' CloudWatch
    metrics are fetched first, now that every branch is torn down (``fmbench.cloud.cloudwatch``).
    """
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    plan = read_plan(s3_client, storage_root, event.run_id)
    if cloudwatch_for is not None:
        for spec in plan.branches:
            record_cloudwatch_metrics(spec, cloudwatch_for)
    by_branch = {item.branch_id: item for item in branch_results_for(s3_client, storage_root, event)}
    outcomes = [read_outcome(s3_client, spec, by_branch.get(spec.branch_id)) for spec in plan.branches]
    deployments = {
        spec.branch_id: record
        for spec in plan.branches
        if spec.target.needs_deploy and (record := read_deployment(s3_client, spec)) is not None
    }
    lifetimes = endpoint_lifetimes(s3_client, plan, deployments)
    metrics = metrics_frame(athena_client, event.query_execution_id)
    branch_ids = [spec.branch_id for spec in plan.branches]
    samples = ttft_samples_frame(athena_client, settings, event.run_id, branch_ids, **ttft_wait)
    accuracy = accuracy_frame(
        s3_client, athena_client, settings, storage_root, event.run_id, branch_ids, **ttft_wait
    )
    publish_uri = reports_prefix(storage_root, event.run_id)
    with tempfile.TemporaryDirectory(prefix="fmbench-report-") as folder:
        report_dir = Path(folder)
        document = build_report(
            plan,
            outcomes,
            metrics,
            samples,
            report_dir,
            records_location=run_records_prefix(storage_root, event.run_id),
            publish_uri=publish_uri,
            endpoint_lifetimes=lifetimes,
            accuracy=accuracy,
            server=_server_metrics(storage_root, event.run_id),
            evaluation_outcome=evaluation_outcome_for(s3_client, storage_root, event),
        )
        if deployments:
            document = with_deployment_times(document, deployments)
            write_result(document, report_dir / RESULT_JSON)
        uploaded = s3_objects.upload_folder(s3_client, report_dir, publish_uri)
    logger.info("run %s: report published, %d file(s) under %s", event.run_id, len(uploaded), publish_uri)
    # The run's row of the runs table (docs/regression.md); Compare writes it again with the verdict.
    record_run(s3_client, storage_root, document, started_at=event.started_at)
    return document
