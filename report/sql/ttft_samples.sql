-- TTFT of every successful measured request of one run, for the TTFT distribution chart.
-- Dialect: Athena (Trino); :run_id is bound as a string literal by the caller.
SELECT
    branch_id,
    target_name,
    payload_bin,
    concurrency,
    ttft_s
FROM records
WHERE run_id = :run_id AND phase = 'measured' AND status = 'ok' AND ttft_s IS NOT NULL
ORDER BY target_name, payload_bin, concurrency, ttft_s
