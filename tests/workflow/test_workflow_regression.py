"""The regression half of the workflow, executed by moto: Render's row of the runs table, Compare against
the latest succeeded run of the suite (found through the runs table on Athena), the verdict in result.json,
the report and the execution's output, the run-finished event on the default bus, and a re-render that keeps
the verdict. The baseline run and the candidate run hit two emulators, the candidate's much slower."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pandas as pd
import pytest
from harness import RESULTS_BUCKET, DeployedWorkflow, Execution
from test_workflow_execution import assert_output_summarizes, openai_target, published_result

from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from infra.workflow import EVENT_DETAIL_TYPE, EVENT_SOURCE

COMPARE = "lambdas.compare.handler"
SUITE = "nightly-regression"


@pytest.fixture(scope="module")
def slow_emulator_url() -> Iterator[str]:
    """The candidate's server: the first token after 80 ms and 20 ms per further token (the baseline's
    emulator: 5 ms and 1 ms)."""
    settings = EmulatorSettings(port=0, model="served-model", ttft_ms=80, itl_ms=20, output_tokens=6)
    with EmulatorProcess(settings) as emulator:
        yield emulator.url


def regression_suite(endpoint_url: str) -> dict[str, Any]:
    return {
        "name": SUITE,
        "targets": [openai_target("byo", endpoint_url)],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "max_prompts_per_bin": 4,
            "inference": {"max_new_tokens": 6},
        },
        "load": {"concurrency": [2], "requests_per_level": 12, "request_timeout_s": 10},
        "regression": {"baseline": "latest", "metrics": ["latency_p95", "error_rate"], "resamples": 400},
    }


def event_queue() -> str:
    """A rule on the default bus sending the run-finished events to an SQS queue, as a user would add."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName="fmbench-runs")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}
    events.put_rule(Name="fmbench-runs-to-sqs", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="fmbench-runs-to-sqs", Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    messages = answer.get("Messages", [])
    for message in messages:  # received once: not seen again after the visibility timeout
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(message["Body"]) for message in messages]


def run_row(run_id: str) -> dict[str, Any]:
    body = boto3.client("s3").get_object(Bucket=RESULTS_BUCKET, Key=f"runs/run_id={run_id}.parquet")["Body"]
    rows: list[dict[str, Any]] = pd.read_parquet(io.BytesIO(body.read())).to_dict("records")
    (row,) = rows
    return row


def report_text(run_id: str, name: str) -> str:
    key = f"reports/run_id={run_id}/{name}"
    return str(boto3.client("s3").get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read().decode())


def succeeded(execution: Execution) -> dict[str, Any]:
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    output: dict[str, Any] = execution.output
    assert_output_summarizes(output, published_result(output["run_id"]))
    return output


def test_a_slower_run_is_compared_with_the_latest_success_regresses_and_is_announced(
    workflow: DeployedWorkflow, emulator_url: str, slow_emulator_url: str
) -> None:
    queue = event_queue()

    first = succeeded(workflow.run(regression_suite(emulator_url), name="run-baseline"))

    # The first run of the suite has nothing to be compared with; Render wrote its row, Compare the verdict.
    assert first["verdict"] == "no_baseline"
    assert first["regression"]["baseline_run_id"] is None
    assert run_row("run-baseline")["status"] == "succeeded"
    assert run_row("run-baseline")["verdict"] == "no_baseline"
    (event,) = received(queue)
    assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, EVENT_DETAIL_TYPE)
    assert event["detail"]["run_id"] == "run-baseline"
    assert event["detail"]["suite_name"] == SUITE
    assert event["detail"]["verdict"] == "no_baseline"
    assert event["detail"]["result_json"] == first["result_json"]

    second = succeeded(workflow.run(regression_suite(slow_emulator_url), name="run-candidate"))

    # The baseline is the latest succeeded run of the suite (from the runs table), and latency regressed.
    assert second["verdict"] == "regressed"
    assert second["regression"]["baseline_run_id"] == "run-baseline"
    assert "latency_p95" in second["regression"]["regressed_metrics"]
    document = published_result("run-candidate")
    regression = document["regression"]
    assert regression["baseline_run_id"] == "run-baseline"
    assert regression["verdict"] == "regressed"
    (latency,) = [f for f in regression["findings"] if f["metric"] == "latency_p95"]
    assert latency["verdict"] == "regressed"
    assert latency["candidate"] > latency["baseline"] * 1.1
    assert latency["interval_low"] > 0
    # Both runs' requests were read by Athena with the same SQL a local comparison runs on DuckDB.
    assert any("FROM runs" in query for query in workflow.athena.queries)
    assert any("run_id = 'run-baseline'" in query for query in workflow.athena.queries)
    # The comparison beside the report, and the verdict block inside it.
    comparison = json.loads(report_text("run-candidate", "comparison.json"))
    assert comparison["candidate_run_id"] == "run-candidate"
    assert comparison["verdict"] == "regressed"
    markdown = report_text("run-candidate", "report.md")
    assert "## Regression verdict" in markdown
    assert "`run-baseline`" in markdown and "latency_p95" in markdown
    assert "Regression verdict" in report_text("run-candidate", "report.html")
    # The runs table has the verdict; the event says regressed and names the result.
    row = run_row("run-candidate")
    assert (row["verdict"], row["baseline_run_id"]) == ("regressed", "run-baseline")
    assert "latency_p95" in row["regressed_metrics"].split(",")
    (event,) = received(queue)
    assert event["detail"]["run_id"] == "run-candidate"
    assert event["detail"]["verdict"] == "regressed"
    assert event["detail"]["status"] == "succeeded"
    assert event["detail"]["best"] == second["best"]

    # A report-only re-render keeps the comparison the run was given (no comparison with a later run).
    queries_before = len(workflow.athena.queries)
    again = succeeded(workflow.run({"report_only": {"run_id": "run-candidate"}}, name="run-candidate-again"))
    assert again["verdict"] == "regressed"
    assert again["regression"] == second["regression"]
    assert published_result("run-candidate")["regression"] == regression
    assert "## Regression verdict" in report_text("run-candidate", "report.md")
    (event,) = received(queue)
    assert (event["detail"]["run_id"], event["detail"]["verdict"]) == ("run-candidate", "regressed")
    # ... so neither the runs table nor a baseline's requests were queried again.
    assert not any("FROM runs" in query for query in workflow.athena.queries[queries_before:])
    assert not any("run_id = 'run-baseline'" in query for query in workflow.athena.queries[queries_before:])
    assert [call.handler for call in workflow.lambdas.calls_of(COMPARE)] == [COMPARE] * 3

    # A run whose Query fails is announced as failed, and the execution fails with the Query's error.
    workflow.athena.refused.append("run_id = 'run-candidate'")
    failed = workflow.run({"report_only": {"run_id": "run-candidate"}}, name="run-candidate-failing")
    assert (failed.status, failed.error) == ("FAILED", "RunFailed")
    assert failed.cause is not None and failed.cause.startswith("States.TaskFailed: ")
    (event,) = received(queue)
    assert event["detail"]["run_id"] == "run-candidate"
    assert (event["detail"]["status"], event["detail"]["verdict"]) == ("failed", None)
    assert event["detail"]["error"]["Error"] == "States.TaskFailed"
