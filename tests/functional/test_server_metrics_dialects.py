"""One load, three metric dialects: the emulator publishes its figures under vLLM's, TGI's and SGLang's names,
the runner's scraper reads each over HTTP and writes Parquet, and server_metrics.sql gives the same figures
per load point (where the server has them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds
import pytest
from held_batch import held_batch_profile

from fmbench.emulator.metrics import KV_TOKENS_PER_SLOT
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.local import run_branches, save_plan
from fmbench.plan import plan_suite
from fmbench.prompt_store import materialize_plan
from fmbench.server_metrics import PointKey, ServerMetricsScraper, parse_exposition
from fmbench.suite import validate_suite_data
from fmbench.tokenizer import get_tokenizer
from report.server_metrics import read_server_metrics, server_metrics_summary

MAX_BATCH = 4
# A request of max_tokens 1 is answered at its prefill; longer ones hold their batch slot (prompt + 1 token)
# for the rest of the test.
PROFILE = held_batch_profile(MAX_BATCH)
PROMPT = "Which river flows through Paris? Answer in one word, please."
ANSWERED = 5  # requests answered whole (one token each) during the point
HELD = 6  # requests held open at the point's end: 4 in the batch, 2 queued
POINT = PointKey("concurrency", HELD, None, "b")


def _chat(max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def _occupancy(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """Running and waiting requests, read through the product's parser (any dialect)."""
    async with session.get(url + "/metrics") as response:
        rows = parse_exposition(await response.text(), 0.0, POINT)
    value = {r.metric: r.value for r in rows}
    return value["vllm:num_requests_running"], value["vllm:num_requests_waiting"]


async def _hold(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url + "/v1/chat/completions", json=_chat(8, True)) as response:
        await response.read()


async def _one_point(root: Path, dialect: str) -> None:
    """A load point under the scraper: ANSWERED requests answered, then HELD held open as it ends."""
    settings = EmulatorSettings(metrics_dialect=dialect)
    async with running_emulator(settings, profile=PROFILE) as url, aiohttp.ClientSession() as session:
        scraper = ServerMetricsScraper(
            url + "/metrics", 0.05, root=str(root), run_id="r", branch_id=f"b-{dialect}"
        )
        held: list[asyncio.Task[Any]] = []
        try:
            async with scraper.watch(POINT):
                for _ in range(ANSWERED):
                    async with session.post(url + "/v1/chat/completions", json=_chat(1, False)) as r:
                        assert r.status == 200
                held = [asyncio.create_task(_hold(session, url)) for _ in range(HELD)]
                loop = asyncio.get_running_loop()
                deadline_s = loop.time() + 20
                wanted = (MAX_BATCH, HELD - MAX_BATCH)
                while await _occupancy(session, url) != wanted and loop.time() < deadline_s:
                    await asyncio.sleep(0.02)
            # the point's last scrape was taken above, with the held requests in the batch and queue
        finally:
            for task in held:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*held)
            await scraper.aclose()
        assert scraper.active and scraper.rows_written > 0


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("dialects")

    async def run_all() -> None:
        for dialect in ("vllm", "tgi", "sglang"):
            await _one_point(root, dialect)

    asyncio.run(run_all())
    frame = server_metrics_summary(read_server_metrics(str(root), "r"), "r")
    return {row["branch_id"].removeprefix("b-"): row for row in frame.to_dict("records")}


def _null(value: Any) -> bool:
    return value is None or value != value  # NaN from pandas


def test_every_dialect_gives_the_vllm_figures_of_the_same_load(figures: dict[str, dict[str, Any]]) -> None:
    assert sorted(figures) == ["sglang", "tgi", "vllm"]
    prompt_tokens = get_tokenizer("simple").count(PROMPT)
    # prefilled during the point: the answered requests and the four held in the batch
    expected = {
        "running_max": MAX_BATCH,
        "waiting_max": HELD - MAX_BATCH,
        "server_prompt_tokens": (ANSWERED + MAX_BATCH) * prompt_tokens,
        "server_generation_tokens": ANSWERED + MAX_BATCH,  # one token each, at prefill
        "server_requests_succeeded": ANSWERED,
    }
    for dialect, row in figures.items():
        assert {k: row[k] for k in expected} == expected, dialect
        assert row["scrapes"] >= 2, dialect
    # the KV cache holds each batch slot's prompt and first token (TGI publishes no such figure)
    kv_max = MAX_BATCH * (prompt_tokens + 1) / (KV_TOKENS_PER_SLOT * MAX_BATCH)
    assert figures["vllm"]["kv_cache_usage_max"] == pytest.approx(kv_max)
    assert figures["sglang"]["kv_cache_usage_max"] == pytest.approx(kv_max)
    assert _null(figures["tgi"]["kv_cache_usage_max"])
    # prefix cache: queried for every prompt token, never hit; TGI publishes none
    assert figures["vllm"]["prefix_cache_hit_rate"] == figures["sglang"]["prefix_cache_hit_rate"] == 0.0
    assert _null(figures["tgi"]["prefix_cache_hit_rate"])
    # server TTFT over the answered requests: vLLM and SGLang have it, TGI has none
    for dialect in ("vllm", "sglang"):
        assert 0 <= figures[dialect]["server_ttft_mean_s"] < 5, dialect
    assert _null(figures["tgi"]["server_ttft_mean_s"])


def test_a_suites_emulator_target_publishes_its_dialect_to_the_runner(tmp_path: Path) -> None:
    """The whole local path: the suite's emulator options reach the emulator child process, whose TGI page
    the runner scrapes and stores under the vLLM names, marked as TGI's."""
    data = {
        "name": "tgi-page",
        "targets": [
            {
                "name": "emu",
                "platform": "emulator",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4, "metrics_dialect": "tgi"},
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "max_prompts_per_bin": 4},
        "load": {"concurrency": [2], "requests_per_level": 8, "server_metrics": {"scrape_interval_s": 0.1}},
    }
    plan = materialize_plan(plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="r"))
    save_plan(plan, str(tmp_path))
    (outcome,) = asyncio.run(run_branches(plan, 1))
    assert outcome.status == "succeeded"
    rows = (
        ds.dataset(tmp_path / "server_metrics", format="parquet", partitioning="hive").to_table().to_pylist()
    )
    labels = [json.loads(r["labels"]) for r in rows]
    assert rows and {label["server_kind"] for label in labels} == {"tgi"}
    assert {label["exposed_as"] for label in labels} >= {"tgi_batch_current_size", "tgi_queue_size"}
    (row,) = server_metrics_summary(read_server_metrics(str(tmp_path), "r"), "r").to_dict("records")
    records = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table()
    assert row["server_requests_succeeded"] == records.num_rows == 8
    assert row["server_generation_tokens"] == sum(records.column("completion_tokens").to_pylist()) == 32
    assert row["server_prompt_tokens"] == sum(records.column("prompt_tokens").to_pylist())
    assert _null(row["server_ttft_mean_s"])  # TGI publishes none
