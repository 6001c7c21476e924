"""The price table: the bundled one's coverage, the Price List parsers' edge cases, and how a plan prices
Bedrock on demand (the table's token prices) and provisioned throughput (model units by the hour)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fmbench.config import SuiteValidationError
from fmbench.instances import ACCELERATED_INSTANCES
from fmbench.plan import BranchOutcome, plan_suite
from fmbench.pricing import (
    PriceListError,
    bundled_table,
    foundation_model_id,
    instance_price_per_hour_usd,
    sagemaker_prices,
)
from fmbench.suite import validate_suite_data
from report.costs import EndpointLifetime, cost_summary

# Types the bundled table has no price for, as docs/operations.md ("Prices") lists them.
UNPRICED = {
    "ml.p5e.48xlarge",
    "ml.p5en.48xlarge",
    "ml.p6-b200.48xlarge",
    "ml.trn1n.32xlarge",
    "ml.trn2.48xlarge",
}


def test_the_bundled_table_prices_every_known_accelerated_type_but_the_documented_ones() -> None:
    table = bundled_table()
    missing = {name for name in ACCELERATED_INSTANCES if table.instance_price(name) is None}
    assert missing == UNPRICED
    assert table.as_of and table.source.startswith("bundled")
    assert all(price > 0 for prices in table.sagemaker.values() for price in prices.values())


def test_a_suite_override_and_a_profile_price_come_before_the_table() -> None:
    assert instance_price_per_hour_usd("ml.g5.2xlarge") == 1.515
    assert instance_price_per_hour_usd("ml.g5.2xlarge", {"ml.g5.2xlarge": 2.0}) == 2.0
    assert instance_price_per_hour_usd("ml.g5.2xlarge", None, profile_price_usd=3.0) == 3.0
    assert (
        instance_price_per_hour_usd("ml.g5.2xlarge", region="eu-west-1") is None
    )  # not in the bundled table
    assert instance_price_per_hour_usd("ml.g9.xlarge") is None


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
    ],
)
def test_an_inference_profile_is_priced_as_its_model(model_id: str) -> None:
    assert foundation_model_id(model_id) == "anthropic.claude-3-haiku-20240307-v1:0"
    price = bundled_table().token_price(model_id)
    assert price is not None and (price.input_per_1k_usd, price.output_per_1k_usd) == (0.00025, 0.00125)


def test_a_malformed_entry_is_named_by_its_position() -> None:
    good = {"product": {"attributes": {}}, "terms": {}}
    with pytest.raises(PriceListError, match=r"PriceList\[1\]: not JSON"):
        sagemaker_prices([json.dumps(good), "{not json"])
    with pytest.raises(PriceListError, match=r"PriceList\[0\]\.product\.attributes: missing"):
        sagemaker_prices([json.dumps({"product": {}})])
    bad_price = {
        "product": {
            "attributes": {"regionCode": "us-east-1", "instanceName": "ml.g5.xlarge", "component": "Hosting"}
        },
        "terms": {
            "OnDemand": {"t": {"priceDimensions": {"d": {"unit": "Hrs", "pricePerUnit": {"USD": "abc"}}}}}
        },
    }
    with pytest.raises(PriceListError, match=r"pricePerUnit\.USD: not a number"):
        sagemaker_prices([json.dumps(bad_price)])


def bedrock_suite(**target: object) -> dict[str, object]:
    return {
        "name": "p",
        "targets": [{"name": "b", "platform": "bedrock", "model_id": "amazon.nova-micro-v1:0", **target}],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 8}},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }


def test_a_bedrock_target_without_prices_gets_the_table_s_and_its_estimate_is_complete() -> None:
    plan = plan_suite(validate_suite_data(bedrock_suite()), storage_root="/tmp/unused", run_id="r")
    (spec,) = plan.branches
    assert (spec.target.input_price_per_1k_tokens_usd, spec.target.output_price_per_1k_tokens_usd) == (
        pytest.approx(0.000035),
        pytest.approx(0.00014),
    )
    assert spec.instance_price_per_hour_usd is None
    assert plan.cost_estimate is not None and plan.cost_estimate.complete
    (part,) = plan.cost_estimate.parts
    assert part.billing == "tokens"
    assert part.usd == pytest.approx((part.input_tokens * 0.000035 + part.output_tokens * 0.00014) / 1000)


def test_provisioned_throughput_is_charged_by_the_hour() -> None:
    data = bedrock_suite(provisioned_model_units=3, price_per_hour_usd=21.18)
    plan = plan_suite(validate_suite_data(data), storage_root="/tmp/unused", run_id="r")
    (spec,) = plan.branches
    assert spec.instance_price_per_hour_usd == pytest.approx(3 * 21.18)
    assert spec.target.input_price_per_1k_tokens_usd is None  # not priced by the token
    assert plan.cost_estimate is not None
    (part,) = plan.cost_estimate.parts
    assert part.billing == "instance" and part.basis.startswith("provisioned throughput")
    assert part.usd == pytest.approx(part.run_s / 3600 * 3 * 21.18)


def test_provisioned_throughput_needs_both_fields() -> None:
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(bedrock_suite(provisioned_model_units=2))
    assert [str(p) for p in caught.value.problems] == [
        "targets.0: provisioned throughput needs both provisioned_model_units and price_per_hour_usd"
    ]


def test_a_deployed_endpoint_s_cost_is_split_into_deployment_load_and_idle() -> None:
    data = {
        "name": "split",
        "targets": [
            {
                "name": "llama",
                "platform": "sagemaker",
                "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
                "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving:1",
                "instance_type": "ml.g5.2xlarge",
                "instance_count": 2,
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }
    plan = plan_suite(validate_suite_data(data), storage_root="s3://b", run_id="r")
    (spec,) = plan.branches
    # created at 1000, in service at 1600, load from 1700 to 4300, deleted at 5000
    outcome = BranchOutcome(
        branch_id=spec.branch_id, status="succeeded", started_epoch_s=1700, ended_epoch_s=4300
    )
    lifetime = EndpointLifetime(created_epoch_s=1000, deleted_epoch_s=5000, in_service_epoch_s=1600)
    summary = cost_summary(plan, {spec.branch_id: outcome}, pd.DataFrame(), {spec.branch_id: lifetime})
    (part,) = summary.actual_parts
    rate = 1.515 * 2 / 3600
    assert part.usd == pytest.approx(4000 * rate)
    assert part.deployment_s == 600
    assert (part.deployment_usd, part.load_usd, part.idle_usd) == (
        pytest.approx(600 * rate),
        pytest.approx(2600 * rate),
        pytest.approx(800 * rate),
    )
    assert part.deployment_usd + part.load_usd + part.idle_usd == pytest.approx(part.usd)
    # without the InService record, deployment and idle are unknown; the load is still counted
    bare = cost_summary(
        plan, {spec.branch_id: outcome}, pd.DataFrame(), {spec.branch_id: EndpointLifetime(1000, 5000)}
    )
    (part,) = bare.actual_parts
    assert (part.deployment_s, part.deployment_usd, part.idle_usd) == (None, None, None)
    assert part.load_usd == pytest.approx(2600 * rate)
