"""End to end: a scaled-down demo suite through `fmbench run`, checked through its report and result.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from fmbench.emulator.profiles import PROFILES
from report.result import ResultDocument

REPO = Path(__file__).resolve().parents[2]
SECTIONS = (
    "## Best configuration under the SLO",
    "## Branches",
    "## Results per load point",
    "## Metric definitions",
)
BEST_TABLE_FIELDS = (
    "experiment_name",
    "payload_file",
    "instance_type",
    "concurrency",
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
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The demo's three emulated instances, two bins, concurrency 4 and 16 (1 is dropped for time)."""
    work = tmp_path_factory.mktemp("demo")
    suite = yaml.safe_load((REPO / "examples/local-demo.yaml").read_text())
    suite["load"]["concurrency"] = [4, 16]
    suite["load"]["warmup_requests"] = 1
    (work / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    out = work / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "fmbench.cli", "run", str(work / "suite.yaml"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out, completed


@pytest.mark.e2e
def test_report_files_and_sections(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = demo_run
    for name in ("report.md", "report.html", "result.json", "summary.parquet"):
        assert (out / name).stat().st_size > 0, name
    charts = [
        p for p in out.glob("*.png") if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    ]
    assert len(charts) >= 3, [p.name for p in out.glob("*.png")]
    markdown = (out / "report.md").read_text()
    positions = [markdown.index(heading) for heading in SECTIONS]
    assert positions == sorted(positions)
    for field in BEST_TABLE_FIELDS:
        assert field in markdown, field
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    # the demo is judged: both accuracy charts and the section
    for chart in ("majority_accuracy.png", "accuracy_vs_prompt_length.png"):
        assert chart in [p.name for p in charts], chart
    assert "## Accuracy" in markdown
    assert 'src="http' not in html


@pytest.mark.e2e
def test_best_configuration_is_what_the_profiles_imply(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """g5-xlarge queues past the latency SLO at 16; g5-2xlarge at 16 is the cheapest within it, but its
    quantized model falls below the accuracy floor; so g5-12xlarge at 16, dearer per hour, wins."""
    out, completed = demo_run
    result = ResultDocument.model_validate(json.loads((out / "result.json").read_text()))
    assert result.status == "succeeded"
    assert result.headline_bin == "500-2000"
    assert result.slo.min_accuracy is not None
    assert result.best is not None
    assert (result.best.experiment_name, result.best.instance_type, result.best.concurrency) == (
        "g5-12xlarge",
        "ml.g5.12xlarge",
        16,
    )
    assert {(b.payload_file, b.experiment_name, b.concurrency) for b in result.best_per_bin} == {
        ("50-500", "g5-12xlarge", 16),
        ("500-2000", "g5-12xlarge", 16),
    }
    by_name = {b.target_name: b for b in result.branches}
    assert set(by_name) == {"g5-xlarge", "g5-2xlarge", "g5-12xlarge"}
    xlarge_at_16 = [p for p in by_name["g5-xlarge"].load_points if p.concurrency == 16]
    assert xlarge_at_16 and not any(p.meets_slo for p in xlarge_at_16)
    # g5-2xlarge: within the latency SLO at 16 and cheaper per transaction, but not accurate enough
    two_at_16 = {p.payload_bin: p for p in by_name["g5-2xlarge"].load_points if p.concurrency == 16}
    twelve_at_16 = {p.payload_bin: p for p in by_name["g5-12xlarge"].load_points if p.concurrency == 16}
    assert two_at_16["500-2000"].meets_slo
    assert two_at_16["500-2000"].price_per_txn_usd < twelve_at_16["500-2000"].price_per_txn_usd  # type: ignore[operator]
    accuracy = {name: branch.accuracy for name, branch in by_name.items()}
    assert all(a is not None and a.judged_prompts > 0 for a in accuracy.values())
    assert accuracy["g5-2xlarge"].meets_floor is False  # type: ignore[union-attr]
    assert accuracy["g5-12xlarge"].meets_floor is True  # type: ignore[union-attr]
    assert "Best under the SLO" in completed.stdout
    assert "g5-12xlarge on ml.g5.12xlarge at concurrency 16" in completed.stdout
    assert str(out / "report.md") in completed.stdout


@pytest.mark.e2e
def test_every_request_attempted_is_a_record(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = demo_run
    result = json.loads((out / "result.json").read_text())
    table = ds.dataset(out / "records", format="parquet", partitioning="hive").to_table()
    # 3 branches x 2 levels x 2 bins x (16 measured + 1 warm-up)
    assert table.num_rows == 3 * 2 * 2 * 17
    assert sum(b["records_written"] for b in result["branches"]) == table.num_rows
    assert sum(b["requests_attempted"] for b in result["branches"]) == table.num_rows
    assert table.column("phase").to_pylist().count("warmup") == 3 * 2 * 2


@pytest.mark.e2e
def test_the_report_has_per_token_figures_the_server_view_and_the_suite(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Issue 15's report pieces, as the demo shows them: ITL percentiles, per-user speed and prices per 1M
    tokens for every measured point, the emulators' scraped /metrics beside the client, the suite itself."""
    out, _ = demo_run
    markdown = (out / "report.md").read_text()
    result = json.loads((out / "result.json").read_text())
    for heading in ("## Inter-token latency and prices per token", "## Server-side metrics", "## Suite"):
        assert heading in markdown, heading
    suite_part = markdown[markdown.index("## Suite") :]
    assert "name: local-demo" in suite_part
    assert "name: local-demo" in result["suite_yaml"]
    assert "<details" in (out / "report.html").read_text()
    points = [p for b in result["branches"] for p in b["load_points"]]
    assert len(points) == 3 * 2 * 2
    for p in points:
        assert 0 < p["itl_p50_s"] <= p["itl_p95_s"] <= p["itl_p99_s"], p
        assert p["output_tokens_per_s_per_user"] > 0, p
        assert p["price_per_1m_input_tokens_usd"] > 0, p
        assert p["price_per_1m_output_tokens_usd"] > 0, p
        # the emulator's /metrics, scraped during the point
        assert p["server"] is not None, p
        assert p["server"]["running_max"] is not None and p["server"]["running_max"] <= p["concurrency"], p
    # The server's own batch bound: a target never runs more requests than its profile's batch (requests in
    # flight outside the batch would count as running too; the demo has no hangs), and never queues more
    # than the load had in flight.
    targets = {t["name"]: t["emulator"]["profile"] for t in yaml.safe_load(result["suite_yaml"])["targets"]}
    for b in result["branches"]:
        max_batch = PROFILES[targets[b["target_name"]]].max_batch
        for p in b["load_points"]:
            assert p["server"]["running_max"] <= min(p["concurrency"], max_batch), (b["target_name"], p)
            assert p["server"]["waiting_max"] <= p["concurrency"], p
