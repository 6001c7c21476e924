"""Throttling and 5xx answers are retried by every cloud step's client; a retried Deploy never duplicates."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.sagemaker.exceptions import SagemakerClientError
from moto.sagemaker.models import SageMakerModelBackend

from fmbench.cloud.aws import RETRY_MAX_ATTEMPTS, RETRY_MODE, client
from fmbench.cloud.sagemaker import deploy, plan_deployment
from fmbench.deployment import resource_names
from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/fmbench-sagemaker"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"


class ThrottlingError(SagemakerClientError):
    code = "ThrottlingException"


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def branch_spec() -> BranchSpec:
    data = {
        "name": "retry-suite",
        "targets": [
            {
                "name": "llama",
                "platform": "sagemaker",
                "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
                "image_uri": IMAGE,
                "instance_type": "ml.g4dn.xlarge",
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root="s3://b", run_id="run-r").branches
    return spec.model_copy(update={"sagemaker_deployment": plan_deployment(spec.target, REGION)})


def counts(sm: Any) -> tuple[int, int, int]:
    return (
        len(sm.list_models()["Models"]),
        len(sm.list_endpoint_configs()["EndpointConfigs"]),
        len(sm.list_endpoints()["Endpoints"]),
    )


def test_every_cloud_step_makes_its_clients_through_the_retry_policy() -> None:
    """No boto3 client of the workflow's steps, the CLI or the report is made outside fmbench.cloud.aws."""
    config = client("sagemaker", REGION).meta.config
    assert (config.retries["mode"], config.retries["total_max_attempts"]) == (RETRY_MODE, RETRY_MAX_ATTEMPTS)
    offenders = []
    for folder in ("fmbench", "lambdas", "report"):
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "fmbench" / "cloud" / "aws.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("client", "resource")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("boto3", "session")
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
    for handler in (REPO / "lambdas").glob("*.py"):
        text = handler.read_text(encoding="utf-8")
        if "def handler" in text:
            assert "from fmbench.cloud.aws import client" in text, handler.name


def test_a_throttled_create_is_retried_by_the_client_and_creates_one_endpoint(
    mocked_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SageMakerModelBackend.create_endpoint
    calls: list[str] = []

    def throttled_once(self: SageMakerModelBackend, *args: Any, **kwargs: Any) -> Any:
        calls.append("CreateEndpoint")
        if len(calls) == 1:
            raise ThrottlingError("Rate exceeded")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SageMakerModelBackend, "create_endpoint", throttled_once)
    sm = client("sagemaker", REGION)

    result = deploy(sm, branch_spec(), ROLE_ARN)

    assert calls == ["CreateEndpoint", "CreateEndpoint"]  # retried inside the one call, with backoff
    assert result.created == tuple(
        f"{kind}/{result.endpoint_name}" for kind in ("model", "endpoint-config", "endpoint")
    )
    assert counts(sm) == (1, 1, 1)


class FailsOnce:
    """SageMaker whose first CreateEndpoint fails for good (after the model and config were created)."""

    def __init__(self, sm: Any) -> None:
        self._sm = sm
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sm, name)

    def create_endpoint(self, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            error = {"Error": {"Code": "InternalFailure", "Message": "retries exhausted"}}
            raise ClientError(error, "CreateEndpoint")  # type: ignore[arg-type]
        return self._sm.create_endpoint(**kwargs)


def test_a_deploy_retried_after_a_partial_failure_finishes_what_the_first_began(mocked_aws: None) -> None:
    sm = boto3.client("sagemaker", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    flaky = FailsOnce(sm)
    spec = branch_spec()
    name = resource_names(spec.run_id, spec.branch_id).endpoint

    with pytest.raises(ClientError, match="retries exhausted"):
        deploy(flaky, spec, ROLE_ARN)
    assert counts(sm) == (1, 1, 0)
    retried = deploy(flaky, spec, ROLE_ARN)
    again = deploy(flaky, spec, ROLE_ARN, clock=lambda: time.time() + 60)

    assert retried.created == (f"endpoint/{name}",)
    assert retried.reused == (f"model/{name}", f"endpoint-config/{name}")
    assert again.created == () and len(again.reused) == 3
    assert counts(sm) == (1, 1, 1)
