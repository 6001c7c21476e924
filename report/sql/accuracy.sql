-- Accuracy of one run as judged by its panel of LLM judges: counts per candidate, per candidate x bin, per
-- judge, per judge x candidate, per pair of judges, and for the panel (docs/metrics.md, "Accuracy").
-- Dialect: Athena (Trino). Locally report/query.py transpiles it to DuckDB with sqlglot. :run_id is a
-- placeholder bound as a string literal by the caller. The table `judgments` holds the Parquet rows of
-- fmbench/judgments.py (JUDGMENT_SCHEMA) under evaluations/run_id=R/branch_id=B/, run_id and branch_id
-- read back from the Hive partitions.
-- Long and wide: one row per figure set (column `figure`), every column that set does not use NULL.
-- answer_source says where the judged answers came from ('load' or 'quality_pass'; the panel row 'mixed'
-- when candidates differ), NULL for judgments written before the column existed.
-- The 95% Wilson interval and both kappas are computed in Python (report/accuracy.py) from these counts.
-- A prompt is (branch_id, payload_bin, prompt_id): one candidate's answer to one distinct prompt.
-- A judge's verdict on a prompt is its latest row (judged_epoch_s) there: a judging task that was retried
-- and wrote a prompt twice votes once. Calls, tokens and cost count every row: they were spent.
WITH judged AS (
    SELECT
        branch_id,
        target_name,
        payload_bin,
        prompt_id,
        judge,
        judge_model,
        verdict,
        attempts,
        prompt_tokens,
        completion_tokens,
        cost_usd,
        answer_source,
        row_number() OVER (
            PARTITION BY branch_id, payload_bin, prompt_id, judge ORDER BY judged_epoch_s DESC, verdict
        ) = 1 AS counted
    FROM judgments
    WHERE run_id = :run_id
),

-- One row per prompt: its votes (only 'correct' and 'incorrect' vote) and the majority they make.
prompt_votes AS (
    SELECT
        branch_id,
        payload_bin,
        prompt_id,
        max(target_name) AS target_name,
        max(answer_source) AS answer_source,
        count(CASE WHEN counted AND verdict = 'correct' THEN 1 END) AS correct_votes,
        count(CASE WHEN counted AND verdict = 'incorrect' THEN 1 END) AS incorrect_votes
    FROM judged
    GROUP BY branch_id, payload_bin, prompt_id
),

prompt_majority AS (
    SELECT
        *,
        CASE
            WHEN correct_votes > incorrect_votes THEN 'correct'
            WHEN incorrect_votes > correct_votes THEN 'incorrect'
            ELSE 'none'
        END AS majority
    FROM prompt_votes
),

-- Every pair of judges on the prompts both voted on (first judge's name sorts first).
pair_votes AS (
    SELECT
        a.judge AS judge,
        b.judge AS other_judge,
        a.verdict AS first_verdict,
        b.verdict AS second_verdict
    FROM judged AS a
    INNER JOIN judged AS b
        ON a.branch_id = b.branch_id
        AND a.payload_bin = b.payload_bin
        AND a.prompt_id = b.prompt_id
        AND a.judge < b.judge
    WHERE a.counted AND b.counted
        AND a.verdict IN ('correct', 'incorrect')
        AND b.verdict IN ('correct', 'incorrect')
),

-- Fleiss' kappa's ingredients over prompts with at least two votes: per prompt, the share of agreeing
-- pairs of votes, sum of n_j (n_j - 1) / (n (n - 1)) over the two categories.
rated AS (
    SELECT
        correct_votes,
        incorrect_votes,
        CAST(correct_votes * (correct_votes - 1) + incorrect_votes * (incorrect_votes - 1) AS DOUBLE)
            / ((correct_votes + incorrect_votes) * (correct_votes + incorrect_votes - 1)) AS agreement
    FROM prompt_votes
    WHERE correct_votes + incorrect_votes >= 2
),

panel_totals AS (
    SELECT
        count(CASE WHEN counted THEN 1 END) AS verdicts,
        count(CASE WHEN counted AND verdict = 'correct' THEN 1 END) AS correct,
        count(CASE WHEN counted AND verdict = 'incorrect' THEN 1 END) AS incorrect,
        count(CASE WHEN counted AND verdict = 'unparsed' THEN 1 END) AS unparsed,
        count(CASE WHEN counted AND verdict = 'error' THEN 1 END) AS error_verdicts,
        coalesce(sum(attempts), 0) AS attempts,
        coalesce(sum(CAST(prompt_tokens AS BIGINT)), 0) AS prompt_tokens,
        coalesce(sum(CAST(completion_tokens AS BIGINT)), 0) AS completion_tokens,
        coalesce(sum(cost_usd), 0) AS cost_usd,
        count(CASE WHEN cost_usd IS NULL THEN 1 END) AS verdicts_without_cost,
        CASE WHEN count(DISTINCT answer_source) > 1 THEN 'mixed' ELSE max(answer_source) END AS answer_source
    FROM judged
),

panel_agreement AS (
    SELECT
        count(*) AS rated_items,
        coalesce(sum(agreement), 0) AS agreement_sum,
        coalesce(sum(correct_votes), 0) AS rated_correct,
        coalesce(sum(incorrect_votes), 0) AS rated_incorrect
    FROM rated
)

-- Per candidate over its bins (payload_bin NULL), and per candidate x bin.
SELECT
    CASE WHEN payload_bin IS NULL THEN 'candidate' ELSE 'candidate_bin' END AS figure,
    branch_id,
    max(target_name) AS target_name,
    payload_bin,
    CAST(NULL AS VARCHAR) AS judge,
    CAST(NULL AS VARCHAR) AS other_judge,
    CAST(NULL AS VARCHAR) AS judge_model,
    count(*) AS prompts,
    count(CASE WHEN majority = 'correct' THEN 1 END) AS majority_correct,
    count(CASE WHEN majority = 'incorrect' THEN 1 END) AS majority_incorrect,
    count(CASE WHEN majority = 'none' THEN 1 END) AS no_majority,
    CAST(count(CASE WHEN majority = 'correct' THEN 1 END) AS DOUBLE) / count(*) AS accuracy,
    CAST(NULL AS BIGINT) AS verdicts,
    CAST(NULL AS BIGINT) AS correct,
    CAST(NULL AS BIGINT) AS incorrect,
    CAST(NULL AS BIGINT) AS unparsed,
    CAST(NULL AS BIGINT) AS error_verdicts,
    CAST(NULL AS DOUBLE) AS share_correct,
    CAST(NULL AS BIGINT) AS attempts,
    CAST(NULL AS BIGINT) AS prompt_tokens,
    CAST(NULL AS BIGINT) AS completion_tokens,
    CAST(NULL AS DOUBLE) AS cost_usd,
    CAST(NULL AS BIGINT) AS verdicts_without_cost,
    CAST(NULL AS BIGINT) AS both_correct,
    CAST(NULL AS BIGINT) AS first_only_correct,
    CAST(NULL AS BIGINT) AS second_only_correct,
    CAST(NULL AS BIGINT) AS both_incorrect,
    CAST(NULL AS BIGINT) AS rated_items,
    CAST(NULL AS DOUBLE) AS agreement_sum,
    max(answer_source) AS answer_source
FROM prompt_majority
GROUP BY GROUPING SETS ((branch_id), (branch_id, payload_bin))

UNION ALL

-- Per judge over every candidate (branch_id NULL), and per judge x candidate.
SELECT
    CASE WHEN branch_id IS NULL THEN 'judge' ELSE 'judge_candidate' END AS figure,
    branch_id,
    CASE WHEN branch_id IS NOT NULL THEN target_name END AS target_name,
    CAST(NULL AS VARCHAR) AS payload_bin,
    judge,
    CAST(NULL AS VARCHAR) AS other_judge,
    judge_model,
    CAST(NULL AS BIGINT) AS prompts,
    CAST(NULL AS BIGINT) AS majority_correct,
    CAST(NULL AS BIGINT) AS majority_incorrect,
    CAST(NULL AS BIGINT) AS no_majority,
    CAST(NULL AS DOUBLE) AS accuracy,
    verdicts,
    correct,
    incorrect,
    unparsed,
    error_verdicts,
    CASE WHEN correct + incorrect > 0 THEN CAST(correct AS DOUBLE) / (correct + incorrect) END AS share_correct,
    attempts,
    prompt_tokens,
    completion_tokens,
    cost_usd,
    verdicts_without_cost,
    CAST(NULL AS BIGINT) AS both_correct,
    CAST(NULL AS BIGINT) AS first_only_correct,
    CAST(NULL AS BIGINT) AS second_only_correct,
    CAST(NULL AS BIGINT) AS both_incorrect,
    CAST(NULL AS BIGINT) AS rated_items,
    CAST(NULL AS DOUBLE) AS agreement_sum,
    CAST(NULL AS VARCHAR) AS answer_source
FROM (
    SELECT
        judge,
        branch_id,
        max(target_name) AS target_name,
        max(judge_model) AS judge_model,
        count(CASE WHEN counted THEN 1 END) AS verdicts,
        count(CASE WHEN counted AND verdict = 'correct' THEN 1 END) AS correct,
        count(CASE WHEN counted AND verdict = 'incorrect' THEN 1 END) AS incorrect,
        count(CASE WHEN counted AND verdict = 'unparsed' THEN 1 END) AS unparsed,
        count(CASE WHEN counted AND verdict = 'error' THEN 1 END) AS error_verdicts,
        coalesce(sum(attempts), 0) AS attempts,
        coalesce(sum(CAST(prompt_tokens AS BIGINT)), 0) AS prompt_tokens,
        coalesce(sum(CAST(completion_tokens AS BIGINT)), 0) AS completion_tokens,
        coalesce(sum(cost_usd), 0) AS cost_usd,
        count(CASE WHEN cost_usd IS NULL THEN 1 END) AS verdicts_without_cost
    FROM judged
    GROUP BY GROUPING SETS ((judge), (judge, branch_id))
) AS per_judge

UNION ALL

SELECT
    'judge_pair' AS figure,
    CAST(NULL AS VARCHAR) AS branch_id,
    CAST(NULL AS VARCHAR) AS target_name,
    CAST(NULL AS VARCHAR) AS payload_bin,
    judge,
    other_judge,
    CAST(NULL AS VARCHAR) AS judge_model,
    count(*) AS prompts,
    CAST(NULL AS BIGINT) AS majority_correct,
    CAST(NULL AS BIGINT) AS majority_incorrect,
    CAST(NULL AS BIGINT) AS no_majority,
    CAST(NULL AS DOUBLE) AS accuracy,
    CAST(NULL AS BIGINT) AS verdicts,
    CAST(NULL AS BIGINT) AS correct,
    CAST(NULL AS BIGINT) AS incorrect,
    CAST(NULL AS BIGINT) AS unparsed,
    CAST(NULL AS BIGINT) AS error_verdicts,
    CAST(NULL AS DOUBLE) AS share_correct,
    CAST(NULL AS BIGINT) AS attempts,
    CAST(NULL AS BIGINT) AS prompt_tokens,
    CAST(NULL AS BIGINT) AS completion_tokens,
    CAST(NULL AS DOUBLE) AS cost_usd,
    CAST(NULL AS BIGINT) AS verdicts_without_cost,
    count(CASE WHEN first_verdict = 'correct' AND second_verdict = 'correct' THEN 1 END) AS both_correct,
    count(CASE WHEN first_verdict = 'correct' AND second_verdict = 'incorrect' THEN 1 END)
        AS first_only_correct,
    count(CASE WHEN first_verdict = 'incorrect' AND second_verdict = 'correct' THEN 1 END)
        AS second_only_correct,
    count(CASE WHEN first_verdict = 'incorrect' AND second_verdict = 'incorrect' THEN 1 END)
        AS both_incorrect,
    CAST(NULL AS BIGINT) AS rated_items,
    CAST(NULL AS DOUBLE) AS agreement_sum,
    CAST(NULL AS VARCHAR) AS answer_source
FROM pair_votes
GROUP BY judge, other_judge

UNION ALL

-- The whole panel: every verdict and what judging cost, and Fleiss' kappa's ingredients (rated_items,
-- agreement_sum; prompts, correct and incorrect are the votes on the rated prompts).
SELECT
    'panel' AS figure,
    CAST(NULL AS VARCHAR) AS branch_id,
    CAST(NULL AS VARCHAR) AS target_name,
    CAST(NULL AS VARCHAR) AS payload_bin,
    CAST(NULL AS VARCHAR) AS judge,
    CAST(NULL AS VARCHAR) AS other_judge,
    CAST(NULL AS VARCHAR) AS judge_model,
    (SELECT count(*) FROM prompt_votes) AS prompts,
    CAST(NULL AS BIGINT) AS majority_correct,
    CAST(NULL AS BIGINT) AS majority_incorrect,
    CAST(NULL AS BIGINT) AS no_majority,
    CAST(NULL AS DOUBLE) AS accuracy,
    t.verdicts,
    a.rated_correct AS correct,
    a.rated_incorrect AS incorrect,
    t.unparsed,
    t.error_verdicts,
    CAST(NULL AS DOUBLE) AS share_correct,
    t.attempts,
    t.prompt_tokens,
    t.completion_tokens,
    t.cost_usd,
    t.verdicts_without_cost,
    CAST(NULL AS BIGINT) AS both_correct,
    CAST(NULL AS BIGINT) AS first_only_correct,
    CAST(NULL AS BIGINT) AS second_only_correct,
    CAST(NULL AS BIGINT) AS both_incorrect,
    a.rated_items,
    a.agreement_sum,
    t.answer_source
FROM panel_totals AS t
CROSS JOIN panel_agreement AS a
