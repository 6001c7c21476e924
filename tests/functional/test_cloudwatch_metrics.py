"""SageMaker and Bedrock CloudWatch metrics over each load point's window, through moto's CloudWatch."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from fmbench import layout
from fmbench.cloud.cloudwatch import load_point_windows, record_cloudwatch_metrics
from fmbench.plan import plan_suite
from fmbench.records import RecordWriter
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from record_factory import make_record

REGION = "us-east-1"
# Two load points a few minutes apart, an hour ago, each inside one minute of CloudWatch's.
T0 = (int(time.time()) // 3600 - 1) * 3600
C1 = (T0 + 5, T0 + 50)
C4 = (T0 + 185, T0 + 230)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def branch(tmp_path: Path, target: dict[str, Any]) -> BranchSpec:
    data = {
        "name": "cw-test",
        "targets": [target],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "max_prompts_per_bin": 5},
        "load": {"concurrency": [1, 4], "requests_per_level": 3},
    }
    plan = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1")
    (spec,) = plan.branches
    return spec


def write_records(spec: BranchSpec) -> None:
    writer = RecordWriter(spec.storage_root, spec.run_id, spec.branch_id)
    for concurrency, (start, end) in ((1, C1), (4, C4)):
        writer.append(
            make_record(concurrency=concurrency, phase="warmup", send_epoch_s=start - 30, end_epoch_s=start)
        )
        writer.append(make_record(concurrency=concurrency, send_epoch_s=start, end_epoch_s=start + 10))
        writer.append(make_record(concurrency=concurrency, send_epoch_s=start + 20, end_epoch_s=end))
    writer.flush()


def put(namespace: str, name: str, dims: dict[str, str], at_s: float, values: list[float]) -> None:
    boto3.client("cloudwatch", region_name=REGION).put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                "Timestamp": datetime.fromtimestamp(at_s, UTC),
                "Value": value,
            }
            for value in values
        ],
    )


def read_rows(spec: BranchSpec) -> list[dict[str, Any]]:
    uri = layout.server_metrics_cloudwatch_uri(spec.storage_root, spec.run_id, spec.branch_id)
    return pq.read_table(uri).to_pylist()


def by_point(rows: list[dict[str, Any]], metric: str, statistic: str) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for row in rows:
        if (row["metric"], row["statistic"]) == (metric, statistic):
            found.setdefault(row["concurrency"], []).append(row["value"])
    return found


def test_windows_are_the_measured_requests_first_send_to_last_end(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"name": "sm", "platform": "sagemaker", "endpoint_name": "my-endpoint"})
    write_records(spec)
    windows = {
        w.point.concurrency: (w.start_epoch_s, w.end_epoch_s)
        for w in load_point_windows(spec.storage_root, spec.run_id, spec.branch_id)
    }
    assert windows == {1: C1, 4: C4}


def test_sagemaker_metrics_are_read_back_per_load_point(tmp_path: Path, aws: None) -> None:
    spec = branch(
        tmp_path, {"name": "sm", "platform": "sagemaker", "endpoint_name": "my-endpoint", "region": REGION}
    )
    write_records(spec)
    dims = {"EndpointName": "my-endpoint", "VariantName": "AllTraffic"}
    put("AWS/SageMaker", "ModelLatency", dims, C1[0] + 20, [400_000.0, 600_000.0])  # microseconds
    put("AWS/SageMaker", "ModelLatency", dims, C4[0] + 20, [1_000_000.0, 2_000_000.0, 3_000_000.0])
    put("AWS/SageMaker", "ModelLatency", dims, C4[1] + 300, [9e9])  # after the run: not in any window
    put("AWS/SageMaker", "Invocations", dims, C1[0] + 20, [1.0, 1.0])
    put("AWS/SageMaker", "Invocations", dims, C4[0] + 20, [3.0])
    put("/aws/sagemaker/Endpoints", "GPUUtilization", dims, C4[0] + 20, [40.0, 80.0])
    put("AWS/SageMaker", "ModelLatency", {**dims, "EndpointName": "another"}, C1[0] + 20, [7.0])

    written = record_cloudwatch_metrics(spec, lambda region: boto3.client("cloudwatch", region_name=region))
    rows = read_rows(spec)
    assert written == len(rows) > 0
    assert {(r["source"], r["period_s"], r["load_mode"]) for r in rows} == {("cloudwatch", 60, "concurrency")}
    assert by_point(rows, "ModelLatency", "Sum") == {1: [pytest.approx(1.0)], 4: [pytest.approx(6.0)]}
    assert by_point(rows, "ModelLatency", "SampleCount") == {1: [2.0], 4: [3.0]}
    assert by_point(rows, "ModelLatency", "Maximum") == {1: [pytest.approx(0.6)], 4: [pytest.approx(3.0)]}
    assert by_point(rows, "Invocations", "Sum") == {1: [2.0], 4: [3.0]}
    assert by_point(rows, "GPUUtilization", "Average") == {4: [60.0]}
    minute_of = {r["concurrency"]: r["sampled_epoch_s"] for r in rows if r["metric"] == "ModelLatency"}
    assert minute_of == {1: T0, 4: T0 + 180}
    labels = json.loads(next(r["labels"] for r in rows if r["metric"] == "GPUUtilization"))
    assert labels == {"namespace": "/aws/sagemaker/Endpoints", **dims}

    # A later render replaces the file with what CloudWatch has by then.
    put("AWS/SageMaker", "Invocations", dims, C4[0] + 25, [2.0])
    record_cloudwatch_metrics(spec, lambda region: boto3.client("cloudwatch", region_name=region))
    assert by_point(read_rows(spec), "Invocations", "Sum") == {1: [2.0], 4: [5.0]}


def test_bedrock_metrics_by_model_id(tmp_path: Path, aws: None) -> None:
    spec = branch(
        tmp_path, {"name": "br", "platform": "bedrock", "model_id": "amazon.nova-lite-v1:0", "region": REGION}
    )
    write_records(spec)
    dims = {"ModelId": "amazon.nova-lite-v1:0"}
    put("AWS/Bedrock", "InvocationLatency", dims, C1[0] + 20, [300.0, 500.0])  # milliseconds
    put("AWS/Bedrock", "OutputTokenCount", dims, C4[0] + 20, [120.0, 80.0])
    put("AWS/Bedrock", "InvocationThrottles", dims, C4[0] + 20, [1.0])
    record_cloudwatch_metrics(spec, lambda region: boto3.client("cloudwatch", region_name=region))
    rows = read_rows(spec)
    assert by_point(rows, "InvocationLatency", "Sum") == {1: [pytest.approx(0.8)]}
    assert by_point(rows, "OutputTokenCount", "Sum") == {4: [200.0]}
    assert by_point(rows, "InvocationThrottles", "Sum") == {4: [1.0]}


def test_targets_cloudwatch_does_not_measure_write_nothing(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"name": "emu", "platform": "emulator"})
    write_records(spec)
    assert record_cloudwatch_metrics(spec, lambda region: pytest.fail("no client wanted")) == 0
