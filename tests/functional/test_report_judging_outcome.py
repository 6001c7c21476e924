"""Why a judged suite's report has no accuracy (or only part of it): the judging's recorded outcome
(outcomes/run_id=R/evaluation.json) in result.json's evaluation block and the report's Accuracy section, for a
local run and for the cloud Render's input of a failed Evaluate step (moto's S3); and a short judge named."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from test_report_render import REPO, run_plan, suite_data

from fmbench import layout
from fmbench.cloud.events import RenderEvent
from fmbench.config import Evaluation
from fmbench.judging_outcome import (
    CLOUD_STEP,
    MAX_EVALUATION_ERROR_CHARS,
    EvaluationOutcome,
    failed_outcome,
    judged_outcome,
    read_evaluation_outcome,
    write_evaluation_outcome,
)
from fmbench.local import judge_saved_run
from fmbench.plan import BranchOutcome, RunPlan
from report.cloud import evaluation_outcome_for
from report.render import generate_report
from report.result import ResultDocument

sys.path.insert(0, str(REPO / "tests" / "unit"))
from judgment_factory import judgment, write_judgments

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
BUCKET = "fmbench-results-judging"
REGION = "us-east-1"


def judged_suite_run(tmp_path: Path) -> tuple[RunPlan, list[BranchOutcome], str]:
    """A measured run whose suite has the default panel (the plan as if the suite had said so)."""
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    plan = plan.model_copy(update={"suite": plan.suite.model_copy(update={"evaluation": Evaluation()})})
    return plan, outcomes, root


def report(
    tmp_path: Path, plan: RunPlan, outcomes: list[BranchOutcome], root: str
) -> tuple[ResultDocument, str, str]:
    out = tmp_path / "report"
    document = generate_report(plan, outcomes, root, out, generated_at=WHEN)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    return document, markdown, html


def accuracy_section(markdown: str) -> str:
    assert markdown.count("## Accuracy\n") == 1, markdown
    return markdown.split("## Accuracy\n", 1)[1].split("\n## ", 1)[0].strip()


def test_a_failed_local_judging_is_recorded_and_the_report_says_why(tmp_path: Path) -> None:
    plan, outcomes, root = judged_suite_run(tmp_path)

    # The run's prompts were never materialized: the judging fails, the run keeps its records.
    summary, error = judge_saved_run(plan, root)

    assert summary is None and error is not None
    recorded = read_evaluation_outcome(root, plan.run_id)
    assert recorded is not None and recorded.status == "failed" and recorded.step == "the judging"
    assert recorded.error and "materialized prompts" in recorded.error
    document, markdown, html = report(tmp_path, plan, outcomes, root)
    assert document.evaluation is not None
    assert document.evaluation.status == "failed"
    assert document.evaluation.error == f"the judging failed: {recorded.error}"
    evaluate = f"fmbench evaluate {root} --run-id {plan.run_id}"
    assert document.evaluation.rejudge == (
        f"judge again with `{evaluate}`, then `fmbench report {plan.run_id} --root {root}`"
    )
    assert all(branch.accuracy is None for branch in document.branches)
    section = accuracy_section(markdown)
    assert section.startswith("**Accuracy: not judged**: the judging failed: ")
    assert f"`{evaluate}`" in section
    assert "Accuracy: not judged" in html and f"<code>{evaluate}</code>" in html


def test_a_judging_that_failed_after_writing_some_judgments_is_marked_incomplete(tmp_path: Path) -> None:
    plan, outcomes, root = judged_suite_run(tmp_path)
    small = next(b.branch_id for b in plan.branches if b.target.name == "small")
    write_judgments(root, plan.run_id, {small: [judgment("small", "p1", "claude", "correct")]})
    write_evaluation_outcome(root, plan.run_id, failed_outcome("the judges' task was stopped"))

    document, markdown, _ = report(tmp_path, plan, outcomes, root)

    assert document.evaluation is not None and document.evaluation.status == "failed"
    section = accuracy_section(markdown)
    assert section.startswith(
        "**Accuracy: judging incomplete**: the judging failed: the judges' task was stopped. The figures "
        "below are from the judgments written before it failed"
    )
    assert "### Majority-vote accuracy per candidate" in section  # the figures it did write
    branches = {branch.target_name: branch for branch in document.branches}
    assert branches["small"].accuracy is not None and branches["small"].accuracy.judged_prompts == 1


def test_a_judged_run_says_so_and_names_a_judge_that_is_short(tmp_path: Path) -> None:
    plan, outcomes, root = judged_suite_run(tmp_path)
    small = next(b.branch_id for b in plan.branches if b.target.name == "small")
    rows = [
        judgment("small", f"p{n}", judge, "error" if judge == "nova" and n < 2 else "correct")
        for n in range(4)
        for judge in ("claude", "llama", "nova")
    ]
    write_judgments(root, plan.run_id, {small: rows})
    write_evaluation_outcome(root, plan.run_id, judged_outcome())

    document, markdown, _ = report(tmp_path, plan, outcomes, root)

    assert document.evaluation is not None
    assert document.evaluation.model_dump() == {"status": "judged", "error": None, "rejudge": None}
    section = accuracy_section(markdown)
    assert "Accuracy: not judged" not in section and "judging incomplete" not in section
    short = [line for line in section.splitlines() if " is short: " in line]
    assert short == [
        "Judge nova (model-of-nova) is short: 2 of its 4 verdicts are errors (its calls were denied, "
        "throttled beyond its retries, failed or never made; the judgment rows' error\\_class says which), "
        "so those prompts rest on the other judges' votes."
    ]


def test_a_judged_suite_without_judgments_or_record_is_not_judged_and_an_unjudged_suite_not_asked(
    tmp_path: Path,
) -> None:
    plan, outcomes, root = judged_suite_run(tmp_path)
    document, markdown, _ = report(tmp_path, plan, outcomes, root)
    assert document.evaluation is not None and document.evaluation.status == "not_judged"
    assert accuracy_section(markdown).startswith("**Accuracy: not judged**: the suite has an evaluation")

    unjudged, unjudged_outcomes, unjudged_root = run_plan(tmp_path / "plain", suite_data())
    document, markdown, _ = report(tmp_path / "plain", unjudged, unjudged_outcomes, unjudged_root)
    assert document.evaluation is not None and document.evaluation.status == "not_requested"
    assert "## Accuracy" not in markdown


# ------------------------------------------------------------------------------------ cloud Render

ECS_CAUSE = {
    "TaskArn": "arn:aws:ecs:us-east-1:123456789012:task/fmbench/0123",
    "StopCode": "EssentialContainerExited",
    "StoppedReason": "Essential container in task exited",
    "Containers": [{"Name": "evaluator", "ExitCode": 1, "LastStatus": "STOPPED"}],
    "Overrides": {"ContainerOverrides": [{"Name": "evaluator", "Command": ["x" * 5000]}]},
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def render_event(evaluation: dict[str, Any] | None) -> RenderEvent:
    return RenderEvent.model_validate(
        {"run_id": "20250102T030405Z-abcdef", "query_execution_id": "q-1", "evaluation": evaluation}
    )


def recorded(s3: Any) -> EvaluationOutcome:
    key = layout.evaluation_outcome_uri(f"s3://{BUCKET}", "20250102T030405Z-abcdef").split("/", 3)[3]
    return EvaluationOutcome.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_render_records_a_failed_evaluate_step_with_its_cause_bounded_and_a_rerender_keeps_it(
    s3: Any,
) -> None:
    root = f"s3://{BUCKET}"
    command = ["evaluate", root, "--run-id", "20250102T030405Z-abcdef"]
    error = {"Error": "States.TaskFailed", "Cause": json.dumps(ECS_CAUSE)}
    # What the task itself recorded before it exited (fmbench evaluate's own error).
    told = failed_outcome("the answers could not be judged: AccessDeniedException " + "y" * 2000)
    key = layout.evaluation_outcome_uri(root, "20250102T030405Z-abcdef").split("/", 3)[3]
    s3.put_object(Bucket=BUCKET, Key=key, Body=told.model_dump_json())

    outcome = evaluation_outcome_for(s3, root, render_event({"command": command, "error": error}))

    assert outcome is not None and outcome.status == "failed" and outcome.step == CLOUD_STEP
    assert outcome.error is not None
    assert outcome.error.startswith(
        "States.TaskFailed: the task stopped (Essential container in task exited); container evaluator "
        "exited with code 1; its output is in the runner's log group (stream prefix evaluate); the task "
        "said: the answers could not be judged: AccessDeniedException yyy"
    )
    assert "xxxx" not in outcome.error  # the task description's bulk is not the reason
    assert len(outcome.error) <= MAX_EVALUATION_ERROR_CHARS + len("... [cut: 9999 characters in all]")
    assert outcome.error.endswith("characters in all]")
    assert recorded(s3) == outcome
    # A report-only execution ($.evaluation is {}) and an older input (none) read the record.
    assert evaluation_outcome_for(s3, root, render_event({})) == outcome
    assert evaluation_outcome_for(s3, root, render_event(None)) == outcome
    # A later execution whose Evaluate succeeded records the run judged.
    judged = evaluation_outcome_for(s3, root, render_event({"command": command}))
    assert judged is not None and (judged.status, judged.error) == ("judged", None)
    assert recorded(s3) == judged


def test_a_lambda_cause_is_its_error_message() -> None:
    from fmbench.judging_outcome import step_error_text

    cause = json.dumps({"errorMessage": "boom", "errorType": "RuntimeError", "stackTrace": ["..."]})
    assert step_error_text({"Error": "States.Timeout", "Cause": cause}) == "States.Timeout: boom"
    assert step_error_text({"Error": "States.Timeout"}) == "States.Timeout"
    assert step_error_text({"Error": "X", "Cause": "plain words"}) == "X: plain words"
