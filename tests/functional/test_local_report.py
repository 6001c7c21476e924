"""Locally: the budget refuses before anything runs, a run saves its plan and outcomes, and
`fmbench report RUN --root DIR` renders the report again from them alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fmbench import cli
from fmbench.plan import BranchOutcome, RunPlan

RUN_ID = "run-local"


def write_suite(folder: Path, **overrides: Any) -> Path:
    data = {
        "name": "local-report",
        "targets": [
            {
                "name": "emu",
                "platform": "emulator",
                "instance_type": "ml.g5.2xlarge",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4},
            }
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 4},
            "max_prompts_per_bin": 3,
        },
        "load": {"concurrency": [1, 2], "requests_per_level": 3, "request_timeout_s": 5},
        **overrides,
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_local_run_can_be_reported_again_from_its_saved_plan_and_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", str(write_suite(tmp_path)), "--out", str(out), "--run-id", RUN_ID]) == 0
    first = json.loads((out / "result.json").read_text())
    plan = RunPlan.model_validate_json((out / "specs" / f"run_id={RUN_ID}" / "plan.json").read_text())
    (spec,) = plan.branches
    outcome = BranchOutcome.model_validate_json(
        (out / "outcomes" / f"run_id={RUN_ID}" / f"branch_id={spec.branch_id}" / "outcome.json").read_text()
    )
    assert (outcome.status, outcome.records_written) == ("succeeded", 6)

    cost = first["cost"]
    assert cost["emulated"] is True
    assert plan.cost_estimate is not None
    assert cost["estimate_usd"] == plan.cost_estimate.total_usd
    (actual,) = cost["actual_parts"]
    assert outcome.started_epoch_s is not None and outcome.ended_epoch_s is not None
    wall_s = outcome.ended_epoch_s - outcome.started_epoch_s
    assert actual["basis"] == "emulated: branch wall time x the emulated instance's price"
    assert actual["usd"] == pytest.approx(wall_s / 3600 * 1.515)
    assert cost["actual_usd"] <= cost["estimate_usd"]
    assert "## Cost" in (out / "report.md").read_text()

    for name in ("report.md", "report.html", "result.json", "summary.parquet"):
        (out / name).unlink()  # as if the report step had failed
    capsys.readouterr()
    again_dir = tmp_path / "again"
    assert cli.main(["report", RUN_ID, "--root", str(out), "--out", str(again_dir)]) == 0
    assert f"Run {RUN_ID}: succeeded; 2 load point(s) measured, 0 not measured" in capsys.readouterr().out
    again = json.loads((again_dir / "result.json").read_text())
    ignored = ("generated_at", "artifacts")
    assert {k: v for k, v in again.items() if k not in ignored} == {
        k: v for k, v in first.items() if k not in ignored
    }
    assert (again_dir / "report.html").exists()

    assert cli.main(["report", "no-such-run", "--root", str(out)]) == 1
    assert "no saved run 'no-such-run'" in capsys.readouterr().err


def test_validate_and_run_refuse_a_suite_over_its_budget_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(tmp_path, budget={"max_usd": 0.001})
    out = tmp_path / "out"

    assert cli.main(["validate", str(suite)]) == 2
    validated = capsys.readouterr()
    assert cli.main(["run", str(suite), "--out", str(out)]) == 2
    refused = capsys.readouterr()

    for captured in (validated, refused):
        assert "Estimated cost, an upper bound" in captured.out
        assert "over budget, nothing was run: the estimated cost $" in captured.err
        assert "exceeds budget.max_usd $0.001" in captured.err
        assert "emu (emu-" in captured.err and "(emulated: nothing is billed)" in captured.err
    assert not out.exists()
    assert cli.main(["validate", str(write_suite(tmp_path, budget={"max_usd": 5}))]) == 0
