"""Step Functions' limits the workflow stays within: 256 KiB of state data, 25,000 history events.

Both are hard limits of a Standard execution: a state whose input or output is larger fails the execution
(States.DataLimitExceeded), and an execution whose history would exceed 25,000 events fails. Neither can be
raised, so the plan refuses a suite that could reach them (``execution_limit_problems``) before anything is
created, and every message that grows with the suite is kept bounded: a branch's result in the Map carries
its error cut to ``MAX_ERROR_CAUSE_BYTES`` (the whole error is in S3), and the execution's output is a
summary (``report.execution_output``).

The history bound counts, per state, the events Step Functions records for one visit (docs/workflow.md,
"Limits"): Pass, Choice, Wait and Succeed enter and exit (2); a Task also schedules, starts and ends each
attempt (3 more per attempt, 4 for a ``.sync`` job, which is also submitted), and every retry its Retry
fields allow is counted as an attempt; an inline Map adds 2 per iteration. ``BRANCH_STATES`` lists the
states of one branch with those counts; tests/infra checks it against the synthesized definition and the
workflow tier against the history moto records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from fmbench.config import SuiteProblem

MAX_STATE_PAYLOAD_BYTES: Final = 256 * 1024
MAX_HISTORY_EVENTS: Final = 25_000
# Room for what this module does not model: a state's keys beside the measured documents.
PAYLOAD_MARGIN_BYTES: Final = 8 * 1024
# A branch's error in the Map's results: enough for the reason a reader needs, small enough that every
# branch of the largest suite the plan accepts may fail (docs/workflow.md, "Limits").
MAX_ERROR_CAUSE_BYTES: Final = 700
MAX_ERROR_NAME_BYTES: Final = 256
# The message of a failing Teardown: Lambda wraps it with its type, request id and a one-frame trace into a
# Cause that stays within MAX_ERROR_CAUSE_BYTES (TeardownFailed puts that Cause into the Map's results).
MAX_TEARDOWN_MESSAGE_BYTES: Final = 200
# Step Functions' own bound on an error name.
_CUT_MARKER: Final = " [cut: {size} bytes in all]"

# Events of one visit of a state, by kind (without retries): enter + exit, and per Task attempt
# scheduled + started + succeeded/failed (+ submitted for a .sync job).
STATE_EVENTS: Final = 2
TASK_ATTEMPT_EVENTS: Final = 3
SYNC_TASK_ATTEMPT_EVENTS: Final = 4
MAP_ITERATION_EVENTS: Final = 2
# Execution started and ended, the Map state's entered/started/succeeded/exited, and every state outside
# the Map (Plan, Query, Render and what follows them) with all its retries: an allowance, checked against
# the synthesized definition by tests/infra, so that a state or two added there needs no change here.
OUTSIDE_MAP_EVENTS: Final = 400

Visits = Literal["once", "per_poll"]


def task_events(*, retries: int, sync: bool = False) -> int:
    """Events of one visit of a Task that may be attempted ``1 + retries`` times."""
    per_attempt = SYNC_TASK_ATTEMPT_EVENTS if sync else TASK_ATTEMPT_EVENTS
    return STATE_EVENTS + per_attempt * (1 + retries)


def asl_state_events(state: Mapping[str, Any]) -> int:
    """Upper bound of the events one visit of an ASL state records, from its definition alone (Map and
    Parallel states without their iterations)."""
    kind = state["Type"]
    if kind == "Task":
        resource = str(state.get("Resource", ""))
        sync = resource.endswith(".sync") or resource.endswith(".waitForTaskToken")
        # A retrier without MaxAttempts retries 3 times (the ASL default).
        retries = sum(int(retrier.get("MaxAttempts", 3)) for retrier in state.get("Retry", []))
        return task_events(retries=retries, sync=sync)
    if kind in ("Map", "Parallel"):
        return 2 * STATE_EVENTS
    return STATE_EVENTS


@dataclass(frozen=True, slots=True)
class BranchState:
    name: str
    events_per_visit: int
    visits: Visits
    deploy_only: bool = False


# The states of one branch (infra/workflow.py `_branch`), each with its events per visit. Of the states that
# end a path only the largest counts (`ENDINGS`), as a branch takes exactly one of them.
_LAMBDA_RETRIES: Final = 5  # LAMBDA_TRANSIENT_ERRORS: 5 attempts
BRANCH_STATES: Final = (
    BranchState("NeedsDeploy", STATE_EVENTS, "once"),
    BranchState("Deploy", task_events(retries=_LAMBDA_RETRIES), "once", deploy_only=True),
    BranchState("WaitForEndpoint", STATE_EVENTS, "per_poll", deploy_only=True),
    BranchState("EndpointStatus", task_events(retries=_LAMBDA_RETRIES), "per_poll", deploy_only=True),
    BranchState("CountStatusPoll", STATE_EVENTS, "per_poll", deploy_only=True),
    BranchState("EndpointReady", STATE_EVENTS, "per_poll", deploy_only=True),
    # RunLoad, or EndpointFailed / EndpointTimedOut (2 events) in its stead: RunLoad is the larger.
    BranchState("RunLoad", task_events(retries=5, sync=True), "once"),
    # Lambda service errors (5), EndpointBusyError (30 = every minute for 30 minutes), any other error (3).
    BranchState("Teardown", task_events(retries=_LAMBDA_RETRIES + 30 + 3), "once"),
    BranchState("BranchResult", STATE_EVENTS, "once"),
    # BranchSucceeded, BranchFailed or TeardownFailed.
    BranchState("BranchEnd", STATE_EVENTS, "once"),
)
ENDINGS: Final = {
    "RunLoad": ("RunLoad", "EndpointFailed", "EndpointTimedOut"),
    "BranchEnd": ("BranchSucceeded", "BranchFailed", "TeardownFailed"),
}


def branch_history_events(*, deploys: bool, max_status_polls: int) -> int:
    """Upper bound of the history events of one branch, its Map iteration's own events included."""
    total = MAP_ITERATION_EVENTS
    for state in BRANCH_STATES:
        if state.deploy_only and not deploys:
            continue
        visits = max_status_polls if state.visits == "per_poll" else 1
        total += state.events_per_visit * visits
    return total


def history_events_bound(*, deployed_branches: int, other_branches: int, max_status_polls: int) -> int:
    """Upper bound of an execution's history events for these branches."""
    return (
        OUTSIDE_MAP_EVENTS
        + deployed_branches * branch_history_events(deploys=True, max_status_polls=max_status_polls)
        + other_branches * branch_history_events(deploys=False, max_status_polls=max_status_polls)
    )


def max_deployed_branches(max_status_polls: int) -> int:
    """How many deployed branches (and nothing else) one execution holds."""
    per_branch = branch_history_events(deploys=True, max_status_polls=max_status_polls)
    return (MAX_HISTORY_EVENTS - OUTSIDE_MAP_EVENTS) // per_branch


# ------------------------------------------------------------------------------------------- payloads


def json_size(document: Any) -> int:
    """Bytes of the document as JSON with non-ASCII escaped: at least its UTF-8 size, which AWS counts."""
    return len(json.dumps(document, separators=(",", ":")).encode())


def bounded_text(text: str, max_bytes: int) -> str:
    """The text, or its longest head that, with a note of the whole size, is at most ``max_bytes`` as JSON."""
    size = json_size(text) - 2
    if size <= max_bytes:
        return text
    marker = _CUT_MARKER.format(size=size)
    budget = max_bytes - (json_size(marker) - 2)
    low, high = 0, min(len(text), budget)
    while low < high:  # the longest prefix within budget (sizes grow with the prefix)
        middle = (low + high + 1) // 2
        if json_size(text[:middle]) - 2 <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low] + marker


def error_cause_text(cause: Any) -> str | None:
    """A Catch's Cause as a reader wants it: a Lambda's errorMessage unwrapped from its JSON."""
    if cause is None:
        return None
    if not isinstance(cause, str):
        return json.dumps(cause)
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        return str(parsed["errorMessage"])
    return cause


def bounded_error(error: Mapping[str, Any]) -> dict[str, str | None]:
    """A Catch's error ({"Error", "Cause"}) with its name and cause cut to a bounded size."""
    name = str(error.get("Error") or "error")
    cause = error_cause_text(error.get("Cause"))
    return {
        "Error": bounded_text(name, MAX_ERROR_NAME_BYTES),
        "Cause": bounded_text(cause, MAX_ERROR_CAUSE_BYTES) if cause is not None else None,
    }


def max_branch_result_bytes(branch_id_bytes: int = 64) -> int:
    """The largest item a branch leaves in the Map's results (BranchFailed with a bounded error)."""
    item = {
        "branch_id": "b" * branch_id_bytes,
        "status": "succeeded",
        "error": {"Error": "e" * MAX_ERROR_NAME_BYTES, "Cause": "c" * MAX_ERROR_CAUSE_BYTES},
    }
    return json_size(item) + 1  # the comma between items


# ---------------------------------------------------------------------------------------------- plan


def execution_limit_problems(
    *, deployed_branches: int, other_branches: int, max_status_polls: int, plan_state_bytes: int
) -> list[SuiteProblem]:
    """Why one execution could not hold these branches, at ``targets`` (empty when it can).

    ``plan_state_bytes`` is the state data the Plan leaves (its output under ``plan``): the Map adds one
    result per branch to it, and Query and Render read it whole.
    """
    problems = []
    branches = deployed_branches + other_branches
    events = history_events_bound(
        deployed_branches=deployed_branches, other_branches=other_branches, max_status_polls=max_status_polls
    )
    if events > MAX_HISTORY_EVENTS:
        per_deployed = branch_history_events(deploys=True, max_status_polls=max_status_polls)
        per_other = branch_history_events(deploys=False, max_status_polls=max_status_polls)
        problems.append(
            SuiteProblem(
                path="targets",
                reason=f"{branches} branches ({deployed_branches} deploying an endpoint, polled up to "
                f"{max_status_polls} times) may write up to {events:,} history events ({per_deployed:,} per "
                f"deployed branch, {per_other:,} per other branch, {OUTSIDE_MAP_EVENTS} around the Map), and "
                f"one Step Functions execution holds {MAX_HISTORY_EVENTS:,}: split the targets over several "
                f"suites (at most {max_deployed_branches(max_status_polls)} deployed branches each at "
                f"{max_status_polls} polls), or lower fmbench:maxDeployMinutes or raise "
                "fmbench:statusPollSeconds in cdk.json for fewer status polls per branch",
            )
        )
    state_bytes = plan_state_bytes + branches * max_branch_result_bytes() + PAYLOAD_MARGIN_BYTES
    if state_bytes > MAX_STATE_PAYLOAD_BYTES:
        problems.append(
            SuiteProblem(
                path="targets",
                reason=f"{branches} branches make the workflow's state data up to {state_bytes:,} bytes "
                f"(the plan's {plan_state_bytes:,} and up to {max_branch_result_bytes():,} per branch "
                f"result), and Step Functions allows {MAX_STATE_PAYLOAD_BYTES:,} per state: split the "
                "targets over several suites",
            )
        )
    return problems
