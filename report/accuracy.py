"""Accuracy judged by a panel of LLM judges: the figures of ``report/sql/accuracy.sql`` as the report's view.

The SQL counts (verdicts, votes, majorities, agreement pairs); this module adds what is clearer in Python
from those counts: the 95% Wilson interval of a majority accuracy, Cohen's kappa per pair of judges and
Fleiss' kappa over the panel (docs/metrics.md, "Accuracy"). A run without judgments has no accuracy view,
so its report is the same as before judging existed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from report.analysis import python_value
from report.compare import normal_quantile

CONFIDENCE: Final = 0.95


# ------------------------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``successes / total``; None when ``total`` is 0.

    centre = (p + z^2 / 2n) / (1 + z^2 / n),
    half-width = z / (1 + z^2 / n) x sqrt(p (1 - p) / n + z^2 / 4n^2),
    z the two-sided normal quantile of ``confidence``. Unlike p +- z sqrt(p (1 - p) / n) it stays inside
    [0, 1] and does not shrink to nothing at p = 0 or 1.
    """
    if total <= 0:
        return None
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be within 0..{total}: {successes}")
    z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)
    p = successes / total
    z2n = z * z / total
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / total + z * z / (4.0 * total * total))
    # The interval holds p; computed in floating point its end can miss p by a rounding error (13 of 13:
    # 0.9999999999999999), which would make a chart's error bar negative.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def cohen_kappa(table: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Cohen's kappa of two raters from their k x k table (rows: first rater's category, columns: second's).

    (p_o - p_e) / (1 - p_e): p_o the share of items they put in the same category, p_e the share expected
    by chance from each rater's own category shares. None when undefined: no item, or both raters used one
    and the same category only (p_e = 1).
    """
    counts = np.asarray(table, dtype=float)
    total = counts.sum()
    if total <= 0:
        return None
    observed = np.trace(counts) / total
    expected = float(np.dot(counts.sum(axis=1), counts.sum(axis=0))) / (total * total)
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def fleiss_kappa_from_sums(
    rated_items: int, agreement_sum: float, category_totals: Sequence[float]
) -> float | None:
    """Fleiss' kappa from its sums: the items rated at least twice, the sum over them of each item's
    agreement P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), and each category's votes over those items.

    (P_bar - P_e) / (1 - P_e) with P_bar = agreement_sum / rated_items and P_e = sum_j p_j^2, p_j the
    category's share of all those votes. None when undefined (no item, or every vote in one category).
    """
    votes = float(sum(category_totals))
    if rated_items <= 0 or votes <= 0:
        return None
    mean_agreement = agreement_sum / rated_items
    expected = sum((total / votes) ** 2 for total in category_totals)
    if expected >= 1.0:
        return None
    return float((mean_agreement - expected) / (1.0 - expected))


def fleiss_kappa(counts: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Fleiss' kappa of an items x categories table of vote counts (n_ij: raters putting item i in j).

    Items may have different numbers of raters; those with fewer than two are left out. With the same
    number of raters on every item this is Fleiss' (1971) statistic.
    """
    matrix = np.asarray(counts, dtype=float)
    raters = matrix.sum(axis=1)
    rated = matrix[raters >= 2]
    if rated.size == 0:
        return None
    n = rated.sum(axis=1)
    agreement = ((rated * (rated - 1)).sum(axis=1) / (n * (n - 1))).sum()
    return fleiss_kappa_from_sums(int(rated.shape[0]), float(agreement), list(rated.sum(axis=0)))


# ------------------------------------------------------------------------------------------- the view


@dataclass(frozen=True, slots=True)
class MajorityAccuracy:
    """One candidate's majority-vote accuracy, over all its judged prompts or (``payload_bin``) one bin's."""

    branch_id: str
    target_name: str
    payload_bin: str | None
    prompts: int  # judged prompts: distinct prompts of the candidate with any verdict
    majority_correct: int
    majority_incorrect: int
    no_majority: int  # a tie of votes, or no vote at all: counted against the accuracy
    accuracy: float | None
    interval: tuple[float, float] | None  # 95% Wilson interval of the accuracy
    # where the judged answers came from: 'load' or 'quality_pass' (None: judged before the column existed)
    answer_source: str | None = None


@dataclass(frozen=True, slots=True)
class JudgeFigures:
    """One judge's verdicts and what they cost, over every candidate (``branch_id`` None) or one."""

    judge: str
    judge_model: str | None
    branch_id: str | None
    target_name: str | None
    verdicts: int
    correct: int
    incorrect: int
    unparsed: int
    error_verdicts: int
    share_correct: float | None  # correct / (correct + incorrect): its votes only
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    verdicts_without_cost: int


@dataclass(frozen=True, slots=True)
class JudgePair:
    """Two judges on the prompts both voted on: their 2 x 2 table and Cohen's kappa."""

    judge: str
    other_judge: str
    prompts: int
    both_correct: int
    first_only_correct: int
    second_only_correct: int
    both_incorrect: int

    @property
    def observed_agreement(self) -> float | None:
        return (self.both_correct + self.both_incorrect) / self.prompts if self.prompts else None

    @property
    def cohen_kappa(self) -> float | None:
        return cohen_kappa(
            [[self.both_correct, self.first_only_correct], [self.second_only_correct, self.both_incorrect]]
        )


@dataclass(frozen=True, slots=True)
class AccuracyView:
    """A judged run's accuracy: per candidate, per candidate x bin, per judge, agreement, cost."""

    candidates: tuple[MajorityAccuracy, ...]
    per_bin: tuple[MajorityAccuracy, ...]
    judges: tuple[JudgeFigures, ...]
    judge_candidates: tuple[JudgeFigures, ...]
    pairs: tuple[JudgePair, ...]
    judged_prompts: int
    verdicts: int
    unparsed: int
    error_verdicts: int
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    verdicts_without_cost: int
    rated_prompts: int  # prompts with at least two votes: Fleiss' kappa's items
    fleiss_kappa: float | None
    min_accuracy: float | None
    confidence: float = CONFIDENCE
    answer_source: str | None = None  # 'load', 'quality_pass' or 'mixed' (candidates differ); None: unknown

    def of_branch(self, branch_id: str) -> MajorityAccuracy | None:
        return next((c for c in self.candidates if c.branch_id == branch_id), None)

    def meets_floor(self, branch_id: str) -> bool:
        """Whether the branch's majority accuracy reaches the floor; a branch without judgments never does."""
        if self.min_accuracy is None:
            return True
        figures = self.of_branch(branch_id)
        return figures is not None and figures.accuracy is not None and figures.accuracy >= self.min_accuracy

    def accuracy_by_branch(self) -> dict[str, float | None]:
        return {c.branch_id: c.accuracy for c in self.candidates}


def _count(value: Any) -> int:
    value = python_value(value)
    return 0 if value is None else int(value)


def _majority(row: Mapping[str, Any], confidence: float) -> MajorityAccuracy:
    prompts, correct = _count(row["prompts"]), _count(row["majority_correct"])
    return MajorityAccuracy(
        branch_id=str(row["branch_id"]),
        target_name=str(row["target_name"]),
        payload_bin=python_value(row["payload_bin"]),
        prompts=prompts,
        majority_correct=correct,
        majority_incorrect=_count(row["majority_incorrect"]),
        no_majority=_count(row["no_majority"]),
        accuracy=python_value(row["accuracy"]),
        interval=wilson_interval(correct, prompts, confidence),
        answer_source=python_value(row.get("answer_source")),
    )


def _judge(row: Mapping[str, Any]) -> JudgeFigures:
    return JudgeFigures(
        judge=str(row["judge"]),
        judge_model=python_value(row["judge_model"]),
        branch_id=python_value(row["branch_id"]),
        target_name=python_value(row["target_name"]),
        verdicts=_count(row["verdicts"]),
        correct=_count(row["correct"]),
        incorrect=_count(row["incorrect"]),
        unparsed=_count(row["unparsed"]),
        error_verdicts=_count(row["error_verdicts"]),
        share_correct=python_value(row["share_correct"]),
        attempts=_count(row["attempts"]),
        prompt_tokens=_count(row["prompt_tokens"]),
        completion_tokens=_count(row["completion_tokens"]),
        cost_usd=float(python_value(row["cost_usd"]) or 0.0),
        verdicts_without_cost=_count(row["verdicts_without_cost"]),
    )


def answer_source_text(source: str | None) -> str:
    """One sentence on where the judged answers came from (``evaluation.quality_pass``)."""
    if source == "quality_pass":
        return (
            "The answers judged are those of a quality pass: after each branch's load, every judged prompt "
            "was sent once more, one at a time (concurrency 1) at temperature 0, in no latency figure."
        )
    if source == "load":
        return "The answers judged are answers under load: each prompt's first measured, successful answer."
    if source == "mixed":
        return (
            "The answers judged are of both kinds: some candidates' under load, others' from a quality pass "
            "(concurrency 1, temperature 0); result.json gives each branch's answer_source."
        )
    return "Where the judged answers came from was not recorded (judged by an older version)."


def accuracy_view(
    figures: pd.DataFrame | None, min_accuracy: float | None = None, confidence: float = CONFIDENCE
) -> AccuracyView | None:
    """The view of accuracy.sql's rows (``report.query.ACCURACY_COLUMNS``); None for a run never judged."""
    if figures is None or figures.empty:
        return None
    rows: dict[str, list[dict[str, Any]]] = {}
    for record in figures.to_dict(orient="records"):
        rows.setdefault(str(record["figure"]), []).append({str(k): v for k, v in record.items()})
    panel_rows = rows.get("panel", [])
    if not panel_rows or _count(panel_rows[0]["verdicts"]) == 0:
        return None
    panel = panel_rows[0]
    judges = tuple(_judge(row) for row in rows.get("judge", []))
    found_pairs = {(str(r["judge"]), str(r["other_judge"])): r for r in rows.get("judge_pair", [])}
    pairs = []
    for first, second in itertools.combinations(sorted(j.judge for j in judges), 2):
        row = found_pairs.get((first, second), {})
        pairs.append(
            JudgePair(
                judge=first,
                other_judge=second,
                prompts=_count(row.get("prompts")),
                both_correct=_count(row.get("both_correct")),
                first_only_correct=_count(row.get("first_only_correct")),
                second_only_correct=_count(row.get("second_only_correct")),
                both_incorrect=_count(row.get("both_incorrect")),
            )
        )
    rated = _count(panel["rated_items"])
    return AccuracyView(
        candidates=tuple(_majority(row, confidence) for row in rows.get("candidate", [])),
        per_bin=tuple(_majority(row, confidence) for row in rows.get("candidate_bin", [])),
        judges=judges,
        judge_candidates=tuple(_judge(row) for row in rows.get("judge_candidate", [])),
        pairs=tuple(pairs),
        judged_prompts=_count(panel["prompts"]),
        verdicts=_count(panel["verdicts"]),
        unparsed=_count(panel["unparsed"]),
        error_verdicts=_count(panel["error_verdicts"]),
        attempts=_count(panel["attempts"]),
        prompt_tokens=_count(panel["prompt_tokens"]),
        completion_tokens=_count(panel["completion_tokens"]),
        cost_usd=float(python_value(panel["cost_usd"]) or 0.0),
        verdicts_without_cost=_count(panel["verdicts_without_cost"]),
        rated_prompts=rated,
        fleiss_kappa=fleiss_kappa_from_sums(
            rated,
            float(python_value(panel["agreement_sum"]) or 0.0),
            [_count(panel["correct"]), _count(panel["incorrect"])],
        ),
        min_accuracy=min_accuracy,
        confidence=confidence,
        answer_source=python_value(panel.get("answer_source")),
    )
