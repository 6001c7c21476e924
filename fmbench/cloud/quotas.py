"""SageMaker endpoint-instance quotas, checked before a run deploys anything.

A branch that hits its instance type's quota fails at CreateEndpoint while the other branches go on and
are paid for: the comparison the user asked for is then incomplete. The plan step therefore compares, per
region and instance type, the instances the run may hold at once with the account's quota
"<instance type> for endpoint usage" and refuses the run when they do not fit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from fmbench.cloud.aws import error_code, error_message

if TYPE_CHECKING:
    from fmbench.spec import BranchSpec

logger = logging.getLogger(__name__)

SERVICE_CODE: Final = "sagemaker"
QUOTA_NAME_SUFFIX: Final = " for endpoint usage"
_ACCESS_DENIED_CODES: Final = frozenset({"AccessDenied", "AccessDeniedException"})
_NO_DEFAULTS_CODES: Final = frozenset({"NoSuchResourceException", "NoSuchResource"})

# (service, region) -> a boto3 client; see fmbench.cloud.aws.client
ClientFactory = Callable[[str, str], Any]


class QuotaExceededError(ValueError):
    """The run would hold more instances of a type at once than the account's SageMaker quota allows."""


class QuotaCheckError(RuntimeError):
    """The quotas cannot be read because the caller may not read them: a deployment fault to fix, not skip."""


def endpoint_quota_name(instance_type: str) -> str:
    return f"{instance_type}{QUOTA_NAME_SUFFIX}"


@dataclass(frozen=True, slots=True)
class InstanceNeed:
    """The most instances of one type, in one region, that the run's endpoints may hold at the same time."""

    region: str
    instance_type: str
    instances: int
    branch_ids: tuple[str, ...]


def instances_needed_at_once(
    specs: Sequence[BranchSpec], max_concurrency: int, default_region: str
) -> list[InstanceNeed]:
    """Per region and instance type, the sum of the ``max_concurrency`` largest branches of that type.

    The Map runs at most ``max_concurrency`` branches at once and a branch holds its endpoint until its
    teardown, so the worst case is the largest branches of a type all deployed together.
    """
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for spec in specs:
        target = spec.target
        if not target.needs_deploy or not spec.instance_type:
            continue
        region = spec.sagemaker_deployment.region if spec.sagemaker_deployment else default_region
        groups[(region, spec.instance_type)].append((target.instance_count, spec.branch_id))
    needs = []
    for (region, instance_type), branches in sorted(groups.items()):
        largest = sorted(branches, key=lambda branch: (-branch[0], branch[1]))[:max_concurrency]
        needs.append(
            InstanceNeed(
                region=region,
                instance_type=instance_type,
                instances=sum(count for count, _ in largest),
                branch_ids=tuple(branch_id for _, branch_id in largest),
            )
        )
    return needs


def _quota_values(pages: Iterable[dict[str, Any]], names: set[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for page in pages:
        for quota in page.get("Quotas", []):
            name = quota.get("QuotaName")
            if name in names and isinstance(quota.get("Value"), int | float):
                found.setdefault(name, float(quota["Value"]))
    return found


def endpoint_quotas(quotas_client: Any, instance_types: Iterable[str]) -> dict[str, float]:
    """Instance type -> the account's quota of instances for endpoint usage, where Service Quotas knows one.

    The applied value (``ListServiceQuotas``) wins; a quota that was never changed may only be listed
    with its default (``ListAWSDefaultServiceQuotas``). Instance types without either are left out.
    """
    by_name = {endpoint_quota_name(instance_type): instance_type for instance_type in instance_types}
    wanted = set(by_name)
    paginator = quotas_client.get_paginator("list_service_quotas")
    values = _quota_values(paginator.paginate(ServiceCode=SERVICE_CODE), wanted)
    missing = wanted - set(values)
    if missing:
        try:
            defaults = quotas_client.get_paginator("list_aws_default_service_quotas")
            values.update(_quota_values(defaults.paginate(ServiceCode=SERVICE_CODE), missing))
        except ClientError as exc:
            if error_code(exc) not in _NO_DEFAULTS_CODES:
                raise
    return {by_name[name]: value for name, value in values.items()}


def check_endpoint_quotas(
    needs: Sequence[InstanceNeed], client_factory: ClientFactory, max_concurrency: int
) -> list[str]:
    """Raise ``QuotaExceededError`` naming every quota the run would exceed; else one line per need.

    A quota Service Quotas does not list, or an outage of its API (after the client's retries), leaves
    that need unchecked: the run then meets SageMaker's own check at CreateEndpoint, as it did before.
    A caller that may not read quotas gets ``QuotaCheckError``, so a missing permission does not
    silently turn the check off.
    """
    notes: list[str] = []
    exceeded: list[str] = []
    by_region: dict[str, list[InstanceNeed]] = defaultdict(list)
    for need in needs:
        by_region[need.region].append(need)
    for region, region_needs in sorted(by_region.items()):
        try:
            quotas = endpoint_quotas(
                client_factory("service-quotas", region), [need.instance_type for need in region_needs]
            )
        except ClientError as exc:
            if error_code(exc) in _ACCESS_DENIED_CODES:
                raise QuotaCheckError(
                    f"may not read SageMaker quotas in {region} (servicequotas:ListServiceQuotas, "
                    f"servicequotas:ListAWSDefaultServiceQuotas): {error_message(exc)}"
                ) from exc
            logger.warning("SageMaker quotas in %s not checked: %s", region, error_message(exc))
            notes += [
                f"{need.instance_type} in {region}: not checked ({error_code(exc)})" for need in region_needs
            ]
            continue
        except BotoCoreError as exc:
            logger.warning("SageMaker quotas in %s not checked: %s", region, exc)
            notes += [
                f"{need.instance_type} in {region}: not checked ({type(exc).__name__})"
                for need in region_needs
            ]
            continue
        for need in region_needs:
            name = endpoint_quota_name(need.instance_type)
            limit = quotas.get(need.instance_type)
            if limit is None:
                logger.warning("no quota %r in %s: not checked", name, region)
                notes.append(f"{need.instance_type} in {region}: no quota listed, not checked")
                continue
            line = f"{need.instance_type} in {region}: {need.instances} at once, quota {limit:g}"
            if need.instances > limit:
                exceeded.append(
                    f"SageMaker quota {name!r} in {region} is {limit:g} instance(s), but this run may hold "
                    f"{need.instances} at once (branches {', '.join(need.branch_ids)} running together, "
                    f"max concurrency {max_concurrency})"
                )
            notes.append(line)
    if exceeded:
        raise QuotaExceededError(
            "\n".join(
                [
                    *exceeded,
                    "Request a quota increase in Service Quotas, or lower execution.max_parallel_branches "
                    "or the targets' instance_count.",
                ]
            )
        )
    return notes
