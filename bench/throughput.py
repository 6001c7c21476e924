"""Throughput benchmark: the request and token rates the runner sustains, beside a minimal reference client.

The emulator runs in fixed-timing mode with no delay (TTFT 0 ms, inter-token time 0 ms) in a child process,
so the only limits left are the clients, the emulator's own CPU and the machine. The reference client is
the fastest honest client: plain aiohttp, one session, N workers, each streaming the body line by line and
only counting ``data:`` lines. Runner and reference alternate (A B, B A, A B, ...) at every level, so the
drift of a shared machine falls on both; each client's figure is its best repetition, because other work
on the machine can only slow a run down. The figure of merit is the runner's rate over the reference's.

    python -m bench.throughput [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import aiohttp

from bench.common import (
    BENCH_MODEL,
    REQUEST_TIMEOUT_S,
    CpuUsage,
    MachineCpuMeter,
    add_emulator_options,
    add_run_options,
    available_cores,
    bench_prompts,
    chat_body,
    comma_separated,
    describe_machine,
    format_table,
    run_metadata,
    run_point_like_the_runner,
    starvation_note,
    wait_for_quiet,
    window_s,
    write_json,
)
from fmbench.config import InferenceParameters
from fmbench.emulator import EmulatorProcess, EmulatorSettings
from fmbench.endpoints.openai import OpenAIClient
from fmbench.loadgen import LoadPoint
from fmbench.payloads import Prompt

DEFAULT_CONCURRENCY = (1, 4, 16, 64, 256, 1024)
TARGET_RATIO = 0.90
# A process at this share of one core (or more) is taken to be the limit of the figure it was part of.
SATURATED_CORES = 0.85
# Other processes on the shared machine above this many cores during a run mark the run as disturbed.
DISTURBED_OTHER_CORES = 0.25
# Non-token data lines of one streamed answer: the finish_reason chunk, the usage chunk and [DONE].
_NON_TOKEN_DATA_LINES = 3
_PAUSE_BETWEEN_RUNS_S = 0.3
# Distinct prompt texts cycled through; the work per request is the same whichever is sent.
_PROMPT_COUNT = 4096

ClientName = Literal["runner", "reference"]


@dataclass(frozen=True, slots=True)
class RunSettings:
    duration_s: float
    warmup_rounds: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Measurement:
    """One run of one client at one level; rates are over the window (first measured send to last end).

    The ``self_check_*`` fields are the runner's own verdict on the load point (None for the reference).
    """

    client: ClientName
    concurrency: int
    repetition: int
    requests_attempted: int
    measured_ok: int
    measured_errors: int
    window_s: float
    tokens: int
    cpu: CpuUsage
    self_check_cpu_fraction: float | None = None
    self_check_lag_p99_s: float | None = None
    self_check_client_bound: bool | None = None

    @property
    def request_rate_per_s(self) -> float:
        return self.measured_ok / self.window_s if self.window_s > 0 else 0.0

    @property
    def token_rate_per_s(self) -> float:
        return self.tokens / self.window_s if self.window_s > 0 else 0.0

    @property
    def client_cpu_ms_per_request(self) -> float:
        """The client's CPU per request, warm-up included: its one-core ceiling is 1000 / this req/s."""
        cpu_s = self.cpu.client_cores * self.cpu.wall_s
        return 1000.0 * cpu_s / self.requests_attempted if self.requests_attempted else float("nan")

    @property
    def emulator_cpu_ms_per_request(self) -> float:
        cpu_s = self.cpu.emulator_cores * self.cpu.wall_s
        return 1000.0 * cpu_s / self.requests_attempted if self.requests_attempted else float("nan")

    @property
    def disturbed(self) -> bool:
        return self.cpu.other_cores > DISTURBED_OTHER_CORES

    @property
    def likely_limit(self) -> str:
        """A hint, not a proof: who sat at a full core, else whether the shared machine was full."""
        cpu = self.cpu
        if cpu.emulator_cores >= SATURATED_CORES:
            return "emulator"
        if cpu.client_cores >= SATURATED_CORES:
            return "client"
        if cpu.machine_busy_cores + cpu.steal_cores >= available_cores() - 0.3:
            return "machine"
        return "round trips"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"]["other_cores"] = self.cpu.other_cores
        data.update(
            request_rate_per_s=self.request_rate_per_s,
            token_rate_per_s=self.token_rate_per_s,
            client_cpu_ms_per_request=self.client_cpu_ms_per_request,
            emulator_cpu_ms_per_request=self.emulator_cpu_ms_per_request,
            disturbed=self.disturbed,
            likely_limit=self.likely_limit,
        )
        return data


# ------------------------------------------------------------------------------------------- the runner


async def measure_runner(
    base_url: str,
    concurrency: int,
    repetition: int,
    settings: RunSettings,
    prompts: list[Prompt],
    emulator_pid: int | None,
    storage_root: Path,
    client_class: type[OpenAIClient] = OpenAIClient,
) -> Measurement:
    """The product's path: OpenAIClient (pool sized to the level, as make_client does) + LoadPointRun.

    ``client_class`` lets bench.profile_runner measure a candidate hot path on exactly the same terms.
    """
    client = client_class(f"{base_url}/v1", api="chat", model=BENCH_MODEL, max_connections=concurrency)
    point = LoadPoint(
        concurrency=concurrency,
        payload_bin="bench",
        prompts=prompts,
        params=InferenceParameters(max_new_tokens=settings.output_tokens, stream=True),
        timeout_s=REQUEST_TIMEOUT_S,
        warmup_requests=concurrency * settings.warmup_rounds,
        duration_s=settings.duration_s,
    )
    meter = MachineCpuMeter(emulator_pid)
    try:
        run = await run_point_like_the_runner(client, point, storage_root)
        cpu = meter.stop()
    finally:
        await client.aclose()
    summary = run.result.summary
    check = run.result.check
    ok = [a.result for a in run.attempts if a.is_measured and a.result.status == "ok"]
    return Measurement(
        client="runner",
        concurrency=concurrency,
        repetition=repetition,
        requests_attempted=summary.attempts,
        measured_ok=len(ok),
        measured_errors=summary.measured_errors,
        window_s=window_s(run.attempts),
        tokens=sum(len(r.chunk_perf_s) for r in ok),
        cpu=cpu,
        self_check_cpu_fraction=check.runner_cpu_fraction,
        self_check_lag_p99_s=check.schedule_lag_p99_s,
        self_check_client_bound=check.client_bound,
    )


# ------------------------------------------------------------------------------------------- the reference


async def measure_reference(
    base_url: str,
    concurrency: int,
    repetition: int,
    settings: RunSettings,
    bodies: list[bytes],
    emulator_pid: int | None,
) -> Measurement:
    """As little as an honest streaming client can do: same bodies, same stop rule, lines counted, no JSON."""
    url = f"{base_url}/v1/chat/completions"
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",
    }
    warmup_requests = concurrency * settings.warmup_rounds
    duration_s = settings.duration_s
    body_count = len(bodies)
    next_seq = 0
    window_start_s: float | None = None
    send_s: list[float] = []
    end_s: list[float] = []
    measured_ok = 0
    measured_errors = 0
    data_lines = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_seq, window_start_s, measured_ok, measured_errors, data_lines
        while True:
            started_s = perf_counter()
            seq = next_seq
            if seq >= warmup_requests:
                if window_start_s is None:
                    window_start_s = started_s
                elif started_s - window_start_s >= duration_s:
                    return
            next_seq = seq + 1
            lines = 0
            ok = False
            try:
                async with session.post(url, data=bodies[seq % body_count], headers=headers) as response:
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            lines += 1
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if seq >= warmup_requests:
                send_s.append(started_s)
                end_s.append(perf_counter())
                if ok:
                    measured_ok += 1
                    data_lines += lines
                else:
                    measured_errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    meter = MachineCpuMeter(emulator_pid)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(session))
        cpu = meter.stop()
    return Measurement(
        client="reference",
        concurrency=concurrency,
        repetition=repetition,
        requests_attempted=next_seq,
        measured_ok=measured_ok,
        measured_errors=measured_errors,
        window_s=max(end_s) - min(send_s) if send_s else 0.0,
        tokens=data_lines - _NON_TOKEN_DATA_LINES * measured_ok,
        cpu=cpu,
    )


# ------------------------------------------------------------------------------------------- the sweep


async def sweep(
    base_url: str,
    emulator_pid: int | None,
    levels: list[int],
    settings: RunSettings,
    repetitions: int,
    storage_root: Path,
    quiet_wait_s: float,
) -> list[Measurement]:
    prompts = bench_prompts(_PROMPT_COUNT)
    bodies = [chat_body(prompt.text, settings.output_tokens) for prompt in prompts]
    # One throwaway run of each client first: the first Parquet write imports and initialises pyarrow's
    # writer, which would otherwise be billed to the first level's runner.
    throwaway = RunSettings(duration_s=0.5, warmup_rounds=1, output_tokens=settings.output_tokens)
    await measure_runner(base_url, 4, -1, throwaway, prompts, emulator_pid, storage_root)
    await measure_reference(base_url, 4, -1, throwaway, bodies, emulator_pid)
    measurements: list[Measurement] = []
    for concurrency in levels:
        for repetition in range(repetitions):
            order: tuple[ClientName, ...] = (
                ("runner", "reference") if repetition % 2 == 0 else ("reference", "runner")
            )
            for client in order:
                gc.collect()
                await asyncio.sleep(_PAUSE_BETWEEN_RUNS_S)  # let the emulator close the last run's sockets
                await wait_for_quiet(emulator_pid, quiet_wait_s)
                if client == "runner":
                    m = await measure_runner(
                        base_url, concurrency, repetition, settings, prompts, emulator_pid, storage_root
                    )
                else:
                    m = await measure_reference(
                        base_url, concurrency, repetition, settings, bodies, emulator_pid
                    )
                measurements.append(m)
                cpu = m.cpu
                print(
                    f"  c={concurrency:<5} rep {repetition} {client:<9} {m.request_rate_per_s:8.1f} req/s  "
                    f"{m.client_cpu_ms_per_request:.3f} client CPU ms/req  errors {m.measured_errors}  "
                    f"cores: client {cpu.client_cores:.2f} emulator {cpu.emulator_cores:.2f} "
                    f"other {cpu.other_cores:.2f}" + ("  (disturbed)" if m.disturbed else ""),
                    flush=True,
                )
    return measurements


def _best(runs: list[Measurement]) -> Measurement:
    return max(runs, key=lambda m: m.request_rate_per_s)


def projected_rate_per_s(concurrency: int, client_cpu_ms: float, emulator_cpu_ms: float) -> float:
    """The rate CPU costs alone allow with the client and the emulator on a core each and nothing else.

    With two or more requests in flight the two processes work in parallel and the slower one sets the
    pace; at concurrency 1 they take turns, so their costs add up (loopback time, small, is left out).
    """
    per_request_ms = (
        client_cpu_ms + emulator_cpu_ms if concurrency == 1 else max(client_cpu_ms, emulator_cpu_ms)
    )
    return 1000.0 / per_request_ms if per_request_ms > 0 else float("nan")


def summarize_levels(measurements: list[Measurement], target_ratio: float) -> list[dict[str, Any]]:
    """Per level: each client's best repetition (measured ratio) and, from the median CPU costs, a projection.

    The measured ratio holds only for undisturbed runs. CPU per request hardly depends on what else the
    machine does, so the projected ratio still says what the clients would reach on two free cores.
    """
    summary = []
    for concurrency in sorted({m.concurrency for m in measurements}):
        runner_runs = [m for m in measurements if m.concurrency == concurrency and m.client == "runner"]
        reference_runs = [m for m in measurements if m.concurrency == concurrency and m.client == "reference"]
        runner = _best(runner_runs)
        reference = _best(reference_runs)
        ratio = (
            runner.request_rate_per_s / reference.request_rate_per_s if reference.request_rate_per_s else 0.0
        )
        runner_cpu_ms = statistics.median(m.client_cpu_ms_per_request for m in runner_runs)
        reference_cpu_ms = statistics.median(m.client_cpu_ms_per_request for m in reference_runs)
        emulator_cpu_ms = statistics.median(
            m.emulator_cpu_ms_per_request for m in runner_runs + reference_runs
        )
        runner_projected = projected_rate_per_s(concurrency, runner_cpu_ms, emulator_cpu_ms)
        reference_projected = projected_rate_per_s(concurrency, reference_cpu_ms, emulator_cpu_ms)
        projected_ratio = runner_projected / reference_projected
        both = runner_runs + reference_runs
        summary.append(
            {
                "concurrency": concurrency,
                "runner_request_rate_per_s": runner.request_rate_per_s,
                "reference_request_rate_per_s": reference.request_rate_per_s,
                "ratio": ratio,
                "met_target": ratio >= target_ratio,
                "runner_token_rate_per_s": runner.token_rate_per_s,
                "reference_token_rate_per_s": reference.token_rate_per_s,
                "runner_mean_request_rate_per_s": statistics.fmean(m.request_rate_per_s for m in runner_runs),
                "reference_mean_request_rate_per_s": statistics.fmean(
                    m.request_rate_per_s for m in reference_runs
                ),
                "runner_client_cpu_ms_per_request": runner_cpu_ms,
                "reference_client_cpu_ms_per_request": reference_cpu_ms,
                "emulator_cpu_ms_per_request": emulator_cpu_ms,
                "runner_projected_request_rate_per_s": runner_projected,
                "reference_projected_request_rate_per_s": reference_projected,
                "projected_ratio": projected_ratio,
                "projected_met_target": projected_ratio >= target_ratio,
                "other_cores": max(runner.cpu.other_cores, reference.cpu.other_cores),
                "disturbed_runs": sum(m.disturbed for m in both),
                "runs": len(both),
                "errors": sum(m.measured_errors for m in both),
                "self_check_cpu_fraction": runner.self_check_cpu_fraction,
                "self_check_lag_p99_s": runner.self_check_lag_p99_s,
                "self_check_client_bound": runner.self_check_client_bound,
                "likely_limit_runner": runner.likely_limit,
                "likely_limit_reference": reference.likely_limit,
            }
        )
    return summary


def render_measured(summary: list[dict[str, Any]], target_ratio: float) -> str:
    headers = [
        "conc",
        "runner req/s",
        "ref req/s",
        "ratio",
        f">={target_ratio:.0%}",
        "runner tok/s",
        "ref tok/s",
        "other cores",
        "disturbed runs",
        "errors",
        "limit (runner/ref)",
        "self-check (CPU, lag p99 ms, bound)",
    ]
    rows = []
    for s in summary:
        lag_s = s["self_check_lag_p99_s"]
        rows.append(
            [
                s["concurrency"],
                s["runner_request_rate_per_s"],
                s["reference_request_rate_per_s"],
                f"{s['ratio']:.3f}",
                "yes" if s["met_target"] else "NO",
                f"{s['runner_token_rate_per_s']:.0f}",
                f"{s['reference_token_rate_per_s']:.0f}",
                s["other_cores"],
                f"{s['disturbed_runs']}/{s['runs']}",
                s["errors"],
                f"{s['likely_limit_runner']}/{s['likely_limit_reference']}",
                f"{s['self_check_cpu_fraction']:.2f}, "
                + ("-" if lag_s is None else f"{lag_s * 1000:.2f}")
                + f", {'yes' if s['self_check_client_bound'] else 'no'}",
            ]
        )
    return format_table(headers, rows)


def render_projected(summary: list[dict[str, Any]], target_ratio: float) -> str:
    headers = [
        "conc",
        "runner CPU ms/req",
        "ref CPU ms/req",
        "emulator CPU ms/req",
        "runner/ref CPU",
        "projected runner req/s",
        "projected ref req/s",
        "projected ratio",
        f">={target_ratio:.0%}",
    ]
    rows = [
        [
            s["concurrency"],
            s["runner_client_cpu_ms_per_request"],
            s["reference_client_cpu_ms_per_request"],
            s["emulator_cpu_ms_per_request"],
            f"{s['runner_client_cpu_ms_per_request'] / s['reference_client_cpu_ms_per_request']:.2f}x",
            s["runner_projected_request_rate_per_s"],
            s["reference_projected_request_rate_per_s"],
            f"{s['projected_ratio']:.3f}",
            "yes" if s["projected_met_target"] else "NO",
        ]
        for s in summary
    ]
    return format_table(headers, rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Highest sustained request and token rate of the runner against a zero-delay emulator "
        "in a child process, beside a minimal aiohttp reference client measured in the same run.",
    )
    parser.add_argument(
        "--concurrency",
        type=comma_separated(int),
        default=list(DEFAULT_CONCURRENCY),
        help="comma-separated levels (default: 1,4,16,64,256,1024)",
    )
    parser.add_argument("--duration-s", type=float, default=4.0, help="measured window per run (default: 4)")
    parser.add_argument(
        "--warmup-rounds",
        type=int,
        default=2,
        help="warm-up requests per worker before the window (default: 2)",
    )
    parser.add_argument(
        "--repetitions", type=int, default=3, help="runs per client and level, alternating (default: 3)"
    )
    add_emulator_options(parser, ttft_ms=0.0, itl_ms=0.0, output_tokens=64)
    parser.add_argument("--target-ratio", type=float, default=TARGET_RATIO, help="default: %(default)s")
    add_run_options(parser, quick_help="smoke run in under a minute: 1.5 s windows, one repetition")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s = 1.5
        args.repetitions = 1
        args.warmup_rounds = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    meta = run_metadata()
    settings = RunSettings(args.duration_s, args.warmup_rounds, args.output_tokens)
    emulator_settings = EmulatorSettings(
        model=BENCH_MODEL, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, output_tokens=args.output_tokens
    )
    print(f"throughput: {describe_machine(meta)}")
    print(
        f"emulator: fixed timing, TTFT {args.ttft_ms:g} ms, inter-token {args.itl_ms:g} ms, "
        f"{args.output_tokens} tokens, in a child process; window {args.duration_s:g} s, "
        f"{args.repetitions} repetition(s) per client, warm-up {args.warmup_rounds} request(s) per worker",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="fmbench-bench-") as storage,
        EmulatorProcess(emulator_settings) as emulator,
    ):
        measurements = asyncio.run(
            sweep(
                emulator.url,
                emulator.pid,
                args.concurrency,
                settings,
                args.repetitions,
                Path(storage),
                args.quiet_wait_s,
            )
        )
    summary = summarize_levels(measurements, args.target_ratio)
    print("\nMeasured (each client's best repetition):")
    print(render_measured(summary, args.target_ratio))
    print("\nCPU per request (median over repetitions) and the rates it allows on a free core each:")
    print(render_projected(summary, args.target_ratio))
    note = starvation_note(s["other_cores"] for s in summary)
    if note:
        print(f"\n{note}")
    measured_ok = all(s["met_target"] for s in summary)
    projected_ok = all(s["projected_met_target"] for s in summary)
    print(
        f"\nrunner >= {args.target_ratio:.0%} of the reference's request rate at every level: measured "
        f"{'yes' if measured_ok else 'NO'}, projected from CPU costs {'yes' if projected_ok else 'NO'}"
    )
    print(
        "cores: share of one core; other: the rest of the shared machine; disturbed: runs during which "
        f"other processes took more than {DISTURBED_OTHER_CORES} core.\nself-check: the runner's own verdict "
        "on its best run. Projection: client and emulator on a core each, the slower sets the pace (taking "
        "turns at concurrency 1)."
    )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "throughput",
                "machine": meta,
                "settings": {
                    **asdict(settings),
                    **emulator_settings.model_dump(),
                    "repetitions": args.repetitions,
                },
                "target_ratio": args.target_ratio,
                "levels": summary,
                "measurements": [m.as_dict() for m in measurements],
            },
        )
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
