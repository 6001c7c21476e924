"""SLO selection: which load points meet the suite's SLO and which is the best configuration per bin."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fmbench.config import Slo, Suite
from report.result import BestConfiguration

SELECTION_RULE = " ".join(
    [
        "A load point meets the SLO when at least one of its measured requests succeeded,",
        "its error rate is at most the SLO's maximum error rate,",
        "its p95 end-to-end latency is at most the SLO's p95 latency (when one is set)",
        "and its p95 time to first token is at most the SLO's p95 TTFT (when one is set;",
        "a load point without TTFT, e.g. not streamed, then does not meet it).",
        "A client-bound load point (the runner fell behind its schedule or ran out of CPU,",
        "so its figures describe the runner rather than the endpoint) is never chosen, whatever its figures.",
        "Among the other load points of one payload bin that meet the SLO, the best is the one with",
        "the lowest price per transaction (an unknown price ranks last),",
        "then the most transactions per minute, then the lowest p95 latency.",
    ]
)


ACCURACY_RULE = " ".join(
    [
        "A branch whose majority-vote accuracy (majority-correct prompts / judged prompts,",
        "a prompt without a majority counting against it) is below the SLO's accuracy floor,",
        "or whose answers were not judged,",
        "is never chosen: the best is the cheapest load point that meets the latency and error limits",
        "and whose branch meets the accuracy floor.",
    ]
)


def selection_rule(slo: Slo | None = None) -> str:
    """The rule in words: with the accuracy floor's sentence when the SLO sets one."""
    if slo is not None and slo.min_accuracy is not None:
        return f"{SELECTION_RULE} {ACCURACY_RULE}"
    return SELECTION_RULE


# Branch id -> majority-vote accuracy (0..1), None for a branch judged without a prompt; absent: not judged.
AccuracyByBranch = Mapping[str, float | None]


def python_value(value: Any) -> Any:
    """A plain Python scalar for JSON and templates: NaN and NA become None, numpy numbers int or float."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return python_value(value.item())
    return value


def meets_slo(metrics: pd.DataFrame, slo: Slo) -> pd.Series:
    """One bool per metrics row. A missing figure never meets a limit (NaN comparisons are False)."""
    qualifies = (metrics["successes"] > 0) & (metrics["error_rate"] <= slo.max_error_rate)
    if slo.p95_latency_s is not None:
        qualifies &= metrics["latency_p95_s"] <= slo.p95_latency_s
    if slo.p95_ttft_s is not None:
        qualifies &= metrics["ttft_p95_s"] <= slo.p95_ttft_s
    return qualifies.fillna(False).astype(bool)


def is_client_bound(metrics: pd.DataFrame) -> pd.Series:
    """One bool per metrics row; a frame without the column (older summaries) has none client-bound."""
    if "client_bound" not in metrics.columns:
        return pd.Series(False, index=metrics.index, dtype=bool)
    return metrics["client_bound"].astype("boolean").fillna(False).astype(bool)


def meets_accuracy_floor(metrics: pd.DataFrame, slo: Slo, accuracy: AccuracyByBranch | None) -> pd.Series:
    """One bool per metrics row: its branch's majority accuracy reaches ``slo.min_accuracy`` (all rows when
    no floor is set); a branch without judgments never does."""
    if slo.min_accuracy is None:
        return pd.Series(True, index=metrics.index, dtype=bool)
    floor, known = slo.min_accuracy, accuracy or {}

    def reaches(branch_id: Any) -> bool:
        value = known.get(str(branch_id))
        return value is not None and value >= floor

    return metrics["branch_id"].map(reaches).astype(bool)


def selectable(metrics: pd.DataFrame, slo: Slo, accuracy: AccuracyByBranch | None = None) -> pd.Series:
    """Rows the selection may choose: they meet the SLO (the accuracy floor included) and their client
    kept up."""
    return meets_slo(metrics, slo) & ~is_client_bound(metrics) & meets_accuracy_floor(metrics, slo, accuracy)


def _rank_key(row: pd.Series) -> tuple[Any, ...]:
    """Sort key of the selection rule; branch and load point ids last only so that the result is stable."""
    price = python_value(row["price_per_txn_usd"])
    tpm = python_value(row["transactions_per_minute"]) or 0.0
    p95 = python_value(row["latency_p95_s"])
    concurrency = python_value(row["concurrency"])
    rate = python_value(row["request_rate_per_s"])
    return (
        price is None,
        price if price is not None else 0.0,
        -tpm,
        p95 if p95 is not None else math.inf,
        str(row["branch_id"]),
        concurrency if concurrency is not None else -1,
        rate if rate is not None else -1.0,
    )


def best_configuration(row: pd.Series) -> BestConfiguration:
    """One metrics row in FMBench's field names (the branch's accuracy is in its ``BranchResult``)."""

    def get(column: str) -> Any:
        return python_value(row[column])

    return BestConfiguration(
        experiment_name=get("target_name"),
        branch_id=get("branch_id"),
        payload_file=get("payload_bin"),
        instance_type=get("instance_type"),
        instance_count=get("instance_count"),
        concurrency=get("concurrency"),
        request_rate_per_s=get("request_rate_per_s"),
        error_rate=get("error_rate"),
        prompt_token_count_mean=get("prompt_tokens_mean"),
        prompt_token_throughput=get("prompt_token_throughput_per_s"),
        completion_token_count_mean=get("completion_tokens_mean"),
        completion_token_throughput=get("completion_token_throughput_per_s"),
        latency_mean=get("latency_mean_s"),
        latency_p50=get("latency_p50_s"),
        latency_p95=get("latency_p95_s"),
        latency_p99=get("latency_p99_s"),
        ttft_p95=get("ttft_p95_s"),
        transactions_per_minute=get("transactions_per_minute"),
        price_per_txn=get("price_per_txn_usd"),
        price_per_1m_output_tokens=get("price_per_1m_output_tokens_usd"),
    )


def best_in_bin(
    metrics: pd.DataFrame, slo: Slo, payload_bin: str, accuracy: AccuracyByBranch | None = None
) -> BestConfiguration | None:
    """The best load point of one bin under the SLO, or None when no load point of the bin qualifies.

    Client-bound load points, and those of branches below the accuracy floor, are left out before ranking,
    so not even the cheapest of them can win.
    """
    candidates = metrics[(metrics["payload_bin"] == payload_bin) & selectable(metrics, slo, accuracy)]
    if candidates.empty:
        return None
    best_row = min((row for _, row in candidates.iterrows()), key=_rank_key)
    return best_configuration(best_row)


def headline_bin_label(suite: Suite) -> str:
    """The suite's headline bin, by default the bin of the longest prompts (largest max_tokens)."""
    if suite.report.headline_bin is not None:
        return suite.report.headline_bin
    return max(suite.workload.bins, key=lambda b: b.max_tokens).label


@dataclass(frozen=True, slots=True)
class Selection:
    headline_bin: str | None
    best: BestConfiguration | None
    best_per_bin: dict[str, BestConfiguration | None]

    @property
    def found(self) -> list[BestConfiguration]:
        return [best for best in self.best_per_bin.values() if best is not None]


def select_best(
    metrics: pd.DataFrame,
    slo: Slo,
    bins: Sequence[str] | None = None,
    headline_bin: str | None = None,
    accuracy: AccuracyByBranch | None = None,
) -> Selection:
    """Best configuration per bin (in ``bins`` order; default: the bins in ``metrics``) and the headline.

    ``headline_bin`` defaults to the last of ``bins``; callers with a suite pass ``headline_bin_label``.
    ``accuracy`` (branch id -> majority accuracy of a judged run) is checked against ``slo.min_accuracy``.
    """
    labels = list(bins) if bins is not None else sorted(set(metrics["payload_bin"].dropna()))
    per_bin = {label: best_in_bin(metrics, slo, label, accuracy) for label in labels}
    headline = headline_bin if headline_bin is not None else (labels[-1] if labels else None)
    best = per_bin.get(headline) if headline is not None else None
    if headline is not None and headline not in per_bin:
        best = best_in_bin(metrics, slo, headline, accuracy)
    return Selection(headline_bin=headline, best=best, best_per_bin=per_bin)
