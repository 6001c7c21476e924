"""The cloud side of regressions, piece by piece: the records table's partitions registered in Glue (moto),
the verdict block of report.md, and the bounded regression summary of the execution's output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from test_compare import requests

from fmbench import layout
from fmbench.cloud.catalog import RECORDS_TABLE, PartitionRegistrationError, register_run_partitions
from fmbench.config import RegressionOptions
from report.compare import compare_runs, no_baseline
from report.execution_output import MAX_FINDINGS, regression_summary
from report.regression_report import REGRESSION_HEADING, regression_block, with_regression_block
from report.result import RegressionFinding, RegressionResult

ROOT = "s3://results-bucket"


@pytest.fixture
def glue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("glue", region_name="us-east-1")
        client.create_database(DatabaseInput={"Name": "fmbench"})
        client.create_table(
            DatabaseName="fmbench",
            TableInput={
                "Name": RECORDS_TABLE,
                "PartitionKeys": [
                    {"Name": "run_id", "Type": "string"},
                    {"Name": "branch_id", "Type": "string"},
                ],
                "StorageDescriptor": {
                    "Columns": [{"Name": "latency_s", "Type": "double"}],
                    "Location": f"{ROOT}/records/",
                    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                    "SerdeInfo": {
                        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    },
                },
            },
        )
        yield client


def partitions(glue: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName="fmbench", TableName=RECORDS_TABLE)
    return {tuple(p["Values"]): p["StorageDescriptor"] for page in pages for p in page["Partitions"]}


def test_a_runs_partitions_are_registered_once_at_the_layouts_folders(glue: Any) -> None:
    assert register_run_partitions(glue, "fmbench", ROOT, "run-1", ["a-1", "b-2"]) == 2
    # Again (a report-only execution): nothing new, nothing refused.
    assert register_run_partitions(glue, "fmbench", ROOT, "run-1", ["a-1", "b-2"]) == 0
    assert register_run_partitions(glue, "fmbench", ROOT, "run-2", ["a-1"]) == 1
    found = partitions(glue)
    assert sorted(found) == [("run-1", "a-1"), ("run-1", "b-2"), ("run-2", "a-1")]
    for (run_id, branch_id), storage in found.items():
        assert storage["Location"] == layout.records_prefix(ROOT, run_id, branch_id) + "/"
        # The table's format, so Athena reads each partition as it reads the table.
        assert storage["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
        assert [column["Name"] for column in storage["Columns"]] == ["latency_s"]


def test_more_branches_than_one_call_takes_are_registered_in_batches(glue: Any) -> None:
    branches = [f"b-{index}" for index in range(230)]
    assert register_run_partitions(glue, "fmbench", ROOT, "run-big", branches) == 230
    assert len(partitions(glue)) == 230


def test_a_table_that_is_not_there_is_an_error(glue: Any) -> None:
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        register_run_partitions(glue, "no-such-database", ROOT, "run-1", ["a-1"])


def test_a_refused_partition_is_raised_with_its_values() -> None:
    class RefusingGlue:
        def get_table(self, **_: Any) -> dict[str, Any]:
            return {"Table": {"StorageDescriptor": {"Location": f"{ROOT}/records/"}}}

        def batch_create_partition(self, **_: Any) -> dict[str, Any]:
            detail = {"ErrorCode": "ResourceNumberLimitExceededException", "ErrorMessage": "too many"}
            return {"Errors": [{"PartitionValues": ["run-1", "a-1"], "ErrorDetail": detail}]}

    with pytest.raises(PartitionRegistrationError, match=r"run-1/a-1 .*ResourceNumberLimitExceeded"):
        register_run_partitions(RefusingGlue(), "fmbench", ROOT, "run-1", ["a-1"])


# ---------------------------------------------------------------------------------- the report's block

REPORT = "# FMBench Flow benchmark: nightly\n\n| Run facts | |\n|---|---|\n\n## Best configuration\n\ntext\n"


def slower_comparison() -> RegressionResult:
    rng = np.random.default_rng(7)
    options = RegressionOptions(resamples=300)
    return compare_runs(requests(rng), requests(rng, latency_scale=1.5), options, "run-0")


def test_the_block_names_the_baseline_the_verdict_and_each_regressed_metric() -> None:
    result = slower_comparison()
    assert "latency_p95" in result.regressed_metrics
    block = regression_block(result)
    assert block.startswith(REGRESSION_HEADING)
    assert "**Verdict: REGRESSED** against baseline run `run-0`" in block
    rows = [line for line in block.splitlines() if line.startswith("| alpha |")]
    assert len(rows) == sum(f.verdict == "regressed" for f in result.findings)
    assert any("| latency_p95 |" in row for row in rows)


def test_the_block_goes_before_the_first_section_and_replaces_an_earlier_one() -> None:
    result = slower_comparison()
    once = with_regression_block(REPORT, result)
    assert once.index(REGRESSION_HEADING) < once.index("## Best configuration")
    assert once.startswith("# FMBench Flow benchmark: nightly\n")
    none = no_baseline(RegressionOptions(), "first run")
    twice = with_regression_block(once, none)
    assert twice.count(REGRESSION_HEADING) == 1
    assert "**Verdict: NO_BASELINE**" in twice and "REGRESSED" not in twice
    assert twice.replace(regression_block(none) + "\n", "") == REPORT


def test_the_execution_outputs_summary_keeps_at_most_twenty_regressed_findings() -> None:
    finding = slower_comparison().findings[0].model_dump()
    many = [
        RegressionFinding.model_validate({**finding, "verdict": "regressed", "concurrency": c})
        for c in range(30)
    ]
    result = RegressionResult(
        baseline_run_id="run-0",
        verdict="regressed",
        method="m",
        confidence=0.95,
        regressed_metrics=[finding["metric"]],
        findings=many,
    )
    summary = regression_summary(result)
    assert len(summary.findings) == MAX_FINDINGS
    assert summary.findings_omitted == 30 - MAX_FINDINGS
    assert (summary.verdict, summary.baseline_run_id) == ("regressed", "run-0")
