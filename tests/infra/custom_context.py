"""Context that moves every optional setting away from its default, for the tests of what context changes."""

from typing import Any

SCHEDULED_SUITE: dict[str, Any] = {
    "name": "nightly-regression",
    "targets": [
        {"name": "haiku", "platform": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"}
    ],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
    "load": {"concurrency": [1, 2], "requests_per_level": 10},
    # The schedule's baseline policy: each run is compared with the latest succeeded run of the suite.
    "regression": {"baseline": "latest"},
}
# Every optional setting away from its default, strings where `cdk synth -c` would give strings.
CUSTOM_CONTEXT: dict[str, Any] = {
    "fmbench:stackName": "FmbenchFlow-custom",
    "fmbench:vpcId": "vpc-0123456789abcdef0",
    "fmbench:subnetIds": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"],
    "fmbench:schedules": [{"name": "nightly", "expression": "cron(0 3 * * ? *)", "suite": SCHEDULED_SUITE}],
    "fmbench:modelDataBuckets": '["my-model-artifacts"]',
    "fmbench:existingEndpointNames": ["My-Llama31-8B-Endpoint"],
    "fmbench:judgeEndpoints": '["My-Judge-Endpoint", "other-judge"]',
    "fmbench:statusPollSeconds": "15",
    "fmbench:maxDeployMinutes": "30",
    "fmbench:sweeperIntervalMinutes": "15",
    "fmbench:sweepRegions": ["us-west-2", "eu-west-1"],
    "fmbench:runnerTimeoutMinutes": "60",
    "fmbench:executionTimeoutMinutes": "600",
    "fmbench:runnerCpu": "4096",
    "fmbench:runnerMemoryMiB": "8192",
    "fmbench:logRetentionDays": "7",
}
