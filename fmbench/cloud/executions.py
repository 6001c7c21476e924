"""Workflow runs seen from a workstation: find the state machine, start a run, follow it, fetch its report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from fmbench.cloud import s3 as s3_objects
from fmbench.cloud.aws import error_code

DEFAULT_STACK_NAME: Final = "FmbenchFlow"
STATE_MACHINE_OUTPUT: Final = "StateMachineArn"
FINISHED_STATUSES: Final = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
DEFAULT_POLL_INTERVAL_S: Final = 15.0
# A page of GetExecutionHistory holds at most 1,000 events.
_HISTORY_PAGE_SIZE: Final = 1000


class StackLookupError(LookupError):
    """The stack does not exist, or has no state machine output (not deployed, or another region)."""


class ExecutionNotFoundError(LookupError):
    """No execution of the state machine has the run id as its name."""


def state_machine_arn(cfn_client: Any, stack_name: str) -> str:
    """The ``StateMachineArn`` output of the deployed stack."""
    try:
        stacks = cfn_client.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if error_code(exc) == "ValidationError":  # CloudFormation's "Stack with id X does not exist"
            raise StackLookupError(
                f"stack {stack_name} does not exist in this account and region (deploy it with cdk deploy, "
                "or give --stack or --region)"
            ) from None
        raise
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}
    if STATE_MACHINE_OUTPUT not in outputs:
        raise StackLookupError(f"stack {stack_name} has no {STATE_MACHINE_OUTPUT} output")
    return str(outputs[STATE_MACHINE_OUTPUT])


def execution_arn(machine_arn: str, run_id: str) -> str:
    """arn:...:stateMachine:NAME -> arn:...:execution:NAME:RUN (the run id is the execution name)."""
    prefix, marker, name = machine_arn.rpartition(":stateMachine:")
    if not marker:
        raise ValueError(f"not a state machine ARN: {machine_arn}")
    return f"{prefix}:execution:{name}:{run_id}"


def start_run(sfn_client: Any, machine_arn: str, run_id: str, suite_document: dict[str, Any]) -> str:
    """Start an execution named after the run id, with the suite as its input; its ARN."""
    started = sfn_client.start_execution(
        stateMachineArn=machine_arn, name=run_id, input=json.dumps(suite_document, sort_keys=True)
    )
    return str(started["executionArn"])


# ---------------------------------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A state the execution entered; ``branch_id`` when the state ran for one branch of the Map."""

    event_id: int
    timestamp: datetime | None
    state: str
    branch_id: str | None


def _branch_of(state_input: Any) -> str | None:
    if not isinstance(state_input, str):
        return None
    try:
        document = json.loads(state_input)
    except ValueError:  # a truncated input (over 256 KB) is no JSON
        return None
    branch_id = document.get("branch_id") if isinstance(document, dict) else None
    return branch_id if isinstance(branch_id, str) else None


def state_entries(events: list[dict[str, Any]]) -> list[StateEntry]:
    entries = []
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if not str(event.get("type", "")).endswith("StateEntered") or not isinstance(details, dict):
            continue
        entries.append(
            StateEntry(
                event_id=int(event["id"]),
                timestamp=event.get("timestamp"),
                state=str(details.get("name", "")),
                branch_id=_branch_of(details.get("input")),
            )
        )
    return entries


@dataclass
class HistoryReader:
    """Reads the events of an execution that it has not returned before, oldest first.

    Pages are requested newest first and reading stops at the first page that reaches an event already
    seen, so following a long run does not re-read its whole history at every poll.
    """

    sfn_client: Any
    execution_arn: str
    last_event_id: int = 0

    def new_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            request: dict[str, Any] = {
                "executionArn": self.execution_arn,
                "reverseOrder": True,
                "maxResults": _HISTORY_PAGE_SIZE,
            }
            if token:
                request["nextToken"] = token
            page = self.sfn_client.get_execution_history(**request)
            page_events = page.get("events", [])
            events.extend(event for event in page_events if int(event["id"]) > self.last_event_id)
            token = page.get("nextToken")
            reached_seen = any(int(event["id"]) <= self.last_event_id for event in page_events)
            if not token or reached_seen:
                break
        events.sort(key=lambda event: int(event["id"]))
        if events:
            self.last_event_id = int(events[-1]["id"])
        return events


@dataclass
class RunView:
    """Where an execution stands: its status, each branch's latest state, and its output or error."""

    run_id: str
    execution_arn: str
    status: str
    started: datetime | None = None
    stopped: datetime | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    current_states: list[str] = field(default_factory=list)
    branch_states: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


def _output_document(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def describe_run(sfn_client: Any, arn: str) -> RunView:
    """The execution's status, output or error; ``ExecutionNotFoundError`` when there is none."""
    try:
        described = sfn_client.describe_execution(executionArn=arn)
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            raise ExecutionNotFoundError(f"no execution {arn}") from None
        raise
    return RunView(
        run_id=str(described.get("name", arn.rsplit(":", 1)[-1])),
        execution_arn=arn,
        status=str(described["status"]),
        started=described.get("startDate"),
        stopped=described.get("stopDate"),
        output=_output_document(described.get("output")),
        error=described.get("error"),
        cause=described.get("cause"),
    )


def with_entries(view: RunView, entries: list[StateEntry]) -> RunView:
    """The view with each branch's latest state, and the states entered outside the Map, in order."""
    for entry in entries:
        if entry.branch_id is not None:
            view.branch_states[entry.branch_id] = entry.state
        elif entry.state not in view.current_states:
            view.current_states.append(entry.state)
    return view


def read_run(sfn_client: Any, arn: str) -> RunView:
    """Status and per-branch states of an execution, from its whole history."""
    view = describe_run(sfn_client, arn)
    return with_entries(view, state_entries(HistoryReader(sfn_client, arn).new_events()))


def follow_run(
    sfn_client: Any,
    arn: str,
    on_entry: Callable[[StateEntry], None],
    *,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunView:
    """Report every state the execution enters until it finishes (or ``timeout_s`` passes); its last view.

    The status is read before the history, so the events of a finished execution are all reported before
    following stops. Stopping to follow never stops the execution: it goes on in the cloud.
    """
    reader = HistoryReader(sfn_client, arn)
    entries: list[StateEntry] = []
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        view = describe_run(sfn_client, arn)
        new_entries = state_entries(reader.new_events())
        for entry in new_entries:
            on_entry(entry)
        entries += new_entries
        if view.finished or (deadline is not None and clock() >= deadline):
            return with_entries(view, entries)
        sleep(poll_interval_s)


# ----------------------------------------------------------------------------------------- reports


def result_json_uri(output: dict[str, Any]) -> str | None:
    """Where result.json is: the execution output's ``result_json`` (the summary Render returns), or
    ``artifacts.result_json`` of an output that is result.json itself (a stack from before the summary)."""
    location = output.get("result_json")
    if not isinstance(location, str):
        artifacts = output.get("artifacts")
        location = artifacts.get("result_json") if isinstance(artifacts, dict) else None
    if not isinstance(location, str) or not location.startswith("s3://") or "/" not in location[5:]:
        return None
    return location


def reports_prefix(output: dict[str, Any]) -> str | None:
    """The s3:// folder of a run's report, from the execution output's pointer to result.json."""
    location = result_json_uri(output)
    return location.rsplit("/", 1)[0] + "/" if location is not None else None


def download_report(s3_client: Any, output: dict[str, Any], out: Path) -> list[Path]:
    """Download the run's report folder (report.md, report.html, charts, summary.parquet, result.json)."""
    prefix = reports_prefix(output)
    if prefix is None:
        raise ValueError("the execution output has no s3:// result_json to download from")
    out.mkdir(parents=True, exist_ok=True)
    return s3_objects.download_prefix(s3_client, prefix, out)


def read_result_document(s3_client: Any, output: dict[str, Any]) -> dict[str, Any] | None:
    """The run's whole result.json from S3, where the execution output points; None when it is not there."""
    location = result_json_uri(output)
    data = s3_objects.get_bytes(s3_client, location) if location is not None else None
    document = _output_document(data.decode("utf-8")) if data is not None else None
    return document
