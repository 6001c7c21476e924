"""How the latest judging of a run ended, kept beside the branches' outcomes
(``outcomes/run_id=R/evaluation.json``, ``fmbench.layout.evaluation_outcome_uri``), so that the report of a
judged suite without accuracy says why, and a later re-render still does (docs/accuracy.md).

Written by a local ``fmbench run`` after judging, by ``fmbench evaluate`` (judged again, or failed), and in
the cloud by Render from the Evaluate state's caught error. Data and storage I/O through ``fmbench.storage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from fmbench import layout, storage

# An error's text in the record, result.json and the report: long enough for a message and its cause, short
# enough for one paragraph (a failed ECS task's whole description runs to kilobytes).
MAX_EVALUATION_ERROR_CHARS: Final = 600
LOCAL_STEP: Final = "the judging"
CLOUD_STEP: Final = "the Evaluate step"


class EvaluationOutcome(BaseModel):
    """``judged``: the latest judging finished (its judgments are the run's accuracy); ``failed``: it did not,
    ``error`` says why (cut to ``MAX_EVALUATION_ERROR_CHARS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["judged", "failed"]
    step: str = LOCAL_STEP
    error: str | None = None
    recorded_at: datetime


def bounded_error_text(text: str, max_chars: int = MAX_EVALUATION_ERROR_CHARS) -> str:
    """One line of at most ``max_chars`` characters (plus a note of the whole length when cut)."""
    line = " ".join(text.split())
    if len(line) <= max_chars:
        return line
    return f"{line[:max_chars].rstrip()}... [cut: {len(line)} characters in all]"


def failed_outcome(error: str, *, step: str = LOCAL_STEP, now: datetime | None = None) -> EvaluationOutcome:
    return EvaluationOutcome(
        status="failed", step=step, error=bounded_error_text(error), recorded_at=now or datetime.now(UTC)
    )


def judged_outcome(*, step: str = LOCAL_STEP, now: datetime | None = None) -> EvaluationOutcome:
    return EvaluationOutcome(status="judged", step=step, recorded_at=now or datetime.now(UTC))


def _task_cause_text(cause: Any) -> str | None:
    """A Catch's Cause in words: a Lambda's errorMessage, a stopped ECS task's reason and exit codes, or the
    text as it is."""
    if cause is None:
        return None
    try:
        parsed = json.loads(cause) if isinstance(cause, str) else cause
    except ValueError:
        return str(cause)
    if not isinstance(parsed, dict):
        return str(cause)
    if parsed.get("errorMessage"):
        return str(parsed["errorMessage"])
    containers = parsed.get("Containers")
    if isinstance(containers, list):
        parts = [f"the task stopped ({parsed.get('StoppedReason') or parsed.get('StopCode') or 'no reason'})"]
        for container in containers:
            if not isinstance(container, dict):
                continue
            name, code = container.get("Name", "?"), container.get("ExitCode", "?")
            exited = f"container {name} exited with code {code}"
            reason = container.get("Reason")
            parts.append(f"{exited} ({reason})" if reason else exited)
        return "; ".join(parts) + "; its output is in the runner's log group (stream prefix evaluate)"
    return cause if isinstance(cause, str) else json.dumps(cause)


def step_error_text(error: Mapping[str, Any]) -> str:
    """'Error: cause' of a Step Functions Catch (``{"Error", "Cause"}``), the cause in words."""
    name = str(error.get("Error") or "error")
    cause = _task_cause_text(error.get("Cause"))
    return f"{name}: {cause}" if cause else name


def write_evaluation_outcome(root: str, run_id: str, outcome: EvaluationOutcome) -> str:
    uri = layout.evaluation_outcome_uri(root, run_id)
    storage.write_bytes(uri, outcome.model_dump_json(indent=2).encode(), "application/json")
    return uri


def read_evaluation_outcome(root: str, run_id: str) -> EvaluationOutcome | None:
    """The run's record, or None when its judging never recorded one (not judged yet, or an older run)."""
    try:
        data = storage.read_bytes(layout.evaluation_outcome_uri(root, run_id))
    except storage.StorageNotFoundError:
        return None
    return EvaluationOutcome.model_validate_json(data)
