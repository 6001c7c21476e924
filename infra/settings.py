"""Typed, validated view of the `fmbench:*` CDK context the app is built from."""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from fmbench.config import AWS_REGION_PATTERN, SuiteValidationError
from fmbench.deployment import MAX_STATUS_POLLS
from fmbench.suite import validate_suite_data

STACK_NAME_KEY: Final = "fmbench:stackName"
RECORDS_RETENTION_DAYS_KEY: Final = "fmbench:recordsRetentionDays"
MAX_CONCURRENT_BRANCHES_KEY: Final = "fmbench:maxConcurrentBranches"
ATHENA_BYTES_SCANNED_CUTOFF_KEY: Final = "fmbench:athenaBytesScannedCutoff"
LOG_RETENTION_DAYS_KEY: Final = "fmbench:logRetentionDays"
STATUS_POLL_SECONDS_KEY: Final = "fmbench:statusPollSeconds"
RUNNER_TIMEOUT_MINUTES_KEY: Final = "fmbench:runnerTimeoutMinutes"
EXECUTION_TIMEOUT_MINUTES_KEY: Final = "fmbench:executionTimeoutMinutes"
RUNNER_CPU_KEY: Final = "fmbench:runnerCpu"
RUNNER_MEMORY_MIB_KEY: Final = "fmbench:runnerMemoryMiB"
VPC_ID_KEY: Final = "fmbench:vpcId"
SUBNET_IDS_KEY: Final = "fmbench:subnetIds"
ASSIGN_PUBLIC_IP_KEY: Final = "fmbench:assignPublicIp"
MODEL_DATA_BUCKETS_KEY: Final = "fmbench:modelDataBuckets"
EXISTING_ENDPOINTS_KEY: Final = "fmbench:existingEndpointNames"
SCHEDULES_KEY: Final = "fmbench:schedules"
MAX_DEPLOY_MINUTES_KEY: Final = "fmbench:maxDeployMinutes"
SWEEPER_INTERVAL_MINUTES_KEY: Final = "fmbench:sweeperIntervalMinutes"
SWEEP_REGIONS_KEY: Final = "fmbench:sweepRegions"

# The retention periods CloudWatch Logs accepts (anything else is rejected at deploy time, not at synth).
LOG_RETENTION_DAYS: Final = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
# Fargate task sizes: CPU units and, per CPU size, the memory range (MiB) and step Fargate accepts.
FARGATE_MEMORY_MIB: Final[dict[int, tuple[int, int, int]]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}

# Athena refuses a per-query data usage control below 10 MB.
ATHENA_MIN_BYTES_SCANNED_CUTOFF: Final = 10_000_000
# CloudFormation stack names: a letter, then letters, digits and hyphens, at most 128 characters.
_STACK_NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")
_VPC_ID_PATTERN: Final = re.compile(r"vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_SUBNET_ID_PATTERN: Final = re.compile(r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_BUCKET_NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ENDPOINT_NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
# EventBridge Scheduler schedule names: letters, digits, '.', '_' and '-', at most 64.
_SCHEDULE_NAME_PATTERN: Final = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_SCHEDULE_EXPRESSION_PATTERN: Final = re.compile(r"(rate|cron)\(.+\)")
_REGION_PATTERN: Final = re.compile(AWS_REGION_PATTERN)


class ContextError(ValueError):
    """A context value is missing or out of range; the message names the context key."""


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """An existing VPC for the runner tasks, named by ids so that synth needs no lookup (no AWS call)."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    assign_public_ip: bool


@dataclass(frozen=True, kw_only=True)
class ScheduleSettings:
    """One stored suite started on a schedule, for regression runs of the same benchmark."""

    name: str
    expression: str
    suite: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class FmbenchSettings:
    """Parsed once at the app's edge so constructs receive plain, checked values and never read context."""

    stack_name: str
    records_retention_days: int
    max_concurrent_branches: int
    athena_bytes_scanned_cutoff: int
    log_retention_days: int
    status_poll_seconds: int
    runner_timeout_minutes: int
    execution_timeout_minutes: int
    runner_cpu: int
    runner_memory_mib: int
    network: NetworkSettings | None = None
    model_data_buckets: tuple[str, ...] = ()
    existing_endpoint_names: tuple[str, ...] = ()
    schedules: tuple[ScheduleSettings, ...] = field(default=())
    max_deploy_minutes: int = 60
    # 0: no scheduled sweep (the cleanup after each execution still runs).
    sweeper_interval_minutes: int = 60
    sweep_regions: tuple[str, ...] = ()

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> "FmbenchSettings":
        """Build from a context lookup such as `app.node.try_get_context`.

        Values given on the command line (`cdk synth -c key=value`) arrive as strings, so numbers are
        accepted as int or as a decimal string.
        """
        stack_name = get(STACK_NAME_KEY)
        if not isinstance(stack_name, str) or not _STACK_NAME_PATTERN.fullmatch(stack_name):
            raise ContextError(
                f"{STACK_NAME_KEY}: must be a CloudFormation stack name "
                f"(letter, then letters, digits, hyphens; at most 128), got {stack_name!r}"
            )
        log_retention_days = _int_at_least(get, LOG_RETENTION_DAYS_KEY, 1)
        if log_retention_days not in LOG_RETENTION_DAYS:
            raise ContextError(
                f"{LOG_RETENTION_DAYS_KEY}: must be one of CloudWatch Logs' retention periods "
                f"({', '.join(map(str, sorted(LOG_RETENTION_DAYS)))}), got {log_retention_days}"
            )
        runner_timeout_minutes = _int_at_least(get, RUNNER_TIMEOUT_MINUTES_KEY, 1)
        status_poll_seconds = _int_at_least(get, STATUS_POLL_SECONDS_KEY, 1)
        max_deploy_minutes = _int_at_least(get, MAX_DEPLOY_MINUTES_KEY, 1)
        # The plan bounds a branch's status polls by the deployment wait over the poll interval, and caps
        # them (every poll adds events to the execution's history, which Step Functions limits): a wait the
        # cap would cut short is refused here rather than shortened without a word.
        polls = math.ceil(max_deploy_minutes * 60 / status_poll_seconds)
        if polls > MAX_STATUS_POLLS:
            raise ContextError(
                f"{MAX_DEPLOY_MINUTES_KEY}: {max_deploy_minutes} minutes at one status check every "
                f"{status_poll_seconds} s ({STATUS_POLL_SECONDS_KEY}) takes {polls} checks, more than the "
                f"{MAX_STATUS_POLLS} a branch may make; raise {STATUS_POLL_SECONDS_KEY} to "
                f"{math.ceil(max_deploy_minutes * 60 / MAX_STATUS_POLLS)} or more, or shorten the wait"
            )
        # An execution that times out stops where it is: no Catch runs, so its Teardown does not either (the
        # cleanup after the execution deletes the endpoint later). A branch's deployment wait and its runner
        # must therefore end (and be caught into the teardown) well before the execution does.
        execution_timeout_minutes = _int_at_least(get, EXECUTION_TIMEOUT_MINUTES_KEY, 1)
        if execution_timeout_minutes <= runner_timeout_minutes + max_deploy_minutes:
            raise ContextError(
                f"{EXECUTION_TIMEOUT_MINUTES_KEY}: must exceed {RUNNER_TIMEOUT_MINUTES_KEY} "
                f"({runner_timeout_minutes}) + {MAX_DEPLOY_MINUTES_KEY} ({max_deploy_minutes}) so that a "
                "stuck deployment or runner is caught and its endpoint torn down before the execution "
                f"itself times out, got {execution_timeout_minutes}"
            )
        runner_cpu, runner_memory_mib = _fargate_size(get)
        return cls(
            stack_name=stack_name,
            records_retention_days=_int_at_least(get, RECORDS_RETENTION_DAYS_KEY, 1),
            max_concurrent_branches=_int_at_least(get, MAX_CONCURRENT_BRANCHES_KEY, 1),
            athena_bytes_scanned_cutoff=_int_at_least(
                get, ATHENA_BYTES_SCANNED_CUTOFF_KEY, ATHENA_MIN_BYTES_SCANNED_CUTOFF
            ),
            log_retention_days=log_retention_days,
            status_poll_seconds=status_poll_seconds,
            runner_timeout_minutes=runner_timeout_minutes,
            execution_timeout_minutes=execution_timeout_minutes,
            runner_cpu=runner_cpu,
            runner_memory_mib=runner_memory_mib,
            network=_network(get),
            model_data_buckets=_bucket_names(get),
            existing_endpoint_names=_endpoint_names(get),
            schedules=_schedules(get),
            max_deploy_minutes=max_deploy_minutes,
            sweeper_interval_minutes=_int_at_least(get, SWEEPER_INTERVAL_MINUTES_KEY, 0),
            sweep_regions=_regions(get),
        )


def _int_at_least(get: Callable[[str], Any], key: str, minimum: int) -> int:
    raw = get(key)
    # bool is an int subclass; `true` for a day count is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {raw!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ContextError(f"{key}: must be an integer >= {minimum}, got {value}")
    return value


def _fargate_size(get: Callable[[str], Any]) -> tuple[int, int]:
    cpu = _int_at_least(get, RUNNER_CPU_KEY, 256)
    if cpu not in FARGATE_MEMORY_MIB:
        raise ContextError(
            f"{RUNNER_CPU_KEY}: must be a Fargate CPU size "
            f"({', '.join(map(str, FARGATE_MEMORY_MIB))}), got {cpu}"
        )
    memory = _int_at_least(get, RUNNER_MEMORY_MIB_KEY, 512)
    low, high, step = FARGATE_MEMORY_MIB[cpu]
    if not (low <= memory <= high and (memory - low) % step == 0):
        raise ContextError(
            f"{RUNNER_MEMORY_MIB_KEY}: Fargate with {cpu} CPU units takes {low}-{high} MiB "
            f"in steps of {step}, got {memory}"
        )
    return cpu, memory


def _network(get: Callable[[str], Any]) -> NetworkSettings | None:
    vpc_id, subnet_ids = get(VPC_ID_KEY) or None, _json_list(get, SUBNET_IDS_KEY)
    assign_public_ip = get(ASSIGN_PUBLIC_IP_KEY)
    if vpc_id is None:
        if subnet_ids:
            raise ContextError(f"{SUBNET_IDS_KEY}: subnets of an existing VPC need {VPC_ID_KEY} too")
        if assign_public_ip not in (None, ""):
            raise ContextError(f"{ASSIGN_PUBLIC_IP_KEY}: applies to an existing VPC ({VPC_ID_KEY}) only")
        return None
    if not isinstance(vpc_id, str) or not _VPC_ID_PATTERN.fullmatch(vpc_id):
        raise ContextError(f"{VPC_ID_KEY}: must be a VPC id (vpc-0123456789abcdef0), got {vpc_id!r}")
    if not subnet_ids:
        raise ContextError(f"{SUBNET_IDS_KEY}: name the runner's subnets in {vpc_id} ({VPC_ID_KEY} is set)")
    for index, subnet_id in enumerate(subnet_ids):
        if not isinstance(subnet_id, str) or not _SUBNET_ID_PATTERN.fullmatch(subnet_id):
            raise ContextError(f"{SUBNET_IDS_KEY}.{index}: must be a subnet id, got {subnet_id!r}")
    return NetworkSettings(
        vpc_id=vpc_id, subnet_ids=tuple(subnet_ids), assign_public_ip=_bool(get, ASSIGN_PUBLIC_IP_KEY, False)
    )


def _bool(get: Callable[[str], Any], key: str, default: bool) -> bool:
    raw = get(key)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ContextError(f"{key}: must be true or false, got {raw!r}")


def _json_list(get: Callable[[str], Any], key: str) -> list[Any]:
    """A list from context; `-c key='[...]'` on the command line delivers it as a JSON string."""
    raw = get(key)
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ContextError(f"{key}: must be a JSON list, got {raw!r}") from None
    if not isinstance(raw, list):
        raise ContextError(f"{key}: must be a list, got {raw!r}")
    return raw


def _bucket_names(get: Callable[[str], Any]) -> tuple[str, ...]:
    names = _json_list(get, MODEL_DATA_BUCKETS_KEY)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not _BUCKET_NAME_PATTERN.fullmatch(name):
            raise ContextError(f"{MODEL_DATA_BUCKETS_KEY}.{index}: must be an S3 bucket name, got {name!r}")
    return tuple(names)


def _endpoint_names(get: Callable[[str], Any]) -> tuple[str, ...]:
    names = _json_list(get, EXISTING_ENDPOINTS_KEY)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not _ENDPOINT_NAME_PATTERN.fullmatch(name):
            raise ContextError(
                f"{EXISTING_ENDPOINTS_KEY}.{index}: must be a SageMaker endpoint name, got {name!r}"
            )
    return tuple(names)


def _regions(get: Callable[[str], Any]) -> tuple[str, ...]:
    regions = _json_list(get, SWEEP_REGIONS_KEY)
    for index, region in enumerate(regions):
        if not isinstance(region, str) or not _REGION_PATTERN.fullmatch(region):
            raise ContextError(
                f"{SWEEP_REGIONS_KEY}.{index}: must be an AWS region (us-west-2), got {region!r}"
            )
    return tuple(sorted(set(regions)))


def _schedules(get: Callable[[str], Any]) -> tuple[ScheduleSettings, ...]:
    schedules: list[ScheduleSettings] = []
    for index, entry in enumerate(_json_list(get, SCHEDULES_KEY)):
        where = f"{SCHEDULES_KEY}.{index}"
        if not isinstance(entry, dict) or set(entry) != {"name", "expression", "suite"}:
            raise ContextError(f"{where}: must be an object with exactly name, expression and suite")
        name, expression, suite = entry["name"], entry["expression"], entry["suite"]
        if not isinstance(name, str) or not _SCHEDULE_NAME_PATTERN.fullmatch(name):
            raise ContextError(f"{where}.name: must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        if any(s.name == name for s in schedules):
            raise ContextError(f"{where}.name: duplicate schedule name {name!r}")
        if not isinstance(expression, str) or not _SCHEDULE_EXPRESSION_PATTERN.fullmatch(expression):
            raise ContextError(
                f"{where}.expression: must be an EventBridge Scheduler rate(...) or cron(...) expression, "
                f"got {expression!r}"
            )
        if not isinstance(suite, dict):
            raise ContextError(f"{where}.suite: must be a suite object (the execution input), got {suite!r}")
        # A stored suite is only ever run unattended: a mistake must fail `cdk synth`, not a night's run.
        try:
            validate_suite_data(suite)
        except SuiteValidationError as exc:
            raise ContextError(f"{where}.suite: {exc}") from None
        schedules.append(ScheduleSettings(name=name, expression=expression, suite=suite))
    return tuple(schedules)
