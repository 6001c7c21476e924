"""Deleting what runs left behind, found by their tags: after an execution ends, and on a schedule.

The state machine's Teardown covers every branch that reaches it, but three things skip it: stopping an
execution, an execution's timeout (neither runs a Catch) and a Teardown that failed after its retries.
``cleanup_run`` (on the execution's status-change event) and ``sweep`` (scheduled) close that gap. Both
only ever touch resources this product created: named ``fmb-...`` *and* tagged ``fmbench:run-id``, so a
user's own endpoints, untagged or otherwise named, are never candidates. SageMaker's ``ListTags`` is the
source of the tags rather than the Resource Groups Tagging API, whose index may still list a resource
for a while after it was deleted (and which moto does not fill for SageMaker).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from botocore.exceptions import ClientError
from pydantic import Field

from fmbench.cloud.aws import error_code
from fmbench.cloud.ec2 import Ec2Resource, delete_ec2_resources, product_ec2_resources
from fmbench.cloud.events import PLAN_STATE_NAME, RUN_ID_PATTERN, EventModel, ResultModel
from fmbench.cloud.sagemaker import delete_endpoint, delete_endpoint_config, delete_model, is_not_found
from fmbench.deployment import (
    ENDED_STATUSES,
    NAME_PREFIX,
    TAG_EXPIRES_AT,
    TAG_RUN_ID,
    EndpointBusyError,
    parse_expires_at,
)

logger = logging.getLogger(__name__)

ResourceKind = Literal["endpoint", "endpoint-config", "model"]
# Deletion order: an endpoint before the config it runs on, a config before the model it names.
KINDS: Final[tuple[ResourceKind, ...]] = ("endpoint", "endpoint-config", "model")
_LISTINGS: Final = {
    "endpoint": ("list_endpoints", "Endpoints", "EndpointName", "EndpointArn"),
    "endpoint-config": (
        "list_endpoint_configs",
        "EndpointConfigs",
        "EndpointConfigName",
        "EndpointConfigArn",
    ),
    "model": ("list_models", "Models", "ModelName", "ModelArn"),
}
RUNNING: Final = "RUNNING"
_ACCESS_DENIED_CODES: Final = frozenset({"AccessDenied", "AccessDeniedException"})
# Resources per listing page (SageMaker's maximum); a module variable so a test can force many pages.
LIST_PAGE_SIZE = 100

# (service, region) -> a boto3 client; see fmbench.cloud.aws.client
ClientFactory = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class TaggedResource:
    """A model, endpoint config or endpoint of this product, with the tags that say whose it is."""

    kind: ResourceKind
    name: str
    arn: str
    created_epoch_s: float | None
    tags: dict[str, str]

    @property
    def run_id(self) -> str:
        return self.tags[TAG_RUN_ID]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(slots=True)
class DeletionResult:
    deleted: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


def _tags(sm_client: Any, arn: str) -> dict[str, str] | None:
    """The resource's tags; None when it was deleted since it was listed."""
    tags: dict[str, str] = {}
    try:
        for page in sm_client.get_paginator("list_tags").paginate(ResourceArn=arn):
            tags.update((tag["Key"], tag["Value"]) for tag in page.get("Tags", []))
    except ClientError as exc:
        if is_not_found(exc) or error_code(exc) == "ResourceNotFound":
            return None
        raise
    return tags


_DESCRIBERS: Final = {
    "endpoint": ("describe_endpoint", "EndpointName"),
    "endpoint-config": ("describe_endpoint_config", "EndpointConfigName"),
    "model": ("describe_model", "ModelName"),
}


def _exists(sm_client: Any, resource: TaggedResource) -> bool:
    operation, key = _DESCRIBERS[resource.kind]
    try:
        getattr(sm_client, operation)(**{key: resource.name})
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def product_resources(sm_client: Any) -> Iterator[TaggedResource]:
    """Endpoints, then endpoint configs, then models named ``fmb-...`` that carry ``fmbench:run-id``.

    ``NameContains`` narrows the listing where SageMaker supports it; the prefix is checked again here
    because it matches anywhere in a name.
    """
    for kind in KINDS:
        operation, key, name_key, arn_key = _LISTINGS[kind]
        pages = sm_client.get_paginator(operation).paginate(
            NameContains=NAME_PREFIX, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for page in pages:
            for summary in page.get(key, []):
                name = str(summary[name_key])
                if not name.startswith(NAME_PREFIX):
                    continue
                tags = _tags(sm_client, str(summary[arn_key]))
                if tags is None or TAG_RUN_ID not in tags:
                    continue
                created = summary.get("CreationTime")
                yield TaggedResource(
                    kind=kind,
                    name=name,
                    arn=str(summary[arn_key]),
                    created_epoch_s=created.timestamp() if isinstance(created, datetime) else None,
                    tags=tags,
                )


def delete_resources(sm_client: Any, resources: list[TaggedResource]) -> DeletionResult:
    """Delete in order (endpoints, configs, models); not-found counts as done.

    An endpoint SageMaker will not delete yet (still Creating) is reported as busy, and the config and
    model of the same name are kept for it, so that a later attempt finds the branch as it was.
    """
    result = DeletionResult()
    busy_names: set[str] = set()
    deleters: dict[ResourceKind, Callable[[Any, str], bool]] = {
        "endpoint": delete_endpoint,
        "endpoint-config": delete_endpoint_config,
        "model": delete_model,
    }
    for kind in KINDS:
        for resource in (r for r in resources if r.kind == kind):
            if kind != "endpoint" and resource.name in busy_names:
                result.busy.append(resource.label)
                continue
            try:
                if deleters[kind](sm_client, resource.name):
                    result.deleted.append(resource.label)
            except EndpointBusyError as exc:
                logger.warning("%s", exc)
                busy_names.add(resource.name)
                result.busy.append(resource.label)
            except ClientError as exc:
                # The delete permission requires the run-id tag, so a resource deleted since it was listed
                # (by a Teardown, or the other cleanup) answers "access denied", not "not found".
                if error_code(exc) not in _ACCESS_DENIED_CODES or _exists(sm_client, resource):
                    raise
    return result


def cleanup_run(sm_client: Any, run_id: str, ec2_client: Any = None) -> DeletionResult:
    """Delete every endpoint, endpoint config and model tagged with ``run_id``, and with ``ec2_client`` every
    instance and security group of the run (docs/ec2.md); idempotent."""
    resources = [resource for resource in product_resources(sm_client) if resource.run_id == run_id]
    result = delete_resources(sm_client, resources)
    if ec2_client is not None:
        ended, busy = delete_ec2_resources(
            ec2_client, [r for r in product_ec2_resources(ec2_client) if r.run_id == run_id]
        )
        result.deleted += ended
        result.busy += busy
    return result


# ------------------------------------------------------------------------------------ executions


@dataclass(frozen=True, slots=True)
class ExecutionRun:
    """What an execution planned, from its Plan state's output: the run id and where it deploys."""

    run_id: str
    regions: tuple[str, ...]
    report_only: bool


def _plan_output(event: dict[str, Any]) -> dict[str, Any] | None:
    details = event.get("stateExitedEventDetails")
    if not isinstance(details, dict) or details.get("name") != PLAN_STATE_NAME:
        return None
    try:
        output = json.loads(details.get("output") or "null")
    except ValueError:
        return None
    if isinstance(output, dict) and isinstance(output.get("plan"), dict):
        output = output["plan"]  # the Plan state keeps the handler's result under $.plan
    return output if isinstance(output, dict) and isinstance(output.get("run_id"), str) else None


def execution_run(sfn_client: Any, execution_arn: str) -> ExecutionRun | None:
    """The run an execution planned, or None when its Plan state never finished (nothing was deployed).

    The Plan state's exit is among the first events, so the history is read from the start and no further.
    """
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn_client.get_execution_history(**kwargs)
        for event in page.get("events", []):
            output = _plan_output(event)
            if output is not None:
                branches = [b for b in output.get("branches", []) if isinstance(b, dict)]
                regions = sorted(
                    {str(b["region"]) for b in branches if b.get("needs_deploy") and b.get("region")}
                )
                return ExecutionRun(
                    run_id=output["run_id"],
                    regions=tuple(regions),
                    report_only=bool(output.get("report_only")),
                )
        token = page.get("nextToken")
        if not token:
            return None
        kwargs["nextToken"] = token


class ExecutionStatusDetail(EventModel):
    execution_arn: str = Field(alias="executionArn")
    state_machine_arn: str = Field(alias="stateMachineArn")
    name: str
    status: str


class ExecutionStatusEvent(EventModel):
    """EventBridge's "Step Functions Execution Status Change" event (only the fields read here)."""

    detail: ExecutionStatusDetail


class CleanupOutput(ResultModel):
    run_id: str | None
    status: str
    regions: list[str]
    deleted: list[str]
    busy: list[str]
    skipped: str | None = Field(default=None, description="Why nothing was looked for.")


def cleanup_after_execution(
    event: ExecutionStatusEvent, default_region: str, client_factory: ClientFactory
) -> CleanupOutput:
    """Delete what an ended execution's run left, in every region its plan deploys to.

    The run id is the Plan state's (the execution name, or one the plan generated when the name is no run
    id); a report-only execution deploys nothing and is left alone. When the Plan never finished, nothing
    was deployed, but a name that is a run id is cleaned anyway: it costs a listing.
    """
    detail = event.detail
    if detail.status not in ENDED_STATUSES:
        return CleanupOutput(
            run_id=None, status=detail.status, regions=[], deleted=[], busy=[], skipped="execution not ended"
        )
    planned = execution_run(client_factory("stepfunctions", default_region), detail.execution_arn)
    if planned is not None and planned.report_only:
        return CleanupOutput(
            run_id=planned.run_id,
            status=detail.status,
            regions=[],
            deleted=[],
            busy=[],
            skipped="report-only execution: it deploys nothing",
        )
    run_id = planned.run_id if planned is not None else detail.name
    if not RUN_ID_PATTERN.match(run_id):
        return CleanupOutput(
            run_id=None, status=detail.status, regions=[], deleted=[], busy=[], skipped="no run was planned"
        )
    regions = sorted({default_region, *(planned.regions if planned is not None else ())})
    result = DeletionResult()
    for region in regions:
        found = cleanup_run(client_factory("sagemaker", region), run_id, client_factory("ec2", region))
        result.deleted += found.deleted
        result.busy += found.busy
    logger.info(
        "execution %s %s: run %s, deleted %s%s",
        detail.name,
        detail.status,
        run_id,
        ", ".join(result.deleted) or "nothing",
        f"; busy {', '.join(result.busy)}" if result.busy else "",
    )
    return CleanupOutput(
        run_id=run_id, status=detail.status, regions=regions, deleted=result.deleted, busy=result.busy
    )


# -------------------------------------------------------------------------------------------- sweep


def execution_arn_for(state_machine_arn: str, execution_name: str) -> str:
    """arn:...:stateMachine:NAME -> arn:...:execution:NAME:EXECUTION (the ARN format Step Functions uses)."""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{execution_name}"


def running_run_ids(sfn_client: Any, state_machine_arn: str) -> set[str]:
    """Run ids of the state machine's running executions (a generated one read from the Plan's output)."""
    run_ids: set[str] = set()
    pages = sfn_client.get_paginator("list_executions").paginate(
        stateMachineArn=state_machine_arn, statusFilter=RUNNING
    )
    for page in pages:
        for execution in page.get("executions", []):
            planned = execution_run(sfn_client, execution["executionArn"])
            if planned is not None:
                if not planned.report_only:  # it re-renders another run's report and deploys nothing
                    run_ids.add(planned.run_id)
            elif RUN_ID_PATTERN.match(execution["name"]):
                run_ids.add(execution["name"])
    return run_ids


def _execution_status(sfn_client: Any, state_machine_arn: str, run_id: str) -> str | None:
    """The status of the execution named ``run_id``; None when this state machine has none of that name."""
    try:
        described = sfn_client.describe_execution(executionArn=execution_arn_for(state_machine_arn, run_id))
    except ClientError as exc:
        if error_code(exc) in ("ExecutionDoesNotExist", "InvalidArn"):
            return None
        raise
    return str(described["status"])


class SweepDecision(ResultModel):
    resource: str
    run_id: str
    reason: Literal["expired", "run ended"]


class SweepOutput(ResultModel):
    deleted: list[str]
    busy: list[str]
    kept: int = Field(
        description="Product resources left alone: their run goes on and they have not expired."
    )
    decisions: list[SweepDecision]


def sweep(
    sm_client: Any,
    sfn_client: Any,
    state_machine_arn: str,
    now: datetime,
    default_ttl_s: float,
    ec2_client: Any = None,
) -> SweepOutput:
    """Delete every product resource whose run has ended or whose time-to-live has passed.

    A resource expires at its ``fmbench:expires-at`` tag (else ``default_ttl_s`` after its creation), run
    or no run. Otherwise it goes when the execution of its run id has ended; a run id this state machine
    has no execution of (another stack's run) is left to its time-to-live. Resources are listed before
    the running executions, so an execution that starts in between cannot have created any of them.
    """
    resources: list[TaggedResource | Ec2Resource] = list(product_resources(sm_client))
    if ec2_client is not None:
        resources += product_ec2_resources(ec2_client)
    live = running_run_ids(sfn_client, state_machine_arn) if resources else set()
    now_epoch_s = now.timestamp()
    statuses: dict[str, str | None] = {}
    doomed: list[TaggedResource | Ec2Resource] = []
    decisions: list[SweepDecision] = []
    for resource in resources:
        expires_epoch_s = parse_expires_at(resource.tags.get(TAG_EXPIRES_AT, ""))
        if expires_epoch_s is None and resource.created_epoch_s is not None:
            expires_epoch_s = resource.created_epoch_s + default_ttl_s
        reason: Literal["expired", "run ended"] | None = None
        if expires_epoch_s is not None and expires_epoch_s <= now_epoch_s:
            reason = "expired"
        elif resource.run_id not in live:
            if resource.run_id not in statuses:
                statuses[resource.run_id] = _execution_status(sfn_client, state_machine_arn, resource.run_id)
            status = statuses[resource.run_id]
            if status is not None and status != RUNNING:
                reason = "run ended"
        if reason is not None:
            doomed.append(resource)
            decisions.append(SweepDecision(resource=resource.label, run_id=resource.run_id, reason=reason))
    result = delete_resources(sm_client, [r for r in doomed if isinstance(r, TaggedResource)])
    ec2_doomed = [r for r in doomed if isinstance(r, Ec2Resource)]
    if ec2_doomed:
        ended, busy = delete_ec2_resources(ec2_client, ec2_doomed)
        result.deleted += ended
        result.busy += busy
    for decision in decisions:
        logger.info("sweep: %s of run %s: %s", decision.resource, decision.run_id, decision.reason)
    return SweepOutput(
        deleted=result.deleted,
        busy=result.busy,
        kept=len(resources) - len(doomed),
        decisions=decisions,
    )
