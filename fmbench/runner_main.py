"""The load runner's entry point (the Fargate task): a branch spec in; records, an outcome and log lines out.

Contract (see also ``runner_image/Dockerfile``):

- The spec is a ``fmbench.spec.BranchSpec`` as JSON, from ``--spec-json`` or ``--spec-uri`` (a local path or
  ``s3://bucket/key``), else from the ``FMBENCH_BRANCH_SPEC`` (inline JSON) or ``FMBENCH_BRANCH_SPEC_URI``
  environment variables. Exactly one source must be given.
- Records go to ``<storage_root>/records/run_id=.../branch_id=.../part-NNNNN.parquet``, the outcome to
  ``fmbench.layout.outcome_uri`` (``<storage_root>/outcomes/run_id=.../branch_id=.../outcome.json``).
- The branch's life (placeholder outcome, endpoint, sweep, outcome) is ``fmbench.branch``'s, as in a local
  run; this module adds the container's part: arguments, stop signals, JSON log lines and exit codes.
- stdout carries one JSON object per line (CloudWatch-friendly); stderr carries plain-text errors.

Exit codes: 0 the final outcome is written (read its ``status``: a failed benchmark is still exit 0, so the
state machine reads the outcome rather than the exit code); 1 unexpected crash (what was measured is
flushed, a 'failed' outcome is attempted); 2 invalid spec or arguments (nothing sent, nothing written);
3 storage error (the results or the outcome cannot be written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench import storage
from fmbench.branch import BranchStorage, EmulatorDiedError, ended_outcome, sweep_branch
from fmbench.config import PLATFORMS, SuiteProblem, problems_from_validation_error
from fmbench.plan import BranchOutcome
from fmbench.records import RecordsNotWrittenError
from fmbench.runner import BranchSetupError, ProgressEvent
from fmbench.spec import BranchSpec

EXIT_OUTCOME_WRITTEN = 0
EXIT_CRASHED = 1
EXIT_INVALID_SPEC = 2
EXIT_STORAGE_ERROR = 3

SPEC_ENV_VAR = "FMBENCH_BRANCH_SPEC"
SPEC_URI_ENV_VAR = "FMBENCH_BRANCH_SPEC_URI"
LOG_LEVEL_ENV_VAR = "FMBENCH_LOG_LEVEL"
PROGRESS_INTERVAL_ENV_VAR = "FMBENCH_PROGRESS_INTERVAL_S"

NOT_FINISHED_REASON = (
    "the runner did not finish: it was killed or lost before writing its final outcome; "
    "the records of every load point it finished are kept"
)

logger = logging.getLogger(__name__)


class SpecError(ValueError):
    """The branch spec (or where to find it) is invalid; ``problems`` name each field path."""

    def __init__(self, problems: list[SuiteProblem], source: str) -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(str(problem) for problem in problems)
        super().__init__(f"invalid branch spec from {source}: {len(problems)} problem(s)\n{lines}")


# ------------------------------------------------------------------------------------------ settings


class RunnerSettings(BaseModel):
    """Everything the runner reads from its arguments and environment, validated before anything runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_json: str | None = None
    spec_uri: str | None = None
    spec_source: str = Field(description="Where the spec came from, for messages: an option or a variable.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    progress_interval_s: float = Field(
        default=10.0, gt=0, description="Least time between two progress lines of a load point."
    )

    @classmethod
    def from_sources(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> RunnerSettings:
        """Arguments win over the environment; two spec sources at once are refused, not guessed between."""
        if args.spec_json is not None or args.spec_uri is not None:
            json_text, uri, names = args.spec_json, args.spec_uri, ("--spec-json", "--spec-uri")
        else:
            json_text = environ.get(SPEC_ENV_VAR) or None
            uri = environ.get(SPEC_URI_ENV_VAR) or None
            names = (SPEC_ENV_VAR, SPEC_URI_ENV_VAR)
        if json_text is not None and uri is not None:
            raise SpecError(
                [SuiteProblem(path=f"{names[0]}, {names[1]}", reason="give one spec source, not both")],
                " and ".join(names),
            )
        if json_text is None and uri is None:
            raise SpecError(
                [
                    SuiteProblem(
                        path=SPEC_ENV_VAR,
                        reason=f"no branch spec: set {SPEC_ENV_VAR} (inline JSON) or {SPEC_URI_ENV_VAR} "
                        "(s3://bucket/key or a path), or pass --spec-json or --spec-uri",
                    )
                ],
                "the environment",
            )
        data: dict[str, Any] = {
            "spec_json": json_text,
            "spec_uri": uri,
            "spec_source": names[0] if json_text is not None else names[1],
        }
        if environ.get(LOG_LEVEL_ENV_VAR):
            data["log_level"] = environ[LOG_LEVEL_ENV_VAR].upper()
        if environ.get(PROGRESS_INTERVAL_ENV_VAR):
            data["progress_interval_s"] = environ[PROGRESS_INTERVAL_ENV_VAR]
        env_names = {"log_level": LOG_LEVEL_ENV_VAR, "progress_interval_s": PROGRESS_INTERVAL_ENV_VAR}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [
                SuiteProblem(
                    path=env_names.get(str(error["loc"][0]), str(error["loc"][0])), reason=error["msg"]
                )
                for error in exc.errors()
            ]
            raise SpecError(problems, "the environment") from None


# ------------------------------------------------------------------------------------------ the spec


def _without_platform_tag(problem: SuiteProblem) -> SuiteProblem:
    """``target.emulator.emulator.ttft_ms`` -> ``target.emulator.ttft_ms``: pydantic adds the union's tag."""
    parts = problem.path.split(".")
    if len(parts) > 1 and parts[0] == "target" and parts[1] in PLATFORMS:
        return SuiteProblem(path=".".join([parts[0], *parts[2:]]), reason=problem.reason)
    return problem


def validate_spec_data(data: Any, source: str) -> BranchSpec:
    """The whole spec checked at once, so that a user fixes every problem in one round."""
    if not isinstance(data, dict):
        raise SpecError(
            [SuiteProblem(path="(spec)", reason=f"must be a JSON object, got {type(data).__name__}")], source
        )
    try:
        spec = BranchSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(
            [_without_platform_tag(p) for p in problems_from_validation_error(exc)], source
        ) from None
    problems: list[SuiteProblem] = []
    try:
        storage.check_storage_uri(spec.storage_root)
    except storage.StorageUriError as exc:
        problems.append(SuiteProblem(path="storage_root", reason=str(exc)))
    key_env = getattr(spec.target, "api_key_env", None)
    if key_env and key_env not in os.environ:
        # Every request would be refused for want of a key: refuse the spec instead, before any is sent.
        problems.append(
            SuiteProblem(path="target.api_key_env", reason=f"environment variable {key_env} is not set")
        )
    from fmbench.payloads import check_dataset

    base_dir = Path(spec.dataset_base_dir) if spec.dataset_base_dir else None
    problems += [
        SuiteProblem(path=path, reason=reason) for path, reason in check_dataset(spec.workload, base_dir)
    ]
    if problems:
        raise SpecError(problems, source)
    return spec


def load_spec(settings: RunnerSettings) -> BranchSpec:
    """Read, parse and validate the spec; ``StorageAccessError`` when its location cannot be read."""
    if settings.spec_json is not None:
        text = settings.spec_json
        source = settings.spec_source
    else:
        assert settings.spec_uri is not None
        source = f"{settings.spec_source}={settings.spec_uri}"
        try:
            raw = storage.read_bytes(settings.spec_uri)
        except (storage.StorageUriError, storage.StorageNotFoundError) as exc:
            # A spec that is not where it is said to be is a wrong invocation, not a storage outage.
            raise SpecError([SuiteProblem(path=settings.spec_source, reason=str(exc))], source) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
            raise SpecError([SuiteProblem(path="(spec)", reason=reason)], source) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise SpecError([SuiteProblem(path="(spec)", reason=reason)], source) from None
    except RecursionError:
        raise SpecError(
            [SuiteProblem(path="(spec)", reason="nested too deeply to be a spec")], source
        ) from None
    return validate_spec_data(data, source)


# ------------------------------------------------------------------------------------------- logging


def _utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLog:
    """One JSON object per line: CloudWatch Logs keeps each line as one event and Logs Insights finds the
    fields of JSON events by itself, so ``filter kind = "load_point_finished"`` works without parsing."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.context: dict[str, Any] = {}
        self._lock = threading.Lock()

    def emit(self, kind: str, level: str = "info", **fields: Any) -> None:
        event = {"timestamp": _utc_timestamp(), "level": level, "kind": kind, **self.context}
        event.update((key, value) for key, value in fields.items() if value is not None)
        line = json.dumps(event, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class JsonLogHandler(logging.Handler):
    """Library log records (the runner's, the endpoint clients') as JSON lines among the progress events."""

    def __init__(self, log: JsonLog) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exception = None
            if record.exc_info:
                exception = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.log.emit(
                "log",
                level=record.levelname.lower(),
                logger=record.name,
                message=record.getMessage(),
                exception=exception,
            )
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logs
            self.handleError(record)


class ProgressLog:
    """Turns the runner's progress events into log lines: every load point's start and end, and a
    progress line at most every ``interval_s`` instead of one line per request."""

    def __init__(self, log: JsonLog, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self.load_points_finished = 0
        self.current_load_point_index: int | None = None
        self._last_progress_s = float("-inf")

    def __call__(self, event: ProgressEvent) -> None:
        kind: str = event.kind
        level = "info"
        if kind == "request_done":
            now_s = self.clock()
            if now_s - self._last_progress_s < self.interval_s:
                return
            self._last_progress_s = now_s
            kind = "load_point_progress"
        elif kind == "load_point_started":
            self.current_load_point_index = event.load_point_index
            self._last_progress_s = self.clock()
        elif kind == "load_point_finished":
            self.load_points_finished += 1
        elif kind == "branch_finished" and event.message and not event.message.startswith("succeeded"):
            level = "warning"
        self.log.emit(
            kind,
            level=level,
            load_point_index=event.load_point_index,
            load_points_total=event.load_points_total,
            concurrency=event.concurrency,
            payload_bin=event.payload_bin,
            completed=event.completed,
            total=event.total,
            errors=event.errors,
            message=event.message,
        )


# --------------------------------------------------------------------------------------------- the run


async def _run_with_endpoint(spec: BranchSpec, progress: ProgressLog, log: JsonLog) -> BranchOutcome:
    def emulator_started(url: str, pid: int | None) -> None:
        log.emit("emulator_started", url=url, pid=pid)

    return await sweep_branch(spec, progress, emulator_started)


class _StopRequest:
    """SIGTERM (Fargate's stop, then SIGKILL after the task's stopTimeout) or SIGINT: cancel the sweep
    once; the runner flushes what it measured on cancellation."""

    def __init__(self, task: asyncio.Task[BranchOutcome], log: JsonLog) -> None:
        self.task = task
        self.log = log
        self.signal_name: str | None = None

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            self.log.emit("stop_repeated", level="warning", signal=name, message="already stopping")
            return
        self.signal_name = name
        over = self.task.done()
        self.log.emit(
            "stop_requested",
            level="warning",
            signal=name,
            message="the sweep is over; writing the outcome before exiting"
            if over
            else "cancelling the sweep; requests measured so far are flushed before the outcome",
        )
        if not over:
            self.task.cancel()


def _records_written(branch_storage: BranchStorage, log: JsonLog) -> int:
    try:
        return branch_storage.records_written_by_this_run()
    except OSError as exc:
        log.emit("storage_error", level="error", message=f"cannot count the records written: {exc}")
        return 0


async def _outcome_of_run(
    task: asyncio.Task[BranchOutcome],
    stop: _StopRequest,
    progress: ProgressLog,
    spec: BranchSpec,
    branch_storage: BranchStorage,
    log: JsonLog,
    started_epoch_s: float,
) -> tuple[BranchOutcome, int]:
    """However the branch ended (verdict, stop, setup failure, crash), an outcome and the exit code."""
    try:
        return await task, EXIT_OUTCOME_WRITTEN
    except asyncio.CancelledError:
        if stop.signal_name is None:
            raise
        finished = progress.load_points_finished
        reason = f"stopped by {stop.signal_name} after {finished} of {spec.load_point_count} load point(s)"
        if progress.current_load_point_index is not None and finished < spec.load_point_count:
            reason += "; the records of the interrupted load point are kept, flagged as cancelled"
        records = _records_written(branch_storage, log)
        status: Literal["partial", "failed"] = "partial" if finished else "failed"
        return ended_outcome(spec, status, reason, records, finished, started_epoch_s), EXIT_OUTCOME_WRITTEN
    except BranchSetupError as exc:
        return ended_outcome(spec, "failed", str(exc), 0, 0, started_epoch_s), EXIT_OUTCOME_WRITTEN
    except Exception as exc:
        from fmbench.emulator.process import EmulatorStartError

        exit_code = EXIT_OUTCOME_WRITTEN
        if isinstance(exc, EmulatorStartError):
            reason = f"the emulator did not start: {exc}"
        elif isinstance(exc, EmulatorDiedError):
            reason = f"{exc}; the records measured before are kept"
        elif isinstance(exc, OSError):
            logger.exception("branch %s: storage failed", spec.branch_id)
            reason = f"storage error: {exc}"
            exit_code = EXIT_STORAGE_ERROR
        else:
            logger.exception("branch %s: the runner crashed", spec.branch_id)
            reason = f"runner crashed: {type(exc).__name__}: {exc}"
            exit_code = EXIT_CRASHED
        records = _records_written(branch_storage, log)
        finished = progress.load_points_finished
        # what was kept of a sweep cut short by its emulator or its storage is a partial result
        cut_short = isinstance(exc, EmulatorDiedError | RecordsNotWrittenError) and records > 0
        outcome = ended_outcome(
            spec, "partial" if cut_short else "failed", reason, records, finished, started_epoch_s
        )
        if isinstance(exc, RecordsNotWrittenError):
            outcome = outcome.model_copy(update={"requests_attempted": records + exc.records_not_written})
        return outcome, exit_code


async def run_runner(
    spec: BranchSpec,
    branch_storage: BranchStorage,
    log: JsonLog,
    settings: RunnerSettings,
    started_epoch_s: float,
) -> int:
    """Run the branch, turn however it ended into an outcome, write the outcome; returns the exit code.

    The signal handlers stay installed until the outcome is written: a SIGTERM that arrives after the
    sweep must not kill the process between the last record and the outcome that accounts for it.
    """
    loop = asyncio.get_running_loop()
    progress = ProgressLog(log, settings.progress_interval_s)
    task = asyncio.create_task(
        _run_with_endpoint(spec, progress, log), name=f"fmbench-branch-{spec.branch_id}"
    )
    stop = _StopRequest(task, log)
    handled = (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        loop.add_signal_handler(signum, stop, signum)
    try:
        outcome, exit_code = await _outcome_of_run(
            task, stop, progress, spec, branch_storage, log, started_epoch_s
        )
        try:
            await asyncio.to_thread(branch_storage.write_outcome, outcome)
        except storage.StorageAccessError as exc:
            log.emit("storage_error", level="error", message=str(exc), uri=branch_storage.outcome_uri)
            print(f"fmbench-runner: storage error: {exc}", file=sys.stderr)
            return EXIT_CRASHED if exit_code == EXIT_CRASHED else EXIT_STORAGE_ERROR
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    log.emit(
        "outcome_written",
        level="info" if outcome.status == "succeeded" else "warning",
        uri=branch_storage.outcome_uri,
        status=outcome.status,
        reason=outcome.reason,
        requests_attempted=outcome.requests_attempted,
        records_written=outcome.records_written,
        load_points_planned=outcome.load_points_planned,
        load_points_completed=outcome.load_points_completed,
    )
    return exit_code


# ------------------------------------------------------------------------------------------ the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmbench-runner",
        description="Run one benchmark branch (the load runner of the cloud workflow): read a branch spec, "
        "drive its endpoint through the load points, write the request records and the branch outcome.",
        epilog=f"Without options the spec comes from {SPEC_ENV_VAR} (inline JSON) or {SPEC_URI_ENV_VAR}. "
        "Exit codes: 0 outcome written (read its status), 1 crash, 2 invalid spec, 3 storage error.",
    )
    parser.add_argument("--spec-json", metavar="JSON", help="the branch spec as inline JSON")
    parser.add_argument(
        "--spec-uri", metavar="URI", help="where the branch spec is: s3://bucket/key or a path"
    )
    return parser


def _report_invalid_spec(error: SpecError, log: JsonLog) -> None:
    print(
        f"fmbench-runner: invalid branch spec from {error.source}: {len(error.problems)} problem(s)",
        file=sys.stderr,
    )
    for problem in error.problems:
        print(str(problem), file=sys.stderr)
    log.emit("spec_invalid", level="error", source=error.source, problems=[str(p) for p in error.problems])


def _report_storage_error(error: Exception, log: JsonLog) -> None:
    print(f"fmbench-runner: storage error: {error}", file=sys.stderr)
    log.emit("storage_error", level="error", message=str(error))


def _run(args: argparse.Namespace, environ: Mapping[str, str], log: JsonLog) -> int:
    started_epoch_s = time.time()
    try:
        settings = RunnerSettings.from_sources(args, environ)
        logging.getLogger().setLevel(settings.log_level)
        spec = load_spec(settings)
    except SpecError as exc:
        _report_invalid_spec(exc, log)
        return EXIT_INVALID_SPEC
    except storage.StorageAccessError as exc:
        _report_storage_error(exc, log)
        return EXIT_STORAGE_ERROR
    log.context.update(run_id=spec.run_id, branch_id=spec.branch_id)
    log.emit(
        "runner_started",
        spec_source=settings.spec_source,
        target=spec.target.name,
        platform=spec.target.platform,
        storage_root=spec.storage_root,
        load_points_total=spec.load_point_count,
        pid=os.getpid(),
    )
    branch_storage = BranchStorage(spec)
    placeholder = ended_outcome(spec, "failed", NOT_FINISHED_REASON, 0, 0, started_epoch_s)
    try:
        branch_storage.prepare(placeholder)
    except (storage.StorageAccessError, storage.StorageUriError) as exc:  # the latter: a bad S3 endpoint
        _report_storage_error(exc, log)
        return EXIT_STORAGE_ERROR
    try:
        exit_code = asyncio.run(run_runner(spec, branch_storage, log, settings, started_epoch_s))
    except Exception as exc:
        # A fault of this module rather than of the branch: the placeholder outcome ('failed') stays.
        logger.exception("the runner crashed outside the branch")
        print(f"fmbench-runner: crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        exit_code = EXIT_CRASHED
    log.emit("runner_exit", exit_code=exit_code)
    return exit_code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``python -m fmbench.runner_main`` and the ``fmbench-runner`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    log = JsonLog(sys.stdout)
    handler = JsonLogHandler(log)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    try:
        return _run(args, os.environ if environ is None else environ, log)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())
