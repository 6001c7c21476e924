"""metrics.sql (transpiled to DuckDB) against a plain numpy/pandas computation of the same definitions."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlglot
from record_factory import make_record
from sqlglot import exp

from fmbench.config import Slo
from fmbench.endpoints.base import ERROR_CLASSES
from fmbench.records import RecordWriter, RequestRecord
from report.query import (
    METRIC_COLUMNS,
    SORT_COLUMNS,
    QueryError,
    athena_metrics_query,
    bind_parameters,
    compute_metrics,
    load_sql,
    request_slo_parameters,
    run_duckdb,
    to_duckdb,
    ttft_samples,
)

RUN_ID = "20250101T000000Z-abc123"
KEY_COLUMNS = ["branch_id", "load_mode", "concurrency", "request_rate_per_s", "payload_bin"]
QUANTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


# ------------------------------------------------------------------------------------- random records

BRANCHES = [
    # branch_id, target_name, instance_type, instance_count, price, load_mode, levels, streaming share
    ("alpha-1111", "alpha", "ml.g5.xlarge", 1, 1.408, "concurrency", [(1, None), (4, None), (8, None)], 1.0),
    ("beta-2222", "beta", "ml.g5.12xlarge", 2, 7.09, "concurrency", [(1, None), (4, None)], 0.6),
    ("gamma-3333", "gamma", None, 1, None, "concurrency", [(2, None), (4, None)], 0.0),
    ("delta-4444", "delta", "ml.g6.xlarge", 1, 1.0064, "rate", [(None, 0.5), (None, 2.0)], 0.8),
]
BINS = ["50-500", "500-2000"]
# Per-request SLOs near the middle of the random figures, so that goodput counts some requests, not all.
GOODPUT_SLO = Slo(request_ttft_s=0.3, request_tpot_s=0.01, request_latency_s=1.5)


# Every class of the vocabulary, and one outside it, which no errors_<class> column counts.
ERRORS_SEEN = (*ERROR_CLASSES, "not_a_class")
WARMUP_ROWS = 3
COOLDOWN_ROWS = 2


def random_records(rng: np.random.Generator) -> dict[str, list[RequestRecord]]:
    """Records per branch exercising every rule: warm-up and cool-down, errors, non-streaming, NULL price,
    NULL keys, schedule lag, token counts from either source, and self-check figures that differ between
    the parts a long load point is written in."""
    by_branch: dict[str, list[RequestRecord]] = {}
    for branch_id, target, instance_type, count, price, mode, levels, streaming_share in BRANCHES:
        records = []
        clock_s = 1_700_000_000.0
        for concurrency, rate in levels:
            for bin_label in BINS:
                measured = int(rng.integers(1, 30))
                all_fail = branch_id == "alpha-1111" and concurrency == 8 and bin_label == "500-2000"
                total = WARMUP_ROWS + measured + COOLDOWN_ROWS
                split = int(rng.integers(0, total + 1))  # rows before it were written in an earlier part
                parts = [
                    (float(rng.uniform(0.05, 1.2)), bool(rng.random() < 0.3)),
                    (float(rng.uniform(0.05, 1.2)), bool(rng.random() < 0.3)),
                ]
                for index in range(total):
                    phase = (
                        "warmup"
                        if index < WARMUP_ROWS
                        else "cooldown"
                        if index >= WARMUP_ROWS + measured
                        else "measured"
                    )
                    send_s = clock_s + float(rng.uniform(0, 20))
                    lag_s = float(rng.exponential(0.004 if rate is None else 0.05))
                    latency_s = float(rng.lognormal(0.0, 0.6))
                    ok = not all_fail and rng.random() > 0.15
                    streaming = rng.random() < streaming_share
                    completion = int(rng.integers(0, 200)) if ok else None
                    ttft_s = latency_s * float(rng.uniform(0.05, 0.5)) if ok and streaming else None
                    gaps = (
                        [float(g) for g in rng.exponential(0.02, int(rng.integers(0, 12)))] if ttft_s else []
                    )
                    prompt = int(rng.integers(50, 2000))
                    # a reasoning answer on branch beta: its first answer token comes after its reasoning
                    reasoning = int(rng.integers(0, 50)) if ok and branch_id == "beta-2222" else None
                    answer_s = None
                    if ttft_s is not None:
                        answer_s = ttft_s + (float(rng.uniform(0, latency_s - ttft_s)) if reasoning else 0.0)
                    source = str(rng.choice(["server", "tokenizer", "mixed"]))
                    prompt_local = prompt if source == "tokenizer" else prompt + int(rng.integers(-20, 21))
                    completion_local = None
                    if ok and completion is not None:
                        completion_local = (
                            completion
                            if source == "tokenizer"
                            else max(0, completion + int(rng.integers(-9, 10)))
                        )
                    cpu_fraction, bound = parts[0] if index < split else parts[1]
                    if phase != "measured":
                        latency_s *= 50  # rows outside the window would move every figure if counted
                        lag_s *= 50
                        cpu_fraction, bound = 7.5, True
                    records.append(
                        make_record(
                            target_name=target,
                            instance_type=instance_type,
                            instance_count=count,
                            instance_price_per_hour_usd=price,
                            load_mode=mode,
                            concurrency=concurrency,
                            request_rate_per_s=rate,
                            arrival=None if rate is None else "poisson",
                            max_in_flight=None if rate is None else 16,
                            payload_bin=bin_label,
                            request_id=f"{branch_id}-{concurrency}-{rate}-{bin_label}-{index}",
                            # a pool small enough that some prompts are sent again (repeat: cycle)
                            prompt_id=f"p{int(rng.integers(0, 400))}",
                            phase=phase,
                            scheduled_epoch_s=send_s - lag_s,
                            send_epoch_s=send_s,
                            end_epoch_s=send_s + latency_s,
                            schedule_lag_s=lag_s,
                            latency_s=latency_s,
                            ttft_s=ttft_s,
                            itl_s=gaps,
                            prompt_tokens=prompt if ok else None,
                            completion_tokens=completion,
                            token_source=source,
                            prompt_tokens_local=prompt_local,
                            completion_tokens_local=completion_local,
                            status="ok" if ok else "error",
                            error_class=None if ok else ERRORS_SEEN[index % len(ERRORS_SEEN)],
                            runner_cpu_fraction=cpu_fraction,
                            runner_cpu_count=2,
                            client_bound=bound,
                            time_to_first_answer_s=answer_s,
                            reasoning_tokens=reasoning,
                        )
                    )
                clock_s += 100.0
        by_branch[branch_id] = records
    return by_branch


def write_records(root: str, run_id: str, by_branch: dict[str, list[RequestRecord]]) -> None:
    for branch_id, records in by_branch.items():
        writer = RecordWriter(root, run_id, branch_id)
        half = len(records) // 2  # two parts per branch, as a runner flushing per load point would
        writer.extend(records[:half])
        writer.flush()
        writer.extend(records[half:])
        writer.flush()


def numpy_goodput(point: pd.DataFrame, window_s: float, slo: Slo | None) -> tuple[float | None, float | None]:
    """(goodput share, goodput per second) of one load point's measured requests; None: no per-request SLO."""
    limits = {
        name: getattr(slo, name, None) for name in ("request_ttft_s", "request_tpot_s", "request_latency_s")
    }
    if all(limit is None for limit in limits.values()):
        return None, None
    good = 0
    for row in point.itertuples():
        if row.status != "ok":
            continue
        ttft = None if _is_null(row.ttft_s) else float(row.ttft_s)
        if limits["request_ttft_s"] is not None and (ttft is None or ttft > limits["request_ttft_s"]):
            continue
        if limits["request_tpot_s"] is not None:
            tokens = None if _is_null(row.completion_tokens) else int(row.completion_tokens)
            if ttft is None or tokens is None or tokens <= 1:
                continue
            if (row.latency_s - ttft) / (tokens - 1) > limits["request_tpot_s"]:
                continue
        if limits["request_latency_s"] is not None and row.latency_s > limits["request_latency_s"]:
            continue
        good += 1
    return good / len(point), good / window_s


def numpy_metrics(by_branch: dict[str, list[RequestRecord]], slo: Slo | None = None) -> pd.DataFrame:
    """Every figure of metrics.sql, computed directly from the definitions in docs/metrics.md."""
    rows = []
    for branch_id, records in by_branch.items():
        frame = pd.DataFrame([dataclasses.asdict(r) for r in records])
        # a request reused its prompt when an earlier one of the branch (any phase) sent it in the same bin
        frame = frame.sort_values(["send_epoch_s", "request_id"])
        frame["reused_prompt"] = frame.duplicated(subset=["payload_bin", "prompt_id"], keep="first")
        frame = frame[frame["phase"] == "measured"]
        keys = ["load_mode", "concurrency", "request_rate_per_s", "payload_bin"]
        for key, point in frame.groupby(keys, dropna=False):
            ok = point[point["status"] == "ok"]
            window_s = point["end_epoch_s"].max() - point["send_epoch_s"].min()
            latency = ok["latency_s"].to_numpy(float)
            streamed = ok[ok["ttft_s"].notna()]
            ttft = streamed["ttft_s"].to_numpy(float)
            long = streamed[streamed["completion_tokens"] > 1]
            tpot = ((long["latency_s"] - long["ttft_s"]) / (long["completion_tokens"] - 1)).to_numpy(float)
            itl = np.array([gap for gaps in ok["itl_s"] for gap in gaps], dtype=float)
            latency_from_schedule = (ok["latency_s"] + ok["schedule_lag_s"]).to_numpy(float)
            ttft_from_schedule = (streamed["ttft_s"] + streamed["schedule_lag_s"]).to_numpy(float)
            answered = ok["time_to_first_answer_s"].dropna().to_numpy(float)
            reasoning = ok["reasoning_tokens"].dropna().to_numpy(float)
            lag = point["schedule_lag_s"].to_numpy(float)  # every measured request, failed ones too
            from_server = ok[ok["token_source"] == "server"]
            successes = len(ok)
            completion_total = float(ok["completion_tokens"].sum())
            price = point["instance_price_per_hour_usd"].iloc[0]
            cost_usd = None if pd.isna(price) else price / 3600 * point["instance_count"].iloc[0] * window_s
            row: dict[str, Any] = dict(zip(keys, key, strict=True))
            for count in ("prompt_tokens", "completion_tokens"):
                pairs = from_server[from_server[f"{count}_local"] > 0]
                diffs = (pairs[count] - pairs[f"{count}_local"]) / pairs[f"{count}_local"] * 100
                row[f"{count}_local_diff_pct"] = float(diffs.mean()) if len(diffs) else None
            failed = point[point["status"] != "ok"]
            for name in ERROR_CLASSES:
                row[f"errors_{name}"] = int((failed["error_class"] == name).sum())
            row.update(
                runner_cpu_fraction=float(point["runner_cpu_fraction"].max()),
                client_bound=bool(point["client_bound"].any()),
                reasoning_tokens_mean=float(reasoning.mean()) if len(reasoning) else None,
                requests_reused_prompt=int(point["reused_prompt"].sum()),
                requests_local_token_counts=int((ok["token_source"] != "server").sum()),
            )
            row["goodput_share"], row["goodput_per_s"] = numpy_goodput(point, window_s, slo)
            row.update(
                branch_id=branch_id,
                target_name=point["target_name"].iloc[0],
                requests=len(point),
                successes=successes,
                errors=len(point) - successes,
                error_rate=(len(point) - successes) / len(point),
                window_s=window_s,
                latency_mean_s=latency.mean() if successes else None,
                prompt_tokens_mean=ok["prompt_tokens"].mean() if successes else None,
                completion_tokens_mean=ok["completion_tokens"].mean() if successes else None,
                prompt_token_throughput_per_s=float(ok["prompt_tokens"].sum()) / window_s,
                completion_token_throughput_per_s=completion_total / window_s,
                transactions_per_minute=successes / window_s * 60,
                price_per_txn_usd=cost_usd / successes if cost_usd is not None and successes else None,
                price_per_1m_output_tokens_usd=(
                    cost_usd / completion_total * 1e6 if cost_usd is not None and completion_total else None
                ),
            )
            for metric, values, wanted in (
                ("latency", latency, ("p50", "p90", "p95", "p99")),
                ("ttft", ttft, ("p50", "p95", "p99")),
                ("tpot", tpot, ("p50", "p95")),
                ("itl", itl, ("p50", "p95", "p99")),
                ("latency_from_schedule", latency_from_schedule, ("p50", "p95", "p99")),
                ("ttft_from_schedule", ttft_from_schedule, ("p95",)),
                ("schedule_lag", lag, ("p50", "p99")),
                ("time_to_first_answer", answered, ("p50", "p95", "p99")),
            ):
                for name in wanted:
                    value = float(np.percentile(values, QUANTILES[name])) if len(values) else None
                    row[f"{metric}_{name}_s"] = value
            rows.append(row)
    return pd.DataFrame(rows)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _point_key(row: pd.Series) -> tuple[Any, ...]:
    return tuple(None if _is_null(row[k]) else row[k] for k in KEY_COLUMNS)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    root = str(tmp_path_factory.mktemp("records"))
    by_branch = random_records(np.random.default_rng(20250101))
    write_records(root, RUN_ID, by_branch)
    # Another run in the same root must not leak into this run's figures.
    write_records(root, "other-run", random_records(np.random.default_rng(7)))
    return compute_metrics(root, RUN_ID, GOODPUT_SLO), numpy_metrics(by_branch, GOODPUT_SLO), root


def test_sql_matches_numpy_for_every_figure(random_run: tuple[pd.DataFrame, pd.DataFrame, str]) -> None:
    actual, expected, _ = random_run
    assert list(actual.columns) == list(METRIC_COLUMNS)
    assert len(actual) == len(expected) == 2 * sum(len(b[6]) for b in BRANCHES)
    assert (actual["run_id"] == RUN_ID).all()
    expected_by_key = {_point_key(row): row for _, row in expected.iterrows()}
    compared = [c for c in expected.columns if c not in KEY_COLUMNS]
    assert set(METRIC_COLUMNS) - set(compared) - set(KEY_COLUMNS) == {
        "run_id",
        "platform",
        "model",
        "container",
        "instance_type",
        "instance_count",
        "instance_price_per_hour_usd",
    }
    for _, row in actual.iterrows():
        want = expected_by_key.pop(_point_key(row))
        for column in compared:
            got, exp_value = row[column], want[column]
            where = f"{_point_key(row)} {column}"
            if _is_null(exp_value):
                assert _is_null(got), f"{where}: expected NULL, got {got}"
            elif isinstance(exp_value, bool | np.bool_):
                assert isinstance(got, bool | np.bool_) and got == exp_value, where
            elif isinstance(exp_value, str):
                assert got == exp_value, where
            else:
                assert got == pytest.approx(float(exp_value), rel=1e-9, abs=1e-12), where
    assert not expected_by_key


def test_self_check_columns_cover_both_verdicts_in_both_modes(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    actual, _, _ = random_run
    assert actual["client_bound"].dtype == bool
    for mode in ("concurrency", "rate"):
        rows = actual[actual["load_mode"] == mode]
        assert set(rows["client_bound"]) == {True, False}, mode
        assert rows["schedule_lag_p99_s"].notna().all()
        served = rows[rows["successes"] > 0]
        assert (served["latency_from_schedule_p50_s"] >= served["latency_p50_s"]).all()
    # Rows outside the window carry 7.5 (CPU) and True (bound); none of that may leak into a load point.
    assert (actual["runner_cpu_fraction"] <= 1.2).all()


def test_branch_columns_are_carried_and_null_price_gives_null_costs(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    actual, _, _ = random_run
    gamma = actual[actual["branch_id"] == "gamma-3333"]
    assert gamma["instance_type"].isna().all()
    assert gamma["price_per_txn_usd"].isna().all()
    assert gamma["price_per_1m_output_tokens_usd"].isna().all()
    assert gamma["ttft_p95_s"].isna().all()  # gamma never streams
    beta = actual[actual["branch_id"] == "beta-2222"]
    assert set(beta["instance_count"]) == {2}
    assert set(beta["instance_type"]) == {"ml.g5.12xlarge"}
    delta = actual[actual["branch_id"] == "delta-4444"]
    assert delta["concurrency"].isna().all()
    assert sorted(set(delta["request_rate_per_s"])) == [0.5, 2.0]


def test_point_where_every_request_failed(random_run: tuple[pd.DataFrame, pd.DataFrame, str]) -> None:
    actual, _, _ = random_run
    failed = actual[
        (actual["branch_id"] == "alpha-1111")
        & (actual["concurrency"] == 8)
        & (actual["payload_bin"] == "500-2000")
    ].iloc[0]
    assert failed["successes"] == 0
    assert failed["error_rate"] == 1.0
    assert failed["transactions_per_minute"] == 0.0
    assert _is_null(failed["latency_p95_s"])
    assert _is_null(failed["price_per_txn_usd"])


def test_rows_are_sorted_by_target_bin_and_concurrency(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    actual, _, _ = random_run
    keys = [
        (row.target_name, row.payload_bin, math.inf if _is_null(row.concurrency) else row.concurrency)
        for row in actual.itertuples()
    ]
    assert keys == sorted(keys)


def test_ttft_samples_are_successful_measured_streamed_requests(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    actual, _, root = random_run
    by_branch = random_records(np.random.default_rng(20250101))
    samples = ttft_samples(root, RUN_ID)
    assert list(samples.columns) == ["branch_id", "target_name", "ttft_s", "cumulative_share", "sample_count"]
    assert "gamma-3333" not in set(samples["branch_id"])
    for branch_id, records in by_branch.items():
        ttfts = np.sort(
            [r.ttft_s for r in records if r.phase == "measured" and r.status == "ok" and r.ttft_s is not None]
        )
        points = samples[samples["branch_id"] == branch_id]
        if not len(ttfts):
            assert points.empty
            continue
        # a branch of at most 1,000 requests: every one, at its share of the ECDF
        assert points["ttft_s"].tolist() == pytest.approx(ttfts.tolist(), rel=1e-15)
        n = len(ttfts)
        assert points["cumulative_share"].tolist() == pytest.approx((np.arange(1, n + 1) / n).tolist())
        assert set(points["sample_count"]) == {n}
    # the other run in the same root is not counted
    assert set(samples["branch_id"]) <= {row.branch_id for row in actual.itertuples()}


def test_ttft_samples_of_a_large_branch_are_thinned_to_exact_ecdf_points(tmp_path: Any) -> None:
    """Above 1,000 requests a branch keeps the first sample reaching each thousandth of the ECDF, the exact
    TTFT at its exact share: the chart costs the same at a million requests."""
    rng = np.random.default_rng(5)
    n = 4_321
    ttfts = rng.lognormal(-2.0, 0.5, n)
    records = [
        make_record(request_id=f"r{i}", ttft_s=float(t), send_epoch_s=float(i), end_epoch_s=float(i) + 1.0)
        for i, t in enumerate(ttfts)
    ]
    records.append(make_record(request_id="failed", status="error", ttft_s=0.0))
    records.append(make_record(request_id="warm", phase="warmup", ttft_s=99.0))
    write_records(str(tmp_path), RUN_ID, {"big-1": records})
    samples = ttft_samples(str(tmp_path), RUN_ID)
    ranks = np.arange(1, n + 1)
    kept = (ranks == 1) | (ranks == n) | (np.floor(ranks * 1000 / n) > np.floor((ranks - 1) * 1000 / n))
    ordered = np.sort(ttfts)
    assert len(samples) == int(kept.sum()) <= 1_001
    assert samples["ttft_s"].tolist() == pytest.approx(ordered[kept].tolist(), rel=1e-15)
    assert samples["cumulative_share"].tolist() == pytest.approx((ranks[kept] / n).tolist(), rel=1e-15)
    assert set(samples["sample_count"]) == {n}
    # a percentile read off the points is within a thousandth of the ECDF of the exact one
    share_at_p95 = float(np.interp(np.percentile(ttfts, 95), samples["ttft_s"], samples["cumulative_share"]))
    assert abs(share_at_p95 - 0.95) <= 0.001


# ----------------------------------------------------------------------------------- hand-computed case


def test_hand_computed_load_point(tmp_path: Any) -> None:
    """Four successes, one error, one warm-up, one cool-down: every figure worked out on paper."""
    common = {
        "instance_count": 2,
        "instance_price_per_hour_usd": 3.6,
        "concurrency": 4,
        "completion_tokens": 5,
    }
    latencies_s = [4.0, 3.0, 2.0, 1.0]
    lags_s = [0.1, 0.2, 0.3, 0.4]
    gaps = [[0.1, 0.2], [0.3], [], [0.4, 0.5, 0.6]]
    # Server counts vs the tokenizer's: only rows whose counts both came from the server are compared.
    sources = ["server", "server", "mixed", "tokenizer"]
    prompt_local = [8, 25, 1, 40]
    completion_local = [4, 5, 1, 5]
    records = [
        make_record(
            request_id=f"ok-{i}",
            send_epoch_s=100.0 + i,
            end_epoch_s=100.0 + i + latency_s,
            schedule_lag_s=lags_s[i],
            latency_s=latency_s,
            ttft_s=latency_s / 10,
            itl_s=gaps[i],
            prompt_tokens=10 * (i + 1),
            token_source=sources[i],
            prompt_tokens_local=prompt_local[i],
            completion_tokens_local=completion_local[i],
            runner_cpu_fraction=0.25,
            **common,
        )
        for i, latency_s in enumerate(latencies_s)
    ]
    records.append(
        make_record(
            request_id="err",
            send_epoch_s=102.0,
            end_epoch_s=108.0,
            schedule_lag_s=0.5,
            latency_s=6.0,
            status="error",
            runner_cpu_fraction=0.5,  # written in a later part of the load point
            **common,
        )
    )
    outside = {"latency_s": 500.0, "schedule_lag_s": 100.0, "runner_cpu_fraction": 0.99, "client_bound": True}
    records.append(
        make_record(
            request_id="warm", phase="warmup", send_epoch_s=0.0, end_epoch_s=500.0, **outside, **common
        )
    )
    records.append(
        make_record(
            request_id="cool", phase="cooldown", send_epoch_s=103.0, end_epoch_s=603.0, **outside, **common
        )
    )
    writer = RecordWriter(str(tmp_path), "hand", "hand-0001")
    writer.extend(records)
    writer.flush()

    row = compute_metrics(str(tmp_path), "hand").iloc[0]

    expected = {
        "requests": 5,
        "successes": 4,
        "errors": 1,
        "error_rate": 0.2,
        "window_s": 8.0,  # last end 108 - first send 100; the error counts, the warm-up does not
        "latency_mean_s": 2.5,
        "latency_p50_s": 2.5,  # ranks 1.5 of 0..3 -> halfway between 2 and 3
        "latency_p90_s": 3.7,
        "latency_p95_s": 3.85,
        "latency_p99_s": 3.97,
        "ttft_p50_s": 0.25,
        "ttft_p95_s": 0.385,
        "tpot_p50_s": 0.5625,  # (latency - ttft) / 4 = 0.225, 0.45, 0.675, 0.9
        "itl_p50_s": 0.35,  # pooled 0.1..0.6
        "itl_p95_s": 0.575,
        "itl_p99_s": 0.595,
        "prompt_tokens_mean": 25.0,
        "completion_tokens_mean": 5.0,
        "prompt_token_throughput_per_s": 12.5,  # 100 tokens / 8 s
        "completion_token_throughput_per_s": 2.5,
        "transactions_per_minute": 30.0,
        "price_per_txn_usd": 0.004,  # 3.6 $/h = 0.001 $/s x 2 instances x 8 s / 4
        "price_per_1m_output_tokens_usd": 800.0,  # 0.016 $ / 20 tokens x 1e6
        # latency + lag = 4.1, 3.2, 2.3, 1.4; sorted 1.4 2.3 3.2 4.1
        "latency_from_schedule_p50_s": 2.75,
        "latency_from_schedule_p95_s": 3.965,  # rank 2.85: 3.2 + 0.85 x 0.9
        "latency_from_schedule_p99_s": 4.073,  # rank 2.97: 3.2 + 0.97 x 0.9
        "ttft_from_schedule_p95_s": 0.5,  # ttft + lag = 0.4 + 0.1, 0.3 + 0.2, ...: all 0.5
        "schedule_lag_p50_s": 0.3,  # the error's lag counts: 0.1 .. 0.5
        "schedule_lag_p99_s": 0.496,  # rank 3.96: 0.4 + 0.96 x 0.1
        "runner_cpu_fraction": 0.5,  # the busier part; warm-up and cool-down rows are outside the window
        "prompt_tokens_local_diff_pct": 2.5,  # (10 - 8) / 8 = +25 %, (20 - 25) / 25 = -20 %
        "completion_tokens_local_diff_pct": 12.5,  # (5 - 4) / 4 = +25 %, (5 - 5) / 5 = 0 %
    }
    for column, value in expected.items():
        assert row[column] == pytest.approx(value, rel=1e-12), column
    assert row["client_bound"] is False or row["client_bound"] == np.False_  # only outside rows were bound


def test_single_success_is_every_percentile(tmp_path: Any) -> None:
    writer = RecordWriter(str(tmp_path), "one", "one-0001")
    writer.append(make_record(send_epoch_s=10.0, end_epoch_s=12.5, latency_s=2.5, ttft_s=0.5, itl_s=[0.25]))
    writer.flush()
    row = compute_metrics(str(tmp_path), "one").iloc[0]
    for name in ("p50", "p90", "p95", "p99"):
        assert row[f"latency_{name}_s"] == 2.5
    assert (row["ttft_p50_s"], row["ttft_p99_s"], row["tpot_p95_s"], row["itl_p99_s"]) == (
        0.5,
        0.5,
        0.5,
        0.25,
    )


def test_no_records_gives_empty_frame_with_columns(tmp_path: Any) -> None:
    frame = compute_metrics(str(tmp_path), "missing")
    assert frame.empty
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert ttft_samples(str(tmp_path), "missing").empty


# ------------------------------------------------------------------------------------------- the SQL


def test_athena_form_gives_the_figures_of_the_local_form(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    """Athena runs metrics.sql as written (window-ranked percentiles); locally DuckDB's quantile_cont replaces
    that CTE. Run unrewritten on DuckDB, the portable form gives the same figures."""
    actual, _, root = random_run
    params = request_slo_parameters(GOODPUT_SLO)
    portable = run_duckdb(
        root, RUN_ID, bind_parameters(load_sql("metrics"), "duckdb", run_id=RUN_ID, **params)
    )
    portable = portable.sort_values(SORT_COLUMNS, kind="stable", na_position="last").reset_index(drop=True)
    assert len(portable) == len(actual)
    for column in METRIC_COLUMNS:
        for got, want in zip(portable[column], actual[column], strict=True):
            if _is_null(want):
                assert _is_null(got), column
            elif isinstance(want, str):
                assert got == want, column
            else:
                assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-15), column


@pytest.mark.parametrize("name", ["metrics", "ttft_samples"])
def test_sql_is_exact_and_portable(name: str) -> None:
    trino = load_sql(name)
    params = request_slo_parameters() if name == "metrics" else {}
    duck = to_duckdb(trino, run_id="r1", **params)
    athena = bind_parameters(trino, "trino", run_id="r1", **params)
    # Athena has no exact percentile aggregate: its text ranks samples. DuckDB's may use quantile_cont, exact
    # (report.query.duckdb_exact_percentiles); never an approximate one.
    for text, dialect, allowed in ((duck, "duckdb", {"PercentileCont"}), (athena, "trino", set())):
        assert "approx_percentile" not in text.lower() and "approx_quantile" not in text.lower()
        functions = {type(node).__name__ for node in sqlglot.parse_one(text, read=dialect).find_all(exp.Func)}
        used = functions & {"ApproxQuantile", "Quantile", "PercentileCont", "PercentileDisc", "Median"}
        assert used <= allowed
    assert "FROM records" in duck
    assert "run_id = 'r1'" in duck and "run_id = 'r1'" in athena


def test_parameters_are_bound_as_quoted_literals() -> None:
    sql = to_duckdb("SELECT * FROM records WHERE run_id = :run_id", run_id="x' OR '1'='1")
    assert "run_id = 'x'' OR ''1''=''1'" in sql


def test_unbound_or_unknown_parameters_are_rejected() -> None:
    with pytest.raises(QueryError, match="unbound parameter"):
        to_duckdb("SELECT * FROM records WHERE run_id = :run_id")
    with pytest.raises(QueryError, match="not in the query"):
        to_duckdb("SELECT * FROM records WHERE run_id = :run_id", run_id="a", branch="b")
    with pytest.raises(QueryError, match="no query named"):
        load_sql("nothing_here")


def test_reasoning_figures_only_where_answers_reasoned(
    random_run: tuple[pd.DataFrame, pd.DataFrame, str],
) -> None:
    actual, _, _ = random_run
    beta = actual[(actual["branch_id"] == "beta-2222") & (actual["successes"] > 0)]
    assert beta["reasoning_tokens_mean"].notna().all()
    assert actual[actual["branch_id"] != "beta-2222"]["reasoning_tokens_mean"].isna().all()
    streamed = actual[actual["ttft_p50_s"].notna()]
    assert streamed["time_to_first_answer_p50_s"].notna().all()
    # every answer's first token comes at or after its first token of any kind
    assert (streamed["time_to_first_answer_p50_s"] >= streamed["ttft_p50_s"]).all()
    others = streamed[streamed["branch_id"] != "beta-2222"]
    assert (others["time_to_first_answer_p99_s"] == others["ttft_p99_s"]).all()


# ------------------------------------------------------------------------------------------- goodput


def test_goodput_counts_some_requests_not_all(random_run: tuple[pd.DataFrame, pd.DataFrame, str]) -> None:
    actual, _, _ = random_run
    shares = actual["goodput_share"].astype(float)
    assert ((shares > 0) & (shares < 1)).any() and (shares <= 1 - actual["error_rate"] + 1e-12).all()
    # branch gamma never streams: no TTFT, so no request meets the TTFT SLO
    assert (actual.loc[actual["branch_id"] == "gamma-3333", "goodput_share"] == 0).all()


@pytest.mark.parametrize(
    "slo",
    [
        Slo(),
        Slo(request_latency_s=1.0),
        Slo(request_tpot_s=0.004),
        Slo(request_ttft_s=0.2, request_latency_s=2.0),
    ],
    ids=["none", "latency", "tpot", "ttft-and-latency"],
)
def test_goodput_counts_requests_within_every_slo_set(
    slo: Slo, random_run: tuple[pd.DataFrame, pd.DataFrame, str]
) -> None:
    _, _, root = random_run
    actual = compute_metrics(root, RUN_ID, slo)
    expected = numpy_metrics(random_records(np.random.default_rng(20250101)), slo)
    expected_by_key = {_point_key(row): row for _, row in expected.iterrows()}
    for _, row in actual.iterrows():
        want = expected_by_key[_point_key(row)]
        for column in ("goodput_share", "goodput_per_s"):
            if _is_null(want[column]):
                assert _is_null(row[column]), column  # no per-request SLO: no goodput
            else:
                assert row[column] == pytest.approx(float(want[column]), rel=1e-12), column


def test_athena_metrics_query_binds_the_per_request_slos() -> None:
    text = athena_metrics_query("r1", ["b-1"], Slo(request_tpot_s=0.05))
    tree = sqlglot.parse_one(text, read="trino")
    assert not list(tree.find_all(exp.Placeholder))
    casts = {node.this.sql("trino") for node in tree.find_all(exp.Cast) if node.to.is_type("double")}
    assert "0.05" in casts and "NULL" in casts  # TPOT bound, TTFT and latency unset
