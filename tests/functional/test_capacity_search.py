"""The capacity search against an emulator of known capacity (profile flat-batch-8), over loopback.

The profile serves at most B requests at once, each in the same service time S (no prefill stall, a decode
step that does not grow with the batch), and queues the rest: below B in flight the latency is S, at 2B it
is about 2S. With the SLO's p95 latency at 1.5 S, a closed loop meets it up to concurrency B, and an open
loop up to about B / S requests per second. B comes from the emulator's /health, S from the profile.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds

from fmbench.emulator.profiles import get_profile
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import plan_suite
from fmbench.runner import run_branch
from fmbench.search import replay
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from report.analysis import is_client_bound, meets_slo
from report.query import compute_metrics

PROFILE = "flat-batch-8"
TOKENS = 9  # the first token at admission, then 8 decode steps
SERVICE_S = (TOKENS - 1) * get_profile(PROFILE).decode_base_ms / 1000  # 0.2 s
SLO_S = 1.5 * SERVICE_S


def branch(tmp_path: Path, load: dict[str, Any]) -> BranchSpec:
    data = {
        "name": "capacity-test",
        "targets": [{"name": "emu", "platform": "emulator", "emulator": {"profile": PROFILE}}],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": TOKENS},
            "max_prompts_per_bin": 5,
            "repeat": "cycle",
        },
        "load": load,
        "slo": {"p95_latency_s": SLO_S},
    }
    plan = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="search")
    (spec,) = plan.branches
    return spec


async def max_batch(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as response:
        return int((await response.json())["max_batch"])


async def search_records(tmp_path: Path, spec: BranchSpec) -> tuple[int, list[dict[str, Any]]]:
    async with running_emulator(EmulatorSettings(profile=PROFILE)) as url:
        batch = await max_batch(url)
        outcome = await run_branch(spec, endpoint_url=url)
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    dataset = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive")
    return batch, dataset.to_table().to_pylist()


def tried_in_order(rows: list[dict[str, Any]], column: str) -> list[float]:
    steps = {row["search_step"]: row[column] for row in rows}
    assert sorted(steps) == list(range(len(steps)))  # every step of the search, each one level
    return [steps[step] for step in sorted(steps)]


def report_replay(tmp_path: Path, spec: BranchSpec, column: str) -> list[float]:
    """The search as the report replays it from the SQL summary: the same levels in the same order."""
    metrics = compute_metrics(str(tmp_path), "search")
    ok = (meets_slo(metrics, spec.slo) & ~is_client_bound(metrics)).tolist()
    verdicts = {
        float(level): "pass" if passed else "fail" for level, passed in zip(metrics[column], ok, strict=True)
    }
    assert spec.load.search is not None
    return [step.level for step in replay(spec.load.search, verdicts.get).steps]


async def test_closed_loop_search_finds_the_batch_limit(tmp_path: Path) -> None:
    spec = branch(
        tmp_path,
        {
            "search": {"mode": "concurrency", "start": 4, "max": 32, "max_points": 8},
            "requests_per_level": 24,
            "request_timeout_s": 10,
        },
    )
    batch, rows = await search_records(tmp_path, spec)
    order = tried_in_order(rows, "concurrency")
    assert order[:3] == [4, 8, 16]  # doubling from start until a level fails
    per_level = Counter(row["concurrency"] for row in rows if row["phase"] == "measured")
    assert set(per_level.values()) == {24}  # every level tried is a whole load point
    passing = max(level for level in order if _passes(rows, level))
    assert abs(passing - batch) <= 1  # the capacity under the SLO: the batch limit, within one step
    assert report_replay(tmp_path, spec, "concurrency") == order


async def test_open_loop_search_finds_batch_over_service_time(tmp_path: Path) -> None:
    spec = branch(
        tmp_path,
        {
            "search": {"mode": "rate", "start": 20, "max": 160, "max_points": 8, "tolerance": 0.1},
            "arrival": "constant",
            "requests_per_level": 48,
            "request_timeout_s": 10,
            # The emulator shares the runner's event loop here: its overload work delays sends.
            "client_check": {"max_schedule_lag_p99_s": 1.0},
        },
    )
    batch, rows = await search_records(tmp_path, spec)
    order = tried_in_order(rows, "request_rate_per_s")
    assert order[:3] == [20, 40, 80]
    capacity = batch / SERVICE_S  # 40 requests per second
    passing = max(level for level in order if _passes(rows, level))
    # Within the tolerance below; above it a short point also passes a slight overload (its queue has not
    # grown past the SLO by the point's end: about B / (2 x 0.95 x requests) of the rate, here 9 %).
    assert capacity * 0.9 <= passing <= capacity * 1.25
    assert report_replay(tmp_path, spec, "request_rate_per_s") == order


def _passes(rows: list[dict[str, Any]], level: float) -> bool:
    """Whether the level's measured requests meet the SLO, from the records (numpy's p95)."""
    import numpy as np

    column = "concurrency" if rows[0]["load_mode"] == "concurrency" else "request_rate_per_s"
    latencies = [
        row["latency_s"]
        for row in rows
        if row[column] == level and row["phase"] == "measured" and row["status"] == "ok"
    ]
    return bool(latencies) and float(np.quantile(latencies, 0.95)) <= SLO_S
