"""The ec2 target and what it launches, without AWS: checks, AMI parameters, vCPU quotas, the user data."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from fmbench.config import TARGET_ADAPTER, SuiteValidationError
from fmbench.ec2_deployment import (
    AMI_PARAMETERS,
    ec2_target_problems,
    instance_vcpus,
    plan_ec2_deployment,
    vcpu_quota_for,
)
from fmbench.pricing import instance_price_per_hour_usd
from fmbench.suite import validate_suite_data

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:fmbench/hf-token-AbCdEf"
TOKEN_VALUE = "hf_not-a-real-token-0123456789"


def target(**fields: Any) -> Any:
    return TARGET_ADAPTER.validate_python(
        {
            "name": "t",
            "platform": "ec2",
            "instance_type": "g5.xlarge",
            "container": "vllm",
            "model_source": {"hf_model_id": "Qwen/Qwen2.5-0.5B-Instruct"},
            **fields,
        }
    )


def user_data(**fields: Any) -> str:
    return plan_ec2_deployment(
        target(**fields), region="us-east-1", run_id="r1", branch_id="t-0a1b2c3d"
    ).user_data


def docker_runs(script: str) -> list[list[str]]:
    return [shlex.split(line) for line in script.splitlines() if line.startswith("docker run")]


def test_vllm_on_one_gpu_runs_the_pinned_image_on_the_port_with_the_model() -> None:
    script = user_data(port=8080)
    (run,) = docker_runs(script)
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    assert run[run.index("-p") + 1] == "8080:8000"
    assert run[run.index("--gpus") + 1] == "all"
    image_at = run.index("vllm/vllm-openai:v0.10.2")
    assert run[image_at + 1 :] == [
        "--model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--served-model-name",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--port",
        "8000",
    ]
    assert "secretsmanager" not in script and "HF_TOKEN" not in script


def test_the_token_is_read_at_boot_by_arn_and_passed_by_name_never_inline() -> None:
    script = user_data(hf_token_secret=f"secretsmanager:{SECRET_ARN}")
    fetch = next(line for line in script.splitlines() if "get-secret-value" in line)
    assert f"--secret-id {SECRET_ARN}" in fetch and "--region eu-west-1" in fetch  # the secret's own region
    (run,) = docker_runs(script)
    assert run[run.index("HF_TOKEN") - 1 : run.index("HF_TOKEN") + 1] == ["-e", "HF_TOKEN"]
    assert all("=" not in word for word in run if word.startswith("HF_TOKEN"))
    assert TOKEN_VALUE not in script


def test_copies_split_the_gpus_and_sit_behind_one_port() -> None:
    deployment = plan_ec2_deployment(
        target(instance_type="g5.12xlarge", container="tgi", model_copies=2),
        region="us-east-1",
        run_id="r1",
        branch_id="t-0a1b2c3d",
    )
    runs = docker_runs(deployment.user_data)
    servers = [run for run in runs if "fmbench-balancer" not in run]
    assert [run[run.index("--gpus") + 1] for run in servers] == ['"device=0,1"', '"device=2,3"']
    assert [run[run.index("-p") + 1] for run in servers] == ["8001:80", "8002:80"]
    assert all(run[-2:] == ["--num-shard", "2"] for run in servers)
    assert "upstream copies { server 127.0.0.1:8001; server 127.0.0.1:8002; }" in deployment.user_data
    assert "listen 8000;" in deployment.user_data
    assert deployment.copy_ports == [8001, 8002] and deployment.port == 8000


def test_image_and_args_overrides_replace_the_defaults() -> None:
    (run,) = docker_runs(user_data(image="my.registry/vllm:custom", args=["--max-model-len", "4096 tokens"]))
    assert run[run.index("my.registry/vllm:custom") + 1 :] == ["--max-model-len", "4096 tokens"]


def test_a_model_from_s3_is_synced_and_mounted() -> None:
    script = user_data(model_source={"model_data_s3_uri": "s3://models/qwen/"})
    assert "aws s3 sync s3://models/qwen/ /opt/fmbench/model" in script
    (run,) = docker_runs(script)
    assert run[run.index("-v") + 1] == "/opt/fmbench/model:/opt/ml/model:ro"
    assert run[run.index("--model") + 1] == "/opt/ml/model"


def test_lmi_on_neuron_logs_in_to_the_dlc_registry_and_maps_the_devices() -> None:
    deployment = plan_ec2_deployment(
        target(instance_type="inf2.24xlarge", container="lmi"), region="us-west-2", run_id="r", branch_id="b"
    )
    assert deployment.ami_parameter == AMI_PARAMETERS["neuron"]
    assert deployment.image.startswith("763104351884.dkr.ecr.us-west-2.amazonaws.com/djl-inference:")
    assert (
        "docker login --username AWS --password-stdin 763104351884.dkr.ecr.us-west-2" in deployment.user_data
    )
    (run,) = docker_runs(deployment.user_data)
    assert [w for w in run if w.startswith("--device=")] == [f"--device=/dev/neuron{i}" for i in range(6)]
    assert "OPTION_TENSOR_PARALLEL_DEGREE=6" in run and deployment.health_path == "/ping"


def test_ollama_on_cpu_pulls_the_model_before_serving() -> None:
    deployment = plan_ec2_deployment(
        target(instance_type="m7i.2xlarge", container="ollama", model_source=None, model="llama3.2:1b"),
        region="us-east-1",
        run_id="r",
        branch_id="b",
    )
    assert deployment.ami_parameter == AMI_PARAMETERS["cpu"]
    lines = deployment.user_data.splitlines()
    pull = lines.index("docker exec fmbench-pull ollama pull llama3.2:1b")
    serve = next(i for i, line in enumerate(lines) if "fmbench-serve-0" in line)
    assert pull < serve and "--gpus" not in lines[serve]
    assert deployment.served_model == "llama3.2:1b"


def test_the_suites_ami_is_used_as_given() -> None:
    deployment = plan_ec2_deployment(
        target(ami="ami-0123456789abcdef0"), region="us-east-1", run_id="r", branch_id="b"
    )
    assert (deployment.ami_id, deployment.ami_parameter) == ("ami-0123456789abcdef0", None)
    assert AMI_PARAMETERS["gpu"] == (
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
    )


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"instance_type": "g5.3xlarge"}, "instance_type", "not an EC2 instance type FMBench Flow knows"),
        ({"instance_type": "m7i.2xlarge"}, "container", "vllm runs on gpu hosts; m7i.2xlarge is a cpu"),
        ({"instance_type": "g5.12xlarge", "model_copies": 3}, "model_copies", "3 copies do not divide the 4"),
        ({"instance_type": "inf2.xlarge", "container": "tgi"}, "container", "tgi runs on gpu hosts"),
    ],
)
def test_targets_that_would_fail_once_paid_for_are_named(
    fields: dict[str, Any], field: str, fragment: str
) -> None:
    problems = ec2_target_problems(target(**fields))
    assert problems[0][0] == field and fragment in problems[0][1]


def test_field_errors_of_the_model_name_the_field() -> None:
    def refused(**fields: Any) -> list[str]:
        data = {
            "name": "s",
            "targets": [
                {
                    "name": "t",
                    "platform": "ec2",
                    "instance_type": "g5.xlarge",
                    "container": "vllm",
                    "model_source": {"hf_model_id": "Qwen/Qwen2.5-0.5B-Instruct"},
                    **fields,
                }
            ],
            "workload": {"synthetic": {"prompt_tokens": 10}, "bins": [{"min_tokens": 1, "max_tokens": 50}]},
            "load": {"concurrency": [1], "requests_per_level": 1},
        }
        with pytest.raises(SuiteValidationError) as error:
            validate_suite_data(data)
        return [str(p) for p in error.value.problems]

    assert refused(instance_type="ml.g5.xlarge") == [
        "targets.0.instance_type: not an EC2 instance type: must look like FAMILY.SIZE, e.g. g5.2xlarge "
        "(no ml. prefix)"
    ]
    assert refused(ami="ubuntu")[0].startswith("targets.0.ami: ")
    assert refused(hf_token_secret="hf_abc")[0].startswith("targets.0.hf_token_secret: ")
    assert refused(container="triton")[0].startswith("targets.0.container: ")
    assert "give model_source" in refused(model_source=None)[0]


def test_vcpus_quotas_and_prices_of_the_types_used() -> None:
    assert [instance_vcpus(t) for t in ("g5.xlarge", "g5.12xlarge", "p5.48xlarge", "m7i.large")] == [
        4,
        48,
        192,
        2,
    ]
    assert [
        vcpu_quota_for(t).code
        for t in ("g6e.xlarge", "p4d.24xlarge", "inf2.xlarge", "trn1.2xlarge", "m7i.2xlarge")
    ] == [
        "L-DB2E81BA",
        "L-417A185B",
        "L-1945791B",
        "L-2C3B7624",
        "L-1216C47A",
    ]
    assert instance_price_per_hour_usd("g5.xlarge") == 1.006  # EC2, not SageMaker's ml.g5.xlarge 1.408
    assert instance_price_per_hour_usd("ml.g5.xlarge") == 1.408
    assert instance_price_per_hour_usd("g5.xlarge", {"g5.xlarge": 0.9}) == 0.9
