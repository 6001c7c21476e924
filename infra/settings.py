"""Typed, validated view of the `fmbench:*` CDK context the app is built from."""

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from aws_cdk import aws_logs as logs
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fmbench.config import AWS_REGION_PATTERN, DEFAULT_JUDGES, SuiteValidationError
from fmbench.deployment import EXISTING_ENDPOINTS_KEY as EXISTING_ENDPOINTS_CONTEXT_KEY
from fmbench.deployment import JUDGE_ENDPOINTS_KEY as JUDGE_ENDPOINTS_CONTEXT_KEY
from fmbench.deployment import MAX_STATUS_POLLS
from fmbench.judgments import JUDGE_MODELS_KEY as JUDGE_MODELS_CONTEXT_KEY
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
EXISTING_ENDPOINTS_KEY: Final = EXISTING_ENDPOINTS_CONTEXT_KEY
SCHEDULES_KEY: Final = "fmbench:schedules"
MAX_DEPLOY_MINUTES_KEY: Final = "fmbench:maxDeployMinutes"
SWEEPER_INTERVAL_MINUTES_KEY: Final = "fmbench:sweeperIntervalMinutes"
SWEEP_REGIONS_KEY: Final = "fmbench:sweepRegions"
JUDGE_MODELS_KEY: Final = JUDGE_MODELS_CONTEXT_KEY
JUDGE_ENDPOINTS_KEY: Final = JUDGE_ENDPOINTS_CONTEXT_KEY
# The default panel's models (fmbench.config.DEFAULT_JUDGES): what the Evaluate task may invoke by default.
DEFAULT_JUDGE_MODELS: Final = tuple(judge["model_id"] for judge in DEFAULT_JUDGES)
# A Bedrock model or inference profile id (anthropic.claude-..., us.amazon.nova-pro-v1:0).
_JUDGE_MODEL_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9.:-]{0,199}")

# The retention periods CloudWatch Logs accepts (anything else is rejected at deploy time, not at synth),
# each with the CDK value the stack's log groups are given.
LOG_RETENTION_DAYS: Final[Mapping[int, logs.RetentionDays]] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
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


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    """An integer context value: int, or a decimal string as `cdk synth -c key=value` delivers it."""

    def parse(raw: Any) -> int:
        # bool is an int subclass; `true` for a day count is a mistake, not 1.
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _json_list(raw: Any) -> Any:
    """A list from context; `-c key='[...]'` on the command line delivers it as a JSON string."""
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"must be a JSON list, got {raw!r}") from None
    if not isinstance(raw, list | tuple):
        raise ValueError(f"must be a list, got {raw!r}")
    return raw


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"must be {what}, got {value!r}")
        return value

    return check


def _stack_name(value: Any) -> str:
    if not isinstance(value, str) or not _STACK_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"must be a CloudFormation stack name (letter, then letters, digits, hyphens; at most 128), "
            f"got {value!r}"
        )
    return value


def _log_retention(days: int) -> int:
    if days not in LOG_RETENTION_DAYS:
        raise ValueError(
            "must be one of CloudWatch Logs' retention periods "
            f"({', '.join(map(str, sorted(LOG_RETENTION_DAYS)))}), got {days}"
        )
    return days


def _suite(suite: dict[str, Any]) -> dict[str, Any]:
    # A stored suite is only ever run unattended: a mistake must fail `cdk synth`, not a night's run.
    try:
        validate_suite_data(suite)
    except SuiteValidationError as exc:
        raise ValueError(str(exc)) from None
    return suite


def _at_least(minimum: int) -> Any:
    return BeforeValidator(_int_at_least(minimum))


_BucketNames = Annotated[
    tuple[Annotated[str, BeforeValidator(_matching(_BUCKET_NAME_PATTERN, "an S3 bucket name"))], ...],
    BeforeValidator(_json_list),
]
_JudgeModels = Annotated[
    tuple[Annotated[str, BeforeValidator(_matching(_JUDGE_MODEL_PATTERN, "a Bedrock model id"))], ...],
    BeforeValidator(_json_list),
]
_EndpointNames = Annotated[
    tuple[
        Annotated[str, BeforeValidator(_matching(_ENDPOINT_NAME_PATTERN, "a SageMaker endpoint name"))], ...
    ],
    BeforeValidator(_json_list),
]
_Regions = Annotated[
    tuple[Annotated[str, BeforeValidator(_matching(_REGION_PATTERN, "an AWS region (us-west-2)"))], ...],
    BeforeValidator(_json_list),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


class NetworkSettings(_Model):
    """An existing VPC for the runner tasks, named by ids so that synth needs no lookup (no AWS call)."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    assign_public_ip: bool


class ScheduleSettings(_Model):
    """One stored suite started on a schedule, for regression runs of the same benchmark."""

    name: Annotated[
        str, BeforeValidator(_matching(_SCHEDULE_NAME_PATTERN, "1-64 letters, digits, '.', '_' or '-'"))
    ]
    expression: Annotated[
        str,
        BeforeValidator(
            _matching(
                _SCHEDULE_EXPRESSION_PATTERN, "an EventBridge Scheduler rate(...) or cron(...) expression"
            )
        ),
    ]
    suite: Annotated[dict[str, Any], AfterValidator(_suite)]


class FmbenchSettings(_Model):
    """Parsed once at the app's edge so constructs receive plain, checked values and never read context.

    Fields are read from the `fmbench:*` context keys (their aliases); an unknown `fmbench:*` key (a typo)
    is refused, and every error names its key. `fmbench:vpcId`, `fmbench:subnetIds` and
    `fmbench:assignPublicIp` together become `network`.
    """

    stack_name: Annotated[str, BeforeValidator(_stack_name)] = Field(alias=STACK_NAME_KEY)
    records_retention_days: Annotated[int, _at_least(1)] = Field(alias=RECORDS_RETENTION_DAYS_KEY)
    max_concurrent_branches: Annotated[int, _at_least(1)] = Field(alias=MAX_CONCURRENT_BRANCHES_KEY)
    athena_bytes_scanned_cutoff: Annotated[int, _at_least(ATHENA_MIN_BYTES_SCANNED_CUTOFF)] = Field(
        alias=ATHENA_BYTES_SCANNED_CUTOFF_KEY
    )
    log_retention_days: Annotated[int, AfterValidator(_log_retention), _at_least(1)] = Field(
        alias=LOG_RETENTION_DAYS_KEY
    )
    status_poll_seconds: Annotated[int, _at_least(1)] = Field(alias=STATUS_POLL_SECONDS_KEY)
    runner_timeout_minutes: Annotated[int, _at_least(1)] = Field(alias=RUNNER_TIMEOUT_MINUTES_KEY)
    execution_timeout_minutes: Annotated[int, _at_least(1)] = Field(alias=EXECUTION_TIMEOUT_MINUTES_KEY)
    runner_cpu: Annotated[int, _at_least(256)] = Field(alias=RUNNER_CPU_KEY)
    runner_memory_mib: Annotated[int, _at_least(512)] = Field(alias=RUNNER_MEMORY_MIB_KEY)
    network: NetworkSettings | None = None
    model_data_buckets: _BucketNames = Field(default=(), alias=MODEL_DATA_BUCKETS_KEY)
    existing_endpoint_names: _EndpointNames = Field(default=(), alias=EXISTING_ENDPOINTS_KEY)
    schedules: Annotated[tuple[ScheduleSettings, ...], BeforeValidator(_json_list)] = Field(
        default=(), alias=SCHEDULES_KEY
    )
    max_deploy_minutes: Annotated[int, _at_least(1)] = Field(default=60, alias=MAX_DEPLOY_MINUTES_KEY)
    # 0: no scheduled sweep (the cleanup after each execution still runs).
    sweeper_interval_minutes: Annotated[int, _at_least(0)] = Field(
        default=60, alias=SWEEPER_INTERVAL_MINUTES_KEY
    )
    sweep_regions: _Regions = Field(default=(), alias=SWEEP_REGIONS_KEY)
    # The Bedrock models (or inference profiles) the Evaluate task may invoke as judges.
    judge_models: _JudgeModels = Field(default=DEFAULT_JUDGE_MODELS, alias=JUDGE_MODELS_KEY)
    # The existing SageMaker endpoints the Evaluate task may invoke as judges (target endpoint_name).
    judge_endpoints: _EndpointNames = Field(default=(), alias=JUDGE_ENDPOINTS_KEY)

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> "FmbenchSettings":
        """Build from the app's context (`app.node.get_all_context()`): its `fmbench:*` keys.

        Values given on the command line (`cdk synth -c key=value`) arrive as strings, so numbers are
        accepted as int or as a decimal string and lists as JSON text.
        """
        ours = {key: value for key, value in context.items() if key.startswith("fmbench:")}
        try:
            return cls.model_validate(ours)
        except ValidationError as exc:
            raise ContextError("\n".join(_problems(exc))) from None

    @model_validator(mode="before")
    @classmethod
    def _network_from_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "network" in data:
            return data
        data = dict(data)
        vpc_id = data.pop(VPC_ID_KEY, None) or None
        subnet_ids = _keyed(SUBNET_IDS_KEY, _json_list, data.pop(SUBNET_IDS_KEY, None))
        assign_public_ip = data.pop(ASSIGN_PUBLIC_IP_KEY, None)
        if vpc_id is None:
            if subnet_ids:
                raise ValueError(f"{SUBNET_IDS_KEY}: subnets of an existing VPC need {VPC_ID_KEY} too")
            if assign_public_ip not in (None, ""):
                raise ValueError(f"{ASSIGN_PUBLIC_IP_KEY}: applies to an existing VPC ({VPC_ID_KEY}) only")
            return data
        if not isinstance(vpc_id, str) or not _VPC_ID_PATTERN.fullmatch(vpc_id):
            raise ValueError(f"{VPC_ID_KEY}: must be a VPC id (vpc-0123456789abcdef0), got {vpc_id!r}")
        if not subnet_ids:
            raise ValueError(f"{SUBNET_IDS_KEY}: name the runner's subnets in {vpc_id} ({VPC_ID_KEY} is set)")
        for index, subnet_id in enumerate(subnet_ids):
            if not isinstance(subnet_id, str) or not _SUBNET_ID_PATTERN.fullmatch(subnet_id):
                raise ValueError(f"{SUBNET_IDS_KEY}.{index}: must be a subnet id, got {subnet_id!r}")
        data["network"] = NetworkSettings(
            vpc_id=vpc_id, subnet_ids=tuple(subnet_ids), assign_public_ip=_bool(assign_public_ip)
        )
        return data

    @field_validator("schedules")
    @classmethod
    def _unique_schedule_names(cls, schedules: tuple[ScheduleSettings, ...]) -> tuple[ScheduleSettings, ...]:
        names = [schedule.name for schedule in schedules]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"{index}.name: duplicate schedule name {name!r}")
        return schedules

    @field_validator("sweep_regions")
    @classmethod
    def _distinct_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(regions)))

    @model_validator(mode="after")
    def _bounds_fit_together(self) -> "FmbenchSettings":
        # The plan bounds a branch's status polls by the deployment wait over the poll interval, and caps
        # them (every poll adds events to the execution's history, which Step Functions limits): a wait the
        # cap would cut short is refused here rather than shortened without a word.
        polls = math.ceil(self.max_deploy_minutes * 60 / self.status_poll_seconds)
        if polls > MAX_STATUS_POLLS:
            raise ValueError(
                f"{MAX_DEPLOY_MINUTES_KEY}: {self.max_deploy_minutes} minutes at one status check every "
                f"{self.status_poll_seconds} s ({STATUS_POLL_SECONDS_KEY}) takes {polls} checks, more than "
                f"the {MAX_STATUS_POLLS} a branch may make; raise {STATUS_POLL_SECONDS_KEY} to "
                f"{math.ceil(self.max_deploy_minutes * 60 / MAX_STATUS_POLLS)} or more, or shorten the wait"
            )
        # An execution that times out stops where it is: no Catch runs, so its Teardown does not either (the
        # cleanup after the execution deletes the endpoint later). A branch's deployment wait and its runner
        # must therefore end (and be caught into the teardown) well before the execution does.
        if self.execution_timeout_minutes <= self.runner_timeout_minutes + self.max_deploy_minutes:
            raise ValueError(
                f"{EXECUTION_TIMEOUT_MINUTES_KEY}: must exceed {RUNNER_TIMEOUT_MINUTES_KEY} "
                f"({self.runner_timeout_minutes}) + {MAX_DEPLOY_MINUTES_KEY} ({self.max_deploy_minutes}) so "
                "that a stuck deployment or runner is caught and its endpoint torn down before the execution "
                f"itself times out, got {self.execution_timeout_minutes}"
            )
        low, high, step = FARGATE_MEMORY_MIB.get(self.runner_cpu, (0, 0, 1))
        if self.runner_cpu not in FARGATE_MEMORY_MIB:
            raise ValueError(
                f"{RUNNER_CPU_KEY}: must be a Fargate CPU size "
                f"({', '.join(map(str, FARGATE_MEMORY_MIB))}), got {self.runner_cpu}"
            )
        memory = self.runner_memory_mib
        if not (low <= memory <= high and (memory - low) % step == 0):
            raise ValueError(
                f"{RUNNER_MEMORY_MIB_KEY}: Fargate with {self.runner_cpu} CPU units takes {low}-{high} MiB "
                f"in steps of {step}, got {memory}"
            )
        return self


def _keyed(key: str, parse: Callable[[Any], Any], raw: Any) -> Any:
    """`parse(raw)` with its error prefixed by the key (for values validated outside a field)."""
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _bool(raw: Any) -> bool:
    if raw is None or raw == "":
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ValueError(f"{ASSIGN_PUBLIC_IP_KEY}: must be true or false, got {raw!r}")


def _problems(exc: ValidationError) -> list[str]:
    """`key[.index[.field]]: reason` per error; errors of cross-key checks carry their key already."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        elif error["type"] == "extra_forbidden":
            reason = "not a setting of this app (a typo?)"
        else:
            reason = error["msg"]
        problems.append(f"{where}: {reason}" if where else reason)
    return problems
