"""The cloud workflow's steps (docs/workflow.md): plan a run (or a report-only re-render), deploy a branch's
endpoint, check it, tear it down. Each is called by one Lambda handler in ``lambdas/``; the messages they
exchange are in ``fmbench.cloud.events``, the paths they read and write in ``fmbench.layout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ValidationError

from fmbench import layout
from fmbench.cloud import s3 as s3_objects
from fmbench.cloud.aws import error_code
from fmbench.cloud.catalog import JUDGMENTS_TABLE, register_run_partitions
from fmbench.cloud.checks import (
    EXECUTION_INPUT_SOURCE,
    hub_token_reader,
    judge_endpoint_problems,
    judge_model_problems,
    validate_cloud_suite,
)
from fmbench.cloud.ec2 import (
    check_vcpu_quotas,
    instance_status,
    launch,
    terminate,
    vcpus_needed_at_once,
)
from fmbench.cloud.events import (
    REPORT_ONLY_KEY,
    RUN_ID_PATTERN,
    BranchItem,
    DeploymentRecord,
    DeployOutput,
    FailureRecord,
    PlanEvent,
    PlanResult,
    ReportOnlyRequest,
    StatusOutput,
    TeardownEvent,
    TeardownOutput,
    TeardownRecord,
)
from fmbench.cloud.limits import bounded_error, execution_limit_problems, json_size
from fmbench.cloud.pricing import plan_price_table
from fmbench.cloud.quotas import ClientFactory, check_endpoint_quotas, instances_needed_at_once
from fmbench.cloud.sagemaker import (
    deploy,
    endpoint_status,
    plan_deployment,
    secrets_manager_reader,
    teardown,
)
from fmbench.cloud.settings import DeploySettings, PlanSettings, StatusSettings, TeardownSettings
from fmbench.config import Slo, Suite, SuiteProblem, SuiteValidationError, problems_from_validation_error
from fmbench.deployment import FAILED, IN_SERVICE, MAX_STATUS_POLLS, secret_references
from fmbench.ec2_deployment import plan_ec2_deployment
from fmbench.estimate import check_budget, endpoint_ttl_problems, estimate_branches
from fmbench.plan import RunPlan, new_run_id, plan_suite
from fmbench.pricing import PRICING_API_REGION
from fmbench.prompt_store import MAX_MATERIALIZED_PROMPTS_PER_BIN, materialize_plan
from fmbench.spec import BranchSpec
from fmbench.storage import split_s3_uri

logger = logging.getLogger(__name__)

# (run id, branch ids, the suite's SLO: its per-request limits make goodput) -> the Athena metrics query.
MetricsQueryBuilder = Callable[[str, list[str], Slo], str]
_ACCESS_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden"})


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
    if spec.ec2_deployment is not None:
        endpoint_name, region = spec.ec2_deployment.instance_name, spec.ec2_deployment.region
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


def _planned_deployment(spec: BranchSpec, region: str, ttl_s: int, ready_timeout_s: float) -> BranchSpec:
    """The spec with what its deploy step creates: a SageMaker endpoint's image and environment, or an EC2
    instance's AMI parameter, image and user data (docs/ec2.md)."""
    target = spec.target
    if not target.needs_deploy:
        return spec
    if target.platform == "ec2":
        deployment = plan_ec2_deployment(
            target,
            region=region,
            run_id=spec.run_id,
            branch_id=spec.branch_id,
            endpoint_ttl_s=ttl_s,
            ready_timeout_s=ready_timeout_s,
        )
        return spec.model_copy(update={"ec2_deployment": deployment})
    return spec.model_copy(update={"sagemaker_deployment": plan_deployment(target, region, ttl_s)})


def _document(model: BaseModel) -> dict[str, Any]:
    """A spec or plan as JSON with only the fields that were given: some of the suite's checks flag a field
    that is present but does not apply (an open-loop option in a closed loop), so a dump with every default
    filled in would not validate again when the runner or the render step reads it."""
    return model.model_dump(mode="json", exclude_unset=True)


class RunPlanNotFoundError(LookupError):
    """The run's plan.json is not in S3: the run id is wrong, or the plan step never ran."""


def read_run_plan(s3_client: Any, storage_root: str, run_id: str) -> RunPlan:
    """The saved run's plan.

    S3 answers a read of a missing key with 403, not 404, unless the caller may list the whole bucket, and
    the Plan function may list only under ``specs/`` (an ``s3:prefix`` condition, which that existence
    check does not honour). So a denied read is followed by a listing of the run's own folder, which the
    function may make: no plan there is the not-found a wrong run id deserves; a plan there that may not
    be read is a real AccessDenied and is raised as it is.
    """
    uri = layout.run_plan_uri(storage_root, run_id)
    try:
        data = s3_objects.get_bytes(s3_client, uri)
    except ClientError as exc:
        if error_code(exc) not in _ACCESS_DENIED_CODES:
            raise
        folder = layout.run_folder(storage_root, layout.SPECS, run_id)
        if split_s3_uri(uri)[1] in s3_objects.list_keys(s3_client, folder):
            raise
        data = None
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


def register_partitions(
    settings: PlanSettings, client_factory: ClientFactory | None, storage_root: str, plan: RunPlan
) -> None:
    """The run's partitions of the records table, so Athena sees its records once written (and a query
    naming no run id sees this run): skipped without a Glue database in the settings (an older stack)."""
    if settings.athena_database is None or client_factory is None:
        return
    branch_ids = [spec.branch_id for spec in plan.branches]
    glue = client_factory("glue", settings.region)
    register_run_partitions(glue, settings.athena_database, storage_root, plan.run_id, branch_ids)
    if plan.suite.evaluation is not None:  # the judgments the Evaluate task writes
        register_run_partitions(
            glue, settings.athena_database, storage_root, plan.run_id, branch_ids, JUDGMENTS_TABLE
        )


def plan_report_only(
    request: ReportOnlyRequest,
    settings: PlanSettings,
    s3_client: Any,
    metrics_query: MetricsQueryBuilder,
    client_factory: ClientFactory | None = None,
) -> PlanResult:
    """A plan that runs no branch: Query and Render run again over the saved run's records and plan.

    The run's partitions are registered again (idempotent): a run recorded before the records table had
    registered partitions becomes queryable by this re-render."""
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    plan = read_run_plan(s3_client, storage_root, request.run_id)
    register_partitions(settings, client_factory, storage_root, plan)
    polls = settings.max_status_polls(MAX_STATUS_POLLS)
    items = [
        branch_item(s, layout.branch_spec_uri(storage_root, plan.run_id, s.branch_id), polls)
        for s in plan.branches
    ]
    logger.info("report-only run %s: %d branch(es) to report", plan.run_id, len(items))
    return PlanResult(
        run_id=plan.run_id,
        suite_name=plan.suite.name,
        storage_root=storage_root,
        max_concurrency=1,
        metrics_query=metrics_query(plan.run_id, [spec.branch_id for spec in plan.branches], plan.suite.slo),
        branches=[],
        report_only=True,
        report_branches=items,
        cost_estimate_usd=plan.cost_estimate.total_usd if plan.cost_estimate is not None else None,
        compare=plan.suite.regression is not None,
    )


def regional_clients(
    client_factory: ClientFactory | None, service: str, default_region: str
) -> Callable[[str | None], Any] | None:
    """region (None: ``default_region``) -> the service's client there, one per region."""
    if client_factory is None:
        return None
    clients: dict[str, Any] = {}

    def client_in(region: str | None) -> Any:
        name = region or default_region
        if name not in clients:
            clients[name] = client_factory(service, name)
        return clients[name]

    return client_in


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
        return plan_report_only(request, settings, s3_client, metrics_query, client_factory)
    tokens: list[str | None] = []  # the Hub token validation read, kept for materializing below

    def hub_token(suite: Suite) -> str | None:
        read_secret = None
        if client_factory is not None and suite.workload.dataset.hub_token is not None:
            read_secret = secrets_manager_reader(client_factory("secretsmanager", settings.region))
        tokens.append(hub_token_reader(read_secret)(suite))
        return tokens[-1]

    suite = validate_cloud_suite(
        event.suite,
        settings.region,
        existing_endpoint_names=settings.existing_endpoint_names,
        hub_token=hub_token,
    )
    if suite.evaluation is not None:  # judges: allowed by the stack, usable by the account, in their regions
        judge_problems = judge_model_problems(
            suite, settings.judge_models, regional_clients(client_factory, "bedrock", settings.region)
        )
        judge_problems += judge_endpoint_problems(
            suite, settings.judge_endpoints, regional_clients(client_factory, "sagemaker", settings.region)
        )
        if judge_problems:
            raise SuiteValidationError(judge_problems, EXECUTION_INPUT_SOURCE)
    run_id = run_id_for(event.execution_name)
    storage_root = s3_objects.s3_uri(settings.results_bucket)
    prices, prices_note = None, None
    if suite.pricing.from_api and client_factory is not None:
        prices, prices_note = plan_price_table(client_factory("pricing", PRICING_API_REGION))
    plan = plan_suite(suite, storage_root=storage_root, run_id=run_id, prices=prices)
    if prices_note is not None:
        plan = plan.model_copy(update={"prices_note": prices_note})
    ttl_s = suite.execution.endpoint_ttl_s
    specs = [
        _planned_deployment(spec, settings.region, ttl_s, settings.max_deploy_s) for spec in plan.branches
    ]
    max_status_polls = settings.max_status_polls(MAX_STATUS_POLLS)
    estimate = estimate_branches(specs, settings.estimate_settings(max_status_polls), suite.evaluation)
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
        quota_notes += check_vcpu_quotas(
            vcpus_needed_at_once(specs, max_concurrency), client_factory, max_concurrency
        )
    plan = RunPlan(
        run_id=run_id, suite=suite, branches=specs, cost_estimate=estimate, prices_note=plan.prices_note
    )
    items = [
        branch_item(spec, layout.branch_spec_uri(storage_root, run_id, spec.branch_id), max_status_polls)
        for spec in specs
    ]
    result = PlanResult(
        run_id=run_id,
        suite_name=suite.name,
        storage_root=storage_root,
        max_concurrency=max_concurrency,
        metrics_query=metrics_query(run_id, [spec.branch_id for spec in specs], suite.slo),
        branches=items,
        cost_estimate_usd=estimate.total_usd,
        quota_check=quota_notes,
        compare=suite.regression is not None,
        evaluate=suite.evaluation is not None,
    )
    deployed = sum(1 for spec in specs if spec.target.needs_deploy)
    limit_problems = execution_limit_problems(
        deployed_branches=deployed,
        other_branches=len(specs) - deployed,
        max_status_polls=max_status_polls,
        plan_state_bytes=json_size({"plan": result.model_dump(mode="json")}),
    )
    if limit_problems:
        raise SuiteValidationError(limit_problems, EXECUTION_INPUT_SOURCE)
    # Every check passed: the prompts are made once, into the run's storage, and every branch's runner
    # sends those (bounded per bin: docs/workload.md, "In the cloud").
    plan = materialize_plan(
        plan,
        token=tokens[-1] if tokens else None,
        max_prompts_per_bin=MAX_MATERIALIZED_PROMPTS_PER_BIN,
        write=lambda uri, data, content_type: s3_objects.put_bytes(s3_client, uri, data, content_type),
    )
    register_partitions(settings, client_factory, storage_root, plan)
    for spec, item in zip(plan.branches, items, strict=True):
        s3_objects.put_json(s3_client, item.spec_uri, _document(spec))
    s3_objects.put_json(s3_client, layout.run_plan_uri(storage_root, run_id), _document(plan))
    logger.info(
        "planned run %s: %d branch(es), cost at most $%.2f%s",
        run_id,
        len(items),
        estimate.total_usd,
        "" if estimate.complete else " plus parts of unknown price",
    )
    return result


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
    if spec.ec2_deployment is not None:
        return _launch_instance(item, spec, settings, s3_client, client_factory)
    deployment = spec.sagemaker_deployment
    region = deployment.region if deployment is not None else item.endpoint_region(settings.region)
    read_secret = None
    if deployment is not None and secret_references(deployment.environment):
        read_secret = secrets_manager_reader(
            lambda secret_region: client_factory("secretsmanager", secret_region)
        )
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


def _launch_instance(
    item: BranchItem,
    spec: BranchSpec,
    settings: DeploySettings,
    s3_client: Any,
    client_factory: ClientFactory,
) -> DeployOutput:
    """Launch (or find) the branch's instance, then write its URL into the branch spec the runner reads."""
    deployment = spec.ec2_deployment
    assert deployment is not None
    region = deployment.region
    result = launch(
        client_factory("ec2", region), client_factory("ssm", region), spec, settings.ec2_network()
    )
    url = deployment.endpoint_url(result.private_ip)
    if spec.ec2_endpoint_url != url:
        s3_objects.put_json(s3_client, item.spec_uri, {**_document(spec), "ec2_endpoint_url": url})
    logger.info(
        "branch %s: instance %s at %s (%s)",
        item.branch_id,
        result.instance_id,
        url,
        "launched" if result.launched else "found",
    )
    return DeployOutput(endpoint_name=deployment.instance_name, created_epoch_s=result.created_epoch_s)


def check_endpoint(
    item: BranchItem, settings: StatusSettings, sm_client: Any, s3_client: Any, ec2_client: Any = None
) -> StatusOutput:
    """The endpoint's status; once in service, how long deployment took is recorded for the report."""
    if item.platform == "ec2" and ec2_client is not None:
        instance = instance_status(ec2_client, item.run_id, item.branch_id)
        state: Any = instance
        sagemaker_status = instance.ec2_state
    elif not item.endpoint_name:
        return StatusOutput(
            status=FAILED,
            failure_reason=f"branch {item.branch_id} has no endpoint to check",
            sagemaker_status=None,
            in_service_epoch_s=None,
        )
    else:
        state = endpoint_status(sm_client, item.endpoint_name)
        sagemaker_status = state.sagemaker_status
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
            layout.deployment_record_uri(root, item.run_id, item.branch_id),
            record.model_dump(mode="json"),
        )
    return StatusOutput(
        status=state.status,
        failure_reason=state.failure_reason,
        sagemaker_status=sagemaker_status,
        in_service_epoch_s=state.in_service_epoch_s,
    )


def teardown_branch(
    event: TeardownEvent,
    sm_client: Any,
    settings: TeardownSettings | None = None,
    s3_client: Any = None,
    clock: Callable[[], float] = time.time,
    ec2_client: Any = None,
) -> TeardownOutput:
    """Delete what the branch deployed; a branch that deployed nothing has nothing to delete.

    With a results bucket in ``settings``, the endpoint's creation time is read before it is deleted and
    ``teardown.json`` records both, from which Render counts the branch's instance seconds.
    """
    record_to = settings.results_bucket if settings is not None and s3_client is not None else None
    failure = bounded_error(event.error) if event.error else None
    if event.error and record_to:
        _record_failure(s3_client, s3_objects.s3_uri(record_to), event, event.error)
    if not event.needs_deploy:
        return TeardownOutput(deleted=[], error=failure)
    if event.error:
        logger.info("branch %s: tearing down after %s", event.branch_id, event.error.get("Error"))
    created_epoch_s = None
    if event.platform == "ec2" and ec2_client is not None:
        created_epoch_s = instance_status(ec2_client, event.run_id, event.branch_id).created_epoch_s
        deleted = terminate(ec2_client, event.run_id, event.branch_id)
        # an instance is billed until it is told to terminate: then its lifetime is recorded
        ended = any(label.startswith("instance/") for label in deleted)
    else:
        if record_to and event.endpoint_name:
            created_epoch_s = endpoint_status(sm_client, event.endpoint_name).created_epoch_s
        deleted = teardown(sm_client, event.run_id, event.branch_id)
        ended = f"endpoint/{event.endpoint_name}" in deleted
    deleted_epoch_s = clock()
    logger.info("branch %s: deleted %s", event.branch_id, ", ".join(deleted) or "nothing (already gone)")
    if record_to and event.endpoint_name and created_epoch_s is not None and ended:
        record = TeardownRecord(
            run_id=event.run_id,
            branch_id=event.branch_id,
            endpoint_name=event.endpoint_name,
            created_epoch_s=created_epoch_s,
            deleted_epoch_s=deleted_epoch_s,
        )
        s3_objects.put_json(
            s3_client,
            layout.teardown_record_uri(s3_objects.s3_uri(record_to), event.run_id, event.branch_id),
            record.model_dump(mode="json"),
        )
    return TeardownOutput(deleted=deleted, error=failure)


def _record_failure(s3_client: Any, root: str, event: TeardownEvent, error: dict[str, Any]) -> None:
    """The whole error, for the report; best effort, as deleting the endpoint matters more than the record
    (without it the report shows the error as the Map's result carries it, cut short)."""
    record = FailureRecord(run_id=event.run_id, branch_id=event.branch_id, error=error)
    uri = layout.failure_record_uri(root, event.run_id, event.branch_id)
    try:
        s3_objects.put_json(s3_client, uri, record.model_dump(mode="json"))
    except ClientError as exc:
        logger.warning("branch %s: failure not recorded at %s: %s", event.branch_id, uri, exc)
