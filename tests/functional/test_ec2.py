"""An ec2 branch against moto's EC2: launch, describe, terminate, tags, the security group, the user data,
the vCPU quota check, the cleanup and the sweep; refusals leave nothing running (docs/ec2.md)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.servicequotas.responses import ServiceQuotasResponse

from fmbench.cloud.cleanup import cleanup_run, sweep
from fmbench.cloud.ec2 import (
    Ec2LaunchError,
    Ec2Network,
    check_vcpu_quotas,
    instance_status,
    launch,
    terminate,
    vcpus_needed_at_once,
)
from fmbench.cloud.quotas import QuotaExceededError
from fmbench.cloud.settings import DeploySettings, StatusSettings, TeardownSettings
from fmbench.cloud.steps import (
    _planned_deployment,
    branch_item,
    check_endpoint,
    deploy_branch,
    teardown_branch,
)
from fmbench.deployment import TAG_BRANCH_ID, TAG_EXPIRES_AT, TAG_RUN_ID, TAG_SUITE, resource_names
from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

REGION = "us-east-1"
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fmbench/hf-token-AbCdEf"
PROFILE_ARN = "arn:aws:iam::123456789012:instance-profile/fmbench-serving"
BUCKET = "fmbench-results-ec2"


def suite_data(**target: Any) -> dict[str, Any]:
    base = {
        "name": "qwen-ec2",
        "platform": "ec2",
        "instance_type": "g5.xlarge",
        "container": "vllm",
        "model_source": {"hf_model_id": "Qwen/Qwen2.5-0.5B-Instruct"},
        "hf_token_secret": f"secretsmanager:{SECRET_ARN}",
        "port": 8000,
    }
    return {
        "name": "ec2-suite",
        "targets": [{**base, **target}],
        "workload": {"synthetic": {"prompt_tokens": 20}, "bins": [{"min_tokens": 1, "max_tokens": 100}]},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture
def network(aws: None) -> Ec2Network:
    """A VPC with two subnets and the runner's security group, as the stack has them."""
    ec2 = boto3.client("ec2", REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.60.0.0/20")["Vpc"]["VpcId"]
    subnets = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.60.{i}.0/24")["Subnet"]["SubnetId"] for i in range(2)
    )
    runner_sg = ec2.create_security_group(GroupName="runner", Description="runner tasks", VpcId=vpc_id)
    profile = boto3.client("iam").create_instance_profile(InstanceProfileName="fmbench-serving")
    assert profile["InstanceProfile"]["Arn"] == PROFILE_ARN
    return Ec2Network(subnets, runner_sg["GroupId"], PROFILE_ARN)


def any_ami() -> str:
    """One of the public AMIs moto knows (describing all of them takes seconds)."""
    (image,) = boto3.client("ec2", REGION).describe_images(ImageIds=["ami-03cf127a"])["Images"]
    return str(image["ImageId"])


def planned(run_id: str = "run-ec2-1", **target: Any) -> BranchSpec:
    """The branch spec as the cloud Plan writes it (the EC2 deployment resolved)."""
    plan = plan_suite(validate_suite_data(suite_data(**target)), storage_root=f"s3://{BUCKET}", run_id=run_id)
    return _planned_deployment(plan.branches[0], REGION, 3600, 600.0)


def live_instances(ec2: Any) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def test_launch_tags_the_instance_requires_imdsv2_and_admits_only_the_runner(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(ami=any_ami())
    result = launch(ec2, ssm, spec, network)

    (instance,) = live_instances(ec2)
    assert instance["InstanceId"] == result.instance_id and result.launched
    assert instance["InstanceType"] == "g5.xlarge"
    assert instance["SubnetId"] == network.subnet_ids[0]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"] == PROFILE_ARN
    tags = tags_of(instance)
    name = resource_names(spec.run_id, spec.branch_id).endpoint
    assert tags["Name"] == name
    assert (tags[TAG_SUITE], tags[TAG_RUN_ID], tags[TAG_BRANCH_ID]) == (
        "ec2-suite",
        spec.run_id,
        spec.branch_id,
    )
    assert TAG_EXPIRES_AT in tags

    (group_id,) = [g["GroupId"] for g in instance["SecurityGroups"]]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["GroupName"] == name and tags_of(group)[TAG_RUN_ID] == spec.run_id
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 8000, 8000)
    assert rule["IpRanges"] == [] and [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [
        network.runner_security_group_id
    ]

    user_data = base64.b64decode(
        ec2.describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")["UserData"][
            "Value"
        ]
    ).decode()
    assert user_data == spec.ec2_deployment.user_data  # type: ignore[union-attr]
    assert "vllm/vllm-openai:v0.10.2" in user_data and "-p 8000:8000" in user_data
    assert f"--secret-id {SECRET_ARN}" in user_data and "-e HF_TOKEN" in user_data

    again = launch(ec2, ssm, spec, network)  # a retried Deploy finds the first attempt's instance
    assert again.instance_id == result.instance_id and not again.launched
    assert len(live_instances(ec2)) == 1


def test_status_and_terminate_leave_nothing_and_are_idempotent(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(ami=any_ami())
    launched = launch(ec2, ssm, spec, network)
    state = instance_status(ec2, spec.run_id, spec.branch_id)
    assert state.status == "InService" and state.private_ip == launched.private_ip

    ended = terminate(ec2, spec.run_id, spec.branch_id)
    assert ended[0] == f"instance/{launched.instance_id}" and ended[1].startswith("security-group/sg-")
    assert live_instances(ec2) == []
    name = resource_names(spec.run_id, spec.branch_id).endpoint
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        == []
    )
    assert terminate(ec2, spec.run_id, spec.branch_id) == []
    gone = instance_status(ec2, spec.run_id, spec.branch_id)
    assert gone.status == "Failed" and gone.ec2_state == "terminated"


def test_the_ami_comes_from_the_public_parameter_of_the_host_kind(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(instance_type="m7i.2xlarge", container="ollama", hf_token_secret=None, model="llama3.2:1b")
    deployment = spec.ec2_deployment
    assert deployment is not None and deployment.ami_id is None
    assert deployment.ami_parameter == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    expected = ssm.get_parameter(Name=deployment.ami_parameter)["Parameter"]["Value"]
    launch(ec2, ssm, spec, network)
    (instance,) = live_instances(ec2)
    assert instance["ImageId"] == expected


def test_an_unknown_ami_is_a_clear_error_and_nothing_is_left(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(ami="ami-0123456789abcdef0")
    with pytest.raises(
        Ec2LaunchError, match=r"^ami: AMI ami-0123456789abcdef0 does not exist|^ami: AMI .* cannot"
    ):
        launch(ec2, ssm, spec, network)
    assert live_instances(ec2) == []
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": [TAG_RUN_ID]}])[
        "SecurityGroups"
    ]
    assert groups == []


def test_a_refused_launch_deletes_the_security_group_it_made(network: Ec2Network) -> None:
    """EC2's own refusal (here: no vCPU quota left) names the field and leaves no group behind."""
    from botocore.exceptions import ClientError

    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(ami=any_ami())
    refusal = ClientError(
        {"Error": {"Code": "VcpuLimitExceeded", "Message": "no vCPUs left"}}, "RunInstances"
    )
    with (
        mock.patch.object(type(ec2), "run_instances", side_effect=refusal, autospec=False),
        pytest.raises(Ec2LaunchError, match=r"^instance_type: EC2 refused .*VcpuLimitExceeded"),
    ):
        launch(ec2, ssm, spec, network)
    assert live_instances(ec2) == []
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": [TAG_RUN_ID]}])[
        "SecurityGroups"
    ]
    assert groups == []


def test_unknown_instance_type_is_refused_before_anything_is_created(aws: None) -> None:
    from fmbench.config import SuiteValidationError

    with pytest.raises(SuiteValidationError) as refused:
        validate_suite_data(suite_data(instance_type="g5.3xlarge"))
    (problem,) = refused.value.problems
    assert problem.path == "targets.0.instance_type" and "not an EC2 instance type" in problem.reason
    assert live_instances(boto3.client("ec2", REGION)) == []


@contextlib.contextmanager
def ec2_vcpu_quotas(values: dict[str, float]) -> Iterator[list[str]]:
    """GetServiceQuota(ec2, code) answers ``values`` (moto 5.2 knows no EC2 quotas); the codes asked."""
    asked: list[str] = []

    def get_service_quota(self: ServiceQuotasResponse) -> str:
        body = json.loads(self.body)
        asked.append(body["QuotaCode"])
        value = values.get(body["QuotaCode"])
        if value is None:
            return json.dumps({"__type": "NoSuchResourceException", "message": "no such quota"})
        return json.dumps({"Quota": {"ServiceCode": "ec2", "QuotaCode": body["QuotaCode"], "Value": value}})

    with mock.patch.object(ServiceQuotasResponse, "get_service_quota", get_service_quota, create=True):
        yield asked


def test_vcpu_quota_per_family_refuses_at_plan(aws: None) -> None:
    gpu = planned(instance_type="g5.12xlarge")  # 48 vCPUs, G and VT
    cpu = planned(run_id="run-ec2-2", instance_type="m7i.2xlarge", container="ollama", hf_token_secret=None)
    needs = vcpus_needed_at_once([gpu, cpu], max_concurrency=2)
    assert {(n.quota_code, n.vcpus) for n in needs} == {("L-DB2E81BA", 48), ("L-1216C47A", 8)}

    def factory(service: str, region: str) -> Any:
        return boto3.client(service, region)

    with ec2_vcpu_quotas({"L-DB2E81BA": 64, "L-1216C47A": 32}):
        notes = check_vcpu_quotas(needs, factory, 2)
    assert "Running On-Demand G and VT instances in us-east-1: 48 vCPUs at once, quota 64" in notes
    with ec2_vcpu_quotas({"L-DB2E81BA": 8, "L-1216C47A": 32}), pytest.raises(QuotaExceededError) as refused:
        check_vcpu_quotas(needs, factory, 2)
    assert "'Running On-Demand G and VT instances' (L-DB2E81BA) in us-east-1 is 8 vCPUs" in str(refused.value)


def test_the_steps_write_the_url_record_the_lifetime_and_terminate(
    network: Ec2Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploy -> EndpointStatus -> Teardown as the workflow calls them: the spec gets the instance's URL,
    deployment.json and teardown.json get its lifetime, nothing is left running."""
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket=BUCKET)
    spec = planned(ami=any_ami())
    uri = f"s3://{BUCKET}/specs/run_id={spec.run_id}/branch_id={spec.branch_id}.json"
    s3.put_object(Bucket=BUCKET, Key=uri.split("/", 3)[3], Body=spec.model_dump_json(exclude_unset=True))
    item = branch_item(spec, uri)
    assert (
        item.platform == "ec2"
        and item.needs_deploy
        and item.endpoint_name == spec.ec2_deployment.instance_name
    )  # type: ignore[union-attr]

    env = {
        "AWS_REGION": REGION,
        "FMBENCH_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/fmbench-sagemaker",
        "FMBENCH_EC2_SUBNET_IDS": ",".join(network.subnet_ids),
        "FMBENCH_RUNNER_SECURITY_GROUP_ID": network.runner_security_group_id,
        "FMBENCH_EC2_INSTANCE_PROFILE_ARN": PROFILE_ARN,
        "FMBENCH_RESULTS_BUCKET": BUCKET,
    }

    def factory(service: str, region: str) -> Any:
        return boto3.client(service, region)

    deployed = deploy_branch(item, DeploySettings.from_environ(env), s3, factory)
    assert deployed.endpoint_name == item.endpoint_name
    (instance,) = live_instances(boto3.client("ec2", REGION))
    written = BranchSpec.model_validate_json(
        s3.get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read()
    )
    assert written.ec2_endpoint_url == f"http://{instance['PrivateIpAddress']}:8000/v1"

    ec2 = boto3.client("ec2", REGION)
    status = check_endpoint(item, StatusSettings.from_environ(env), None, s3, ec2)
    assert status.status == "InService" and status.sagemaker_status == "running"
    record_key = f"outcomes/run_id={spec.run_id}/branch_id={spec.branch_id}/deployment.json"
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read())
    assert record["in_service_epoch_s"] >= record["created_epoch_s"]

    from fmbench.cloud.events import TeardownEvent

    event = TeardownEvent.model_validate(item.model_dump())
    torn = teardown_branch(event, None, TeardownSettings.from_environ(env), s3, ec2_client=ec2)
    assert f"instance/{instance['InstanceId']}" in torn.deleted
    assert live_instances(ec2) == []
    teardown_key = f"outcomes/run_id={spec.run_id}/branch_id={spec.branch_id}/teardown.json"
    lifetime = json.loads(s3.get_object(Bucket=BUCKET, Key=teardown_key)["Body"].read())
    assert lifetime["deleted_epoch_s"] >= lifetime["created_epoch_s"]


def test_cleanup_of_a_run_terminates_its_instance_and_spares_others(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    ami = any_ami()
    mine = planned(run_id="run-ended", ami=ami)
    other = planned(run_id="run-live", ami=ami)
    launch(ec2, ssm, mine, network)
    kept = launch(ec2, ssm, other, network)
    users = ec2.run_instances(ImageId=ami, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)["Instances"][0]

    result = cleanup_run(boto3.client("sagemaker", REGION), "run-ended", ec2)
    assert [label.split("/")[0] for label in result.deleted] == ["instance", "security-group"]
    assert {i["InstanceId"] for i in live_instances(ec2)} == {kept.instance_id, users["InstanceId"]}


def test_the_sweeper_terminates_an_expired_instance(network: Ec2Network) -> None:
    ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
    spec = planned(run_id="run-expiring", ami=any_ami())
    launched = launch(ec2, ssm, spec, network)
    sfn = boto3.client("stepfunctions", REGION)
    machine = sfn.create_state_machine(
        name="m",
        definition='{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}',
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]
    sm = boto3.client("sagemaker", REGION)
    now = datetime.now(UTC)
    early = sweep(sm, sfn, machine, now, 3600, ec2_client=ec2)
    assert early.deleted == [] and early.kept == 2  # the instance and its group: not expired, run unknown
    late = sweep(sm, sfn, machine, now + timedelta(hours=2), 3600, ec2_client=ec2)
    assert f"instance/{launched.instance_id}" in late.deleted
    assert {d.reason for d in late.decisions} == {"expired"}
    assert live_instances(ec2) == []
