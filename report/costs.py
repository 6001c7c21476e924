"""The run's actual cost beside its estimate: instance seconds (creation to deletion) x price, tokens x price.

Each branch's figure says how it was counted (``basis``), because the records differ: a deployed endpoint
has Teardown's record of its creation and deletion (or, without it, the end of the load: a lower bound),
a local emulator only the branch's wall time (emulated: nothing is billed), Bedrock the tokens of the
measured window's successful requests (warm-up, cool-down and failures are not counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import pandas as pd

from fmbench.config import BedrockTarget
from fmbench.estimate import SECONDS_PER_HOUR, CostEstimate, estimate_branches
from fmbench.plan import BranchOutcome, RunPlan
from fmbench.spec import BranchSpec
from report.accuracy import AccuracyView
from report.analysis import python_value
from report.result import ActualCostPart, CostSummary, JudgingCost

NOT_BILLED_BASIS: Final = "not billed by this run"


@dataclass(frozen=True, slots=True)
class EndpointLifetime:
    """When a deployed endpoint was created and, if Teardown recorded it, deleted (epoch seconds)."""

    created_epoch_s: float
    deleted_epoch_s: float | None = None
    in_service_epoch_s: float | None = None  # the status step's record (deployment.json), when there is one

    @property
    def deployment_s(self) -> float | None:
        if self.in_service_epoch_s is None:
            return None
        return max(0.0, self.in_service_epoch_s - self.created_epoch_s)


def _split(
    spec: BranchSpec,
    start_s: float,
    end_s: float,
    in_service_s: float | None,
    outcome: BranchOutcome | None,
) -> dict[str, float | None]:
    """The instance time from ``start_s`` to ``end_s`` in USD, split into deployment (to InService), load
    (the runner's start to end, within the rest) and idle (what remains); unknown parts stay None."""
    price = spec.instance_price_per_hour_usd
    if price is None:
        return {}
    rate = price * spec.target.instance_count / SECONDS_PER_HOUR
    ready_s = min(max(in_service_s, start_s), end_s) if in_service_s is not None else start_s
    load_s = None
    if outcome is not None and outcome.started_epoch_s is not None and outcome.ended_epoch_s is not None:
        load_s = max(0.0, min(outcome.ended_epoch_s, end_s) - max(outcome.started_epoch_s, ready_s))
    deployment_s = ready_s - start_s if in_service_s is not None else None
    idle_s = None
    if deployment_s is not None and load_s is not None:
        idle_s = max(0.0, end_s - start_s - deployment_s - load_s)
    return {
        "deployment_usd": deployment_s * rate if deployment_s is not None else None,
        "load_usd": load_s * rate if load_s is not None else None,
        "idle_usd": idle_s * rate if idle_s is not None else None,
    }


def _instance_usd(spec: BranchSpec, seconds: float) -> tuple[float | None, float]:
    instance_seconds = max(0.0, seconds) * spec.target.instance_count
    price = spec.instance_price_per_hour_usd
    usd = instance_seconds / SECONDS_PER_HOUR * price if price is not None else None
    return usd, instance_seconds


def _deployed_part(
    spec: BranchSpec, outcome: BranchOutcome | None, lifetime: EndpointLifetime | None
) -> ActualCostPart:
    name = spec.target.name
    if lifetime is None:
        return ActualCostPart(
            branch_id=spec.branch_id,
            target_name=name,
            usd=None,
            basis="no record of the endpoint's creation (it may never have been created)",
        )
    end_epoch_s = lifetime.deleted_epoch_s
    basis = "endpoint creation to deletion"
    if end_epoch_s is None:
        end_epoch_s = outcome.ended_epoch_s if outcome is not None else None
        basis = "endpoint creation to the end of the load: a lower bound (no record of the deletion)"
    if end_epoch_s is None:
        return ActualCostPart(
            branch_id=spec.branch_id, target_name=name, usd=None, basis="no record of the endpoint's end"
        )
    usd, instance_seconds = _instance_usd(spec, end_epoch_s - lifetime.created_epoch_s)
    if usd is None:
        basis += f"; no price for {spec.instance_type}"
    return ActualCostPart(
        branch_id=spec.branch_id,
        target_name=name,
        usd=usd,
        instance_seconds=instance_seconds,
        basis=basis,
        deployment_s=lifetime.deployment_s,
        **_split(spec, lifetime.created_epoch_s, end_epoch_s, lifetime.in_service_epoch_s, outcome),
    )


def _emulated_part(spec: BranchSpec, outcome: BranchOutcome | None) -> ActualCostPart:
    name = spec.target.name
    if outcome is None or outcome.started_epoch_s is None or outcome.ended_epoch_s is None:
        return ActualCostPart(
            branch_id=spec.branch_id, target_name=name, usd=None, emulated=True, basis="no branch times"
        )
    usd, instance_seconds = _instance_usd(spec, outcome.ended_epoch_s - outcome.started_epoch_s)
    basis = "emulated: branch wall time x the emulated instance's price"
    if usd is None:
        basis = "emulated without an instance price"
    return ActualCostPart(
        branch_id=spec.branch_id,
        target_name=name,
        usd=usd,
        instance_seconds=instance_seconds,
        emulated=True,
        basis=basis,
        # The emulator is ready when the branch starts: no deployment, all of the wall time is load.
        deployment_s=0.0,
        **_split(spec, outcome.started_epoch_s, outcome.ended_epoch_s, outcome.started_epoch_s, outcome),
    )


def _provisioned_part(spec: BranchSpec, outcome: BranchOutcome | None) -> ActualCostPart:
    """Bedrock provisioned throughput: the branch's wall time x model units x the unit-hour price (a lower
    bound: AWS bills whole hours of the commitment, which may outlive the run)."""
    name = spec.target.name
    if outcome is None or outcome.started_epoch_s is None or outcome.ended_epoch_s is None:
        return ActualCostPart(branch_id=spec.branch_id, target_name=name, usd=None, basis="no branch times")
    usd, instance_seconds = _instance_usd(spec, outcome.ended_epoch_s - outcome.started_epoch_s)
    return ActualCostPart(
        branch_id=spec.branch_id,
        target_name=name,
        usd=usd,
        instance_seconds=instance_seconds,
        basis="provisioned throughput: branch wall time x model units x price per unit-hour (a lower bound)",
    )


def _token_part(spec: BranchSpec, metrics: pd.DataFrame) -> ActualCostPart:
    target = spec.target
    assert isinstance(target, BedrockTarget)
    rows = metrics[metrics["branch_id"] == spec.branch_id] if not metrics.empty else metrics
    input_price = target.input_price_per_1k_tokens_usd
    output_price = target.output_price_per_1k_tokens_usd
    if input_price is None or output_price is None:
        return ActualCostPart(
            branch_id=spec.branch_id, target_name=target.name, usd=None, basis="no token price on the target"
        )
    input_tokens = output_tokens = 0.0
    for _, row in rows.iterrows():
        successes = python_value(row["successes"]) or 0
        input_tokens += successes * (python_value(row["prompt_tokens_mean"]) or 0.0)
        output_tokens += successes * (python_value(row["completion_tokens_mean"]) or 0.0)
    return ActualCostPart(
        branch_id=spec.branch_id,
        target_name=target.name,
        usd=(input_tokens * input_price + output_tokens * output_price) / 1000,
        basis="tokens of the measured window's successful requests (warm-up, cool-down and failed "
        "requests not counted)",
    )


def actual_cost_parts(
    plan: RunPlan,
    outcomes: Mapping[str, BranchOutcome],
    metrics: pd.DataFrame,
    lifetimes: Mapping[str, EndpointLifetime],
) -> list[ActualCostPart]:
    parts = []
    for spec in plan.branches:
        outcome = outcomes.get(spec.branch_id)
        platform = spec.target.platform
        if spec.target.needs_deploy:
            parts.append(_deployed_part(spec, outcome, lifetimes.get(spec.branch_id)))
        elif platform == "emulator":
            parts.append(_emulated_part(spec, outcome))
        elif platform == "bedrock" and spec.instance_price_per_hour_usd is not None:
            parts.append(_provisioned_part(spec, outcome))
        elif platform == "bedrock":
            parts.append(_token_part(spec, metrics))
        else:
            parts.append(
                ActualCostPart(
                    branch_id=spec.branch_id, target_name=spec.target.name, usd=0.0, basis=NOT_BILLED_BASIS
                )
            )
    return parts


def judging_cost(accuracy: AccuracyView | None) -> JudgingCost | None:
    """The panel's cost: the sum of every judgment row's ``cost_usd`` (accuracy.sql); None when not judged."""
    if accuracy is None:
        return None
    return JudgingCost(
        usd=round(accuracy.cost_usd, 6),
        complete=accuracy.verdicts_without_cost == 0,
        verdicts_without_cost=accuracy.verdicts_without_cost,
        attempts=accuracy.attempts,
        prompt_tokens=accuracy.prompt_tokens,
        completion_tokens=accuracy.completion_tokens,
    )


def cost_summary(
    plan: RunPlan,
    outcomes: Mapping[str, BranchOutcome],
    metrics: pd.DataFrame,
    lifetimes: Mapping[str, EndpointLifetime] | None = None,
    accuracy: AccuracyView | None = None,
) -> CostSummary:
    """The plan's estimate (made before the run; recomputed for a plan saved without one) and the actual,
    the judges' cost included as its own line when the run was judged."""
    estimate: CostEstimate = plan.cost_estimate or estimate_branches(plan.branches)
    actual = actual_cost_parts(plan, outcomes, metrics, lifetimes or {})
    billed = [part for part in estimate.parts if part.billing != "none"]
    judging = judging_cost(accuracy)
    return CostSummary(
        estimate_usd=estimate.total_usd,
        estimate_complete=estimate.complete,
        estimate_parts=estimate.parts,
        actual_usd=round(sum(part.usd or 0.0 for part in actual) + (judging.usd if judging else 0.0), 6),
        actual_complete=all(part.usd is not None for part in actual)
        and (judging is None or judging.complete),
        actual_parts=actual,
        emulated=bool(billed) and all(part.emulated for part in billed),
        judging=judging,
    )
