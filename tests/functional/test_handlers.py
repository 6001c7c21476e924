"""The workflow's Lambda handlers against moto: plan, deploy, endpoint status, teardown and render."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
import sqlglot
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto_catalog import create_records_catalog
from moto_service_quotas import sagemaker_endpoint_quotas
from sqlglot import exp

from fmbench.cloud.events import DeploymentRecord, TeardownRecord
from fmbench.cloud.sagemaker import teardown
from fmbench.cloud.settings import RenderSettings, SettingsError, StatusSettings
from fmbench.config import SuiteValidationError
from fmbench.deployment import (
    TAG_BRANCH_ID,
    TAG_EXPIRES_AT,
    TAG_RUN_ID,
    TAG_SUITE,
    EndpointBusyError,
    parse_expires_at,
    resource_names,
)
from fmbench.layout import deployment_record_uri, outcome_uri, run_plan_uri, teardown_record_uri
from fmbench.plan import BranchOutcome, RunPlan
from fmbench.spec import BranchSpec
from lambdas import deploy, endpoint_status, plan, render
from lambdas import teardown as teardown_lambda
from report.cloud import AthenaQueryError, run_athena_query, ttft_samples_frame
from report.execution_output import ExecutionOutput, execution_output
from report.prices import PRICE_COLUMNS
from report.query import METRIC_COLUMNS, TTFT_SAMPLE_COLUMNS, QueryError, athena_metrics_query, typed_frame
from report.result import ResultDocument

REGION = "us-east-1"
BUCKET = "fmbench-results-test"
ROLE_ARN = "arn:aws:iam::123456789012:role/fmbench-sagemaker"
RUN_ID = "20250101T000000Z-abc123"
HF_TOKEN = "hf_not_a_real_token"


def suite_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "cloud-suite",
        "targets": [
            {
                "name": "llama-lmi",
                "platform": "sagemaker",
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
                "container": "lmi",
                "instance_type": "ml.g4dn.xlarge",
            },
            {
                "name": "existing",
                "platform": "sagemaker",
                "endpoint_name": "my-own-endpoint",
                "instance_type": "ml.g4dn.xlarge",
            },
            {"name": "haiku", "platform": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
        ],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}],
        },
        "load": {"concurrency": [1, 4], "requests_per_level": 10},
        "slo": {"p95_latency_s": 3.0},
        "execution": {"max_parallel_branches": 4},
    }
    data.update(overrides)
    return data


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and the functions' environment, so nothing can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("FMBENCH_RESULTS_BUCKET", BUCKET)
    monkeypatch.setenv("FMBENCH_SAGEMAKER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("FMBENCH_MAX_CONCURRENT_BRANCHES", "2")
    monkeypatch.setenv("FMBENCH_EXISTING_ENDPOINT_NAMES", '["my-own-endpoint"]')
    monkeypatch.setenv("FMBENCH_ATHENA_DATABASE", "fmbench")
    monkeypatch.setenv("FMBENCH_ATHENA_WORKGROUP", "fmbench")


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    with mock_aws(), sagemaker_endpoint_quotas({"ml.g4dn.xlarge": 4}):
        # The stack's catalog: the plan registers each run's partitions of the records table here.
        create_records_catalog(REGION, BUCKET)
        yield


@pytest.fixture
def s3(mocked_aws: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def sagemaker(mocked_aws: None) -> Any:
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def athena(mocked_aws: None) -> Any:
    client = boto3.client("athena", region_name=REGION)
    client.create_work_group(
        Name="fmbench",
        Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena-results/"}},
    )
    return client


@pytest.fixture
def secretsmanager(mocked_aws: None) -> Any:
    return boto3.client("secretsmanager", region_name=REGION)


def keys(s3: Any, prefix: str = "") -> list[str]:
    return sorted(
        item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    )


def read_json(s3: Any, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def planned(s3: Any, **overrides: Any) -> dict[str, Any]:
    return plan.handler({"suite": suite_data(**overrides), "execution_name": RUN_ID}, None)


def deploy_item(plan_result: dict[str, Any]) -> dict[str, Any]:
    return next(item for item in plan_result["branches"] if item["needs_deploy"])


# -------------------------------------------------------------------------------------------- plan


def test_plan_writes_every_spec_and_returns_the_map_items(s3: Any) -> None:
    result = planned(s3)

    assert result["run_id"] == RUN_ID
    assert result["suite_name"] == "cloud-suite"
    assert result["storage_root"] == f"s3://{BUCKET}"
    assert result["max_concurrency"] == 2  # the suite asks for 4, the stack allows 2
    items = {
        item["platform"] + ("-deploy" if item["needs_deploy"] else ""): item for item in result["branches"]
    }
    assert sorted(items) == ["bedrock", "sagemaker", "sagemaker-deploy"]
    deployed = items["sagemaker-deploy"]
    assert deployed["endpoint_name"] == resource_names(RUN_ID, deployed["branch_id"]).endpoint
    assert deployed["region"] == REGION
    assert deployed["max_status_polls"] == 60  # the 60-minute deployment allowance at 60 s per poll
    assert items["sagemaker"]["endpoint_name"] == "my-own-endpoint"
    assert items["bedrock"]["endpoint_name"] is None

    expected_keys = [
        f"specs/run_id={RUN_ID}/branch_id={item['branch_id']}.json" for item in result["branches"]
    ]
    # ... and the run's prompts, made once for every branch
    prompts = [f"datasets/run_id={RUN_ID}/manifest.json", f"datasets/run_id={RUN_ID}/prompts.jsonl"]
    assert keys(s3) == sorted([*expected_keys, f"specs/run_id={RUN_ID}/plan.json", *prompts])
    assert all(BranchSpec.model_validate(read_json(s3, key)).prompts_uri for key in expected_keys)
    for item in result["branches"]:
        assert item["spec_uri"] == f"s3://{BUCKET}/specs/run_id={RUN_ID}/branch_id={item['branch_id']}.json"
    spec = BranchSpec.model_validate(read_json(s3, expected_keys[result["branches"].index(deployed)]))
    assert spec.sagemaker_endpoint_name == deployed["endpoint_name"]
    assert spec.sagemaker_deployment is not None
    assert spec.sagemaker_deployment.image_uri == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
    )
    assert spec.sagemaker_deployment.environment == {"HF_MODEL_ID": "meta-llama/Llama-3.1-8B-Instruct"}
    whole = RunPlan.model_validate(read_json(s3, f"specs/run_id={RUN_ID}/plan.json"))
    assert [b.branch_id for b in whole.branches] == [item["branch_id"] for item in result["branches"]]
    # Each branch's partition of the records table is registered before any runner writes.
    registered = boto3.client("glue", region_name=REGION).get_partitions(
        DatabaseName="fmbench", TableName="records"
    )
    assert sorted(
        (tuple(p["Values"]), p["StorageDescriptor"]["Location"]) for p in registered["Partitions"]
    ) == sorted(
        (
            (RUN_ID, item["branch_id"]),
            f"s3://{BUCKET}/records/run_id={RUN_ID}/branch_id={item['branch_id']}/",
        )
        for item in result["branches"]
    )


def test_an_execution_name_that_is_no_run_id_gets_a_generated_one(s3: Any) -> None:
    result = plan.handler({"suite": suite_data(), "execution_name": "not a run id!"}, None)
    assert result["run_id"] != "not a run id!"
    assert keys(s3, f"specs/run_id={result['run_id']}/")


def test_an_invalid_suite_lists_every_problem_and_writes_nothing(s3: Any) -> None:
    data = suite_data()
    data["targets"][0]["container"] = "triton"
    data["targets"][2]["model_id"] = ""
    data["load"]["concurrency"] = [0]
    with pytest.raises(SuiteValidationError) as caught:
        plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    paths = [problem.path for problem in caught.value.problems]
    assert paths == ["targets.2.model_id", "load.concurrency"]
    assert keys(s3) == []

    data = suite_data()
    data["targets"][0]["container"] = "triton"
    data["targets"][0]["environment"] = {"HF_TOKEN": "secretsmanager:not-an-arn"}
    with pytest.raises(SuiteValidationError) as caught:
        plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    assert [problem.path for problem in caught.value.problems] == [
        "targets.0.environment.HF_TOKEN",
        "targets.0.container",
    ]
    assert "unknown container 'triton'" in str(caught.value)
    assert keys(s3) == []


def test_matrix_problems_point_at_the_matrix_field(s3: Any) -> None:
    data = suite_data(
        targets=[],
        matrix=[
            {
                "base": {
                    "name": "llama",
                    "platform": "sagemaker",
                    "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
                    "instance_type": "ml.g4dn.xlarge",
                    "payload_format": "lmi",
                },
                "vary": {"container": ["lmi", "tgi"]},
            }
        ],
    )
    with pytest.raises(SuiteValidationError) as caught:
        plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    assert [(p.path, "target llama-tgi" in p.reason) for p in caught.value.problems] == [
        ("matrix.0.base.payload_format", True)
    ]
    assert keys(s3) == []


def test_the_metrics_query_names_the_run_and_its_branches_where_it_reads_the_records(s3: Any) -> None:
    """Athena's partition projection needs literal run and branch ids on the records table."""
    result = planned(s3)
    branch_ids = [item["branch_id"] for item in result["branches"]]
    tree = sqlglot.parse_one(result["metrics_query"], read="trino")
    readers = [
        table.find_ancestor(exp.Select) for table in tree.find_all(exp.Table) if table.name == "records"
    ]
    assert readers
    for select in readers:
        assert select is not None
        where = select.args["where"]
        filters = [node for node in where.find_all(exp.In) if node.this.name == "branch_id"]
        assert [[value.name for value in node.expressions] for node in filters] == [branch_ids]
        run_ids = [node.expression.name for node in where.find_all(exp.EQ) if node.this.name == "run_id"]
        assert run_ids == [RUN_ID]
    sqlglot.transpile(result["metrics_query"], read="trino", write="duckdb")  # still one valid query
    with pytest.raises(QueryError, match="at least one branch"):
        athena_metrics_query(RUN_ID, [])


# ------------------------------------------------------------------------------------------ deploy


def test_deploy_creates_the_three_resources_with_tags_and_is_idempotent(s3: Any, sagemaker: Any) -> None:
    result = planned(s3)
    item = deploy_item(result)

    before_epoch_s = time.time()
    first = deploy.handler(item, None)
    second = deploy.handler(item, None)

    names = resource_names(RUN_ID, item["branch_id"])
    assert first == second
    assert first["endpoint_name"] == names.endpoint == item["endpoint_name"]
    assert first["created_epoch_s"] > 0
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]] == [names.endpoint]
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == [names.model]
    assert [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]] == [
        names.endpoint_config
    ]
    model = sagemaker.describe_model(ModelName=names.model)
    assert model["ExecutionRoleArn"] == ROLE_ARN
    assert model["PrimaryContainer"]["Image"].endswith("/djl-inference:0.33.0-lmi15.0.0-cu128")
    assert model["PrimaryContainer"]["Environment"] == {"HF_MODEL_ID": "meta-llama/Llama-3.1-8B-Instruct"}
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=names.endpoint_config)[
        "ProductionVariants"
    ][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        names.model,
        "ml.g4dn.xlarge",
        1,
    )
    endpoint_arn = sagemaker.describe_endpoint(EndpointName=names.endpoint)["EndpointArn"]
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=endpoint_arn)["Tags"]}
    expires_epoch_s = parse_expires_at(tags.pop(TAG_EXPIRES_AT))
    assert tags == {TAG_SUITE: "cloud-suite", TAG_RUN_ID: RUN_ID, TAG_BRANCH_ID: item["branch_id"]}
    # the suite's default time-to-live (6 h) after the deploy, to the second
    assert expires_epoch_s is not None
    assert int(before_epoch_s) + 6 * 3600 <= expires_epoch_s <= time.time() + 6 * 3600


def test_a_hugging_face_token_is_read_from_secrets_manager_at_deploy_time(
    s3: Any, sagemaker: Any, secretsmanager: Any
) -> None:
    arn = secretsmanager.create_secret(Name="fmbench/hf-token", SecretString=HF_TOKEN)["ARN"]
    data = suite_data()
    data["targets"][0]["environment"] = {"HF_TOKEN": f"secretsmanager:{arn}"}
    result = plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    item = deploy_item(result)

    deploy.handler(item, None)

    model = sagemaker.describe_model(ModelName=resource_names(RUN_ID, item["branch_id"]).model)
    assert model["PrimaryContainer"]["Environment"]["HF_TOKEN"] == HF_TOKEN
    for key in keys(s3):
        assert HF_TOKEN.encode() not in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_a_secret_is_read_in_the_region_of_its_arn_not_the_endpoints(s3: Any, secretsmanager: Any) -> None:
    """The docs keep the token in us-east-1; a target in us-west-2 must still read it (a client in us-west-2
    answers ResourceNotFound for a secret of us-east-1, even by its full ARN)."""
    arn = secretsmanager.create_secret(Name="fmbench/hf-token", SecretString=HF_TOKEN)["ARN"]
    assert ":us-east-1:" in arn
    data = suite_data()
    data["targets"][0]["region"] = "us-west-2"
    data["targets"][0]["environment"] = {"HF_TOKEN": f"secretsmanager:{arn}"}
    result = plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    item = deploy_item(result)
    assert item["region"] == "us-west-2"

    deploy.handler(item, None)

    west = boto3.client("sagemaker", region_name="us-west-2")
    model = west.describe_model(ModelName=resource_names(RUN_ID, item["branch_id"]).model)
    assert model["PrimaryContainer"]["Environment"]["HF_TOKEN"] == HF_TOKEN


def test_a_cuda_13_image_is_deployed_on_the_host_ami_with_its_driver(s3: Any, sagemaker: Any) -> None:
    """The vLLM images are CUDA 13 builds: without InferenceAmiVersion the endpoint gets a host whose driver
    cannot run them. The AMI is in the plan's spec and in the CreateEndpointConfig call."""
    data = suite_data()
    data["targets"][0].update(container="vllm", payload_format="vllm-openai")
    result = plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    item = deploy_item(result)
    spec = BranchSpec.model_validate(read_json(s3, item["spec_uri"].split(f"{BUCKET}/", 1)[1]))
    assert spec.sagemaker_deployment is not None
    assert spec.sagemaker_deployment.inference_ami_version == "al2023-ami-sagemaker-inference-gpu-4-1"

    deploy.handler(item, None)

    names = resource_names(RUN_ID, item["branch_id"])
    (variant,) = sagemaker.describe_endpoint_config(EndpointConfigName=names.endpoint_config)[
        "ProductionVariants"
    ]
    assert variant["InferenceAmiVersion"] == "al2023-ami-sagemaker-inference-gpu-4-1"


def test_status_is_in_service_and_the_deployment_time_is_recorded(s3: Any, sagemaker: Any) -> None:
    item = deploy_item(planned(s3))
    deployed = deploy.handler(item, None)

    status = endpoint_status.handler(item, None)

    assert status["status"] == "InService"  # moto's endpoints are in service at once
    assert status["sagemaker_status"] == "InService"
    assert status["failure_reason"] is None
    assert status["in_service_epoch_s"] >= deployed["created_epoch_s"]
    record = DeploymentRecord.model_validate(
        read_json(s3, f"outcomes/run_id={RUN_ID}/branch_id={item['branch_id']}/deployment.json")
    )
    assert record.endpoint_name == item["endpoint_name"]
    assert record.created_epoch_s == deployed["created_epoch_s"]


def test_status_of_a_missing_endpoint_is_failed_with_the_reason(s3: Any, sagemaker: Any) -> None:
    item = deploy_item(planned(s3))
    status = endpoint_status.handler(item, None)
    assert status == {
        "status": "Failed",
        "failure_reason": f"endpoint {item['endpoint_name']} does not exist",
        "sagemaker_status": None,
        "in_service_epoch_s": None,
    }


def test_a_handler_names_the_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FMBENCH_RESULTS_BUCKET")
    with pytest.raises(SettingsError, match="FMBENCH_RESULTS_BUCKET"):
        StatusSettings.from_environ()


# ---------------------------------------------------------------------------------------- teardown


def test_teardown_deletes_only_the_branch_resources_and_twice_is_fine(s3: Any, sagemaker: Any) -> None:
    sagemaker.create_model(
        ModelName="users-model",
        ExecutionRoleArn=ROLE_ARN,
        PrimaryContainer={"Image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/x:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="users-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "users-model",
                "InstanceType": "ml.g4dn.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="my-own-endpoint", EndpointConfigName="users-config")
    result = planned(s3)
    item = deploy_item(result)
    deploy.handler(item, None)
    name = item["endpoint_name"]

    first = teardown_lambda.handler({**item, "error": {"Error": "States.TaskFailed", "Cause": "x"}}, None)
    second = teardown_lambda.handler(item, None)

    assert first == {
        "deleted": [f"endpoint/{name}", f"endpoint-config/{name}", f"model/{name}"],
        # The branch's error as the Map keeps it (short causes stay whole).
        "error": {"Error": "States.TaskFailed", "Cause": "x"},
    }
    assert second == {"deleted": [], "error": None}
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]] == ["my-own-endpoint"]
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == ["users-model"]
    # branches that deployed nothing (an existing endpoint, Bedrock) have nothing torn down
    for other in result["branches"]:
        if not other["needs_deploy"]:
            assert teardown_lambda.handler(other, None) == {"deleted": [], "error": None}
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]] == ["my-own-endpoint"]


class CreatingEndpoint:
    """A SageMaker stand-in whose endpoint is still Creating: SageMaker refuses to delete it yet."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def delete_endpoint(self, **kwargs: Any) -> None:
        self.calls.append("delete_endpoint")
        error = {"Error": {"Code": "ValidationException", "Message": "Cannot delete in-progress endpoint"}}
        raise ClientError(error, "DeleteEndpoint")  # type: ignore[arg-type]

    def describe_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        return {"EndpointStatus": "Creating"}

    def delete_endpoint_config(self, **kwargs: Any) -> None:
        self.calls.append("delete_endpoint_config")

    def delete_model(self, **kwargs: Any) -> None:
        self.calls.append("delete_model")


def test_an_endpoint_still_creating_makes_teardown_retryable_and_keeps_the_rest() -> None:
    client = CreatingEndpoint()
    with pytest.raises(EndpointBusyError, match="is Creating"):
        teardown(client, RUN_ID, "llama-lmi-1a2b3c4d")
    assert client.calls == ["delete_endpoint"]


# ------------------------------------------------------------------------------------------ render


def synthetic_metrics(branch_ids: list[str]) -> pd.DataFrame:
    """One row per branch x concurrency x bin, every column of METRIC_COLUMNS filled by its dtype."""
    dtypes = typed_frame(pd.DataFrame(), METRIC_COLUMNS).dtypes
    rows = []
    for branch_index, branch_id in enumerate(branch_ids):
        for concurrency in (1, 4):
            for bin_label in ("50-500", "500-2000"):
                row: dict[str, Any] = {}
                for column in METRIC_COLUMNS:
                    kind = str(dtypes[column])
                    if kind == "bool":
                        row[column] = False
                    elif kind in ("int64", "Int64"):
                        row[column] = 10
                    elif kind == "float64":
                        row[column] = 0.25 * (branch_index + 1) + 0.01 * concurrency
                    else:
                        row[column] = f"{column}-{branch_id}"
                row.update(
                    run_id=RUN_ID,
                    branch_id=branch_id,
                    target_name=f"target-{branch_index}",
                    payload_bin=bin_label,
                    concurrency=concurrency,
                    requests=10,
                    successes=10,
                    errors=0,
                    error_rate=0.0,
                    instance_type=None,
                    price_per_txn_usd=float("nan"),
                )
                rows.append(row)
    return typed_frame(pd.DataFrame(rows), METRIC_COLUMNS)


def athena_result(frame: pd.DataFrame) -> QueryResults:
    """The frame as Athena's GetQueryResults gives it: all text, NULL without a value, a header row."""
    athena_types = {"int64": "bigint", "Int64": "bigint", "float64": "double", "bool": "boolean"}
    column_info = [
        {"Name": name, "Label": name, "Type": athena_types.get(str(frame[name].dtype), "varchar")}
        for name in frame.columns
    ]

    def cell(value: Any) -> dict[str, str]:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return {}
        if isinstance(value, bool | np.bool_):
            return {"VarCharValue": "true" if value else "false"}
        return {"VarCharValue": str(value)}

    header = {"Data": [{"VarCharValue": name} for name in frame.columns]}
    rows = [{"Data": [cell(value) for value in record]} for record in frame.itertuples(index=False)]
    return QueryResults(rows=[header, *rows], column_info=column_info)


def finished_query(athena: Any, sql: str) -> str:
    """What the Query state (startQueryExecution.sync) leaves: a succeeded query execution."""
    query_id = athena.start_query_execution(
        QueryString=sql,
        WorkGroup="fmbench",
        ResultConfiguration={"OutputLocation": f"s3://{BUCKET}/athena-results/"},
    )["QueryExecutionId"]
    while athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]["State"] not in (
        "SUCCEEDED",
        "FAILED",
    ):
        pass
    return str(query_id)


def test_render_publishes_the_report_and_returns_its_summary(s3: Any, athena: Any) -> None:
    result = planned(s3)
    by_platform = {item["platform"] + str(item["needs_deploy"]): item for item in result["branches"]}
    deployed, existing, bedrock = (
        by_platform[k] for k in ("sagemakerTrue", "sagemakerFalse", "bedrockFalse")
    )
    measured = [deployed["branch_id"], existing["branch_id"]]
    for branch_id in measured:
        outcome = BranchOutcome(
            branch_id=branch_id,
            status="succeeded",
            requests_attempted=40,
            records_written=40,
            load_points_planned=4,
            load_points_completed=4,
        )
        key = outcome_uri(f"s3://{BUCKET}", RUN_ID, branch_id).removeprefix(f"s3://{BUCKET}/")
        s3.put_object(Bucket=BUCKET, Key=key, Body=outcome.model_dump_json())
    record = DeploymentRecord(
        run_id=RUN_ID,
        branch_id=deployed["branch_id"],
        endpoint_name=deployed["endpoint_name"],
        created_epoch_s=1_700_000_000.0,
        in_service_epoch_s=1_700_000_420.5,
    )
    record_key = deployment_record_uri(f"s3://{BUCKET}", RUN_ID, deployed["branch_id"])
    s3.put_object(Bucket=BUCKET, Key=record_key.split("/", 3)[3], Body=record.model_dump_json())
    metrics = synthetic_metrics(measured)
    samples = pd.DataFrame(
        {
            "branch_id": [measured[0]] * 3 + [measured[1]] * 3,
            "target_name": ["target-0"] * 3 + ["target-1"] * 3,
            "ttft_s": [0.1, 0.2, 0.3, 0.2, 0.4, 0.6],
            "cumulative_share": [1 / 3, 2 / 3, 1.0] * 2,
            "sample_count": [3] * 6,
        }
    )
    queue = athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue
    queue.extend([athena_result(metrics), athena_result(samples)])
    query_id = finished_query(athena, result["metrics_query"])
    failure = {
        "Error": "States.TaskFailed",
        "Cause": json.dumps({"errorMessage": "model access denied", "errorType": "AccessDeniedException"}),
    }

    output = ExecutionOutput.model_validate(
        render.handler(
            {
                "run_id": RUN_ID,
                "query_execution_id": query_id,
                "branch_results": [
                    {"branch_id": deployed["branch_id"], "status": "succeeded", "error": None},
                    {"branch_id": existing["branch_id"], "status": "succeeded", "error": None},
                    {"branch_id": bedrock["branch_id"], "status": "failed", "error": failure},
                ],
            },
            None,
        )
    )

    prefix = f"reports/run_id={RUN_ID}/"
    published = [key.removeprefix(prefix) for key in keys(s3, prefix)]
    assert {"report.md", "report.html", "summary.parquet", "result.json", "ttft_distribution.png"} <= set(
        published
    )
    # The handler returns the summary (the execution's output); result.json is in S3, where it points.
    parsed = ResultDocument.model_validate(read_json(s3, prefix + "result.json"))
    assert output == execution_output(parsed)
    assert output.result_json == f"s3://{BUCKET}/{prefix}result.json"
    assert output.report_prefix == f"s3://{BUCKET}/{prefix}"
    assert (output.status, output.branches.total, output.branches.failed) == ("partial", 3, 1)
    assert parsed.run_id == RUN_ID
    assert parsed.status == "partial"
    assert parsed.artifacts.result_json == f"s3://{BUCKET}/{prefix}result.json"
    assert parsed.artifacts.report_html == f"s3://{BUCKET}/{prefix}report.html"
    assert parsed.artifacts.charts["ttft_distribution"] == f"s3://{BUCKET}/{prefix}ttft_distribution.png"
    assert parsed.artifacts.records_prefix == f"s3://{BUCKET}/records/run_id={RUN_ID}/"
    branches = {branch.branch_id: branch for branch in parsed.branches}
    assert branches[bedrock["branch_id"]].status == "failed"
    assert branches[bedrock["branch_id"]].reason == "States.TaskFailed: model access denied"
    assert branches[deployed["branch_id"]].deployment_s == 420.5
    assert branches[existing["branch_id"]].deployment_s is None
    assert len(branches[deployed["branch_id"]].load_points) == 4
    summary = pd.read_parquet(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key=prefix + "summary.parquet")["Body"].read())
    )
    pd.testing.assert_frame_equal(  # the query's columns, then the report's prices (report/prices.py)
        summary[list(metrics.columns)]
        .sort_values(["branch_id", "payload_bin", "concurrency"])
        .reset_index(drop=True),
        metrics.sort_values(["branch_id", "payload_bin", "concurrency"]).reset_index(drop=True),
    )
    assert list(summary.columns[len(metrics.columns) :]) == list(PRICE_COLUMNS)
    assert run_plan_uri(f"s3://{BUCKET}", RUN_ID).endswith("/plan.json")


class QueryThatNeverFinishes:
    """An Athena stand-in whose query stays RUNNING: the render step must give up on it, not hang."""

    def __init__(self) -> None:
        self.stopped: list[str] = []

    def start_query_execution(self, **kwargs: Any) -> dict[str, Any]:
        return {"QueryExecutionId": "q-1"}

    def get_query_execution(self, **kwargs: Any) -> dict[str, Any]:
        return {"QueryExecution": {"Status": {"State": "RUNNING"}}}

    def stop_query_execution(self, QueryExecutionId: str) -> None:
        self.stopped.append(QueryExecutionId)


def test_a_ttft_query_that_does_not_finish_is_stopped_and_only_that_chart_is_lost() -> None:
    athena = QueryThatNeverFinishes()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    settings = RenderSettings.from_environ()
    samples = ttft_samples_frame(
        athena, settings, RUN_ID, ["a-1"], timeout_s=10, poll_interval_s=2, sleep=sleep, clock=lambda: now[0]
    )

    assert athena.stopped == ["q-1"]
    assert now[0] == 10
    assert samples.empty and list(samples.columns) == list(TTFT_SAMPLE_COLUMNS)
    with pytest.raises(AthenaQueryError, match="did not finish within 10 s"):
        run_athena_query(
            athena, "SELECT 1", workgroup="w", database="d", timeout_s=10, sleep=sleep, clock=lambda: now[0]
        )


# ------------------------------------------------------------------------- cost and report-only render


def test_teardown_records_when_it_deleted_the_endpoint(s3: Any, sagemaker: Any) -> None:
    item = deploy_item(planned(s3))
    deploy.handler(item, None)
    created = sagemaker.describe_endpoint(EndpointName=item["endpoint_name"])["CreationTime"].timestamp()
    key = f"outcomes/run_id={RUN_ID}/branch_id={item['branch_id']}/teardown.json"

    teardown_lambda.handler(item, None)
    first = read_json(s3, key)
    teardown_lambda.handler(item, None)  # deletes nothing: the record of the deletion stays as it was

    assert read_json(s3, key) == first
    assert (first["endpoint_name"], first["created_epoch_s"]) == (item["endpoint_name"], created)
    assert created <= first["deleted_epoch_s"] <= time.time()


def put_model(s3: Any, uri: str, model: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"), Body=model.model_dump_json())


def test_render_puts_the_actual_cost_beside_the_estimate_and_a_report_only_render_keeps_the_reasons(
    s3: Any, athena: Any
) -> None:
    result = planned(s3, pricing={"instance_price_per_hour_usd": {"ml.g4dn.xlarge": 0.736}})
    by_platform = {item["platform"] + str(item["needs_deploy"]): item for item in result["branches"]}
    deployed, existing, bedrock = (
        by_platform[k] for k in ("sagemakerTrue", "sagemakerFalse", "bedrockFalse")
    )
    root = f"s3://{BUCKET}"
    for branch_id in (deployed["branch_id"], existing["branch_id"]):
        outcome = BranchOutcome(
            branch_id=branch_id, status="succeeded", load_points_planned=4, load_points_completed=4
        )
        put_model(s3, outcome_uri(root, RUN_ID, branch_id), outcome)
    put_model(
        s3,
        teardown_record_uri(root, RUN_ID, deployed["branch_id"]),
        TeardownRecord(
            run_id=RUN_ID,
            branch_id=deployed["branch_id"],
            endpoint_name=deployed["endpoint_name"],
            created_epoch_s=1_700_000_000.0,
            deleted_epoch_s=1_700_003_600.0,
        ),
    )
    metrics = synthetic_metrics([deployed["branch_id"], existing["branch_id"]])
    queue = athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue
    failure = {"Error": "States.TaskFailed", "Cause": json.dumps({"errorMessage": "model access denied"})}
    branch_results = [
        {"branch_id": deployed["branch_id"], "status": "succeeded", "error": None},
        {"branch_id": existing["branch_id"], "status": "succeeded", "error": None},
        {"branch_id": bedrock["branch_id"], "status": "failed", "error": failure},
    ]

    queue.extend([athena_result(metrics), athena_result(metrics.iloc[:0][["branch_id"]])])
    render.handler(
        {
            "run_id": RUN_ID,
            "query_execution_id": finished_query(athena, result["metrics_query"]),
            "branch_results": branch_results,
        },
        None,
    )
    result_key = f"reports/run_id={RUN_ID}/result.json"
    first = ResultDocument.model_validate(read_json(s3, result_key))
    report_only = plan.handler(
        {"suite": {"report_only": {"run_id": RUN_ID}}, "execution_name": "rerender"}, None
    )
    queue.extend([athena_result(metrics), athena_result(metrics.iloc[:0][["branch_id"]])])
    render.handler(
        {
            "run_id": report_only["run_id"],
            "query_execution_id": finished_query(athena, report_only["metrics_query"]),
            "branch_results": [],  # the report-only execution's Map ran nothing
        },
        None,
    )
    again = ResultDocument.model_validate(read_json(s3, result_key))

    assert first.cost is not None
    assert first.cost.estimate_usd == result["cost_estimate_usd"]
    actual = {part.branch_id: part for part in first.cost.actual_parts}
    assert actual[deployed["branch_id"]].usd == pytest.approx(0.736)
    assert actual[deployed["branch_id"]].instance_seconds == 3600
    assert actual[deployed["branch_id"]].basis == "endpoint creation to deletion"
    assert (actual[existing["branch_id"]].usd, actual[existing["branch_id"]].basis) == (
        0.0,
        "not billed by this run",
    )
    # priced from the table's Claude 3 Haiku token prices; its branch failed, so no token was measured
    assert actual[bedrock["branch_id"]].usd == 0.0
    assert (first.cost.actual_usd, first.cost.actual_complete) == (pytest.approx(0.736), True)
    report = s3.get_object(Bucket=BUCKET, Key=f"reports/run_id={RUN_ID}/report.md")["Body"].read().decode()
    assert "## Cost" in report and "| **Total** |" in report
    reasons = {branch.branch_id: branch.reason for branch in again.branches}
    assert reasons[bedrock["branch_id"]] == "States.TaskFailed: model access denied"
    assert again.model_dump(exclude={"generated_at"}) == first.model_dump(exclude={"generated_at"})


# ------------------------------------------------------------------------------------------ secrets


def test_a_secret_stays_a_reference_in_the_plan_output_specs_logs_and_report(
    s3: Any, sagemaker: Any, secretsmanager: Any, athena: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Resolved only where the model is created: never in the execution history (the handlers' outputs),
    the specs in S3, any log line (botocore's DEBUG included), result.json or the report."""
    arn = secretsmanager.create_secret(Name="fmbench/hf-token", SecretString=HF_TOKEN)["ARN"]
    reference = f"secretsmanager:{arn}"
    data = suite_data()
    data["targets"][0]["environment"] = {"HF_TOKEN": reference}
    caplog.set_level(logging.DEBUG)

    planned_run = plan.handler({"suite": data, "execution_name": RUN_ID}, None)
    item = deploy_item(planned_run)
    outputs = [planned_run, deploy.handler(item, None), endpoint_status.handler(item, None)]
    outputs.append(teardown_lambda.handler(item, None))
    queue = athena_backends[DEFAULT_ACCOUNT_ID][REGION].query_results_queue
    empty = typed_frame(pd.DataFrame(), METRIC_COLUMNS)
    queue.extend([athena_result(empty), athena_result(empty[["branch_id"]])])
    query_id = finished_query(athena, planned_run["metrics_query"])
    outputs.append(render.handler({"run_id": RUN_ID, "query_execution_id": query_id}, None))

    spec_key = f"specs/run_id={RUN_ID}/branch_id={item['branch_id']}.json"
    assert read_json(s3, spec_key)["sagemaker_deployment"]["environment"]["HF_TOKEN"] == reference
    assert reference in json.dumps(read_json(s3, f"specs/run_id={RUN_ID}/plan.json"))
    for key in keys(s3):
        assert HF_TOKEN.encode() not in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key
    assert HF_TOKEN not in json.dumps(outputs)
    assert f"endpoint {item['endpoint_name']} (created model/" in caplog.text  # the deploy did log
    assert HF_TOKEN not in caplog.text
    with pytest.raises(ClientError):  # the model that held it was deleted at teardown
        sagemaker.describe_model(ModelName=resource_names(RUN_ID, item["branch_id"]).model)
