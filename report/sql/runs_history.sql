-- The runs of one suite, oldest first, with the headline figures of each run's best configuration.
-- Dialect: Athena (Trino); :suite_name is bound as a string literal by the caller. The runs table has one
-- row per run and no partition, so the query needs no run id (docs/regression.md).
SELECT
    run_id,
    suite_name,
    schedule_name,
    started_at,
    ended_at,
    status,
    verdict,
    baseline_run_id,
    regressed_metrics,
    best_target_name,
    best_payload_bin,
    best_concurrency,
    best_request_rate_per_s,
    latency_p95_s,
    ttft_p95_s,
    transactions_per_minute,
    error_rate,
    price_per_txn_usd
FROM runs
WHERE suite_name = :suite_name
ORDER BY started_at, run_id
