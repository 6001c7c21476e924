"""The render step's accuracy in the cloud: judgments in S3 (moto) queried through Athena's path, the query
restricted to the run's branches on the judgments table, and no query for a run that was never judged."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from moto import mock_aws
from moto.athena.models import athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from test_handlers import athena_result

from fmbench import layout
from fmbench.cloud.settings import RenderSettings
from report.accuracy import accuracy_view
from report.cloud import accuracy_frame
from report.query import accuracy_figures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from judgment_factory import judgment, write_judgments

REGION = "us-east-1"
BUCKET = "fmbench-results-accuracy"
RUN_ID = "20250101T000000Z-acc999"
BRANCHES = {"alpha-1111": "alpha", "beta-2222": "beta"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        athena = boto3.client("athena", region_name=REGION)
        athena.create_work_group(
            Name="fmbench",
            Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena-results/"}},
        )
        yield s3, athena


def settings() -> RenderSettings:
    return RenderSettings.model_validate(
        {
            "FMBENCH_RESULTS_BUCKET": BUCKET,
            "FMBENCH_ATHENA_DATABASE": "fmbench",
            "FMBENCH_ATHENA_WORKGROUP": "fmbench",
            "AWS_REGION": REGION,
        }
    )


def judged_locally(root: Path) -> pd.DataFrame:
    rows = {
        branch_id: [
            # every fourth prompt unanimously incorrect, the others correct two to one
            judgment(target, f"p{n}", judge, "correct" if n % 4 and (n + i) % 3 else "incorrect")
            for n in range(12)
            for i, judge in enumerate(("j1", "j2", "j3"))
        ]
        for branch_id, target in BRANCHES.items()
    }
    write_judgments(root, RUN_ID, rows)
    figures = accuracy_figures(str(root), RUN_ID)
    assert figures is not None
    return figures


def test_a_judged_run_reads_its_accuracy_through_athena(aws: tuple[Any, Any], tmp_path: Path) -> None:
    s3, athena = aws
    expected = judged_locally(tmp_path)
    for part in sorted((tmp_path / layout.EVALUATIONS).rglob("*.parquet")):
        s3.upload_file(str(part), BUCKET, part.relative_to(tmp_path).as_posix())
    # What Athena returns for the query is the same SQL's result (the workflow tests run it on DuckDB).
    athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue.append(athena_result(expected))
    frame = accuracy_frame(
        s3, athena, settings(), f"s3://{BUCKET}", RUN_ID, list(BRANCHES), sleep=lambda _: None
    )
    assert frame is not None
    pd.testing.assert_frame_equal(frame, expected)
    (execution_id,) = athena.list_query_executions()["QueryExecutionIds"]
    query = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Query"]
    assert "FROM judgments" in query and "judgments.branch_id IN ('alpha-1111', 'beta-2222')" in query
    view = accuracy_view(frame, min_accuracy=0.5)
    assert view is not None and [c.target_name for c in view.candidates] == ["alpha", "beta"]
    assert all(c.accuracy == pytest.approx(9 / 12) for c in view.candidates)


def test_a_run_never_judged_runs_no_accuracy_query(aws: tuple[Any, Any]) -> None:
    s3, athena = aws
    frame = accuracy_frame(s3, athena, settings(), f"s3://{BUCKET}", RUN_ID, list(BRANCHES))
    assert frame is None
    assert athena.list_query_executions()["QueryExecutionIds"] == []


def test_judgments_that_cannot_be_listed_leave_the_accuracy_out(aws: tuple[Any, Any]) -> None:
    """A Render role that may not list evaluations/ (here: a bucket that is not there) reports without it."""
    s3, athena = aws
    frame = accuracy_frame(s3, athena, settings(), "s3://no-such-bucket-here", RUN_ID, list(BRANCHES))
    assert frame is None
    assert athena.list_query_executions()["QueryExecutionIds"] == []
