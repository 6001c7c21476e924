"""The cost estimate's bounds, the budget and time-to-live checks, and instances needed at once per type."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fmbench.cloud.quotas import instances_needed_at_once
from fmbench.cloud.sagemaker import plan_deployment
from fmbench.config import Budget, LoadPlan
from fmbench.estimate import (
    PROBE_BOUND_S,
    BudgetExceededError,
    EstimateSettings,
    branch_run_bound_s,
    check_budget,
    endpoint_ttl_problems,
    estimate_branches,
    load_point_bound_s,
    load_point_requests_bound,
)
from fmbench.plan import plan_suite
from fmbench.runner import PROBE_TIMEOUT_S
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
BINS = [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}]
LOAD = {"concurrency": [1, 4], "requests_per_level": 10, "warmup_requests": 2, "request_timeout_s": 30}
# Per bin: 12 requests at concurrency 1 and 4, each request bounded at 30 + 1 s: 12 x 31 + 3 x 31 = 465 s.
RUN_S = PROBE_BOUND_S + 2 * 465
CLOUD = EstimateSettings(status_poll_s=30, max_status_polls=120, teardown_s=600)


def sagemaker_target(name: str, instance_type: str = "ml.g4dn.xlarge", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "platform": "sagemaker",
        "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
        "image_uri": IMAGE,
        "instance_type": instance_type,
        **fields,
    }


def specs(*targets: dict[str, Any], **suite: Any) -> list[BranchSpec]:
    # The suite's g4dn price, when a target uses g4dn (a price no target uses is refused as a typo).
    uses_g4dn = any(target.get("instance_type") == "ml.g4dn.xlarge" for target in targets)
    prices = {"ml.g4dn.xlarge": 0.736} if uses_g4dn else {}
    data = {
        "name": "estimate",
        "targets": list(targets),
        "workload": {"bins": BINS},
        "load": LOAD,
        "pricing": {"instance_price_per_hour_usd": prices},
        **suite,
    }
    return plan_suite(validate_suite_data(data), storage_root="s3://b", run_id="run-e").branches


def test_the_probe_bound_is_the_runners_probe_timeout() -> None:
    assert PROBE_BOUND_S == PROBE_TIMEOUT_S


def test_a_deployed_endpoint_is_bounded_from_creation_to_deletion() -> None:
    estimate = estimate_branches(specs(sagemaker_target("llama", instance_count=2)), CLOUD)

    (part,) = estimate.parts
    assert (part.billing, part.deploy_s, part.run_s, part.teardown_s) == ("instance", 3600, RUN_S, 600)
    assert part.usd == pytest.approx((3600 + RUN_S + 600) / 3600 * 2 * 0.736)
    assert (estimate.total_usd, estimate.complete) == (pytest.approx(part.usd), True)
    assert estimate.describe().splitlines()[1] == (
        f"  llama ({part.branch_id}): ml.g4dn.xlarge x2 at $0.736/h for up to 1.43 h "
        "(deploy 1.00 h + load 0.26 h + teardown 0.17 h) = $2.10"
    )


def test_the_runner_and_execution_timeouts_cap_the_bound() -> None:
    (runner_capped,) = estimate_branches(
        specs(sagemaker_target("llama")), CLOUD.model_copy(update={"runner_timeout_s": 500})
    ).parts
    (execution_capped,) = estimate_branches(
        specs(sagemaker_target("llama")), CLOUD.model_copy(update={"execution_timeout_s": 4500})
    ).parts
    assert runner_capped.run_s == 500
    assert (execution_capped.run_s, execution_capped.lifetime_s) == (300, 4500)


@pytest.mark.parametrize(
    ("load", "bound_s"),
    [
        ({"concurrency": [4], "requests_per_level": 20}, 5 * 31),
        ({"concurrency": [4], "duration_s": 60, "warmup_s": 5}, 65 + 31),
        ({"concurrency": [4], "requests_per_level": 20, "ramp_up_s": 8}, 8 + 5 * 31),
        ({"rates_per_s": [10], "arrival": "constant", "requests_per_level": 20}, 1.9 + 31),
        (
            {"rates_per_s": [10], "arrival": "constant", "requests_per_level": 20, "max_in_flight": 5},
            1.9 + 5 * 31,
        ),
        ({"rates_per_s": [10], "requests_per_level": 20}, (19 + 3 * math.sqrt(19)) / 10 + 31),
    ],
)
def test_one_load_point_is_bounded_by_its_timeouts_and_arrivals(load: dict[str, Any], bound_s: float) -> None:
    plan = LoadPlan.model_validate({"request_timeout_s": 30, **load})
    level = {"concurrency": plan.concurrency[0]} if plan.concurrency else {"rate_per_s": plan.rates_per_s[0]}
    assert load_point_bound_s(plan, **level) == pytest.approx(bound_s)


def test_timed_phases_bound_the_requests_by_the_shortest_plausible_request_or_the_arrivals() -> None:
    closed = LoadPlan.model_validate({"concurrency": [4], "duration_s": 10})
    opened = LoadPlan.model_validate({"rates_per_s": [5], "arrival": "constant", "duration_s": 10})
    assert load_point_requests_bound(closed, concurrency=4) == 4 * 10 / 0.1 + 4
    assert load_point_requests_bound(opened, rate_per_s=5) == 51


def test_bedrock_is_bounded_by_the_largest_prompts_and_max_new_tokens() -> None:
    haiku = {
        "name": "haiku",
        "platform": "bedrock",
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
        "input_price_per_1k_tokens_usd": 0.00025,
        "output_price_per_1k_tokens_usd": 0.00125,
    }
    (part,) = estimate_branches(specs(haiku)).parts
    # 2 levels x 12 requests per bin; prompts below 500 and below 2000 tokens; 128 new tokens each
    assert (part.requests, part.input_tokens, part.output_tokens) == (48, 24 * (499 + 1999), 48 * 128)
    assert part.usd == pytest.approx((24 * 2498 * 0.00025 + 48 * 128 * 0.00125) / 1000)
    assert "$0.00025/1k" in part.describe()


def test_unbilled_and_emulated_branches() -> None:
    existing = {"name": "mine", "platform": "sagemaker", "endpoint_name": "my-endpoint"}
    emulated = {"name": "emu", "platform": "emulator", "emulator": {"profile": "g5-2xlarge"}}
    fixed = {
        "name": "fixed",
        "platform": "emulator",
        "emulator": {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 4},
    }
    parts = {part.target_name: part for part in estimate_branches(specs(existing, emulated, fixed)).parts}
    assert (parts["mine"].billing, parts["mine"].usd) == ("none", 0.0)
    assert (parts["emu"].emulated, parts["emu"].deploy_s, parts["emu"].run_s) == (True, 0, RUN_S)
    assert parts["emu"].usd == pytest.approx(RUN_S / 3600 * 1.515)
    assert (parts["fixed"].emulated, parts["fixed"].usd) == (True, 0.0)


def test_the_budget_refuses_an_estimate_above_it_with_every_part_named() -> None:
    estimate = estimate_branches(specs(sagemaker_target("llama"), sagemaker_target("mistral")), CLOUD)
    check_budget(estimate, Budget(max_usd=None))
    check_budget(estimate, Budget(max_usd=estimate.total_usd))
    with pytest.raises(BudgetExceededError) as caught:
        check_budget(estimate, Budget(max_usd=1.0))
    lines = str(caught.value).splitlines()
    assert (
        lines[0]
        == f"the estimated cost ${estimate.total_usd:,.2f} (an upper bound) exceeds budget.max_usd $1.00"
    )
    assert lines[1] == f"estimated cost (upper bound): ${estimate.total_usd:,.2f}"
    assert [line.split(" (")[0].strip() for line in lines[2:4]] == ["llama", "mistral"]
    assert lines[-1].startswith("Lower the load")


def test_a_part_without_a_price_cannot_be_bounded_under_a_budget() -> None:
    # A CPU instance (no accelerators, so not in the instance table) without a bundled price.
    cpu = sagemaker_target("llama", instance_type="ml.c5.large", accelerators=0)
    estimate = estimate_branches(specs(cpu), CLOUD)
    assert (estimate.complete, estimate.total_usd, estimate.parts[0].usd) == (False, 0.0, None)
    check_budget(estimate, Budget())
    with pytest.raises(BudgetExceededError, match="cost of llama cannot be bounded"):
        check_budget(estimate, Budget(max_usd=100))
    assert "pricing.instance_price_per_hour_usd" in estimate.parts[0].basis


def test_an_endpoint_that_could_outlive_its_time_to_live_is_a_problem() -> None:
    estimate = estimate_branches(specs(sagemaker_target("llama")), CLOUD)
    assert endpoint_ttl_problems(estimate, 8 * 3600) == []
    (problem,) = endpoint_ttl_problems(estimate, 3600)
    assert problem.path == "execution.endpoint_ttl_s"
    assert f"= {3600 + RUN_S + 600:g} s" in problem.reason


def test_the_instances_needed_at_once_are_the_largest_branches_the_map_runs_together() -> None:
    branches = specs(
        sagemaker_target("one", instance_count=1),
        sagemaker_target("three", instance_count=3),
        sagemaker_target("two", instance_count=2),
        sagemaker_target("g5", instance_type="ml.g5.2xlarge"),
        sagemaker_target("west", region="us-west-2"),
        {
            "name": "mine",
            "platform": "sagemaker",
            "endpoint_name": "my-endpoint",
            "instance_type": "ml.g5.2xlarge",
        },
    )
    deployable = [
        spec.model_copy(update={"sagemaker_deployment": plan_deployment(spec.target, "us-east-1")})
        if spec.target.name != "mine"
        else spec
        for spec in branches
    ]
    needs = {(n.region, n.instance_type): n for n in instances_needed_at_once(deployable, 2, "us-east-1")}

    assert sorted(needs) == [
        ("us-east-1", "ml.g4dn.xlarge"),
        ("us-east-1", "ml.g5.2xlarge"),
        ("us-west-2", "ml.g4dn.xlarge"),
    ]
    g4dn = needs[("us-east-1", "ml.g4dn.xlarge")]
    assert g4dn.instances == 5
    assert [b.split("-")[0] for b in g4dn.branch_ids] == ["three", "two"]
    assert needs[("us-east-1", "ml.g5.2xlarge")].instances == 1  # the brought endpoint is not ours to count
    assert needs[("us-west-2", "ml.g4dn.xlarge")].instances == 1


def test_a_capacity_search_is_bounded_by_its_point_budget() -> None:
    """max_points levels x bins x the longest point (closed loop: at its lowest concurrency)."""
    load = {"requests_per_level": 10, "warmup_requests": 2, "request_timeout_s": 30}
    search = {"mode": "concurrency", "start": 2, "max": 64, "max_points": 5}
    (spec,) = specs(sagemaker_target("s"), load={**load, "search": search})
    point_s = math.ceil(12 / 2) * 31  # 12 requests at concurrency 2, each bounded at 30 + 1 s
    assert load_point_bound_s(spec.load, concurrency=2) == point_s
    part = estimate_branches([spec], CLOUD).parts[0]
    assert part.run_s == PROBE_BOUND_S + 5 * 2 * point_s
    assert spec.load_point_count == 5 * 2  # an upper bound: the search may stop sooner

    # A time budget lowers it to the budget plus one level over every bin.
    (timed,) = specs(sagemaker_target("s"), load={**load, "search": {**search, "max_duration_s": 600}})
    assert estimate_branches([timed], CLOUD).parts[0].run_s == PROBE_BOUND_S + 600 + 2 * point_s

    # An open loop's span is longest at its lowest rate: 11 gaps of 1 / 0.5 s (constant arrivals).
    rate = {"mode": "rate", "start": 0.5, "max": 8, "max_points": 3}
    (opened,) = specs(sagemaker_target("s"), load={**load, "search": rate, "arrival": "constant"})
    assert estimate_branches([opened], CLOUD).parts[0].run_s == PROBE_BOUND_S + 3 * 2 * (11 / 0.5 + 31)


def test_a_bedrock_search_is_bounded_at_its_highest_level() -> None:
    load = {"duration_s": 10, "request_timeout_s": 30}
    search = {"mode": "concurrency", "start": 1, "max": 4, "max_points": 3}
    bedrock = {
        "name": "b",
        "platform": "bedrock",
        "model_id": "m",
        "input_price_per_1k_tokens_usd": 0.001,
        "output_price_per_1k_tokens_usd": 0.002,
    }
    (spec,) = specs(bedrock, load={**load, "search": search})
    part = estimate_branches([spec]).parts[0]
    per_point = load_point_requests_bound(spec.load, concurrency=4)
    assert per_point == math.ceil(4 * 10 / 0.1) + 4
    assert part.requests == 3 * per_point * 2


def test_a_quality_pass_adds_its_requests_one_at_a_time_to_the_endpoint_time_and_to_judging() -> None:
    judge = {"name": "j", "target": {"name": "jt", "platform": "emulator", "model": "jm"}}
    evaluation = {"judges": [judge], "max_answers_per_bin": 7}
    (off,) = specs(sagemaker_target("s"), evaluation=evaluation)
    (on,) = specs(sagemaker_target("s"), evaluation={**evaluation, "quality_pass": True})
    assert off.quality_pass is None and on.quality_pass is not None
    bins = len(on.workload.bins)
    request_s = on.load.request_timeout_s + 1.0
    assert branch_run_bound_s(on) == branch_run_bound_s(off) + 7 * bins * request_s
    suite = validate_suite_data(
        {
            "name": "estimate",
            "targets": [sagemaker_target("s")],
            "workload": {"bins": BINS},
            "load": LOAD,
            "pricing": {"instance_price_per_hour_usd": {"ml.g4dn.xlarge": 0.736}},
            "evaluation": {**evaluation, "quality_pass": True},
        }
    )
    assert suite.evaluation is not None
    with_pass = estimate_branches([on], CLOUD, suite.evaluation)
    instance = with_pass.parts[0]
    assert instance.run_s == estimate_branches([off], CLOUD).parts[0].run_s + 7 * bins * request_s
    # judging: max_answers_per_bin answers per bin, whatever the load sent to it
    judging = with_pass.parts[1]
    assert judging.requests == 2 * 7 * bins


def test_a_bedrock_quality_pass_adds_its_prompts_to_the_token_bound() -> None:
    bedrock = {
        "name": "b",
        "platform": "bedrock",
        "model_id": "m",
        "input_price_per_1k_tokens_usd": 0.001,
        "output_price_per_1k_tokens_usd": 0.002,
    }
    judge = {"name": "j", "target": {"name": "jt", "platform": "emulator", "model": "jm"}}
    (off,) = specs(bedrock, evaluation={"judges": [judge], "max_answers_per_bin": 5})
    (on,) = specs(bedrock, evaluation={"judges": [judge], "max_answers_per_bin": 5, "quality_pass": True})
    before, after = estimate_branches([off]).parts[0], estimate_branches([on]).parts[0]
    bins = len(on.workload.bins)
    assert (after.requests or 0) - (before.requests or 0) == 5 * bins
    assert (after.output_tokens or 0) - (
        before.output_tokens or 0
    ) == 5 * bins * on.workload.inference.max_new_tokens
