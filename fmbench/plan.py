"""Suite -> branch specs: one per target, each with a stable id and everything its runner needs."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from fmbench.config import LoadPlan, StrictModel, Suite, Workload
from fmbench.deployment import resource_names
from fmbench.estimate import CostEstimate, EstimateSettings, estimate_branches
from fmbench.pricing import PriceTable, bundled_table, instance_price_per_hour_usd
from fmbench.spec import BranchSpec, DatasetSummary, QualityPassSpec


class RunPlan(StrictModel):
    run_id: str
    suite: Suite
    branches: list[BranchSpec]
    cost_estimate: CostEstimate | None = Field(
        default=None,
        description="Upper bound of the run's cost, made before anything ran; result.json shows it beside "
        "the actual cost.",
    )
    dataset: DatasetSummary | None = Field(
        default=None,
        description="The prompts the run materialized for its branches (source, revision, content hash).",
    )
    prices_note: str | None = Field(
        default=None,
        description="Which price table priced the plan (the Price List API's or the bundled one) and why.",
    )


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "branch"


def branch_id_for(target: Any, workload: Workload, load: LoadPlan, price: float | None) -> str:
    """Slug of the target name plus a hash of the branch's content: the same content, the same id."""
    content = {
        "target": target.model_dump(mode="json"),
        "workload": workload.model_dump(mode="json"),
        "load": load.model_dump(mode="json"),
        "price": price,
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]
    return f"{_slug(target.name, 40)}-{digest}"


def resolve_instance(
    target: Any, suite: Suite, prices: PriceTable | None = None
) -> tuple[str | None, float | None]:
    """Instance type and hourly price of a target (an emulator stands in for its profile's instance; a
    Bedrock target with provisioned throughput is charged its model units by the hour)."""
    if target.platform == "bedrock":
        if target.provisioned_model_units is None:
            return None, None
        return None, target.price_per_hour_usd * target.provisioned_model_units
    instance_type = target.instance_type
    profile_price = None
    if target.platform == "emulator" and target.emulator.profile and target.emulator.ttft_ms is None:
        from fmbench.emulator.profiles import get_profile

        profile = get_profile(target.emulator.profile)
        instance_type = instance_type or profile.instance_type
        profile_price = profile.price_per_hour_usd
    price = instance_price_per_hour_usd(
        instance_type,
        suite.pricing.instance_price_per_hour_usd,
        profile_price,
        region=getattr(target, "region", None),
        table=prices,
    )
    return instance_type, price


def with_token_prices(target: Any, prices: PriceTable | None = None) -> Any:
    """A Bedrock target on demand without token prices gets the table's for its model and region."""
    if target.platform != "bedrock" or target.provisioned_model_units is not None:
        return target
    if target.input_price_per_1k_tokens_usd is not None and target.output_price_per_1k_tokens_usd is not None:
        return target
    found = (prices or bundled_table()).token_price(target.model_id, target.region)
    if found is None:
        return target
    return target.model_copy(
        update={
            "input_price_per_1k_tokens_usd": target.input_price_per_1k_tokens_usd
            if target.input_price_per_1k_tokens_usd is not None
            else found.input_per_1k_usd,
            "output_price_per_1k_tokens_usd": target.output_price_per_1k_tokens_usd
            if target.output_price_per_1k_tokens_usd is not None
            else found.output_per_1k_usd,
        }
    )


def quality_pass_spec(suite: Suite) -> QualityPassSpec | None:
    """What each branch's quality pass selects, when the suite asks for one (``evaluation.quality_pass``)."""
    evaluation = suite.evaluation
    if evaluation is None or not evaluation.quality_pass:
        return None
    return QualityPassSpec(max_answers_per_bin=evaluation.max_answers_per_bin, seed=evaluation.seed)


def plan_suite(
    suite: Suite,
    storage_root: str,
    run_id: str | None = None,
    dataset_base_dir: str | None = None,
    estimate_settings: EstimateSettings | None = None,
    prices: PriceTable | None = None,
) -> RunPlan:
    """Branch specs of every target, and the run's cost estimate (``estimate_settings``: the stack's bounds,
    default none, as for a local run; ``prices``: the price table, default the bundled one)."""
    run_id = run_id or new_run_id()
    quality = quality_pass_spec(suite)
    # set only when on, so that a plan without a quality pass is written as before (exclude_unset)
    extra: dict[str, Any] = {} if quality is None else {"quality_pass": quality}
    branches = []
    for suite_target in suite.expanded_targets():
        target = with_token_prices(suite_target, prices)
        instance_type, price = resolve_instance(target, suite, prices)
        branch_id = branch_id_for(target, suite.workload, suite.load, price)
        branches.append(
            BranchSpec(
                run_id=run_id,
                branch_id=branch_id,
                suite_name=suite.name,
                target=target,
                workload=suite.workload,
                load=suite.load,
                slo=suite.slo,
                instance_type=instance_type,
                instance_price_per_hour_usd=price,
                storage_root=storage_root,
                dataset_base_dir=dataset_base_dir,
                sagemaker_endpoint_name=(
                    resource_names(run_id, branch_id).endpoint
                    if target.needs_deploy and target.platform == "sagemaker"
                    else None
                ),
                **extra,
            )
        )
    table = prices or bundled_table()
    return RunPlan(
        run_id=run_id,
        suite=suite,
        branches=branches,
        cost_estimate=estimate_branches(branches, estimate_settings, suite.evaluation),
        prices_note=f"prices: {table.source} (as of {table.as_of})",
    )


class BranchOutcome(StrictModel):
    """What became of one branch: the runner's account, carried into result.json and the report."""

    branch_id: str
    status: Literal["succeeded", "partial", "failed"]
    reason: str | None = Field(default=None, description="Why the branch failed or is partial.")
    requests_attempted: int = Field(default=0, ge=0)
    records_written: int = Field(default=0, ge=0)
    load_points_planned: int = Field(default=0, ge=0)
    load_points_completed: int = Field(default=0, ge=0)
    started_epoch_s: float | None = None
    ended_epoch_s: float | None = None
