"""result.json built from the report's view model: the same figures the Markdown shows, for machines.

Apart from ``report/result.py`` (the document's models and schema), because the view is built from those
models and result.json is then built from the view: one module holding both would import in a circle.
"""

from __future__ import annotations

from report.result import (
    Artifacts,
    BranchResult,
    LoadPointSummary,
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
        server=_server_summary(server, point),
    )


def _branch_result(branch: BranchView, server: ServerMetricsView | None = None) -> BranchResult:
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
    )


def result_document(view: ReportView, artifacts: Artifacts) -> ResultDocument:
    """result.json of the view: the same figures the Markdown shows, for machines."""
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
        branches=[_branch_result(branch, view.server) for branch in view.branches],
        cost=view.cost,
        artifacts=artifacts,
        prompts=_prompts_result(view.prompts),
    )
