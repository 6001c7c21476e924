"""The embedded run with failing branches, and `fmbench load` against a running emulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds

from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.local import run_suite
from fmbench.suite import validate_suite_data

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
                {
                    "name": "gone",
                    "platform": "openai",
                    "endpoint_url": f"http://127.0.0.1:{closed_port()}/v1",
                },
            ],
            "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 6}},
            "load": {
                "concurrency": [1, 2],
                "requests_per_level": 4,
                "request_timeout_s": 5,
                # Points of 4 fast requests last milliseconds: on a busy machine their CPU share could
                # read as saturated, and a client-bound point is never best. This test is about failures.
                "client_check": {
                    "max_schedule_lag_p99_s": 60,
                    "max_runner_cpu_fraction": 64,
                    "max_loop_lag_p99_s": 60,
                },
            },
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


def test_fmbench_load_sweeps_request_rates_for_a_duration(tmp_path: Path) -> None:
    # Constant arrivals 1/16 s and 1/32 s apart (exact in binary): after 2 warm-up arrivals the 0.5 s
    # window holds 8 arrivals at 16/s and 16 at 32/s.
    with EmulatorProcess(EmulatorSettings(port=0, model="served-model", **FAST)) as emulator:
        completed = subprocess.run(
            [
                sys.executable, "-m", "fmbench.cli", "load",
                "--url", f"{emulator.url}/v1",
                "--rate", "16,32",
                "--arrival", "constant",
                "--max-in-flight", "8",
                "--duration", "0.5",
                "--warmup", "2",
                "--max-tokens", "6",
                "--out", str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    table = [line for line in lines if line.startswith("│") and ("16/s" in line or "32/s" in line)]
    assert len(table) == 2
    assert all(line.rstrip(" │").endswith(("ok", "BOUND †")) for line in table)
    best = next(line for line in lines if line.startswith(("Best under the SLO", "No configuration met")))
    assert (
        best.startswith("No configuration met")
        or " at 16 requests/s: " in best
        or " at 32 requests/s: " in best
    )
    assert " on None " not in best
    records = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table().to_pylist()
    assert len(records) == (2 + 8) + (2 + 16)
    assert {(r["load_mode"], r["concurrency"], r["arrival"], r["max_in_flight"]) for r in records} == {
        ("rate", None, "constant", 8)
    }
    assert sorted({r["request_rate_per_s"] for r in records}) == [16.0, 32.0]
    measured = [r for r in records if r["phase"] == "measured"]
    assert len(measured) == 8 + 16
    result = json.loads((tmp_path / "result.json").read_text())
    (branch,) = result["branches"]
    assert [(p["request_rate_per_s"], p["requests"]) for p in branch["load_points"]] == [
        (16.0, 8),
        (32.0, 16),
    ]
    assert all(isinstance(p["client_bound"], bool) for p in branch["load_points"])
