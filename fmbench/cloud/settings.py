"""Settings of the workflow's Lambda functions, read from their environment and checked before a step runs.

One model per function, holding only what that function needs, so that each function's environment (set by
the CDK stack) stays as small as its permissions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fmbench.cloud.ec2 import Ec2Network
from fmbench.config import AWS_REGION_PATTERN, DEFAULT_ENDPOINT_TTL_S
from fmbench.estimate import DEFAULT_MAX_DEPLOY_S, DEFAULT_STATUS_POLL_S, EstimateSettings

BUCKET_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$"


class SettingsError(ValueError):
    """The function's environment is incomplete or wrong; the message names each variable."""


class _EnvironmentSettings(BaseModel):
    # Lambda's environment holds many variables of its own: only ours are read, the rest ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    region: str = Field(alias="AWS_REGION", pattern=AWS_REGION_PATTERN)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        try:
            return cls.model_validate(dict(env))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"environment of {cls.__name__}: {problems}") from None


def _json_text(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class PlanSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)
    max_concurrent_branches: int = Field(alias="FMBENCH_MAX_CONCURRENT_BRANCHES", ge=1, le=1000)
    # The stack's bounds on a branch's life, for the cost estimate (fmbench.estimate); the defaults are
    # cdk.json's poll interval and no cap, so an older stack's plan still estimates, only less tightly.
    status_poll_s: float = Field(default=DEFAULT_STATUS_POLL_S, alias="FMBENCH_STATUS_POLL_SECONDS", gt=0)
    max_deploy_s: float = Field(default=DEFAULT_MAX_DEPLOY_S, alias="FMBENCH_MAX_DEPLOY_SECONDS", gt=0)
    runner_timeout_s: float | None = Field(default=None, alias="FMBENCH_RUNNER_TIMEOUT_SECONDS", gt=0)
    execution_timeout_s: float | None = Field(default=None, alias="FMBENCH_EXECUTION_TIMEOUT_SECONDS", gt=0)
    # The existing endpoints the stack's runner may invoke (a JSON list; cdk.json's
    # fmbench:existingEndpointNames). Missing means none: the runner's role then grants only fmb-* names.
    existing_endpoint_names: Annotated[tuple[str, ...], BeforeValidator(_json_text)] = Field(
        default=(), alias="FMBENCH_EXISTING_ENDPOINT_NAMES"
    )
    # The Bedrock models the stack's Evaluate task may invoke as judges (a JSON list; cdk.json's
    # fmbench:judgeModels). Missing (an older stack): the judges are not checked against it.
    judge_models: Annotated[tuple[str, ...] | None, BeforeValidator(_json_text)] = Field(
        default=None, alias="FMBENCH_JUDGE_MODELS"
    )
    # The existing SageMaker endpoints the stack's Evaluate task may invoke as judges (a JSON list; cdk.json's
    # fmbench:judgeEndpoints). Missing (an older stack): not checked against it (only that each is InService).
    judge_endpoints: Annotated[tuple[str, ...] | None, BeforeValidator(_json_text)] = Field(
        default=None, alias="FMBENCH_JUDGE_ENDPOINTS"
    )
    # The Glue database whose records table gets the run's partitions (fmbench.cloud.catalog); without it
    # (an older stack) nothing is registered.
    athena_database: str | None = Field(default=None, alias="FMBENCH_ATHENA_DATABASE", min_length=1)

    def max_status_polls(self, cap: int) -> int:
        """Status polls that cover the deployment allowance, at most ``cap`` (the Map item's bound)."""
        return max(1, min(cap, math.ceil(self.max_deploy_s / self.status_poll_s)))

    def estimate_settings(self, max_status_polls: int) -> EstimateSettings:
        return EstimateSettings(
            status_poll_s=self.status_poll_s,
            max_status_polls=max_status_polls,
            runner_timeout_s=self.runner_timeout_s,
            execution_timeout_s=self.execution_timeout_s,
        )


class DeploySettings(_EnvironmentSettings):
    sagemaker_role_arn: str = Field(alias="FMBENCH_SAGEMAKER_ROLE_ARN", pattern=ROLE_ARN_PATTERN)
    # Where ec2 branches' instances go (docs/ec2.md): the runner's subnets and security group, and the
    # instance profile their user data runs with. Missing: an ec2 branch fails at Deploy, saying so.
    ec2_subnet_ids: str = Field(
        default="", alias="FMBENCH_EC2_SUBNET_IDS", pattern=r"^(subnet-[0-9a-z]+,?)*$"
    )
    runner_security_group_id: str | None = Field(
        default=None, alias="FMBENCH_RUNNER_SECURITY_GROUP_ID", pattern=r"^sg-[0-9a-z]+$"
    )
    ec2_instance_profile_arn: str | None = Field(
        default=None,
        alias="FMBENCH_EC2_INSTANCE_PROFILE_ARN",
        pattern=r"^arn:aws[a-z-]*:iam::\d{12}:instance-profile/\S+$",
    )

    def ec2_network(self) -> Ec2Network | None:
        subnets = tuple(s for s in self.ec2_subnet_ids.split(",") if s)
        if not subnets or self.runner_security_group_id is None or self.ec2_instance_profile_arn is None:
            return None
        return Ec2Network(subnets, self.runner_security_group_id, self.ec2_instance_profile_arn)


class StatusSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)


class TeardownSettings(_EnvironmentSettings):
    # Optional: with it, Teardown records when it deleted the endpoint (result.json's actual cost).
    results_bucket: str | None = Field(
        default=None, alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN
    )


class RenderSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)
    athena_database: str = Field(alias="FMBENCH_ATHENA_DATABASE", min_length=1)
    athena_workgroup: str = Field(alias="FMBENCH_ATHENA_WORKGROUP", min_length=1)


class CleanupSettings(_EnvironmentSettings):
    """The cleanup function reads the state machine and the regions from each event's plan."""


class SweeperSettings(_EnvironmentSettings):
    state_machine_arn: str = Field(
        alias="FMBENCH_STATE_MACHINE_ARN",
        pattern=r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:\S+$",
    )
    default_ttl_s: float = Field(
        default=DEFAULT_ENDPOINT_TTL_S,
        alias="FMBENCH_DEFAULT_ENDPOINT_TTL_SECONDS",
        gt=0,
        description="Time-to-live from creation of a product resource without an fmbench:expires-at tag.",
    )
    sweep_regions: str = Field(
        default="",
        alias="FMBENCH_SWEEP_REGIONS",
        pattern=r"^([a-z]{2}(-[a-z]+)+-\d{1,2})?(,[a-z]{2}(-[a-z]+)+-\d{1,2})*$",
        description="Comma-separated regions where suites deploy endpoints, besides the function's own.",
    )

    @property
    def regions(self) -> list[str]:
        return sorted({self.region, *(r for r in self.sweep_regions.split(",") if r)})
