"""Workflow tier: the synthesized state machine, deployed into an in-process moto server and executed there.

One moto server for the session, in this process, so that the shims (``shims.py``) patch the backends it
serves; every test starts from an empty moto and deploys the synthesized template into it (``harness.py``).
Every client reaches moto through ``AWS_ENDPOINT_URL``: the handlers', the runner subprocess's and
pyarrow's S3 client too. Modules here are imported by name (``shims``, ``harness``): pytest puts this
folder on sys.path, and an installed package already owns the name ``tests``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from unittest import mock

import pytest
import requests

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from harness import REGION, RESULTS_BUCKET, DeployedWorkflow, deploy
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer
from shims import (
    AthenaShim,
    EcsRunTaskShim,
    LambdaShim,
    LoopbackInstancesShim,
    SageMakerFaults,
    ScheduledRulesShim,
    ServiceQuotasShim,
    StopExecutionShim,
)

from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings

# Tiny waits keep the tier fast: a status check every second, for at most two minutes (120 checks, the
# plan's cap) unless a test lowers the cap.
WORKFLOW_CONTEXT: Final = {
    "fmbench:statusPollSeconds": 1,
    "fmbench:maxDeployMinutes": 2,
    # The existing SageMaker endpoint the Evaluate task may invoke as a judge (test_workflow_evaluation.py).
    "fmbench:judgeEndpoints": ["judge-endpoint"],
}
# The account's SageMaker endpoint quotas for the instance types the tests deploy.
ENDPOINT_QUOTAS: Final = {"ml.g4dn.xlarge": 4.0, "ml.g4dn.2xlarge": 4.0}
# The account's EC2 vCPU quotas: Running On-Demand G and VT instances (ec2 branches on g5).
EC2_VCPU_QUOTAS: Final = {"L-DB2E81BA": 64.0}
EMULATOR_TIMING: Final = {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 6}


# ------------------------------------------------------------------------------------ session fixtures


@pytest.fixture(scope="session")
def workflow_template() -> dict[str, Any]:
    """The stack's CloudFormation template, synthesized as `cdk synth` would (cdk-nag plugin included)."""
    from aws_cdk.assertions import Template

    from infra.app import build_app

    built = build_app(WORKFLOW_CONTEXT)
    template: dict[str, Any] = Template.from_stack(built.stack).to_json()
    return template


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    """One emulator serves every target: OpenAI paths for 'openai' targets, SageMaker runtime paths
    (LMI-style answers) for 'sagemaker' targets whose endpoint_url points here."""
    with EmulatorProcess(EmulatorSettings(port=0, model="served-model", **EMULATOR_TIMING)) as emulator:
        yield emulator.url


# ---------------------------------------------------------------------------------------- per test


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty moto, reachable through the standard variables by every client (and subprocess)."""
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        # moto's interpreter calls the services it integrates over http://localhost:$MOTO_PORT.
        "MOTO_PORT": moto_endpoint.rsplit(":", 1)[1],
        "FMBENCH_PROGRESS_INTERVAL_S": "60",
    }.items():
        monkeypatch.setenv(name, value)
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock.patch.dict(default_user_config, config):
        yield moto_endpoint


@pytest.fixture
def workflow(aws: str, workflow_template: dict[str, Any], tmp_path: Path) -> Iterator[DeployedWorkflow]:
    """The template deployed into moto with every shim installed."""
    lambdas, runner = LambdaShim(), EcsRunTaskShim(tmp_path)
    athena, faults, quotas = (
        AthenaShim(RESULTS_BUCKET),
        SageMakerFaults(),
        ServiceQuotasShim(ENDPOINT_QUOTAS, EC2_VCPU_QUOTAS),
    )
    instances = LoopbackInstancesShim()
    with (
        lambdas.installed(),
        runner.installed(),
        athena.installed(),
        faults.installed(),
        quotas.installed(),
        StopExecutionShim().installed(),
        ScheduledRulesShim().installed(),
        instances.installed(),
    ):
        deployment = deploy(workflow_template)
        yield DeployedWorkflow(deployment, RESULTS_BUCKET, lambdas, runner, athena, faults, instances)
