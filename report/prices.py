"""Prices and per-user speed of each load point, computed from the SQL summary's figures and the plan.

metrics.sql prices a load point by its instance time (hourly price x instances x window seconds). A
Bedrock target on demand has no instance: its window is priced here by its tokens (input tokens x input
price + output tokens x output price, over the window's successful requests), so that it ranks beside the
instance-priced targets in the best-configuration selection. Added columns (docs/metrics.md):

- ``window_cost_usd``: the load point's measured window in USD;
- ``price_per_1m_input_tokens_usd``, ``price_per_1m_total_tokens_usd``: the window's cost over its input
  (prompt) tokens, and over input plus output tokens, per million;
- ``output_tokens_per_s_per_user``: mean completion tokens / mean end-to-end latency of the successes.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from fmbench.config import BedrockTarget
from fmbench.plan import RunPlan

PRICE_COLUMNS: Final = (
    "window_cost_usd",
    "price_per_1m_input_tokens_usd",
    "price_per_1m_total_tokens_usd",
    "output_tokens_per_s_per_user",
)
_MILLION: Final = 1_000_000.0


def _token_prices(plan: RunPlan) -> dict[str, tuple[float, float]]:
    """Branch id -> (input, output) USD per 1k tokens of the Bedrock branches billed by the token."""
    prices = {}
    for spec in plan.branches:
        target = spec.target
        if not isinstance(target, BedrockTarget) or spec.instance_price_per_hour_usd is not None:
            continue
        if target.input_price_per_1k_tokens_usd is None or target.output_price_per_1k_tokens_usd is None:
            continue
        prices[spec.branch_id] = (target.input_price_per_1k_tokens_usd, target.output_price_per_1k_tokens_usd)
    return prices


def _ratio(numerator: pd.Series, denominator: pd.Series, scale: float = 1.0) -> pd.Series:
    denominator = denominator.where(denominator > 0)
    return (numerator / denominator * scale).astype("float64")


def priced_metrics(plan: RunPlan, metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with Bedrock's token prices filled in and the columns of ``PRICE_COLUMNS`` added."""
    frame = metrics.copy()
    if frame.empty:
        for column in PRICE_COLUMNS:
            frame[column] = pd.Series(dtype="float64")
        return frame
    successes = frame["successes"].astype("float64")
    input_tokens = successes * frame["prompt_tokens_mean"].astype("float64").fillna(0.0)
    output_tokens = successes * frame["completion_tokens_mean"].astype("float64").fillna(0.0)
    instance_cost = (
        frame["instance_price_per_hour_usd"].astype("float64")
        / 3600.0
        * frame["instance_count"].astype("float64")
        * frame["window_s"].astype("float64")
    )
    token_prices = _token_prices(plan)
    input_price = frame["branch_id"].map(lambda b: token_prices.get(b, (np.nan, np.nan))[0]).astype("float64")
    output_price = (
        frame["branch_id"].map(lambda b: token_prices.get(b, (np.nan, np.nan))[1]).astype("float64")
    )
    token_cost = (input_tokens * input_price + output_tokens * output_price) / 1000.0
    by_tokens = frame["branch_id"].isin(token_prices.keys())
    frame["window_cost_usd"] = token_cost.where(by_tokens, instance_cost)
    cost = frame["window_cost_usd"]
    frame["price_per_txn_usd"] = frame["price_per_txn_usd"].where(~by_tokens, _ratio(cost, successes))
    frame["price_per_1m_output_tokens_usd"] = frame["price_per_1m_output_tokens_usd"].where(
        ~by_tokens, _ratio(cost, output_tokens, _MILLION)
    )
    frame["price_per_1m_input_tokens_usd"] = _ratio(cost, input_tokens, _MILLION)
    frame["price_per_1m_total_tokens_usd"] = _ratio(cost, input_tokens + output_tokens, _MILLION)
    frame["output_tokens_per_s_per_user"] = _ratio(
        frame["completion_tokens_mean"].astype("float64"), frame["latency_mean_s"].astype("float64")
    )
    return frame
