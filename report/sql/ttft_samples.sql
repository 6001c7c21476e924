-- The TTFT distribution of each branch for the TTFT chart: points of its empirical CDF over the successful
-- measured requests of all its load points, not the requests themselves (a run of millions stays small).
-- Dialect: Athena (Trino); :run_id is bound as a string literal by the caller.
-- A sample of rank r (1-based, by TTFT) of n is kept when it is the first whose r / n reaches the next
-- thousandth, and the first and last are always kept: every sample of a branch of at most 1,000, at most
-- about 1,000 points of a larger one, each the exact TTFT at its exact share r / n.
WITH successful AS (
    SELECT branch_id, target_name, ttft_s
    FROM records
    WHERE run_id = :run_id AND phase = 'measured' AND status = 'ok' AND ttft_s IS NOT NULL
),

ranked AS (
    SELECT
        branch_id,
        target_name,
        ttft_s,
        row_number() OVER (PARTITION BY branch_id ORDER BY ttft_s) AS sample_rank,
        count(*) OVER (PARTITION BY branch_id) AS sample_count
    FROM successful
)

SELECT
    branch_id,
    target_name,
    ttft_s,
    CAST(sample_rank AS DOUBLE) / sample_count AS cumulative_share,
    sample_count
FROM ranked
WHERE sample_rank = 1
    OR sample_rank = sample_count
    OR floor(CAST(sample_rank AS DOUBLE) * 1000 / sample_count)
    > floor(CAST(sample_rank - 1 AS DOUBLE) * 1000 / sample_count)
ORDER BY target_name, branch_id, cumulative_share
