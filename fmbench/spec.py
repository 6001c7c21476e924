"""A branch: the contract between the planner and a runner (local task or Fargate container).

It sits below both the planner (``fmbench.plan``) and the cost estimate (``fmbench.estimate``): the planner
makes branch specs and estimates them, the estimate reads them, so neither has to import the other's module
back.
"""

from __future__ import annotations

from pydantic import Field

from fmbench.config import LoadPlan, Slo, StrictModel, Target, Workload
from fmbench.deployment import SageMakerDeployment
from fmbench.ec2_deployment import Ec2Deployment


class DatasetSummary(StrictModel):
    """Which prompts a run sent, for the report: the source, the revision and a hash of the bytes read."""

    source: str = Field(description="The dataset's source as the suite names it, or 'synthetic'.")
    revision: str | None = Field(default=None, description="The commit a Hub dataset's revision resolved to.")
    content_sha256: str | None = Field(default=None, description="SHA-256 of the bytes of every file read.")
    files: list[str] = Field(default_factory=list)
    malformed_rows: int = Field(default=0, description="Rows left out (malformed_rows: skip).")
    duplicates: int = Field(default=0, description="Records whose prompt an earlier record already made.")
    prompts_per_bin: dict[str, int] = Field(default_factory=dict, description="Distinct prompts per bin.")
    truncated_bins: list[str] = Field(
        default_factory=list, description="Bins cut to the limit of prompts the plan step materializes."
    )


class QualityPassSpec(StrictModel):
    """The suite's ``evaluation.quality_pass`` as a branch runs it: which prompts the judging selects
    (``fmbench.evaluation.selection.judged_prompts``), each sent once at concurrency 1 and temperature 0."""

    max_answers_per_bin: int = Field(ge=1, description="evaluation.max_answers_per_bin")
    seed: int = Field(description="evaluation.seed")


class BranchSpec(StrictModel):
    """The contract between the planner and a runner (local task or Fargate container)."""

    run_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    branch_id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    suite_name: str
    target: Target
    workload: Workload
    load: LoadPlan
    slo: Slo = Field(
        default_factory=Slo, description="The suite's SLO: what the capacity search (load.search) judges by."
    )
    instance_type: str | None
    instance_price_per_hour_usd: float | None
    storage_root: str = Field(
        description="Local folder or s3://bucket/prefix that records are written under."
    )
    dataset_base_dir: str | None = Field(
        default=None, description="Folder relative dataset paths start from."
    )
    prompts_uri: str | None = Field(
        default=None,
        description="The run's materialized prompts (datasets/run_id=R/, written by the cloud plan step): "
        "the runner sends these instead of reading the dataset, so every branch sends the same prompts.",
    )
    sagemaker_endpoint_name: str | None = Field(
        default=None,
        description="The endpoint the workflow deploys for this branch (derived from run and branch id); "
        "the runner calls it. None for targets that are not deployed.",
    )
    sagemaker_deployment: SageMakerDeployment | None = Field(
        default=None,
        description="Image and environment the deploy step creates the endpoint with; set by the cloud "
        "planner (fmbench.cloud.steps), None elsewhere.",
    )

    ec2_deployment: Ec2Deployment | None = Field(
        default=None,
        description="What the deploy step launches for an ec2 target (AMI, image, user data); set by the "
        "cloud planner, None elsewhere (docs/ec2.md).",
    )
    quality_pass: QualityPassSpec | None = Field(
        default=None,
        description="Send the judged prompts once more after the load, at concurrency 1 and temperature 0 "
        "(evaluation.quality_pass); None: no quality pass.",
    )
    ec2_endpoint_url: str | None = Field(
        default=None,
        description="The launched instance's OpenAI-compatible URL inside the VPC; written into the spec by "
        "the deploy step once the instance has its private address, read by the runner.",
    )

    @property
    def load_point_count(self) -> int:
        return self.load.level_count * len(self.workload.bins)

    def planned_load_points(self) -> list[tuple[int | None, float | None, str]]:
        """(concurrency, rate per s, bin) of every load point, in the runner's order (``LoadPlan.points``)."""
        points = self.load.points([b.label for b in self.workload.bins])
        return [(p.concurrency, p.request_rate_per_s, p.payload_bin) for p in points]
