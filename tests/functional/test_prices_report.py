"""A local run with an emulated SageMaker instance and two Bedrock targets served by the emulator's Bedrock
paths: Bedrock on demand is priced by its tokens (the bundled table's Claude 3 Haiku prices) and ranked by
price per transaction beside the instance; Bedrock provisioned throughput by the hour. The report shows
ITL percentiles, prices per million tokens, per-user speed, the cost by phase and the suite itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from fmbench import cli
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import RunPlan
from fmbench.pricing import bundled_table
from report.prices import priced_metrics

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
RUN_ID = "run-prices"
PROVISIONED = {"provisioned_model_units": 2, "price_per_hour_usd": 20.0}
INSTANCE_PRICE = 100_000.0  # USD/h of the emulated instance: far above any token price of a few requests


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """Offline dummy credentials (conftest): the Bedrock client signs for the emulator."""


def suite(url: str) -> dict[str, object]:
    bedrock = {"platform": "bedrock", "model_id": f"us.{HAIKU}", "region": "us-east-1", "endpoint_url": url}
    return {
        "name": "prices",
        "targets": [
            {
                "name": "sm-emulated",
                "platform": "emulator",
                "instance_type": "ml.g5.2xlarge",
                "emulator": {"ttft_ms": 5, "itl_ms": 2, "output_tokens": 4},
            },
            {"name": "bedrock-on-demand", **bedrock},
            {
                "name": "bedrock-provisioned",
                **bedrock,
                "provisioned_model_units": 2,
                "price_per_hour_usd": 20.0,
            },
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 4},
            "max_prompts_per_bin": 3,
        },
        "load": {"concurrency": [1], "requests_per_level": 3, "request_timeout_s": 5},
        "pricing": {"instance_price_per_hour_usd": {"ml.g5.2xlarge": INSTANCE_PRICE}},
    }


def test_bedrock_ranks_by_price_per_transaction_beside_an_instance(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = EmulatorSettings(ttft_ms=5, itl_ms=2, output_tokens=4)
    with EmulatorProcess(settings) as emulator:
        path = tmp_path / "suite.yaml"
        path.write_text(yaml.safe_dump(suite(emulator.url)), encoding="utf-8")
        assert cli.main(["run", str(path), "--out", str(out), "--run-id", RUN_ID]) == 0

    result = json.loads((out / "result.json").read_text())
    summary = pd.read_parquet(out / "summary.parquet").set_index("target_name")
    price = bundled_table().token_price(HAIKU, "us-east-1")
    assert price is not None and (price.input_per_1m_usd, price.output_per_1m_usd) == (0.25, 1.25)

    # ground truth from the records: the on-demand window's tokens x the table's prices
    records = ds.dataset(out / "records", format="parquet", partitioning="hive").to_table().to_pandas()
    on_demand = records[
        (records["target_name"] == "bedrock-on-demand")
        & (records["status"] == "ok")
        & (records["phase"] == "measured")
    ]
    input_tokens = on_demand["prompt_tokens"].to_numpy(dtype=float)
    output_tokens = on_demand["completion_tokens"].to_numpy(dtype=float)
    cost = input_tokens.sum() * 0.25e-6 + output_tokens.sum() * 1.25e-6
    row = summary.loc["bedrock-on-demand"]
    assert row["successes"] == len(on_demand) == 3
    assert row["window_cost_usd"] == pytest.approx(cost)
    assert row["price_per_txn_usd"] == pytest.approx(cost / 3)
    assert row["price_per_1m_input_tokens_usd"] == pytest.approx(cost / input_tokens.sum() * 1e6)
    assert row["price_per_1m_output_tokens_usd"] == pytest.approx(cost / output_tokens.sum() * 1e6)
    assert row["price_per_1m_total_tokens_usd"] == pytest.approx(
        cost / (input_tokens.sum() + output_tokens.sum()) * 1e6
    )

    # provisioned throughput: 2 model units x $20 per unit-hour over the window, per success
    provisioned = summary.loc["bedrock-provisioned"]
    assert provisioned["instance_price_per_hour_usd"] == 40.0
    assert provisioned["price_per_txn_usd"] == pytest.approx(40.0 / 3600 * provisioned["window_s"] / 3)

    # the ranking: cheapest price per transaction first among the points the selection may choose (a
    # point a busy machine marked client-bound, or that missed the SLO, is never the best), Bedrock beside
    # the instance
    best = result["best"]
    eligible = sorted(
        (p["price_per_txn_usd"], b["target_name"])
        for b in result["branches"]
        for p in b["load_points"]
        if p["meets_slo"] and not p["client_bound"]
    )
    assert eligible, result["branches"]
    assert best["experiment_name"] == eligible[0][1]
    assert best["price_per_txn"] == pytest.approx(eligible[0][0])
    ranked = sorted(summary["price_per_txn_usd"].items(), key=lambda item: item[1])
    assert summary.loc["sm-emulated", "price_per_txn_usd"] > row["price_per_txn_usd"]
    assert ranked[-1][0] == "sm-emulated"

    # result.json carries the figures of summary.parquet, per load point
    by_name = {b["target_name"]: b for b in result["branches"]}
    (point,) = by_name["bedrock-on-demand"]["load_points"]
    assert point["price_per_txn_usd"] == pytest.approx(cost / 3)
    assert point["price_per_1m_input_tokens_usd"] == pytest.approx(row["price_per_1m_input_tokens_usd"])
    assert point["itl_p95_s"] == pytest.approx(row["itl_p95_s"])
    assert point["itl_p50_s"] is not None and point["itl_p99_s"] >= point["itl_p50_s"]
    actual = {part["target_name"]: part for part in result["cost"]["actual_parts"]}
    assert actual["bedrock-provisioned"]["basis"].startswith("provisioned throughput")
    emulated = actual["sm-emulated"]
    assert emulated["deployment_s"] == 0.0 and emulated["idle_usd"] == pytest.approx(0.0)
    assert emulated["load_usd"] == pytest.approx(emulated["usd"])
    assert by_name["sm-emulated"]["deployment_s"] == 0.0

    # the suite is in the report and in result.json, and it plans the same branches again
    plan = RunPlan.model_validate_json((out / "specs" / f"run_id={RUN_ID}" / "plan.json").read_text())
    assert yaml.safe_load(result["suite_yaml"])["targets"][2]["provisioned_model_units"] == 2
    markdown = (out / "report.md").read_text()
    assert "```yaml\n" + result["suite_yaml"].rstrip() + "\n```" in markdown
    html = (out / "report.html").read_text()
    assert "<details>" in html and '<code class="language-yaml">' in html
    assert "## Inter-token latency and prices per token" in markdown
    assert (
        "| Target | Branch | Deployment time (s) | Deployment (USD) | Load (USD) | Idle (USD) |" in markdown
    )
    assert plan.prices_note is not None and "bundled" in plan.prices_note
    assert "\nPrices: bundled: compiled by hand" in markdown


def test_prices_per_token_and_per_user_speed_match_numpy() -> None:
    """priced_metrics on a hand-made summary: figures from numpy on the same numbers."""
    from fmbench.plan import plan_suite
    from fmbench.suite import validate_suite_data

    data = suite("http://127.0.0.1:9")
    plan = plan_suite(validate_suite_data(data), storage_root="/tmp/unused", run_id="r")
    ids = {spec.target.name: spec.branch_id for spec in plan.branches}
    successes = np.array([10, 8])
    prompt_mean = np.array([120.0, 300.0])
    completion_mean = np.array([40.0, 25.0])
    latency_mean = np.array([0.8, 2.5])
    frame = pd.DataFrame(
        {
            "branch_id": [ids["sm-emulated"], ids["bedrock-on-demand"]],
            "successes": successes,
            "prompt_tokens_mean": prompt_mean,
            "completion_tokens_mean": completion_mean,
            "latency_mean_s": latency_mean,
            "instance_price_per_hour_usd": [3.6, np.nan],
            "instance_count": pd.array([2, 1], dtype="Int64"),
            "window_s": [50.0, 20.0],
            "price_per_txn_usd": [3.6 / 3600 * 2 * 50 / 10, np.nan],
            "price_per_1m_output_tokens_usd": [np.nan, np.nan],
        }
    )
    priced = priced_metrics(plan, frame)
    costs = np.array([3.6 / 3600 * 2 * 50, 8 * (300 * 0.25e-6 + 25 * 1.25e-6)])
    np.testing.assert_allclose(priced["window_cost_usd"], costs)
    np.testing.assert_allclose(
        priced["price_per_1m_input_tokens_usd"], costs / (successes * prompt_mean) * 1e6
    )
    np.testing.assert_allclose(
        priced["price_per_1m_total_tokens_usd"], costs / (successes * (prompt_mean + completion_mean)) * 1e6
    )
    np.testing.assert_allclose(priced["output_tokens_per_s_per_user"], completion_mean / latency_mean)
    # the instance's figures from SQL are kept; Bedrock's are filled from its tokens
    assert priced["price_per_txn_usd"].iloc[0] == frame["price_per_txn_usd"].iloc[0]
    assert priced["price_per_txn_usd"].iloc[1] == pytest.approx(costs[1] / 8)
    assert np.isnan(priced["price_per_1m_output_tokens_usd"].iloc[0])
    assert priced["price_per_1m_output_tokens_usd"].iloc[1] == pytest.approx(costs[1] / (8 * 25) * 1e6)
