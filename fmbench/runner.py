"""The branch runner: probe the endpoint, sweep the load points, write every request as a record."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fmbench.config import PlannedPoint
from fmbench.endpoints.base import EndpointClient
from fmbench.endpoints.bedrock import BedrockClient
from fmbench.endpoints.formats import payload_format
from fmbench.endpoints.openai import OpenAIClient
from fmbench.endpoints.sagemaker import SageMakerClient
from fmbench.evaluation.selection import judged_prompts
from fmbench.loadgen import (
    FLUSH_INTERVAL_S,
    FLUSH_MAX_RECORDS,
    Attempt,
    EpochClock,
    LoadPoint,
    LoadPointRun,
    LoadPointSummary,
    PartRecorder,
    PointPart,
    RecordContext,
)
from fmbench.payloads import DatasetError, Prompt, PromptDeck, WorkloadPrompts, prepare_workload
from fmbench.plan import BranchOutcome
from fmbench.prompt_store import load_materialized
from fmbench.records import RecordsNotWrittenError, RecordWriter
from fmbench.search import CapacitySearch, PointFigures, Verdict, level_verdict, verdict
from fmbench.server_metrics import PointKey, ServerMetricsScraper, default_metrics_url
from fmbench.spec import BranchSpec
from fmbench.synthetic import SyntheticError
from fmbench.tokenizer import Tokenizer, TokenizerError

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0

ProgressKind = Literal[
    "branch_started", "load_point_started", "request_done", "load_point_finished", "branch_finished"
]


class BranchSetupError(ValueError):
    """A branch this runner cannot set up: raised before any request, so nothing is half-measured."""


class UnsupportedPlatformError(BranchSetupError):
    """A target platform without an endpoint client yet."""


class ApiKeyMissingError(BranchSetupError):
    """The target names an ``api_key_env`` variable that is not set in the runner's environment."""


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A moment of a branch's life, for progress bars and logs.

    For load-point events, ``completed``, ``total`` and ``errors`` count requests of that load point
    (warm-up and cool-down included; ``total`` is None when a phase is timed). For branch events they
    count requests of the whole branch and ``total`` is None. A load point is either a ``concurrency``
    or a ``request_rate_per_s``; ``client_bound`` is set on 'load_point_finished'.
    """

    branch_id: str
    kind: ProgressKind
    concurrency: int | None = None
    payload_bin: str | None = None
    load_point_index: int | None = None
    load_points_total: int = 0
    completed: int = 0
    total: int | None = None
    errors: int = 0
    message: str | None = None
    request_rate_per_s: float | None = None
    client_bound: bool | None = None


def describe_load(point: LoadPoint) -> str:
    """'concurrency 4' or '2.5 req/s', for messages."""
    if point.concurrency is not None:
        return f"concurrency {point.concurrency}"
    return f"{point.request_rate_per_s:g} req/s"


def make_client(spec: BranchSpec, endpoint_url: str | None = None) -> EndpointClient:
    """The endpoint client of a branch, with a connection pool as large as its highest concurrency.

    Raises ``UnsupportedPlatformError`` for platforms without a client, ``ApiKeyMissingError`` when
    ``api_key_env`` names an unset variable, ``BranchSetupError`` for an emulator without its URL or a
    SageMaker target without an endpoint name. For 'sagemaker' and 'bedrock' targets, ``endpoint_url``
    (when given) replaces the runtime URL, as the target's own ``endpoint_url`` does.
    """
    target = spec.target
    max_connections = spec.load.connection_pool_size
    if target.platform == "openai":
        api_key = None
        if target.api_key_env:
            api_key = os.environ.get(target.api_key_env)
            if api_key is None:
                raise ApiKeyMissingError(
                    f"environment variable {target.api_key_env} (api_key_env) is not set"
                )
        return OpenAIClient(
            endpoint_url or target.endpoint_url,
            api=target.api,
            model=target.model,
            api_key=api_key,
            headers=target.headers,
            max_connections=max_connections,
            extra_body=target.extra_body,
        )
    if target.platform == "emulator":
        if not endpoint_url:
            raise BranchSetupError(
                f"branch {spec.branch_id}: an emulator target needs endpoint_url "
                "(the base URL of the emulator the caller started)"
            )
        return OpenAIClient(
            endpoint_url.rstrip("/") + "/v1",
            api=target.api,
            model=target.model,
            max_connections=max_connections,
        )
    if target.platform == "ec2":
        # the instance's URL inside the VPC, written into the spec by the workflow's deploy step
        url = endpoint_url or spec.ec2_endpoint_url
        if not url:
            raise BranchSetupError(
                f"branch {spec.branch_id}: the ec2 target has no instance URL yet (ec2 targets run in the "
                "cloud workflow, which launches the instance; docs/ec2.md)"
            )
        return OpenAIClient(url, api=target.api, model=target.served_model, max_connections=max_connections)
    # botocore's own read timeout only backs up the per-request bound, so it must not fire first.
    aws_read_timeout_s = spec.load.request_timeout_s + 1.0
    if target.platform == "sagemaker":
        # an existing endpoint is named in the target; one the workflow deploys is named by the plan
        endpoint_name = spec.sagemaker_endpoint_name or target.endpoint_name
        if endpoint_name is None:
            raise BranchSetupError(f"branch {spec.branch_id}: the SageMaker target has no endpoint to call")
        deployment = spec.sagemaker_deployment
        region = target.region or (deployment.region if deployment is not None else None)
        payload = payload_format(
            target.payload_format,
            model=target.model,
            request_template=target.request_template,
            response_text_path=target.response_text_path,
        )
        return SageMakerClient(
            endpoint_name,
            payload,
            region=region,
            endpoint_url=endpoint_url or target.endpoint_url,
            max_connections=max_connections,
            read_timeout_s=aws_read_timeout_s,
        )
    if target.platform == "bedrock":
        return BedrockClient(
            target.model_id,
            region=target.region,
            endpoint_url=endpoint_url or target.endpoint_url,
            max_connections=max_connections,
            read_timeout_s=aws_read_timeout_s,
        )
    raise UnsupportedPlatformError(f"platform {target.platform!r} has no endpoint client yet")


def metrics_url(spec: BranchSpec, endpoint_url: str | None = None) -> str | None:
    """Where a branch's server publishes its Prometheus metrics: emulator and openai targets, when the
    suite's ``load.server_metrics`` is enabled; None otherwise (the AWS platforms report to CloudWatch)."""
    target = spec.target
    if not spec.load.server_metrics.enabled:
        return None
    if target.platform == "emulator" and endpoint_url:
        return default_metrics_url(endpoint_url)
    if target.platform == "openai":
        return target.metrics_url or default_metrics_url(endpoint_url or target.endpoint_url)
    return None


def _scraper(spec: BranchSpec, endpoint_url: str | None) -> ServerMetricsScraper | None:
    url = metrics_url(spec, endpoint_url)
    if url is None:
        return None
    return ServerMetricsScraper(
        url,
        spec.load.server_metrics.scrape_interval_s,
        root=spec.storage_root,
        run_id=spec.run_id,
        branch_id=spec.branch_id,
    )


class _Progress:
    """Builds events only when someone listens; a failing listener is logged once and then ignored."""

    def __init__(
        self, branch_id: str, listener: Callable[[ProgressEvent], None] | None, points_total: int
    ) -> None:
        self.branch_id = branch_id
        self.listener = listener
        self.points_total = points_total

    def emit(
        self,
        kind: ProgressKind,
        *,
        point: LoadPoint | None = None,
        index: int | None = None,
        completed: int = 0,
        errors: int = 0,
        message: str | None = None,
        client_bound: bool | None = None,
    ) -> None:
        if self.listener is None:
            return
        event = ProgressEvent(
            branch_id=self.branch_id,
            kind=kind,
            concurrency=None if point is None else point.concurrency,
            payload_bin=None if point is None else point.payload_bin,
            load_point_index=index,
            load_points_total=self.points_total,
            completed=completed,
            total=None if point is None else point.total_requests,
            errors=errors,
            message=message,
            request_rate_per_s=None if point is None else point.request_rate_per_s,
            client_bound=client_bound,
        )
        try:
            self.listener(event)
        except Exception:
            logger.exception("progress listener failed; further progress events of this branch are dropped")
            self.listener = None


@dataclass(slots=True)
class _Tally:
    """The sweep's running account, readable by the caller even when the sweep raised."""

    requests_attempted: int = 0
    errors: int = 0
    load_points_completed: int = 0

    def add_summary(self, summary: LoadPointSummary, *, completed: bool) -> None:
        self.requests_attempted += summary.attempts
        self.errors += summary.errors
        self.load_points_completed += completed


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"


def _failure_reason(point: LoadPoint, summary: LoadPointSummary) -> str:
    return (
        f"all {summary.measured} requests at {describe_load(point)}, bin {point.payload_bin} "
        f"failed: {summary.dominant_error_class} ({summary.sample_error_message})"
    )


async def run_branch(
    spec: BranchSpec,
    *,
    endpoint_url: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    base_dir: Path | None = None,
    flush_interval_s: float = FLUSH_INTERVAL_S,
    flush_max_records: int = FLUSH_MAX_RECORDS,
) -> BranchOutcome:
    """Run one branch's sweep and account for it; the records are in storage before this returns.

    For an 'openai' target, ``endpoint_url`` (when given) replaces the target's URL; for an 'emulator'
    target it is required: the emulator's base URL, started by the caller. Endpoint failures become a
    'failed' outcome, never an exception; cancellation propagates after the records are flushed.
    Records are written at least once per load point, and within one every ``flush_interval_s`` seconds
    or ``flush_max_records`` requests.
    """
    started_epoch_s = time.time()
    points_total = spec.load_point_count
    progress = _Progress(spec.branch_id, on_progress, points_total)

    def outcome(reason: str | None, tally: _Tally | None = None, records_written: int = 0) -> BranchOutcome:
        tally = tally or _Tally()
        status: Literal["succeeded", "failed"] = "failed" if reason else "succeeded"
        result = BranchOutcome(
            branch_id=spec.branch_id,
            status=status,
            reason=reason,
            requests_attempted=tally.requests_attempted,
            records_written=records_written,
            load_points_planned=points_total,
            load_points_completed=tally.load_points_completed,
            started_epoch_s=started_epoch_s,
            ended_epoch_s=time.time(),
        )
        logger.info("branch %s %s%s", spec.branch_id, status, f": {reason}" if reason else "")
        progress.emit(
            "branch_finished",
            completed=tally.requests_attempted,
            errors=tally.errors,
            message=status if reason is None else f"{status}: {reason}",
        )
        return result

    progress.emit("branch_started", message=f"target {spec.target.name} ({spec.target.platform})")
    folder = base_dir or (Path(spec.dataset_base_dir) if spec.dataset_base_dir else None)
    # Set-up work runs in a worker thread: in a local run with parallel branches, one event loop also
    # times the other branches' requests, which a branch tokenizing its dataset would hold up.
    try:
        prepared = await asyncio.to_thread(branch_prompts, spec, folder)
    except DatasetError as exc:
        return outcome(f"dataset: {exc}")
    except TokenizerError as exc:
        return outcome(f"tokenizer: {exc}")
    except SyntheticError as exc:
        return outcome(f"synthetic prompts: {exc}")
    empty = [label for label, prompts in prepared.by_bin.items() if not prompts]
    if empty:
        return outcome(f"no prompts in bin(s) {', '.join(empty)}")
    try:
        client = make_client(spec, endpoint_url)
    except ApiKeyMissingError as exc:
        return outcome(str(exc))

    try:
        unreachable = await client.probe(PROBE_TIMEOUT_S)
        if unreachable is not None:
            return outcome(f"endpoint unreachable: {unreachable}")
        writer = await asyncio.to_thread(RecordWriter, spec.storage_root, spec.run_id, spec.branch_id)
        tally = _Tally()
        scraper = _scraper(spec, endpoint_url)
        try:
            failure = await _sweep(
                spec,
                client,
                prepared,
                writer,
                progress,
                tally,
                scraper,
                flush_interval_s=flush_interval_s,
                flush_max_records=flush_max_records,
            )
        except RecordsNotWrittenError:
            raise  # the caller accounts for it with what is on storage
        except Exception as exc:
            logger.exception("branch %s: the sweep failed", spec.branch_id)
            failure = f"runner error: {type(exc).__name__}: {exc}"
        finally:
            if scraper is not None:
                await scraper.aclose()
        return outcome(failure, tally, writer.rows_written)
    finally:
        await client.aclose()


def branch_prompts(spec: BranchSpec, base_dir: Path | None) -> WorkloadPrompts:
    """The branch's prompts: the run's materialized ones when the plan wrote them, else the workload's own.

    Raises ``DatasetError``, ``TokenizerError`` or ``SyntheticError``.
    """
    if spec.prompts_uri is not None:
        return load_materialized(spec.workload, spec.prompts_uri, base_dir)
    return prepare_workload(spec.workload, base_dir)


def branch_decks(spec: BranchSpec, prepared: WorkloadPrompts) -> dict[str, PromptDeck]:
    """One deck per bin for the whole branch: its load points draw from it in turn, so each request of
    the branch gets a prompt no earlier one had while the bin has any (then ``workload.repeat``)."""
    return {b.label: prepared.deck(b.label) for b in spec.workload.bins}


def load_points(spec: BranchSpec, decks: dict[str, PromptDeck]) -> list[LoadPoint]:
    """The branch's sweep in its order (``LoadPlan.points``), each point ready for the load generator."""
    labels = [b.label for b in spec.workload.bins]
    return [
        LoadPoint.of_plan(spec.load, planned, decks[planned.payload_bin], spec.workload.inference)
        for planned in spec.load.points(labels)
    ]


def _reuse_message(decks: dict[str, PromptDeck]) -> str | None:
    reused = {label: deck for label, deck in decks.items() if deck.reused}
    if not reused:
        return None
    parts = [f"bin {label}: {deck.reused} of {deck.drawn}" for label, deck in reused.items()]
    return (
        f"requests that reused a prompt (the bin had fewer distinct prompts; workload.repeat: cycle): "
        f"{'; '.join(parts)}"
    )


@dataclass(frozen=True, slots=True)
class _BranchRun:
    """What every load point of one branch shares: the endpoint, where its records go and how they are
    built, and the branch's running account."""

    spec: BranchSpec
    client: EndpointClient
    writer: RecordWriter
    progress: _Progress
    tally: _Tally
    clock: EpochClock  # one anchor for the whole branch, so all its records share a time scale
    tokenizer: Tokenizer  # the prompts' counts and the answers' in the same tokens
    context: RecordContext
    scraper: ServerMetricsScraper | None
    flush_interval_s: float
    flush_max_records: int


async def _sweep(
    spec: BranchSpec,
    client: EndpointClient,
    prepared: WorkloadPrompts,
    writer: RecordWriter,
    progress: _Progress,
    tally: _Tally,
    scraper: ServerMetricsScraper | None,
    *,
    flush_interval_s: float,
    flush_max_records: int,
) -> str | None:
    """Every load point in order; returns the failure reason of the point that stopped the sweep, if any.

    Only a load point whose measured requests all failed stops the sweep; any other failure is a record.
    """
    run = _BranchRun(
        spec=spec,
        client=client,
        writer=writer,
        progress=progress,
        tally=tally,
        clock=EpochClock.start(),
        tokenizer=prepared.tokenizer,
        context=RecordContext.for_branch(spec),
        scraper=scraper,
        flush_interval_s=flush_interval_s,
        flush_max_records=flush_max_records,
    )
    quality = quality_prompts(spec, prepared)  # chosen before the load, from the bins' prompts
    decks = branch_decks(spec, prepared)
    try:
        points = load_points(spec, decks)
        failure = await _sweep_points(run, points)
        if failure is None and spec.load.search is not None:
            _, failure = await _search(run, decks, len(points))
        if failure is None and quality:
            try:
                await _quality_pass(run, quality)
            except RecordsNotWrittenError:
                raise
            except Exception:  # the load's results stand; the branch's answers are then not judged
                logger.exception("branch %s: the quality pass failed", spec.branch_id)
        return failure
    finally:
        reuse = _reuse_message(decks)
        if reuse is not None:
            logger.warning("branch %s: %s", spec.branch_id, reuse)


async def _sweep_points(run: _BranchRun, points: list[LoadPoint]) -> str | None:
    for index, point in enumerate(points):
        ran = await _run_point(run, point, index)
        run.tally.add_summary(ran.summary, completed=ran.stop_reason is None)
        if ran.stop_reason is not None:
            return ran.stop_reason
    return None


def quality_prompts(spec: BranchSpec, prepared: WorkloadPrompts) -> dict[str, list[Prompt]]:
    """Bin -> the prompts the branch's quality pass sends (``evaluation.quality_pass``): those the judging
    selects (``judged_prompts``: distinct, with a reference answer, seeded order, capped per bin), known
    from the bins' prompts before the load. Empty without a quality pass."""
    quality = spec.quality_pass
    if quality is None:
        return {}
    return judged_prompts(prepared.by_bin, max_per_bin=quality.max_answers_per_bin, seed=quality.seed)


def quality_point(spec: BranchSpec, payload_bin: str, prompts: list[Prompt]) -> LoadPoint:
    """The quality pass over one bin: each prompt once, one at a time (a closed loop at concurrency 1), no
    warm-up or cool-down, at temperature 0 (greedy decoding; the workload's other inference parameters
    kept, but never ``fixed_output_tokens``: a judged answer ends where the model ends it)."""
    params = spec.workload.inference.model_copy(update={"temperature": 0.0, "fixed_output_tokens": False})
    return LoadPoint(
        concurrency=1,
        payload_bin=payload_bin,
        prompts=prompts,
        params=params,
        timeout_s=spec.load.request_timeout_s,
        requests=len(prompts),
        seed=spec.load.seed,
        quality=True,
    )


async def _quality_pass(run: _BranchRun, prompts_by_bin: dict[str, list[Prompt]]) -> None:
    """Send the judged prompts once more, bin by bin, after the load and while the endpoint lives; their
    records have phase 'quality'. Not a load point: no progress events, no server metrics scrape, and a
    bin whose every request failed is logged (its answers are then missing from the judging) without
    failing the branch, whose load results stand."""
    spec = run.spec
    await run.client.open_connections(1, PROBE_TIMEOUT_S)
    for payload_bin, prompts in prompts_by_bin.items():
        point = quality_point(spec, payload_bin, prompts)
        point_run = LoadPointRun(
            run.client,
            point,
            write_part=PartRecorder(run.writer, point, run.context, run.clock, run.tokenizer),
            limits=spec.load.client_check,
            flush_interval_s=run.flush_interval_s,
            flush_max_records=run.flush_max_records,
        )
        try:
            await point_run.run()
        finally:
            summary = point_run.summary()
            run.tally.add_summary(summary, completed=False)
        if summary.attempts and summary.errors == summary.attempts:
            logger.warning(
                "branch %s: every request of the quality pass over bin %s failed (%s: %s); its answers "
                "cannot be judged",
                spec.branch_id,
                payload_bin,
                summary.dominant_error_class,
                summary.sample_error_message,
            )
        else:
            logger.info(
                "branch %s: quality pass over bin %s: %d prompts, %d errors",
                spec.branch_id,
                payload_bin,
                summary.attempts,
                summary.errors,
            )


@dataclass(frozen=True, slots=True)
class _SloRow:
    """What the SLO verdict reads of a record (``fmbench.search.MeasuredRow``), kept for search points."""

    phase: str
    status: str
    latency_s: float
    ttft_s: float | None
    client_bound: bool


@dataclass(slots=True)
class _KeepingRecorder:
    """A search point's ``write_part``: writes as ``PartRecorder`` does and keeps what the verdict needs."""

    recorder: PartRecorder
    rows: list[_SloRow] = field(default_factory=list)

    def __call__(self, part: PointPart) -> None:
        records = self.recorder.record(part)
        self.rows.extend(_SloRow(r.phase, r.status, r.latency_s, r.ttft_s, r.client_bound) for r in records)


@dataclass(frozen=True, slots=True)
class _PointRan:
    summary: LoadPointSummary
    stop_reason: str | None  # why the branch stops here (prompts used up, every measured request failed)
    rows: tuple[_SloRow, ...]  # a search point's rows, else empty


async def _run_point(run: _BranchRun, point: LoadPoint, index: int) -> _PointRan:
    """One load point; its records are on storage when this returns (or raises)."""
    spec, client, progress, scraper = run.spec, run.client, run.progress, run.scraper
    if point.concurrency is not None:  # before the point starts: connection set-up is not measured
        await client.open_connections(point.concurrency, PROBE_TIMEOUT_S)
    progress.emit("load_point_started", point=point, index=index)

    recorder = PartRecorder(run.writer, point, run.context, run.clock, run.tokenizer)
    keeping = _KeepingRecorder(recorder) if point.search_step is not None else None
    point_run = LoadPointRun(
        client,
        point,
        write_part=keeping if keeping is not None else recorder,
        limits=spec.load.client_check,
        flush_interval_s=run.flush_interval_s,
        flush_max_records=run.flush_max_records,
        on_request_done=_request_listener(progress, point, index),
    )
    try:
        if scraper is None:
            result = await point_run.run()
        else:
            key = PointKey(point.load_mode, point.concurrency, point.request_rate_per_s, point.payload_bin)
            async with scraper.watch(key):
                result = await point_run.run()
    except BaseException:
        # Also on cancellation or a crash: the requests that were made are accounted for.
        run.tally.add_summary(point_run.summary(), completed=False)
        raise
    summary = point_run.summary()
    check = result.check
    message = f"max in flight {result.max_in_flight}"
    if result.client_bound:
        message += f"; client-bound: {'; '.join(result.reasons)}"
    progress.emit(
        "load_point_finished",
        point=point,
        index=index,
        completed=summary.attempts,
        errors=summary.errors,
        message=message,
        client_bound=result.client_bound,
    )
    logger.log(
        logging.WARNING if result.client_bound else logging.INFO,
        "branch %s: %s, bin %s: %d requests, %d errors, max in flight %d, schedule lag p99 %s, "
        "runner CPU %.2f of a core, event loop late p99 %s%s",
        spec.branch_id,
        describe_load(point),
        point.payload_bin,
        summary.attempts,
        summary.errors,
        result.max_in_flight,
        _ms(check.schedule_lag_p99_s),
        check.runner_cpu_fraction,
        _ms(check.loop_lag_p99_s),
        f"; CLIENT-BOUND ({'; '.join(result.reasons)})" if result.client_bound else "",
    )
    stop_reason = None
    if point_run.engine.prompts_exhausted is not None:
        stop_reason = f"prompts: {point_run.engine.prompts_exhausted}"
    elif summary.all_measured_failed:
        stop_reason = _failure_reason(point, summary)
    return _PointRan(summary, stop_reason, tuple(keeping.rows) if keeping is not None else ())


async def _search(
    run: _BranchRun, decks: dict[str, PromptDeck], first_index: int
) -> tuple[CapacitySearch, str | None]:
    """The branch's capacity search (``load.search``) after its sweep: each level over every bin, judged
    against the SLO as the report judges it (``fmbench.search``). Returns the search and the reason the
    branch failed, if it did: prompts used up, or every measured request of a point failed before any level
    passed (an endpoint that serves nothing has no capacity to search; after a passing level, such a point
    is a failing level)."""
    spec = run.spec
    search = spec.load.search
    assert search is not None
    state = CapacitySearch(search)
    started_s = time.monotonic()
    index = first_index
    while (level := state.next_level()) is not None:
        if search.max_duration_s is not None and time.monotonic() - started_s >= search.max_duration_s:
            state.stop(f"the time budget of {search.max_duration_s:g} s (max_duration_s) ran out")
            break
        verdicts: list[Verdict] = []
        for label in (b.label for b in spec.workload.bins):
            planned = PlannedPoint(*search.level(level), label)
            point = LoadPoint.of_plan(spec.load, planned, decks[label], spec.workload.inference)
            point = dataclasses.replace(point, search_step=len(state.steps))
            ran = await _run_point(run, point, index)
            index += 1
            judged = ran.stop_reason is None or (
                state.passing is not None and ran.summary.all_measured_failed
            )
            run.tally.add_summary(ran.summary, completed=judged)
            if not judged:
                return state, ran.stop_reason
            verdicts.append(verdict(PointFigures.of_records(ran.rows), spec.slo))
        state.record(level, level_verdict(verdicts))
    logger.info(
        "branch %s: capacity search tried %s; %s; stopped: %s",
        spec.branch_id,
        ", ".join(f"{step.level:g} {step.verdict}" for step in state.steps),
        f"capacity under the SLO {state.passing:g}" if state.passing is not None else "no level met the SLO",
        state.stop_reason,
    )
    return state, None


def _request_listener(progress: _Progress, point: LoadPoint, index: int) -> Callable[[Attempt], None] | None:
    if progress.listener is None:
        return None
    completed = 0
    errors = 0

    def on_request_done(attempt: Attempt) -> None:
        nonlocal completed, errors
        completed += 1
        if attempt.result.status == "error":
            errors += 1
        progress.emit("request_done", point=point, index=index, completed=completed, errors=errors)

    return on_request_done


def run_branch_sync(
    spec: BranchSpec,
    *,
    endpoint_url: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    base_dir: Path | None = None,
    flush_interval_s: float = FLUSH_INTERVAL_S,
    flush_max_records: int = FLUSH_MAX_RECORDS,
) -> BranchOutcome:
    """For callers without an event loop (a Fargate entry point, the CLI)."""
    return asyncio.run(
        run_branch(
            spec,
            endpoint_url=endpoint_url,
            on_progress=on_progress,
            base_dir=base_dir,
            flush_interval_s=flush_interval_s,
            flush_max_records=flush_max_records,
        )
    )
