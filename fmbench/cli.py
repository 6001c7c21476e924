"""The `fmbench` command: validate suites, run them on this machine, drive load, start the emulator."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fmbench.config import LoadPlan, Suite, SuiteValidationError, write_suite_schema
from fmbench.estimate import BudgetExceededError, CostEstimate, check_budget, usd_text
from fmbench.plan import RunPlan, plan_suite
from fmbench.runner import ProgressEvent
from fmbench.suite import load_suite, unset_api_keys, validate_suite_data

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REGRESSED = 3  # a comparison found a regression (docs/regression.md): CI fails the job on it
EXIT_INTERRUPTED = 130  # SIGINT: 128 + 2, as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15
DEFAULT_LOAD_CONCURRENCY = [1, 8, 32]


def _console() -> Console:
    # Piped output (CI logs, files) gets a wide fixed width so tables are not folded into unreadable cells.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _print_problems(error: SuiteValidationError) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    where = f"{error.source}: " if error.source else ""
    err.print(f"{where}invalid suite, {len(error.problems)} problem(s):", markup=False)
    for problem in error.problems:
        err.print(f"  {problem}", markup=False)


def _plan_table(plan: RunPlan) -> Table:
    table = Table(title=f"Suite {plan.suite.name}: {len(plan.branches)} branch(es)")
    for column in ("branch", "platform", "model", "instance", "$/hour", "load points", "requests"):
        table.add_column(column)
    load = plan.suite.load
    for spec in plan.branches:
        per_point = load.requests_per_point
        requests = str(per_point * spec.load_point_count) if per_point is not None else _timed_text(load)
        if spec.quality_pass is not None:  # the judged prompts once more, at concurrency 1 and temperature 0
            bins = len(spec.workload.bins)
            requests += f" + up to {spec.quality_pass.max_answers_per_bin * bins} quality"
        price = spec.instance_price_per_hour_usd
        table.add_row(
            spec.branch_id,
            spec.target.platform,
            spec.target.model or "-",
            f"{spec.instance_type or '-'} x{spec.target.instance_count}",
            f"{price:.3f}" if price is not None else "unknown",
            str(spec.load_point_count),
            requests,
        )
    return table


def _estimate_table(estimate: CostEstimate) -> Table:
    total = usd_text(estimate.total_usd) + ("" if estimate.complete else " + unknown")
    table = Table(title=f"Estimated cost, an upper bound: {total}")
    for column in ("branch", "billed as", "bound", "USD"):
        table.add_column(column)
    for part in estimate.parts:
        if part.billing == "instance":
            bound = f"{part.lifetime_s / 3600:.2f} h x{part.instance_count or 1} {part.instance_type or ''}"
        elif part.billing == "tokens":
            bound = f"{part.input_tokens or 0:,} in + {part.output_tokens or 0:,} out tokens"
        else:
            bound = part.basis
        billed = "emulated" if part.emulated else part.billing
        table.add_row(
            part.branch_id, billed, bound, usd_text(part.usd) if part.usd is not None else "unknown"
        )
    return table


def _print_budget_error(error: BudgetExceededError) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"over budget, nothing was run: {error}", markup=False)


def _show_estimate(console: Console, plan: RunPlan) -> bool:
    """Print the estimate; False (and why, on stderr) when it exceeds the suite's budget."""
    if plan.cost_estimate is None:
        return True
    console.print(_estimate_table(plan.cost_estimate))
    try:
        check_budget(plan.cost_estimate, plan.suite.budget)
    except BudgetExceededError as error:
        _print_budget_error(error)
        return False
    return True


def _timed_text(load: LoadPlan) -> str:
    """What a load point sends when some phase is timed, e.g. '5 + 60s + 10s each'."""
    parts = [
        f"{load.warmup_s:g}s" if load.warmup_s is not None else str(load.warmup_requests),
        f"{load.duration_s:g}s" if load.duration_s is not None else str(load.requests_per_level),
        f"{load.cooldown_s:g}s" if load.cooldown_s is not None else str(load.cooldown_requests),
    ]
    return " + ".join(part for part in parts if part != "0") + " each"


def _point_text(concurrency: int | None, rate_per_s: float | None) -> str:
    if concurrency is not None:
        return f"c={concurrency}"
    return f"{rate_per_s:g}/s" if rate_per_s is not None else "-"  # branch events name no load point


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        suite = load_suite(args.suite)
        if keys := unset_api_keys(suite, os.environ):
            raise SuiteValidationError(keys, args.suite)
    except SuiteValidationError as error:
        _print_problems(error)
        return EXIT_INVALID
    plan = plan_suite(suite, storage_root="(not written)", run_id="validate")
    console = _console()
    console.print(_plan_table(plan))
    return EXIT_OK if _show_estimate(console, plan) else EXIT_INVALID


class ProgressView:
    """Progress per branch and load point: a live view on a terminal, plain lines otherwise."""

    def __init__(self, plan: RunPlan, console: Console, live: bool) -> None:
        self._console = console
        self._live = live
        self._names = {b.branch_id: b.target.name for b in plan.branches}
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        # with request counts the bar advances per request; with a timed phase, per load point
        self._count_requests = plan.suite.load.requests_per_point is not None
        if live:
            self._progress = Progress(
                TextColumn("{task.fields[name]:<20}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[point]}"),
                TimeElapsedColumn(),
                console=console,
            )
            per_point = plan.suite.load.requests_per_point
            for spec in plan.branches:
                total = per_point * spec.load_point_count if per_point is not None else spec.load_point_count
                self._tasks[spec.branch_id] = self._progress.add_task(
                    "", total=total, name=spec.target.name, point="waiting"
                )

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        name = self._names.get(event.branch_id, event.branch_id)
        point = f"{_point_text(event.concurrency, event.request_rate_per_s)} bin={event.payload_bin}"
        if self._progress is not None:
            task = self._tasks[event.branch_id]
            if event.kind == "load_point_started":
                self._progress.update(
                    task, point=f"{point} ({(event.load_point_index or 0) + 1}/{event.load_points_total})"
                )
            elif event.kind == ("request_done" if self._count_requests else "load_point_finished"):
                self._progress.advance(task)
            elif event.kind == "branch_finished":
                self._progress.update(task, point=event.message or "done")
            return
        if event.kind == "load_point_finished":
            bound = f", client-bound ({event.message})" if event.client_bound else ""
            self._console.print(
                f"[{name}] {point}: {event.completed} requests, {event.errors} errors "
                f"(load point {(event.load_point_index or 0) + 1}/{event.load_points_total}){bound}",
                markup=False,
            )
        elif event.kind in ("branch_started", "branch_finished"):
            self._console.print(f"[{name}] {event.message or event.kind}", markup=False)


def _print_outcome(console: Console, run: Any) -> None:
    result = run.result
    table = Table(title=f"Run {run.plan.run_id}: {result.status}")
    for column in ("branch", "status", "requests", "reason"):
        table.add_column(column)
    for outcome in run.outcomes:
        table.add_row(outcome.branch_id, outcome.status, str(outcome.records_written), outcome.reason or "")
    console.print(table)
    best = result.best
    if best is None:
        console.print(f"No configuration met the SLO on bin {result.headline_bin}.", markup=False)
    else:
        price = "n/a" if best.price_per_txn is None else f"${best.price_per_txn:.6f}"
        load = (
            f"concurrency {best.concurrency}"
            if best.concurrency is not None
            else f"{best.request_rate_per_s:g} requests/s"
        )
        where = f" on {best.instance_type}" if best.instance_type else ""
        console.print(
            f"Best under the SLO (bin {best.payload_file}): {best.experiment_name}{where} "
            f"at {load}: p95 latency {best.latency_p95:.2f} s, "
            f"{best.transactions_per_minute:.0f} transactions/min, {price} per transaction",
            markup=False,
        )
    prompts = getattr(result, "prompts", None)
    for note in prompts.notes if prompts is not None else []:  # prompt reuse, token counts not the server's
        console.print(f"Note: {note}", markup=False)
    console.print(f"Report: {run.report_dir / 'report.md'} (and report.html, result.json)", markup=False)
    own = Path(run.result.artifacts.report_md).parent
    console.print(f"Run {run.plan.run_id}'s own copy, kept when the folder is reused: {own}", markup=False)
    console.print(f"Finished in {run.elapsed_s:.1f} s", markup=False)


def _print_stopped(console: Console, run: Any) -> None:
    """A run stopped by a signal, or whose report could not be written: what is kept, and the command
    that renders the report from it."""
    table = Table(title=f"Run {run.plan.run_id}: {'stopped' if run.stopped_by else 'not reported'}")
    for column in ("branch", "status", "requests", "reason"):
        table.add_column(column)
    for outcome in run.outcomes:
        table.add_row(outcome.branch_id, outcome.status, str(outcome.records_written), outcome.reason or "")
    console.print(table)
    kept = sum(outcome.records_written for outcome in run.outcomes)
    if run.report_error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(run.report_error, markup=False)
    console.print(
        f"{kept} record(s) kept in {run.report_dir}. Render the report with:\n  {run.report_command}",
        markup=False,
    )


def _print_evaluation(console: Console, summary: Any) -> None:
    """One line per judge of the panel: what it judged and what that cost."""
    sources = " and ".join(
        "under load" if source == "load" else "of the quality pass (concurrency 1, temperature 0)"
        for source in sorted(getattr(summary, "answer_sources", ()))
    )
    title = f"Judged {summary.answers} answer(s) {sources} of run {summary.run_id}".replace("  ", " ")
    table = Table(title=title)
    for column in ("judge", "family", "judged", "correct", "incorrect", "unparsed", "errors", "cost"):
        table.add_column(column)
    for tally in summary.judges:
        errors = str(tally.errors)
        if tally.error_classes:
            errors += " (" + ", ".join(f"{k} {v}" for k, v in sorted(tally.error_classes.items())) + ")"
        table.add_row(
            tally.judge,
            tally.family,
            str(tally.judged),
            str(tally.correct),
            str(tally.incorrect),
            str(tally.unparsed),
            errors,
            f"${tally.cost_usd:.4f}",
        )
    console.print(table)


def _run_and_report(suite: Suite, out: Path, suite_dir: Path | None, run_id: str | None) -> int:
    from fmbench.local import OutFolderError, run_suite

    console = _console()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    plan_preview = plan_suite(suite, storage_root=str(out), run_id=run_id or "preview")
    console.print(_plan_table(plan_preview))
    if not _show_estimate(console, plan_preview):
        return EXIT_INVALID
    try:
        with ProgressView(plan_preview, console, live=console.is_terminal) as view:
            run = run_suite(suite, out, suite_dir=suite_dir, run_id=run_id, on_progress=view)
    except BudgetExceededError as error:
        _print_budget_error(error)
        return EXIT_INVALID
    except OutFolderError as error:
        err.print(f"--out: {error}; nothing was sent", markup=False)
        return EXIT_INVALID
    if run.evaluation is not None:
        _print_evaluation(console, run.evaluation)
    if run.evaluation_error:
        err.print(run.evaluation_error, markup=False)
    if run.result is None:
        _print_stopped(console, run)
    else:
        _print_outcome(console, run)
    for note in run.notes:
        err.print(note, markup=False)
    if run.faults:
        err.print("The run was cut short by this machine, not by the endpoint:", markup=False)
        for fault in run.faults:
            err.print(f"  {fault}", markup=False)
    if run.stopped_by:
        return 128 + run.stopped_by
    if run.result is None or run.faults:
        return EXIT_FAILED
    if run.result.status == "failed":
        return EXIT_FAILED
    return _regression_exit(console, run.result.regression)


def _run_to_evaluate(root: str, run_id: str | None) -> str:
    """The run id given, else the run a local folder's top report shows, else its only run."""
    if run_id:
        return run_id
    from fmbench.local import TOP_REPORT_MANIFEST

    if "://" in root:
        raise ValueError("give --run-id for a run under an s3:// root")
    manifest = Path(root) / TOP_REPORT_MANIFEST
    if manifest.is_file():
        shown = json.loads(manifest.read_text()).get("run_id")
        if isinstance(shown, str):
            return shown
    runs = sorted(p.name.split("=", 1)[1] for p in (Path(root) / "specs").glob("run_id=*"))
    if len(runs) == 1:
        return runs[0]
    raise ValueError(f"{root} holds {len(runs)} run(s): give --run-id")


def _record_judging(err: Console, root: str, run_id: str, outcome: Any) -> None:
    """The judging's outcome beside the run's (the report says why a run has no accuracy); best effort."""
    from fmbench.judging_outcome import write_evaluation_outcome

    try:
        write_evaluation_outcome(root, run_id, outcome)
    except OSError as error:
        err.print(f"evaluate: the judging's outcome not recorded: {error}", markup=False)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Judge a finished run's answers again (its evaluations are replaced) with its suite's panel, or with
    the evaluation section of --suite."""
    from fmbench.evaluation.run import EvaluationError
    from fmbench.judging_outcome import failed_outcome, judged_outcome
    from fmbench.local import SavedRunNotFoundError, judge_emulators, read_saved_plan

    console = _console()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    root = args.root if "://" in args.root else str(Path(args.root).resolve())
    try:
        run_id = _run_to_evaluate(root, args.run_id)
        plan = read_saved_plan(root, run_id)
    except (ValueError, SavedRunNotFoundError) as error:
        err.print(f"evaluate: {error}", markup=False)
        return EXIT_INVALID
    if args.suite is not None:
        try:
            suite = load_suite(args.suite)
        except SuiteValidationError as error:
            _print_problems(error)
            return EXIT_INVALID
        plan = plan.model_copy(
            update={"suite": plan.suite.model_copy(update={"evaluation": suite.evaluation})}
        )
    if plan.suite.evaluation is None:
        err.print(f"evaluate: run {run_id}'s suite has no evaluation section; give --suite", markup=False)
        return EXIT_INVALID
    from fmbench.evaluation.run import evaluate_run

    try:
        with judge_emulators(plan.suite.evaluation) as (urls, _failed):
            summary = evaluate_run(plan, root, judge_urls=urls, answers_from=args.answers)
    except (EvaluationError, OSError, ValueError) as error:
        err.print(f"evaluate: {error}", markup=False)
        _record_judging(err, root, run_id, failed_outcome(str(error)))
        return EXIT_FAILED
    _record_judging(err, root, run_id, judged_outcome())
    _print_evaluation(console, summary)
    console.print(f"Judgments: {root}/evaluations/run_id={run_id}/", markup=False)
    if "://" not in root:
        console.print(f"Render the report with them: fmbench report {run_id} --root {root}", markup=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        suite = load_suite(args.suite)
        if keys := unset_api_keys(suite, os.environ):
            raise SuiteValidationError(keys, args.suite)
    except SuiteValidationError as error:
        _print_problems(error)
        return EXIT_INVALID
    return _run_and_report(suite, Path(args.out), Path(args.suite).resolve().parent, args.run_id)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _bins(text: str) -> list[dict[str, int]]:
    bins = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)-(\d+)\s*", part)
        if not match:
            raise argparse.ArgumentTypeError(
                f"bins are MIN-MAX token ranges separated by commas, got {part!r}"
            )
        bins.append({"min_tokens": int(match[1]), "max_tokens": int(match[2])})
    return bins


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def _load_problem(message: str) -> int:
    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)
    return EXIT_INVALID


def _load_endpoint(args: argparse.Namespace, headers: dict[str, str]) -> tuple[str, str] | str:
    """(API base, model) for `fmbench load`, or the problem as a message.

    A URL naming the API base with --model is taken as it is; otherwise the server is asked for its models
    (with the key and headers every request carries), which also finds the API base under a root URL.
    """
    from fmbench.openai_server import API_PREFIX, ServerDiscoveryError, find_api

    url = args.url.rstrip("/")
    if args.model and url.endswith(API_PREFIX):
        return url, args.model
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if api_key is None:
            return f"--api-key-env: the environment variable {args.api_key_env} is not set"
    try:
        api = find_api(url, api_key=api_key, headers=headers, timeout_s=min(args.timeout, 10.0))
    except ServerDiscoveryError as exc:
        return f"--url: {exc}"
    if args.model:
        return api.base_url, args.model
    if not api.models:
        return f"--url: {api.base_url}/models lists no model; give --model"
    return api.base_url, api.models[0]


def _load_workload(args: argparse.Namespace) -> dict[str, Any] | str:
    """The suite's workload from `fmbench load`'s options, or the problem as a message."""
    inference: dict[str, Any] = {"stream": not args.no_stream}
    if args.output_tokens is not None:
        if args.max_tokens is not None and args.max_tokens != args.output_tokens:
            return "--output-tokens fixes the output length: give it or --max-tokens, not both"
        inference.update(max_new_tokens=args.output_tokens, fixed_output_tokens=True)
    else:
        inference["max_new_tokens"] = args.max_tokens if args.max_tokens is not None else 128
    workload: dict[str, Any] = {"bins": args.bins, "inference": inference}
    hub_options = {
        "config": args.dataset_config,
        "split": args.dataset_split,
        "revision": args.dataset_revision,
    }
    if args.prompt_tokens is not None:
        if args.dataset is not None or args.prompt_template is not None:
            return "--prompt-tokens makes synthetic prompts: give it or --dataset/--prompt-template, not both"
        workload["synthetic"] = {"prompt_tokens": args.prompt_tokens}
    else:
        dataset: dict[str, Any] = {"source": args.dataset or "builtin:synthetic-qa"}
        dataset.update({key: value for key, value in hub_options.items() if value is not None})
        workload["dataset"] = dataset
        if args.prompt_template is not None:
            workload["prompt_template"] = args.prompt_template
    if args.tokenizer is not None:
        workload["tokenizer"] = args.tokenizer
    return workload


def cmd_load(args: argparse.Namespace) -> int:
    headers = dict(args.header or [])
    extra_body: dict[str, Any] = {}
    if args.extra_body is not None:
        try:
            extra_body = json.loads(args.extra_body)
        except ValueError as exc:
            return _load_problem(f"--extra-body: not valid JSON: {exc}")
        if not isinstance(extra_body, dict):
            return _load_problem("--extra-body: must be a JSON object, e.g. '{\"top_k\": 20}'")
    workload = _load_workload(args)
    if isinstance(workload, str):
        return _load_problem(workload)
    endpoint = _load_endpoint(args, headers)
    if isinstance(endpoint, str):
        return _load_problem(endpoint)
    base_url, model = endpoint
    host = re.sub(r"[^A-Za-z0-9]+", "-", args.url.split("://", 1)[-1]).strip("-")[:50] or "endpoint"
    load: dict[str, Any] = {"warmup_requests": args.warmup, "request_timeout_s": args.timeout}
    if args.rate is None or args.concurrency is not None:
        load["concurrency"] = args.concurrency if args.concurrency is not None else DEFAULT_LOAD_CONCURRENCY
    if args.rate is not None:
        load["rates_per_s"] = args.rate
        if args.arrival is not None:
            load["arrival"] = args.arrival
        if args.max_in_flight is not None:
            load["max_in_flight"] = args.max_in_flight
        if args.seed is not None:
            load["seed"] = args.seed
    elif args.arrival is not None or args.max_in_flight is not None or args.seed is not None:
        return _load_problem("--arrival, --max-in-flight and --seed shape an open loop: give --rate too")
    if args.duration is not None:
        load["duration_s"] = args.duration
    else:
        load["requests_per_level"] = args.requests
    data = {
        "name": "load",
        "targets": [
            {
                "name": host,
                "platform": "openai",
                "endpoint_url": base_url,
                "api": args.openai_api,
                "model": model,
                "api_key_env": args.api_key_env,
                "headers": headers,
                "extra_body": extra_body,
            }
        ],
        "workload": workload,
        "load": load,
        "slo": {"p95_latency_s": args.slo_p95_latency_s, "max_error_rate": 1.0},
    }
    try:
        suite = validate_suite_data(data, base_dir=Path.cwd(), source="fmbench load arguments")
    except SuiteValidationError as error:
        _print_problems(error)
        return EXIT_INVALID
    status = _run_and_report(suite, Path(args.out), Path.cwd(), None)
    if status in (EXIT_OK, EXIT_FAILED):
        _print_summary_table(Path(args.out))
    return status


def _print_summary_table(out: Path) -> None:
    import pandas as pd

    summary_path = out / "summary.parquet"
    if not summary_path.exists():
        return
    frame = pd.read_parquet(summary_path)
    table = Table(title="Summary per load point")
    columns = [
        ("payload_bin", "bin", "{}"),
        ("requests", "req", "{:.0f}"),
        ("error_rate", "err", "{:.1%}"),
        ("latency_p50_s", "lat p50 s", "{:.3f}"),
        ("latency_p95_s", "lat p95 s", "{:.3f}"),
        ("ttft_p50_s", "ttft p50 s", "{:.3f}"),
        ("ttft_p95_s", "ttft p95 s", "{:.3f}"),
        ("itl_p50_s", "itl p50 s", "{:.4f}"),
        ("transactions_per_minute", "tpm", "{:.1f}"),
        ("completion_token_throughput_per_s", "out tok/s", "{:.1f}"),
        ("latency_from_schedule_p95_s", "sched lat p95 s", "{:.3f}"),
        ("schedule_lag_p99_s", "lag p99 s", "{:.4f}"),
        ("runner_cpu_fraction", "cpu", "{:.2f}"),
    ]
    if "reasoning_tokens_mean" in frame and frame["reasoning_tokens_mean"].notna().any():
        # a reasoning model: when its answers began, and how much it reasoned first
        columns[7:7] = [
            ("time_to_first_answer_p50_s", "answer p50 s", "{:.3f}"),
            ("reasoning_tokens_mean", "reason tok", "{:.0f}"),
        ]
    table.add_column("load", justify="right")
    for _, label, _ in columns:
        table.add_column(label, justify="right")
    table.add_column("client", justify="left")
    any_bound = False
    for row in frame.to_dict("records"):
        concurrency, rate = row.get("concurrency"), row.get("request_rate_per_s")
        load = _point_text(
            None if concurrency is None or concurrency != concurrency else int(concurrency),
            None if rate is None or rate != rate else float(rate),
        )
        cells = [load]
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None or value != value else fmt.format(value))
        bound = bool(row.get("client_bound"))
        any_bound |= bound
        cells.append("BOUND †" if bound else "ok")
        table.add_row(*cells)
    console = _console()
    console.print(table)
    if any_bound:
        console.print(
            "† client-bound: the runner fell behind its schedule or ran out of CPU at this load point, "
            "so its figures show the runner's limit, not the endpoint's (see report.md).",
            markup=False,
        )


def cmd_report(args: argparse.Namespace) -> int:
    """Render a local run's report again from its records, plan and outcomes; nothing runs again."""
    from fmbench.local import SavedRunNotFoundError, publish_top_report, report_saved_run, run_report_dir
    from report.render import REPORT_MD

    console, err = _console(), Console(stderr=True, highlight=False, soft_wrap=True)
    root = Path(args.root).resolve()
    out = Path(args.out) if args.out else run_report_dir(root, args.run_id)
    try:
        result = report_saved_run(root, args.run_id, out)
    except SavedRunNotFoundError as exc:
        err.print(str(exc), markup=False)
        return EXIT_FAILED
    except OSError as exc:
        err.print(f"the report could not be written: {exc}", markup=False)
        return EXIT_FAILED
    if not args.out:
        for note in publish_top_report(root, args.run_id, out):
            err.print(note, markup=False)
    measured = sum(len(branch.load_points) for branch in result.branches)
    missing = sum(len(branch.load_points_not_measured) for branch in result.branches)
    console.print(
        f"Run {result.run_id}: {result.status}; {measured} load point(s) measured, {missing} not measured",
        markup=False,
    )
    console.print(f"Report: {out / REPORT_MD} (and report.html, result.json)", markup=False)
    return EXIT_OK


# ------------------------------------------------------------------------------ regression and history


def _regression_exit(console: Console, regression: Any) -> int:
    """Say the verdict of a run that asked for a comparison; 3 when it regressed, else 0."""
    if regression is None:
        return EXIT_OK
    baseline = regression.baseline_run_id or "none"
    regressed = f": {', '.join(regression.regressed_metrics)}" if regression.regressed_metrics else ""
    console.print(f"Regression verdict against {baseline}: {regression.verdict}{regressed}", markup=False)
    return EXIT_REGRESSED if regression.verdict == "regressed" else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two local runs; exit 0 pass, 3 regressed, 2 bad input (documented for CI)."""
    from fmbench.config import RegressionOptions
    from report.regression_report import (
        RunLookupError,
        compare_saved_runs,
        resolve_run,
        saved_regression_options,
        write_comparison,
    )

    console, err = _console(), Console(stderr=True, highlight=False, soft_wrap=True)
    if args.root is not None and args.root.startswith("s3://"):
        return _compare_in_bucket(args, err)
    try:
        baseline = resolve_run(args.baseline, args.root)
        candidate = resolve_run(args.candidate, args.root)
    except RunLookupError as exc:
        err.print(str(exc), markup=False)
        return EXIT_INVALID
    if baseline == candidate:
        err.print(f"{args.candidate}: the baseline and the candidate are the same run", markup=False)
        return EXIT_INVALID
    saved = saved_regression_options(*candidate)
    data = saved.model_dump(exclude_unset=True) if saved is not None else {}
    data["baseline"] = baseline[1]
    if args.confidence is not None:
        data["confidence"] = args.confidence
    try:
        options = RegressionOptions.model_validate(data)
    except ValueError as exc:
        err.print(f"--confidence: {exc}", markup=False)
        return EXIT_INVALID
    result = compare_saved_runs(baseline, candidate, options)
    out = Path(args.out or Path(candidate[0]) / "comparisons" / f"{baseline[1]}--{candidate[1]}")
    files = write_comparison(result, candidate[1], out)
    for finding in result.findings:
        if finding.verdict == "regressed":
            load = (
                f"c={finding.concurrency}"
                if finding.concurrency is not None
                else f"{finding.request_rate_per_s}/s"
            )
            console.print(
                f"REGRESSED {finding.metric} of {finding.target_name} {load} bin {finding.payload_bin}: "
                f"{finding.change:+.1f} {'%' if finding.change_unit == 'pct' else 'points'} "
                f"(interval {finding.interval_low:+.1f} to {finding.interval_high:+.1f})",
                markup=False,
            )
    for point in result.unmatched:
        console.print(
            f"not compared, only in the {point.run}: {point.target_name} bin {point.payload_bin}",
            markup=False,
        )
    console.print(f"Comparison: {files['md']} (and .html, .json)", markup=False)
    return _regression_exit(console, result)


def _compare_in_bucket(args: argparse.Namespace, err: Console) -> int:
    """``fmbench compare`` of run ids in a results bucket: each run's records and plan are downloaded into a
    temporary root and compared as local runs (the same SQL on DuckDB); the report goes to ``--out``
    (default ``comparisons/BASELINE--CANDIDATE`` in the current folder)."""
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    from fmbench import layout
    from fmbench.cloud import s3 as s3_objects
    from fmbench.cloud.aws import client, error_message
    from fmbench.config import RUN_ID_TEXT

    root = args.root.rstrip("/")
    for reference in (args.baseline, args.candidate):
        if not RUN_ID_TEXT.match(reference):
            err.print(f"{reference}: with an s3:// --root, name runs by their run id", markup=False)
            return EXIT_INVALID
    if args.baseline == args.candidate:
        err.print(f"{args.candidate}: the baseline and the candidate are the same run", markup=False)
        return EXIT_INVALID
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="fmbench-compare-") as folder:
        for run_id in (args.baseline, args.candidate):
            records = layout.run_records_prefix(root, run_id)
            try:
                parts = s3_objects.download_prefix(
                    s3, records.rstrip("/"), Path(layout.run_records_prefix(folder, run_id))
                )
                plan = s3_objects.get_bytes(s3, layout.run_plan_uri(root, run_id))
            except (BotoCoreError, ClientError) as exc:
                err.print(f"--root {args.root}: {error_message(exc)}", markup=False)
                return EXIT_INVALID
            if not any(part.suffix == layout.PART_SUFFIX for part in parts):
                err.print(f"{run_id}: no records under {records}", markup=False)
                return EXIT_INVALID
            if plan is not None:
                target = Path(layout.run_plan_uri(folder, run_id))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(plan)
        local = argparse.Namespace(**{**vars(args), "root": folder})
        if args.out is None:
            local.out = str(Path("comparisons") / f"{args.baseline}--{args.candidate}")
        return cmd_compare(local)


def cmd_history(args: argparse.Namespace) -> int:
    """The runs of a suite under a results root, as a table and a history report with trend charts."""
    from report.history import suite_history
    from report.regression_report import write_history

    console = _console()
    if args.root.startswith("s3://"):
        return _history_in_bucket(args)
    history = suite_history(args.root, args.suite_name)
    if history.empty:
        Console(stderr=True, highlight=False).print(
            f"no run of suite {args.suite_name!r} under {args.root} (runs/ holds one row per run)",
            markup=False,
        )
        return EXIT_INVALID
    table = Table(title=f"Runs of {args.suite_name}")
    for column in ("run", "started", "status", "verdict", "p95 latency s", "tx/min", "error rate"):
        table.add_column(column)
    for row in history.to_dict("records"):
        table.add_row(
            str(row["run_id"]),
            f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
            str(row["status"]),
            "-" if row["verdict"] is None or row["verdict"] != row["verdict"] else str(row["verdict"]),
            "-" if row["latency_p95_s"] != row["latency_p95_s"] else f"{row['latency_p95_s']:.3f}",
            "-"
            if row["transactions_per_minute"] != row["transactions_per_minute"]
            else f"{row['transactions_per_minute']:.1f}",
            "-" if row["error_rate"] != row["error_rate"] else f"{row['error_rate']:.2%}",
        )
    console.print(table)
    files = write_history(
        history, args.suite_name, Path(args.out or Path(args.root) / "history" / args.suite_name)
    )
    console.print(f"History report: {files['md']} (and .html)", markup=False)
    return EXIT_OK


def _history_in_bucket(args: argparse.Namespace) -> int:
    """``fmbench history`` of a results bucket: the runs table (one small file per run) is downloaded into a
    temporary root and queried with the same SQL as a local root; the report goes to ``--out`` (default
    ``history/SUITE`` in the current folder). On Athena the same SQL runs over the stack's ``runs`` table."""
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    from fmbench import layout
    from fmbench.cloud import s3 as s3_objects
    from fmbench.cloud.aws import client, error_message

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    root = args.root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="fmbench-history-") as folder:
        try:
            s3_objects.download_prefix(
                client("s3"), layout.runs_table_prefix(root), Path(layout.runs_table_prefix(folder))
            )
        except (BotoCoreError, ClientError) as exc:
            err.print(f"--root {args.root}: {error_message(exc)}", markup=False)
            return EXIT_INVALID
        out = args.out or str(Path("history") / args.suite_name)
        return cmd_history(argparse.Namespace(**{**vars(args), "root": folder, "out": out}))


def _add_regression_commands(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare a candidate run with a baseline run; exit 0 pass, 3 regressed, 2 bad input",
    )
    compare.add_argument("baseline", metavar="BASELINE", help="run folder (an --out), or run id under --root")
    compare.add_argument(
        "candidate", metavar="CANDIDATE", help="run folder (an --out), or run id under --root"
    )
    compare.add_argument(
        "--root",
        default=None,
        help="results root holding the runs named by id (a folder or s3://bucket/prefix)",
    )
    compare.add_argument("--confidence", type=float, default=None, help="confidence level (default 0.95)")
    compare.add_argument(
        "--out", default=None, help="where the report goes (default: comparisons/ under the candidate's root)"
    )
    compare.set_defaults(handler=cmd_compare)

    history = commands.add_parser("history", help="the runs of a suite and their trend (the runs table)")
    history.add_argument("suite_name", metavar="SUITE", help="the suite's name")
    history.add_argument("--root", required=True, help="results root (the --out the runs wrote to)")
    history.add_argument(
        "--out", default=None, help="where the history report goes (default: ROOT/history/SUITE)"
    )
    history.set_defaults(handler=cmd_history)


def cmd_emulator(args: argparse.Namespace, rest: list[str]) -> int:
    from fmbench.emulator.cli import main as emulator_main

    return emulator_main(rest)


def cmd_schema(args: argparse.Namespace) -> int:
    from report.execution_output import write_execution_output_schema
    from report.result import write_result_schema

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ("suite.schema.json", "result.schema.json", "execution-output.schema.json")
    write_suite_schema(out / names[0])
    write_result_schema(out / names[1])
    write_execution_output_schema(out / names[2])
    print(f"wrote {', '.join(str(out / name) for name in names)}")
    return EXIT_OK


def cmd_prices_update(args: argparse.Namespace) -> int:
    """Read the on-demand prices from the AWS Price List API and write the price table."""
    from fmbench.cloud.aws import error_message
    from fmbench.cloud.pricing import api_errors, fetch_price_table, pricing_client
    from fmbench.pricing import BUNDLED_TABLE_FILE, write_table

    out = Path(args.out) if args.out else Path(__file__).parent / "data" / BUNDLED_TABLE_FILE
    try:
        table = fetch_price_table(pricing_client(args.endpoint_url))
    except api_errors() as exc:  # credentials, network, access denied: said plainly, nothing written
        print(f"prices update: the Price List API could not be read: {error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if not table.sagemaker:
        print(
            "prices update: the Price List API returned no SageMaker prices; nothing written", file=sys.stderr
        )
        return EXIT_FAILED
    write_table(table, out)
    counts = (
        f"{sum(len(v) for v in table.sagemaker.values())} SageMaker, "
        f"{sum(len(v) for v in table.ec2.values())} EC2 and "
        f"{sum(len(v) for v in table.bedrock.values())} Bedrock prices in {len(table.sagemaker)} region(s)"
    )
    print(f"wrote {out}: {counts}, as of {table.as_of}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- cloud


def _aws_session(region: str | None) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def _sagemaker_sdk_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("sagemaker") is not None


def _state_machine(args: argparse.Namespace, session: Any) -> str:
    from fmbench.cloud.aws import client
    from fmbench.cloud.executions import state_machine_arn

    if args.state_machine_arn:
        return str(args.state_machine_arn)
    return state_machine_arn(client("cloudformation", session=session), args.stack)


def _execution_console_url(region: str, arn: str) -> str:
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


def _print_entry(console: Console, entry: Any) -> None:
    stamp = entry.timestamp.strftime("%H:%M:%S") if entry.timestamp is not None else "--:--:--"
    where = f"{entry.branch_id}: " if entry.branch_id else ""
    console.print(f"[{stamp}] {where}{entry.state}", markup=False)


def _print_result_summary(console: Console, document: dict[str, Any]) -> None:
    """result.json with its branch table, or the execution's output (its summary): counts per status."""
    branches = document.get("branches")
    if isinstance(branches, dict):
        console.print(
            f"Result of run {document.get('run_id')}: {document.get('status')} ("
            + ", ".join(f"{branches.get(key, 0)} {key}" for key in ("succeeded", "partial", "failed"))
            + f" of {branches.get('total', 0)} branches)",
            markup=False,
        )
    else:
        _print_branch_table(console, document)
    best = document.get("best")
    if isinstance(best, dict):
        console.print(
            f"Best under the SLO (bin {best.get('payload_file')}): {best.get('experiment_name')} on "
            f"{best.get('instance_type')} at concurrency {best.get('concurrency')}",
            markup=False,
        )
    artifacts = document.get("artifacts") or {}
    report_html = document.get("report_html") or artifacts.get("report_html")
    if report_html:
        console.print(f"Report: {report_html}", markup=False)


def _print_branch_table(console: Console, document: dict[str, Any]) -> None:
    table = Table(title=f"Result of run {document.get('run_id')}: {document.get('status')}")
    for column in ("branch", "status", "requests", "deployment s", "reason"):
        table.add_column(column)
    for branch in document.get("branches", []):
        deployment_s = branch.get("deployment_s")
        table.add_row(
            str(branch.get("branch_id")),
            str(branch.get("status")),
            str(branch.get("records_written", "")),
            f"{deployment_s:.0f}" if isinstance(deployment_s, int | float) else "-",
            str(branch.get("reason") or ""),
        )
    console.print(table)


def cmd_start(args: argparse.Namespace) -> int:
    from fmbench.cloud.aws import client
    from fmbench.cloud.checks import cloud_suite_problems
    from fmbench.cloud.events import RUN_ID_PATTERN
    from fmbench.cloud.executions import StackLookupError, download_report, follow_run, start_run
    from fmbench.plan import new_run_id

    console, err = _console(), Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        suite = load_suite(args.suite)
    except SuiteValidationError as error:
        _print_problems(error)
        return EXIT_INVALID
    session = _aws_session(args.region)
    region = session.region_name
    if not region:
        err.print("no AWS region: give --region, or set AWS_REGION or a profile's region", markup=False)
        return EXIT_INVALID
    problems = cloud_suite_problems(suite, region, resolve_images=_sagemaker_sdk_installed())
    if problems:
        _print_problems(SuiteValidationError(problems, args.suite))
        return EXIT_INVALID
    run_id = args.run_id or new_run_id()
    if not RUN_ID_PATTERN.match(run_id):
        err.print(f"--run-id {run_id!r}: must be 1-64 letters, digits, '_', '.' or '-'", markup=False)
        return EXIT_INVALID
    try:
        machine = _state_machine(args, session)
    except StackLookupError as exc:
        err.print(str(exc), markup=False)
        return EXIT_FAILED
    sfn = client("stepfunctions", session=session)
    document = suite.model_dump(mode="json", exclude_unset=True)
    arn = start_run(sfn, machine, run_id, document)
    console.print(f"Started run {run_id}\n  execution: {arn}", markup=False)
    console.print(f"  console: {_execution_console_url(region, arn)}", markup=False)
    if not args.wait:
        console.print(f"Follow it with: fmbench status {run_id}", markup=False)
        return EXIT_OK
    try:
        view = follow_run(
            sfn, arn, lambda entry: _print_entry(console, entry), poll_interval_s=args.poll_interval_s
        )
    except KeyboardInterrupt:
        console.print(
            f"Stopped following; the run goes on. Check it with: fmbench status {run_id}", markup=False
        )
        return EXIT_INTERRUPTED
    if view.status != "SUCCEEDED" or view.output is None:
        err.print(f"Run {run_id} {view.status}: {view.error or ''} {view.cause or ''}".rstrip(), markup=False)
        return EXIT_FAILED
    out = Path(args.out or Path("results") / run_id)
    files = download_report(client("s3", session=session), view.output, out)
    # The execution's output is a summary; the downloaded result.json has every branch and its reason.
    downloaded = out / "result.json"
    document = json.loads(downloaded.read_text(encoding="utf-8")) if downloaded.is_file() else view.output
    _print_result_summary(console, document)
    console.print(f"Downloaded {len(files)} file(s) to {out}", markup=False)
    if view.output.get("status") == "failed":
        return EXIT_FAILED
    regression = document.get("regression")  # in result.json; the execution's output only summarizes it
    if isinstance(regression, dict) and regression.get("verdict") == "regressed":
        console.print(
            f"Regression verdict against {regression.get('baseline_run_id')}: regressed: "
            f"{', '.join(regression.get('regressed_metrics') or [])}",
            markup=False,
        )
        return EXIT_REGRESSED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from fmbench.cloud.aws import client
    from fmbench.cloud.executions import ExecutionNotFoundError, StackLookupError, execution_arn, read_run

    console, err = _console(), Console(stderr=True, highlight=False, soft_wrap=True)
    session = _aws_session(args.region)
    try:
        machine = _state_machine(args, session)
        view = read_run(client("stepfunctions", session=session), execution_arn(machine, args.run_id))
    except (StackLookupError, ExecutionNotFoundError) as exc:
        err.print(str(exc), markup=False)
        return EXIT_FAILED
    started = view.started.isoformat(timespec="seconds") if view.started else "-"
    stopped = view.stopped.isoformat(timespec="seconds") if view.stopped else "-"
    console.print(f"Run {view.run_id}: {view.status} (started {started}, stopped {stopped})", markup=False)
    if view.current_states:
        console.print(f"  last state: {view.current_states[-1]}", markup=False)
    if view.branch_states:
        table = Table(title="Branches")
        table.add_column("branch")
        table.add_column("last state")
        for branch_id, state in sorted(view.branch_states.items()):
            table.add_row(branch_id, state)
        console.print(table)
    if view.error or view.cause:
        console.print(f"  error: {view.error or ''} {view.cause or ''}".rstrip(), markup=False)
    if view.output is not None:
        _print_result_summary(console, view.output)
    return EXIT_OK


def _add_cloud_target_options(parser: argparse.ArgumentParser) -> None:
    from fmbench.cloud.executions import DEFAULT_STACK_NAME

    parser.add_argument("--stack", default=DEFAULT_STACK_NAME, help="CloudFormation stack of the workflow")
    parser.add_argument(
        "--state-machine-arn", default=None, help="the workflow's state machine (default: the stack's output)"
    )
    parser.add_argument("--region", default=None, help="AWS region (default: AWS_REGION or the profile's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmbench", description="Benchmark foundation-model endpoints.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate", help="check a suite; list every problem, or the planned branches"
    )
    validate.add_argument("suite", help="suite file (YAML or JSON)")
    validate.set_defaults(handler=cmd_validate)

    run = commands.add_parser("run", help="run a suite on this machine and write the report")
    run.add_argument("suite", help="suite file (YAML or JSON)")
    run.add_argument("--out", required=True, help="output folder (records and report)")
    run.add_argument("--run-id", default=None, help="run id (default: time stamp and random suffix)")
    run.set_defaults(handler=cmd_run)

    evaluate = commands.add_parser(
        "evaluate", help="judge a finished run's answers with a panel of LLM judges (replaces its judgments)"
    )
    evaluate.add_argument(
        "root", metavar="RUN_DIR_OR_ROOT", help="the run's folder (its --out) or s3:// root"
    )
    evaluate.add_argument("--run-id", default=None, help="the run (default: the folder's only or shown run)")
    evaluate.add_argument("--suite", default=None, help="take the evaluation section from this suite instead")
    evaluate.add_argument(
        "--answers",
        choices=["load", "quality_pass"],
        default=None,
        help="judge the answers under load, or those of the run's quality pass (concurrency 1, temperature "
        "0); default: the quality pass's when the run had one (evaluation.quality_pass)",
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    report = commands.add_parser(
        "report", help="render a local run's report again from its records, plan and outcomes"
    )
    report.add_argument("run_id", metavar="RUN_ID", help="the run id (records/run_id=RUN_ID under --root)")
    report.add_argument("--root", required=True, help="the folder the run wrote to (its --out)")
    report.add_argument(
        "--out",
        default=None,
        help="where the report goes (default: ROOT/reports/run_id=RUN_ID, also copied to the top of ROOT)",
    )
    report.set_defaults(handler=cmd_report)

    load = commands.add_parser("load", help="benchmark one OpenAI-compatible endpoint directly")
    load.add_argument(
        "--url",
        required=True,
        help="the server's root or API base, e.g. http://127.0.0.1:8000 or http://127.0.0.1:8000/v1",
    )
    load.add_argument("--openai-api", choices=["chat", "completions"], default="chat")
    load.add_argument("--model", default=None, help="model id (default: the first one the server lists)")
    load.add_argument(
        "--api-key-env",
        default=None,
        help="environment variable holding the API key (sent as a Bearer token)",
    )
    load.add_argument(
        "--header",
        type=_header,
        action="append",
        metavar="NAME:VALUE",
        help="an HTTP header sent with every request (repeatable)",
    )
    load.add_argument(
        "--extra-body",
        default=None,
        metavar="JSON",
        help="a JSON object merged into every request body, e.g. '{\"top_k\": 20}'",
    )
    load.add_argument(
        "--timeout", type=float, default=120.0, metavar="SECONDS", help="request timeout (default: 120)"
    )
    load.add_argument(
        "--concurrency",
        type=_int_list,
        default=None,
        help="closed-loop levels, e.g. 1,8,32 (default 1,8,32 unless --rate is given)",
    )
    load.add_argument(
        "--rate", type=_float_list, default=None, help="open-loop rates in requests per second, e.g. 5,10,20"
    )
    load.add_argument(
        "--arrival", choices=["poisson", "constant"], default=None, help="open-loop arrival process"
    )
    load.add_argument(
        "--max-in-flight", type=int, default=None, help="open loop: cap on requests in flight (default none)"
    )
    load.add_argument("--seed", type=int, default=None, help="open loop: seed of the Poisson schedule")
    stop = load.add_mutually_exclusive_group()
    stop.add_argument("--requests", type=int, default=200, help="measured requests per load point")
    stop.add_argument("--duration", type=float, default=None, help="measured seconds per load point")
    load.add_argument("--warmup", type=int, default=0, help="warm-up requests per level")
    load.add_argument("--max-tokens", type=int, default=None, help="most output tokens (default: 128)")
    load.add_argument(
        "--output-tokens",
        type=int,
        default=None,
        metavar="N",
        help="exactly N output tokens: sends max_tokens=min_tokens=N and ignore_eos (vLLM, SGLang)",
    )
    load.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT)")
    load.add_argument(
        "--dataset",
        default=None,
        metavar="SOURCE",
        help="a JSONL, JSON, CSV or Parquet file, s3://BUCKET/KEY or hf:OWNER/NAME (default: "
        "builtin:synthetic-qa); see docs/workload.md",
    )
    load.add_argument("--dataset-config", default=None, help="Hub dataset: its config (subset)")
    load.add_argument("--dataset-split", default=None, help="Hub dataset: its split (default: train)")
    load.add_argument("--dataset-revision", default=None, help="Hub dataset: branch, tag or commit")
    load.add_argument(
        "--prompt-template",
        default=None,
        help="a Python format string over the dataset's fields, e.g. '{prompt}' (default: "
        "'{context}\\n\\nQuestion: {question}\\nAnswer:')",
    )
    load.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        metavar="N",
        help="synthetic prompts of N tokens of the tokenizer, unique per request (instead of --dataset)",
    )
    load.add_argument(
        "--tokenizer",
        default=None,
        metavar="SPEC",
        help="what counts tokens: simple, hf:MODEL_ID[@REVISION], hf:PATH (a tokenizer.json or its folder)",
    )
    load.add_argument(
        "--bins", type=_bins, default=_bins("0-100000"), help="prompt-token bins, e.g. 50-500,500-2000"
    )
    load.add_argument("--slo-p95-latency-s", type=float, default=None)
    load.add_argument("--out", required=True, help="output folder")
    load.set_defaults(handler=cmd_load)

    emulator = commands.add_parser(
        "emulator", help="run the local endpoint emulator (see `fmbench emulator --help`)", add_help=False
    )
    emulator.set_defaults(handler=None)

    schema = commands.add_parser("schema", help="write the JSON Schemas of the suite and of result.json")
    schema.add_argument("--out", default="schema")
    schema.set_defaults(handler=cmd_schema)
    prices = commands.add_parser("prices", help="the price table (see `fmbench prices update --help`)")
    prices_commands = prices.add_subparsers(dest="prices_command", required=True)
    update = prices_commands.add_parser(
        "update", help="read on-demand prices from the AWS Price List API into the price table"
    )
    update.add_argument("--out", default=None, help="where to write it (default: the bundled table)")
    update.add_argument("--endpoint-url", default=None, help=argparse.SUPPRESS)
    update.set_defaults(handler=cmd_prices_update)
    start = commands.add_parser("start", help="start the suite as a run of the deployed AWS workflow")
    start.add_argument("suite", help="suite file (YAML or JSON)")
    _add_cloud_target_options(start)
    start.add_argument(
        "--run-id", default=None, help="run id = execution name (default: time stamp + suffix)"
    )
    start.add_argument("--wait", action="store_true", help="follow the run and download its report")
    start.add_argument("--out", default=None, help="where --wait downloads the report (results/RUN_ID)")
    start.add_argument("--poll-interval-s", type=float, default=15.0, help=argparse.SUPPRESS)
    start.set_defaults(handler=cmd_start)

    status = commands.add_parser("status", help="where a run of the AWS workflow stands")
    status.add_argument("run_id", metavar="RUN", help="run id (the execution name)")
    _add_cloud_target_options(status)
    status.set_defaults(handler=cmd_status)
    _add_regression_commands(commands)
    return parser


class _Terminated(BaseException):
    """SIGTERM before the run's own handlers are installed (while the suite loads, say)."""


# The stop signal the command got outside the run's own handlers. A signal handler's exception can land
# where Python cannot raise it (a weakref callback, a ``__del__``): it is then printed as an "exception
# ignored" traceback and lost, so the stop is also noted here and acted on when the command returns.
_stop_seen: list[str] = []


def _raise_terminated(signum: int, frame: object) -> None:
    _stop_seen.append("SIGTERM")
    raise _Terminated


def _raise_interrupted(signum: int, frame: object) -> None:
    _stop_seen.append("SIGINT")
    raise KeyboardInterrupt


def _quiet_lost_stop(unraisable: Any, *, default: Any) -> None:
    """A stop raised where Python could not raise it is acted on when the command returns: no traceback."""
    if not isinstance(unraisable.exc_value, (_Terminated, KeyboardInterrupt)):
        default(unraisable)


def _stopped(name: str) -> int:
    print(
        f"stopped by {name}; anything measured is kept in the --out folder "
        "(`fmbench report RUN_ID --root OUT` renders it)",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED if name == "SIGINT" else EXIT_TERMINATED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        return cmd_emulator(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    # A run's own handlers (fmbench.local) take over while it sends load; before and after, a stop
    # still ends the command cleanly, without a traceback.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    catch_stops = (
        args.command in ("run", "load")
        and previous[signal.SIGTERM] is signal.SIG_DFL
        and previous[signal.SIGINT] is signal.default_int_handler
        and threading.current_thread() is threading.main_thread()
    )
    previous_hook = sys.unraisablehook
    if catch_stops:
        _stop_seen.clear()
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.signal(signal.SIGINT, _raise_interrupted)
        sys.unraisablehook = functools.partial(_quiet_lost_stop, default=previous_hook)
    try:
        code = int(args.handler(args))
    except (KeyboardInterrupt, _Terminated) as stop:
        return _stopped("SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM")
    finally:
        if catch_stops:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sys.unraisablehook = previous_hook
    if catch_stops and _stop_seen and code == 0:
        return _stopped(_stop_seen[0])  # a stop whose exception Python lost: the command ended anyway
    return code


if __name__ == "__main__":
    raise SystemExit(main())
