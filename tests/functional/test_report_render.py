"""The whole report from records on disk: files, charts, sections, self-contained HTML and result.json."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fmbench.plan import BranchOutcome, RunPlan, plan_suite
from fmbench.records import RecordWriter, RequestRecord
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from report.render import generate_report
from report.result import ResultDocument, read_result, result_json_schema

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "## Best configuration under the SLO",
    "## Branches",
    "## Results per load point",
    "## Charts",
    "## Metric definitions",
]
FAILED_REASON = "endpoint never became InService within 900 s | <quota exceeded>"
REPO = Path(__file__).resolve().parents[2]

# Closed-loop latency (s) of each target per (concurrency, bin): the synthetic endpoints' behaviour.
LATENCY_S = {
    "small": {(1, "50-500"): 1.0, (4, "50-500"): 2.0, (1, "500-2000"): 2.0, (4, "500-2000"): 4.0},
    "large": {(1, "50-500"): 0.5, (4, "50-500"): 0.6, (1, "500-2000"): 1.0, (4, "500-2000"): 1.2},
}
REQUESTS_PER_LEVEL = 8


def suite_data(**overrides: Any) -> dict[str, Any]:
    endpoint = "http://127.0.0.1:9/v1"
    data: dict[str, Any] = {
        "name": "report-demo",
        "targets": [
            {
                "name": "small",
                "platform": "openai",
                "endpoint_url": endpoint,
                "instance_type": "ml.g5.xlarge",
            },
            {
                "name": "large",
                "platform": "openai",
                "endpoint_url": endpoint,
                "instance_type": "ml.g5.12xlarge",
            },
            {
                "name": "broken",
                "platform": "openai",
                "endpoint_url": endpoint,
                "instance_type": "ml.g5.2xlarge",
            },
        ],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}],
        },
        "load": {"concurrency": [1, 4], "requests_per_level": REQUESTS_PER_LEVEL},
        "slo": {"p95_latency_s": 3.0},
    }
    data.update(overrides)
    return data


def synthesize_branch(branch: BranchSpec, root: str) -> BranchOutcome:
    """A closed loop at each level: waves of `concurrency` requests, each wave taking the level's latency."""
    writer = RecordWriter(root, branch.run_id, branch.branch_id)
    clock_s = 1_700_000_000.0
    count = 0
    for bin_spec in branch.workload.bins:
        for concurrency in branch.load.concurrency:
            latency_s = LATENCY_S[branch.target.name][(concurrency, bin_spec.label)]
            prompt_tokens = (bin_spec.min_tokens + bin_spec.max_tokens) // 2
            for index in range(REQUESTS_PER_LEVEL):
                send_s = clock_s + (index // concurrency) * latency_s
                writer.append(
                    RequestRecord(
                        suite_name=branch.suite_name,
                        target_name=branch.target.name,
                        platform=branch.target.platform,
                        model=branch.target.model or None,
                        container=None,
                        instance_type=branch.instance_type,
                        instance_count=branch.target.instance_count,
                        instance_price_per_hour_usd=branch.instance_price_per_hour_usd,
                        api="chat",
                        load_mode="concurrency",
                        concurrency=concurrency,
                        request_rate_per_s=None,
                        payload_bin=bin_spec.label,
                        request_id=f"{bin_spec.label}-{concurrency}-{index}",
                        prompt_id=None,
                        phase="measured",
                        scheduled_epoch_s=send_s,
                        send_epoch_s=send_s,
                        first_token_epoch_s=send_s + latency_s / 5,
                        end_epoch_s=send_s + latency_s,
                        ttft_s=latency_s / 5,
                        latency_s=latency_s,
                        itl_s=[latency_s * 0.8 / 99] * 99,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=100,
                        token_source="server",
                    )
                )
                count += 1
            writer.flush()
            clock_s += 1000.0
    return BranchOutcome(
        branch_id=branch.branch_id,
        status="succeeded",
        requests_attempted=count,
        records_written=writer.rows_written,
        load_points_planned=branch.load_point_count,
        load_points_completed=branch.load_point_count,
    )


def run_plan(tmp_path: Path, data: dict[str, Any]) -> tuple[RunPlan, list[BranchOutcome], str]:
    suite = validate_suite_data(data)
    root = str(tmp_path / "storage")
    plan = plan_suite(suite, storage_root=root, run_id="20250102T030405Z-abcdef")
    outcomes = []
    for branch in plan.branches:
        if branch.target.name == "broken":
            outcomes.append(
                BranchOutcome(
                    branch_id=branch.branch_id,
                    status="failed",
                    reason=FAILED_REASON,
                    load_points_planned=branch.load_point_count,
                )
            )
        else:
            outcomes.append(synthesize_branch(branch, root))
    return plan, outcomes, root


def price_per_txn_usd(target: str, concurrency: int, bin_label: str, price_per_hour_usd: float) -> float:
    window_s = math.ceil(REQUESTS_PER_LEVEL / concurrency) * LATENCY_S[target][(concurrency, bin_label)]
    return price_per_hour_usd / 3600 * window_s / REQUESTS_PER_LEVEL


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPlan, ResultDocument, Path]:
    tmp_path = tmp_path_factory.mktemp("report")
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    report_dir = tmp_path / "reports"
    document = generate_report(
        plan, outcomes, root, report_dir, generated_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    return plan, document, report_dir


def test_every_artifact_is_written(rendered: tuple[RunPlan, ResultDocument, Path]) -> None:
    _, document, report_dir = rendered
    for name in ("report.md", "report.html", "summary.parquet", "result.json"):
        assert (report_dir / name).stat().st_size > 0, name
    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        content = png.read_bytes()
        assert content.startswith(PNG_SIGNATURE), png.name
        assert len(content) > 1024, png.name
    assert sorted(Path(p).name for p in document.artifacts.charts.values()) == [p.name for p in pngs]
    assert {
        "price_performance",
        "latency_vs_prompt_tokens",
        "throughput_vs_concurrency",
        "ttft_distribution",
    } <= set(document.artifacts.charts)
    assert "error_rate_vs_concurrency" not in document.artifacts.charts  # no errors: nothing to draw
    assert document.artifacts.report_html == str((report_dir / "report.html").resolve())
    assert document.artifacts.records_prefix.endswith("/records/run_id=20250102T030405Z-abcdef/")


def test_best_is_the_cheapest_load_point_under_the_slo(
    rendered: tuple[RunPlan, ResultDocument, Path],
) -> None:
    plan, document, report_dir = rendered
    document_on_disk = read_result(report_dir / "result.json")
    assert document_on_disk == document
    assert document.status == "partial"
    assert document.headline_bin == "500-2000"
    best = document.best
    assert best is not None
    # small at concurrency 4 would be cheaper (0.000391 USD) but its p95 latency, 4 s, misses the 3 s SLO.
    large = next(b for b in plan.branches if b.target.name == "large")
    assert (best.experiment_name, best.branch_id, best.concurrency, best.payload_file) == (
        "large",
        large.branch_id,
        4,
        "500-2000",
    )
    assert best.instance_type == "ml.g5.12xlarge"
    # Epoch seconds near 1.7e9 carry ~2e-7 s of float64 rounding, hence rel=1e-6 on window-based figures.
    assert best.price_per_txn == pytest.approx(price_per_txn_usd("large", 4, "500-2000", 7.09), rel=1e-6)
    assert best.latency_p95 == pytest.approx(1.2, rel=1e-12)
    assert best.transactions_per_minute == pytest.approx(8 / 2.4 * 60, rel=1e-6)
    assert best.error_rate == 0.0
    assert [(b.payload_file, b.experiment_name, b.concurrency) for b in document.best_per_bin] == [
        ("50-500", "small", 4),
        ("500-2000", "large", 4),
    ]


def test_branches_include_the_failed_one(rendered: tuple[RunPlan, ResultDocument, Path]) -> None:
    plan, document, _ = rendered
    assert [b.branch_id for b in document.branches] == [b.branch_id for b in plan.branches]
    broken = next(b for b in document.branches if b.target_name == "broken")
    assert (broken.status, broken.reason, broken.load_points, broken.records_written) == (
        "failed",
        FAILED_REASON,
        [],
        0,
    )
    assert broken.load_points_planned == 4
    small = next(b for b in document.branches if b.target_name == "small")
    assert [(p.payload_bin, p.concurrency, p.meets_slo) for p in small.load_points] == [
        ("50-500", 1, True),
        ("50-500", 4, True),
        ("500-2000", 1, True),
        ("500-2000", 4, False),
    ]
    assert small.instance_price_per_hour_usd == 1.408
    assert small.records_written == 32


def test_result_json_has_no_nan_and_matches_the_schema(
    rendered: tuple[RunPlan, ResultDocument, Path],
) -> None:
    _, _, report_dir = rendered
    text = (report_dir / "result.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["schema_version"] == "1"
    assert data["generated_at"] == "2025-01-02T03:04:05Z"
    schema = result_json_schema()
    assert set(data) == set(schema["properties"])
    best_fields = set(schema["$defs"]["BestConfiguration"]["properties"])
    assert best_fields == {
        "experiment_name",
        "payload_file",
        "instance_type",
        "concurrency",
        "request_rate_per_s",
        "error_rate",
        "prompt_token_count_mean",
        "prompt_token_throughput",
        "completion_token_count_mean",
        "completion_token_throughput",
        "latency_mean",
        "latency_p50",
        "latency_p95",
        "latency_p99",
        "transactions_per_minute",
        "price_per_txn",
        "branch_id",
        "instance_count",
        "ttft_p95",
        "price_per_1m_output_tokens",
    }
    assert set(data["best"]) == best_fields


def test_markdown_has_every_section_in_order(rendered: tuple[RunPlan, ResultDocument, Path]) -> None:
    _, _, report_dir = rendered
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    assert text.startswith("# FMBench Flow benchmark: report-demo\n")
    positions = [text.index(heading + "\n") for heading in SECTIONS]
    assert positions == sorted(positions)
    assert "| Information | Value |" in text
    assert "| `experiment_name` | large |" in text
    assert "Selection rule." in text
    # The failed branch's reason, escaped for a table cell (and for the HTML built from it).
    assert "endpoint never became InService within 900 s \\| &lt;quota exceeded&gt;" in text
    assert "p95 latency <= 3 s" in text
    assert "Percentiles" in text  # the definitions are included
    for name in ("price_performance.png", "latency_vs_prompt_tokens.png", "ttft_distribution.png"):
        assert f"]({name})" in text


def test_html_is_self_contained(rendered: tuple[RunPlan, ResultDocument, Path]) -> None:
    _, document, report_dir = rendered
    text = (report_dir / "report.html").read_text(encoding="utf-8")
    assert 'src="http' not in text
    assert "<link" not in text and "<script" not in text
    assert "&lt;quota exceeded&gt;" in text
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', text)
    assert len(sources) == len(document.artifacts.charts)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<table>" in text
    assert "<h2>Best configuration under the SLO</h2>" in text


def test_nobody_meets_the_slo(tmp_path: Path) -> None:
    plan, outcomes, root = run_plan(tmp_path, suite_data(slo={"p95_latency_s": 0.1}))
    document = generate_report(plan, outcomes, root, tmp_path / "reports")
    assert document.best is None
    assert document.best_per_bin == []
    assert all(not p.meets_slo for b in document.branches for p in b.load_points)
    text = (tmp_path / "reports" / "report.md").read_text(encoding="utf-8")
    assert "**No load point meets the SLO in the headline bin 500-2000**" in text
    assert read_result(tmp_path / "reports" / "result.json").best is None


def test_run_without_records(tmp_path: Path) -> None:
    suite = validate_suite_data(suite_data())
    plan = plan_suite(suite, storage_root=str(tmp_path / "storage"), run_id="empty-run")
    outcomes = [
        BranchOutcome(branch_id=b.branch_id, status="failed", reason="deploy failed") for b in plan.branches
    ]
    document = generate_report(plan, outcomes, str(tmp_path / "storage"), tmp_path / "reports")
    assert document.status == "failed"
    assert document.best is None
    assert document.artifacts.charts == {}
    assert not list((tmp_path / "reports").glob("*.png"))
    text = (tmp_path / "reports" / "report.md").read_text(encoding="utf-8")
    assert "No charts" in text and "No branch produced measured results." in text
    assert "<img" not in (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")


def test_metric_definitions_are_the_same_in_docs_and_report() -> None:
    definitions = (REPO / "report" / "templates" / "metric_definitions.md").read_text(encoding="utf-8")
    docs = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    between = re.search(r"<!-- definitions:start -->\n(.*?)<!-- definitions:end -->", docs, re.DOTALL)
    assert between is not None
    assert between.group(1) == definitions


def test_client_bound_rate_points_are_marked_and_never_best(tmp_path: Path) -> None:
    """Rate mode: the cheapest load point (40 req/s) was client-bound, so 10 req/s is the best."""
    data = suite_data(
        targets=[suite_data()["targets"][0]],
        workload={"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        load={"rates_per_s": [10, 40], "max_in_flight": 8, "requests_per_level": REQUESTS_PER_LEVEL},
    )
    suite = validate_suite_data(data)
    root = str(tmp_path / "storage")
    plan = plan_suite(suite, storage_root=root, run_id="rates")
    (branch,) = plan.branches
    writer = RecordWriter(root, plan.run_id, branch.branch_id)
    for rate, bound, lag_s in ((10.0, False, 0.001), (40.0, True, 0.4)):
        for index in range(REQUESTS_PER_LEVEL):
            scheduled_s = 1_700_000_000.0 + rate * 100 + index / rate
            writer.append(
                RequestRecord(
                    suite_name=branch.suite_name,
                    target_name=branch.target.name,
                    platform="openai",
                    model=None,
                    container=None,
                    instance_type=branch.instance_type,
                    instance_count=1,
                    instance_price_per_hour_usd=branch.instance_price_per_hour_usd,
                    api="chat",
                    load_mode="rate",
                    concurrency=None,
                    request_rate_per_s=rate,
                    arrival="poisson",
                    max_in_flight=8,
                    payload_bin="50-500",
                    request_id=f"r{rate:g}-{index}",
                    prompt_id=None,
                    phase="measured",
                    scheduled_epoch_s=scheduled_s,
                    send_epoch_s=scheduled_s + lag_s,
                    schedule_lag_s=lag_s,
                    first_token_epoch_s=scheduled_s + lag_s + 0.1,
                    end_epoch_s=scheduled_s + lag_s + 1.0,
                    ttft_s=0.1,
                    latency_s=1.0,
                    prompt_tokens=110,
                    completion_tokens=100,
                    token_source="server",
                    prompt_tokens_local=100,
                    completion_tokens_local=100,
                    runner_cpu_fraction=0.2,
                    runner_cpu_count=2,
                    client_bound=bound,
                )
            )
        writer.flush()
    outcome = BranchOutcome(
        branch_id=branch.branch_id,
        status="succeeded",
        requests_attempted=writer.rows_written,
        records_written=writer.rows_written,
        load_points_planned=2,
        load_points_completed=2,
    )
    document = generate_report(plan, [outcome], root, tmp_path / "reports")
    (result,) = document.branches
    assert [(p.request_rate_per_s, p.client_bound, p.meets_slo) for p in result.load_points] == [
        (10.0, False, True),
        (40.0, True, True),
    ]
    assert result.load_points[1].schedule_lag_p99_s == pytest.approx(0.4)
    assert result.load_points[1].latency_from_schedule_p95_s == pytest.approx(1.4)
    assert result.load_points[0].price_per_txn_usd > result.load_points[1].price_per_txn_usd
    assert document.best is not None
    assert (document.best.concurrency, document.best.request_rate_per_s) == (None, 10.0)
    assert "client-bound" in document.selection_rule
    text = (tmp_path / "reports" / "report.md").read_text(encoding="utf-8")
    assert "| 40 req/s † | 50-500 |" in text and "| 10 req/s | 50-500 |" in text
    assert "**† Client-bound** (1 load point)" in text
    assert "`max_in_flight` cap of 8" in text
    assert "| `request_rate_per_s` | 10 |" in text
    assert "## Token counts: server vs local tokenizer" in text
    assert "| small | 10 req/s | 50-500 | +10.0% | +0.0% |" in text
    assert "throughput_vs_rate" in document.artifacts.charts


def test_goodput_column_counts_requests_within_the_per_request_slos(tmp_path: Path) -> None:
    """Each request has its level's latency and TTFT = latency / 5: a level is all good or not."""
    slo = {"p95_latency_s": 3.0, "request_latency_s": 1.5, "request_ttft_s": 0.3}
    plan, outcomes, root = run_plan(tmp_path, suite_data(slo=slo))
    document = generate_report(plan, outcomes, root, tmp_path / "reports")
    assert document.slo.request_latency_s == 1.5 and document.slo.request_tpot_s is None
    seen = set()
    for branch in document.branches:
        for point in branch.load_points:
            assert point.concurrency is not None
            latency_s = LATENCY_S[branch.target_name][(point.concurrency, point.payload_bin)]
            good = latency_s <= 1.5 and latency_s / 5 <= 0.3
            window_s = math.ceil(REQUESTS_PER_LEVEL / point.concurrency) * latency_s
            assert point.goodput_share == (1.0 if good else 0.0)
            assert point.goodput_per_s == pytest.approx(REQUESTS_PER_LEVEL / window_s if good else 0.0)
            seen.add(good)
    assert seen == {True, False}
    text = (tmp_path / "reports" / "report.md").read_text(encoding="utf-8")
    assert "goodput: TTFT <= 0.3 s, latency <= 1.5 s per request" in text
    assert "| SLO | Goodput |" in text
    # large, c=1, bin 50-500: 8 requests of 0.5 s one after another, all good: 2 per second
    assert "| 2/s (100.0%) |" in text


def test_no_goodput_column_without_a_per_request_slo(
    rendered: tuple[RunPlan, ResultDocument, Path],
) -> None:
    _, document, report_dir = rendered
    assert all(p.goodput_share is None for b in document.branches for p in b.load_points)
    assert (
        "Goodput"
        not in (report_dir / "report.md").read_text(encoding="utf-8").split("## Metric definitions")[0]
    )
