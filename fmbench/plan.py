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
from fmbench.pricing import instance_price_per_hour_usd
from fmbench.spec import BranchSpec, DatasetSummary


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


def resolve_instance(target: Any, suite: Suite) -> tuple[str | None, float | None]:
    """Instance type and hourly price of a target (an emulator stands in for its profile's instance)."""
    instance_type = target.instance_type
    profile_price = None
    if target.platform == "emulator" and target.emulator.profile and target.emulator.ttft_ms is None:
        from fmbench.emulator.profiles import get_profile

        profile = get_profile(target.emulator.profile)
        instance_type = instance_type or profile.instance_type
        profile_price = profile.price_per_hour_usd
    price = instance_price_per_hour_usd(
        instance_type, suite.pricing.instance_price_per_hour_usd, profile_price
    )
    return instance_type, price


def plan_suite(
    suite: Suite,
    storage_root: str,
    run_id: str | None = None,
    dataset_base_dir: str | None = None,
    estimate_settings: EstimateSettings | None = None,
) -> RunPlan:
    """Branch specs of every target, and the run's cost estimate (``estimate_settings``: the stack's bounds,
    default none, as for a local run)."""
    run_id = run_id or new_run_id()
    branches = []
    for target in suite.expanded_targets():
        instance_type, price = resolve_instance(target, suite)
        branch_id = branch_id_for(target, suite.workload, suite.load, price)
        branches.append(
            BranchSpec(
                run_id=run_id,
                branch_id=branch_id,
                suite_name=suite.name,
                target=target,
                workload=suite.workload,
                load=suite.load,
                instance_type=instance_type,
                instance_price_per_hour_usd=price,
                storage_root=storage_root,
                dataset_base_dir=dataset_base_dir,
                sagemaker_endpoint_name=(
                    resource_names(run_id, branch_id).endpoint
                    if target.needs_deploy and target.platform == "sagemaker"
                    else None
                ),
            )
        )
    return RunPlan(
        run_id=run_id,
        suite=suite,
        branches=branches,
        cost_estimate=estimate_branches(branches, estimate_settings),
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
