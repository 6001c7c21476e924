"""Regression verdicts end to end: emulated runs under one root, `fmbench compare` and `fmbench history`."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml

from fmbench.cli import EXIT_INVALID, EXIT_OK, EXIT_REGRESSED, main
from report.history import query_results, suite_history

# Requests of ~0.2 s and ~0.4 s: long enough that a busy machine's few milliseconds of jitter stay far under
# the 10 % thresholds, so the identical pair (fast, fast) is not a false alarm of the machine's load.
FAST = {"ttft_ms": 100, "itl_ms": 20, "output_tokens": 6}
SLOW = {"ttft_ms": 200, "itl_ms": 40, "output_tokens": 6}


def write_suite(folder: Path, timing: dict[str, float], name: str = "nightly") -> Path:
    suite = {
        "name": name,
        "targets": [{"name": "model-a", "platform": "emulator", "emulator": timing}],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 6}},
        "load": {
            "concurrency": [2],
            "requests_per_level": 24,
            # Tiny points on a busy machine: the client check is not what this test is about.
            "client_check": {
                "max_schedule_lag_p99_s": 60,
                "max_runner_cpu_fraction": 64,
                "max_loop_lag_p99_s": 60,
            },
        },
        "slo": {"p95_latency_s": 5},
        "regression": {"resamples": 500},
    }
    path = folder / f"{name}-{timing['ttft_ms']:g}.yaml"
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Fast, then slow (a regression), then fast again (the first one's configuration) under one root."""
    folder = tmp_path_factory.mktemp("regression")
    root = folder / "results"
    codes = []
    for run_id, timing in (("r1-fast", FAST), ("r2-slow", SLOW), ("r3-fast", FAST)):
        codes.append(main(["run", str(write_suite(folder, timing)), "--out", str(root), "--run-id", run_id]))
        assert (root / "runs" / f"run_id={run_id}.parquet").is_file()
    return root, codes


def test_first_run_has_no_baseline_and_a_slower_second_run_regresses(
    three_runs: tuple[Path, list[int]],
) -> None:
    root, codes = three_runs
    assert codes == [EXIT_OK, EXIT_REGRESSED, EXIT_OK]
    history = suite_history(str(root), "nightly")
    assert list(history["run_id"]) == ["r1-fast", "r2-slow", "r3-fast"]
    assert list(history["verdict"]) == ["no_baseline", "regressed", "pass"]
    assert list(history["baseline_run_id"].fillna("-")) == ["-", "r1-fast", "r2-slow"]
    assert "latency_p95" in history["regressed_metrics"].iloc[1].split(",")
    # result.json at the root is the last run's: compared with the slow run, it is faster, so it passes.
    document = json.loads((root / "result.json").read_text())
    assert document["regression"]["verdict"] == "pass"
    assert document["regression"]["baseline_run_id"] == "r2-slow"
    improved = {f["metric"] for f in document["regression"]["findings"] if f["verdict"] == "improved"}
    assert "latency_p95" in improved
    assert "Bonferroni" in (root / "comparison.md").read_text()


def test_compare_exit_codes(three_runs: tuple[Path, list[int]], tmp_path: Path) -> None:
    root = str(three_runs[0])
    out = tmp_path / "cmp"
    assert main(["compare", "r1-fast", "r2-slow", "--root", root, "--out", str(out)]) == EXIT_REGRESSED
    document = json.loads((out / "comparison.json").read_text())
    assert document["verdict"] == "regressed" and document["candidate_run_id"] == "r2-slow"
    regressed = {f["metric"] for f in document["findings"] if f["verdict"] == "regressed"}
    assert {"latency_p95", "ttft_p95"} <= regressed
    assert (out / "comparison.png").is_file() and (out / "comparison.html").is_file()
    assert "REGRESSED" in (out / "comparison.md").read_text().upper()
    # The same configuration run twice is not a regression.
    assert main(["compare", "r1-fast", "r3-fast", "--root", root, "--out", str(tmp_path / "same")]) == EXIT_OK
    # Bad input: unknown run, the same run twice, a confidence out of range.
    assert main(["compare", "r1-fast", "nothing", "--root", root]) == EXIT_INVALID
    assert main(["compare", "r1-fast", "r1-fast", "--root", root]) == EXIT_INVALID
    assert main(["compare", "r1-fast", "r2-slow", "--root", root, "--confidence", "2"]) == EXIT_INVALID


def test_history_command_writes_trend_report(three_runs: tuple[Path, list[int]], tmp_path: Path) -> None:
    root = str(three_runs[0])
    assert main(["history", "nightly", "--root", root, "--out", str(tmp_path)]) == EXIT_OK
    text = (tmp_path / "history.md").read_text()
    assert all(f"| {run_id} |" in text for run_id in ("r1-fast", "r2-slow", "r3-fast"))
    assert "| r2-slow |" in text and "**regressed** (" in text
    assert (tmp_path / "history.png").stat().st_size > 0
    assert main(["history", "no-such-suite", "--root", root, "--out", str(tmp_path)]) == EXIT_INVALID


def test_cross_run_sql_matches_numpy(three_runs: tuple[Path, list[int]]) -> None:
    root = three_runs[0]
    frame = query_results(str(root), "suite_latency_history", suite_name="nightly")
    records = ds.dataset(root / "records", format="parquet", partitioning="hive").to_table().to_pandas()
    measured = records[records["phase"] == "measured"]
    assert list(frame["run_id"]) == ["r1-fast", "r2-slow", "r3-fast"]
    for row in frame.to_dict("records"):
        rows = measured[measured["run_id"] == row["run_id"]]
        ok = rows[rows["status"] == "ok"]
        assert row["requests"] == len(rows)
        assert row["error_rate"] == pytest.approx(1 - len(ok) / len(rows))
        assert row["latency_p95_s"] == pytest.approx(float(np.quantile(ok["latency_s"], 0.95)), rel=1e-12)
    assert query_results(str(root), "suite_latency_history", suite_name="other").empty


def test_the_verdict_is_a_block_of_the_runs_report(three_runs: tuple[Path, list[int]]) -> None:
    root = three_runs[0]
    slow = (root / "reports" / "run_id=r2-slow" / "report.md").read_text()
    block = slow.split("## Regression verdict", 1)[1].split("\n## ", 1)[0]
    assert "**Verdict: REGRESSED** against baseline run `r1-fast`" in block
    assert "| model-a |" in block and "| latency_p95 |" in block  # each regressed metric, a row
    assert "Regression verdict" in (root / "reports" / "run_id=r2-slow" / "report.html").read_text()
    # The block stands before the report's first section; the first run says it had no baseline.
    assert slow.index("## Regression verdict") < slow.index("## Best configuration")
    first = (root / "reports" / "run_id=r1-fast" / "report.md").read_text()
    assert "**Verdict: NO_BASELINE**" in first
    assert "**Verdict: PASS** against baseline run `r2-slow`" in (root / "report.md").read_text()


@pytest.fixture
def results_bucket(
    three_runs: tuple[Path, list[int]], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The three runs' records and plans uploaded under s3://results/nightly/, as the cloud keeps them."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_CONFIG_FILE": "/nonexistent/fmbench-test-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/fmbench-test-credentials",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    root = three_runs[0]
    runs = (root / "runs").glob("*.parquet")
    for path in [*(root / "records").rglob("*.parquet"), *(root / "specs").rglob("plan.json"), *runs]:
        s3.upload_file(str(path), "results", f"nightly/{path.relative_to(root).as_posix()}")
    return "s3://results/nightly"


def test_compare_run_ids_in_a_results_bucket(
    results_bucket: str, three_runs: tuple[Path, list[int]], tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", "r1-fast", "r2-slow", "--root", results_bucket, "--out", str(out)])
    assert code == EXIT_REGRESSED
    document = json.loads((out / "comparison.json").read_text())
    assert (document["baseline_run_id"], document["candidate_run_id"]) == ("r1-fast", "r2-slow")
    assert "latency_p95" in document["regressed_metrics"]
    # The same two runs compared locally give the very same findings (same SQL, same seed).
    local = tmp_path / "local"
    local_root = str(three_runs[0])
    assert (
        main(["compare", "r1-fast", "r2-slow", "--root", local_root, "--out", str(local)]) == EXIT_REGRESSED
    )
    assert json.loads((local / "comparison.json").read_text())["findings"] == document["findings"]
    faster = ["compare", "r2-slow", "r3-fast", "--root", results_bucket, "--out", str(tmp_path / "faster")]
    assert main(faster) == EXIT_OK
    # Bad input: a run id with no records in the bucket, the same run twice, a folder path for an id.
    assert main(["compare", "r1-fast", "nothing", "--root", results_bucket]) == EXIT_INVALID
    assert main(["compare", "r1-fast", "r1-fast", "--root", results_bucket]) == EXIT_INVALID
    assert main(["compare", "r1-fast", "a/b", "--root", results_bucket]) == EXIT_INVALID
    assert main(["compare", "r1-fast", "r2-slow", "--root", "s3://no-such-bucket/x"]) == EXIT_INVALID


def test_history_of_a_results_bucket(
    results_bucket: str, three_runs: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """The runs table read from S3 gives the same history and report as the same runs on a local root."""
    out = tmp_path / "bucket"
    assert main(["history", "nightly", "--root", results_bucket, "--out", str(out)]) == EXIT_OK
    local = tmp_path / "local"
    assert main(["history", "nightly", "--root", str(three_runs[0]), "--out", str(local)]) == EXIT_OK
    assert (out / "history.md").read_text() == (local / "history.md").read_text()
    assert "| r2-slow |" in (out / "history.md").read_text()
    assert main(["history", "no-such-suite", "--root", results_bucket, "--out", str(out)]) == EXIT_INVALID
    assert main(["history", "nightly", "--root", "s3://no-such-bucket/x"]) == EXIT_INVALID
