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
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import plan_suite
from fmbench.records import RecordWriter
from fmbench.runner import run_branch
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data
from report.formatting import seconds
from report.render import generate_report

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


async def test_the_report_sets_cloudwatch_latency_beside_the_client_p50(
    tmp_path: Path, offline_aws_credentials: None
) -> None:
    """A SageMaker branch measured against the emulator (its runtime API), its CloudWatch figures read back
    from moto, and the report's CloudWatch table: the client's p50 less the server's mean latency."""
    settings = EmulatorSettings(ttft_ms=20, itl_ms=2, output_tokens=6, sagemaker_format="tgi")
    async with running_emulator(settings) as url:
        data = {
            "name": "cw-report",
            "targets": [
                {
                    "name": "sm",
                    "platform": "sagemaker",
                    "endpoint_name": "my-endpoint",
                    "payload_format": "tgi",
                    "endpoint_url": url,
                    "region": REGION,
                }
            ],
            "workload": {
                "bins": [{"min_tokens": 50, "max_tokens": 500}],
                "inference": {"max_new_tokens": 6},
                "max_prompts_per_bin": 3,
            },
            "load": {"concurrency": [1, 2], "requests_per_level": 4},
        }
        plan = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1")
        (spec,) = plan.branches
        outcome = await run_branch(spec)
    assert outcome.status == "succeeded"

    with mock_aws():
        dims = {"EndpointName": "my-endpoint", "VariantName": "AllTraffic"}
        windows = load_point_windows(str(tmp_path), "run-1", spec.branch_id)
        assert {w.point.concurrency for w in windows} == {1, 2}
        # The same minute's datapoints, whichever point's window they fall in: 8 invocations of 5-12 ms.
        latencies_us = [5_000.0, 6_000.0, 7_000.0, 8_000.0, 9_000.0, 10_000.0, 11_000.0, 12_000.0]
        at_s = windows[0].start_epoch_s
        put("AWS/SageMaker", "ModelLatency", dims, at_s, latencies_us)
        put("AWS/SageMaker", "Invocations", dims, at_s, [8.0])
        record_cloudwatch_metrics(spec, lambda region: boto3.client("cloudwatch", region_name=region))
    document = generate_report(plan, [outcome], str(tmp_path), tmp_path / "report")

    text = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    section = text.split("### CloudWatch (SageMaker, Bedrock)", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[1]: cells
        for line in section.splitlines()
        if line.startswith("| sm |")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    server_mean_s = sum(latencies_us) / len(latencies_us) / 1e6
    client = {p.concurrency: p.latency_p50_s for p in document.branches[0].load_points}
    # Points whose window overlaps the datapoints' minute show them; one in another minute shows none.
    shown = {label: cells for label, cells in rows.items() if cells[5] != "n/a"}
    assert shown, rows
    for label, cells in shown.items():
        level = int(label.removeprefix("concurrency "))
        assert cells[5] == seconds(server_mean_s)
        client_p50 = client[level]
        assert client_p50 is not None
        assert cells[6] == seconds(client_p50 - server_mean_s)
        assert cells[8] == "8"
        summary = next(p for p in document.branches[0].load_points if p.concurrency == level)
        assert summary.server is not None
        assert summary.server.server_latency_mean_s == pytest.approx(server_mean_s)
