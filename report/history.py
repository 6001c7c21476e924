"""The runs table (one row per run under ``runs/``) and the history of a suite read back from it with SQL.

Every run, whatever its outcome, adds one Parquet file ``runs/run_id=<run>.parquet`` holding its one row:
files never collide, a row is queryable as soon as it is written, and DuckDB (``read_parquet`` over the
folder) and Athena (a table whose location is ``runs/``, see docs/regression.md) read the same rows with the
same SQL (``report/sql/runs_history.sql``), no run id in the query.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
from sqlglot import exp

from fmbench import layout, storage
from report.query import load_sql, to_duckdb
from report.result import ResultDocument

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "suite_name",
    "schedule_name",
    "started_at",
    "ended_at",
    "status",
    "verdict",
    "baseline_run_id",
    "regressed_metrics",
    "best_target_name",
    "best_payload_bin",
    "best_concurrency",
    "best_request_rate_per_s",
    "latency_p95_s",
    "ttft_p95_s",
    "transactions_per_minute",
    "error_rate",
    "price_per_txn_usd",
)
# One Arrow type per column whatever the row holds: every file of the table has one schema (Athena needs it).
_RUN_DTYPES: dict[str, str] = {
    "run_id": "string",
    "suite_name": "string",
    "schedule_name": "string",
    "started_at": "datetime64[us, UTC]",
    "ended_at": "datetime64[us, UTC]",
    "status": "string",
    "verdict": "string",
    "baseline_run_id": "string",
    "regressed_metrics": "string",
    "best_target_name": "string",
    "best_payload_bin": "string",
    "best_concurrency": "Int64",
    "best_request_rate_per_s": "float64",
    "latency_p95_s": "float64",
    "ttft_p95_s": "float64",
    "transactions_per_minute": "float64",
    "error_rate": "float64",
    "price_per_txn_usd": "float64",
}


def run_row(
    document: ResultDocument, started_at: datetime, ended_at: datetime, schedule_name: str | None = None
) -> pd.DataFrame:
    """The run's row: identity, times, status, verdict and the headline figures of its best configuration."""
    best, regression = document.best, document.regression
    row = {
        "run_id": document.run_id,
        "suite_name": document.suite_name,
        "schedule_name": schedule_name,
        "started_at": started_at,
        "ended_at": ended_at,
        "status": document.status,
        "verdict": regression.verdict if regression else None,
        "baseline_run_id": regression.baseline_run_id if regression else None,
        "regressed_metrics": ",".join(regression.regressed_metrics) if regression else None,
        "best_target_name": best.experiment_name if best else None,
        "best_payload_bin": best.payload_file if best else None,
        "best_concurrency": best.concurrency if best else None,
        "best_request_rate_per_s": best.request_rate_per_s if best else None,
        "latency_p95_s": best.latency_p95 if best else None,
        "ttft_p95_s": best.ttft_p95 if best else None,
        "transactions_per_minute": best.transactions_per_minute if best else None,
        "error_rate": best.error_rate if best else None,
        "price_per_txn_usd": best.price_per_txn if best else None,
    }
    return pd.DataFrame([row], columns=list(RUN_COLUMNS)).astype(_RUN_DTYPES)


RUN_ROW_CONTENT_TYPE = "application/vnd.apache.parquet"


def run_row_bytes(row: pd.DataFrame) -> bytes:
    """The row as the Parquet file of the runs table (one schema for every file, see ``_RUN_DTYPES``)."""
    buffer = io.BytesIO()
    row.astype(_RUN_DTYPES).to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_run_row(data: bytes) -> pd.DataFrame:
    """A runs-table file read back, typed as ``run_row`` makes it."""
    return pd.read_parquet(io.BytesIO(data))[list(RUN_COLUMNS)].astype(_RUN_DTYPES)


def write_run_row(root: str, row: pd.DataFrame) -> str:
    """Write the run's row under the root (a folder or ``s3://``); returns where."""
    uri = layout.run_row_uri(root, str(row["run_id"].iloc[0]))
    storage.write_bytes(uri, run_row_bytes(row), RUN_ROW_CONTENT_TYPE)
    return uri


def typed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the runs table as another engine returned them (Athena's text), with the table's types."""
    out = frame.copy()
    for name in ("started_at", "ended_at"):
        out[name] = pd.to_datetime(out[name], utc=True, format="mixed")
    return out[list(RUN_COLUMNS)].astype(_RUN_DTYPES)


def _runs_glob(root: str) -> str:
    return str(Path(layout.runs_table_prefix(str(Path(root).resolve()))) / "*.parquet")


def query_runs(root: str, query_name: str, **params: str) -> pd.DataFrame:
    """A query of ``report/sql`` over the ``runs`` table of a local results root, on DuckDB."""
    if "://" in root:
        raise ValueError(f"local results roots only (in the cloud Athena runs the same SQL): {root}")
    if not any(Path(_runs_glob(root)).parent.glob("*.parquet")):
        return pd.DataFrame({name: pd.Series(dtype=_RUN_DTYPES[name]) for name in RUN_COLUMNS})
    glob = exp.Literal.string(_runs_glob(root)).sql(dialect="duckdb")
    with duckdb.connect(":memory:") as connection:
        connection.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet({glob}, union_by_name = true)")
        return connection.execute(to_duckdb(load_sql(query_name), **params)).df()


def query_results(root: str, query_name: str, **params: str) -> pd.DataFrame:
    """A cross-run query over a local results root: the ``records`` of every run and the ``runs`` table.

    The records are read with their Hive partitions (run_id, branch_id) as columns, as Athena sees them,
    so a query selects runs by joining the runs table instead of naming run ids.
    """
    if "://" in root:
        raise ValueError(f"local results roots only (in the cloud Athena runs the same SQL): {root}")
    base = Path(root).resolve()
    records = str(base / layout.RECORDS / "*" / "*" / "*.parquet")
    if not any((base / layout.RECORDS).glob("*/*/*.parquet")) or not any(
        Path(_runs_glob(root)).parent.glob("*.parquet")
    ):
        return pd.DataFrame()
    with duckdb.connect(":memory:") as connection:
        connection.execute(
            "CREATE VIEW records AS SELECT * FROM read_parquet("
            f"{exp.Literal.string(records).sql(dialect='duckdb')}, hive_partitioning = true, "
            "union_by_name = true, hive_types = {'run_id': VARCHAR, 'branch_id': VARCHAR})"
        )
        glob = exp.Literal.string(_runs_glob(root)).sql(dialect="duckdb")
        connection.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet({glob}, union_by_name = true)")
        return connection.execute(to_duckdb(load_sql(query_name), **params)).df()


def suite_history(root: str, suite_name: str) -> pd.DataFrame:
    """Every run of the suite under the root, oldest first (columns ``RUN_COLUMNS``)."""
    frame = query_runs(root, "runs_history", suite_name=suite_name)
    return frame[list(RUN_COLUMNS)].reset_index(drop=True)


def latest_successful_run(root: str, suite_name: str, before_run_id: str | None = None) -> str | None:
    """The baseline ``latest``: the newest run of the suite that succeeded, other than ``before_run_id``."""
    history = suite_history(root, suite_name)
    done = history[(history["status"] == "succeeded") & (history["run_id"] != (before_run_id or ""))]
    return None if done.empty else str(done["run_id"].iloc[-1])
