"""A branch's EC2 instance: launch, status, terminate, the vCPU quota check, and the cleanup's view of them.

What is launched (AMI parameter, image, user data, ports) is fixed at planning time in
``fmbench.ec2_deployment``; here are only the AWS calls (docs/ec2.md). Every instance and security group
carries the branch's tags and ``fmbench:expires-at``; RunInstances' client token is the branch's derived
name, so a retried Deploy finds the instance the first attempt launched instead of launching a second.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from botocore.exceptions import ClientError

from fmbench.cloud.aws import error_code, error_message
from fmbench.deployment import (
    CREATING,
    FAILED,
    IN_SERVICE,
    NAME_PREFIX,
    TAG_BRANCH_ID,
    TAG_EXPIRES_AT,
    TAG_RUN_ID,
    EndpointBusyError,
    branch_tags,
    expires_at_text,
    resource_names,
)
from fmbench.ec2_deployment import Ec2Deployment, instance_vcpus, vcpu_quota_for
from fmbench.spec import BranchSpec

logger = logging.getLogger(__name__)

SERVICE_CODE: Final = "ec2"
# Instance states of a branch that may still cost or start to: what teardown and cleanup terminate.
LIVE_STATES: Final = ("pending", "running", "stopping", "stopped")
_GONE_STATES: Final = frozenset({"shutting-down", "terminated"})
# RunInstances answers that no retry fixes: the suite or the account must change (docs/ec2.md).
_LAUNCH_REFUSALS: Final = {
    "InvalidAMIID.NotFound": "ami",
    "InvalidAMIID.Malformed": "ami",
    "InvalidAMIID.Unavailable": "ami",
    "InvalidParameterValue": "instance_type",
    "Unsupported": "instance_type",
    "VcpuLimitExceeded": "instance_type",
    "InstanceLimitExceeded": "instance_type",
    "InsufficientInstanceCapacity": "instance_type",
}
# Answers that another subnet (another availability zone) may not give.
_TRY_ANOTHER_SUBNET: Final = frozenset({"InsufficientInstanceCapacity", "Unsupported"})

ClientFactory = Callable[[str, str], Any]


class Ec2LaunchError(RuntimeError):
    """The instance could not be launched; ``field`` is the target field at fault. Nothing is left running."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}")


class Ec2NetworkMissingError(RuntimeError):
    """The stack gave the deploy step no subnets, security group or instance profile for EC2 branches."""


@dataclass(frozen=True, slots=True)
class Ec2Network:
    """Where an instance goes and who may reach it: the runner's subnets and security group."""

    subnet_ids: tuple[str, ...]
    runner_security_group_id: str
    instance_profile_arn: str


@dataclass(frozen=True, slots=True)
class LaunchResult:
    instance_id: str
    private_ip: str
    created_epoch_s: float
    launched: bool  # False: an earlier attempt's instance was found


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def _epoch_s(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def branch_instances(
    ec2: Any, run_id: str, branch_id: str, states: Sequence[str] = LIVE_STATES
) -> list[dict]:
    """The branch's instances in ``states``, found by its run and branch tags."""
    filters = [
        {"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]},
        {"Name": f"tag:{TAG_BRANCH_ID}", "Values": [branch_id]},
        {"Name": "instance-state-name", "Values": list(states)},
    ]
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            found += reservation.get("Instances", [])
    return found


def resolve_ami(ssm: Any, ec2: Any, deployment: Ec2Deployment) -> tuple[str, str]:
    """(AMI id, its root device name): the suite's AMI, else the one the public parameter names today."""
    ami = deployment.ami_id
    if ami is None:
        try:
            ami = str(ssm.get_parameter(Name=deployment.ami_parameter)["Parameter"]["Value"])
        except ClientError as exc:
            raise Ec2LaunchError(
                "ami", f"cannot read SSM parameter {deployment.ami_parameter}: {error_message(exc)}"
            ) from exc
    try:
        images = ec2.describe_images(ImageIds=[ami]).get("Images", [])
    except ClientError as exc:
        raise Ec2LaunchError("ami", f"AMI {ami} cannot be used: {error_message(exc)}") from exc
    if not images:
        raise Ec2LaunchError("ami", f"AMI {ami} does not exist in {deployment.region} or is not shared")
    return ami, str(images[0].get("RootDeviceName") or "/dev/xvda")


def ensure_security_group(
    ec2: Any, deployment: Ec2Deployment, network: Ec2Network, tags: Mapping[str, str]
) -> str:
    """The branch's security group: inbound only from the runner's group, on the server's port(s)."""
    runner_group = ec2.describe_security_groups(GroupIds=[network.runner_security_group_id])[
        "SecurityGroups"
    ][0]
    vpc_id = runner_group["VpcId"]
    name = deployment.instance_name
    existing = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
    )["SecurityGroups"]
    if existing:
        return str(existing[0]["GroupId"])
    group_id = str(
        ec2.create_security_group(
            GroupName=name,
            Description="FMBench Flow serving instance: inbound from the runner only",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tag_list(tags)}],
        )["GroupId"]
    )
    ports = [deployment.port, *deployment.copy_ports]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": min(ports),
                "ToPort": max(ports),
                "UserIdGroupPairs": [
                    {"GroupId": network.runner_security_group_id, "Description": "FMBench runner tasks"}
                ],
            }
        ],
    )
    return group_id


def _delete_security_group(ec2: Any, group_id: str) -> bool:
    """True when deleted, False when already gone; ``EndpointBusyError`` while an instance still uses it."""
    try:
        ec2.delete_security_group(GroupId=group_id)
    except ClientError as exc:
        code = error_code(exc)
        if code == "InvalidGroup.NotFound":
            return False
        if code == "DependencyViolation":
            raise EndpointBusyError(
                f"security group {group_id} is still in use by a terminating instance: try again later"
            ) from exc
        raise
    return True


def launch(
    ec2: Any,
    ssm: Any,
    spec: BranchSpec,
    network: Ec2Network | None,
    clock: Callable[[], float] = time.time,
) -> LaunchResult:
    """Launch (or find) the branch's instance; a refused launch leaves no instance and no security group."""
    deployment = spec.ec2_deployment
    if deployment is None:
        raise Ec2LaunchError("platform", f"branch {spec.branch_id} has no EC2 deployment planned")
    existing = branch_instances(ec2, spec.run_id, spec.branch_id)
    if existing:
        instance = existing[0]
        return LaunchResult(
            instance_id=str(instance["InstanceId"]),
            private_ip=str(instance.get("PrivateIpAddress", "")),
            created_epoch_s=_epoch_s(instance.get("LaunchTime")) or clock(),
            launched=False,
        )
    if network is None or not network.subnet_ids:
        raise Ec2NetworkMissingError(
            "the deploy step has no subnets, runner security group or instance profile for EC2 branches "
            "(FMBENCH_EC2_SUBNET_IDS, FMBENCH_RUNNER_SECURITY_GROUP_ID, FMBENCH_EC2_INSTANCE_PROFILE_ARN)"
        )
    ami, root_device = resolve_ami(ssm, ec2, deployment)
    tags = {
        "Name": deployment.instance_name,
        TAG_EXPIRES_AT: expires_at_text(clock() + deployment.endpoint_ttl_s),
        **branch_tags(suite_name=spec.suite_name, run_id=spec.run_id, branch_id=spec.branch_id),
    }
    group_id = ensure_security_group(ec2, deployment, network, tags)
    last: ClientError | None = None
    for subnet_id in network.subnet_ids:
        try:
            reservation = ec2.run_instances(
                ImageId=ami,
                InstanceType=deployment.instance_type,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet_id,
                SecurityGroupIds=[group_id],
                IamInstanceProfile={"Arn": network.instance_profile_arn},
                UserData=deployment.user_data,
                ClientToken=deployment.instance_name,
                InstanceInitiatedShutdownBehavior="terminate",
                MetadataOptions={
                    "HttpTokens": "required",
                    "HttpEndpoint": "enabled",
                    "HttpPutResponseHopLimit": 2,
                },
                BlockDeviceMappings=[
                    {
                        "DeviceName": root_device,
                        "Ebs": {
                            "VolumeSize": deployment.root_volume_gib,
                            "VolumeType": "gp3",
                            "DeleteOnTermination": True,
                            "Encrypted": True,
                        },
                    }
                ],
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": _tag_list(tags)},
                    {"ResourceType": "volume", "Tags": _tag_list(tags)},
                ],
            )
        except ClientError as exc:
            last = exc
            if error_code(exc) in _TRY_ANOTHER_SUBNET:
                continue
            break
        instance = reservation["Instances"][0]
        return LaunchResult(
            instance_id=str(instance["InstanceId"]),
            private_ip=str(instance.get("PrivateIpAddress", "")),
            created_epoch_s=_epoch_s(instance.get("LaunchTime")) or clock(),
            launched=True,
        )
    assert last is not None
    _delete_security_group(ec2, group_id)  # nothing uses it: the launch was refused
    code = error_code(last)
    field = _LAUNCH_REFUSALS.get(code)
    if field is None and code.startswith("InvalidAMIID"):
        field = "ami"
    if field is None:
        raise last
    raise Ec2LaunchError(
        field, f"EC2 refused to launch {deployment.instance_type} from {ami}: {code}: {error_message(last)}"
    ) from last


@dataclass(frozen=True, slots=True)
class InstanceState:
    status: str  # the workflow's Creating / InService / Failed
    ec2_state: str | None
    failure_reason: str | None
    created_epoch_s: float | None = None
    in_service_epoch_s: float | None = None
    private_ip: str | None = None


def instance_status(
    ec2: Any, run_id: str, branch_id: str, clock: Callable[[], float] = time.time
) -> InstanceState:
    """Creating while pending, InService once running, Failed when it is gone, stopped or never launched.

    Whether the server in it answers is the runner's to wait for (bounded): the runner is in the VPC, the
    status step need not be (docs/ec2.md).
    """
    instances = branch_instances(ec2, run_id, branch_id, (*LIVE_STATES, "shutting-down", "terminated"))
    if not instances:
        return InstanceState(FAILED, None, f"branch {branch_id} has no instance")
    instance = max(instances, key=lambda i: _epoch_s(i.get("LaunchTime")) or 0.0)
    state = str(instance["State"]["Name"])
    created = _epoch_s(instance.get("LaunchTime"))
    ip = instance.get("PrivateIpAddress")
    if state == "running":
        return InstanceState(IN_SERVICE, state, None, created, clock(), ip)
    if state == "pending":
        return InstanceState(CREATING, state, None, created, None, ip)
    reason = instance.get("StateReason", {}).get("Message") or f"instance {instance['InstanceId']} is {state}"
    return InstanceState(FAILED, state, str(reason), created, None, ip)


def terminate(ec2: Any, run_id: str, branch_id: str) -> list[str]:
    """Terminate the branch's instances and delete its security group; returns what this call ended.

    Idempotent. The security group can only go once its instance has terminated: while it shuts down, the
    group answers DependencyViolation and ``EndpointBusyError`` asks for a retry (the state machine retries
    Teardown on it every minute), after the instance has already been told to terminate.
    """
    ended: list[str] = []
    live = [str(i["InstanceId"]) for i in branch_instances(ec2, run_id, branch_id)]
    if live:
        ec2.terminate_instances(InstanceIds=live)
        ended += [f"instance/{instance_id}" for instance_id in live]
    name = resource_names(run_id, branch_id).endpoint
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "group-name", "Values": [name]},
            {"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]},
        ]
    )["SecurityGroups"]
    for group in groups:
        if _delete_security_group(ec2, str(group["GroupId"])):
            ended.append(f"security-group/{group['GroupId']}")
    return ended


# ------------------------------------------------------------------------------------------ cleanup


@dataclass(frozen=True, slots=True)
class Ec2Resource:
    kind: str  # instance | security-group
    id: str
    created_epoch_s: float | None
    tags: dict[str, str]

    @property
    def run_id(self) -> str:
        return self.tags[TAG_RUN_ID]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.id}"


def product_ec2_resources(ec2: Any) -> list[Ec2Resource]:
    """Live instances, then security groups, named ``fmb-...`` and tagged ``fmbench:run-id``."""
    found: list[Ec2Resource] = []
    filters = [
        {"Name": "tag-key", "Values": [TAG_RUN_ID]},
        {"Name": "tag:Name", "Values": [f"{NAME_PREFIX}*"]},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ]
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                tags = _tags_of(instance)
                if tags.get("Name", "").startswith(NAME_PREFIX) and TAG_RUN_ID in tags:
                    found.append(
                        Ec2Resource(
                            "instance",
                            str(instance["InstanceId"]),
                            _epoch_s(instance.get("LaunchTime")),
                            tags,
                        )
                    )
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "tag-key", "Values": [TAG_RUN_ID]},
            {"Name": "group-name", "Values": [f"{NAME_PREFIX}*"]},
        ]
    )["SecurityGroups"]
    for group in groups:
        tags = _tags_of(group)
        if str(group.get("GroupName", "")).startswith(NAME_PREFIX) and TAG_RUN_ID in tags:
            found.append(Ec2Resource("security-group", str(group["GroupId"]), None, tags))
    return found


def delete_ec2_resources(ec2: Any, resources: Sequence[Ec2Resource]) -> tuple[list[str], list[str]]:
    """(ended, busy): instances terminated first, then their groups (busy while an instance shuts down)."""
    ended: list[str] = []
    busy: list[str] = []
    instances = [r for r in resources if r.kind == "instance"]
    if instances:
        ec2.terminate_instances(InstanceIds=[r.id for r in instances])
        ended += [r.label for r in instances]
    for group in (r for r in resources if r.kind == "security-group"):
        try:
            if _delete_security_group(ec2, group.id):
                ended.append(group.label)
        except EndpointBusyError as exc:
            logger.warning("%s", exc)
            busy.append(group.label)
    return ended, busy


# ------------------------------------------------------------------------------------------- quotas


@dataclass(frozen=True, slots=True)
class VcpuNeed:
    region: str
    quota_code: str
    quota_name: str
    vcpus: int
    branch_ids: tuple[str, ...]


def vcpus_needed_at_once(specs: Sequence[BranchSpec], max_concurrency: int) -> list[VcpuNeed]:
    """Per region and EC2 vCPU quota, the vCPUs of the ``max_concurrency`` largest ec2 branches."""
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for spec in specs:
        deployment = spec.ec2_deployment
        if deployment is None:
            continue
        quota = vcpu_quota_for(deployment.instance_type)
        groups[(deployment.region, quota.code)].append(
            (instance_vcpus(deployment.instance_type) or 0, spec.branch_id)
        )
    needs = []
    for (region, code), branches in sorted(groups.items()):
        largest = sorted(branches, key=lambda b: (-b[0], b[1]))[:max_concurrency]
        name = next(
            q.name
            for q in [vcpu_quota_for(s.ec2_deployment.instance_type) for s in specs if s.ec2_deployment]
            if q.code == code
        )
        needs.append(VcpuNeed(region, code, name, sum(v for v, _ in largest), tuple(b for _, b in largest)))
    return needs


def check_vcpu_quotas(
    needs: Sequence[VcpuNeed], client_factory: ClientFactory, max_concurrency: int
) -> list[str]:
    """Raise ``QuotaExceededError`` for every EC2 vCPU quota the run would exceed; else one note per need.

    As for SageMaker (fmbench.cloud.quotas): a quota that cannot be read because of permissions fails
    closed (``QuotaCheckError``); an outage or an unlisted quota leaves it unchecked, and says so.
    """
    from fmbench.cloud.quotas import QuotaCheckError, QuotaExceededError

    notes: list[str] = []
    exceeded: list[str] = []
    for need in needs:
        quotas = client_factory("service-quotas", need.region)
        value: float | None = None
        try:
            value = float(
                quotas.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=need.quota_code)["Quota"][
                    "Value"
                ]
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in ("AccessDenied", "AccessDeniedException"):
                raise QuotaCheckError(
                    f"may not read EC2 quotas in {need.region} (servicequotas:GetServiceQuota): "
                    f"{error_message(exc)}"
                ) from exc
            if code not in ("NoSuchResourceException", "NoSuchResource"):
                notes.append(f"{need.quota_name} in {need.region}: not checked ({code})")
                continue
            try:
                value = float(
                    quotas.get_aws_default_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=need.quota_code)[
                        "Quota"
                    ]["Value"]
                )
            except ClientError as default_exc:
                notes.append(f"{need.quota_name} in {need.region}: not checked ({error_code(default_exc)})")
                continue
        notes.append(f"{need.quota_name} in {need.region}: {need.vcpus} vCPUs at once, quota {value:g}")
        if need.vcpus > value:
            exceeded.append(
                f"EC2 quota {need.quota_name!r} ({need.quota_code}) in {need.region} is {value:g} vCPUs, "
                f"but this run may hold {need.vcpus} at once (branches {', '.join(need.branch_ids)} running "
                f"together, max concurrency {max_concurrency})"
            )
    if exceeded:
        raise QuotaExceededError(
            "\n".join(
                [
                    *exceeded,
                    "Request a quota increase in Service Quotas, or lower execution.max_parallel_branches.",
                ]
            )
        )
    return notes
