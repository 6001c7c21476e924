"""The cloud workflow's steps (docs/workflow.md): the events and results they exchange, and what they do.

The Lambda handlers in ``lambdas/`` parse an event into one of these models, call one function here (or in
``report.cloud``) and return the result model as JSON. Event models ignore keys they do not read: Step
Functions hands a state its accumulated input (a branch item plus earlier results, ``$.error`` from a
Catch), and a handler must not fail on what another state added.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from itertools import product
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench.cloud import s3 as s3_objects
from fmbench.cloud.quotas import ClientFactory, check_endpoint_quotas, instances_needed_at_once
from fmbench.cloud.sagemaker import (
    deploy,
    endpoint_status,
    plan_deployment,
    resolve_image_uri,
    secrets_manager_reader,
    teardown,
)
from fmbench.cloud.settings import DeploySettings, PlanSettings, StatusSettings, TeardownSettings
from fmbench.config import (
    BUILTIN_DATASET_PREFIX,
    StrictModel,
    Suite,
    SuiteProblem,
    SuiteValidationError,
    problems_from_validation_error,
)
from fmbench.deployment import (
    FAILED,
    IN_SERVICE,
    MAX_STATUS_POLLS,
    ServingContainerError,
    parse_container,
    payload_format_problem,
    secret_reference_problems,
    secret_references,
)
from fmbench.estimate import check_budget, endpoint_ttl_problems, estimate_branches
from fmbench.plan import RunPlan, new_run_id, plan_suite, run_plan_uri
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

logger = logging.getLogger(__name__)

RUN_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EXECUTION_INPUT_SOURCE: Final = "execution input"
# The state whose output carries the run id (docs/workflow.md); the cleanup reads it from the history.
PLAN_STATE_NAME: Final = "Plan"
# The execution input that re-renders a finished run's report instead of running a suite.
REPORT_ONLY_KEY: Final = "report_only"

MetricsQueryBuilder = Callable[[str, list[str]], str]


# ------------------------------------------------------------------------------------ storage layout


def _run_folder(storage_root: str, kind: str, run_id: str) -> str:
    return f"{storage_root.rstrip('/')}/{kind}/run_id={run_id}"


def plan_uri(storage_root: str, run_id: str) -> str:
    """The whole plan (suite and every branch spec), for the render step."""
    return run_plan_uri(storage_root, run_id)


def spec_uri(storage_root: str, run_id: str, branch_id: str) -> str:
    """One branch's spec, what the runner reads (FMBENCH_BRANCH_SPEC_URI)."""
    return f"{_run_folder(storage_root, 'specs', run_id)}/branch_id={branch_id}.json"


def deployment_record_uri(storage_root: str, run_id: str, branch_id: str) -> str:
    """Beside the runner's outcome.json: how long the branch's endpoint took to come into service."""
    return f"{_run_folder(storage_root, 'outcomes', run_id)}/branch_id={branch_id}/deployment.json"


def teardown_record_uri(storage_root: str, run_id: str, branch_id: str) -> str:
    """Beside deployment.json: when Teardown deleted the endpoint, for the run's actual cost."""
    return f"{_run_folder(storage_root, 'outcomes', run_id)}/branch_id={branch_id}/teardown.json"


def branch_results_uri(storage_root: str, run_id: str) -> str:
    """The Map's results as Render received them, so a report-only re-render keeps each branch's reason."""
    return f"{_run_folder(storage_root, 'outcomes', run_id)}/branch_results.json"


def reports_uri(storage_root: str, run_id: str) -> str:
    return _run_folder(storage_root, "reports", run_id) + "/"


def records_uri(storage_root: str, run_id: str) -> str:
    return _run_folder(storage_root, "records", run_id) + "/"


# ------------------------------------------------------------------------------------ event models


class EventModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ResultModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanEvent(EventModel):
    suite: Any = Field(
        description='The execution input: a suite as JSON, or {"report_only": {"run_id": ...}} to render '
        "the report of a run again."
    )
    execution_name: str | None = Field(default=None, description="$$.Execution.Name")


class ReportOnlyRequest(StrictModel):
    """Render an earlier run's report again from its records, plan and outcomes; nothing is deployed."""

    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)


class BranchItem(EventModel):
    """One item of the Map: what every per-branch state receives."""

    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)
    branch_id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    spec_uri: str
    platform: str
    needs_deploy: bool
    endpoint_name: str | None
    region: str | None = Field(
        default=None, description="Region of the branch's endpoint when it is not the workflow's own."
    )
    max_status_polls: int = Field(ge=0)

    def endpoint_region(self, default: str) -> str:
        return self.region or default


class PlanResult(ResultModel):
    run_id: str
    suite_name: str
    storage_root: str
    max_concurrency: int = Field(ge=1)
    metrics_query: str
    branches: list[BranchItem] = Field(description="The Map's items; empty for a report-only execution.")
    report_only: bool = Field(
        default=False, description="Render the saved run again: the Map has no items, Query and Render run."
    )
    report_branches: list[BranchItem] = Field(
        default_factory=list, description="Report-only: the saved plan's branches (the Map runs none)."
    )
    cost_estimate_usd: float | None = Field(
        default=None, description="Upper bound of the run's cost (details in plan.json and result.json)."
    )
    quota_check: list[str] = Field(
        default_factory=list, description="Per instance type and region: instances at once vs quota."
    )


class DeployOutput(ResultModel):
    endpoint_name: str
    created_epoch_s: float


class StatusOutput(ResultModel):
    status: Literal["Creating", "InService", "Failed"]
    failure_reason: str | None
    sagemaker_status: str | None = Field(description="SageMaker's own status, for the execution history.")
    in_service_epoch_s: float | None


class TeardownEvent(BranchItem):
    error: dict[str, Any] | None = Field(default=None, description="$.error when Teardown came from a Catch.")


class TeardownOutput(ResultModel):
    deleted: list[str]


class TeardownRecord(StrictModel):
    """When a branch's endpoint was created and when Teardown deleted it (result.json: actual cost)."""

    run_id: str
    branch_id: str
    endpoint_name: str
    created_epoch_s: float
    deleted_epoch_s: float


class BranchResultItem(EventModel):
    """What the Map leaves per branch (the BranchResult Pass state)."""

    branch_id: str
    status: Literal["succeeded", "failed"]
    error: dict[str, Any] | None = None

    def error_reason(self) -> str | None:
        """'Error: cause' of the Catch that ended the branch, with a Lambda's errorMessage unwrapped."""
        if not self.error:
            return None
        name = str(self.error.get("Error") or "error")
        cause = self.error.get("Cause")
        if isinstance(cause, str):
            try:
                parsed = json.loads(cause)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("errorMessage"):
                cause = str(parsed["errorMessage"])
        return f"{name}: {cause}" if cause else name


class RenderEvent(EventModel):
    run_id: str = Field(pattern=RUN_ID_PATTERN.pattern)
    query_execution_id: str = Field(min_length=1)
    branch_results: list[BranchResultItem] = Field(default_factory=list)


class DeploymentRecord(StrictModel):
    """When a deployed endpoint was created and when it came into service (result.json: deployment_s)."""

    run_id: str
    branch_id: str
    endpoint_name: str
    created_epoch_s: float
    in_service_epoch_s: float

    @property
    def deployment_s(self) -> float:
        return max(0.0, self.in_service_epoch_s - self.created_epoch_s)


# ------------------------------------------------------------------------------------------ checks


def _target_locations(suite: Suite) -> list[tuple[str, frozenset[str]]]:
    """For each expanded target (same order): where it is written and which fields the matrix varies."""
    locations = [(f"targets.{index}", frozenset[str]()) for index in range(len(suite.targets))]
    for index, spec in enumerate(suite.matrix):
        combinations = len(list(product(*spec.vary.values())))
        locations += [(f"matrix.{index}", frozenset(spec.vary))] * combinations
    return locations


def _field_path(location: tuple[str, frozenset[str]], field: str) -> str:
    prefix, varied = location
    if not prefix.startswith("matrix."):
        return f"{prefix}.{field}"
    top = field.split(".", 1)[0]
    return f"{prefix}.vary.{field}" if top in varied else f"{prefix}.base.{field}"


def _deploy_target_problems(target: Any, region: str, resolve_images: bool) -> list[tuple[str, str]]:
    """(field, reason) for each way a target to deploy would fail once its endpoint is being paid for."""
    problems = [
        (f"environment.{name}", reason)
        for name, reason in secret_reference_problems(target.environment).items()
    ]
    if target.container and not target.image_uri:
        try:
            parse_container(target.container)
        except ServingContainerError as exc:
            return [*problems, (exc.field, exc.reason)]
    format_problem = payload_format_problem(target)
    if format_problem:
        problems.append(("payload_format", format_problem))
    if resolve_images:
        try:
            resolve_image_uri(target, target.region or region)
        except ServingContainerError as exc:
            problems.append((exc.field, exc.reason))
    return problems


def cloud_suite_problems(suite: Suite, region: str, *, resolve_images: bool = True) -> list[SuiteProblem]:
    """What keeps a valid suite from running in the cloud, found before anything is created.

    Container names, payload formats and secret references are checked offline; ``resolve_images`` also
    resolves every image in its region (the SageMaker SDK's tables), catching a version that does not exist.
    """
    problems: list[SuiteProblem] = []
    if not suite.workload.dataset.source.startswith(BUILTIN_DATASET_PREFIX):
        problems.append(
            SuiteProblem(
                path="workload.dataset.source",
                reason="the cloud runner reads built-in datasets only (builtin:NAME); a local file is not "
                "uploaded with the suite",
            )
        )
    for target, location in zip(suite.expanded_targets(), _target_locations(suite), strict=False):
        if not target.needs_deploy:
            continue
        note = f" (target {target.name})" if location[0].startswith("matrix.") else ""
        problems += [
            SuiteProblem(path=_field_path(location, field), reason=reason + note)
            for field, reason in _deploy_target_problems(target, region, resolve_images)
        ]
    return problems


def validate_cloud_suite(data: Any, region: str, *, resolve_images: bool = True) -> Suite:
    """The suite of an execution input, or ``SuiteValidationError`` listing every problem."""
    suite = validate_suite_data(data, base_dir=None, source=EXECUTION_INPUT_SOURCE)
    problems = cloud_suite_problems(suite, region, resolve_images=resolve_images)
    if problems:
        raise SuiteValidationError(problems, EXECUTION_INPUT_SOURCE)
    return suite


# ------------------------------------------------------------------------------------------- steps


def run_id_for(execution_name: str | None) -> str:
    if execution_name and RUN_ID_PATTERN.match(execution_name):
        return execution_name
    return new_run_id()


def branch_item(spec: BranchSpec, uri: str, max_status_polls: int = MAX_STATUS_POLLS) -> BranchItem:
    target = spec.target
    endpoint_name = spec.sagemaker_endpoint_name
    if target.platform == "sagemaker" and endpoint_name is None:
        endpoint_name = target.endpoint_name
    region = spec.sagemaker_deployment.region if spec.sagemaker_deployment is not None else None
    return BranchItem(
        run_id=spec.run_id,
        branch_id=spec.branch_id,
        spec_uri=uri,
        platform=target.platform,
        needs_deploy=target.needs_deploy,
        endpoint_name=endpoint_name,
        region=region,
        max_status_polls=max_status_polls,
    )


def _document(model: BaseModel) -> dict[str, Any]:
    """A spec or plan as JSON with only the fields that were given: some of the suite's checks flag a field
    that is present but does not apply (an open-loop option in a closed loop), so a dump with every default
    filled in would not validate again when the runner or the render step reads it."""
    return model.model_dump(mode="json", exclude_unset=True)


class RunPlanNotFoundError(LookupError):
    """The run's plan.json is not in S3: the run id is wrong, or the plan step never ran."""


def read_run_plan(s3_client: Any, storage_root: str, run_id: str) -> RunPlan:
    uri = plan_uri(storage_root, run_id)
    data = s3_objects.get_bytes(s3_client, uri)
    if data is None:
        raise RunPlanNotFoundError(f"no plan at {uri}")
    return RunPlan.model_validate_json(data)


def report_only_request(execution_input: Any) -> ReportOnlyRequest | None:
    """The report-only request of an execution input, None for a suite; a malformed one is a suite error."""
    if not isinstance(execution_input, dict) or REPORT_ONLY_KEY not in execution_input:
        return None
    problems = [
        SuiteProblem(
            path=key, reason=f"not allowed beside {REPORT_ONLY_KEY} (a report-only input has no suite)"
        )
        for key in execution_input
        if key != REPORT_ONLY_KEY
    ]
    request = None
    try:
        request = ReportOnlyRequest.model_validate(execution_input[REPORT_ONLY_KEY])
    except ValidationError as exc:
        problems += problems_from_validation_error(exc, prefix=REPORT_ONLY_KEY)
    if problems or request is None:
        raise SuiteValidationError(problems, EXECUTION_INPUT_SOURCE)
    return request


def plan_report_only(
    request: ReportOnlyRequest, settings: PlanSettings, s3_client: Any, metrics_query: MetricsQueryBuilder
) -> PlanResult:
    """A plan that runs no branch: Query and Render run again over the saved run's records and plan."""
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    plan = read_run_plan(s3_client, storage_root, request.run_id)
    polls = settings.max_status_polls(MAX_STATUS_POLLS)
    items = [branch_item(s, spec_uri(storage_root, plan.run_id, s.branch_id), polls) for s in plan.branches]
    logger.info("report-only run %s: %d branch(es) to report", plan.run_id, len(items))
    return PlanResult(
        run_id=plan.run_id,
        suite_name=plan.suite.name,
        storage_root=storage_root,
        max_concurrency=1,
        metrics_query=metrics_query(plan.run_id, [spec.branch_id for spec in plan.branches]),
        branches=[],
        report_only=True,
        report_branches=items,
        cost_estimate_usd=plan.cost_estimate.total_usd if plan.cost_estimate is not None else None,
    )


def plan_run(
    event: PlanEvent,
    settings: PlanSettings,
    s3_client: Any,
    metrics_query: MetricsQueryBuilder,
    client_factory: ClientFactory | None = None,
) -> PlanResult:
    """Validate, estimate, check budget and quotas, plan, write the specs; nothing is written (or deployed)
    when any check fails.

    ``metrics_query`` builds the Athena text for the run's branches (``report.query.athena_metrics_query``;
    passed in because fmbench does not import report). ``client_factory`` makes the Service Quotas client
    of each region a branch deploys to; without it the quota check is skipped. An execution input
    ``{"report_only": {"run_id": ...}}`` plans no branch and lets Query and Render run again.
    """
    request = report_only_request(event.suite)
    if request is not None:
        return plan_report_only(request, settings, s3_client, metrics_query)
    suite = validate_cloud_suite(event.suite, settings.region)
    run_id = run_id_for(event.execution_name)
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    plan = plan_suite(suite, storage_root=storage_root, run_id=run_id)
    ttl_s = suite.execution.endpoint_ttl_s
    specs = [
        spec.model_copy(update={"sagemaker_deployment": plan_deployment(spec.target, settings.region, ttl_s)})
        if spec.target.needs_deploy
        else spec
        for spec in plan.branches
    ]
    max_status_polls = settings.max_status_polls(MAX_STATUS_POLLS)
    estimate = estimate_branches(specs, settings.estimate_settings(max_status_polls))
    if settings.runner_timeout_s is not None:
        ttl_problems = endpoint_ttl_problems(estimate, ttl_s)
        if ttl_problems:
            raise SuiteValidationError(ttl_problems, EXECUTION_INPUT_SOURCE)
    check_budget(estimate, suite.budget)
    max_concurrency = min(suite.execution.max_parallel_branches, settings.max_concurrent_branches)
    quota_notes: list[str] = []
    if client_factory is not None:
        needs = instances_needed_at_once(specs, max_concurrency, settings.region)
        quota_notes = check_endpoint_quotas(needs, client_factory, max_concurrency)
    plan = RunPlan(run_id=run_id, suite=suite, branches=specs, cost_estimate=estimate)
    items = []
    for spec in specs:
        uri = spec_uri(storage_root, run_id, spec.branch_id)
        s3_objects.put_json(s3_client, uri, _document(spec))
        items.append(branch_item(spec, uri, max_status_polls))
    s3_objects.put_json(s3_client, plan_uri(storage_root, run_id), _document(plan))
    logger.info(
        "planned run %s: %d branch(es), cost at most $%.2f%s",
        run_id,
        len(items),
        estimate.total_usd,
        "" if estimate.complete else " plus parts of unknown price",
    )
    return PlanResult(
        run_id=run_id,
        suite_name=suite.name,
        storage_root=storage_root,
        max_concurrency=max_concurrency,
        metrics_query=metrics_query(run_id, [spec.branch_id for spec in specs]),
        branches=items,
        cost_estimate_usd=estimate.total_usd,
        quota_check=quota_notes,
    )


class BranchSpecNotFoundError(LookupError):
    """The spec a branch item points to is not in S3 (the plan did not write it, or it was deleted)."""


def read_spec(s3_client: Any, uri: str) -> BranchSpec:
    data = s3_objects.get_bytes(s3_client, uri)
    if data is None:
        raise BranchSpecNotFoundError(f"no branch spec at {uri}")
    return BranchSpec.model_validate_json(data)


def deploy_branch(
    item: BranchItem, settings: DeploySettings, s3_client: Any, client_factory: ClientFactory
) -> DeployOutput:
    """Create or find the branch's endpoint in its region; Secrets Manager is reached only when the spec
    refers to a secret."""
    spec = read_spec(s3_client, item.spec_uri)
    deployment = spec.sagemaker_deployment
    region = deployment.region if deployment is not None else item.endpoint_region(settings.region)
    read_secret = None
    if deployment is not None and secret_references(deployment.environment):
        read_secret = secrets_manager_reader(client_factory("secretsmanager", region))
    result = deploy(
        client_factory("sagemaker", region), spec, settings.sagemaker_role_arn, read_secret=read_secret
    )
    logger.info(
        "branch %s: endpoint %s (created %s, reused %s)",
        item.branch_id,
        result.endpoint_name,
        ", ".join(result.created) or "nothing",
        ", ".join(result.reused) or "nothing",
    )
    return DeployOutput(endpoint_name=result.endpoint_name, created_epoch_s=result.created_epoch_s)


def check_endpoint(
    item: BranchItem, settings: StatusSettings, sm_client: Any, s3_client: Any
) -> StatusOutput:
    """The endpoint's status; once in service, how long deployment took is recorded for the report."""
    if not item.endpoint_name:
        return StatusOutput(
            status=FAILED,
            failure_reason=f"branch {item.branch_id} has no endpoint to check",
            sagemaker_status=None,
            in_service_epoch_s=None,
        )
    state = endpoint_status(sm_client, item.endpoint_name)
    if (
        item.needs_deploy
        and state.status == IN_SERVICE
        and state.created_epoch_s is not None
        and state.in_service_epoch_s is not None
    ):
        record = DeploymentRecord(
            run_id=item.run_id,
            branch_id=item.branch_id,
            endpoint_name=item.endpoint_name,
            created_epoch_s=state.created_epoch_s,
            in_service_epoch_s=state.in_service_epoch_s,
        )
        root = s3_objects.s3_uri(settings.results_bucket)
        s3_objects.put_json(
            s3_client,
            deployment_record_uri(root, item.run_id, item.branch_id),
            record.model_dump(mode="json"),
        )
    return StatusOutput(
        status=state.status,
        failure_reason=state.failure_reason,
        sagemaker_status=state.sagemaker_status,
        in_service_epoch_s=state.in_service_epoch_s,
    )


def teardown_branch(
    event: TeardownEvent,
    sm_client: Any,
    settings: TeardownSettings | None = None,
    s3_client: Any = None,
    clock: Callable[[], float] = time.time,
) -> TeardownOutput:
    """Delete what the branch deployed; a branch that deployed nothing has nothing to delete.

    With a results bucket in ``settings``, the endpoint's creation time is read before it is deleted and
    ``teardown.json`` records both, from which Render counts the branch's instance seconds.
    """
    if not event.needs_deploy:
        return TeardownOutput(deleted=[])
    if event.error:
        logger.info("branch %s: tearing down after %s", event.branch_id, event.error.get("Error"))
    created_epoch_s = None
    record_to = settings.results_bucket if settings is not None and s3_client is not None else None
    if record_to and event.endpoint_name:
        created_epoch_s = endpoint_status(sm_client, event.endpoint_name).created_epoch_s
    deleted = teardown(sm_client, event.run_id, event.branch_id)
    deleted_epoch_s = clock()
    logger.info("branch %s: deleted %s", event.branch_id, ", ".join(deleted) or "nothing (already gone)")
    if (
        record_to
        and event.endpoint_name
        and created_epoch_s is not None
        and f"endpoint/{event.endpoint_name}" in deleted
    ):
        record = TeardownRecord(
            run_id=event.run_id,
            branch_id=event.branch_id,
            endpoint_name=event.endpoint_name,
            created_epoch_s=created_epoch_s,
            deleted_epoch_s=deleted_epoch_s,
        )
        s3_objects.put_json(
            s3_client,
            teardown_record_uri(s3_objects.s3_uri(record_to), event.run_id, event.branch_id),
            record.model_dump(mode="json"),
        )
    return TeardownOutput(deleted=deleted)
