-- p95 end-to-end latency and the error rate of every load point of every run of one suite: the records of all
-- runs joined with the runs table, so the query names no run id (what a nightly schedule's trend asks).
-- Dialect: Athena (Trino); :suite_name is bound as a string literal by the caller. p95 is exact, linear
-- interpolation between the closest ranks (numpy's default), as in metrics.sql.
WITH measured AS (
    SELECT
        records.run_id,
        runs.started_at,
        records.target_name,
        records.load_mode,
        records.concurrency,
        records.request_rate_per_s,
        records.payload_bin,
        records.latency_s,
        records.status = 'ok' AS is_success
    FROM records
    INNER JOIN runs ON records.run_id = runs.run_id
    WHERE runs.suite_name = :suite_name AND records.phase = 'measured'
),

point_totals AS (
    SELECT
        run_id,
        target_name,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        max(started_at) AS started_at,
        count(*) AS requests,
        CAST(count(CASE WHEN is_success THEN NULL ELSE 1 END) AS DOUBLE) / count(*) AS error_rate
    FROM measured
    GROUP BY run_id, target_name, load_mode, concurrency, request_rate_per_s, payload_bin
),

ranked AS (
    SELECT
        run_id,
        target_name,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        latency_s,
        row_number() OVER (
            PARTITION BY run_id, target_name, load_mode, concurrency, request_rate_per_s, payload_bin
            ORDER BY latency_s
        ) AS sample_rank,
        count(*) OVER (
            PARTITION BY run_id, target_name, load_mode, concurrency, request_rate_per_s, payload_bin
        ) AS sample_count
    FROM measured
    WHERE is_success
),

bracketing AS (
    SELECT
        run_id,
        target_name,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        (sample_count - 1) * 0.95 - floor((sample_count - 1) * 0.95) AS fraction,
        latency_s
    FROM ranked
    WHERE sample_rank BETWEEN floor((sample_count - 1) * 0.95) + 1 AND ceil((sample_count - 1) * 0.95) + 1
),

p95 AS (
    SELECT
        run_id,
        target_name,
        load_mode,
        concurrency,
        request_rate_per_s,
        payload_bin,
        min(latency_s) + CAST(fraction AS DOUBLE) * (max(latency_s) - min(latency_s)) AS latency_p95_s
    FROM bracketing
    GROUP BY run_id, target_name, load_mode, concurrency, request_rate_per_s, payload_bin, fraction
)

SELECT
    t.run_id,
    t.started_at,
    t.target_name,
    t.load_mode,
    t.concurrency,
    t.request_rate_per_s,
    t.payload_bin,
    t.requests,
    t.error_rate,
    p.latency_p95_s
FROM point_totals AS t
LEFT JOIN p95 AS p
    ON t.run_id = p.run_id
    AND t.target_name = p.target_name
    AND t.load_mode = p.load_mode
    AND t.concurrency IS NOT DISTINCT FROM p.concurrency
    AND t.request_rate_per_s IS NOT DISTINCT FROM p.request_rate_per_s
    AND t.payload_bin = p.payload_bin
ORDER BY t.started_at, t.run_id, t.target_name, t.payload_bin, t.concurrency, t.request_rate_per_s
