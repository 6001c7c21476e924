-- The endpoint's own figures per load point of one run, one row per branch x load point x payload bin.
-- Dialect: Athena (Trino); locally report/server_metrics.py transpiles it to DuckDB with sqlglot.
-- :run_id is a placeholder bound as a string literal by the caller. Definitions: docs/metrics.md,
-- "Server-side metrics". The table is fmbench.server_metrics.SERVER_METRIC_SCHEMA with the run_id and
-- branch_id partitions: rows scraped from a server's Prometheus /metrics (source 'prometheus', one value
-- per scrape) and CloudWatch datapoints (source 'cloudwatch', one value per statistic and minute).
-- A load point is (branch_id, load_mode, concurrency, request_rate_per_s, payload_bin), as in metrics.sql.
-- One value per metric, statistic and moment: the label sets are added up (request_success is one series
-- per finished_reason; a server serving one model has one series of everything else).
WITH samples AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        source,
        metric,
        statistic,
        sampled_epoch_s,
        sum(value) AS value
    FROM server_metrics
    WHERE run_id = :run_id
    GROUP BY
        branch_id, load_mode, concurrency, request_rate_per_s, payload_bin, source, metric, statistic,
        sampled_epoch_s
),

-- Per metric and load point: the mean and largest sample (gauges), the sum (CloudWatch sums and counts),
-- and the last sample minus the first (Prometheus counters: what the server did during the point).
per_metric AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        source,
        metric,
        statistic,
        count(*) AS samples,
        avg(value) AS mean_value,
        max(value) AS max_value,
        sum(value) AS sum_value,
        max_by(value, sampled_epoch_s) - min_by(value, sampled_epoch_s) AS delta_value
    FROM samples
    GROUP BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin, source, metric, statistic
),

pivot AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        max(CASE WHEN metric = 'vllm:num_requests_running' THEN samples END) AS scrapes,
        max(CASE WHEN metric = 'vllm:num_requests_running' THEN mean_value END) AS running_mean,
        max(CASE WHEN metric = 'vllm:num_requests_running' THEN max_value END) AS running_max,
        max(CASE WHEN metric = 'vllm:num_requests_waiting' THEN mean_value END) AS waiting_mean,
        max(CASE WHEN metric = 'vllm:num_requests_waiting' THEN max_value END) AS waiting_max,
        max(
            CASE WHEN metric IN ('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc') THEN mean_value END
        ) AS kv_cache_usage_mean,
        max(
            CASE WHEN metric IN ('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc') THEN max_value END
        ) AS kv_cache_usage_max,
        max(
            CASE
                WHEN metric IN ('vllm:prefix_cache_hits_total', 'vllm:gpu_prefix_cache_hits_total')
                    THEN delta_value
            END
        ) AS prefix_cache_hits,
        max(
            CASE
                WHEN metric IN ('vllm:prefix_cache_queries_total', 'vllm:gpu_prefix_cache_queries_total')
                    THEN delta_value
            END
        ) AS prefix_cache_queries,
        max(CASE WHEN metric = 'vllm:prompt_tokens_total' THEN delta_value END) AS server_prompt_tokens,
        max(CASE WHEN metric = 'vllm:generation_tokens_total' THEN delta_value END) AS server_generation_tokens,
        max(CASE WHEN metric = 'vllm:request_success_total' THEN delta_value END) AS server_requests_succeeded,
        max(CASE WHEN metric = 'vllm:time_to_first_token_seconds_sum' THEN delta_value END) AS ttft_sum_s,
        max(CASE WHEN metric = 'vllm:time_to_first_token_seconds_count' THEN delta_value END) AS ttft_count,
        max(CASE WHEN metric = 'ModelLatency' AND statistic = 'Sum' THEN sum_value END) AS model_latency_sum_s,
        max(CASE WHEN metric = 'ModelLatency' AND statistic = 'SampleCount' THEN sum_value END) AS model_latency_n,
        max(CASE WHEN metric = 'ModelLatency' AND statistic = 'Maximum' THEN max_value END) AS model_latency_max_s,
        max(CASE WHEN metric = 'OverheadLatency' AND statistic = 'Sum' THEN sum_value END) AS overhead_sum_s,
        max(CASE WHEN metric = 'OverheadLatency' AND statistic = 'SampleCount' THEN sum_value END) AS overhead_n,
        max(CASE WHEN metric = 'InvocationLatency' AND statistic = 'Sum' THEN sum_value END) AS bedrock_sum_s,
        max(CASE WHEN metric = 'InvocationLatency' AND statistic = 'SampleCount' THEN sum_value END) AS bedrock_n,
        max(CASE WHEN metric = 'Invocations' AND statistic = 'Sum' THEN sum_value END) AS invocations,
        sum(
            CASE WHEN metric IN ('Invocation4XXErrors', 'Invocation5XXErrors') AND statistic = 'Sum' THEN sum_value END
        ) AS invocation_errors,
        max(CASE WHEN metric = 'InvocationThrottles' AND statistic = 'Sum' THEN sum_value END) AS throttles,
        max(CASE WHEN metric = 'InputTokenCount' AND statistic = 'Sum' THEN sum_value END) AS input_tokens,
        max(CASE WHEN metric = 'OutputTokenCount' AND statistic = 'Sum' THEN sum_value END) AS output_tokens,
        max(CASE WHEN metric = 'CPUUtilization' AND statistic = 'Average' THEN mean_value END) AS cpu_utilization_mean,
        max(
            CASE WHEN metric = 'MemoryUtilization' AND statistic = 'Average' THEN mean_value END
        ) AS memory_utilization_mean,
        max(CASE WHEN metric = 'GPUUtilization' AND statistic = 'Average' THEN mean_value END) AS gpu_utilization_mean,
        max(CASE WHEN metric = 'GPUUtilization' AND statistic = 'Maximum' THEN max_value END) AS gpu_utilization_max,
        max(
            CASE WHEN metric = 'GPUMemoryUtilization' AND statistic = 'Average' THEN mean_value END
        ) AS gpu_memory_utilization_mean,
        max(CASE WHEN source = 'cloudwatch' THEN samples END) AS cloudwatch_periods
    FROM per_metric
    GROUP BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin
)

SELECT
    branch_id,
    load_mode,
    concurrency,
    request_rate_per_s,
    payload_bin,
    scrapes,
    running_mean,
    running_max,
    waiting_mean,
    waiting_max,
    kv_cache_usage_mean,
    kv_cache_usage_max,
    prefix_cache_hits / nullif(prefix_cache_queries, 0) AS prefix_cache_hit_rate,
    server_prompt_tokens,
    server_generation_tokens,
    server_requests_succeeded,
    ttft_sum_s / nullif(ttft_count, 0) AS server_ttft_mean_s,
    cloudwatch_periods,
    model_latency_sum_s / nullif(model_latency_n, 0) AS model_latency_mean_s,
    model_latency_max_s,
    overhead_sum_s / nullif(overhead_n, 0) AS overhead_latency_mean_s,
    bedrock_sum_s / nullif(bedrock_n, 0) AS invocation_latency_mean_s,
    invocations,
    invocation_errors,
    throttles,
    input_tokens,
    output_tokens,
    cpu_utilization_mean,
    memory_utilization_mean,
    gpu_utilization_mean,
    gpu_utilization_max,
    gpu_memory_utilization_mean
FROM pivot
ORDER BY branch_id, payload_bin, concurrency, request_rate_per_s
