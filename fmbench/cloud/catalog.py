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
# BatchCreatePartition takes at most 100 partitions per call.
_BATCH: Final = 100
_ALREADY_EXISTS: Final = "AlreadyExistsException"


class PartitionRegistrationError(RuntimeError):
    """Glue refused to register a partition for a reason other than that it exists already."""


def partition_inputs(
    table_storage: dict[str, Any], storage_root: str, run_id: str, branch_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """One PartitionInput per branch: the table's storage descriptor with the branch's records folder."""
    inputs = []
    for branch_id in branch_ids:
        storage = copy.deepcopy(table_storage)
        storage["Location"] = layout.records_prefix(storage_root, run_id, branch_id) + "/"
        inputs.append({"Values": [run_id, branch_id], "StorageDescriptor": storage})
    return inputs


def register_run_partitions(
    glue_client: Any, database: str, storage_root: str, run_id: str, branch_ids: Sequence[str]
) -> int:
    """Register the run's ``run_id=/branch_id=`` partitions of the records table; how many were new."""
    table = glue_client.get_table(DatabaseName=database, Name=RECORDS_TABLE)["Table"]
    inputs = partition_inputs(table["StorageDescriptor"], storage_root, run_id, branch_ids)
    created = 0
    for start in range(0, len(inputs), _BATCH):
        chunk = inputs[start : start + _BATCH]
        answer = glue_client.batch_create_partition(
            DatabaseName=database, TableName=RECORDS_TABLE, PartitionInputList=chunk
        )
        errors = answer.get("Errors", [])
        refused = [e for e in errors if e.get("ErrorDetail", {}).get("ErrorCode") != _ALREADY_EXISTS]
        if refused:
            first = refused[0]
            values = "/".join(first.get("PartitionValues", []))
            detail = first.get("ErrorDetail", {})
            raise PartitionRegistrationError(
                f"partition {values} of {database}.{RECORDS_TABLE} not registered: "
                f"{detail.get('ErrorCode')}: {detail.get('ErrorMessage')}"
            )
        created += len(chunk) - len(errors)
    logger.info(
        "run %s: %d partition(s) registered, %d already there", run_id, created, len(inputs) - created
    )
    return created
