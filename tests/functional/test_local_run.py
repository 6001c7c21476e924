"""The embedded run with failing branches, and `fmbench load` against a running emulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from fmbench.config import validate_suite_data
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.server import EmulatorSettings
from fmbench.local import run_suite

FAST = {"ttft_ms": 10, "itl_ms": 2, "output_tokens": 6}


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_failing_and_unreachable_branches_do_not_stop_the_others(tmp_path: Path) -> None:
    suite = validate_suite_data(
        {
            "name": "failures",
            "targets": [
                {"name": "healthy", "platform": "emulator", "emulator": FAST},
                {"name": "broken", "platform": "emulator", "emulator": {**FAST, "error_500_rate": 1.0}},
                {"name": "gone", "platform": "openai", "endpoint_url": f"http://127.0.0.1:{closed_port()}/v1"},
            ],
            "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 6}},
            "load": {"concurrency": [1, 2], "requests_per_level": 4, "request_timeout_s": 5},
            "slo": {"p95_latency_s": 5},
        }
    )
    run = run_suite(suite, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "partial"
    branches = {b["target_name"]: b for b in result["branches"]}
    assert branches["healthy"]["status"] == "succeeded"
    assert branches["healthy"]["records_written"] == 8
    assert branches["broken"]["status"] == "failed"
    assert "all 4 requests at concurrency 1, bin 50-500 failed: http_5xx" in branches["broken"]["reason"]
    assert branches["broken"]["records_written"] == 4  # what it measured before failing stays
    assert branches["gone"]["status"] == "failed"
    assert branches["gone"]["reason"].startswith("endpoint unreachable")
    assert branches["gone"]["records_written"] == 0
    table = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 12
    assert sorted(set(table.column("target_name").to_pylist())) == ["broken", "healthy"]
    report = (tmp_path / "report.md").read_text()
    assert "endpoint unreachable" in report
    assert "failed: http\\_5xx (HTTP 500" in report  # Markdown-escaped in the source ...
    assert "failed: http_5xx (HTTP 500" in (tmp_path / "report.html").read_text()  # ... plain when rendered
    assert result["best"]["experiment_name"] == "healthy"
    assert {o.status for o in run.outcomes} == {"succeeded", "failed"}


def test_fmbench_load_benchmarks_an_openai_endpoint_and_prints_a_summary(tmp_path: Path) -> None:
    with EmulatorProcess(EmulatorSettings(port=0, model="served-model", **FAST)) as emulator:
        completed = subprocess.run(
            [
                sys.executable, "-m", "fmbench.cli", "load",
                "--url", f"{emulator.url}/v1",
                "--concurrency", "1,4",
                "--requests", "12",
                "--max-tokens", "6",
                "--bins", "50-500,500-2000",
                "--out", str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Summary per load point" in completed.stdout
    summary_lines = [line for line in completed.stdout.splitlines() if "50-500" in line or "500-2000" in line]
    assert len([line for line in summary_lines if line.startswith("│")]) >= 4
    table = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 2 * 2 * 12
    assert set(table.column("model").to_pylist()) == {"served-model"}  # discovered from /v1/models
    assert set(table.column("completion_tokens").to_pylist()) == {6}
    assert set(table.column("token_source").to_pylist()) == {"server"}
