"""The storage stack as deployed: S3 results layout, the Glue records table, and the Athena workgroup."""

from typing import Any

import pytest
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from fmbench.records import RECORD_SCHEMA
from infra.app import BuiltApp, build_app
from infra.record_columns import RECORD_COLUMNS
from report.history import RUN_COLUMNS

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"


def _only_id(template: Template, resource_type: str, props: Any) -> str:
    """Logical id of the single resource matching type and properties, found rather than hard-coded."""
    found = template.find_resources(resource_type, {"Properties": props})
    assert len(found) == 1, f"expected one {resource_type} matching, found {sorted(found)}"
    return next(iter(found))


def _results_bucket_id(template: Template) -> str:
    return _only_id(template, "AWS::S3::Bucket", {"LifecycleConfiguration": Match.any_value()})


def _access_logs_bucket_id(template: Template) -> str:
    return _only_id(template, "AWS::S3::Bucket", {"LifecycleConfiguration": Match.absent()})


def _s3_uri(bucket_id: str, key: str) -> dict[str, Any]:
    return {"Fn::Join": ["", ["s3://", {"Ref": bucket_id}, key]]}


@pytest.fixture(scope="module")
def overridden() -> BuiltApp:
    # Strings, as `cdk synth -c key=value` passes them.
    return build_app(
        {
            "fmbench:stackName": "FmbenchFlow-ci",
            "fmbench:recordsRetentionDays": "7",
            "fmbench:athenaBytesScannedCutoff": "50000000",
        }
    )


@pytest.fixture(scope="module")
def overridden_template(overridden: BuiltApp) -> Template:
    return Template.from_stack(overridden.stack)


def test_stack_is_environment_agnostic(built: BuiltApp) -> None:
    assert built.stack.stack_name == "FmbenchFlow"
    assert built.stack.environment == "aws://unknown-account/unknown-region"


def test_storage_exposes_its_resources(built: BuiltApp) -> None:
    storage = built.stack.storage

    assert isinstance(storage.bucket, s3.Bucket)
    assert isinstance(storage.database, glue.Database)
    assert isinstance(storage.records_table, glue.S3Table)
    assert isinstance(storage.workgroup, athena.CfnWorkGroup)


def test_every_bucket_is_encrypted_private_and_owner_enforced(template: Template) -> None:
    template.resource_count_is("AWS::S3::Bucket", 2)
    template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        },
    )


def test_every_bucket_denies_requests_without_tls(template: Template) -> None:
    for bucket_id in template.find_resources("AWS::S3::Bucket"):
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": bucket_id},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            {
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                "Resource": [
                                    {"Fn::GetAtt": [bucket_id, "Arn"]},
                                    {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
                                ],
                            }
                        ]
                    )
                },
            },
        )


def test_request_records_expire_after_the_retention_days(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "ExpireRequestRecords",
                        "Prefix": "records/",
                        "ExpirationInDays": 90,
                        "Status": "Enabled",
                    }
                ]
            }
        },
    )


def test_results_bucket_access_is_logged_through_a_bucket_policy(template: Template) -> None:
    results_id = _results_bucket_id(template)
    logs_id = _access_logs_bucket_id(template)

    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": logs_id},
                "LogFilePrefix": "results-bucket/",
            }
        },
    )
    # Delivery by bucket policy, scoped to the results bucket: an ACL grant would be rejected on a
    # BucketOwnerEnforced bucket and logs would silently not arrive.
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": logs_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Condition": Match.object_like(
                                    {"ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [results_id, "Arn"]}}}
                                ),
                            }
                        )
                    ]
                )
            },
        },
    )
    template.all_resources_properties("AWS::S3::Bucket", {"AccessControl": Match.absent()})


def test_glue_database_is_named_after_the_stack(template: Template) -> None:
    template.resource_count_is("AWS::Glue::Database", 1)
    template.has_resource_properties("AWS::Glue::Database", {"DatabaseInput": {"Name": "fmbench_flow"}})


def test_records_table_is_parquet_over_the_records_prefix(template: Template) -> None:
    results_id = _results_bucket_id(template)

    template.resource_count_is("AWS::Glue::Table", 3)  # records, runs and judgments
    template.has_resource_properties(
        "AWS::Glue::Table",
        {
            "TableInput": {
                "Name": "records",
                "TableType": "EXTERNAL_TABLE",
                "PartitionKeys": [
                    {"Name": "run_id", "Type": "string"},
                    {"Name": "branch_id", "Type": "string"},
                ],
                "StorageDescriptor": Match.object_like(
                    {
                        "Location": _s3_uri(results_id, "/records/"),
                        "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                        "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE},
                    }
                ),
            }
        },
    )


def test_new_records_are_queryable_without_a_crawler(template: Template) -> None:
    """No partition projection: the Plan registers each branch's partition (fmbench.cloud.catalog), so a
    query that names no run id sees every run the catalog holds, and no crawler is needed."""
    (table,) = template.find_resources(
        "AWS::Glue::Table", {"Properties": {"TableInput": Match.object_like({"Name": "records"})}}
    ).values()
    table_input = table["Properties"]["TableInput"]
    assert not any(key.startswith(("projection.", "storage.location")) for key in table_input["Parameters"])
    assert [key["Name"] for key in table_input["PartitionKeys"]] == ["run_id", "branch_id"]
    template.resource_count_is("AWS::Glue::Crawler", 0)


def test_records_table_columns(template: Template) -> None:
    (table,) = template.find_resources(
        "AWS::Glue::Table", {"Properties": {"TableInput": Match.object_like({"Name": "records"})}}
    ).values()
    columns = {
        c["Name"]: c["Type"] for c in table["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]
    }

    assert list(columns.items()) == RECORD_COLUMNS
    # every column of the record schema, in the writer's order
    assert list(columns) == RECORD_SCHEMA.names
    # Types the report SQL depends on.
    assert columns["itl_s"] == "array<double>"
    assert columns["phase"] == "string"
    assert columns["client_bound"] == "boolean"
    assert columns["schedule_lag_s"] == columns["runner_cpu_fraction"] == "double"
    assert columns["ttft_s"] == columns["latency_s"] == columns["send_epoch_s"] == "double"
    assert columns["http_status"] == columns["completion_tokens"] == "int"
    # Athena rejects a table whose partition key is also a data column.
    assert not {"run_id", "branch_id"} & columns.keys()


def test_runs_table_holds_the_rows_history_writes_unpartitioned(template: Template) -> None:
    """The rows report/history.py writes are what Athena reads: same columns, same order, no partition."""
    results_id = _results_bucket_id(template)
    (table,) = template.find_resources(
        "AWS::Glue::Table", {"Properties": {"TableInput": Match.object_like({"Name": "runs"})}}
    ).values()
    table_input = table["Properties"]["TableInput"]
    columns = {c["Name"]: c["Type"] for c in table_input["StorageDescriptor"]["Columns"]}
    assert list(columns) == list(RUN_COLUMNS)
    assert columns["started_at"] == columns["ended_at"] == "timestamp"
    assert columns["best_concurrency"] == "bigint" and columns["latency_p95_s"] == "double"
    assert not table_input.get("PartitionKeys")
    assert table_input["StorageDescriptor"]["Location"] == _s3_uri(results_id, "/runs/")
    assert "projection.enabled" not in table_input.get("Parameters", {})


def test_athena_workgroup_enforces_encrypted_results_and_a_scan_cutoff(template: Template) -> None:
    results_id = _results_bucket_id(template)

    template.resource_count_is("AWS::Athena::WorkGroup", 1)
    template.has_resource_properties(
        "AWS::Athena::WorkGroup",
        {
            "Name": "fmbench_flow",
            "WorkGroupConfiguration": {
                "EnforceWorkGroupConfiguration": True,
                "BytesScannedCutoffPerQuery": 10_737_418_240,
                "PublishCloudWatchMetricsEnabled": True,
                "EngineVersion": {"SelectedEngineVersion": "Athena engine version 3"},
                "ResultConfiguration": {
                    "OutputLocation": _s3_uri(results_id, "/athena-results/"),
                    "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
                    "ExpectedBucketOwner": {"Ref": "AWS::AccountId"},
                },
            },
        },
    )


def test_outputs_name_the_bucket_workgroup_database_and_table(template: Template) -> None:
    results_id = _results_bucket_id(template)
    workgroup_id = _only_id(template, "AWS::Athena::WorkGroup", Match.any_value())
    database_id = _only_id(template, "AWS::Glue::Database", Match.any_value())
    table_id = _only_id(template, "AWS::Glue::Table", {"TableInput": Match.object_like({"Name": "records"})})

    template.has_output("ResultsBucketName", {"Value": {"Ref": results_id}})
    template.has_output("AthenaWorkGroupName", {"Value": {"Ref": workgroup_id}})
    template.has_output("GlueDatabaseName", {"Value": {"Ref": database_id}})
    template.has_output("RecordsTableName", {"Value": {"Ref": table_id}})


def test_context_overrides_reach_the_template(overridden: BuiltApp, overridden_template: Template) -> None:
    assert overridden.stack.stack_name == "FmbenchFlow-ci"
    overridden_template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"Prefix": "records/", "ExpirationInDays": 7})]
            }
        },
    )
    overridden_template.has_resource_properties(
        "AWS::Athena::WorkGroup",
        {
            "Name": "fmbench_flow_ci",
            "WorkGroupConfiguration": Match.object_like({"BytesScannedCutoffPerQuery": 50_000_000}),
        },
    )
    overridden_template.has_resource_properties(
        "AWS::Glue::Database", {"DatabaseInput": Match.object_like({"Name": "fmbench_flow_ci"})}
    )
