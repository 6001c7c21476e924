"""Athena column layout of the request-record table, derived from the one record schema in fmbench."""

from typing import Final

from fmbench.records import PARTITION_COLUMNS, athena_columns

# (column name, Athena/Hive type) in the Parquet writer's column order. Integer columns are `int`
# because the writer writes int32 (Athena rejects an int64 Parquet column read as `int`).
RECORD_COLUMNS: Final[list[tuple[str, str]]] = athena_columns()

# Partition keys in path order: records/run_id=<run_id>/branch_id=<branch_id>/*.parquet.
RECORD_PARTITION_KEYS: Final[list[tuple[str, str]]] = [(name, "string") for name in PARTITION_COLUMNS]
