"""Partitions of the Glue ``records`` table, registered when a run is planned (docs/architecture.md).

The records table has no partition projection: Athena reads the partitions the catalog holds, so a query
that names no run id (the history of a suite, a comparison with the latest run) sees every run, and only
runs that exist. The Plan step registers one partition per planned branch, ``run_id=R/branch_id=B``, before
any runner writes, so a run's records are queryable the moment they land. Registering is idempotent: a
partition that already exists (a report-only execution registers its run's partitions again) is kept.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, Final

from fmbench import layout

logger = logging.getLogger(__name__)

RECORDS_TABLE: Final = "records"
# The judgments of a judged run (fmbench.judgments), partitioned like the records they judge.
JUDGMENTS_TABLE: Final = "judgments"
# Each table's folder of the storage layout.
TABLE_FOLDERS: Final = {RECORDS_TABLE: layout.RECORDS, JUDGMENTS_TABLE: layout.EVALUATIONS}
# BatchCreatePartition takes at most 100 partitions per call.
_BATCH: Final = 100
_ALREADY_EXISTS: Final = "AlreadyExistsException"


class PartitionRegistrationError(RuntimeError):
    """Glue refused to register a partition for a reason other than that it exists already."""


def partition_inputs(
    table_storage: dict[str, Any],
    storage_root: str,
    run_id: str,
    branch_ids: Sequence[str],
    table: str = RECORDS_TABLE,
) -> list[dict[str, Any]]:
    """One PartitionInput per branch: the table's storage descriptor with the branch's folder."""
    inputs = []
    for branch_id in branch_ids:
        storage = copy.deepcopy(table_storage)
        folder = layout.branch_folder(storage_root, TABLE_FOLDERS[table], run_id, branch_id)
        storage["Location"] = folder + "/"
        inputs.append({"Values": [run_id, branch_id], "StorageDescriptor": storage})
    return inputs


def register_run_partitions(
    glue_client: Any,
    database: str,
    storage_root: str,
    run_id: str,
    branch_ids: Sequence[str],
    table_name: str = RECORDS_TABLE,
) -> int:
    """Register the run's ``run_id=/branch_id=`` partitions of a table (the records, or the judgments of a
    judged run); how many were new."""
    table = glue_client.get_table(DatabaseName=database, Name=table_name)["Table"]
    inputs = partition_inputs(table["StorageDescriptor"], storage_root, run_id, branch_ids, table_name)
    created = 0
    for start in range(0, len(inputs), _BATCH):
        chunk = inputs[start : start + _BATCH]
        answer = glue_client.batch_create_partition(
            DatabaseName=database, TableName=table_name, PartitionInputList=chunk
        )
        errors = answer.get("Errors", [])
        refused = [e for e in errors if e.get("ErrorDetail", {}).get("ErrorCode") != _ALREADY_EXISTS]
        if refused:
            first = refused[0]
            values = "/".join(first.get("PartitionValues", []))
            detail = first.get("ErrorDetail", {})
            raise PartitionRegistrationError(
                f"partition {values} of {database}.{table_name} not registered: "
                f"{detail.get('ErrorCode')}: {detail.get('ErrorMessage')}"
            )
        created += len(chunk) - len(errors)
    logger.info(
        "run %s: %d partition(s) of %s registered, %d already there",
        run_id,
        created,
        table_name,
        len(inputs) - created,
    )
    return created
