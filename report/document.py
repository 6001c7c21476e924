"""result.json built from the report's view model: the same figures the Markdown shows, for machines.

Apart from ``report/result.py`` (the document's models and schema), because the view is built from those
models and result.json is then built from the view: one module holding both would import in a circle.
"""

from __future__ import annotations

from typing import Literal

from report.accuracy import AccuracyView
from report.result import (
    Artifacts,
    BranchAccuracy,
    BranchCapacity,
    BranchResult,
    JudgeCandidateShare,
    JudgePairAgreement,
    JudgeSummary,
    LoadPointSummary,
    PanelAgreement,
    PlannedLoadPoint,
    PromptsResult,
    ResultDocument,
    ServerPointSummary,
)
from report.server_metrics import ServerMetricsView
from report.view import BranchView, LoadPointView, PromptsView, ReportView


def _prompts_result(prompts: PromptsView | None) -> PromptsResult | None:
    if prompts is None:
        return None
    return PromptsResult(
        source=prompts.source,
        revision=prompts.revision,
        content_sha256=prompts.content_sha256,
        prompts_per_bin=dict(prompts.prompts_per_bin),
        repeat="error" if prompts.repeat == "error" else "cycle",
        tokenizer=prompts.tokenizer,
        measured_requests=prompts.measured_requests,
        reused_prompt_requests=prompts.reused_prompt_requests,
        local_token_count_requests=prompts.local_token_count_requests,
        notes=prompts.notes(),
    )


def _server_summary(server: ServerMetricsView | None, point: LoadPointView) -> ServerPointSummary | None:
    key = point.key
    found = (
        None
        if server is None
        else server.point(point.branch_id, key.concurrency, key.request_rate_per_s, key.payload_bin)
    )
    if found is None:
        return None
    latency = found["model_latency_mean_s"]
    return ServerPointSummary(
        running_mean=found["running_mean"],
        running_max=found["running_max"],
        waiting_mean=found["waiting_mean"],
        waiting_max=found["waiting_max"],
        kv_cache_usage_mean=found["kv_cache_usage_mean"],
        prefix_cache_hit_rate=found["prefix_cache_hit_rate"],
        server_latency_mean_s=latency if latency is not None else found["invocation_latency_mean_s"],
        gpu_utilization_mean=found["gpu_utilization_mean"],
    )


def _load_point_summary(point: LoadPointView, server: ServerMetricsView | None = None) -> LoadPointSummary:
    key = point.key
    return LoadPointSummary(
        concurrency=key.concurrency,
        request_rate_per_s=key.request_rate_per_s,
        payload_bin=key.payload_bin,
        requests=point["requests"],
        error_rate=point["error_rate"],
        latency_p50_s=point["latency_p50_s"],
        latency_p95_s=point["latency_p95_s"],
        ttft_p95_s=point["ttft_p95_s"],
        latency_from_schedule_p95_s=point["latency_from_schedule_p95_s"],
        transactions_per_minute=point["transactions_per_minute"],
        completion_token_throughput_per_s=point["completion_token_throughput_per_s"],
        price_per_txn_usd=point["price_per_txn_usd"],
        meets_slo=point.meets_slo,
        client_bound=point.client_bound,
        schedule_lag_p99_s=point["schedule_lag_p99_s"],
        runner_cpu_fraction=point["runner_cpu_fraction"],
        completed=point.completed,
        **_token_figures(point),
        goodput_share=point["goodput_share"],
        goodput_per_s=point["goodput_per_s"],
        server=_server_summary(server, point),
    )


def _branch_accuracy(accuracy: AccuracyView | None, branch_id: str) -> BranchAccuracy | None:
    figures = accuracy.of_branch(branch_id) if accuracy is not None else None
    if accuracy is None or figures is None:
        return None
    low, high = figures.interval if figures.interval is not None else (None, None)
    return BranchAccuracy(
        majority_accuracy=figures.accuracy,
        interval_low=low,
        interval_high=high,
        confidence=accuracy.confidence,
        judged_prompts=figures.prompts,
        majority_correct=figures.majority_correct,
        majority_incorrect=figures.majority_incorrect,
        no_majority=figures.no_majority,
        meets_floor=accuracy.meets_floor(branch_id) if accuracy.min_accuracy is not None else None,
        answer_source=_answer_source(figures.answer_source),
    )


def _answer_source(source: str | None) -> Literal["load", "quality_pass"] | None:
    return "quality_pass" if source == "quality_pass" else "load" if source == "load" else None


def _panel_agreement(accuracy: AccuracyView | None) -> PanelAgreement | None:
    if accuracy is None:
        return None
    return PanelAgreement(
        judged_prompts=accuracy.judged_prompts,
        rated_prompts=accuracy.rated_prompts,
        fleiss_kappa=accuracy.fleiss_kappa,
        judges=[
            JudgeSummary(
                judge=judge.judge,
                judge_model=judge.judge_model,
                verdicts=judge.verdicts,
                correct=judge.correct,
                incorrect=judge.incorrect,
                unparsed=judge.unparsed,
                errors=judge.error_verdicts,
                share_correct=judge.share_correct,
                attempts=judge.attempts,
                prompt_tokens=judge.prompt_tokens,
                completion_tokens=judge.completion_tokens,
                cost_usd=round(judge.cost_usd, 6),
            )
            for judge in accuracy.judges
        ],
        judge_candidates=[
            JudgeCandidateShare(
                judge=share.judge,
                branch_id=share.branch_id or "",
                target_name=share.target_name or "",
                correct=share.correct,
                incorrect=share.incorrect,
                share_correct=share.share_correct,
            )
            for share in accuracy.judge_candidates
        ],
        pairs=[
            JudgePairAgreement(
                judge=pair.judge,
                other_judge=pair.other_judge,
                prompts=pair.prompts,
                observed_agreement=pair.observed_agreement,
                cohen_kappa=pair.cohen_kappa,
            )
            for pair in accuracy.pairs
        ],
    )


_TOKEN_FIGURES = (
    "itl_p50_s",
    "itl_p95_s",
    "itl_p99_s",
    "output_tokens_per_s_per_user",
    "price_per_1m_input_tokens_usd",
    "price_per_1m_output_tokens_usd",
    "price_per_1m_total_tokens_usd",
    "window_cost_usd",
)


def _token_figures(point: LoadPointView) -> dict[str, float | None]:
    """ITL percentiles, per-user speed and the prices per million tokens (report.prices) of a load point."""
    return {name: point.figures.get(name) for name in _TOKEN_FIGURES}


def _branch_result(
    branch: BranchView,
    accuracy: AccuracyView | None = None,
    capacity: BranchCapacity | None = None,
    deployment_s: float | None = None,
    server: ServerMetricsView | None = None,
) -> BranchResult:
    return BranchResult(
        branch_id=branch.branch_id,
        target_name=branch.target_name,
        platform=branch.platform,
        model=branch.model,
        container=branch.container,
        instance_type=branch.instance_type,
        instance_count=branch.instance_count,
        instance_price_per_hour_usd=branch.instance_price_per_hour_usd,
        status=branch.status,
        reason=branch.reason,
        requests_attempted=branch.requests_attempted,
        records_written=branch.records_written,
        load_points_planned=branch.load_points_planned,
        load_points_completed=branch.load_points_completed,
        load_points=[_load_point_summary(point, server) for point in branch.measured.values()],
        load_points_not_measured=[
            PlannedLoadPoint(
                concurrency=key.concurrency,
                request_rate_per_s=key.request_rate_per_s,
                payload_bin=key.payload_bin,
            )
            for key in branch.not_measured
        ],
        errors_by_class=branch.errors_by_class,
        accuracy=_branch_accuracy(accuracy, branch.branch_id),
        capacity=capacity,
        deployment_s=deployment_s,
    )


def result_document(view: ReportView, artifacts: Artifacts) -> ResultDocument:
    """result.json of the view: the same figures the Markdown shows, for machines."""
    capacity = {each.branch_id: each for each in view.capacity}
    return ResultDocument(
        run_id=view.run_id,
        suite_name=view.suite_name,
        title=view.title,
        generated_at=view.generated_at,
        status=view.status,
        slo=view.slo,
        selection_rule=view.selection_rule,
        headline_bin=view.headline_bin,
        best=view.best,
        best_per_bin=view.best_found,
        branches=[
            _branch_result(
                branch,
                view.accuracy,
                capacity.get(branch.branch_id),
                _deployment_s(view, branch.branch_id),
                view.server,
            )
            for branch in view.branches
        ],
        cost=view.cost,
        artifacts=artifacts,
        prompts=_prompts_result(view.prompts),
        agreement=_panel_agreement(view.accuracy),
        capacity_plan=view.capacity_plan,
        suite_yaml=view.suite_yaml or None,
        evaluation=view.evaluation,
    )


def _deployment_s(view: ReportView, branch_id: str) -> float | None:
    """Endpoint creation to InService of a deployed branch (0 for a local emulator), from the cost's
    record of the branch; None when the run recorded none."""
    if view.cost is None:
        return None
    for part in view.cost.actual_parts:
        if part.branch_id == branch_id and part.deployment_s is not None:
            return round(part.deployment_s, 3)
    return None
