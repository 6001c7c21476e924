"""The quality pass (evaluation.quality_pass): after a branch's load, the judged prompts are sent once more at
concurrency 1 and temperature 0 against the emulator over loopback, written as phase 'quality' records that
no latency figure reads, and judged instead of the answers under load."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fmbench.cli import main
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.evaluation.run import EvaluationError, evaluate_run_async
from fmbench.local import run_branches, save_plan
from fmbench.payloads import prepare_workload
from fmbench.plan import BranchOutcome, RunPlan, plan_suite
from fmbench.prompt_store import materialize_plan
from fmbench.runner import ProgressEvent, run_branch
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from report.query import accuracy_figures, compute_metrics, request_samples, ttft_samples
from report.render import generate_report
from report.result import ResultDocument

FAST = {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 6}
CAP = 6  # evaluation.max_answers_per_bin
REQUESTS = 10
JUDGE = {"name": "j", "target": {"name": "jt", "platform": "emulator", "model": "jm", "emulator": FAST}}


def _suite(quality_pass: bool, targets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "quality",
        "targets": targets
        or [{"name": "emu", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            # 'tiny' has fewer distinct prompts than the cap, 'rest' more
            "bins": [
                {"min_tokens": 1, "max_tokens": 42, "name": "tiny"},
                {"min_tokens": 42, "max_tokens": 100_000, "name": "rest"},
            ],
            "inference": {"max_new_tokens": 12, "temperature": 0.7},
        },
        "load": {"concurrency": [1, 3], "requests_per_level": REQUESTS, "warmup_requests": 1},
        "evaluation": {"judges": [JUDGE], "max_answers_per_bin": CAP, "quality_pass": quality_pass},
    }


def _records(root: Path) -> list[dict[str, Any]]:
    return ds.dataset(root / "records", format="parquet", partitioning="hive").to_table().to_pylist()


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        return dict(json.load(response))


def _distinct_with_reference(spec: BranchSpec) -> dict[str, int]:
    prepared = prepare_workload(spec.workload, None)
    return {
        label: len({p.record_id for p in prompts if p.reference_answers})
        for label, prompts in prepared.by_bin.items()
    }


def test_a_branch_sends_each_judged_prompt_once_at_concurrency_1_and_temperature_0_after_its_load(
    tmp_path: Path,
) -> None:
    plan = plan_suite(validate_suite_data(_suite(True)), storage_root=str(tmp_path), run_id="q1")
    (spec,) = plan.branches
    assert spec.quality_pass is not None and spec.quality_pass.max_answers_per_bin == CAP

    async def go() -> tuple[Any, dict[str, Any]]:
        async with running_emulator(EmulatorSettings(**spec.target.emulator.model_dump())) as url:  # type: ignore[union-attr]
            outcome = await run_branch(spec, endpoint_url=url)
            return outcome, await asyncio.to_thread(_health, url)

    outcome, health = asyncio.run(go())
    assert outcome.status == "succeeded"
    rows = _records(tmp_path)
    quality = [r for r in rows if r["phase"] == "quality"]
    load = [r for r in rows if r["phase"] != "quality"]
    distinct = _distinct_with_reference(spec)
    assert 0 < distinct["tiny"] < CAP < distinct["rest"]
    per_bin = {label: [r for r in quality if r["payload_bin"] == label] for label in ("tiny", "rest")}
    assert {label: len(found) for label, found in per_bin.items()} == {
        label: min(count, CAP) for label, count in distinct.items()
    }
    for found in per_bin.values():  # one request per prompt
        assert len({r["prompt_id"] for r in found}) == len(found)
    assert all(r["status"] == "ok" and r["concurrency"] == 1 for r in quality)
    assert len({r["request_id"] for r in rows}) == len(rows)  # quality ids do not clash with the c1 point's
    assert outcome.records_written == outcome.requests_attempted == len(rows)
    assert outcome.load_points_completed == outcome.load_points_planned == 4  # the pass is no load point
    # after the load: every quality request was sent after the last measured one ended
    assert min(r["send_epoch_s"] for r in quality) >= max(r["end_epoch_s"] for r in load)
    # one at a time: each quality request was sent after the previous one ended
    ordered = sorted(quality, key=lambda r: r["send_epoch_s"])
    assert all(b["send_epoch_s"] >= a["end_epoch_s"] for a, b in itertools.pairwise(ordered))
    # what the emulator received: the load at the workload's temperature, the quality pass at 0
    assert health["temperatures"] == {"0.7": len(load), "0": len(quality)}
    assert all(r["max_tokens_requested"] == 12 for r in quality)  # max_new_tokens kept


def test_every_latency_figure_is_the_same_with_or_without_the_quality_rows(tmp_path: Path) -> None:
    plan = plan_suite(validate_suite_data(_suite(True)), storage_root=str(tmp_path / "with"), run_id="q2")
    outcomes = asyncio.run(run_branches(plan, 1))
    assert [o.status for o in outcomes] == ["succeeded"]
    table = ds.dataset(tmp_path / "with" / "records", format="parquet", partitioning="hive").to_table()
    assert "quality" in set(table.column("phase").to_pylist())
    # the same records without the quality rows, in the same layout
    kept = ds.dataset(tmp_path / "with" / "records", format="parquet").to_table(
        filter=ds.field("phase") != "quality"
    )
    assert 0 < kept.num_rows < table.num_rows
    (spec,) = plan.branches
    folder = tmp_path / "without" / "records" / "run_id=q2" / f"branch_id={spec.branch_id}"
    folder.mkdir(parents=True)
    pq.write_table(kept, folder / "part-00000.parquet")

    for query in (compute_metrics, ttft_samples, request_samples):
        with_rows = query(str(tmp_path / "with"), "q2")
        without = query(str(tmp_path / "without"), "q2")
        assert len(with_rows) > 0
        sort = [c for c in ("branch_id", "request_id", "concurrency", "payload_bin") if c in with_rows]
        assert (
            with_rows.sort_values(sort)
            .reset_index(drop=True)
            .equals(without.sort_values(sort).reset_index(drop=True))
        ), query.__name__


def _finished_run(root: Path, quality_pass: bool) -> tuple[RunPlan, list[BranchOutcome]]:
    plan = plan_suite(validate_suite_data(_suite(quality_pass)), storage_root=str(root), run_id="r1")
    plan = materialize_plan(plan)
    save_plan(plan, str(root))
    outcomes = asyncio.run(run_branches(plan, 1))
    assert [o.status for o in outcomes] == ["succeeded"]
    return plan, outcomes


def _report(plan: RunPlan, outcomes: list[BranchOutcome], root: Path) -> tuple[ResultDocument, str]:
    document = generate_report(plan, outcomes, str(root), root / "report")
    return document, (root / "report" / "report.md").read_text(encoding="utf-8")


def _judge(plan: RunPlan, root: Path, answers_from: Any = None) -> list[dict[str, Any]]:
    async def go() -> None:
        async with running_emulator(EmulatorSettings(model="jm", judge_error_rate=0.0, **FAST)) as url:
            await evaluate_run_async(plan, str(root), judge_urls={"j": url}, answers_from=answers_from)

    asyncio.run(go())
    return pq.read_table(root / "evaluations").to_pylist()


def test_judging_takes_the_quality_answers_when_on_and_the_load_answers_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, outcomes = _finished_run(tmp_path / "on", True)
    records = _records(tmp_path / "on")
    quality_ids = {r["request_id"] for r in records if r["phase"] == "quality"}
    measured_ids = {r["request_id"] for r in records if r["phase"] == "measured"}

    judged = _judge(plan, tmp_path / "on")
    assert {r["request_id"] for r in judged} == quality_ids  # every quality answer, nothing else
    assert {r["answer_source"] for r in judged} == {"quality_pass"}
    figures = accuracy_figures(str(tmp_path / "on"), "r1")
    assert figures is not None
    shown = figures.loc[figures["figure"].isin(["candidate", "panel"]), "answer_source"]
    assert set(shown) == {"quality_pass"}
    document, text = _report(plan, outcomes, tmp_path / "on")
    (branch,) = document.branches
    assert branch.accuracy is not None and branch.accuracy.answer_source == "quality_pass"
    assert "answers judged are those of a quality pass" in text
    assert "concurrency 1) at temperature 0" in text

    # the same run judged on its answers under load (fmbench evaluate --answers load)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "on"), "--run-id", "r1", "--answers", "load"]) == 0
    assert "answer(s) under load of run r1" in capsys.readouterr().out
    again = pq.read_table(tmp_path / "on" / "evaluations").to_pylist()
    assert {r["request_id"] for r in again} <= measured_ids
    assert {r["answer_source"] for r in again} == {"load"}
    document, text = _report(plan, outcomes, tmp_path / "on")
    assert document.branches[0].accuracy is not None
    assert document.branches[0].accuracy.answer_source == "load"
    assert "answers judged are answers under load" in text

    off, _ = _finished_run(tmp_path / "off", False)
    assert not any(r["phase"] == "quality" for r in _records(tmp_path / "off"))
    judged_off = _judge(off, tmp_path / "off")
    assert {r["answer_source"] for r in judged_off} == {"load"}
    with pytest.raises(EvaluationError, match="ran no quality pass"):
        _judge(off, tmp_path / "off", "quality_pass")


def test_a_failed_quality_pass_leaves_the_load_and_nothing_to_judge(tmp_path: Path) -> None:
    emulated = {"platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}
    targets = [{"name": "fine", **emulated}, {"name": "gone", **emulated}]
    plan = plan_suite(validate_suite_data(_suite(True, targets)), storage_root=str(tmp_path), run_id="r1")
    plan = materialize_plan(plan)
    save_plan(plan, str(tmp_path))
    outcomes = []
    for spec in plan.branches:
        settings = EmulatorSettings(**spec.target.emulator.model_dump())  # type: ignore[union-attr]
        with EmulatorProcess(settings) as emulator:

            def stop_after_the_load(event: ProgressEvent, name: str = spec.target.name) -> None:
                # 'gone' goes away once its last load point ended, before its quality pass
                last = event.load_point_index == event.load_points_total - 1
                if name == "gone" and event.kind == "load_point_finished" and last:
                    emulator.stop()

            run = run_branch(spec, endpoint_url=emulator.url, on_progress=stop_after_the_load)
            outcomes.append(asyncio.run(run))
    assert [(o.status, o.reason) for o in outcomes] == [("succeeded", None)] * 2  # the load's results stand
    gone = next(spec for spec in plan.branches if spec.target.name == "gone")
    rows = [r for r in _records(tmp_path) if r["branch_id"] == gone.branch_id]
    quality = [r for r in rows if r["phase"] == "quality"]
    measured = [r for r in rows if r["phase"] == "measured"]
    assert len(measured) == 4 * REQUESTS and all(r["status"] == "ok" for r in measured)
    assert quality and all(r["status"] == "error" for r in quality)
    # refused, or cut on a pooled connection the stopped server closed
    assert {r["error_class"] for r in quality} <= {"connection_error", "stream_cut"}

    # the judging of 'gone' falls back to nothing: no answer of its load is judged instead
    async def judge() -> Any:
        async with running_emulator(EmulatorSettings(model="jm", judge_error_rate=0.0, **FAST)) as url:
            return await evaluate_run_async(plan, str(tmp_path), judge_urls={"j": url})

    summary = asyncio.run(judge())
    judged = pq.read_table(tmp_path / "evaluations").to_pylist()
    assert summary.answers > 0 and {r["target_name"] for r in judged} == {"fine"}
    document, text = _report(plan, outcomes, tmp_path)
    by_name = {b.target_name: b for b in document.branches}
    assert by_name["gone"].accuracy is None and by_name["fine"].accuracy is not None
    assert "Not judged: gone (no successful answer of its quality pass" in text
