"""Results storage: the S3 bucket, the Glue catalog over the request records, and the Athena workgroup."""

import re
from collections.abc import Sequence
from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from fmbench import layout
from fmbench.cloud.catalog import JUDGMENTS_TABLE, RECORDS_TABLE
from fmbench.judgments import athena_columns as judgment_athena_columns
from infra.nag import acknowledge_unscoped_actions, acknowledge_wildcard_resources
from infra.record_columns import RECORD_COLUMNS, RECORD_PARTITION_KEYS

# Key prefixes of the storage layout (docs/architecture.md, "Records and the storage layout"; built in
# fmbench.layout); other constructs scope grants with them.
RECORDS_PREFIX: Final = layout.key_prefix(layout.RECORDS)
REPORTS_PREFIX: Final = layout.key_prefix(layout.REPORTS)
ATHENA_RESULTS_PREFIX: Final = layout.key_prefix(layout.ATHENA_RESULTS)
# Written by the plan (one branch spec per branch) and by the runners (one outcome per branch).
SPECS_PREFIX: Final = layout.key_prefix(layout.SPECS)
OUTCOMES_PREFIX: Final = layout.key_prefix(layout.OUTCOMES)
# Written by the plan (a run's materialized prompts), read by the runners; an s3:// dataset kept here is
# readable by the plan without further grants.
DATASETS_PREFIX: Final = layout.key_prefix(layout.DATASETS)
# Written by the runners (a server's scraped /metrics) and by Render (CloudWatch figures), read by Render.
SERVER_METRICS_PREFIX: Final = layout.key_prefix(layout.SERVER_METRICS)
RECORDS_TABLE_NAME: Final = RECORDS_TABLE
# Written by the Evaluate task (the judges' verdicts, fmbench.judgments), read by Render's accuracy query.
EVALUATIONS_PREFIX: Final = layout.key_prefix(layout.EVALUATIONS)
JUDGMENTS_TABLE_NAME: Final = JUDGMENTS_TABLE
# The judgments table's columns, from the one judgment schema, in the writer's order.
JUDGMENT_COLUMNS: Final = judgment_athena_columns()
RUNS_PREFIX: Final = layout.key_prefix(layout.RUNS)
RUNS_TABLE_NAME: Final = "runs"
# The runs table (report/history.py writes one Parquet file per run, docs/regression.md), in its order.
RUN_TABLE_COLUMNS: Final = [
    ("run_id", "string"),
    ("suite_name", "string"),
    ("schedule_name", "string"),
    ("started_at", "timestamp"),
    ("ended_at", "timestamp"),
    ("status", "string"),
    ("verdict", "string"),
    ("baseline_run_id", "string"),
    ("regressed_metrics", "string"),
    ("best_target_name", "string"),
    ("best_payload_bin", "string"),
    ("best_concurrency", "bigint"),
    ("best_request_rate_per_s", "double"),
    ("latency_p95_s", "double"),
    ("ttft_p95_s", "double"),
    ("transactions_per_minute", "double"),
    ("error_rate", "double"),
    ("price_per_txn_usd", "double"),
]

# Pinned so the SQL in report/sql (Trino dialect) never runs on an older engine a workgroup defaults to.
ATHENA_ENGINE_VERSION: Final = "Athena engine version 3"
# The catalog Athena resolves the Glue database through when a query names no catalog.
ATHENA_DATA_CATALOG: Final = "AwsDataCatalog"

_PRIMITIVE_TYPES: Final = {
    "string": glue.Schema.STRING,
    "int": glue.Schema.INTEGER,
    "bigint": glue.Schema.BIG_INT,
    "double": glue.Schema.DOUBLE,
    "boolean": glue.Schema.BOOLEAN,
    "timestamp": glue.Schema.TIMESTAMP,
}
_ARRAY_TYPE: Final = re.compile(r"array<(?P<item>.+)>")


class Storage(Construct):
    """Where every branch writes its records and where Athena reads them back.

    The records table's `run_id`/`branch_id` partitions are registered by the Plan step for every
    planned branch before any runner writes (fmbench.cloud.catalog): a branch's Parquet files are
    queryable the moment they land, with no crawler and no `MSCK REPAIR`, and a query that names no
    run id (a suite's history, the latest baseline) sees every run the catalog holds (docs/architecture.md).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        records_retention_days: int,
        athena_bytes_scanned_cutoff: int,
    ) -> None:
        super().__init__(scope, construct_id)
        name_prefix = catalog_name_for(Stack.of(self).stack_name)

        # Server access logs of the results bucket land here so reads and writes of results are auditable.
        # Delivery is granted by bucket policy (cdk.json's serverAccessLogsUseBucketPolicy flag), not an
        # ACL, which BucketOwnerEnforced ownership would reject.
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            removal_policy=RemovalPolicy.RETAIN,
        )

        # Retained on stack deletion: benchmark results outlive the deployment that produced them.
        self.bucket = s3.Bucket(
            self,
            "ResultsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=False,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="results-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireRequestRecords",
                    prefix=RECORDS_PREFIX,
                    expiration=Duration.days(records_retention_days),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.database = glue.Database(
            self,
            "Database",
            database_name=name_prefix,
            description="FMBench Flow benchmark results (request records, one row per request).",
        )

        self.records_table = glue.S3Table(
            self,
            "RecordsTable",
            database=self.database,
            table_name=RECORDS_TABLE_NAME,
            description="One row per request attempted, warm-up and errors included.",
            storage=glue.S3TableStorage.from_bucket(self.bucket),
            s3_prefix=RECORDS_PREFIX,
            data_format=glue.DataFormat.PARQUET,
            columns=[glue.Column(name=name, type=glue_type(type_)) for name, type_ in RECORD_COLUMNS],
            partition_keys=[
                glue.Column(name=name, type=glue_type(type_)) for name, type_ in RECORD_PARTITION_KEYS
            ],
            # The objects are SSE-S3 encrypted, which S3 undoes transparently; `true` here would tell
            # Athena to expect client-side (CSE-KMS) encryption instead.
            has_encrypted_data=False,
        )

        # One row per judge's verdict on one answer, partitioned like the records it judges; the Plan step
        # registers a judged run's partitions with the records' (fmbench.cloud.catalog).
        self.judgments_table = glue.S3Table(
            self,
            "JudgmentsTable",
            database=self.database,
            table_name=JUDGMENTS_TABLE_NAME,
            description="One row per judge's verdict on one candidate's answer (docs/accuracy.md).",
            storage=glue.S3TableStorage.from_bucket(self.bucket),
            s3_prefix=EVALUATIONS_PREFIX,
            data_format=glue.DataFormat.PARQUET,
            columns=[glue.Column(name=name, type=glue_type(type_)) for name, type_ in JUDGMENT_COLUMNS],
            partition_keys=[
                glue.Column(name=name, type=glue_type(type_)) for name, type_ in RECORD_PARTITION_KEYS
            ],
            has_encrypted_data=False,
        )

        # One row per run, one file per run and no partition: a run's row is queryable once written, and a
        # history query names no run id (docs/regression.md).
        self.runs_table = glue.S3Table(
            self,
            "RunsTable",
            database=self.database,
            table_name=RUNS_TABLE_NAME,
            description="One row per run: suite, times, status, regression verdict, headline figures.",
            storage=glue.S3TableStorage.from_bucket(self.bucket),
            s3_prefix=RUNS_PREFIX,
            data_format=glue.DataFormat.PARQUET,
            columns=[glue.Column(name=name, type=glue_type(type_)) for name, type_ in RUN_TABLE_COLUMNS],
            has_encrypted_data=False,
        )

        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=name_prefix,
            description="FMBench Flow report queries; settings are enforced so no client can widen them.",
            state="ENABLED",
            # Deleting the stack must not fail on saved queries users left in the workgroup.
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=athena_bytes_scanned_cutoff,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version=ATHENA_ENGINE_VERSION
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{self.bucket.bucket_name}/{ATHENA_RESULTS_PREFIX}",
                    expected_bucket_owner=Stack.of(self).account,
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                ),
            ),
        )

    @property
    def workgroup_arn(self) -> str:
        return Stack.of(self).format_arn(
            service="athena", resource="workgroup", resource_name=self.workgroup.ref
        )

    def grant_prefixes(
        self,
        grantee: iam.IGrantable,
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        list_any_prefix: bool = False,
    ) -> None:
        """Object access under key prefixes of the results bucket, and listing of those prefixes.

        Listing is granted with the objects because S3 answers a read of a missing key with 403 instead
        of 404 to a caller that may not list, and the record writer lists its branch's parts before
        numbering the next one. `list_any_prefix` is for a reader that must tell "not written" from
        "denied" for keys it reads one by one (S3 does not apply `s3:prefix` to that check).
        """
        if read:
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[self.bucket.arn_for_objects(f"{prefix}*") for prefix in read],
                )
            )
        if write:
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[self.bucket.arn_for_objects(f"{prefix}*") for prefix in write],
                )
            )
        prefixes = sorted({*read, *write})
        acknowledge_wildcard_resources(
            _principal_construct(grantee),
            [self.bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes],
            reason="Objects under one key prefix of the results bucket (the storage layout, fmbench.layout); "
            "S3 writes a key prefix as a trailing wildcard.",
        )
        if list_any_prefix:
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
            )
        elif prefixes:
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
                )
            )

    def grant_run_queries(self, grantee: iam.IGrantable) -> None:
        """Run report queries in the workgroup over the records table, and read their results.

        Scoped to this workgroup, database, table and bucket; CDK's own Athena task would grant S3 reads
        on every bucket and Glue writes on the database, which a read-only report query never needs.
        Athena also reads the data catalog the database is in (`athena:GetDataCatalog`), and in an account
        where Lake Formation governs the Glue catalog it asks Lake Formation for credentials to the
        table's data as the caller (`lakeformation:GetDataAccess`, which has no resource-level
        permissions): without them such an account refuses the query. Step Functions documents both for
        `athena:startQueryExecution.sync`; the Render function needs them as it starts queries itself.
        """
        stack = Stack.of(self)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "athena:StartQueryExecution",
                    "athena:GetQueryExecution",
                    "athena:GetQueryResults",
                    "athena:StopQueryExecution",
                ],
                resources=[self.workgroup_arn],
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["athena:GetDataCatalog"],
                resources=[
                    stack.format_arn(
                        service="athena", resource="datacatalog", resource_name=ATHENA_DATA_CATALOG
                    )
                ],
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["lakeformation:GetDataAccess"], resources=["*"])
        )
        acknowledge_unscoped_actions(
            _principal_construct(grantee),
            ["lakeformation:GetDataAccess"],
            reason="lakeformation:GetDataAccess supports no resource-level permissions; Lake Formation "
            "itself decides which tables' data it vends (none, unless it governs the catalog).",
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["glue:GetDatabase", "glue:GetTable", "glue:GetPartitions"],
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(
                        service="glue", resource="database", resource_name=self.database.database_name
                    ),
                    *self._table_arns(self.records_table, self.runs_table, self.judgments_table),
                ],
            )
        )
        # Athena reads the records and the runs table, and writes the result file with the caller's
        # permissions.
        self.grant_prefixes(
            grantee,
            read=[RECORDS_PREFIX, RUNS_PREFIX, EVALUATIONS_PREFIX, ATHENA_RESULTS_PREFIX],
            write=[ATHENA_RESULTS_PREFIX],
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                resources=[self.bucket.bucket_arn],
            )
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListMultipartUploadParts"],
                resources=[self.bucket.arn_for_objects(f"{ATHENA_RESULTS_PREFIX}*")],
            )
        )

    def _table_arns(self, *tables: glue.S3Table) -> list[str]:
        stack = Stack.of(self)
        return [
            stack.format_arn(
                service="glue",
                resource="table",
                resource_name=f"{self.database.database_name}/{table.table_name}",
            )
            for table in tables
        ]

    def grant_register_partitions(self, grantee: iam.IGrantable) -> None:
        """Register partitions of the records and judgments tables (the Plan step, fmbench.cloud.catalog):
        read a table's storage descriptor and add partitions to it; nothing else is writable."""
        stack = Stack.of(self)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["glue:GetTable", "glue:BatchCreatePartition"],
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(
                        service="glue", resource="database", resource_name=self.database.database_name
                    ),
                    *self._table_arns(self.records_table, self.judgments_table),
                ],
            )
        )


def _principal_construct(grantee: iam.IGrantable) -> IConstruct:
    """The role behind a grantee, where acknowledgements of its policy's findings belong."""
    principal = grantee.grant_principal
    if not isinstance(principal, Construct):
        raise TypeError(f"grants of the results bucket need a role in this app, got {principal!r}")
    return principal


def catalog_name_for(stack_name: str) -> str:
    """Glue and Athena names must be unique per account and region, so they follow the stack name.

    Athena needs lower case and no hyphens in database names: `FmbenchFlow-dev` -> `fmbench_flow_dev`.
    """
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", stack_name)
    return re.sub(r"[^a-z0-9_]", "_", snake.lower())


def glue_type(athena_type: str) -> glue.Type:
    """Map an Athena type string to a Glue type, failing at synth on a type the table cannot hold."""
    if athena_type in _PRIMITIVE_TYPES:
        return _PRIMITIVE_TYPES[athena_type]
    array = _ARRAY_TYPE.fullmatch(athena_type)
    if array is not None:
        return glue.Schema.array(glue_type(array.group("item")))
    raise ValueError(f"unsupported Athena column type {athena_type!r}")
