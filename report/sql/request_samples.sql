-- Every measured request of one run with its load point, for the comparison of two runs (report/compare.py).
-- Dialect: Athena (Trino); :run_id is bound as a string literal by the caller. The comparison resamples these
-- rows (bootstrap), so they are the requests themselves, not aggregates; warm-up and cool-down are left out.
SELECT
    target_name,
    load_mode,
    concurrency,
    request_rate_per_s,
    payload_bin,
    status = 'ok' AS is_success,
    latency_s,
    ttft_s,
    send_epoch_s,
    end_epoch_s
FROM records
WHERE run_id = :run_id AND phase = 'measured'
ORDER BY target_name, payload_bin, concurrency, request_rate_per_s, send_epoch_s
