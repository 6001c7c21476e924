"""Whether a run's answers were judged, and the report's words when a judged suite has no accuracy (or only
part of it): the judging failed (``fmbench.judging_outcome``), or a judge of the panel is short.

result.json's ``evaluation`` block and the sentences of the report's Accuracy section come from here, for a
local run and a cloud run alike (docs/accuracy.md).
"""

from __future__ import annotations

import json
import shlex

from fmbench.judging_outcome import EvaluationOutcome
from fmbench.plan import RunPlan
from report.accuracy import AccuracyView
from report.formatting import md
from report.result import EvaluationStatus


def rejudge_text(plan: RunPlan) -> str:
    """How to judge the run again and render its report with the new judgments."""
    # Every branch of a run has the run's storage root.
    root, run_id = (plan.branches[0].storage_root if plan.branches else "ROOT"), plan.run_id
    evaluate = f"fmbench evaluate {shlex.quote(root)} --run-id {run_id}"
    if "://" in root:
        report_only = json.dumps({"report_only": {"run_id": run_id}})
        return (
            f"judge again with `{evaluate}` (from a machine allowed to call the judges), then a report-only "
            f"execution (input `{report_only}`)"
        )
    return f"judge again with `{evaluate}`, then `fmbench report {run_id} --root {shlex.quote(root)}`"


def evaluation_status(
    plan: RunPlan, outcome: EvaluationOutcome | None, accuracy: AccuracyView | None
) -> EvaluationStatus:
    """The latest judging's record decides; without one, judgments make a judged run, and a suite with an
    evaluation section but no judgment is ``not_judged``."""
    if outcome is not None and outcome.status == "failed":
        error = f"{outcome.step} failed: {outcome.error or 'no error recorded'}"
        return EvaluationStatus(status="failed", error=error, rejudge=rejudge_text(plan))
    if outcome is not None or accuracy is not None:
        return EvaluationStatus(status="judged")
    if plan.suite.evaluation is None:
        return EvaluationStatus(status="not_requested")
    return EvaluationStatus(status="not_judged", rejudge=rejudge_text(plan))


def _with_commands(rejudge: str) -> str:
    """The re-judge hint for Markdown: the text escaped, the commands between backticks left as code."""
    pieces = rejudge.split("`")
    return "".join(md(piece) if index % 2 == 0 else f"`{piece}`" for index, piece in enumerate(pieces))


def evaluation_note(status: EvaluationStatus | None, judged: bool) -> str:
    """The Accuracy section's opening words when the judging failed or never ran ('' otherwise); ``judged``:
    the run has judgments (then the failure left part of them)."""
    if status is None or status.status in ("judged", "not_requested"):
        return ""
    hint = _with_commands(status.rejudge or "")
    if status.status == "not_judged":
        return (
            "**Accuracy: not judged**: the suite has an evaluation section, but the run has no judgment (it "
            f"stopped before judging, or no answer could be judged). To judge it: {hint}."
        )
    if judged:
        return (
            f"**Accuracy: judging incomplete**: {md(status.error)}. The figures below are from the judgments "
            f"written before it failed, possibly not of every answer. To complete them: {hint}."
        )
    return f"**Accuracy: not judged**: {md(status.error)}. To judge the run: {hint}."


def short_judge_notes(accuracy: AccuracyView) -> list[str]:
    """A judge with error verdicts (denied, throttled beyond its retries, unreachable, not started) is
    short: it is named, with how many of its verdicts are errors. Plain text (the caller escapes it)."""
    notes = []
    for judge in accuracy.judges:
        if judge.error_verdicts <= 0:
            continue
        model = f" ({judge.judge_model})" if judge.judge_model else ""
        notes.append(
            f"Judge {judge.judge}{model} is short: {judge.error_verdicts} of its {judge.verdicts} verdicts "
            "are errors (its calls were denied, throttled beyond its retries, failed or never made; the "
            "judgment rows' error_class says which), so those prompts rest on the other judges' votes."
        )
    return notes
