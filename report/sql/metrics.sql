-- Per-load-point metrics of one run, one row per branch x load point x payload bin.
-- Dialect: Athena (Trino). Locally report/query.py transpiles it to DuckDB with sqlglot, so use only
-- functions both engines have. :run_id is a placeholder bound as a string literal by the caller; the
-- per-request SLOs :request_ttft_s, :request_tpot_s and :request_latency_s as numbers, or NULL when unset.
-- Definitions are in docs/metrics.md. Percentiles are exact, linear interpolation between the closest
-- ranks (Hyndman-Fan type 7, numpy's default); Athena's built-in percentile function is approximate, so unused.
-- A load point is (branch_id, load_mode, concurrency, request_rate_per_s, payload_bin); concurrency and
-- request_rate_per_s may be NULL, so they are grouped (NULLs group together) and joined NULL-safely.
-- The window is the rows of phase 'measured'; warm-up and cool-down rows are recorded but never counted.
-- A request reused its prompt when an earlier request of its branch and bin (any phase, any load point; in
-- the order sent, ties by request id) had the same prompt: every request but the first of its prompt. The
-- first is found by aggregates (the earliest send, then the least request id at it) rather than by numbering
-- every request in a window, which would sort the whole run with all its columns.
WITH first_sends AS (
    SELECT branch_id, payload_bin, prompt_id, min(send_epoch_s) AS first_send_epoch_s
    FROM records
    WHERE run_id = :run_id
    GROUP BY branch_id, payload_bin, prompt_id
),

first_uses AS (
    SELECT r.branch_id, r.payload_bin, r.prompt_id, min(r.request_id) AS first_request_id
    FROM records AS r
    INNER JOIN first_sends AS f
        ON r.branch_id = f.branch_id
        AND r.payload_bin = f.payload_bin
        AND r.prompt_id IS NOT DISTINCT FROM f.prompt_id
        AND r.send_epoch_s = f.first_send_epoch_s
    WHERE r.run_id = :run_id
    GROUP BY r.branch_id, r.payload_bin, r.prompt_id
),

measured AS (
    SELECT
        r.branch_id,
        r.target_name,
        r.platform,
        r.model,
        r.container,
        r.instance_type,
        r.instance_count,
        r.instance_price_per_hour_usd,
        r.load_mode,
        r.concurrency,
        r.request_rate_per_s,
        r.payload_bin,
        r.send_epoch_s,
        r.end_epoch_s,
        r.schedule_lag_s,
        r.ttft_s,
        r.latency_s,
        r.itl_s,
        r.prompt_tokens,
        r.completion_tokens,
        r.token_source,
        r.prompt_tokens_local,
        r.completion_tokens_local,
        r.runner_cpu_fraction,
        r.client_bound,
        r.time_to_first_answer_s,
        r.reasoning_tokens,
        r.error_class,
        r.request_id <> u.first_request_id AS reused_prompt,
        r.status = 'ok' AS is_success,
        -- Goodput: successful and within every per-request SLO set; a request without the figure an SLO
        -- bounds (no TTFT, or no TPOT: not streamed or a single token) does not meet it.
        r.status = 'ok'
        AND (
            CAST(:request_ttft_s AS DOUBLE) IS NULL
            OR coalesce(r.ttft_s <= CAST(:request_ttft_s AS DOUBLE), false)
        )
        AND (
            CAST(:request_tpot_s AS DOUBLE) IS NULL
            OR coalesce(
                r.completion_tokens > 1
                AND (r.latency_s - r.ttft_s) / (r.completion_tokens - 1) <= CAST(:request_tpot_s AS DOUBLE),
                false
            )
        )
        AND (
            CAST(:request_latency_s AS DOUBLE) IS NULL
            OR r.latency_s <= CAST(:request_latency_s AS DOUBLE)
        ) AS meets_request_slo
    FROM records AS r
    INNER JOIN first_uses AS u
        ON r.branch_id = u.branch_id
        AND r.payload_bin = u.payload_bin
        AND r.prompt_id IS NOT DISTINCT FROM u.prompt_id
    WHERE r.run_id = :run_id AND r.phase = 'measured'
),

point_totals AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        max(target_name) AS target_name,
        max(platform) AS platform,
        max(model) AS model,
        max(container) AS container,
        max(instance_type) AS instance_type,
        max(instance_count) AS instance_count,
        max(instance_price_per_hour_usd) AS instance_price_per_hour_usd,
        count(*) AS requests,
        count(CASE WHEN is_success THEN 1 END) AS successes,
        count(CASE WHEN is_success THEN NULL ELSE 1 END) AS errors,
        max(end_epoch_s) - min(send_epoch_s) AS window_s,
        avg(CASE WHEN is_success THEN latency_s END) AS latency_mean_s,
        avg(CASE WHEN is_success THEN CAST(prompt_tokens AS DOUBLE) END) AS prompt_tokens_mean,
        avg(CASE WHEN is_success THEN CAST(completion_tokens AS DOUBLE) END) AS completion_tokens_mean,
        coalesce(sum(CASE WHEN is_success THEN CAST(prompt_tokens AS DOUBLE) END), 0) AS prompt_tokens_total,
        coalesce(sum(CASE WHEN is_success THEN CAST(completion_tokens AS DOUBLE) END), 0)
            AS completion_tokens_total,
        -- Server count vs the local tokenizer's, where the server reported both counts.
        avg(
            CASE WHEN is_success AND token_source = 'server' AND prompt_tokens_local > 0
                THEN (CAST(prompt_tokens AS DOUBLE) - prompt_tokens_local) / prompt_tokens_local END
        ) * 100 AS prompt_tokens_local_diff_pct,
        avg(
            CASE WHEN is_success AND token_source = 'server' AND completion_tokens_local > 0
                THEN (CAST(completion_tokens AS DOUBLE) - completion_tokens_local) / completion_tokens_local END
        ) * 100 AS completion_tokens_local_diff_pct,
        -- Errors by class (docs/metrics.md, "Error classes"); one column per class of the vocabulary.
        count(CASE WHEN NOT is_success AND error_class = 'http_429' THEN 1 END) AS errors_http_429,
        count(CASE WHEN NOT is_success AND error_class = 'http_4xx' THEN 1 END) AS errors_http_4xx,
        count(CASE WHEN NOT is_success AND error_class = 'http_5xx' THEN 1 END) AS errors_http_5xx,
        count(CASE WHEN NOT is_success AND error_class = 'timeout' THEN 1 END) AS errors_timeout,
        count(CASE WHEN NOT is_success AND error_class = 'connection_error' THEN 1 END) AS errors_connection_error,
        count(CASE WHEN NOT is_success AND error_class = 'stream_cut' THEN 1 END) AS errors_stream_cut,
        count(CASE WHEN NOT is_success AND error_class = 'malformed_response' THEN 1 END) AS errors_malformed_response,
        count(CASE WHEN NOT is_success AND error_class = 'client_error' THEN 1 END) AS errors_client_error,
        -- Client self-check: rows of one part carry the same figures; a long point may have several parts.
        max(runner_cpu_fraction) AS runner_cpu_fraction,
        bool_or(client_bound) AS client_bound,
        -- Reasoning models: NULL where no successful request had a reasoning count.
        avg(CASE WHEN is_success THEN CAST(reasoning_tokens AS DOUBLE) END) AS reasoning_tokens_mean,
        -- Prompts sent again (repeat: cycle) and answers counted without the server's usage.
        count(CASE WHEN reused_prompt THEN 1 END) AS requests_reused_prompt,
        count(CASE WHEN is_success AND token_source <> 'server' THEN 1 END) AS requests_local_token_counts,
        count(CASE WHEN meets_request_slo THEN 1 END) AS goodput_requests
    FROM measured
    GROUP BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin
),

-- Long form: one row per (load point, metric, sample) over successful measured requests.
samples AS (
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'latency' AS metric_name, latency_s AS sample_value
    FROM measured
    WHERE is_success
    UNION ALL
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'ttft' AS metric_name, ttft_s AS sample_value
    FROM measured
    WHERE is_success AND ttft_s IS NOT NULL
    UNION ALL
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'tpot' AS metric_name, (latency_s - ttft_s) / (completion_tokens - 1) AS sample_value
    FROM measured
    WHERE is_success AND ttft_s IS NOT NULL AND completion_tokens > 1
    UNION ALL
    SELECT m.branch_id, m.load_mode, m.concurrency, m.request_rate_per_s, m.payload_bin,
        'itl' AS metric_name, gap.itl_value AS sample_value
    FROM measured AS m
    CROSS JOIN UNNEST(m.itl_s) AS gap (itl_value)
    WHERE m.is_success AND gap.itl_value IS NOT NULL
    UNION ALL
    -- Time to the first answer token: after a reasoning model's reasoning; TTFT's equal without reasoning.
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'time_to_first_answer' AS metric_name, time_to_first_answer_s AS sample_value
    FROM measured
    WHERE is_success AND time_to_first_answer_s IS NOT NULL
    UNION ALL
    -- From the scheduled time: what a caller arriving on schedule waited, client-side queueing included.
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'latency_from_schedule' AS metric_name, latency_s + schedule_lag_s AS sample_value
    FROM measured
    WHERE is_success
    UNION ALL
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'ttft_from_schedule' AS metric_name, ttft_s + schedule_lag_s AS sample_value
    FROM measured
    WHERE is_success AND ttft_s IS NOT NULL
    UNION ALL
    -- Schedule lag is the client's, so it is taken over every measured request, failed ones included.
    SELECT branch_id, load_mode, concurrency, request_rate_per_s, payload_bin,
        'schedule_lag' AS metric_name, schedule_lag_s AS sample_value
    FROM measured
),

ranked AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        metric_name,
        sample_value,
        row_number() OVER (
            PARTITION BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin, metric_name
            ORDER BY sample_value
        ) AS sample_rank,
        count(*) OVER (
            PARTITION BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin, metric_name
        ) AS sample_count
    FROM samples
),

-- Decimal literals keep (n - 1) * q exact in both engines, so floor/ceil pick the right ranks.
quantiles (quantile_name, quantile) AS (
    VALUES ('p50', 0.50), ('p90', 0.90), ('p95', 0.95), ('p99', 0.99)
),

-- The one or two samples around the virtual rank (n - 1) * q (0-based); ranks here are 1-based.
bracketing AS (
    SELECT
        r.branch_id,
        r.load_mode,
        r.concurrency,
        r.request_rate_per_s,
        r.payload_bin,
        r.metric_name,
        q.quantile_name,
        (r.sample_count - 1) * q.quantile - floor((r.sample_count - 1) * q.quantile) AS fraction,
        r.sample_value
    FROM ranked AS r
    CROSS JOIN quantiles AS q
    WHERE r.sample_rank BETWEEN floor((r.sample_count - 1) * q.quantile) + 1
        AND ceil((r.sample_count - 1) * q.quantile) + 1
),

percentiles AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        metric_name,
        quantile_name,
        min(sample_value) + CAST(fraction AS DOUBLE) * (max(sample_value) - min(sample_value)) AS quantile_value
    FROM bracketing
    GROUP BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin, metric_name, quantile_name, fraction
),

pivoted AS (
    SELECT
        branch_id,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        max(CASE WHEN metric_name = 'latency' AND quantile_name = 'p50' THEN quantile_value END) AS latency_p50_s,
        max(CASE WHEN metric_name = 'latency' AND quantile_name = 'p90' THEN quantile_value END) AS latency_p90_s,
        max(CASE WHEN metric_name = 'latency' AND quantile_name = 'p95' THEN quantile_value END) AS latency_p95_s,
        max(CASE WHEN metric_name = 'latency' AND quantile_name = 'p99' THEN quantile_value END) AS latency_p99_s,
        max(CASE WHEN metric_name = 'ttft' AND quantile_name = 'p50' THEN quantile_value END) AS ttft_p50_s,
        max(CASE WHEN metric_name = 'ttft' AND quantile_name = 'p95' THEN quantile_value END) AS ttft_p95_s,
        max(CASE WHEN metric_name = 'ttft' AND quantile_name = 'p99' THEN quantile_value END) AS ttft_p99_s,
        max(CASE WHEN metric_name = 'tpot' AND quantile_name = 'p50' THEN quantile_value END) AS tpot_p50_s,
        max(CASE WHEN metric_name = 'tpot' AND quantile_name = 'p95' THEN quantile_value END) AS tpot_p95_s,
        max(CASE WHEN metric_name = 'itl' AND quantile_name = 'p50' THEN quantile_value END) AS itl_p50_s,
        max(CASE WHEN metric_name = 'itl' AND quantile_name = 'p95' THEN quantile_value END) AS itl_p95_s,
        max(CASE WHEN metric_name = 'itl' AND quantile_name = 'p99' THEN quantile_value END) AS itl_p99_s,
        max(
            CASE WHEN metric_name = 'latency_from_schedule' AND quantile_name = 'p50' THEN quantile_value END
        ) AS latency_from_schedule_p50_s,
        max(
            CASE WHEN metric_name = 'latency_from_schedule' AND quantile_name = 'p95' THEN quantile_value END
        ) AS latency_from_schedule_p95_s,
        max(
            CASE WHEN metric_name = 'latency_from_schedule' AND quantile_name = 'p99' THEN quantile_value END
        ) AS latency_from_schedule_p99_s,
        max(
            CASE WHEN metric_name = 'ttft_from_schedule' AND quantile_name = 'p95' THEN quantile_value END
        ) AS ttft_from_schedule_p95_s,
        max(
            CASE WHEN metric_name = 'schedule_lag' AND quantile_name = 'p50' THEN quantile_value END
        ) AS schedule_lag_p50_s,
        max(
            CASE WHEN metric_name = 'schedule_lag' AND quantile_name = 'p99' THEN quantile_value END
        ) AS schedule_lag_p99_s,
        max(
            CASE WHEN metric_name = 'time_to_first_answer' AND quantile_name = 'p50' THEN quantile_value END
        ) AS time_to_first_answer_p50_s,
        max(
            CASE WHEN metric_name = 'time_to_first_answer' AND quantile_name = 'p95' THEN quantile_value END
        ) AS time_to_first_answer_p95_s,
        max(
            CASE WHEN metric_name = 'time_to_first_answer' AND quantile_name = 'p99' THEN quantile_value END
        ) AS time_to_first_answer_p99_s
    FROM percentiles
    GROUP BY branch_id, load_mode, concurrency, request_rate_per_s, payload_bin
),

-- The cost of the window: instance price per second x instance count x window seconds.
costed AS (
    SELECT
        t.*,
        t.instance_price_per_hour_usd / 3600 * t.instance_count * t.window_s AS window_cost_usd
    FROM point_totals AS t
)

SELECT
    :run_id AS run_id,
    c.branch_id,
    c.target_name,
    c.platform,
    c.model,
    c.container,
    c.instance_type,
    c.instance_count,
    c.instance_price_per_hour_usd,
    c.load_mode,
    c.concurrency,
    c.request_rate_per_s,
    c.payload_bin,
    c.requests,
    c.successes,
    c.errors,
    CAST(c.errors AS DOUBLE) / c.requests AS error_rate,
    c.window_s,
    c.latency_mean_s,
    p.latency_p50_s,
    p.latency_p90_s,
    p.latency_p95_s,
    p.latency_p99_s,
    p.ttft_p50_s,
    p.ttft_p95_s,
    p.ttft_p99_s,
    p.tpot_p50_s,
    p.tpot_p95_s,
    p.itl_p50_s,
    p.itl_p95_s,
    p.itl_p99_s,
    p.latency_from_schedule_p50_s,
    p.latency_from_schedule_p95_s,
    p.latency_from_schedule_p99_s,
    p.ttft_from_schedule_p95_s,
    c.prompt_tokens_mean,
    c.completion_tokens_mean,
    c.prompt_tokens_local_diff_pct,
    c.completion_tokens_local_diff_pct,
    c.prompt_tokens_total / nullif(c.window_s, 0) AS prompt_token_throughput_per_s,
    c.completion_tokens_total / nullif(c.window_s, 0) AS completion_token_throughput_per_s,
    CAST(c.successes AS DOUBLE) / nullif(c.window_s, 0) * 60 AS transactions_per_minute,
    c.window_cost_usd / nullif(c.successes, 0) AS price_per_txn_usd,
    c.window_cost_usd / nullif(c.completion_tokens_total, 0) * 1000000 AS price_per_1m_output_tokens_usd,
    p.schedule_lag_p50_s,
    p.schedule_lag_p99_s,
    c.runner_cpu_fraction,
    c.client_bound,
    p.time_to_first_answer_p50_s,
    p.time_to_first_answer_p95_s,
    p.time_to_first_answer_p99_s,
    c.reasoning_tokens_mean,
    c.errors_http_429,
    c.errors_http_4xx,
    c.errors_http_5xx,
    c.errors_timeout,
    c.errors_connection_error,
    c.errors_stream_cut,
    c.errors_malformed_response,
    c.errors_client_error,
    c.requests_reused_prompt,
    c.requests_local_token_counts,
    -- Goodput, only when some per-request SLO is set: the share of measured requests within every one set,
    -- and such requests per second of the window.
    CASE
        WHEN coalesce(
            CAST(:request_ttft_s AS DOUBLE), CAST(:request_tpot_s AS DOUBLE), CAST(:request_latency_s AS DOUBLE)
        ) IS NOT NULL
            THEN CAST(c.goodput_requests AS DOUBLE) / c.requests
    END AS goodput_share,
    CASE
        WHEN coalesce(
            CAST(:request_ttft_s AS DOUBLE), CAST(:request_tpot_s AS DOUBLE), CAST(:request_latency_s AS DOUBLE)
        ) IS NOT NULL
            THEN CAST(c.goodput_requests AS DOUBLE) / nullif(c.window_s, 0)
    END AS goodput_per_s
FROM costed AS c
LEFT JOIN pivoted AS p
    ON p.branch_id = c.branch_id
    AND p.load_mode = c.load_mode
    AND p.payload_bin = c.payload_bin
    AND p.concurrency IS NOT DISTINCT FROM c.concurrency
    AND p.request_rate_per_s IS NOT DISTINCT FROM c.request_rate_per_s
ORDER BY c.target_name, c.payload_bin, c.concurrency, c.request_rate_per_s, c.branch_id
