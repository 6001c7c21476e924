"""The judgment record: one row per judge's verdict on one candidate's answer to one prompt.

The contract between the judging (``fmbench.evaluation``), the SQL of the accuracy figures
(``report/sql/accuracy.sql``) and the Glue table of the cloud: the Arrow schema below, written as Parquet
under ``evaluations/run_id=R/branch_id=B/part-NNNNN.parquet`` (``layout.evaluation_part_prefix``).
``run_id`` and ``branch_id`` are Hive partitions of that layout, as for the request records, and read back
as columns by Athena and DuckDB.

A verdict is ``correct``, ``incorrect``, ``unparsed`` (the judge answered, twice, with nothing that reads as
a verdict) or ``error`` (no answer: ``error_class`` says why, with the request records' error classes).
Only ``correct`` and ``incorrect`` are votes; the majority of a prompt's votes decides it, and a tie (or no
vote at all) is "no majority", counted apart.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import pyarrow as pa

Verdict = Literal["correct", "incorrect", "unparsed", "error"]
VERDICTS: Final[tuple[Verdict, ...]] = ("correct", "incorrect", "unparsed", "error")
VOTES: Final[tuple[Verdict, ...]] = ("correct", "incorrect")
# The cdk.json key of the Bedrock models a stack's Evaluate task may invoke as judges (infra/settings.py);
# the cloud Plan refuses any other Bedrock judge (fmbench.cloud.checks).
JUDGE_MODELS_KEY: Final = "fmbench:judgeModels"
# The judge's raw answer is kept for reading, cut to this many characters.
RAW_TEXT_LIMIT: Final = 2000

_JUDGMENT_FIELDS: list[pa.Field[Any]] = [
    pa.field("suite_name", pa.string(), nullable=False),
    # the candidate: the target whose answer is judged (its branch is the partition)
    pa.field("target_name", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("payload_bin", pa.string(), nullable=False),
    # the request whose answer was judged (one per distinct prompt and candidate)
    pa.field("request_id", pa.string()),
    pa.field("judge", pa.string(), nullable=False),  # the judge's name in the suite's panel
    pa.field("judge_model", pa.string()),
    pa.field("judge_family", pa.string()),  # the template used: anthropic, llama, mistral, nova, generic
    pa.field("verdict", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("error_class", pa.string()),
    pa.field("attempts", pa.int32(), nullable=False),  # calls made for this verdict (a re-ask counts)
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("latency_s", pa.float64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("judged_epoch_s", pa.float64(), nullable=False),
    pa.field("raw_text", pa.string()),
    # per answer, not per judge (the same on each judge's row): NULL when the suite asks for none
    pa.field("token_f1", pa.float64()),
    pa.field("rouge_l", pa.float64()),
    pa.field("embedding_similarity", pa.float64()),
    # where the judged answer came from: 'load' (a measured request under load) or 'quality_pass' (the
    # branch's quality pass at concurrency 1 and temperature 0, evaluation.quality_pass); per answer
    pa.field("answer_source", pa.string()),
]
JUDGMENT_SCHEMA: Final = pa.schema(_JUDGMENT_FIELDS)


def athena_columns() -> list[tuple[str, str]]:
    """(name, Athena type) of every judgment column, in file order: the cloud's Glue table is derived from
    this, as the records table is from the record schema."""
    from fmbench.records import _athena_type

    return [(field.name, _athena_type(field.type)) for field in JUDGMENT_SCHEMA]
