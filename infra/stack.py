"""The FMBench Flow stack: composes one construct per concern and publishes what clients need to find."""

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.settings import FmbenchSettings
from infra.storage import Storage


class FmbenchStack(Stack):
    """Environment-agnostic on purpose: synth needs no account or region, so it works offline and in CI."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: FmbenchSettings) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=settings.stack_name,
            description="FMBench Flow: benchmark foundation-model endpoints (storage, catalog, queries).",
        )
        self.settings = settings

        self.storage = Storage(
            self,
            "Storage",
            records_retention_days=settings.records_retention_days,
            athena_bytes_scanned_cutoff=settings.athena_bytes_scanned_cutoff,
        )

        # The CLI and operators find the deployment through these instead of guessing generated names.
        CfnOutput(
            self,
            "ResultsBucketName",
            value=self.storage.bucket.bucket_name,
            description="S3 bucket holding records/, reports/ and athena-results/.",
        )
        CfnOutput(
            self,
            "AthenaWorkGroupName",
            value=self.storage.workgroup.ref,
            description="Athena workgroup the report queries must run in.",
        )
        CfnOutput(
            self,
            "GlueDatabaseName",
            value=self.storage.database.database_name,
            description="Glue database holding the records table.",
        )
        CfnOutput(
            self,
            "RecordsTableName",
            value=self.storage.records_table.table_name,
            description="Glue table over records/ (partition projection on run_id and branch_id).",
        )
