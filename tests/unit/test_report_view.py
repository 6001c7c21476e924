"""The report's view model: load points keyed by branch and load point, so the summary's row order is moot."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fmbench.plan import BranchOutcome, RunPlan, plan_suite
from fmbench.suite import validate_suite_data
from report.charts import errors_by_class_chart, load_point_frame
from report.document import result_document
from report.markdown import render_markdown
from report.query import ERROR_CLASS_COLUMNS, METRIC_COLUMNS
from report.result import Artifacts
from report.view import LoadPointKey, LoadPointView, ReportView, ViewError, build_view

NAN = math.nan
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SMALL, BIG = "50-500", "500-2000"


def make_plan() -> RunPlan:
    endpoint = "http://127.0.0.1:9/v1"
    suite = validate_suite_data(
        {
            "name": "view",
            "targets": [
                {
                    "name": name,
                    "platform": "openai",
                    "endpoint_url": endpoint,
                    "instance_type": "ml.g5.xlarge",
                }
                for name in ("alpha", "beta")
            ],
            "workload": {
                "dataset": {"source": "builtin:synthetic-qa"},
                "bins": [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}],
            },
            "load": {"concurrency": [1, 4], "requests_per_level": 8},
            "slo": {"p95_latency_s": 3.0},
        }
    )
    return plan_suite(suite, storage_root="/tmp/unused", run_id="20250102T030405Z-abcdef")


def row(branch_id: str, target: str, concurrency: int, payload_bin: str, **overrides: Any) -> dict[str, Any]:
    """A summary row whose latency tells its load point apart: 0.1 x level + 1 for the big bin."""
    latency_p95_s = 0.1 * concurrency + (1.0 if payload_bin == BIG else 0.0)
    values: dict[str, Any] = {name: NAN for name in METRIC_COLUMNS}
    values.update(
        run_id="20250102T030405Z-abcdef",
        branch_id=branch_id,
        target_name=target,
        platform="openai",
        model="m",
        container=None,
        instance_type="ml.g5.xlarge",
        instance_count=1,
        instance_price_per_hour_usd=1.0,
        load_mode="concurrency",
        concurrency=concurrency,
        request_rate_per_s=NAN,
        payload_bin=payload_bin,
        requests=8,
        successes=8,
        errors=0,
        error_rate=0.0,
        **dict.fromkeys(ERROR_CLASS_COLUMNS, 0),
        latency_mean_s=latency_p95_s,
        latency_p50_s=latency_p95_s,
        latency_p95_s=latency_p95_s,
        latency_p99_s=latency_p95_s,
        ttft_p95_s=0.1,
        prompt_tokens_mean=100.0 if payload_bin == SMALL else 1000.0,
        completion_token_throughput_per_s=10.0 * concurrency,
        transactions_per_minute=60.0 * concurrency,
        price_per_txn_usd=0.01 / concurrency,
        prompt_tokens_local_diff_pct=1.5 if concurrency == 4 else NAN,
        client_bound=concurrency == 4 and payload_bin == SMALL,
        requests_reused_prompt=0,
        requests_local_token_counts=0,
    )
    values.update(overrides)
    return values


def summary(plan: RunPlan) -> pd.DataFrame:
    """alpha measured everything; beta stopped before its last load point (concurrency 4, big bin)."""
    rows = []
    for branch in plan.branches:
        for concurrency, _, payload_bin in branch.planned_load_points():
            assert concurrency is not None
            if branch.target.name == "beta" and (concurrency, payload_bin) == (4, BIG):
                continue
            rows.append(row(branch.branch_id, branch.target.name, concurrency, payload_bin))
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def outcomes(plan: RunPlan) -> list[BranchOutcome]:
    alpha, beta = plan.branches
    return [
        BranchOutcome(
            branch_id=alpha.branch_id,
            status="succeeded",
            requests_attempted=32,
            records_written=32,
            load_points_planned=4,
            load_points_completed=4,
        ),
        BranchOutcome(
            branch_id=beta.branch_id,
            status="partial",
            reason="stopped",
            requests_attempted=24,
            records_written=24,
            load_points_planned=4,
            load_points_completed=3,
        ),
    ]


def view_of(metrics: pd.DataFrame) -> ReportView:
    plan = make_plan()
    return build_view(plan, outcomes(plan), metrics, generated_at=WHEN)


ARTIFACTS = Artifacts(
    report_md="r.md",
    report_html="r.html",
    summary_parquet="s.parquet",
    result_json="r.json",
    charts={},
    records_prefix="p/",
)


def test_a_shuffled_summary_gives_the_same_report() -> None:
    metrics = summary(make_plan())
    reference = view_of(metrics)
    for seed in (1, 2, 3):
        shuffled = view_of(metrics.sample(frac=1.0, random_state=seed).reset_index(drop=True))
        assert render_markdown(shuffled, {}) == render_markdown(reference, {})
        assert result_document(shuffled, ARTIFACTS) == result_document(reference, ARTIFACTS)
        pd.testing.assert_frame_equal(load_point_frame(shuffled), load_point_frame(reference))
    reversed_view = view_of(metrics.iloc[::-1].reset_index(drop=True))
    assert reversed_view == reference


def test_each_load_point_keeps_its_own_figures() -> None:
    plan = make_plan()
    view = view_of(summary(plan))
    for branch in view.branches:
        for key, point in branch.measured.items():
            assert point.key == key and point.branch_id == branch.branch_id
            expected_p95_s = 0.1 * (key.concurrency or 0) + (1.0 if key.payload_bin == BIG else 0.0)
            assert point["latency_p95_s"] == pytest.approx(expected_p95_s)
            assert point.client_bound == (key.concurrency == 4 and key.payload_bin == SMALL)
    document = result_document(view, ARTIFACTS)
    for branch in document.branches:
        for summary_point in branch.load_points:
            expected_p95_s = 0.1 * (summary_point.concurrency or 0) + (
                1.0 if summary_point.payload_bin == BIG else 0
            )
            assert summary_point.latency_p95_s == pytest.approx(expected_p95_s)


def test_a_missing_load_point_is_listed_in_its_place_and_the_last_measured_one_completed() -> None:
    view = view_of(summary(make_plan()))
    alpha, beta = view.branches
    assert alpha.not_measured == () and all(point.completed for point in alpha.measured.values())
    assert beta.not_measured == (LoadPointKey(4, None, BIG),)
    assert all(point.completed for point in beta.measured.values())
    rows = beta.table_rows(view.bins)
    keys = [r.key if isinstance(r, LoadPointView) else r for r in rows]
    # bins in the suite's order, then levels ascending; the unmeasured point sits where it belongs
    assert keys == [
        LoadPointKey(1, None, SMALL),
        LoadPointKey(4, None, SMALL),
        LoadPointKey(1, None, BIG),
        LoadPointKey(4, None, BIG),
    ]
    assert isinstance(rows[-1], LoadPointKey)
    markdown_text = render_markdown(view, {})
    assert "| concurrency 4 | 500-2000 | **not measured** |" in markdown_text
    assert "| concurrency 4 † | 50-500 | 8 |" in markdown_text


def test_the_view_is_frozen() -> None:
    view = view_of(summary(make_plan()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "failed"  # type: ignore[misc]
    point = next(iter(view.branches[0].measured.values()))
    with pytest.raises(TypeError):
        point.figures["latency_p95_s"] = 0.0  # type: ignore[index]


def test_two_summary_rows_for_one_load_point_are_an_error() -> None:
    plan = make_plan()
    metrics = summary(plan)
    doubled = pd.concat([metrics, metrics.iloc[[0]]], ignore_index=True)
    with pytest.raises(ViewError, match="two rows for one load point"):
        build_view(plan, outcomes(plan), doubled, generated_at=WHEN)


def test_errors_by_class_are_counted_per_branch_in_the_report_result_and_chart(tmp_path: Path) -> None:
    plan = make_plan()
    metrics = summary(plan)
    alpha, beta = plan.branches
    # alpha: 2 cut streams + 1 timeout at one point, 3 throttled at another; one error of no known class
    failures = {
        (alpha.branch_id, 1, SMALL): {"errors_stream_cut": 2, "errors_timeout": 1, "errors": 4},
        (alpha.branch_id, 4, BIG): {"errors_http_429": 3, "errors": 3},
    }
    for (branch_id, concurrency, payload_bin), figures in failures.items():
        where = (
            (metrics["branch_id"] == branch_id)
            & (metrics["concurrency"] == concurrency)
            & (metrics["payload_bin"] == payload_bin)
        )
        assert where.sum() == 1
        for column, value in figures.items():
            metrics.loc[where, column] = value
    view = view_of(metrics)

    by_branch = {branch.target_name: branch.errors_by_class for branch in view.branches}
    assert by_branch == {
        "alpha": {"http_429": 3, "timeout": 1, "stream_cut": 2, "other": 1},
        "beta": {},
    }
    document = result_document(view, ARTIFACTS)
    assert {b.target_name: b.errors_by_class for b in document.branches} == by_branch
    assert beta.branch_id in {b.branch_id for b in document.branches}

    text = render_markdown(view, {})
    section = text.split("## Errors by class", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0] == "| Target | Load | Payload bin | http_429 | timeout | stream_cut | other |"
    assert table[2:] == [
        "| **alpha** | all | all | 3 | 1 | 2 | 1 |",
        f"| alpha | concurrency 1 | {SMALL} | 0 | 1 | 2 | 1 |",
        f"| alpha | concurrency 4 | {BIG} | 3 | 0 | 0 | 0 |",
    ]

    chart = errors_by_class_chart(view, tmp_path / "errors.png")
    assert chart is not None and chart.read_bytes().startswith(b"\x89PNG")
    assert errors_by_class_chart(view_of(summary(plan)), tmp_path / "none.png") is None
    assert "## Errors by class" not in render_markdown(view_of(summary(plan)), {})
