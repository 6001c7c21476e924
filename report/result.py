"""result.json: the execution's machine-readable output, its pydantic models and its JSON Schema."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fmbench.estimate import CostPart

SCHEMA_VERSION: Literal["1"] = "1"
BranchStatus = Literal["succeeded", "partial", "failed"]


class _ResultModel(BaseModel):
    """Strict and NaN-free: pandas reports a missing figure as NaN, JSON and its readers want null."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _nan_is_null(cls, value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        return value


class BestConfiguration(_ResultModel):
    """The best load point of one payload bin, with FMBench's field names so its readers can consume it.

    Units are FMBench's too: seconds, tokens, tokens per second, USD.
    """

    experiment_name: str = Field(description="Target name of the branch (FMBench: experiment name).")
    branch_id: str = Field(description="Branch id (target slug + content hash).")
    payload_file: str = Field(description="Payload bin label, e.g. '500-2000' (prompt tokens).")
    instance_type: str | None = Field(description="Instance type; null when the endpoint is not an instance.")
    instance_count: int | None = Field(description="Number of instances behind the endpoint.")
    concurrency: int | None = Field(
        description="Concurrent requests (closed loop); null in request-rate mode."
    )
    request_rate_per_s: float | None = Field(
        description="Offered requests per second (open loop); null in concurrency mode."
    )
    error_rate: float = Field(ge=0, le=1, description="Failed / measured requests (0..1).")
    prompt_token_count_mean: float | None = Field(description="Mean prompt tokens of successful requests.")
    prompt_token_throughput: float | None = Field(description="Prompt tokens per second of the window.")
    completion_token_count_mean: float | None = Field(description="Mean completion tokens of successes.")
    completion_token_throughput: float | None = Field(
        description="Completion tokens per second of the window."
    )
    latency_mean: float | None = Field(description="Mean end-to-end latency of successes, seconds.")
    latency_p50: float | None = Field(description="Median end-to-end latency, seconds.")
    latency_p95: float | None = Field(description="95th percentile end-to-end latency, seconds.")
    latency_p99: float | None = Field(description="99th percentile end-to-end latency, seconds.")
    ttft_p95: float | None = Field(
        description="95th percentile time to first token, seconds; null if not streamed."
    )
    transactions_per_minute: float | None = Field(description="Successful requests per minute of the window.")
    price_per_txn: float | None = Field(
        description="USD per successful request; null when the price is unknown."
    )
    price_per_1m_output_tokens: float | None = Field(
        description="USD per million completion tokens; null when the price is unknown."
    )


class SloSummary(_ResultModel):
    p95_latency_s: float | None = Field(
        description="Maximum p95 end-to-end latency, seconds; null: no limit."
    )
    p95_ttft_s: float | None = Field(description="Maximum p95 time to first token, seconds; null: no limit.")
    max_error_rate: float = Field(ge=0, le=1, description="Maximum error rate (0..1).")
    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Accuracy floor: lowest majority-vote accuracy of a branch (0..1); null: no floor.",
    )
    request_ttft_s: float | None = Field(
        default=None, description="Goodput: a request's maximum time to first token, seconds; null: none."
    )
    request_tpot_s: float | None = Field(
        default=None, description="Goodput: a request's maximum time per output token, seconds; null: none."
    )
    request_latency_s: float | None = Field(
        default=None, description="Goodput: a request's maximum end-to-end latency, seconds; null: none."
    )


class ServerPointSummary(_ResultModel):
    """What the endpoint itself reported during a load point (docs/metrics.md, "Server-side metrics");
    null where its source has no such figure."""

    running_mean: float | None = Field(description="Mean of the scraped vllm:num_requests_running.")
    running_max: float | None = Field(description="Largest scraped vllm:num_requests_running.")
    waiting_mean: float | None = Field(description="Mean of the scraped vllm:num_requests_waiting.")
    waiting_max: float | None = Field(description="Largest scraped vllm:num_requests_waiting.")
    kv_cache_usage_mean: float | None = Field(description="Mean scraped KV-cache usage (0..1).")
    prefix_cache_hit_rate: float | None = Field(description="Prefix-cache hits / queries over the point.")
    server_latency_mean_s: float | None = Field(
        description="CloudWatch: mean ModelLatency (SageMaker) or InvocationLatency (Bedrock), s."
    )
    gpu_utilization_mean: float | None = Field(description="CloudWatch: mean GPUUtilization, percent.")


class LoadPointSummary(_ResultModel):
    """Headline metrics of one load point; summary.parquet has every metric."""

    concurrency: int | None = Field(description="Concurrent requests; null in request-rate mode.")
    request_rate_per_s: float | None = Field(
        description="Offered requests per second; null in concurrency mode."
    )
    payload_bin: str
    requests: int = Field(ge=0, description="Measured requests (warm-up and cool-down excluded).")
    error_rate: float = Field(ge=0, le=1)
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p95_s: float | None
    latency_from_schedule_p95_s: float | None = Field(
        description="95th percentile of end-to-end latency from the scheduled time (queueing included), s."
    )
    transactions_per_minute: float | None
    completion_token_throughput_per_s: float | None
    price_per_txn_usd: float | None
    meets_slo: bool = Field(description="The load point's figures meet the SLO (client check aside).")
    client_bound: bool = Field(
        description="The runner could not keep up (schedule lag, CPU or event-loop lateness over the suite's "
        "client_check): "
        "the figures describe the runner, not the endpoint, and the load point is never the best."
    )
    schedule_lag_p99_s: float | None = Field(
        description="99th percentile of send time minus scheduled time of the measured requests, s."
    )
    runner_cpu_fraction: float | None = Field(
        description="Runner process CPU time / wall time over the load point (1.0 = one core busy)."
    )
    itl_p50_s: float | None = Field(default=None, description="Median inter-token latency, s.")
    itl_p95_s: float | None = Field(default=None, description="95th percentile inter-token latency, s.")
    itl_p99_s: float | None = Field(default=None, description="99th percentile inter-token latency, s.")
    output_tokens_per_s_per_user: float | None = Field(
        default=None, description="Mean completion tokens / mean end-to-end latency of the successes."
    )
    price_per_1m_input_tokens_usd: float | None = Field(
        default=None, description="Cost of the window per million input (prompt) tokens, USD."
    )
    price_per_1m_output_tokens_usd: float | None = Field(
        default=None, description="Cost of the window per million output (completion) tokens, USD."
    )
    price_per_1m_total_tokens_usd: float | None = Field(
        default=None, description="Cost of the window per million input plus output tokens, USD."
    )
    window_cost_usd: float | None = Field(
        default=None, description="Cost of the load point's measured window, USD; null when unpriced."
    )
    completed: bool = Field(
        default=True,
        description="False when the branch's sweep stopped during (or right after) this load point: it may "
        "hold fewer requests than planned.",
    )
    goodput_share: float | None = Field(
        default=None,
        description="Share of the measured requests that succeeded within every per-request SLO set "
        "(slo.request_*); null when none is set.",
    )
    goodput_per_s: float | None = Field(
        default=None,
        description="Requests that succeeded within every per-request SLO set, per second of the window; "
        "null when none is set.",
    )
    server: ServerPointSummary | None = Field(
        default=None, description="The endpoint's own figures for this load point; null without any."
    )


class PlannedLoadPoint(_ResultModel):
    """A load point of the plan, named by its level and bin."""

    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str


class BranchAccuracy(_ResultModel):
    """A judged branch's majority-vote accuracy (docs/metrics.md, "Accuracy")."""

    majority_accuracy: float | None = Field(
        ge=0, le=1, description="Majority-correct prompts / judged prompts (0..1); null without a prompt."
    )
    interval_low: float | None = Field(description="Lower end of the Wilson interval at `confidence`.")
    interval_high: float | None = Field(description="Upper end of the Wilson interval at `confidence`.")
    confidence: float = Field(gt=0, lt=1, description="Confidence level of the interval.")
    judged_prompts: int = Field(ge=0, description="Distinct prompts of the branch with any verdict.")
    majority_correct: int = Field(ge=0)
    majority_incorrect: int = Field(ge=0)
    no_majority: int = Field(
        ge=0, description="Prompts whose votes tied or that got no vote: counted against the accuracy."
    )
    meets_floor: bool | None = Field(
        description="The accuracy reaches the SLO's min_accuracy; null when the SLO sets no floor."
    )
    answer_source: Literal["load", "quality_pass"] | None = Field(
        default=None,
        description="Where the judged answers came from: 'load' (answers under load) or 'quality_pass' "
        "(evaluation.quality_pass: concurrency 1, temperature 0); null when not recorded.",
    )


class JudgeSummary(_ResultModel):
    """One judge of the panel over every branch: its verdicts and what they cost."""

    judge: str
    judge_model: str | None
    verdicts: int = Field(ge=0, description="Prompts it gave a verdict on (its latest row per prompt).")
    correct: int = Field(ge=0)
    incorrect: int = Field(ge=0)
    unparsed: int = Field(ge=0, description="Answers that did not read as a verdict: not a vote.")
    errors: int = Field(ge=0, description="Calls that got no answer: not a vote.")
    share_correct: float | None = Field(description="correct / (correct + incorrect): of its votes only.")
    attempts: int = Field(ge=0, description="Calls made, re-asks included.")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0, description="Sum of its calls' known costs, USD.")


class JudgeCandidateShare(_ResultModel):
    """One judge's votes on one candidate: where a judge favours or disfavours a candidate, it shows here."""

    judge: str
    branch_id: str
    target_name: str
    correct: int = Field(ge=0)
    incorrect: int = Field(ge=0)
    share_correct: float | None = Field(description="correct / (correct + incorrect); null without a vote.")


class JudgePairAgreement(_ResultModel):
    judge: str
    other_judge: str
    prompts: int = Field(ge=0, description="Prompts both judges voted on.")
    observed_agreement: float | None = Field(description="Share of those prompts with the same vote.")
    cohen_kappa: float | None = Field(description="Cohen's kappa; null when undefined (no prompt, one vote).")


class PanelAgreement(_ResultModel):
    """The judging panel: each judge, and how far the judges agree beyond chance."""

    judged_prompts: int = Field(ge=0, description="Distinct (branch, prompt) answers with any verdict.")
    rated_prompts: int = Field(ge=0, description="Answers with at least two votes: Fleiss' kappa's items.")
    fleiss_kappa: float | None = Field(description="Fleiss' kappa over the panel; null when undefined.")
    judges: list[JudgeSummary]
    judge_candidates: list[JudgeCandidateShare] = Field(default_factory=list)
    pairs: list[JudgePairAgreement]


# --------------------------------------------------------------------------------------------- capacity


class CapacityLevel(_ResultModel):
    """One load level of a branch in the headline bin, with the figures its capacity is read from."""

    concurrency: int | None = Field(description="Concurrent requests; null in request-rate mode.")
    request_rate_per_s: float | None = Field(
        description="Offered requests per second; null in concurrency mode."
    )
    transactions_per_minute: float | None = Field(description="Successful requests per minute of the window.")
    latency_p95_s: float | None = Field(description="95th percentile end-to-end latency, seconds.")
    meets_slo: bool = Field(description="The load point meets the SLO and is not client-bound.")


class SearchStepResult(_ResultModel):
    step: int = Field(ge=0, description="Position in the order the levels were tried (0-based).")
    concurrency: int | None
    request_rate_per_s: float | None
    verdict: Literal["pass", "fail", "client_bound"] = Field(
        description="pass: every bin's point met the SLO; fail: some did not; client_bound: not judged."
    )


class SearchResult(_ResultModel):
    """The branch's capacity search (load.search), replayed from the measured load points."""

    mode: Literal["concurrency", "rate"]
    found: bool = Field(description="Some level met the SLO.")
    capacity_concurrency: int | None = Field(
        description="Highest concurrency that met the SLO (closed loop)."
    )
    capacity_rate_per_s: float | None = Field(
        description="Highest request rate that met the SLO (open loop)."
    )
    stop_reason: str | None = Field(description="Why the search stopped, in words.")
    points_tried: list[SearchStepResult] = Field(description="Levels in the order tried.")


class BranchCapacity(_ResultModel):
    """Knee, capacity under the SLO and best goodput point of one branch (docs/metrics.md, "Capacity")."""

    branch_id: str
    target_name: str
    mode: Literal["concurrency", "rate"] | None = Field(description="The load mode the figures are read in.")
    knee: CapacityLevel | None = Field(
        default=None, description="Last level before throughput stops rising with load while latency climbs."
    )
    capacity_under_slo: CapacityLevel | None = Field(
        default=None, description="Highest level that met the SLO (the search's capacity when it searched)."
    )
    best_goodput: CapacityLevel | None = Field(
        default=None, description="The SLO-meeting level with the most successful transactions per minute."
    )
    goodput_basis: str | None = Field(default=None, description="What best_goodput is ranked by, in words.")
    search: SearchResult | None = Field(default=None, description="The capacity search; null without one.")


class CapacityPlanCell(_ResultModel):
    branch_id: str
    target_name: str
    tpm_per_instance: float | None = Field(
        default=None, description="Successful TPM of the branch's best SLO-meeting point / instance count."
    )
    instances: int | None = Field(default=None, description="Instances needed; null: cannot carry or none.")
    usd_per_hour: float | None = Field(default=None, description="USD per hour; null when unknown.")
    usd_per_month: float | None = Field(default=None, description="USD per month (hours_per_month hours).")
    note: str | None = Field(default=None, description="Why a figure is missing, or how it was counted.")


class CapacityPlanRow(_ResultModel):
    target_requests_per_minute: float
    cells: list[CapacityPlanCell] = Field(description="One per branch, in plan order.")
    cheapest_branch_id: str | None = Field(
        description="The branch that carries the target for the least $/h."
    )


class CapacityPlanResult(_ResultModel):
    """Instances and cost per target load, from each branch's best SLO-meeting point (suite: capacity)."""

    payload_bin: str | None = Field(description="The bin the capacity was measured in (the headline bin).")
    hours_per_month: int
    basis: str = Field(description="How the figures are computed, in words.")
    rows: list[CapacityPlanRow]


class BranchResult(_ResultModel):
    branch_id: str
    target_name: str
    platform: str
    model: str | None
    container: str | None
    instance_type: str | None
    instance_count: int | None
    instance_price_per_hour_usd: float | None = Field(description="USD per instance-hour; null when unknown.")
    status: BranchStatus
    reason: str | None = Field(description="Why the branch failed or is partial.")
    requests_attempted: int = Field(ge=0)
    records_written: int = Field(ge=0)
    load_points_planned: int = Field(ge=0)
    load_points_completed: int = Field(ge=0)
    load_points: list[LoadPointSummary]
    load_points_not_measured: list[PlannedLoadPoint] = Field(
        default_factory=list,
        description="Planned load points without a measured request (the sweep stopped before them, or "
        "every request of theirs was warm-up or cool-down), in sweep order.",
    )
    errors_by_class: dict[str, int] = Field(
        default_factory=dict,
        description="Measured errors of the branch per error class (docs/metrics.md, 'Error classes'; "
        "'other' for a class outside the vocabulary); classes without errors are left out.",
    )
    deployment_s: float | None = Field(
        default=None,
        description="Seconds from endpoint creation to InService, for endpoints the workflow deployed; "
        "null otherwise (existing endpoints, Bedrock, local runs).",
    )
    accuracy: BranchAccuracy | None = Field(
        default=None, description="Majority-vote accuracy judged by the panel; null when not judged."
    )
    capacity: BranchCapacity | None = Field(
        default=None, description="Knee, capacity under the SLO, best goodput point and capacity search."
    )


class ActualCostPart(_ResultModel):
    """What one branch cost, as far as the run's records tell."""

    branch_id: str
    target_name: str
    usd: float | None = Field(description="USD; null when the run recorded too little to tell.")
    instance_seconds: float | None = Field(
        default=None, description="Instance seconds billed (endpoint creation to deletion x instance count)."
    )
    emulated: bool = Field(default=False, description="A local emulator's stand-in price: nothing is billed.")
    basis: str = Field(description="How the figure was counted, in words.")
    deployment_s: float | None = Field(
        default=None,
        description="Endpoint creation to InService, s (0 for a local emulator); null if unknown.",
    )
    deployment_usd: float | None = Field(
        default=None, description="The part of usd from endpoint creation to InService; null if unknown."
    )
    load_usd: float | None = Field(
        default=None, description="The part of usd while the runner sent load; null if unknown."
    )
    idle_usd: float | None = Field(
        default=None,
        description="The rest of usd: in service without load (probe, gaps, waiting for teardown to delete).",
    )


class JudgingCost(_ResultModel):
    """What the panel of judges cost: the sum of the judgment rows' costs."""

    usd: float = Field(ge=0, description="Sum of the known costs of every judge's calls, USD.")
    complete: bool = Field(description="Every judgment row had a cost.")
    verdicts_without_cost: int = Field(ge=0)
    attempts: int = Field(ge=0, description="Calls made to the judges, re-asks included.")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class CostSummary(_ResultModel):
    """The estimate made before the run (an upper bound) beside what the run cost."""

    estimate_usd: float | None = Field(description="Upper bound made at planning; null without an estimate.")
    estimate_complete: bool = Field(description="Every part of the estimate had a price.")
    estimate_parts: list[CostPart]
    actual_usd: float | None = Field(description="Sum of the known actual parts, USD.")
    actual_complete: bool = Field(description="Every part of the actual cost is known.")
    actual_parts: list[ActualCostPart]
    emulated: bool = Field(description="Every billed part is emulated: a local run that cost nothing.")
    judging: JudgingCost | None = Field(
        default=None, description="The judges' cost, included in actual_usd; null when not judged."
    )


class Artifacts(_ResultModel):
    """Where the report's files are: local paths, or URIs once published (e.g. s3://...)."""

    report_md: str
    report_html: str
    summary_parquet: str
    result_json: str
    charts: dict[str, str] = Field(description="Chart name -> PNG location; charts without data are absent.")
    records_prefix: str = Field(description="Prefix of the run's request records (Hive-partitioned Parquet).")


RegressionVerdict = Literal["pass", "regressed", "no_baseline"]
FindingVerdict = Literal["regressed", "improved", "unchanged", "skipped"]


class RegressionFinding(_ResultModel):
    """One metric of one load point matched in both runs, compared (docs/regression.md)."""

    target_name: str
    payload_bin: str
    concurrency: int | None
    request_rate_per_s: float | None
    metric: str = Field(description="latency_p95, ttft_p95, transactions_per_minute, error_rate or accuracy.")
    baseline: float | None = Field(description="The baseline's figure (seconds, per minute or a 0..1 rate).")
    candidate: float | None = Field(description="The candidate's figure, in the same unit.")
    change: float | None = Field(
        description="Candidate against baseline: percent for latency and throughput, percentage points for "
        "rates."
    )
    change_unit: Literal["pct", "points"]
    interval_low: float | None = Field(description="Lower end of the change's confidence interval.")
    interval_high: float | None = Field(description="Upper end of the change's confidence interval.")
    threshold: float = Field(description="The change that counts, in the worse direction, same unit.")
    p_value: float | None = Field(
        default=None, description="One-sided p of the worse direction, when tested."
    )
    verdict: FindingVerdict
    reason: str | None = Field(default=None, description="Why a metric was skipped.")


class UnmatchedPoint(_ResultModel):
    """A load point measured in only one of the two runs: listed, never compared with a guess."""

    run: Literal["baseline", "candidate"]
    target_name: str
    payload_bin: str
    concurrency: int | None
    request_rate_per_s: float | None


class RegressionResult(_ResultModel):
    """The candidate run against its baseline: a verdict per metric and load point, and overall."""

    baseline_run_id: str | None = Field(description="The run compared with; null when none was found.")
    verdict: RegressionVerdict = Field(
        description="regressed: some metric regressed; pass: none did; no_baseline: nothing to compare with."
    )
    method: str = Field(description="How significance was decided, in words.")
    confidence: float = Field(gt=0, lt=1, description="Confidence level of the intervals and tests.")
    regressed_metrics: list[str] = Field(description="Metrics that regressed at some load point.")
    findings: list[RegressionFinding]
    unmatched: list[UnmatchedPoint] = Field(default_factory=list)


class PromptsResult(_ResultModel):
    """What was sent and how its tokens were counted."""

    source: str = Field(description="The dataset's source as the suite names it, or 'synthetic'.")
    revision: str | None = Field(description="The commit a Hub dataset's revision resolved to.")
    content_sha256: str | None = Field(description="SHA-256 of the dataset bytes read; null if not known.")
    prompts_per_bin: dict[str, int] = Field(description="Distinct prompts per bin; empty for synthetic.")
    repeat: Literal["cycle", "error"] = Field(description="The workload's repeat policy.")
    tokenizer: str = Field(description="The workload's tokenizer (bins and local token counts).")
    measured_requests: int = Field(ge=0)
    reused_prompt_requests: int = Field(
        ge=0,
        description="Measured requests whose prompt an earlier request of the branch had sent (repeat: "
        "cycle); on servers with prefix caching their TTFT is lower than a new prompt's.",
    )
    local_token_count_requests: int = Field(
        ge=0,
        description="Successful measured requests whose token counts (one or both) are the local "
        "tokenizer's because the server sent no usage.",
    )
    notes: list[str] = Field(description="What the counts above mean for the figures, in words.")


class EvaluationStatus(_ResultModel):
    """Whether the run's answers were judged, and why not when a judged suite has no accuracy."""

    status: Literal["judged", "failed", "not_judged", "not_requested"] = Field(
        description="judged: the latest judging finished; failed: it did not (error says why); not_judged: "
        "the suite asks for judging and none is recorded; not_requested: the suite has no evaluation section."
    )
    error: str | None = Field(default=None, description="Why the judging failed, cut short; null otherwise.")
    rejudge: str | None = Field(
        default=None, description="How to judge the run again and report it; null when judged or not asked."
    )


class ResultDocument(_ResultModel):
    """result.json, also the Step Functions execution output."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    run_id: str
    suite_name: str
    title: str
    generated_at: datetime = Field(description="When the report was generated, ISO 8601 UTC.")
    status: BranchStatus = Field(
        description="succeeded: every branch succeeded; failed: every branch failed; partial otherwise."
    )
    slo: SloSummary
    selection_rule: str = Field(description="How the best configuration is chosen, in words.")
    headline_bin: str | None = Field(description="Payload bin the headline best configuration is chosen in.")
    best: BestConfiguration | None = Field(
        description="Best configuration of the headline bin under the SLO; null when no load point meets it."
    )
    best_per_bin: list[BestConfiguration] = Field(
        description="Best configuration of each payload bin that has one, in the suite's bin order."
    )
    branches: list[BranchResult]
    cost: CostSummary | None = Field(default=None, description="Estimated and actual cost of the run.")
    artifacts: Artifacts
    regression: RegressionResult | None = Field(
        default=None, description="The run compared with its baseline, when the suite asks for it."
    )
    prompts: PromptsResult | None = Field(
        default=None, description="The dataset sent, prompt reuse and where token counts came from."
    )
    agreement: PanelAgreement | None = Field(
        default=None, description="The judging panel and its agreement; null when the run was not judged."
    )
    capacity_plan: CapacityPlanResult | None = Field(
        default=None, description="Instances and cost per target load (suite: capacity); null without one."
    )
    suite_yaml: str | None = Field(
        default=None, description="The suite as run, YAML (as given; defaults left out): runs it again."
    )
    evaluation: EvaluationStatus | None = Field(
        default=None, description="Whether the answers were judged; null in a report older than this field."
    )

    @field_validator("generated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() != timedelta(0):
            raise ValueError("must be a timezone-aware UTC time")
        return value


def overall_status(branch_statuses: list[BranchStatus]) -> BranchStatus:
    """Succeeded only when every branch did; failed when none produced anything usable (or none ran)."""
    if branch_statuses and all(s == "succeeded" for s in branch_statuses):
        return "succeeded"
    if all(s == "failed" for s in branch_statuses):
        return "failed"
    return "partial"


def result_json_schema() -> dict[str, Any]:
    schema = ResultDocument.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "FMBench Flow result"
    return schema


def write_result_schema(path: str | Path) -> Path:
    """Write the JSON Schema file that other pipelines depend on (schema/result.schema.json)."""
    target = Path(path)
    target.write_text(json.dumps(result_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target


def write_result(document: ResultDocument, path: str | Path) -> Path:
    target = Path(path)
    target.write_text(document.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return target


def read_result(path: str | Path) -> ResultDocument:
    return ResultDocument.model_validate_json(Path(path).read_text(encoding="utf-8"))
