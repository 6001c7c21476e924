"""The runs table: one Parquet file per run, read back across runs with the Trino SQL on DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlglot

from fmbench import layout
from report.history import RUN_COLUMNS, latest_successful_run, suite_history, write_run_row
from report.query import bind_parameters, load_sql

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def row(run_id: str, suite: str, hours: int, status: str, latency: float | None) -> pd.DataFrame:
    values = dict.fromkeys(RUN_COLUMNS)
    values.update(
        run_id=run_id,
        suite_name=suite,
        started_at=T0 + timedelta(hours=hours),
        ended_at=T0 + timedelta(hours=hours, minutes=20),
        status=status,
        latency_p95_s=latency,
        best_concurrency=None if latency is None else 4,
    )
    from report.history import _RUN_DTYPES

    return pd.DataFrame([values], columns=list(RUN_COLUMNS)).astype(_RUN_DTYPES)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # Written out of order: the history is ordered by start time, not by file name or write order.
    for run_id, suite, hours, status, latency in [
        ("c", "nightly", 2, "failed", None),
        ("a", "nightly", 0, "succeeded", 1.5),
        ("x", "other", 1, "succeeded", 9.0),
        ("b", "nightly", 1, "succeeded", 1.7),
        ("d", "nightly", 3, "partial", 1.9),
    ]:
        write_run_row(str(tmp_path), row(run_id, suite, hours, status, latency))
    return tmp_path


def test_one_file_per_run_under_runs(root: Path) -> None:
    assert sorted(p.name for p in (root / "runs").iterdir()) == [
        f"run_id={r}.parquet" for r in ("a", "b", "c", "d", "x")
    ]
    assert layout.run_row_uri(str(root), "a") == f"{root}/runs/run_id=a.parquet"


def test_history_is_the_suites_runs_oldest_first_and_matches_pandas(root: Path) -> None:
    history = suite_history(str(root), "nightly")
    every = pd.concat(pd.read_parquet(path) for path in (root / "runs").glob("*.parquet"))
    expected = every[every["suite_name"] == "nightly"].sort_values("started_at")
    assert list(history["run_id"]) == list(expected["run_id"]) == ["a", "b", "c", "d"]
    assert list(history["latency_p95_s"].fillna(-1)) == list(expected["latency_p95_s"].fillna(-1))
    assert list(history.columns) == list(RUN_COLUMNS)


def test_latest_successful_run_is_the_baseline(root: Path) -> None:
    assert latest_successful_run(str(root), "nightly") == "b"  # c failed, d partial
    assert latest_successful_run(str(root), "nightly", before_run_id="b") == "a"
    assert latest_successful_run(str(root), "missing") is None
    assert latest_successful_run(str(root / "empty"), "nightly") is None


@pytest.mark.parametrize("name", ["runs_history", "suite_latency_history"])
def test_cross_run_sql_names_no_run_id_and_is_portable(name: str) -> None:
    trino = load_sql(name)
    athena = bind_parameters(trino, "trino", suite_name="it's")
    duck = bind_parameters(trino, "duckdb", suite_name="it's")
    assert "suite_name = 'it''s'" in athena and "suite_name = 'it''s'" in duck
    assert ":run_id" not in trino
    for text, dialect in ((athena, "trino"), (duck, "duckdb")):
        assert "approx_percentile" not in text.lower()
        sqlglot.parse_one(text, read=dialect)


def test_runs_are_named_by_folder_or_by_id_under_a_root(tmp_path: Path) -> None:
    from report.regression_report import RunLookupError, resolve_run

    single, several = tmp_path / "single", tmp_path / "several"
    (single / "records" / "run_id=a" / "branch_id=x").mkdir(parents=True)
    (single / "records" / "run_id=a" / "branch_id=x" / "part-00000.parquet").write_bytes(b"")
    for run_id in ("b", "c"):
        folder = several / "records" / f"run_id={run_id}" / "branch_id=x"
        folder.mkdir(parents=True)
        (folder / "part-00000.parquet").write_bytes(b"")
    assert resolve_run(str(single), None) == (str(single.resolve()), "a")
    with pytest.raises(RunLookupError, match="holds 2 runs"):
        resolve_run(str(several), None)
    (several / "result.json").write_text('{"run_id": "c"}')
    assert resolve_run(str(several), None) == (str(several.resolve()), "c")
    assert resolve_run("b", str(several)) == (str(several.resolve()), "b")
    with pytest.raises(RunLookupError, match="give --root"):
        resolve_run("b", None)
    with pytest.raises(RunLookupError, match="not a run folder"):
        resolve_run("zzz", str(several))
    with pytest.raises(RunLookupError, match="S3"):
        resolve_run("s3://bucket/results", None)
