"""A branch's SageMaker real-time endpoint: image resolution, deploy, status, teardown (the AWS calls).

What these resources are called and tagged, and which serving containers there are, is the boto-free
vocabulary in ``fmbench.deployment``. Container images are resolved when the run is planned
(``plan_deployment``), so the deploy step itself needs neither the SageMaker SDK nor any choice of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from botocore.exceptions import ClientError

from fmbench.cloud.aws import error_code, error_message
from fmbench.config import DEFAULT_ENDPOINT_TTL_S, SageMakerTarget
from fmbench.deployment import (
    CREATING,
    DEFAULT_MODEL_ENV_VAR,
    FAILED,
    IN_SERVICE,
    MODEL_DIR,
    SECRET_ARN_PATTERN,
    TAG_EXPIRES_AT,
    EndpointBusyError,
    SageMakerDeployment,
    ServingContainerError,
    WorkflowStatus,
    branch_tags,
    expires_at_text,
    inference_ami_version_for,
    known_container,
    parse_container,
    resource_names,
    secret_references,
)
from fmbench.instances import gpu_count as instance_gpu_count
from fmbench.spec import BranchSpec

VARIANT_NAME: Final = "AllTraffic"
# SageMaker's defaults are sized for small models; an LLM may download tens of GB and load for many minutes.
MODEL_DATA_DOWNLOAD_TIMEOUT_S: Final = 1800
CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S: Final = 1800

_FAILED_STATUSES: Final = frozenset({"Failed", "OutOfService", "Deleting", "UpdateRollbackFailed"})
# An endpoint in one of these cannot be deleted yet; teardown must be tried again later.
_BUSY_STATUSES: Final = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})


class DeploymentSpecError(ValueError):
    """A branch spec the deploy step cannot act on (no deployment planned, no model source)."""


class SecretReferenceError(ValueError):
    """An environment value refers to a secret that cannot be read, or the reference is malformed."""


# ------------------------------------------------------------------------------ serving containers


def resolve_image_uri(target: Any, region: str) -> str:
    """The image a target deploys: its ``image_uri`` if given, else its container's image in ``region``."""
    if target.image_uri:
        return str(target.image_uri)
    if not target.container:
        raise ServingContainerError("container", "give container (e.g. lmi, tgi, vllm) or image_uri")
    container, version = parse_container(target.container)
    try:
        from sagemaker.core import image_uris  # takes seconds: only where an image is resolved
    except ImportError:
        raise ServingContainerError(
            "container",
            "resolving a container image needs the SageMaker SDK (pip install 'fmbench-flow[aws]'); "
            "or give image_uri",
        ) from None
    wanted = version or container.default_version
    try:
        return str(
            image_uris.retrieve(
                container.framework,
                region=region,
                version=wanted,
                image_scope="inference",
                instance_type=target.instance_type,
            )
        )
    except ValueError as exc:
        raise ServingContainerError(
            "container", f"no {container.name} image version {wanted} in {region}: {exc}"
        ) from None


def tensor_parallel_degree(target: Any) -> int | None:
    """How many GPUs TGI or vLLM shard over: the suite's ``accelerators``, else the instance's GPUs from the
    product's table (fmbench.instances); None for an instance without GPUs."""
    if target.accelerators:
        return int(target.accelerators)
    return instance_gpu_count(target.instance_type)


# --------------------------------------------------------------------------------------- secrets


def resolve_environment(
    environment: Mapping[str, str], read_secret: Callable[[str], str] | None
) -> dict[str, str]:
    """The environment with every ``secretsmanager:<arn>`` value replaced by the secret's string.

    The value is read when the model is created, never written to the branch spec or the plan; SageMaker
    then holds it in the model's container environment (visible to whoever may DescribeModel).
    """
    references = secret_references(environment)
    if not references:
        return dict(environment)
    if read_secret is None:
        raise SecretReferenceError(f"no secret reader for {', '.join(sorted(references))}")
    resolved = dict(environment)
    for name, arn in references.items():
        if not SECRET_ARN_PATTERN.match(arn):
            raise SecretReferenceError(f"environment.{name}: not a Secrets Manager secret ARN: {arn!r}")
        resolved[name] = read_secret(arn)
    return resolved


def secret_region(arn: str) -> str:
    """The region a secret lives in: the fourth field of its ARN (``arn:aws:secretsmanager:REGION:...``)."""
    if not SECRET_ARN_PATTERN.match(arn):
        raise SecretReferenceError(f"not a Secrets Manager secret ARN: {arn!r}")
    return arn.split(":")[3]


def secrets_manager_reader(secrets_client_in: Callable[[str], Any]) -> Callable[[str], str]:
    """A reader that asks Secrets Manager in each secret's own region (``secrets_client_in(region)``).

    A secret is a regional resource: a client in the endpoint's region answers ResourceNotFound for a
    secret kept in another region, even when the full ARN is given, and suites deploy to any region.
    """

    def read(arn: str) -> str:
        try:
            value = secrets_client_in(secret_region(arn)).get_secret_value(SecretId=arn).get("SecretString")
        except ClientError as exc:
            raise SecretReferenceError(f"cannot read secret {arn}: {error_message(exc)}") from exc
        if not isinstance(value, str):
            raise SecretReferenceError(f"secret {arn} has no string value (binary secrets are not supported)")
        return value

    return read


# ---------------------------------------------------------------------------------------- planning


def plan_deployment(
    target: Any, default_region: str, endpoint_ttl_s: int = DEFAULT_ENDPOINT_TTL_S
) -> SageMakerDeployment:
    """Image and container environment of a target to deploy.

    The model location goes into the variable the container reads (``HF_MODEL_ID``, or ``SM_VLLM_MODEL``
    for the vLLM image): the Hugging Face model id, or ``/opt/ml/model`` when the model comes from S3. TGI
    and vLLM shard over every GPU of the instance only when told how many there are; LMI finds out itself.
    The target's own ``environment`` is applied last, so it overrides any of these. The host AMI is the
    target's ``inference_ami_version``, else the one the image's CUDA needs (``inference_ami_version_for``).
    """
    region = target.region or default_region
    image_uri = resolve_image_uri(target, region)
    container = known_container(target.container)
    environment: dict[str, str] = {}
    source = target.model_source
    if source is None:
        raise DeploymentSpecError(f"target {target.name}: model_source is required to deploy")
    model_env_var = container.model_env_var if container else DEFAULT_MODEL_ENV_VAR
    environment[model_env_var] = source.hf_model_id or MODEL_DIR
    if container is not None and container.gpu_count_env_var:
        gpus = tensor_parallel_degree(target)
        if gpus is not None:
            environment[container.gpu_count_env_var] = str(gpus)
    environment.update(target.environment)
    return SageMakerDeployment(
        region=region,
        image_uri=image_uri,
        environment=environment,
        endpoint_ttl_s=endpoint_ttl_s,
        inference_ami_version=target.inference_ami_version or inference_ami_version_for(image_uri),
    )


# -------------------------------------------------------------------------------------- API calls


def is_not_found(exc: Exception) -> bool:
    """SageMaker reports a missing model, endpoint config or endpoint as a ValidationException."""
    return error_code(exc) == "ValidationException" and "could not find" in error_message(exc).lower()


def _already_exists(exc: Exception) -> bool:
    return error_code(exc) == "ValidationException" and "already exist" in error_message(exc).lower()


def _describe(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _create(call: Callable[..., Any], **kwargs: Any) -> bool:
    """True when created; False when an attempt running alongside created it first."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if _already_exists(exc):
            return False
        raise
    return True


def _epoch_s(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _model_data(source: Any) -> dict[str, Any]:
    uri = source.model_data_s3_uri if source is not None else None
    if not uri:
        return {}
    if uri.endswith(".tar.gz"):
        return {"ModelDataUrl": uri}
    # An uncompressed prefix is mounted file by file: no tarball to build, no unpacking on start.
    return {
        "ModelDataSource": {
            "S3DataSource": {
                "S3Uri": uri.rstrip("/") + "/",
                "S3DataType": "S3Prefix",
                "CompressionType": "None",
            }
        }
    }


@dataclass(frozen=True, slots=True)
class DeployResult:
    endpoint_name: str
    created_epoch_s: float
    created: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()


def deploy(
    sm_client: Any,
    spec: BranchSpec,
    execution_role_arn: str,
    tags: Mapping[str, str] | None = None,
    read_secret: Callable[[str], str] | None = None,
    clock: Callable[[], float] = time.time,
) -> DeployResult:
    """Create (or find) the model, endpoint config and endpoint of a branch; never a second of any.

    Each resource is looked up by its derived name first and created only when missing, so a Deploy that
    is retried after a timeout or a throttled call picks up where the first attempt stopped. The standard
    tags (``branch_tags``) and ``fmbench:expires-at`` (now + the deployment's ``endpoint_ttl_s``) are always
    set; ``tags`` adds more (e.g. a cost-allocation tag).
    """
    deployment = spec.sagemaker_deployment
    target = spec.target
    if deployment is None or not isinstance(target, SageMakerTarget) or not target.needs_deploy:
        raise DeploymentSpecError(f"branch {spec.branch_id} has no SageMaker deployment to create")
    names = resource_names(spec.run_id, spec.branch_id)
    expires_at = expires_at_text(clock() + deployment.endpoint_ttl_s)
    tag_list = _tag_list(
        {
            **(tags or {}),
            TAG_EXPIRES_AT: expires_at,
            **branch_tags(suite_name=spec.suite_name, run_id=spec.run_id, branch_id=spec.branch_id),
        }
    )
    created: list[str] = []
    reused: list[str] = []

    def ensure(
        kind: str, name: str, describe: Callable[..., Any], key: str, create: Callable[[], bool]
    ) -> None:
        if _describe(describe, **{key: name}) is None and create():
            created.append(f"{kind}/{name}")
        else:
            reused.append(f"{kind}/{name}")

    ensure(
        "model",
        names.model,
        sm_client.describe_model,
        "ModelName",
        lambda: _create(
            sm_client.create_model,
            ModelName=names.model,
            ExecutionRoleArn=execution_role_arn,
            PrimaryContainer={
                "Image": deployment.image_uri,
                "Environment": resolve_environment(deployment.environment, read_secret),
                **_model_data(target.model_source),
            },
            Tags=tag_list,
        ),
    )
    ensure(
        "endpoint-config",
        names.endpoint_config,
        sm_client.describe_endpoint_config,
        "EndpointConfigName",
        lambda: _create(
            sm_client.create_endpoint_config,
            EndpointConfigName=names.endpoint_config,
            ProductionVariants=[
                {
                    "VariantName": VARIANT_NAME,
                    "ModelName": names.model,
                    "InstanceType": target.instance_type,
                    "InitialInstanceCount": target.instance_count,
                    "InitialVariantWeight": 1.0,
                    "ModelDataDownloadTimeoutInSeconds": MODEL_DATA_DOWNLOAD_TIMEOUT_S,
                    "ContainerStartupHealthCheckTimeoutInSeconds": CONTAINER_STARTUP_HEALTH_CHECK_TIMEOUT_S,
                    **(
                        {"InferenceAmiVersion": deployment.inference_ami_version}
                        if deployment.inference_ami_version
                        else {}
                    ),
                }
            ],
            Tags=tag_list,
        ),
    )
    ensure(
        "endpoint",
        names.endpoint,
        sm_client.describe_endpoint,
        "EndpointName",
        lambda: _create(
            sm_client.create_endpoint,
            EndpointName=names.endpoint,
            EndpointConfigName=names.endpoint_config,
            Tags=tag_list,
        ),
    )
    described = sm_client.describe_endpoint(EndpointName=names.endpoint)
    return DeployResult(
        endpoint_name=names.endpoint,
        created_epoch_s=_epoch_s(described.get("CreationTime")) or 0.0,
        created=tuple(created),
        reused=tuple(reused),
    )


@dataclass(frozen=True, slots=True)
class EndpointState:
    """An endpoint's status as the workflow's Choice reads it, with SageMaker's own status beside it."""

    status: WorkflowStatus
    sagemaker_status: str | None
    failure_reason: str | None
    created_epoch_s: float | None = None
    in_service_epoch_s: float | None = None


def endpoint_status(sm_client: Any, endpoint_name: str) -> EndpointState:
    """Creating, InService or Failed, and why it failed.

    An endpoint that is gone, out of service or being deleted counts as Failed: none of them will serve
    the load. Any other status (Updating, SystemUpdating, ...) counts as Creating, so the workflow waits,
    within its bound. For an endpoint in service, its LastModifiedTime is when it became InService (it is
    never updated in a benchmark), which is more precise than the time of the poll that saw it.
    """
    described = _describe(sm_client.describe_endpoint, EndpointName=endpoint_name)
    if described is None:
        return EndpointState(
            status=FAILED, sagemaker_status=None, failure_reason=f"endpoint {endpoint_name} does not exist"
        )
    raw = str(described.get("EndpointStatus", ""))
    created_epoch_s = _epoch_s(described.get("CreationTime"))
    if raw == IN_SERVICE:
        return EndpointState(
            status=IN_SERVICE,
            sagemaker_status=raw,
            failure_reason=None,
            created_epoch_s=created_epoch_s,
            in_service_epoch_s=_epoch_s(described.get("LastModifiedTime")),
        )
    if raw in _FAILED_STATUSES:
        reason = described.get("FailureReason") or f"endpoint {endpoint_name} is {raw}"
        return EndpointState(
            status=FAILED, sagemaker_status=raw, failure_reason=str(reason), created_epoch_s=created_epoch_s
        )
    return EndpointState(
        status=CREATING, sagemaker_status=raw, failure_reason=None, created_epoch_s=created_epoch_s
    )


def _delete(call: Callable[..., Any], **kwargs: Any) -> bool:
    """True when deleted; False when there was nothing to delete."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def delete_endpoint(sm_client: Any, endpoint_name: str) -> bool:
    """Delete one endpoint: True when this call deleted it, False when it is gone or already being deleted.

    Raises ``EndpointBusyError`` when SageMaker will not delete it yet (still Creating or Updating).
    """
    try:
        return _delete(sm_client.delete_endpoint, EndpointName=endpoint_name)
    except ClientError as exc:
        if error_code(exc) != "ValidationException":
            raise
        described = _describe(sm_client.describe_endpoint, EndpointName=endpoint_name) or {}
        status = str(described.get("EndpointStatus", ""))
        if status in _BUSY_STATUSES:
            raise EndpointBusyError(
                f"endpoint {endpoint_name} is {status} and cannot be deleted yet: {error_message(exc)}"
            ) from exc
        if status != "Deleting":
            raise
        return False


def delete_endpoint_config(sm_client: Any, endpoint_config_name: str) -> bool:
    """True when this call deleted the endpoint config, False when it was already gone."""
    return _delete(sm_client.delete_endpoint_config, EndpointConfigName=endpoint_config_name)


def delete_model(sm_client: Any, model_name: str) -> bool:
    """True when this call deleted the model, False when it was already gone."""
    return _delete(sm_client.delete_model, ModelName=model_name)


def teardown(sm_client: Any, run_id: str, branch_id: str) -> list[str]:
    """Delete the endpoint, endpoint config and model of one branch; returns what this call deleted.

    Idempotent: what is already gone is skipped. Only the derived names are touched, never a resource
    found by a search. An endpoint that SageMaker will not delete yet (still Creating) raises
    ``EndpointBusyError`` before anything else is deleted, so the retry finds everything where it was.
    """
    names = resource_names(run_id, branch_id)
    deleted: list[str] = []
    if delete_endpoint(sm_client, names.endpoint):
        deleted.append(f"endpoint/{names.endpoint}")
    if delete_endpoint_config(sm_client, names.endpoint_config):
        deleted.append(f"endpoint-config/{names.endpoint_config}")
    if delete_model(sm_client, names.model):
        deleted.append(f"model/{names.model}")
    return deleted
