"""Server metrics: the emulator's /metrics scraped during a load, the rows on disk, a server without it."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds

from fmbench.emulator.profiles import EmulatorProfile
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import RunPlan, plan_suite
from fmbench.runner import run_branch
from fmbench.server_metrics import SERVER_METRIC_SCHEMA, PointKey, parse_exposition
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from report.render import generate_report
from report.server_metrics import server_metrics_view

MAX_BATCH = 4
TOKENS = 16
REQUESTS = 12
# No jitter, no prefill cost: a request holds its slot for TOKENS decode steps of 20 ms.
PROFILE = EmulatorProfile(
    name="scrape-test",
    instance_type="ml.test",
    price_per_hour_usd=1.0,
    prefill_base_ms=0,
    prefill_ms_per_token=0,
    decode_base_ms=20,
    decode_ms_per_seq=0,
    max_batch=MAX_BATCH,
)


def suite_plan(
    tmp_path: Path, target: dict[str, Any], concurrency: list[int], scrape: bool = True
) -> RunPlan:
    data = {
        "name": "server-metrics-test",
        "targets": [target],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": TOKENS},
            "max_prompts_per_bin": 5,
        },
        "load": {
            "concurrency": concurrency,
            "requests_per_level": REQUESTS,
            "server_metrics": {"scrape_interval_s": 0.1, "enabled": scrape},
        },
    }
    return plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1")


def branch(tmp_path: Path, target: dict[str, Any], concurrency: list[int], scrape: bool = True) -> BranchSpec:
    (spec,) = suite_plan(tmp_path, target, concurrency, scrape).branches
    return spec


def read(tmp_path: Path, folder: str) -> list[dict[str, Any]]:
    dataset = ds.dataset(tmp_path / folder, format="parquet", partitioning="hive")
    return dataset.to_table().to_pylist()


async def test_a_scrape_during_the_load_sees_the_batch_the_load_implies(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"name": "emu", "platform": "emulator"}, [2, 6])
    async with running_emulator(EmulatorSettings(), profile=PROFILE) as url:
        outcome = await run_branch(spec, endpoint_url=url)
        async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
            health = await response.json()
    assert (outcome.status, outcome.reason) == ("succeeded", None)

    folder = tmp_path / "server_metrics" / "run_id=run-1" / f"branch_id={spec.branch_id}"
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    rows = read(tmp_path, "server_metrics")
    assert set(rows[0]) == {*SERVER_METRIC_SCHEMA.names, "run_id", "branch_id"}
    assert {(r["source"], r["load_mode"], r["payload_bin"]) for r in rows} == {
        ("prometheus", "concurrency", "50-500")
    }
    assert {json.loads(r["labels"])["model_name"] for r in rows} == {"emulated-model"}
    series: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        series[(r["concurrency"], r["metric"])].append((r["sampled_epoch_s"], r["value"]))

    def values(concurrency: int, metric: str) -> list[float]:
        return [v for _, v in sorted(series[(concurrency, metric)])]

    # Concurrency 2 fits in the batch: at most 2 run, none waits, and at some scrape both ran.
    assert len(values(2, "vllm:num_requests_running")) >= 3
    assert max(values(2, "vllm:num_requests_running")) == 2
    assert max(values(2, "vllm:num_requests_waiting")) == 0
    # Concurrency 6 saturates the 4 slots: the batch is full and the other 2 queue.
    assert max(values(6, "vllm:num_requests_running")) == MAX_BATCH
    assert max(values(6, "vllm:num_requests_waiting")) == 6 - MAX_BATCH
    assert all(0 <= v <= 1 for v in values(6, "vllm:kv_cache_usage_perc"))
    assert max(values(6, "vllm:kv_cache_usage_perc")) > max(values(2, "vllm:kv_cache_usage_perc"))

    # Counters only grow, across points too, and the last scrape agrees with /health and the records.
    for metric in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total"):
        sequence = values(2, metric) + values(6, metric)
        assert sequence == sorted(sequence)
    records = read(tmp_path, "records")
    assert len(records) == 2 * REQUESTS
    assert values(6, "vllm:generation_tokens_total")[-1] == health["generation_tokens_total"]
    assert (
        health["generation_tokens_total"]
        == sum(r["completion_tokens"] for r in records)
        == 2 * REQUESTS * TOKENS
    )
    assert values(6, "vllm:prompt_tokens_total")[-1] == health["prompt_tokens_total"]
    assert health["prompt_tokens_total"] == sum(r["prompt_tokens"] for r in records)
    success = [r for r in rows if r["metric"] == "vllm:request_success_total" and r["concurrency"] == 6]
    last_s = max(r["sampled_epoch_s"] for r in success)
    assert sum(r["value"] for r in success if r["sampled_epoch_s"] == last_s) == health["succeeded_total"]
    assert health["succeeded_total"] == health["requests_total"] == 2 * REQUESTS
    # Each point's counter delta is that point's work: 12 requests of 16 tokens.
    for level in (2, 6):
        generated = values(level, "vllm:generation_tokens_total")
        assert generated[-1] - generated[0] == REQUESTS * TOKENS
    ttft_count = values(6, "vllm:time_to_first_token_seconds_count")[-1]
    assert ttft_count == 2 * REQUESTS


async def test_a_server_without_metrics_gets_a_note_and_no_rows(tmp_path: Path, caplog: Any) -> None:
    async with running_emulator(EmulatorSettings(), profile=PROFILE) as url:
        target = {
            "name": "plain",
            "platform": "openai",
            "endpoint_url": url + "/v1",
            "metrics_url": url + "/no-metrics-here",
        }
        spec = branch(tmp_path, target, [2])
        outcome = await run_branch(spec)
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    assert outcome.records_written == REQUESTS
    assert not (tmp_path / "server_metrics").exists()
    notes = [r.getMessage() for r in caplog.records if "no server metrics" in r.getMessage()]
    assert len(notes) == 1 and "HTTP 404" in notes[0]


async def test_scraping_can_be_turned_off(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"name": "emu", "platform": "emulator"}, [2], scrape=False)
    async with running_emulator(EmulatorSettings(), profile=PROFILE) as url:
        outcome = await run_branch(spec, endpoint_url=url)
    assert outcome.status == "succeeded"
    assert not (tmp_path / "server_metrics").exists()


async def test_the_report_shows_the_server_beside_the_client(tmp_path: Path) -> None:
    plan = suite_plan(tmp_path, {"name": "emu", "platform": "emulator"}, [2, 6])
    (spec,) = plan.branches
    async with running_emulator(EmulatorSettings(), profile=PROFILE) as url:
        outcome = await run_branch(spec, endpoint_url=url)
    document = generate_report(plan, [outcome], str(tmp_path), tmp_path / "report")

    view = server_metrics_view(str(tmp_path), "run-1")
    assert view is not None
    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    section = text.split("## Server-side metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| emu |")]
    assert len(rows) == 2
    for row, level in zip(rows, (2, 6), strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        point = view.point(spec.branch_id, level, None, "50-500")
        assert point is not None
        assert cells[1] == f"concurrency {level}"
        assert cells[3] == str(point["scrapes"])
        assert cells[4].endswith(f"/ {point['running_max']:g}")
    assert rows[1].split("|")[5].strip().endswith(f"/ {MAX_BATCH}")
    assert "CloudWatch" not in section  # no SageMaker or Bedrock branch
    # result.json: the same figures per load point.
    for summary in document.branches[0].load_points:
        point = view.point(spec.branch_id, summary.concurrency, None, summary.payload_bin)
        assert point is not None and summary.server is not None
        assert (summary.server.running_max, summary.server.waiting_mean) == (
            point["running_max"],
            point["waiting_mean"],
        )
        assert summary.server.server_latency_mean_s is None
    assert max(p.server.running_max or 0 for p in document.branches[0].load_points if p.server) == MAX_BATCH
    assert "server_utilization" in document.artifacts.charts
    assert (tmp_path / "report" / "server_utilization.png").stat().st_size > 0
    assert "Server utilization over the run" in (tmp_path / "report" / "report.html").read_text(
        encoding="utf-8"
    )


async def test_a_report_without_server_metrics_has_no_such_section(tmp_path: Path) -> None:
    plan = suite_plan(tmp_path, {"name": "emu", "platform": "emulator"}, [2], scrape=False)
    async with running_emulator(EmulatorSettings(), profile=PROFILE) as url:
        outcome = await run_branch(plan.branches[0], endpoint_url=url)
    document = generate_report(plan, [outcome], str(tmp_path), tmp_path / "report")
    assert all(p.server is None for p in document.branches[0].load_points)
    assert "Server-side metrics" not in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "server_utilization" not in document.artifacts.charts


async def test_the_emulator_counts_only_whole_answers_as_successes() -> None:
    """Fixed timing with faults: /metrics and /health agree, and a faulted request is no success."""
    settings = EmulatorSettings(
        ttft_ms=5, itl_ms=1, output_tokens=4, error_500_rate=0.3, cut_stream_rate=0.2, seed=3
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    whole = 0
    async with running_emulator(settings) as url, aiohttp.ClientSession() as session:
        for _ in range(20):
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as response:
                    text = await response.text()
                    whole += response.status == 200 and "[DONE]" in text
            except aiohttp.ClientPayloadError:
                pass  # a cut stream
        async with session.get(url + "/health") as response:
            health = await response.json()
        async with session.get(url + "/metrics") as response:
            page = await response.text()
    rows = parse_exposition(page, 0.0, PointKey("concurrency", 1, None, "b"))
    value = {r.metric: r.value for r in rows if r.metric != "vllm:request_success_total"}
    successes = sum(r.value for r in rows if r.metric == "vllm:request_success_total")
    assert 0 < whole < 20
    assert successes == health["succeeded_total"] == whole
    assert value["vllm:num_requests_running"] == value["vllm:num_requests_waiting"] == 0
    assert value["vllm:generation_tokens_total"] == health["generation_tokens_total"]
    assert health["generation_tokens_total"] >= 4 * whole
    assert value["vllm:e2e_request_latency_seconds_count"] == whole
