"""Context parsing: cdk.json defaults, CLI-style string values, and errors that name the context key."""

import re
from typing import Any

import pytest

from infra.app import cdk_json_context
from infra.settings import ContextError, FmbenchSettings, NetworkSettings
from infra.storage import catalog_name_for, glue_type

VALID: dict[str, Any] = {
    "fmbench:stackName": "FmbenchFlow",
    "fmbench:recordsRetentionDays": 90,
    "fmbench:maxConcurrentBranches": 10,
    "fmbench:athenaBytesScannedCutoff": 10 * 1024**3,
    "fmbench:logRetentionDays": 30,
    "fmbench:statusPollSeconds": 60,
    "fmbench:maxDeployMinutes": 60,
    "fmbench:runnerTimeoutMinutes": 240,
    "fmbench:executionTimeoutMinutes": 1440,
    "fmbench:runnerCpu": 2048,
    "fmbench:runnerMemoryMiB": 4096,
    "fmbench:sweeperIntervalMinutes": 60,
}


def test_cdk_json_defaults() -> None:
    settings = FmbenchSettings.from_context(cdk_json_context())

    assert settings == FmbenchSettings(
        stack_name="FmbenchFlow",
        records_retention_days=90,
        max_concurrent_branches=10,
        athena_bytes_scanned_cutoff=10_737_418_240,
        log_retention_days=30,
        status_poll_seconds=60,
        runner_timeout_minutes=240,
        execution_timeout_minutes=1440,
        runner_cpu=2048,
        runner_memory_mib=4096,
        network=None,
        model_data_buckets=(),
        existing_endpoint_names=(),
        schedules=(),
        max_deploy_minutes=60,
        sweeper_interval_minutes=60,
        sweep_regions=(),
    )


def test_cli_string_values_are_parsed_as_integers() -> None:
    """`cdk synth -c fmbench:recordsRetentionDays=30` delivers the string "30"."""
    context = {**VALID, "fmbench:recordsRetentionDays": "30", "fmbench:maxConcurrentBranches": "4"}

    settings = FmbenchSettings.from_context(context)

    assert settings.records_retention_days == 30
    assert settings.max_concurrent_branches == 4


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fmbench:recordsRetentionDays", 0),
        ("fmbench:recordsRetentionDays", "ninety"),
        ("fmbench:recordsRetentionDays", True),
        ("fmbench:recordsRetentionDays", 1.5),
        ("fmbench:recordsRetentionDays", None),
        ("fmbench:maxConcurrentBranches", 0),
        ("fmbench:athenaBytesScannedCutoff", 9_999_999),
        ("fmbench:stackName", "1stack"),
        ("fmbench:stackName", "fmbench_flow"),
        ("fmbench:stackName", None),
        ("fmbench:logRetentionDays", 10),
        ("fmbench:statusPollSeconds", 0),
        ("fmbench:executionTimeoutMinutes", 240),
        # The runner's 240 minutes plus the 60 of the deployment wait do not fit.
        ("fmbench:executionTimeoutMinutes", 300),
        ("fmbench:maxDeployMinutes", 0),
        # 121 checks of the 60 s default interval: more than the plan's cap of 120.
        ("fmbench:maxDeployMinutes", 121),
        ("fmbench:sweeperIntervalMinutes", -1),
        ("fmbench:sweeperIntervalMinutes", None),
        ("fmbench:sweepRegions", ["us-west"]),
        ("fmbench:runnerCpu", 3000),
        ("fmbench:runnerMemoryMiB", 2048),
        ("fmbench:runnerMemoryMiB", 4500),
        ("fmbench:vpcId", "vpc-1"),
        ("fmbench:subnetIds", ["subnet-0123456789abcdef0"]),
        ("fmbench:modelDataBuckets", ["Not_A_Bucket"]),
        ("fmbench:modelDataBuckets", "not json"),
        ("fmbench:existingEndpointNames", ["has_underscore"]),
        ("fmbench:schedules", [{"name": "nightly", "expression": "every night", "suite": {}}]),
        ("fmbench:schedules", [{"name": "nightly", "suite": {}}]),
    ],
)
def test_invalid_context_fails_naming_the_key(key: str, value: Any) -> None:
    context = {**VALID, key: value}

    # The message starts with the key (or an item of it: `fmbench:schedules.0.expression: ...`).
    with pytest.raises(ContextError, match=f"^{re.escape(key)}[.:]"):
        FmbenchSettings.from_context(context)


def test_a_sweeper_interval_of_zero_turns_the_sweep_off_and_regions_are_deduplicated() -> None:
    context = {
        **VALID,
        "fmbench:sweeperIntervalMinutes": "0",
        "fmbench:sweepRegions": '["us-west-2", "eu-west-1", "us-west-2"]',
    }

    settings = FmbenchSettings.from_context(context)

    assert (settings.sweeper_interval_minutes, settings.sweep_regions) == (0, ("eu-west-1", "us-west-2"))


def test_a_deployment_wait_beyond_the_plans_status_checks_names_the_interval_that_would_fit() -> None:
    context = {**VALID, "fmbench:statusPollSeconds": "15", "fmbench:maxDeployMinutes": "45"}

    with pytest.raises(ContextError) as raised:
        FmbenchSettings.from_context(context)

    assert str(raised.value) == (
        "fmbench:maxDeployMinutes: 45 minutes at one status check every 15 s (fmbench:statusPollSeconds) "
        "takes 180 checks, more than the 120 a branch may make; raise fmbench:statusPollSeconds to 23 or "
        "more, or shorten the wait"
    )


def test_an_existing_vpc_is_named_by_ids() -> None:
    context = {
        **VALID,
        "fmbench:vpcId": "vpc-0123456789abcdef0",
        "fmbench:subnetIds": '["subnet-0123456789abcdef0"]',
        "fmbench:assignPublicIp": "true",
    }

    assert FmbenchSettings.from_context(context).network == NetworkSettings(
        vpc_id="vpc-0123456789abcdef0", subnet_ids=("subnet-0123456789abcdef0",), assign_public_ip=True
    )


def test_a_vpc_needs_its_subnets() -> None:
    context = {**VALID, "fmbench:vpcId": "vpc-0123456789abcdef0"}

    with pytest.raises(ContextError, match=r"^fmbench:subnetIds: name the runner's subnets"):
        FmbenchSettings.from_context(context)


@pytest.mark.parametrize(
    ("stack_name", "catalog_name"),
    [("FmbenchFlow", "fmbench_flow"), ("FmbenchFlow-ci", "fmbench_flow_ci"), ("fmbench2", "fmbench2")],
)
def test_catalog_names_follow_the_stack_name(stack_name: str, catalog_name: str) -> None:
    assert catalog_name_for(stack_name) == catalog_name


def test_unknown_column_type_fails_at_synth() -> None:
    with pytest.raises(ValueError, match="'dobule'"):
        glue_type("array<dobule>")


def test_an_unknown_fmbench_key_is_refused_and_other_context_is_left_alone() -> None:
    """A typo in a key would otherwise leave its setting at the default without a word; CDK's own
    context (feature flags) is not this app's to check."""
    context = {**VALID, "fmbench:logRetentionDay": 7, "@aws-cdk/aws-iam:minimizePolicies": True}

    with pytest.raises(ContextError, match=r"^fmbench:logRetentionDay: not a setting of this app"):
        FmbenchSettings.from_context(context)
    assert FmbenchSettings.from_context({**VALID, "@aws-cdk/aws-iam:minimizePolicies": True}).stack_name == (
        "FmbenchFlow"
    )
