"""Settings of the workflow's Lambda functions, read from their environment and checked before a step runs.

One model per function, holding only what that function needs, so that each function's environment (set by
the CDK stack) stays as small as its permissions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench.config import AWS_REGION_PATTERN

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


class PlanSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)
    max_concurrent_branches: int = Field(alias="FMBENCH_MAX_CONCURRENT_BRANCHES", ge=1, le=1000)


class DeploySettings(_EnvironmentSettings):
    sagemaker_role_arn: str = Field(alias="FMBENCH_SAGEMAKER_ROLE_ARN", pattern=ROLE_ARN_PATTERN)


class StatusSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)


class TeardownSettings(_EnvironmentSettings):
    pass


class RenderSettings(_EnvironmentSettings):
    results_bucket: str = Field(alias="FMBENCH_RESULTS_BUCKET", pattern=BUCKET_NAME_PATTERN)
    athena_database: str = Field(alias="FMBENCH_ATHENA_DATABASE", min_length=1)
    athena_workgroup: str = Field(alias="FMBENCH_ATHENA_WORKGROUP", min_length=1)
