"""The comparison of two runs: thresholds and significance on synthetic request sets, false alarms counted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fmbench.config import RegressionOptions
from fmbench.suite import SuiteValidationError, validate_suite_data
from report.compare import compare_runs, normal_cdf, normal_quantile, two_proportion_test
from report.query import REQUEST_SAMPLE_COLUMNS


def requests(
    rng: np.random.Generator,
    *,
    n: int = 300,
    latency_scale: float = 1.0,
    ttft_scale: float = 1.0,
    error_rate: float = 0.02,
    concurrency: int = 4,
    target: str = "alpha",
    payload_bin: str = "50-500",
) -> pd.DataFrame:
    """``n`` measured requests of one closed-loop point: lognormal latencies, TTFT a share of each."""
    latency = rng.lognormal(0.0, 0.35, n) * latency_scale
    ttft = latency * rng.uniform(0.1, 0.3, n) * ttft_scale / latency_scale
    ok = rng.random(n) >= error_rate
    send = np.cumsum(latency) / concurrency
    return pd.DataFrame(
        {
            "target_name": target,
            "load_mode": "concurrency",
            "concurrency": concurrency,
            "request_rate_per_s": None,
            "payload_bin": payload_bin,
            "is_success": ok,
            "latency_s": np.where(ok, latency, np.nan),
            "ttft_s": np.where(ok, ttft, np.nan),
            "send_epoch_s": send,
            "end_epoch_s": send + latency,
        },
        columns=list(REQUEST_SAMPLE_COLUMNS),
    )


OPTIONS = RegressionOptions()


def test_slower_candidate_regresses_with_the_metric_named() -> None:
    rng = np.random.default_rng(1)
    result = compare_runs(requests(rng), requests(rng, latency_scale=1.35), OPTIONS, "base-run")
    assert result.verdict == "regressed"
    assert "latency_p95" in result.regressed_metrics
    assert "transactions_per_minute" in result.regressed_metrics  # Little's law: slower means fewer
    latency = next(f for f in result.findings if f.metric == "latency_p95")
    assert latency.change is not None and latency.change > 10
    assert latency.interval_low is not None and latency.interval_low > 0
    assert result.baseline_run_id == "base-run"
    assert "bootstrap" in result.method and "95%" in result.method


def test_slower_first_token_alone_is_named() -> None:
    rng = np.random.default_rng(2)
    result = compare_runs(requests(rng), requests(rng, ttft_scale=1.5), OPTIONS, "b")
    assert result.regressed_metrics == ["ttft_p95"]


def test_change_below_threshold_is_not_a_regression_even_when_significant() -> None:
    rng = np.random.default_rng(3)
    result = compare_runs(requests(rng, n=4000), requests(rng, n=4000, latency_scale=1.05), OPTIONS, "b")
    latency = next(f for f in result.findings if f.metric == "latency_p95")
    assert latency.interval_low is not None and latency.interval_low > 0  # significant ...
    assert latency.verdict == "unchanged"  # ... but under the 10 % threshold


def test_large_change_on_few_requests_is_not_significant() -> None:
    rng = np.random.default_rng(4)
    options = RegressionOptions(thresholds={"latency_p95_pct": 5})
    base, cand = requests(rng, n=6, error_rate=0), requests(rng, n=6, error_rate=0, latency_scale=1.12)
    finding = next(f for f in compare_runs(base, cand, options, "b").findings if f.metric == "latency_p95")
    assert finding.interval_low is not None and finding.interval_low < 0 < (finding.interval_high or 0)
    assert finding.verdict == "unchanged"


def test_error_rate_rise_is_tested_as_two_proportions() -> None:
    rng = np.random.default_rng(5)
    result = compare_runs(requests(rng, error_rate=0.0), requests(rng, error_rate=0.12), OPTIONS, "b")
    error = next(f for f in result.findings if f.metric == "error_rate")
    assert error.verdict == "regressed" and error.change_unit == "points"
    assert error.p_value is not None and error.p_value < 0.05
    assert error.change == pytest.approx((error.candidate - error.baseline) * 100)  # type: ignore[operator]


def test_identical_configurations_give_at_most_one_false_alarm_in_twenty_pairs() -> None:
    alarms = []
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        result = compare_runs(requests(rng), requests(rng), OPTIONS, f"b{seed}")
        alarms.append(result.verdict == "regressed")
    assert sum(alarms) <= 1


def test_points_are_matched_and_the_rest_listed_not_guessed() -> None:
    rng = np.random.default_rng(6)
    base = pd.concat([requests(rng), requests(rng, concurrency=8)])
    cand = pd.concat([requests(rng), requests(rng, payload_bin="500-2000")])
    result = compare_runs(base, cand, OPTIONS, "b")
    # accuracy is per target ("all" bins), the other metrics per matched load point
    assert {(f.concurrency, f.payload_bin) for f in result.findings} == {(4, "50-500"), (None, "all")}
    assert [(p.run, p.concurrency, p.payload_bin) for p in result.unmatched] == [
        ("baseline", 8, "50-500"),
        ("candidate", 4, "500-2000"),
    ]


def test_accuracy_is_skipped_without_judgments_and_ttft_without_streaming() -> None:
    rng = np.random.default_rng(7)
    base, cand = requests(rng), requests(rng)
    cand["ttft_s"] = np.nan
    result = compare_runs(base, cand, OPTIONS, "b")
    by_metric = {f.metric: f for f in result.findings}
    assert by_metric["accuracy"].verdict == "skipped" and by_metric["accuracy"].reason
    assert by_metric["ttft_p95"].verdict == "skipped"
    assert result.verdict == "pass"


def test_only_the_chosen_metrics_are_compared_and_the_seed_repeats() -> None:
    rng = np.random.default_rng(8)
    base, cand = requests(rng), requests(rng, latency_scale=1.2)
    options = RegressionOptions(metrics=["latency_p95"], seed=42)
    first = compare_runs(base, cand, options, "b")
    assert [f.metric for f in first.findings] == ["latency_p95"]
    assert compare_runs(base, cand, options, "b") == first


def test_two_proportion_test_by_hand() -> None:
    diff, se, p_value = two_proportion_test(5, 100, 15, 100)
    pooled = 20 / 200
    z = 0.10 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert diff == pytest.approx(10.0)
    assert p_value == pytest.approx(1 - normal_cdf(z))
    assert se == pytest.approx(100 * math.sqrt(0.05 * 0.95 / 100 + 0.15 * 0.85 / 100))
    assert normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-5)


def test_regression_section_defaults_and_errors() -> None:
    base = {
        "name": "s",
        "targets": [{"name": "t", "platform": "emulator"}],
        "workload": {"bins": [{"min_tokens": 1, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }
    suite = validate_suite_data({**base, "regression": {}})
    assert suite.regression is not None
    assert suite.regression.baseline == "latest" and suite.regression.confidence == 0.95
    assert suite.regression.thresholds.latency_p95_pct == 10
    assert suite.regression.thresholds.transactions_per_minute_pct == 10
    assert suite.regression.thresholds.error_rate_points == 1
    assert suite.regression.thresholds.accuracy_points == 2
    with pytest.raises(SuiteValidationError) as error:
        validate_suite_data({**base, "regression": {"baseline": "not a run!", "confidence": 1.5}})
    text = "\n".join(str(problem) for problem in error.value.problems)
    assert "regression.baseline" in text and "regression.confidence" in text


def test_open_loop_points_match_by_rate() -> None:
    rng = np.random.default_rng(9)
    base, cand = requests(rng, error_rate=0.0), requests(rng, error_rate=0.25)
    for frame in (base, cand):
        frame["load_mode"] = "rate"
        frame["concurrency"] = pd.array([None] * len(frame), dtype="Int64")
        frame["request_rate_per_s"] = 2.0
    result = compare_runs(base, cand, OPTIONS, "b")
    per_point = [f for f in result.findings if f.metric != "accuracy"]  # accuracy is per target
    assert {(f.concurrency, f.request_rate_per_s) for f in per_point} == {(None, 2.0)}
    throughput = next(f for f in result.findings if f.metric == "transactions_per_minute")
    assert throughput.verdict == "regressed"  # the schedule is fixed: a quarter failing is a quarter fewer
    assert {"error_rate", "transactions_per_minute"} <= set(result.regressed_metrics)
