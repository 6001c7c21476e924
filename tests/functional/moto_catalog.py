"""The stack's Glue catalog in moto: the database and the records table the Plan registers partitions in."""

from __future__ import annotations

import boto3

from fmbench.cloud.catalog import RECORDS_TABLE


def create_records_catalog(region: str, bucket: str, database: str = "fmbench") -> None:
    """Inside an active moto: the database and a ``records`` table partitioned as the stack's."""
    glue = boto3.client("glue", region_name=region)
    glue.create_database(DatabaseInput={"Name": database})
    glue.create_table(
        DatabaseName=database,
        TableInput={
            "Name": RECORDS_TABLE,
            "PartitionKeys": [{"Name": "run_id", "Type": "string"}, {"Name": "branch_id", "Type": "string"}],
            "StorageDescriptor": {"Location": f"s3://{bucket}/records/"},
        },
    )
