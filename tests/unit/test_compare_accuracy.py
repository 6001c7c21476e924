"""Judged accuracy compared between two runs: a two-proportion test per target on majority-correct prompts,
with the judgments of both runs read by accuracy.sql from real Parquet."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from judgment_factory import judgment, write_judgments
from test_compare import requests

from fmbench.config import RegressionOptions, RegressionThresholds
from report.compare import compare_runs, normal_cdf, normal_quantile
from report.query import accuracy_figures

OPTIONS = RegressionOptions()
JUDGES = ("claude", "llama", "nova")


def judged(root: Path, run_id: str, correct: int, prompts: int, target: str = "alpha") -> pd.DataFrame:
    """A run whose ``correct`` of ``prompts`` prompts the three judges call correct (2 to 1), the rest
    incorrect (unanimously), read back with accuracy.sql."""
    rows: list[dict[str, Any]] = []
    for number in range(prompts):
        right = number < correct
        verdicts = ["correct", "correct", "incorrect"] if right else ["incorrect"] * 3
        rows += [judgment(target, f"p{number}", j, v) for j, v in zip(JUDGES, verdicts, strict=True)]
    write_judgments(root, run_id, {f"{target}-1234": rows})
    figures = accuracy_figures(str(root), run_id)
    assert figures is not None
    return figures


def accuracy_of(result: Any) -> Any:
    (finding,) = [f for f in result.findings if f.metric == "accuracy"]
    return finding


def test_a_significant_drop_beyond_the_threshold_regresses(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    base = judged(tmp_path, "base", 170, 200)  # 85%
    cand = judged(tmp_path, "cand", 130, 200)  # 65%
    result = compare_runs(
        requests(rng), requests(rng), OPTIONS, "base", baseline_accuracy=base, candidate_accuracy=cand
    )
    finding = accuracy_of(result)
    assert (finding.target_name, finding.payload_bin, finding.concurrency) == ("alpha", "all", None)
    assert finding.baseline == pytest.approx(0.85) and finding.candidate == pytest.approx(0.65)
    assert finding.change == pytest.approx(-20.0) and finding.change_unit == "points"
    # One-sided p of the drop by the pooled two-proportion z formula, by hand.
    pooled = 300 / 400
    z = (0.65 - 0.85) / math.sqrt(pooled * (1 - pooled) * (2 / 200))
    assert finding.p_value == pytest.approx(normal_cdf(z))
    se = math.sqrt(0.85 * 0.15 / 200 + 0.65 * 0.35 / 200) * 100
    # Five tests made (four metrics of the one load point, and accuracy): each at 1 - 0.05 / 5 (Bonferroni).
    z = normal_quantile(1 - 0.05 / 5 / 2)
    assert finding.interval_high - finding.interval_low == pytest.approx(2 * se * z)
    assert finding.interval_low == pytest.approx(-20.0 - se * z)
    assert finding.verdict == "regressed"
    assert result.verdict == "regressed" and "accuracy" in result.regressed_metrics


def test_a_small_or_insignificant_change_is_unchanged_and_a_rise_improves(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    base = judged(tmp_path, "base", 170, 200)
    small_drop = judged(tmp_path, "small", 167, 200)  # 1.5 points: under the 2-point threshold
    few = judged(tmp_path, "few", 6, 10)  # 25 points down, but on 10 prompts: not significant
    rise = judged(tmp_path, "rise", 196, 200)
    samples = requests(rng)
    for cand, verdict in ((small_drop, "unchanged"), (few, "unchanged"), (rise, "improved")):
        result = compare_runs(
            samples, samples, OPTIONS, "base", baseline_accuracy=base, candidate_accuracy=cand
        )
        assert accuracy_of(result).verdict == verdict


def test_a_threshold_larger_than_the_drop_keeps_it_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    base, cand = judged(tmp_path, "base", 170, 200), judged(tmp_path, "cand", 130, 200)
    options = RegressionOptions(thresholds=RegressionThresholds(accuracy_points=25))
    samples = requests(rng)
    result = compare_runs(samples, samples, options, "base", baseline_accuracy=base, candidate_accuracy=cand)
    assert accuracy_of(result).verdict == "unchanged"


def test_a_target_judged_in_one_run_only_is_skipped_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    base = judged(tmp_path, "base", 170, 200)
    samples = requests(rng)
    one = compare_runs(samples, samples, OPTIONS, "base", baseline_accuracy=base, candidate_accuracy=None)
    finding = accuracy_of(one)
    assert (
        finding.verdict == "skipped"
        and finding.reason == "no judged accuracy of this target in the candidate"
    )
    assert finding.baseline == pytest.approx(0.85) and finding.candidate is None
    neither = compare_runs(samples, samples, OPTIONS, "base")
    assert accuracy_of(neither).reason == "no judged accuracy in the runs"
    only_latency = compare_runs(
        samples,
        samples,
        RegressionOptions(metrics=["latency_p95"]),
        "base",
        baseline_accuracy=base,
        candidate_accuracy=base,
    )
    assert [f.metric for f in only_latency.findings] == ["latency_p95"]


def candidate_rows(target: str, prompts: int, correct: int) -> dict[str, Any]:
    return {"figure": "candidate", "target_name": target, "prompts": prompts, "majority_correct": correct}


def test_same_accuracy_rarely_raises_a_false_alarm() -> None:
    """Twenty pairs of runs of one true accuracy (80%, 150 prompts): at most one regression verdict."""
    alarms = 0
    samples = requests(np.random.default_rng(15))
    for seed in range(20):
        rng = np.random.default_rng(2000 + seed)
        base = pd.DataFrame([candidate_rows("alpha", 150, int(rng.binomial(150, 0.8)))])
        cand = pd.DataFrame([candidate_rows("alpha", 150, int(rng.binomial(150, 0.8)))])
        result = compare_runs(samples, samples, OPTIONS, "b", baseline_accuracy=base, candidate_accuracy=cand)
        alarms += accuracy_of(result).verdict == "regressed"
    assert alarms <= 1
