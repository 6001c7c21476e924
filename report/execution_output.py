"""The cloud execution's output: a bounded summary of result.json and where the full report is in S3.

Step Functions refuses a state output over 256 KiB, and result.json grows with every load point (about
950 bytes each): returned whole, a suite of a few hundred load points would fail its execution after the
report was published. The summary keeps what a caller acts on (status, best configuration, branch counts,
cost totals, the SLO, whether the answers were judged) and points to result.json for everything else; its
size does not depend on the number of load points, and it holds at most ``MAX_BINS`` best configurations.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from report.result import (
    BestConfiguration,
    BranchStatus,
    EvaluationStatus,
    RegressionFinding,
    RegressionResult,
    RegressionVerdict,
    ResultDocument,
    SloSummary,
)

SCHEMA_VERSION: Literal["1"] = "1"
# Best configurations per bin carried in the output; a suite's further bins are in result.json only.
MAX_BINS: Final = 16
# Regressed findings carried in the output; the rest (and every other finding) are in result.json only.
MAX_FINDINGS: Final = 20


class _ResultModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BranchCounts(_ResultModel):
    """How many branches ended in each status (per branch, never per load point)."""

    total: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    partial: int = Field(ge=0)
    failed: int = Field(ge=0)


class CostTotals(_ResultModel):
    """result.json's cost without its parts."""

    estimate_usd: float | None = Field(description="Upper bound made at planning, USD.")
    estimate_complete: bool
    actual_usd: float | None = Field(description="Sum of the known actual parts, USD.")
    actual_complete: bool


class RegressionSummary(_ResultModel):
    """result.json's ``regression`` in brief: the verdict, and the regressed findings (at most 20)."""

    baseline_run_id: str | None
    verdict: RegressionVerdict
    regressed_metrics: list[str]
    findings: list[RegressionFinding] = Field(
        max_length=MAX_FINDINGS, description="The regressed findings, the first 20; result.json has all."
    )
    findings_omitted: int = Field(default=0, ge=0, description="Regressed findings left out here.")


def regression_summary(regression: RegressionResult) -> RegressionSummary:
    regressed = [finding for finding in regression.findings if finding.verdict == "regressed"]
    return RegressionSummary(
        baseline_run_id=regression.baseline_run_id,
        verdict=regression.verdict,
        regressed_metrics=regression.regressed_metrics,
        findings=regressed[:MAX_FINDINGS],
        findings_omitted=max(0, len(regressed) - MAX_FINDINGS),
    )


class ExecutionOutput(_ResultModel):
    """The Step Functions execution's output (the Render state's): result.json in brief, and where it is."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    run_id: str
    suite_name: str
    generated_at: datetime = Field(description="When the report was generated, ISO 8601 UTC.")
    status: BranchStatus = Field(
        description="succeeded: every branch succeeded; failed: every branch failed; partial otherwise."
    )
    branches: BranchCounts
    slo: SloSummary
    headline_bin: str | None = Field(description="Payload bin the headline best configuration is chosen in.")
    best: BestConfiguration | None = Field(
        description="Best configuration of the headline bin under the SLO; null when no load point meets it."
    )
    best_per_bin: list[BestConfiguration] = Field(
        max_length=MAX_BINS,
        description=f"Best configuration per payload bin, in the suite's bin order; the first {MAX_BINS}.",
    )
    best_per_bin_omitted: int = Field(
        default=0, ge=0, description="Bins with a best configuration left out here (result.json has them)."
    )
    cost: CostTotals | None = None
    result_json: str = Field(description="Location of the full result.json (s3://... in the cloud).")
    report_html: str
    report_md: str
    report_prefix: str = Field(description="Folder of the report's files, with a trailing '/'.")
    verdict: RegressionVerdict | None = Field(
        default=None, description="The regression verdict; null when the suite asks for no comparison."
    )
    regression: RegressionSummary | None = Field(
        default=None, description="The comparison with the baseline in brief (result.json has it whole)."
    )
    evaluation: EvaluationStatus | None = Field(
        default=None,
        description="Whether the answers were judged, and why not (the error is cut to 600 characters), as "
        "in result.json; null when result.json has no such block.",
    )


def execution_output(document: ResultDocument) -> ExecutionOutput:
    """The summary of a published result.json (its artifacts already point to their S3 locations)."""
    counts = Counter(branch.status for branch in document.branches)
    cost = document.cost
    artifacts = document.artifacts
    return ExecutionOutput(
        run_id=document.run_id,
        suite_name=document.suite_name,
        generated_at=document.generated_at,
        status=document.status,
        branches=BranchCounts(
            total=len(document.branches),
            succeeded=counts["succeeded"],
            partial=counts["partial"],
            failed=counts["failed"],
        ),
        slo=document.slo,
        headline_bin=document.headline_bin,
        best=document.best,
        best_per_bin=document.best_per_bin[:MAX_BINS],
        best_per_bin_omitted=max(0, len(document.best_per_bin) - MAX_BINS),
        cost=CostTotals(
            estimate_usd=cost.estimate_usd,
            estimate_complete=cost.estimate_complete,
            actual_usd=cost.actual_usd,
            actual_complete=cost.actual_complete,
        )
        if cost is not None
        else None,
        result_json=artifacts.result_json,
        report_html=artifacts.report_html,
        report_md=artifacts.report_md,
        report_prefix=artifacts.result_json.rsplit("/", 1)[0] + "/",
        verdict=document.regression.verdict if document.regression is not None else None,
        regression=regression_summary(document.regression) if document.regression is not None else None,
        evaluation=document.evaluation,
    )


def execution_output_json_schema() -> dict[str, Any]:
    schema = ExecutionOutput.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "FMBench Flow execution output"
    return schema


def write_execution_output_schema(path: str | Path) -> Path:
    """schema/execution-output.schema.json: what callers of the state machine get from DescribeExecution."""
    target = Path(path)
    target.write_text(
        json.dumps(execution_output_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return target
