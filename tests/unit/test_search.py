"""The capacity search: its SLO verdict against the report's SQL on the same records, and its levels."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from record_factory import make_record

from fmbench.config import LoadSearch, Slo
from fmbench.records import RecordWriter, RequestRecord
from fmbench.search import (
    CapacitySearch,
    PointFigures,
    Verdict,
    exact_quantile,
    level_verdict,
    replay,
    verdict,
)
from report.analysis import is_client_bound, meets_slo
from report.query import compute_metrics

RUN_ID = "search-run"


def test_exact_quantile_is_numpy_linear() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 20, 21, 101):
        values = rng.exponential(1.0, n).tolist()
        for q in ("0.5", "0.95", "0.99"):
            assert exact_quantile(values, Fraction(q)) == pytest.approx(float(np.quantile(values, float(q))))
    assert exact_quantile([]) is None


def _point_records(
    rng: np.random.Generator, concurrency: int, *, errors: int, streamed: bool, bound: bool
) -> list[RequestRecord]:
    records = []
    for seq in range(int(rng.integers(5, 40))):
        phase = "warmup" if seq < 2 else "measured"
        latency = float(rng.gamma(2.0, 0.4)) + (5.0 if phase == "warmup" else 0.0)  # warm-up never counts
        failed = phase == "measured" and seq - 2 < errors
        records.append(
            make_record(
                load_mode="concurrency",
                concurrency=concurrency,
                request_id=f"c{concurrency}-{seq}",
                phase=phase,
                send_epoch_s=float(seq),
                end_epoch_s=float(seq) + latency,
                latency_s=latency,
                ttft_s=latency / 4 if streamed and not failed else None,
                status="error" if failed else "ok",
                error_class="http_5xx" if failed else None,
                client_bound=bound and seq == 3,  # one part of the point was client-bound
            )
        )
    return records


def test_the_runner_verdict_agrees_with_the_report_sql_on_the_same_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    slos = [
        Slo(p95_latency_s=1.2),
        Slo(p95_latency_s=1.6, p95_ttft_s=0.35, max_error_rate=0.1),
        Slo(p95_ttft_s=0.3, max_error_rate=0.05),
        Slo(max_error_rate=0.0),
    ]
    by_level: dict[int, list[RequestRecord]] = {}
    for concurrency in range(1, 41):
        errors = int(rng.choice([0, 0, 1, 3]))
        streamed = bool(rng.random() < 0.85)
        bound = bool(rng.random() < 0.1)
        by_level[concurrency] = _point_records(
            rng, concurrency, errors=errors, streamed=streamed, bound=bound
        )
    writer = RecordWriter(str(tmp_path), RUN_ID, "b-1")
    for records in by_level.values():
        writer.extend(records)
    writer.flush()
    metrics = compute_metrics(str(tmp_path), RUN_ID).set_index("concurrency", drop=False)
    outcomes = set()
    for slo in slos:
        sql_meets = meets_slo(metrics, slo)
        sql_bound = is_client_bound(metrics)
        for concurrency, records in by_level.items():
            figures = PointFigures.of_records(records)
            row = metrics.loc[concurrency]
            assert figures.measured == row["requests"]
            assert figures.error_rate == pytest.approx(row["error_rate"])
            for mine, theirs in (
                (figures.latency_p95_s, row["latency_p95_s"]),
                (figures.ttft_p95_s, row["ttft_p95_s"]),
            ):
                assert (mine is None) == bool(pd.isna(theirs))
                if mine is not None:
                    assert mine == pytest.approx(theirs, rel=1e-12)
            expected: Verdict = (
                "client_bound" if sql_bound[concurrency] else ("pass" if sql_meets[concurrency] else "fail")
            )
            assert verdict(figures, slo) == expected, (slo, concurrency)
            outcomes.add(expected)
    assert outcomes == {"pass", "fail", "client_bound"}  # the records exercise every verdict


def test_level_verdict_needs_every_bin() -> None:
    assert level_verdict(["pass", "pass"]) == "pass"
    assert level_verdict(["pass", "fail"]) == "fail"
    assert level_verdict(["fail", "client_bound"]) == "client_bound"


def run(search: LoadSearch, capacity: float) -> CapacitySearch:
    """The search against an endpoint that meets the SLO up to ``capacity``."""
    return replay(search, lambda level: "pass" if level <= capacity else "fail")


def levels(state: CapacitySearch) -> list[float]:
    return [step.level for step in state.steps]


def test_closed_loop_search_doubles_then_bisects_to_one_step() -> None:
    search = LoadSearch(mode="concurrency", start=1, max=256, max_points=20)
    state = run(search, capacity=37)
    assert levels(state) == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert state.passing == 37 and state.failing == 38
    assert state.stop_reason is not None and "within the resolution" in state.stop_reason
    for capacity in (1, 2, 5, 99, 255):
        assert run(search, capacity).passing == capacity


def test_search_stops_at_max_and_when_the_start_fails() -> None:
    search = LoadSearch(mode="concurrency", start=4, max=20)
    state = run(search, capacity=1000)
    assert levels(state) == [4, 8, 16, 20]
    assert state.passing == 20 and "highest level allowed" in (state.stop_reason or "")
    state = run(search, capacity=3)
    assert levels(state) == [4] and not state.found
    assert "first level" in (state.stop_reason or "")


def test_search_respects_its_point_budget_and_step() -> None:
    state = run(LoadSearch(mode="concurrency", start=1, max=256, max_points=5), capacity=37)
    assert (
        levels(state) == [1, 2, 4, 8, 16]
        and state.passing == 16
        and "budget of 5" in (state.stop_reason or "")
    )
    state = run(LoadSearch(mode="concurrency", start=1, max=256, max_points=20, step=8), capacity=37)
    assert state.failing is not None and state.passing is not None
    assert state.failing - state.passing <= 8 and state.passing <= 37 < state.failing


def test_open_loop_search_stops_within_its_tolerance() -> None:
    search = LoadSearch(mode="rate", start=0.5, max=1000, max_points=30, tolerance=0.05)
    state = run(search, capacity=13.7)
    assert levels(state)[:6] == [0.5, 1, 2, 4, 8, 16]
    assert state.passing is not None and state.failing is not None
    assert state.passing <= 13.7 < state.failing <= state.passing * 1.05


def test_a_client_bound_level_stops_the_search_with_a_lower_bound() -> None:
    search = LoadSearch(mode="concurrency", start=1, max=64)
    outcomes: dict[float, Verdict] = {1: "pass", 2: "pass", 4: "client_bound"}
    state = replay(search, outcomes.get)
    assert levels(state) == [1, 2, 4] and state.passing == 2 and state.failing is None
    assert "client-bound" in (state.stop_reason or "")


def test_replay_stops_at_a_level_not_measured() -> None:
    search = LoadSearch(mode="concurrency", start=1, max=64)
    outcomes: dict[float, Verdict] = {1: "pass", 2: "pass"}
    state = replay(search, outcomes.get)
    assert levels(state) == [1, 2] and "level 4 was not measured" in (state.stop_reason or "")
