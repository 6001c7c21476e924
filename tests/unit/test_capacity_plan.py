"""Capacity figures of the report: the knee, capacity under the SLO, best goodput and the capacity plan."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from fmbench.plan import RunPlan, plan_suite
from fmbench.suite import validate_suite_data
from report.capacity import (
    HOURS_PER_MONTH,
    branch_capacity,
    capacity_markdown,
    capacity_plan,
    instances_needed,
    knee,
)

BIN = "50-500"
SERVICE_S = 0.5
BATCH = 8


def suite(**extra: Any) -> RunPlan:
    data = {
        "name": "capacity-unit",
        "targets": [
            {
                "name": "small",
                "platform": "emulator",
                "emulator": {"profile": "g5-xlarge"},
                "instance_count": 2,
            },
            {"name": "big", "platform": "emulator", "emulator": {"profile": "g5-12xlarge"}},
            {"name": "dead", "platform": "emulator", "emulator": {"profile": "g5-2xlarge"}},
            {
                "name": "bedrock",
                "platform": "bedrock",
                "model_id": "m",
                "input_price_per_1k_tokens_usd": 0.001,
                "output_price_per_1k_tokens_usd": 0.002,
            },
            {"name": "bedrock-unpriced", "platform": "bedrock", "model_id": "m2"},
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1, 2, 4, 8, 16, 32], "requests_per_level": 10},
        "slo": {"p95_latency_s": 0.8},
        **extra,
    }
    return plan_suite(validate_suite_data(data), storage_root="/tmp/unused", run_id="cap")


def point(branch_id: str, concurrency: int, tpm: float, p95: float, **extra: Any) -> dict[str, Any]:
    return {
        "branch_id": branch_id,
        "payload_bin": BIN,
        "concurrency": concurrency,
        "request_rate_per_s": None,
        "transactions_per_minute": tpm,
        "latency_p95_s": p95,
        "ttft_p95_s": None,
        "successes": 10 if tpm else 0,
        "error_rate": 0.0 if tpm else 1.0,
        "client_bound": False,
        "instance_count": 1,
        "prompt_tokens_mean": 300.0,
        "completion_tokens_mean": 100.0,
        **extra,
    }


def batched(branch_id: str, batch: int, service_s: float, **extra: Any) -> list[dict[str, Any]]:
    """An endpoint that serves ``batch`` requests at once in ``service_s``: throughput min(c, B) / S."""
    rows = []
    for c in (1, 2, 4, 8, 16, 32):
        tpm = min(c, batch) / service_s * 60
        p95 = service_s * max(1.0, c / batch)
        rows.append(point(branch_id, c, tpm, p95, **extra))
    return rows


def test_knee_is_the_last_level_before_throughput_stops_following_the_load() -> None:
    rows = batched("b", BATCH, SERVICE_S)
    assert knee(rows, "concurrency")["concurrency"] == BATCH  # type: ignore[index]
    # Throughput still doubling with the load: no knee.
    assert knee(batched("b", 64, SERVICE_S), "concurrency") is None
    # Throughput flat but latency not rising (e.g. a capped client) is no knee either.
    flat = [point("b", c, 100.0, 0.5) for c in (1, 2, 4)]
    assert knee(flat, "concurrency") is None


def test_branch_capacity_reads_knee_capacity_and_goodput() -> None:
    plan = suite()
    small = plan.branches[0]
    metrics = pd.DataFrame(batched(small.branch_id, BATCH, SERVICE_S, instance_count=2))
    capacity = branch_capacity(small, metrics, plan.suite.slo, BIN)
    assert capacity.knee is not None and capacity.knee.concurrency == BATCH
    # p95 0.5 s up to c8, 1.0 s at c16: the SLO (0.8 s) holds up to c8.
    assert capacity.capacity_under_slo is not None and capacity.capacity_under_slo.concurrency == BATCH
    assert capacity.best_goodput is not None
    assert capacity.best_goodput.transactions_per_minute == pytest.approx(BATCH / SERVICE_S * 60)
    assert capacity.search is None


def test_a_client_bound_point_is_never_the_capacity() -> None:
    plan = suite()
    small = plan.branches[0]
    rows = batched(small.branch_id, BATCH, SERVICE_S)
    rows[3]["client_bound"] = True  # c8
    capacity = branch_capacity(small, pd.DataFrame(rows), plan.suite.slo, BIN)
    assert capacity.capacity_under_slo is not None and capacity.capacity_under_slo.concurrency == 4


def test_instances_needed_rounds_up_and_refuses_zero_capacity() -> None:
    assert instances_needed(120, 40) == 3
    assert instances_needed(121, 40) == 4
    assert instances_needed(0.3 * 3, 0.3) == 3  # 0.8999999999999999 / 0.3 is not 3.0000001
    assert instances_needed(10, 0) is None
    assert instances_needed(10, None) is None


def test_capacity_plan_table_and_cheapest() -> None:
    plan = suite(capacity={"target_requests_per_minute": [500, 5000]})
    small, big, dead, bedrock, unpriced = plan.branches
    rows = [
        # two instances behind the endpoint: 960 TPM at c8 is 480 per instance
        *batched(small.branch_id, BATCH, SERVICE_S, instance_count=2),
        *batched(big.branch_id, 64, 0.25),
        *[point(dead.branch_id, c, 0.0, math.nan) for c in (1, 2)],
        *batched(bedrock.branch_id, 4, 0.4),
        *batched(unpriced.branch_id, 4, 0.4),
    ]
    metrics = pd.DataFrame(rows)
    result = capacity_plan(plan, metrics, BIN)
    assert result is not None and result.hours_per_month == HOURS_PER_MONTH
    first, second = result.rows
    cells = {cell.target_name: cell for cell in first.cells}

    small_tpm = BATCH / SERVICE_S * 60 / 2  # per instance
    assert cells["small"].tpm_per_instance == pytest.approx(small_tpm)
    assert cells["small"].instances == math.ceil(500 / small_tpm) == 2
    price_small = small.instance_price_per_hour_usd
    assert price_small is not None
    assert cells["small"].usd_per_hour == pytest.approx(2 * price_small)
    assert cells["small"].usd_per_month == pytest.approx(2 * price_small * 730)

    # big: p95 0.25 s at every level up to c32 (batch 64), so its best point is c32: 7680 TPM.
    assert cells["big"].tpm_per_instance == pytest.approx(32 / 0.25 * 60)
    assert cells["big"].instances == 1

    assert cells["dead"].instances is None and cells["dead"].usd_per_hour is None
    assert "cannot carry" in (cells["dead"].note or "")

    # Bedrock: per request (300 x 0.001 + 100 x 0.002) / 1000 = 0.0005 USD, x 500 per minute x 60.
    assert cells["bedrock"].instances is None
    assert cells["bedrock"].usd_per_hour == pytest.approx(0.0005 * 500 * 60)
    assert cells["bedrock-unpriced"].usd_per_hour is None and "n/a" in (cells["bedrock-unpriced"].note or "")

    hourly = {c.branch_id: c.usd_per_hour for c in first.cells if c.usd_per_hour is not None}
    assert first.cheapest_branch_id == min(hourly, key=lambda b: hourly[b])
    second_cells = {cell.target_name: cell for cell in second.cells}
    assert second_cells["small"].instances == math.ceil(5000 / small_tpm) == 11

    text = capacity_markdown([], result)
    assert "### Capacity plan" in text and text.count("\n| 5,000 |") == 1
    assert "**" in text  # the cheapest cell of each row is marked


def test_no_plan_without_the_suite_section() -> None:
    plan = suite()
    assert capacity_plan(plan, pd.DataFrame(batched(plan.branches[0].branch_id, 8, 0.5)), BIN) is None


def test_a_branch_without_rows_has_no_capacity_figures() -> None:
    plan = suite(load={"search": {"mode": "concurrency", "start": 1, "max": 8}, "requests_per_level": 5})
    empty = pd.DataFrame([point("other", 1, 60.0, 0.5)])
    capacity = branch_capacity(plan.branches[0], empty, plan.suite.slo, BIN)
    assert (capacity.knee, capacity.capacity_under_slo, capacity.best_goodput) == (None, None, None)
    assert capacity.search is not None and not capacity.search.found and capacity.search.points_tried == []
    assert "level 1 was not measured" in (capacity.search.stop_reason or "")
    text = capacity_markdown([capacity], None)
    assert "tried in order nothing; no level met the SLO" in text
