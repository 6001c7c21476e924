"""A runner killed mid-sweep: the report shows what it measured, what it did not, and what is incomplete."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from fmbench.plan import BranchOutcome, plan_suite
from fmbench.suite import validate_suite_data
from report.render import generate_report

REPO = Path(__file__).resolve().parents[2]


def test_a_stopped_runners_report_lists_the_load_points_not_measured(tmp_path: Path) -> None:
    data = {
        "name": "partial",
        "targets": [
            {
                "name": "emu",
                "platform": "emulator",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4},
            }
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 4},
            "max_prompts_per_bin": 3,
        },
        "load": {
            "concurrency": [1, 2, 3],
            "duration_s": 0.5,
            "request_timeout_s": 10,
            # The point cut short lasts milliseconds, so its CPU share can read as saturated on a busy
            # machine and add the client-bound mark; this test is about the incomplete mark alone.
            "client_check": {
                "max_schedule_lag_p99_s": 60,
                "max_runner_cpu_fraction": 64,
                "max_loop_lag_p99_s": 60,
            },
        },
    }
    plan = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-p")
    (spec,) = plan.branches
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmbench.runner_main",
            "--spec-json",
            spec.model_dump_json(exclude_unset=True),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:  # the signal comes as the second load point starts
            event = json.loads(line)
            if event["kind"] == "load_point_started" and event["load_point_index"] == 1:
                break
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    outcome_file = tmp_path / "outcomes" / "run_id=run-p" / f"branch_id={spec.branch_id}" / "outcome.json"
    outcome = BranchOutcome.model_validate_json(outcome_file.read_text())
    assert (outcome.status, outcome.load_points_completed) == ("partial", 1)

    result = generate_report(plan, [outcome], storage_root=str(tmp_path), report_dir=tmp_path / "report")

    (branch,) = result.branches
    assert (branch.status, branch.load_points_planned, branch.load_points_completed) == ("partial", 3, 1)
    assert [(p.concurrency, p.completed) for p in branch.load_points] == [(1, True), (2, False)]
    assert [(p.concurrency, p.payload_bin) for p in branch.load_points_not_measured] == [(3, "50-500")]
    saved = json.loads((tmp_path / "report" / "result.json").read_text())
    assert saved["branches"][0]["load_points_not_measured"] == [
        {"concurrency": 3, "request_rate_per_s": None, "payload_bin": "50-500"}
    ]
    report = (tmp_path / "report" / "report.md").read_text()
    missing = "1 of 3 planned load point(s) not measured: concurrency 3 on bin 50-500."
    assert f"**emu** (`{spec.branch_id}`): {missing}" in report
    rows = [line for line in report.splitlines() if line.startswith("| concurrency ")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| concurrency 1",
        "| concurrency 2 ‡",
        "| concurrency 3",
    ]
    assert rows[2].startswith("| concurrency 3 | 50-500 | **not measured** |")
    assert "**‡ Not completed**" in report
