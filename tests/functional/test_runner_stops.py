"""The runner container's SIGTERM (ECS stopping a task) at the moments where a record could slip through:
while a part is being written and while the outcome is being written (between load points:
``test_runner_main.py::test_sigterm_mid_sweep_keeps_finished_load_points_and_writes_a_stopped_outcome``)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fmbench import branch, records, runner_main
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

FAST = {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4}
WAIT_S = 60.0


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with EmulatorProcess(EmulatorSettings(port=0, model="m", **FAST)) as emulator:
        yield emulator.url


def make_spec(root: Path, url: str) -> BranchSpec:
    data = {
        "name": "stops",
        "targets": [{"name": "ext", "platform": "openai", "endpoint_url": f"{url}/v1", "model": "m"}],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 4}},
        "load": {"concurrency": [1, 2, 3], "requests_per_level": 6, "request_timeout_s": 10},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(root), run_id="r").branches
    return spec


def rows_on_disk(root: Path) -> int:
    return sum(pq.read_table(part).num_rows for part in root.glob("records/run_id=r/*/*.parquet"))


def run(
    spec: BranchSpec, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    code = runner_main.main(["--spec-json", spec.model_dump_json(exclude_unset=True)], environ={})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    root = Path(spec.storage_root)
    (path,) = root.glob("outcomes/run_id=r/*/outcome.json")
    return code, json.loads(path.read_text()), lines


def stop_seen(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the runner's SIGTERM handler has run (and so cancelled the sweep)."""
    seen = threading.Event()
    handle = runner_main._StopRequest.__call__

    def handled(self: runner_main._StopRequest, signum: int) -> None:
        handle(self, signum)
        seen.set()

    monkeypatch.setattr(runner_main._StopRequest, "__call__", handled)
    return seen


def test_sigterm_while_a_part_is_written_keeps_the_part_and_counts_it(
    tmp_path: Path, emulator_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = stop_seen(monkeypatch)
    write: Callable[..., None] = records.RecordWriter._write_part
    parts: list[int] = []

    def write_slowly(self: records.RecordWriter, table: Any, path: str) -> None:
        parts.append(table.num_rows)
        if len(parts) == 2:  # the second load point's part: the stop lands while it is being written
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen.wait(WAIT_S), "the runner did not handle SIGTERM"
        write(self, table, path)

    monkeypatch.setattr(records.RecordWriter, "_write_part", write_slowly)
    spec = make_spec(tmp_path, emulator_url)
    code, outcome, lines = run(spec, capsys)
    assert code == runner_main.EXIT_OUTCOME_WRITTEN
    assert outcome["status"] == "partial"
    assert outcome["reason"].startswith("stopped by SIGTERM")
    assert parts[:2] == [6, 6]
    on_disk = rows_on_disk(tmp_path)
    assert on_disk >= 12  # both parts, the one written while the stop went on included
    assert outcome["records_written"] == outcome["requests_attempted"] == on_disk
    assert [line["kind"] for line in lines if line["kind"] == "stop_requested"] == ["stop_requested"]


def test_sigterm_while_the_outcome_is_written_still_writes_the_final_outcome(
    tmp_path: Path, emulator_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = stop_seen(monkeypatch)
    write = branch.BranchStorage.write_outcome

    def write_after_a_stop(self: branch.BranchStorage, outcome: Any, *, reserve: bool = False) -> None:
        if not reserve:  # the final outcome, not the placeholder
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen.wait(WAIT_S), "the runner did not handle SIGTERM"
        write(self, outcome, reserve=reserve)

    monkeypatch.setattr(branch.BranchStorage, "write_outcome", write_after_a_stop)
    spec = make_spec(tmp_path, emulator_url)
    code, outcome, lines = run(spec, capsys)
    assert code == runner_main.EXIT_OUTCOME_WRITTEN
    assert outcome["status"] == "succeeded"
    assert outcome["records_written"] == outcome["requests_attempted"] == rows_on_disk(tmp_path) == 18
    (stop,) = [line for line in lines if line["kind"] == "stop_requested"]
    assert "the sweep is over" in stop["message"]
    assert [line["kind"] for line in lines][-2:] == ["outcome_written", "runner_exit"]
