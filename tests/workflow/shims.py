"""Shims that let moto 5.2's Step Functions interpreter run the product's state machine in-process.

moto executes a state machine's ASL (``execute_state_machine``), but three things the workflow needs stop
there: the Lambda backend without Docker answers every invoke with a canned payload, the optimized
``ecs:runTask.sync`` integration would poll moto's ECS for a task nothing runs, and ``athena`` is on the
interpreter's list of unsupported services (``.sync`` raises) while moto's Athena never executes SQL.
Each shim replaces exactly that gap and nothing else; everything else (the ASL semantics: Map, Choice,
Retry, Catch, intrinsics; and S3, SageMaker, Athena bookkeeping) is moto's own.

- ``LambdaShim``: the simple Lambda backend's ``invoke`` runs the real handler named by the function's
  image CMD (``lambdas.plan.handler``), in-process, with the function's environment; a raised exception
  becomes Lambda's ``Unhandled`` function error (``errorType`` = the exception's class name).
- ``EcsRunTaskShim``: ``ecs:runTask.sync`` runs ``python -m fmbench.runner_main`` as a subprocess with the
  container overrides' environment, answers with an ECS-like stopped task and fails the state with
  ``States.TaskFailed`` when the runner exits non-zero (as Step Functions does for a failed essential
  container).
- ``AthenaShim``: Athena's ``StartQueryExecution`` runs the query text (Trino, transpiled to DuckDB by
  ``report.query``) over the records in moto's S3 and stores the rows for ``GetQueryResults``; the
  interpreter gets an ``athena:startQueryExecution.sync`` integration that starts the query and waits for it.
- ``SageMakerFaults``: endpoints of chosen branches end up ``Failed`` or stay ``Creating``, and SageMaker's
  refusal to delete an endpoint that is still ``Creating`` (moto deletes it), where a test asks for it.
- ``StopExecutionShim``: stopping an execution while its Map runs makes moto's Map state fail on the
  aborted iteration, and the failure overwrites the stop: the execution ends FAILED (States.Runtime) where
  Step Functions ends it ABORTED. The shim keeps a stopped execution stopped.
- ``ScheduledRulesShim``: moto's EventBridge sends every event put on a bus to the targets of rules that
  have no event pattern (schedule-only rules, such as the sweeper's), and raises for a Lambda target; in
  EventBridge a schedule rule receives no events. The shim leaves such rules out of event delivery.
- ``ServiceQuotasShim``: moto's Service Quotas has no ``ListServiceQuotas`` (the plan's quota check calls it,
  and an HTTP 500 would be retried with backoff for seconds); it lists the account's SageMaker endpoint
  quotas given here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from unittest import mock

import boto3
import duckdb
import pyarrow as pa
from moto.athena.models import AthenaBackend, QueryResults
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
from moto.servicequotas.responses import ServiceQuotasResponse
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_ecs import (
    StateTaskServiceEcs,
)
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

from fmbench.judgments import JUDGMENT_SCHEMA
from fmbench.records import PARTITION_COLUMNS, RECORD_SCHEMA
from fmbench.storage import split_s3_uri
from report.query import to_duckdb

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
RUNNER_TIMEOUT_S: Final = 120.0
_DUCKDB_TO_ATHENA: Final = {
    "VARCHAR": "varchar",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "TINYINT": "tinyint",
    "HUGEINT": "bigint",
    "DOUBLE": "double",
    "FLOAT": "real",
    "BOOLEAN": "boolean",
}


def _task_failed(env: Any, *, resource_type: str, resource: str, cause: str) -> FailureEventException:
    """The failure Step Functions reports for an optimized integration whose job failed."""
    return FailureEventException(
        failure_event=FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=StatesErrorNameType.StatesTaskFailed.to_name(),
                    cause=cause,
                    resource=resource,
                    resourceType=resource_type,
                )
            ),
        )
    )


# ---------------------------------------------------------------------------------------------- Lambda


@dataclass(frozen=True)
class LambdaInvocation:
    function_name: str
    handler: str
    event: Any
    result: Any = None
    error_type: str | None = None


@dataclass(frozen=True)
class _LambdaContext:
    """The parts of Lambda's context object a handler may read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 1024

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


class LambdaShim:
    """Runs the handler named by a function's image CMD, as the Lambda runtime interface client would.

    Handlers run one at a time: each sees exactly its function's environment (os.environ is process-wide),
    and concurrent Map branches only wait for each other's short Lambda calls, never for a runner.
    """

    def __init__(self) -> None:
        self.invocations: list[LambdaInvocation] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[LambdaShim]:
        shim = self

        def invoke(
            backend: LambdaSimpleBackend,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: dict[str, str],
        ) -> bytes:
            function = backend.get_function(function_name, qualifier)
            return shim._invoke(function, body, response_headers)

        with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
            yield self

    def _invoke(self, function: Any, body: Any, response_headers: dict[str, str]) -> bytes:
        (handler_path,) = function.image_config.cmd
        module_name, _, attribute = handler_path.rpartition(".")
        event = json.loads(body or b"{}")
        environment = {
            **function.environment_vars,
            "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
        }
        with self._lock, mock.patch.dict(os.environ, environment):
            try:
                handler: Callable[[Any, Any], Any] = getattr(importlib.import_module(module_name), attribute)
                result = handler(event, _LambdaContext(function_name=function.function_name))
            except Exception as exc:  # noqa: BLE001 - whatever a handler raises, Lambda reports it so
                self.invocations.append(
                    LambdaInvocation(
                        function.function_name, handler_path, event, error_type=type(exc).__name__
                    )
                )
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps(
                    {
                        "errorMessage": str(exc),
                        "errorType": type(exc).__name__,
                        "stackTrace": traceback.format_exception(exc),
                    }
                ).encode()
        self.invocations.append(LambdaInvocation(function.function_name, handler_path, event, result=result))
        return json.dumps(result).encode()

    def calls_of(self, handler: str) -> list[LambdaInvocation]:
        return [call for call in self.invocations if call.handler == handler]


# ------------------------------------------------------------------------------------------------- ECS


@dataclass(frozen=True)
class RunnerRun:
    spec_uri: str
    exit_code: int
    log: str


class EcsRunTaskShim:
    """``ecs:runTask.sync`` as a local subprocess of the runner image's entry point.

    ``break_spec_of(branch_prefix)`` makes the runner of matching branches look for a spec that does not
    exist, so the real runner fails (exit 2, nothing written) rather than a stand-in.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.runs: list[RunnerRun] = []
        self._broken_prefixes: set[str] = set()
        # Each task's command (empty for the load runner, `evaluate ...` for the Evaluate task), and the
        # subcommand whose task is to fail (it is given a run that does not exist).
        self.commands: list[list[str]] = []
        self.break_command: str | None = None

    def break_spec_of(self, branch_prefix: str) -> None:
        self._broken_prefixes.add(branch_prefix)

    @contextlib.contextmanager
    def installed(self) -> Iterator[EcsRunTaskShim]:
        shim = self

        def eval_service_task(
            service: StateTaskServiceEcs,
            env: Any,
            resource_runtime_part: Any,
            normalised_parameters: dict[str, Any],
            state_credentials: Any,
        ) -> None:
            if service._get_boto_service_action() != "run_task":
                raise NotImplementedError(f"the ECS shim runs tasks only, not {service.resource.api_action}")
            ecs = boto_client_for(
                region=resource_runtime_part.region, service="ecs", state_credentials=state_credentials
            )
            env.stack.append({"Tasks": [shim._run(ecs, normalised_parameters)]})

        def build_sync_resolver(
            service: StateTaskServiceEcs,
            env: Any,
            resource_runtime_part: Any,
            normalised_parameters: dict[str, Any],
            state_credentials: Any,
        ) -> Callable[[], Any]:
            (task,) = env.stack.pop()["Tasks"]

            def resolve() -> dict[str, Any]:
                if any(container.get("ExitCode") != 0 for container in task["Containers"]):
                    raise _task_failed(
                        env, resource_type="ecs", resource="runTask.sync", cause=json.dumps(task)
                    )
                return task

            return resolve

        with (
            mock.patch.object(StateTaskServiceEcs, "_eval_service_task", eval_service_task),
            mock.patch.object(StateTaskServiceEcs, "_build_sync_resolver", build_sync_resolver),
        ):
            yield self

    def _run(self, ecs: Any, parameters: dict[str, Any]) -> dict[str, Any]:
        """Run the task's only container as the state asked, and describe the stopped task."""
        task_definition = ecs.describe_task_definition(taskDefinition=parameters["TaskDefinition"])[
            "taskDefinition"
        ]
        containers = {container["name"] for container in task_definition["containerDefinitions"]}
        overrides = parameters.get("Overrides", {}).get("ContainerOverrides", [])
        unknown = {override["Name"] for override in overrides} - containers
        if unknown:
            raise ValueError(f"container overrides name {sorted(unknown)}, the task has {sorted(containers)}")
        (override,) = overrides
        environment = {variable["Name"]: variable["Value"] for variable in override.get("Environment", [])}
        spec_uri = environment.get("FMBENCH_BRANCH_SPEC_URI", "")
        if any(f"branch_id={prefix}" in spec_uri for prefix in self._broken_prefixes):
            environment["FMBENCH_BRANCH_SPEC_URI"] = spec_uri.replace(".json", "-missing.json")
        # The container's entry point (the image's is the load runner's) and the state's command.
        (container,) = [c for c in task_definition["containerDefinitions"] if c["name"] == override["Name"]]
        entry_point = container.get("entryPoint") or ["python", "-m", "fmbench.runner_main"]
        if entry_point[:2] != ["python", "-m"]:
            raise ValueError(f"the ECS shim runs python -m entry points, not {entry_point}")
        command = list(override.get("Command", []))
        if self.break_command and command[:1] == [self.break_command]:
            command = [*command, "--run-id", "no-such-run"]  # the last --run-id wins: the real CLI refuses
        self.commands.append(command)
        log_path = self.log_dir / f"runner-{len(self.runs)}.log"
        with log_path.open("wb") as log:
            completed = subprocess.run(
                [sys.executable, *entry_point[1:], *command],
                cwd=REPO_ROOT,
                env={**os.environ, **environment},
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=RUNNER_TIMEOUT_S,
                check=False,
            )
        self.runs.append(RunnerRun(spec_uri, completed.returncode, log_path.read_text(errors="replace")))
        task_arn = f"{parameters['Cluster'].replace(':cluster/', ':task/')}/{uuid.uuid4().hex}"
        return {
            "ClusterArn": parameters["Cluster"],
            "TaskArn": task_arn,
            "TaskDefinitionArn": task_definition["taskDefinitionArn"],
            "LaunchType": parameters.get("LaunchType", "FARGATE"),
            "StartedBy": parameters.get("StartedBy"),
            "Overrides": parameters.get("Overrides", {}),
            "LastStatus": "STOPPED",
            "DesiredStatus": "STOPPED",
            "StopCode": "EssentialContainerExited",
            "StoppedReason": "Essential container in task exited",
            "Containers": [
                {
                    "Name": override["Name"],
                    "TaskArn": task_arn,
                    "LastStatus": "STOPPED",
                    "ExitCode": completed.returncode,
                }
            ],
        }


# ---------------------------------------------------------------------------------------------- Athena


class _AthenaStartQueryExecutionSync(state_task_service_callback.StateTaskServiceCallback):
    """The optimized ``athena:startQueryExecution(.sync)`` integration that moto lists as unsupported."""

    def __init__(self) -> None:
        # WaitForTaskToken is listed because the base class sets up its callback endpoint for every
        # integration pattern of a service that supports it (as moto's ECS integration does).
        super().__init__(
            supported_integration_patterns={ResourceCondition.WaitForTaskToken, ResourceCondition.Sync}
        )

    def _get_supported_parameters(self) -> set[str] | None:
        if self.resource.api_action.lower() != "startqueryexecution":
            return None
        return {
            "QueryString",
            "ClientRequestToken",
            "QueryExecutionContext",
            "ResultConfiguration",
            "WorkGroup",
            "ExecutionParameters",
            "ResultReuseConfiguration",
        }

    def _eval_service_task(
        self,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> None:
        athena = boto_client_for(
            region=resource_runtime_part.region, service="athena", state_credentials=state_credentials
        )
        started = athena.start_query_execution(**normalised_parameters)
        env.stack.append({"QueryExecutionId": started["QueryExecutionId"]})

    def _build_sync_resolver(
        self,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> Callable[[], Any]:
        athena = boto_client_for(
            region=resource_runtime_part.region, service="athena", state_credentials=state_credentials
        )
        query_execution_id = env.stack.pop()["QueryExecutionId"]

        def resolve() -> dict[str, Any] | None:
            described = athena.get_query_execution(QueryExecutionId=query_execution_id)
            described.pop("ResponseMetadata", None)
            described = json.loads(json.dumps(described, default=str))
            state = described["QueryExecution"]["Status"]["State"]
            if state == "SUCCEEDED":
                return described
            if state in ("FAILED", "CANCELLED"):
                raise _task_failed(
                    env,
                    resource_type="athena",
                    resource="startQueryExecution.sync",
                    cause=json.dumps(described),
                )
            return None

        return resolve


class AthenaShim:
    """Athena that runs its queries: DuckDB over the Parquet records of the results bucket in moto's S3.

    As Athena over a table without partition projection, the records view holds only the partitions
    registered in moto's Glue catalog (any database's ``records`` table), when a catalog holds that table;
    the ``runs`` view holds every file under ``runs/``.
    """

    def __init__(self, results_bucket: str) -> None:
        self.results_bucket = results_bucket
        self.queries: list[str] = []
        self.failures: dict[str, str] = {}
        # Queries containing one of these texts fail, as a query Athena cannot run does.
        self.refused: list[str] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[AthenaShim]:
        shim = self
        original_start = AthenaBackend.start_query_execution
        original_factory = state_task_factory.state_task_service_for

        def start_query_execution(backend: AthenaBackend, query: str, *args: Any, **kwargs: Any) -> str:
            query_execution_id: str = original_start(backend, query, *args, **kwargs)
            execution = backend.executions[query_execution_id]
            shim.queries.append(query)
            try:
                refused = [text for text in shim.refused if text in query]
                if refused:
                    raise RuntimeError(f"the test refuses queries naming {refused[0]!r}")
                backend.query_results[query_execution_id] = shim._run(query)
                execution.status = "SUCCEEDED"
            except Exception as exc:  # noqa: BLE001 - a query that cannot run is a FAILED query
                shim.failures[query_execution_id] = f"{type(exc).__name__}: {exc}"
                execution.status = "FAILED"
            return query_execution_id

        def state_task_service_for(service_name: str) -> Any:
            if service_name == "athena":
                return _AthenaStartQueryExecutionSync()
            return original_factory(service_name=service_name)

        with (
            mock.patch.object(AthenaBackend, "start_query_execution", start_query_execution),
            mock.patch.object(state_task_factory, "state_task_service_for", state_task_service_for),
        ):
            yield self

    @staticmethod
    def registered_partitions(table: str = "records") -> set[str] | None:
        """``records/run_id=R/branch_id=B/`` of every registered partition (of the judgments table:
        ``evaluations/...``); None without the table."""
        glue = boto3.client("glue")
        locations: set[str] = set()
        found = False
        for database in glue.get_databases()["DatabaseList"]:
            try:
                pages = glue.get_paginator("get_partitions").paginate(
                    DatabaseName=database["Name"], TableName=table
                )
                for page in pages:
                    for partition in page["Partitions"]:
                        _, key = split_s3_uri(partition["StorageDescriptor"]["Location"])
                        locations.add(key.rstrip("/") + "/")
                found = True
            except glue.exceptions.EntityNotFoundException:
                continue
        return locations if found else None

    def _download_runs(self, s3: Any, folder: str, db: Any) -> None:
        rows = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.results_bucket, Prefix="runs/"):
            for item in page.get("Contents", []):
                if item["Key"].endswith(".parquet"):
                    local = Path(folder) / item["Key"]
                    local.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(self.results_bucket, item["Key"], str(local))
                    rows.append(local)
        if rows:
            glob = str(Path(folder) / "runs" / "*.parquet")
            db.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet('{glob}', union_by_name = true)")
        else:
            from report.history import RUN_COLUMNS

            db.execute(
                "CREATE TABLE runs AS SELECT "
                + ", ".join(
                    f"CAST(NULL AS {'TIMESTAMPTZ' if name.endswith('_at') else 'VARCHAR'}) AS {name}"
                    for name in RUN_COLUMNS
                )
                + " WHERE false"
            )

    def _run(self, query: str) -> QueryResults:
        s3 = boto3.client("s3")
        registered = self.registered_partitions()
        with tempfile.TemporaryDirectory(prefix="athena-shim-") as folder, duckdb.connect(":memory:") as db:
            self._download_runs(s3, folder, db)
            parts = []
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.results_bucket, Prefix="records/"):
                for item in page.get("Contents", []):
                    partition = item["Key"].rsplit("/", 1)[0] + "/"
                    if registered is not None and partition not in registered:
                        continue
                    if item["Key"].endswith(".parquet"):
                        local = Path(folder) / item["Key"]
                        local.parent.mkdir(parents=True, exist_ok=True)
                        s3.download_file(self.results_bucket, item["Key"], str(local))
                        parts.append(local)
            if parts:
                glob = str(Path(folder) / "records" / "*" / "*" / "*.parquet")
                db.execute(
                    f"CREATE VIEW records AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                    "union_by_name = true, hive_types = {'run_id': VARCHAR, 'branch_id': VARCHAR})"
                )
            else:
                empty = pa.schema(
                    [*RECORD_SCHEMA, *(pa.field(name, pa.string()) for name in PARTITION_COLUMNS)]
                ).empty_table()
                db.register("records", empty)
            self._judgments(s3, folder, db)
            result = db.execute(to_duckdb(query))
            names = [column[0] for column in result.description]
            types = [_athena_type(str(column[1])) for column in result.description]
            rows = result.fetchall()
        header = {"Data": [{"VarCharValue": name} for name in names]}
        return QueryResults(
            rows=[header, *({"Data": [_cell(value) for value in row]} for row in rows)],
            column_info=[
                {"Name": name, "Label": name, "Type": kind, "Nullable": "UNKNOWN"}
                for name, kind in zip(names, types, strict=True)
            ],
        )

    def _judgments(self, s3: Any, folder: str, db: Any) -> None:
        """The judgments table: the Parquet parts under evaluations/ of its registered partitions."""
        registered = self.registered_partitions("judgments") or set()
        parts = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.results_bucket, Prefix="evaluations/"
        ):
            for item in page.get("Contents", []):
                partition = item["Key"].rsplit("/", 1)[0] + "/"
                if partition in registered and item["Key"].endswith(".parquet"):
                    local = Path(folder) / item["Key"]
                    local.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(self.results_bucket, item["Key"], str(local))
                    parts.append(local)
        if parts:
            glob = str(Path(folder) / "evaluations" / "*" / "*" / "*.parquet")
            db.execute(
                f"CREATE VIEW judgments AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                "union_by_name = true, hive_types = {'run_id': VARCHAR, 'branch_id': VARCHAR})"
            )
        else:
            empty = pa.schema(
                [*JUDGMENT_SCHEMA, *(pa.field(name, pa.string()) for name in PARTITION_COLUMNS)]
            ).empty_table()
            db.register("judgments", empty)


def _athena_type(duckdb_type: str) -> str:
    if duckdb_type.endswith("[]"):
        return "array"
    if duckdb_type.startswith("DECIMAL"):
        return "decimal"
    return _DUCKDB_TO_ATHENA.get(duckdb_type, "varchar")


def _cell(value: Any) -> dict[str, str]:
    """A GetQueryResults cell: everything as text, NULL as a cell without a value."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"VarCharValue": "true" if value else "false"}
    if isinstance(value, float):
        return {"VarCharValue": repr(value) if value == value else "NaN"}
    return {"VarCharValue": str(value)}


# ------------------------------------------------------------------------------------------- SageMaker


class SageMakerFaults:
    """Endpoints of the branches whose id starts with a given prefix never serve: Failed, or Creating.

    With ``refuse_deleting_creating_endpoints``, DeleteEndpoint answers an endpoint still ``Creating``
    the way SageMaker does (a ValidationException) instead of deleting it as moto does; ``finish_creating``
    then lets such an endpoint fail, as SageMaker's own timeouts eventually make it.
    """

    def __init__(self) -> None:
        self._statuses: dict[str, tuple[str, str | None]] = {}
        self.refuse_deleting_creating_endpoints = False

    def fail(self, branch_prefix: str, reason: str) -> None:
        self._statuses[branch_prefix] = ("Failed", reason)

    def never_in_service(self, branch_prefix: str) -> None:
        self._statuses[branch_prefix] = ("Creating", None)

    @staticmethod
    def finish_creating(endpoint_name: str, reason: str) -> None:
        """The endpoint leaves Creating for Failed (in every account and region moto holds it)."""
        from moto.sagemaker.models import sagemaker_backends

        for regions in sagemaker_backends.values():
            for backend in regions.values():
                endpoint = backend.endpoints.get(endpoint_name)
                if endpoint is not None and endpoint.endpoint_status == "Creating":
                    endpoint.endpoint_status, endpoint.failure_reason = "Failed", reason

    @contextlib.contextmanager
    def installed(self) -> Iterator[SageMakerFaults]:
        faults = self
        original = SageMakerModelBackend.create_endpoint
        original_delete = SageMakerModelBackend.delete_endpoint

        def delete_endpoint(backend: SageMakerModelBackend, endpoint_name: str) -> Any:
            endpoint = backend.endpoints.get(endpoint_name)
            if (
                faults.refuse_deleting_creating_endpoints
                and endpoint is not None
                and endpoint.endpoint_status == "Creating"
            ):
                arn = FakeEndpoint.arn_formatter(endpoint_name, backend.account_id, backend.region_name)
                raise ValidationError(message=f'Cannot update in-progress endpoint "{arn}".')
            return original_delete(backend, endpoint_name)

        def create_endpoint(backend: SageMakerModelBackend, *args: Any, **kwargs: Any) -> Any:
            endpoint = original(backend, *args, **kwargs)
            tags = {tag["Key"]: tag["Value"] for tag in endpoint.tags or []}
            branch_id = tags.get("fmbench:branch-id", "")
            for prefix, (status, reason) in faults._statuses.items():
                if branch_id.startswith(prefix):
                    endpoint.endpoint_status = status
                    endpoint.failure_reason = reason
            return endpoint

        with (
            mock.patch.object(SageMakerModelBackend, "create_endpoint", create_endpoint),
            mock.patch.object(SageMakerModelBackend, "delete_endpoint", delete_endpoint),
        ):
            yield self


# ---------------------------------------------------------------------------------------- StopExecution


class StopExecutionShim:
    """A stop is final, as in Step Functions: no later failure of a state turns ABORTED into FAILED."""

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopExecutionShim]:
        original = Environment.set_error

        def set_error(env: Environment, error: Any) -> None:
            if isinstance(env._program_state, ProgramStopped):
                return
            original(env, error)

        with mock.patch.object(Environment, "set_error", set_error):
            yield self


# ------------------------------------------------------------------------------------- scheduled rules


class ScheduledRulesShim:
    """A rule with a schedule and no event pattern matches no event put on a bus, as in EventBridge."""

    @contextlib.contextmanager
    def installed(self) -> Iterator[ScheduledRulesShim]:
        from moto.events.models import Rule

        original = Rule.send_to_targets

        def send_to_targets(rule: Rule, *args: Any, **kwargs: Any) -> None:
            if rule.scheduled_expression and not rule.event_pattern.get_pattern():
                return
            original(rule, *args, **kwargs)

        with mock.patch.object(Rule, "send_to_targets", send_to_targets):
            yield self


# ----------------------------------------------------------------------------------------- Service Quotas


class ServiceQuotasShim:
    """``ListServiceQuotas`` for SageMaker's "<instance type> for endpoint usage" quotas, by instance type,
    and ``GetServiceQuota`` for EC2's vCPU quotas, by quota code (moto knows only VPC quotas)."""

    def __init__(
        self, endpoint_instances: dict[str, float], ec2_vcpus: dict[str, float] | None = None
    ) -> None:
        self.endpoint_instances = endpoint_instances
        self.ec2_vcpus = dict(ec2_vcpus or {})

    @contextlib.contextmanager
    def installed(self) -> Iterator[ServiceQuotasShim]:
        shim = self

        def list_service_quotas(response: ServiceQuotasResponse) -> str:
            if json.loads(response.body).get("ServiceCode") != "sagemaker":
                return json.dumps({"Quotas": []})
            quotas = [
                {
                    "ServiceCode": "sagemaker",
                    "QuotaCode": f"L-{index:08X}",
                    "QuotaName": f"{instance_type} for endpoint usage",
                    "Value": value,
                    "Adjustable": True,
                }
                for index, (instance_type, value) in enumerate(sorted(shim.endpoint_instances.items()))
            ]
            return json.dumps({"Quotas": quotas})

        original_get = ServiceQuotasResponse.get_service_quota

        def get_service_quota(response: ServiceQuotasResponse) -> str:
            body = json.loads(response.body)
            value = shim.ec2_vcpus.get(body.get("QuotaCode", ""))
            if body.get("ServiceCode") != "ec2" or value is None:
                return str(original_get(response))
            return json.dumps(
                {"Quota": {"ServiceCode": "ec2", "QuotaCode": body["QuotaCode"], "Value": value}}
            )

        with (
            mock.patch.object(ServiceQuotasResponse, "list_service_quotas", list_service_quotas, create=True),
            mock.patch.object(ServiceQuotasResponse, "get_service_quota", get_service_quota),
        ):
            yield self


class LoopbackInstancesShim:
    """Every instance moto launches gets 127.0.0.1 as its private address: an ec2 branch's "instance" is
    then whatever the test serves on the target's port on loopback (the emulator), and the runner, which
    calls ``http://<private ip>:<port>/v1``, reaches it as it would reach the instance inside the VPC.

    ``stay_pending()`` keeps the instances launched from then on 'pending' (moto runs them at once), as an
    instance that never boots would stay, until they are terminated."""

    def __init__(self) -> None:
        self.pending = False

    def stay_pending(self) -> None:
        self.pending = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[LoopbackInstancesShim]:
        from moto.ec2.models.instances import InstanceBackend
        from moto.ec2.models.subnets import Subnet

        shim = self
        original_run = InstanceBackend.run_instances

        def run_instances(backend: Any, *args: Any, **kwargs: Any) -> Any:
            reservation = original_run(backend, *args, **kwargs)
            if shim.pending:
                for instance in reservation.instances:
                    instance._state.name, instance._state.code = "pending", 0
            return reservation

        with (
            mock.patch.object(Subnet, "get_available_subnet_ip", lambda *_a, **_k: "127.0.0.1"),
            mock.patch.object(InstanceBackend, "run_instances", run_instances),
        ):
            yield self


# ----------------------------------------------------------------------------------------------- misc


def wait_for_execution(sfn: Any, execution_arn: str, timeout_s: float) -> dict[str, Any]:
    """The execution once it has left RUNNING (moto runs it on a thread of its own)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"execution {execution_arn} still RUNNING after {timeout_s:g} s")
        time.sleep(0.2)


def s3_object_keys(s3: Any, uri: str) -> list[str]:
    bucket, prefix = split_s3_uri(uri)
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys
