"""Every request of a branch gets a prompt of its own while the dataset has them; then the repeat policy.

Runs the embedded run against emulator child processes over loopback, and reads what was sent from the
records (prompt ids) and from what the report and result.json say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from fmbench.config import SuiteValidationError
from fmbench.local import run_suite
from fmbench.suite import validate_suite_data

FAST = {"ttft_ms": 2, "itl_ms": 1, "output_tokens": 4}
LENIENT_CHECK = {"max_schedule_lag_p99_s": 60, "max_runner_cpu_fraction": 64, "max_loop_lag_p99_s": 60}


def write_dataset(folder: Path, count: int) -> Path:
    path = folder / "questions.jsonl"
    lines = [
        json.dumps({"id": f"q{i:03d}", "question": f"What is item number {i} of the list?", "answer": str(i)})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def suite_data(load: dict[str, Any], repeat: str = "cycle", targets: int = 1) -> dict[str, Any]:
    return {
        "name": "unique-prompts",
        "targets": [{"name": f"emu-{i}", "platform": "emulator", "emulator": FAST} for i in range(targets)],
        "workload": {
            "dataset": {"source": "questions.jsonl"},
            "prompt_template": "{question}",
            "bins": [{"min_tokens": 1, "max_tokens": 100}],
            "repeat": repeat,
            "seed": 7,
            "inference": {"max_new_tokens": 4},
        },
        "load": {**load, "request_timeout_s": 5, "client_check": LENIENT_CHECK},
        "slo": {"p95_latency_s": 5},
    }


def records_of(out: Path) -> list[dict[str, Any]]:
    table = ds.dataset(str(out / "records"), format="parquet", partitioning="hive").to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["branch_id"], r["send_epoch_s"]))


def test_200_requests_over_300_records_send_200_distinct_prompts_the_same_for_every_target(
    tmp_path: Path,
) -> None:
    write_dataset(tmp_path, 300)
    # 2 levels x (10 warm-up + 90 measured) = 200 requests per branch, all drawn from one deck
    load = {"concurrency": [1, 4], "warmup_requests": 10, "requests_per_level": 90}
    suite = validate_suite_data(suite_data(load, targets=2), base_dir=tmp_path)

    run = run_suite(suite, tmp_path / "out", suite_dir=tmp_path)

    assert [o.status for o in run.outcomes] == ["succeeded", "succeeded"]
    records = records_of(tmp_path / "out")
    by_branch: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_branch.setdefault(record["branch_id"], []).append(record)
    assert len(by_branch) == 2
    sent_ids = []
    for rows in by_branch.values():
        ids = [r["prompt_id"] for r in rows]
        assert len(ids) == 200
        assert len(set(ids)) == 200  # no request of the branch repeated a prompt
        assert set(ids) <= {f"q{i:03d}" for i in range(300)}
        sent_ids.append(sorted(ids))
    # the seeded order: both targets were sent the same 200 prompts
    assert sent_ids[0] == sent_ids[1]
    # the order is a shuffle, not the dataset's order
    first = by_branch[next(iter(by_branch))]
    assert [r["prompt_id"] for r in first[:10]] != [f"q{i:03d}" for i in range(10)]

    result = json.loads((tmp_path / "out" / "result.json").read_text())
    prompts = result["prompts"]
    assert prompts["source"] == "questions.jsonl"
    assert len(prompts["content_sha256"]) == 64
    assert prompts["prompts_per_bin"] == {"1-100": 300}
    assert prompts["reused_prompt_requests"] == 0
    assert prompts["measured_requests"] == 2 * 2 * 90
    # the runner read the prompts the plan materialized once for both branches
    assert (tmp_path / "out" / "datasets" / f"run_id={run.plan.run_id}" / "prompts.jsonl").is_file()
    assert all(spec.prompts_uri for spec in run.plan.branches)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"content SHA-256 `{prompts['content_sha256']}`" in report
    assert "Every measured request sent a prompt no earlier request of its branch had sent." in report


def test_cycle_reuses_prompts_past_the_dataset_and_the_report_says_what_that_flatters(tmp_path: Path) -> None:
    write_dataset(tmp_path, 30)
    load = {"concurrency": [2], "requests_per_level": 50}
    suite = validate_suite_data(suite_data(load, repeat="cycle"), base_dir=tmp_path)

    run = run_suite(suite, tmp_path / "out", suite_dir=tmp_path)

    assert run.outcomes[0].status == "succeeded"
    ids = [r["prompt_id"] for r in records_of(tmp_path / "out")]
    assert len(ids) == 50 and len(set(ids)) == 30
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["prompts"]["reused_prompt_requests"] == 20
    (note,) = [n for n in result["prompts"]["notes"] if "reused" in n]
    assert note.startswith("20 of 50 measured requests reused a prompt")
    assert "prefix caching" in note and "TTFT" in note
    assert "20 of 50 measured requests reused a prompt" in (tmp_path / "out" / "report.md").read_text()


def test_repeat_error_refuses_a_sweep_larger_than_the_dataset_at_validation(tmp_path: Path) -> None:
    write_dataset(tmp_path, 30)
    load = {"concurrency": [1, 2], "warmup_requests": 2, "requests_per_level": 20}

    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(suite_data(load, repeat="error"), base_dir=tmp_path)

    (problem,) = caught.value.problems
    assert problem.path == "workload.repeat"
    assert "bin 1-100 has 30 distinct prompt(s) and each branch sends it 44 requests" in problem.reason
    # the same sweep within the dataset is accepted
    validate_suite_data(suite_data({**load, "requests_per_level": 13}, repeat="error"), base_dir=tmp_path)


def test_repeat_error_stops_a_timed_sweep_before_sending_a_prompt_twice(tmp_path: Path) -> None:
    write_dataset(tmp_path, 12)
    # a timed window's request count is not known at validation: the runner stops at the 13th request
    load = {"concurrency": [2], "duration_s": 30}
    suite = validate_suite_data(suite_data(load, repeat="error"), base_dir=tmp_path)

    run = run_suite(suite, tmp_path / "out", suite_dir=tmp_path)

    (outcome,) = run.outcomes
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert outcome.reason.startswith("prompts: bin 1-100 has 12 distinct prompt(s) and request 13 needs")
    ids = [r["prompt_id"] for r in records_of(tmp_path / "out")]
    assert len(ids) == 12 and len(set(ids)) == 12
