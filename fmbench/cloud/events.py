"""The cloud workflow's messages (docs/workflow.md): the events its handlers read, the results they return.

The handlers in ``lambdas/`` parse an event into one of these models, call one step (``fmbench.cloud.steps``
or ``report.cloud``) and return the result model as JSON. Event models ignore keys they do not read: Step
Functions hands a state its accumulated input (a branch item plus earlier results, ``$.error`` from a
Catch), and a handler must not fail on what another state added.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmbench.config import StrictModel

RUN_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# The state whose output carries the run id (docs/workflow.md); the cleanup reads it from the history.
PLAN_STATE_NAME: Final = "Plan"
# The execution input that re-renders a finished run's report instead of running a suite.
REPORT_ONLY_KEY: Final = "report_only"


class EventModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ResultModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanEvent(EventModel):
    suite: Any = Field(
        description='The execution input: a suite as JSON, or {"report_only": {"run_id": ...}} to render '
        "the report of a run again."
    )
    execution_name: str | None = Field(default=None, description="$$.Execution.Name")


class ReportOnlyRequest(StrictModel):
    """Render an earlier run's report again from its records, plan and outcomes; nothing is deployed."""

    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)


class BranchItem(EventModel):
    """One item of the Map: what every per-branch state receives."""

    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)
    branch_id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    spec_uri: str
    platform: str
    needs_deploy: bool
    endpoint_name: str | None
    region: str | None = Field(
        default=None, description="Region of the branch's endpoint when it is not the workflow's own."
    )
    max_status_polls: int = Field(ge=0)

    def endpoint_region(self, default: str) -> str:
        return self.region or default


class PlanResult(ResultModel):
    run_id: str
    suite_name: str
    storage_root: str
    max_concurrency: int = Field(ge=1)
    metrics_query: str
    branches: list[BranchItem] = Field(description="The Map's items; empty for a report-only execution.")
    report_only: bool = Field(
        default=False, description="Render the saved run again: the Map has no items, Query and Render run."
    )
    report_branches: list[BranchItem] = Field(
        default_factory=list, description="Report-only: the saved plan's branches (the Map runs none)."
    )
    cost_estimate_usd: float | None = Field(
        default=None, description="Upper bound of the run's cost (details in plan.json and result.json)."
    )
    quota_check: list[str] = Field(
        default_factory=list, description="Per instance type and region: instances at once vs quota."
    )
    compare: bool = Field(
        default=False, description="The suite has a regression section: Compare runs after Render."
    )
    evaluate: bool = Field(
        default=False, description="The suite has an evaluation section: Evaluate runs after the branches."
    )


class DeployOutput(ResultModel):
    endpoint_name: str
    created_epoch_s: float


class StatusOutput(ResultModel):
    status: Literal["Creating", "InService", "Failed"]
    failure_reason: str | None
    sagemaker_status: str | None = Field(description="SageMaker's own status, for the execution history.")
    in_service_epoch_s: float | None


class TeardownEvent(BranchItem):
    error: dict[str, Any] | None = Field(default=None, description="$.error when Teardown came from a Catch.")


class TeardownOutput(ResultModel):
    deleted: list[str]
    error: dict[str, str | None] | None = Field(
        default=None,
        description="The branch's error, name and cause cut short (fmbench.cloud.limits.bounded_error) as "
        "the Map's result carries it; the whole error is in failure.json.",
    )


class FailureRecord(StrictModel):
    """The whole error that ended a branch (a Catch's Error and Cause), for the report: the Map's result
    carries it cut short to keep the execution's state data bounded."""

    run_id: str
    branch_id: str
    error: dict[str, Any]


class TeardownRecord(StrictModel):
    """When a branch's endpoint was created and when Teardown deleted it (result.json: actual cost)."""

    run_id: str
    branch_id: str
    endpoint_name: str
    created_epoch_s: float
    deleted_epoch_s: float


class BranchResultItem(EventModel):
    """What the Map leaves per branch: the BranchFailed, BranchSucceeded or TeardownFailed Pass state's output
    (docs/workflow.md)."""

    branch_id: str
    status: Literal["succeeded", "failed"]
    error: dict[str, Any] | None = None

    def error_reason(self) -> str | None:
        """'Error: cause' of the Catch that ended the branch, with a Lambda's errorMessage unwrapped."""
        if not self.error:
            return None
        name = str(self.error.get("Error") or "error")
        cause = self.error.get("Cause")
        if isinstance(cause, str):
            try:
                parsed = json.loads(cause)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("errorMessage"):
                cause = str(parsed["errorMessage"])
        return f"{name}: {cause}" if cause else name


class EvaluationStep(EventModel):
    """``$.evaluation`` as Render gets it: the Evaluate task's command, and the error its Catch kept when it
    failed; empty when this execution judged nothing (the suite has no evaluation, or a report-only run)."""

    command: list[str] = Field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def ran(self) -> bool:
        return bool(self.command) or self.error is not None


class RenderEvent(EventModel):
    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)
    query_execution_id: str = Field(min_length=1)
    branch_results: list[BranchResultItem] = Field(default_factory=list)
    started_at: datetime | None = Field(
        default=None, description="$$.Execution.StartTime: when the run started, for the runs table."
    )
    evaluation: EvaluationStep | None = Field(
        default=None, description="$.evaluation: the Evaluate task's command and caught error, if it ran."
    )


class CompareEvent(EventModel):
    """The Compare state's payload: the run Render published, and whether this is a report-only re-render
    (which keeps the comparison the run was given)."""

    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)
    report_only: bool = False


class DeploymentRecord(StrictModel):
    """When a deployed endpoint was created and when it came into service (result.json: deployment_s)."""

    run_id: str
    branch_id: str
    endpoint_name: str
    created_epoch_s: float
    in_service_epoch_s: float

    @property
    def deployment_s(self) -> float:
        return max(0.0, self.in_service_epoch_s - self.created_epoch_s)
