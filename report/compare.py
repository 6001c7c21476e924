"""Two runs compared request by request: a verdict per metric and load point, and overall.

See docs/regression.md.

Pure: the caller reads each run's measured requests (``report/sql/request_samples.sql``) and passes them in,
so the statistics can be checked on synthetic samples. A change counts as a regression only when it is
beyond the suite's threshold in the worse direction *and* significant at the confidence level: percentiles
and throughput get a seeded percentile-bootstrap interval of the relative change (each run's requests of the
point resampled independently), the error rate a one-sided two-proportion z-test. Accuracy is per target,
not per load point (a candidate's answers are judged once per distinct prompt): the majority-correct share
of its judged prompts (accuracy.sql's ``candidate`` rows of each run), by the same two-proportion test.
numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fmbench.config import RegressionOptions, RegressionThresholds
from report.query import REQUEST_SAMPLE_COLUMNS
from report.result import FindingVerdict, RegressionFinding, RegressionResult, UnmatchedPoint

SAMPLE_COLUMNS = REQUEST_SAMPLE_COLUMNS
# Resampled values per chunk: 2,000 resamples of a 5,000-request point stay within ~80 MB of indices.
_CHUNK_VALUES = 4_000_000


def method_text(options: RegressionOptions) -> str:
    """What the report states about how the verdict was reached."""
    return (
        "A change is a regression when it exceeds its threshold in the worse direction and is significant "
        f"at {options.confidence:.0%} confidence: p95 latency, p95 TTFT and transactions per minute by a "
        f"percentile bootstrap of the relative change ({options.resamples:,} resamples of each run's "
        f"measured requests, seed {options.seed}; throughput of a closed loop via Little's law, "
        "concurrency x successes / summed request time); error rate by a two-proportion z-test "
        "(pooled); judged accuracy per target (majority-correct prompts / judged prompts, all bins) by the "
        "same test. Significant means the two-sided interval at that level excludes no change. "
        "The confidence holds for the comparison as a whole: with m tests made, each is run at "
        "1 - (1 - confidence) / m (Bonferroni), so more load points do not mean more false alarms. "
        "Load points are matched by target name, load point (concurrency or rate) and prompt bin."
    )


class PointKey(NamedTuple):
    target_name: str
    load_mode: str
    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str

    def label(self) -> str:
        load = f"c={self.concurrency}" if self.concurrency is not None else f"{self.request_rate_per_s:g}/s"
        return f"{self.target_name} {load} bin {self.payload_bin}"


@dataclass(frozen=True)
class _Point:
    """One run's measured requests of one load point, as arrays."""

    is_success: np.ndarray
    latency_s: np.ndarray  # successful requests only
    ttft_s: np.ndarray  # successful streamed requests only
    duration_s: np.ndarray  # every request: end minus send
    window_s: float

    @property
    def requests(self) -> int:
        return int(self.is_success.size)

    @property
    def successes(self) -> int:
        return int(self.is_success.sum())

    def transactions_per_minute(self) -> float | None:
        return 60.0 * self.successes / self.window_s if self.window_s > 0 else None


def _none(value: Any) -> Any:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else value
    )


def _points(samples: pd.DataFrame) -> dict[PointKey, _Point]:
    missing = [name for name in SAMPLE_COLUMNS if name not in samples.columns]
    if missing:
        raise ValueError(f"request samples lack column(s): {', '.join(missing)}")
    points: dict[PointKey, _Point] = {}
    keys = ["target_name", "load_mode", "concurrency", "request_rate_per_s", "payload_bin"]
    for group, frame in samples.groupby(keys, dropna=False, sort=True):
        target, mode, concurrency, rate, payload_bin = (_none(v) for v in group)
        key = PointKey(
            str(target),
            str(mode),
            None if concurrency is None else int(concurrency),
            None if rate is None else float(rate),
            str(payload_bin),
        )
        ok = frame["is_success"].fillna(False).to_numpy(dtype=bool)
        latency = frame["latency_s"].to_numpy(dtype=float, na_value=np.nan)
        ttft = frame["ttft_s"].to_numpy(dtype=float, na_value=np.nan)
        send = frame["send_epoch_s"].to_numpy(dtype=float, na_value=np.nan)
        end = frame["end_epoch_s"].to_numpy(dtype=float, na_value=np.nan)
        ok_latency = latency[ok & ~np.isnan(latency)]
        ok_ttft = ttft[ok & ~np.isnan(ttft)]
        duration = np.nan_to_num(end - send, nan=0.0)
        window = float(np.nanmax(end) - np.nanmin(send)) if frame.size else 0.0
        points[key] = _Point(ok, ok_latency, ok_ttft, duration, window if math.isfinite(window) else 0.0)
    return points


def _resample_stat(values: np.ndarray, rng: np.random.Generator, resamples: int, stat: str) -> np.ndarray:
    """``resamples`` bootstrap replicates of a statistic of ``values``, vectorised in bounded chunks."""
    n = values.size
    per_chunk = max(1, _CHUNK_VALUES // max(n, 1))
    out = np.empty(resamples)
    for start in range(0, resamples, per_chunk):
        count = min(per_chunk, resamples - start)
        drawn = values[rng.integers(0, n, size=(count, n))]
        out[start : start + count] = np.quantile(drawn, 0.95, axis=1) if stat == "p95" else drawn.mean(axis=1)
    return out


def _throughput_replicates(
    point: _Point, concurrency: int | None, rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """Replicates of a quantity proportional to the point's throughput.

    Closed loop (Little's law): concurrency x successes / summed request time, so slower requests lower it.
    Open loop: the offered rate is fixed by the schedule, so the throughput moves with the success share.
    """
    n = point.requests
    per_chunk = max(1, _CHUNK_VALUES // max(n, 1))
    out = np.empty(resamples)
    ok = point.is_success.astype(float)
    for start in range(0, resamples, per_chunk):
        count = min(per_chunk, resamples - start)
        index = rng.integers(0, n, size=(count, n))
        successes = ok[index].sum(axis=1)
        if concurrency is not None:
            busy = point.duration_s[index].sum(axis=1)
            out[start : start + count] = np.where(
                busy > 0, concurrency * successes / np.maximum(busy, 1e-12), 0.0
            )
        else:
            out[start : start + count] = successes / n
    return out


def _interval(ratios: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def _relative_finding(
    key: PointKey,
    metric: str,
    baseline: float | None,
    candidate: float | None,
    base_reps: np.ndarray,
    cand_reps: np.ndarray,
    threshold_pct: float,
    higher_is_worse: bool,
    confidence: float,
) -> RegressionFinding:
    """Percent change with a bootstrap interval of cand/base - 1; significant when the interval excludes 0."""
    valid = base_reps > 0
    ratios = (cand_reps[valid] / base_reps[valid] - 1.0) * 100.0
    change = (candidate / baseline - 1.0) * 100.0 if baseline and candidate is not None else None
    if change is None or ratios.size == 0:
        return _skipped(key, metric, baseline, candidate, "pct", threshold_pct, "no figure to compare")
    low, high = _interval(ratios, confidence)
    worse = change if higher_is_worse else -change
    worse_significant = low > 0 if higher_is_worse else high < 0
    better_significant = high < 0 if higher_is_worse else low > 0
    verdict: FindingVerdict = "unchanged"
    if worse > threshold_pct and worse_significant:
        verdict = "regressed"
    elif -worse > threshold_pct and better_significant:
        verdict = "improved"
    return RegressionFinding(
        target_name=key.target_name,
        payload_bin=key.payload_bin,
        concurrency=key.concurrency,
        request_rate_per_s=key.request_rate_per_s,
        metric=metric,
        baseline=baseline,
        candidate=candidate,
        change=change,
        change_unit="pct",
        interval_low=low,
        interval_high=high,
        threshold=threshold_pct,
        verdict=verdict,
    )


def _skipped(
    key: PointKey,
    metric: str,
    baseline: float | None,
    candidate: float | None,
    unit: str,
    threshold: float,
    reason: str,
) -> RegressionFinding:
    return RegressionFinding(
        target_name=key.target_name,
        payload_bin=key.payload_bin,
        concurrency=key.concurrency,
        request_rate_per_s=key.request_rate_per_s,
        metric=metric,
        baseline=baseline,
        candidate=candidate,
        change=None,
        change_unit="points" if unit == "points" else "pct",
        interval_low=None,
        interval_high=None,
        threshold=threshold,
        verdict="skipped",
        reason=reason,
    )


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def normal_quantile(p: float) -> float:
    """Inverse of ``normal_cdf`` by bisection: exact enough for a confidence level, and no scipy."""
    low, high = -10.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if normal_cdf(middle) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def two_proportion_test(
    base_events: int, base_total: int, cand_events: int, cand_total: int
) -> tuple[float, float, float]:
    """(difference in points, its standard error in points, one-sided p of an increase), pooled z-test."""
    p_base, p_cand = base_events / base_total, cand_events / cand_total
    pooled = (base_events + cand_events) / (base_total + cand_total)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / base_total + 1.0 / cand_total))
    diff = p_cand - p_base
    no_spread = 1.0 if diff <= 0 else 0.0
    p_value = no_spread if pooled_se == 0 else 1.0 - normal_cdf(diff / pooled_se)
    se = math.sqrt(p_base * (1 - p_base) / base_total + p_cand * (1 - p_cand) / cand_total)
    return diff * 100.0, se * 100.0, p_value


def _error_rate_finding(
    key: PointKey, base: _Point, cand: _Point, threshold: float, confidence: float
) -> RegressionFinding:
    base_errors, cand_errors = base.requests - base.successes, cand.requests - cand.successes
    diff, se, p_value = two_proportion_test(base_errors, base.requests, cand_errors, cand.requests)
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    alpha = (1.0 - confidence) / 2.0  # one side of the two-sided interval: significant = it excludes 0
    verdict: FindingVerdict = "unchanged"
    if diff > threshold and p_value < alpha:
        verdict = "regressed"
    elif -diff > threshold and 1.0 - p_value < alpha:
        verdict = "improved"
    return RegressionFinding(
        target_name=key.target_name,
        payload_bin=key.payload_bin,
        concurrency=key.concurrency,
        request_rate_per_s=key.request_rate_per_s,
        metric="error_rate",
        baseline=base_errors / base.requests,
        candidate=cand_errors / cand.requests,
        change=diff,
        change_unit="points",
        interval_low=diff - z * se,
        interval_high=diff + z * se,
        threshold=threshold,
        p_value=p_value,
        verdict=verdict,
    )


def _tests_of(base: _Point, cand: _Point, options: RegressionOptions) -> int:
    """How many tests a matched point adds: the metrics that have figures in both runs."""
    present = {
        "latency_p95": base.latency_s.size > 0 and cand.latency_s.size > 0,
        "ttft_p95": base.ttft_s.size > 0 and cand.ttft_s.size > 0,
        "transactions_per_minute": True,
        "error_rate": True,
    }
    return sum(present.get(metric, False) for metric in options.metrics)


def _point_findings(
    key: PointKey,
    base: _Point,
    cand: _Point,
    options: RegressionOptions,
    confidence: float,
    rng: np.random.Generator,
) -> Iterator[RegressionFinding]:
    """The findings of one matched point, each test at ``confidence`` (already adjusted for their number)."""
    thresholds: RegressionThresholds = options.thresholds
    for metric in options.metrics:
        if metric in ("latency_p95", "ttft_p95"):
            base_values = base.latency_s if metric == "latency_p95" else base.ttft_s
            cand_values = cand.latency_s if metric == "latency_p95" else cand.ttft_s
            threshold = thresholds.latency_p95_pct if metric == "latency_p95" else thresholds.ttft_p95_pct
            if base_values.size == 0 or cand_values.size == 0:
                why = (
                    "no time to first token (not streamed)"
                    if metric == "ttft_p95"
                    else "no successful request"
                )
                yield _skipped(key, metric, None, None, "pct", threshold, why)
                continue
            yield _relative_finding(
                key,
                metric,
                float(np.quantile(base_values, 0.95)),
                float(np.quantile(cand_values, 0.95)),
                _resample_stat(base_values, rng, options.resamples, "p95"),
                _resample_stat(cand_values, rng, options.resamples, "p95"),
                threshold,
                True,
                confidence,
            )
        elif metric == "transactions_per_minute":
            yield _relative_finding(
                key,
                metric,
                base.transactions_per_minute(),
                cand.transactions_per_minute(),
                _throughput_replicates(base, key.concurrency, rng, options.resamples),
                _throughput_replicates(cand, key.concurrency, rng, options.resamples),
                thresholds.transactions_per_minute_pct,
                False,
                confidence,
            )
        elif metric == "error_rate":
            yield _error_rate_finding(key, base, cand, thresholds.error_rate_points, confidence)
        # accuracy is compared per target, not per load point: _accuracy_findings


ACCURACY_BIN = "all"  # an accuracy finding covers every bin of its target (RegressionFinding.payload_bin)


class _Judged(NamedTuple):
    """One run's judged prompts of one target and how many of them the majority called correct."""

    prompts: int
    majority_correct: int


def _judged(accuracy: pd.DataFrame | None) -> dict[str, _Judged]:
    """Target name -> judged prompts, from accuracy.sql's ``candidate`` rows (summed over a target's
    branches); empty for a run that was not judged."""
    if accuracy is None or accuracy.empty:
        return {}
    rows = accuracy[accuracy["figure"] == "candidate"]
    totals: dict[str, _Judged] = {}
    for record in rows.to_dict(orient="records"):
        name = str(record["target_name"])
        before = totals.get(name, _Judged(0, 0))
        prompts, correct = int(_none(record["prompts"]) or 0), int(_none(record["majority_correct"]) or 0)
        totals[name] = _Judged(before.prompts + prompts, before.majority_correct + correct)
    return {name: judged for name, judged in totals.items() if judged.prompts > 0}


def _accuracy_key(target_name: str) -> PointKey:
    return PointKey(target_name, "", None, None, ACCURACY_BIN)


def _accuracy_finding(
    target_name: str, base: _Judged, cand: _Judged, threshold: float, confidence: float
) -> RegressionFinding:
    """A drop of the majority-correct share by more than ``threshold`` points that the one-sided pooled
    two-proportion test finds significant is a regression; a rise as large and significant, an improvement."""
    diff, se, p_rise = two_proportion_test(
        base.majority_correct, base.prompts, cand.majority_correct, cand.prompts
    )
    p_drop = 1.0 - p_rise if diff != 0 or se > 0 else 1.0
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    alpha = (1.0 - confidence) / 2.0
    verdict: FindingVerdict = "unchanged"
    if -diff > threshold and p_drop < alpha:
        verdict = "regressed"
    elif diff > threshold and p_rise < alpha:
        verdict = "improved"
    return RegressionFinding(
        target_name=target_name,
        payload_bin=ACCURACY_BIN,
        concurrency=None,
        request_rate_per_s=None,
        metric="accuracy",
        baseline=base.majority_correct / base.prompts,
        candidate=cand.majority_correct / cand.prompts,
        change=diff,
        change_unit="points",
        interval_low=diff - z * se,
        interval_high=diff + z * se,
        threshold=threshold,
        p_value=p_drop,
        verdict=verdict,
    )


def _accuracy_findings(
    targets: list[str],
    base: dict[str, _Judged],
    cand: dict[str, _Judged],
    threshold: float,
    confidence: float,
) -> Iterator[RegressionFinding]:
    """One finding per target measured in both runs: compared when both runs judged it, else skipped."""
    for target in targets:
        if target in base and target in cand:
            yield _accuracy_finding(target, base[target], cand[target], threshold, confidence)
            continue
        missing = [run for run, judged in (("baseline", base), ("candidate", cand)) if target not in judged]
        yield _skipped(
            _accuracy_key(target),
            "accuracy",
            base[target].majority_correct / base[target].prompts if target in base else None,
            cand[target].majority_correct / cand[target].prompts if target in cand else None,
            "points",
            threshold,
            "no judged accuracy in the runs"
            if len(missing) == 2
            else f"no judged accuracy of this target in the {missing[0]}",
        )


def compare_runs(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    options: RegressionOptions,
    baseline_run_id: str,
    *,
    baseline_accuracy: pd.DataFrame | None = None,
    candidate_accuracy: pd.DataFrame | None = None,
) -> RegressionResult:
    """The candidate's measured requests against the baseline's (columns ``SAMPLE_COLUMNS``).

    Points are matched by (target name, load mode, concurrency, rate, prompt bin); a point of only one run
    is listed as unmatched. The generator is seeded once per comparison, so the same inputs give the same
    intervals. ``baseline_accuracy`` and ``candidate_accuracy`` are each run's accuracy.sql rows (None: not
    judged); accuracy is compared per target matched in both runs' requests.
    """
    base_points, cand_points = _points(baseline), _points(candidate)
    rng = np.random.default_rng(options.seed)
    matched = sorted(base_points.keys() & cand_points.keys(), key=_sort_key)
    targets = sorted({key.target_name for key in matched})
    base_judged, cand_judged = _judged(baseline_accuracy), _judged(candidate_accuracy)
    accuracy_tests = (
        sum(t in base_judged and t in cand_judged for t in targets) if "accuracy" in options.metrics else 0
    )
    tests = sum(_tests_of(base_points[key], cand_points[key], options) for key in matched) + accuracy_tests
    per_test = 1.0 - (1.0 - options.confidence) / max(tests, 1)
    findings: list[RegressionFinding] = []
    for key in matched:
        findings.extend(_point_findings(key, base_points[key], cand_points[key], options, per_test, rng))
    if "accuracy" in options.metrics:
        findings.extend(
            _accuracy_findings(
                targets, base_judged, cand_judged, options.thresholds.accuracy_points, per_test
            )
        )
    unmatched = [
        UnmatchedPoint(
            run=run,
            target_name=key.target_name,
            payload_bin=key.payload_bin,
            concurrency=key.concurrency,
            request_rate_per_s=key.request_rate_per_s,
        )
        for run, keys in (
            ("baseline", base_points.keys() - cand_points.keys()),
            ("candidate", cand_points.keys() - base_points.keys()),
        )
        for key in sorted(keys, key=_sort_key)
    ]
    regressed = sorted({f.metric for f in findings if f.verdict == "regressed"})
    return RegressionResult(
        baseline_run_id=baseline_run_id,
        verdict="regressed" if regressed else "pass",
        method=method_text(options),
        confidence=options.confidence,
        regressed_metrics=regressed,
        findings=findings,
        unmatched=unmatched,
    )


def no_baseline(options: RegressionOptions, why: str) -> RegressionResult:
    """The result of a run that has nothing to be compared with (the first run of a suite)."""
    return RegressionResult(
        baseline_run_id=None,
        verdict="no_baseline",
        method=f"{method_text(options)} No comparison: {why}",
        confidence=options.confidence,
        regressed_metrics=[],
        findings=[],
    )


def _sort_key(key: PointKey) -> tuple[Any, ...]:
    return (
        key.target_name,
        key.payload_bin,
        key.load_mode,
        -1 if key.concurrency is None else key.concurrency,
        -1.0 if key.request_rate_per_s is None else key.request_rate_per_s,
    )
