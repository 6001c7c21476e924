"""What keeps a valid suite from running in the cloud, found before anything is created or paid for."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any, Final

from fmbench.cloud.sagemaker import resolve_image_uri
from fmbench.config import BUILTIN_DATASET_PREFIX, Suite, SuiteProblem, SuiteValidationError
from fmbench.deployment import (
    EXISTING_ENDPOINTS_KEY,
    JUDGE_ENDPOINTS_KEY,
    SECRET_ARN_PATTERN,
    SECRET_REFERENCE_PREFIX,
    ServingContainerError,
    parse_container,
    payload_format_problem,
    secret_reference_problems,
    stack_may_invoke,
)
from fmbench.judgments import JUDGE_MODELS_KEY
from fmbench.suite import validate_suite_data

# Dataset sources the plan step can read in the cloud (a local path is not uploaded with the suite).
CLOUD_DATASET_PREFIXES: Final = (BUILTIN_DATASET_PREFIX, "s3://", "hf:")

# How a problem of the execution input names its source (``execution input: field.path: reason``).
EXECUTION_INPUT_SOURCE: Final = "execution input"


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
    source = suite.workload.dataset.source
    if suite.workload.synthetic is None and not source.startswith(CLOUD_DATASET_PREFIXES):
        problems.append(
            SuiteProblem(
                path="workload.dataset.source",
                reason="a local file is not uploaded with the suite: copy it to S3 and give its s3:// URI "
                "(or a Hub dataset, hf:OWNER/NAME, or a built-in one, builtin:NAME)",
            )
        )
    for expanded in suite.expanded():
        target = expanded.target
        if not target.needs_deploy or target.platform == "ec2":  # ec2: fmbench.ec2_deployment's checks
            continue
        note = f" (target {target.name})" if expanded.from_matrix else ""
        problems += [
            SuiteProblem(path=expanded.field_path(field), reason=reason + note)
            for field, reason in _deploy_target_problems(target, region, resolve_images)
        ]
    return problems


def endpoint_access_problems(suite: Suite, existing_endpoint_names: Collection[str]) -> list[SuiteProblem]:
    """Each existing SageMaker endpoint of the suite the stack's runner may not invoke.

    The runner's role grants InvokeEndpoint on the workflow's own ``fmb-*`` endpoints and on the names in
    cdk.json's ``fmbench:existingEndpointNames`` only; any other endpoint would answer every request with
    AccessDenied, after the other branches have deployed and run. The fix is in the stack, so the problem
    says which key to set and how.
    """
    refused: list[tuple[str, str]] = []
    for expanded in suite.expanded():
        target = expanded.target
        name = getattr(target, "endpoint_name", None)
        if target.platform != "sagemaker" or target.needs_deploy or not name:
            continue
        if not stack_may_invoke(name, existing_endpoint_names):
            refused.append((expanded.field_path("endpoint_name"), name))
    if not refused:
        return []
    names = list(dict.fromkeys([*existing_endpoint_names, *(name for _, name in refused)]))
    context = json.dumps(names, separators=(",", ":"))
    now = ", ".join(existing_endpoint_names) or "none"
    return [
        SuiteProblem(
            path=path,
            reason=f"the stack's runner may not invoke endpoint {name!r}: it invokes the workflow's own "
            f"fmb-* endpoints and those listed in cdk.json's {EXISTING_ENDPOINTS_KEY} (now: {now}). "
            f"Add it there and deploy the stack again: npx aws-cdk@2 deploy -c "
            f"'{EXISTING_ENDPOINTS_KEY}={context}' (or edit cdk.json and run npx aws-cdk@2 deploy)",
        )
        for path, name in refused
    ]


def hub_token_reader(read_secret: Callable[[str], str] | None) -> Callable[[Suite], str | None]:
    """The Hub token of a suite's dataset, read from the Secrets Manager secret ``hub_token`` names.

    Raises ``ValueError`` (the suite validation's problem at ``workload.dataset.hub_token``) for a malformed
    reference or a secret that cannot be read. Without ``read_secret`` no token is read.
    """

    def token(suite: Suite) -> str | None:
        reference = suite.workload.dataset.hub_token
        if reference is None or read_secret is None:
            return None
        arn = reference[len(SECRET_REFERENCE_PREFIX) :]
        if not SECRET_ARN_PATTERN.match(arn):
            raise ValueError(f"{SECRET_REFERENCE_PREFIX} must be followed by a Secrets Manager secret ARN")
        return read_secret(arn)

    return token


def validate_cloud_suite(
    data: Any,
    region: str,
    *,
    resolve_images: bool = True,
    existing_endpoint_names: Collection[str] | None = None,
    hub_token: Callable[[Suite], str | None] | None = None,
) -> Suite:
    """The suite of an execution input, or ``SuiteValidationError`` listing every problem.

    With ``existing_endpoint_names`` (the stack's, known to the Plan function), an existing SageMaker
    endpoint the runner may not invoke is a problem too. ``hub_token`` reads the dataset's Hub token.
    """
    suite = validate_suite_data(data, base_dir=None, source=EXECUTION_INPUT_SOURCE, hub_token=hub_token)
    problems = cloud_suite_problems(suite, region, resolve_images=resolve_images)
    if existing_endpoint_names is not None:
        problems += endpoint_access_problems(suite, existing_endpoint_names)
    if problems:
        raise SuiteValidationError(problems, EXECUTION_INPUT_SOURCE)
    return suite


def _bedrock_judges(suite: Suite) -> list[tuple[str, str, str | None]]:
    """(field path, model id, region or None for the stack's) of each judge of the suite called through
    Bedrock."""
    if suite.evaluation is None:
        return []
    judges = []
    for index, judge in enumerate(suite.evaluation.judges):
        if judge.model_id is not None:
            judges.append((f"evaluation.judges.{index}.model_id", judge.model_id, judge.region))
        elif judge.target is not None and judge.target.platform == "bedrock":
            path = f"evaluation.judges.{index}.target.model_id"
            judges.append((path, judge.target.model_id, judge.target.region))
    return judges


# A region -> that region's client (None: the stack's own region).
RegionalClient = Callable[[str | None], Any]


def judge_model_problems(
    suite: Suite, allowed: Collection[str] | None, bedrock_for: RegionalClient | None
) -> list[SuiteProblem]:
    """Each Bedrock judge the stack's Evaluate task may not invoke (``allowed``: cdk.json's
    fmbench:judgeModels; None skips the check) or the account has no access to in the judge's region
    (GetFoundationModelAvailability on the judge's model, an inference profile mapped to its model, asked of
    ``bedrock_for(judge's region)``; None skips the check)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from fmbench.pricing import foundation_model_id

    problems: list[SuiteProblem] = []
    granted = None if allowed is None else {*allowed, *(foundation_model_id(m) for m in allowed)}
    for path, model_id, region in _bedrock_judges(suite):
        if granted is not None and model_id not in granted:
            problems.append(
                SuiteProblem(
                    path=path,
                    reason=f"{model_id} is not allowed by the stack's judge models ({JUDGE_MODELS_KEY}: "
                    f"{', '.join(allowed or ()) or 'none'}); add it there and deploy the stack again",
                )
            )
            continue
        if bedrock_for is None:
            continue
        model = foundation_model_id(model_id)
        where = f" in {region}" if region else ""
        try:
            answer = bedrock_for(region).get_foundation_model_availability(modelId=model)
        except (ClientError, BotoCoreError) as exc:
            reason = f"{model_id}: availability{where} not known: {exc}"
            problems.append(SuiteProblem(path=path, reason=reason))
            continue
        states = {
            "authorization": answer.get("authorizationStatus"),
            "entitlement": answer.get("entitlementAvailability"),
            "region": answer.get("regionAvailability"),
        }
        refused = {k: v for k, v in states.items() if v not in ("AUTHORIZED", "AVAILABLE")}
        if refused:
            detail = ", ".join(f"{k} {v}" for k, v in refused.items())
            problems.append(
                SuiteProblem(
                    path=path,
                    reason=f"{model_id} is not available to the account ({model}: {detail}); request model "
                    f"access in the Bedrock console{where}",
                )
            )
    return problems


def _sagemaker_judges(suite: Suite) -> list[tuple[str, str, str | None]]:
    """(field path, endpoint name, region or None for the stack's) of each judge that is an existing
    SageMaker endpoint."""
    if suite.evaluation is None:
        return []
    judges = []
    for index, judge in enumerate(suite.evaluation.judges):
        target = judge.target
        name = getattr(target, "endpoint_name", None)
        if target is not None and target.platform == "sagemaker" and name:
            judges.append((f"evaluation.judges.{index}.target.endpoint_name", name, target.region))
    return judges


def judge_endpoint_problems(
    suite: Suite, allowed: Collection[str] | None, sagemaker_for: RegionalClient | None
) -> list[SuiteProblem]:
    """Each SageMaker judge whose endpoint the stack's Evaluate task may not invoke (``allowed``: cdk.json's
    fmbench:judgeEndpoints, names compared without case as in the endpoint's ARN; None skips the check) or
    that is not InService in its region (DescribeEndpoint asked of ``sagemaker_for(judge's region)``; None
    skips the check). Judges are not deployed: the endpoint must exist before the run."""
    from botocore.exceptions import BotoCoreError, ClientError

    from fmbench.cloud.aws import error_code, error_message

    problems: list[SuiteProblem] = []
    granted = None if allowed is None else {name.lower() for name in allowed}
    for path, name, region in _sagemaker_judges(suite):
        if granted is not None and name.lower() not in granted:
            problems.append(
                SuiteProblem(
                    path=path,
                    reason=f"{name} is not allowed by the stack's judge endpoints ({JUDGE_ENDPOINTS_KEY}: "
                    f"{', '.join(allowed or ()) or 'none'}); add it there and deploy the stack again",
                )
            )
            continue
        if sagemaker_for is None:
            continue
        where = f" in {region}" if region else " in the stack's region"
        try:
            status = sagemaker_for(region).describe_endpoint(EndpointName=name).get("EndpointStatus")
        except ClientError as exc:
            if error_code(exc) == "ValidationException":  # SageMaker's answer for an unknown endpoint
                reason = f"endpoint {name} does not exist{where} (judges are not deployed: create it first)"
            else:
                reason = f"endpoint {name}{where}: status not known: {error_message(exc)}"
            problems.append(SuiteProblem(path=path, reason=reason))
            continue
        except BotoCoreError as exc:
            reason = f"endpoint {name}{where}: status not known: {exc}"
            problems.append(SuiteProblem(path=path, reason=reason))
            continue
        if status != "InService":
            problems.append(
                SuiteProblem(path=path, reason=f"endpoint {name}{where} is {status}, not InService")
            )
    return problems
