"""Timing-accuracy benchmark: the runner's TTFT, TPOT and ITL against an emulator whose timings are known.

The emulator (a child process) answers every request with a fixed TTFT and inter-token time, scheduled to
absolute deadlines from the moment its handler starts. The runner measures from before it sends, so its
TTFT is the truth plus the send path (client request building, loopback, the server's HTTP parsing), plus
whatever the emulator is late, plus the return path (loopback, the client's reading and parsing). With the
instrumented emulator (the default) the server notes its own times on the same monotonic clock, so the
table splits the error into those three parts instead of blaming all of it on the runner.

    python -m bench.timing_accuracy [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_MODEL,
    REQUEST_TIMEOUT_S,
    MachineCpuMeter,
    add_emulator_options,
    add_run_options,
    bench_prompts,
    comma_separated,
    describe_machine,
    format_table,
    percentile,
    run_metadata,
    run_point_like_the_runner,
    starvation_note,
    wait_for_quiet,
    write_json,
)
from bench.instrumented_emulator import (
    CallStampingClient,
    InstrumentedEmulatorProcess,
    fetch_server_timings,
)
from fmbench.config import InferenceParameters
from fmbench.emulator import EmulatorProcess, EmulatorSettings
from fmbench.endpoints.openai import OpenAIClient
from fmbench.loadgen import Attempt, LoadPoint

DEFAULT_CONCURRENCY = (1, 4, 16, 64, 128, 256)
TTFT_TOLERANCE_MS = 1.0
TPOT_TOLERANCE_MS = 0.2
TARGET_MAX_CONCURRENCY = 64
_PAUSE_BETWEEN_LEVELS_S = 0.5


@dataclass(frozen=True, slots=True)
class Truth:
    ttft_ms: float
    itl_ms: float
    output_tokens: int

    @property
    def request_s(self) -> float:
        return (self.ttft_ms + (self.output_tokens - 1) * self.itl_ms) / 1000.0


def _ms(values: list[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float) * 1000.0


async def measure_level(
    base_url: str,
    concurrency: int,
    truth: Truth,
    duration_s: float,
    emulator_pid: int | None,
    instrumented: bool,
    storage_root: Path,
    ramp_up_s: float = 0.0,
) -> dict[str, Any]:
    # One distinct prompt per request (with room to spare), so the server's timings can be matched by text.
    expected_rounds = math.ceil(duration_s / truth.request_s) + 3
    prompts = bench_prompts(concurrency * (1 + expected_rounds))
    client_class = CallStampingClient if instrumented else OpenAIClient
    client = client_class(f"{base_url}/v1", api="chat", model=BENCH_MODEL, max_connections=concurrency)
    point = LoadPoint(
        concurrency=concurrency,
        payload_bin="bench",
        prompts=prompts,
        params=InferenceParameters(max_new_tokens=truth.output_tokens, stream=True),
        timeout_s=REQUEST_TIMEOUT_S,
        warmup_requests=concurrency,
        duration_s=duration_s,
        ramp_up_s=ramp_up_s,
    )
    if instrumented:
        await fetch_server_timings(base_url)  # forget whatever an earlier level left behind
    gc.collect()
    meter = MachineCpuMeter(emulator_pid)
    try:
        run = await run_point_like_the_runner(client, point, storage_root)
        cpu = meter.stop()
    finally:
        await client.aclose()
    server = await fetch_server_timings(base_url) if instrumented else {}

    records = [r for r in run.records if r.phase == "measured"]
    ok = [r for r in records if r.status == "ok" and r.ttft_s is not None]
    ttft_ms = _ms([r.ttft_s for r in ok if r.ttft_s is not None])
    tpot_ms = _ms(
        [
            (r.latency_s - r.ttft_s) / (r.completion_tokens - 1)
            for r in ok
            if r.ttft_s is not None and r.completion_tokens is not None and r.completion_tokens > 1
        ]
    )
    itl_ms = _ms([gap for r in ok for gap in r.itl_s])
    figures: dict[str, Any] = {
        "concurrency": concurrency,
        "measured": len(records),
        "errors": sum(1 for r in records if r.status != "ok"),
        "short_answers": sum(1 for r in ok if r.completion_tokens != truth.output_tokens),
        "ttft_p50_ms": percentile(ttft_ms, 50),
        "ttft_p95_ms": percentile(ttft_ms, 95),
        "ttft_p99_ms": percentile(ttft_ms, 99),
        "tpot_p50_ms": percentile(tpot_ms, 50),
        "tpot_p95_ms": percentile(tpot_ms, 95),
        "itl_p50_ms": percentile(itl_ms, 50),
        "itl_p95_ms": percentile(itl_ms, 95),
        "itl_p99_ms": percentile(itl_ms, 99),
        "client_cores": cpu.client_cores,
        "emulator_cores": cpu.emulator_cores,
        "other_cores": cpu.other_cores,
        "self_check_cpu_fraction": run.result.check.runner_cpu_fraction,
        "self_check_lag_p99_ms": None
        if run.result.check.schedule_lag_p99_s is None
        else run.result.check.schedule_lag_p99_s * 1000,
        "self_check_loop_lag_p99_ms": None
        if run.result.check.loop_lag_p99_s is None
        else run.result.check.loop_lag_p99_s * 1000,
        "self_check_client_bound": run.result.check.client_bound,
    }
    figures["ttft_p50_error_ms"] = figures["ttft_p50_ms"] - truth.ttft_ms
    figures["tpot_p50_error_ms"] = figures["tpot_p50_ms"] - truth.itl_ms
    figures["within_target"] = (
        abs(figures["ttft_p50_error_ms"]) <= TTFT_TOLERANCE_MS
        and abs(figures["tpot_p50_error_ms"]) <= TPOT_TOLERANCE_MS
    )
    if instrumented:
        call_start_s = client.call_start_s if isinstance(client, CallStampingClient) else {}
        figures.update(_decompose(run.attempts, server, call_start_s, truth))
    return figures


def _decompose(
    attempts: list[Attempt],
    server: dict[str, tuple[float, list[float]]],
    call_start_s: dict[str, float],
    truth: Truth,
) -> dict[str, Any]:
    """Split each measured TTFT, on one clock, into the parts of the path from send stamp to first chunk.

    The runner stamps a request as sent when its bytes go to the connection. intake: from then until the
    emulator's handler started (loopback, the emulator parsing requests that arrived together); emulator
    late: its first write against its deadline; return: that write until the runner had the chunk (the
    runner's own share of the TTFT). client pre-send, from ``invoke`` to the send stamp (aiohttp's request
    preparation, and other workers' turns on the loop), is not in the TTFT: it is part of the schedule lag.
    """
    uses: dict[str, int] = {}
    for attempt in attempts:
        uses[attempt.prompt.text] = uses.get(attempt.prompt.text, 0) + 1
    parts_ms: dict[str, list[float]] = {
        name: [] for name in ("client_presend", "intake", "emulator_late", "return_path")
    }
    server_gaps_ms: list[float] = []
    merged_writes = 0
    for attempt in attempts:
        result = attempt.result
        text = attempt.prompt.text
        timing = server.get(text)
        called_s = call_start_s.get(text)
        if not attempt.is_measured or result.status != "ok" or result.first_token_perf_s is None:
            continue
        if timing is None or called_s is None or uses[text] != 1 or not timing[1]:
            continue
        received_s, writes_s = timing
        first_write_s = writes_s[0]
        parts_ms["client_presend"].append((result.send_perf_s - called_s) * 1000)
        parts_ms["intake"].append((received_s - result.send_perf_s) * 1000)
        parts_ms["emulator_late"].append((first_write_s - received_s) * 1000 - truth.ttft_ms)
        parts_ms["return_path"].append((result.first_token_perf_s - first_write_s) * 1000)
        token_writes_s = writes_s[:-1]  # the last write carries finish_reason, usage and [DONE]
        if len(token_writes_s) < truth.output_tokens:
            merged_writes += 1  # the emulator fell behind and sent several due tokens in one write
        server_gaps_ms.extend(np.diff(token_writes_s) * 1000)
    figures: dict[str, Any] = {"matched": len(parts_ms["intake"])}
    for name, values in parts_ms.items():
        figures[f"{name}_p50_ms"] = percentile(values, 50)
        figures[f"{name}_p95_ms"] = percentile(values, 95)
    figures["server_itl_p50_ms"] = percentile(server_gaps_ms, 50)
    figures["server_itl_p95_ms"] = percentile(server_gaps_ms, 95)
    figures["answers_with_merged_writes"] = merged_writes
    return figures


def render_accuracy(levels: list[dict[str, Any]], truth: Truth) -> str:
    headers = [
        "conc",
        "measured",
        "errors",
        "TTFT p50",
        "TTFT p95",
        "p50-truth",
        "TPOT p50",
        "p50-truth",
        "ITL p50",
        "ITL p95",
        "ITL p99",
        "other cores",
        f"within ±{TTFT_TOLERANCE_MS:g}/±{TPOT_TOLERANCE_MS:g} ms",
    ]
    rows = [
        [
            f["concurrency"],
            f["measured"],
            f["errors"],
            f["ttft_p50_ms"],
            f["ttft_p95_ms"],
            f"{f['ttft_p50_error_ms']:+.3f}",
            f["tpot_p50_ms"],
            f"{f['tpot_p50_error_ms']:+.3f}",
            f["itl_p50_ms"],
            f["itl_p95_ms"],
            f["itl_p99_ms"],
            f["other_cores"],
            ("yes" if f["within_target"] else "NO")
            + ("" if f["concurrency"] <= TARGET_MAX_CONCURRENCY else " (beyond target range)"),
        ]
        for f in levels
    ]
    return format_table(headers, rows)


def render_decomposition(levels: list[dict[str, Any]]) -> str:
    headers = [
        "conc",
        "client pre-send (lag)",
        "intake",
        "emulator late",
        "return path (runner)",
        "server ITL p50/p95",
        "merged writes",
        "cores client/emulator/other",
        "self-check (CPU, lag p99 ms, loop late p99 ms, bound)",
    ]
    rows = []
    for f in levels:
        lag = f["self_check_lag_p99_ms"]
        loop_late = f["self_check_loop_lag_p99_ms"]
        rows.append(
            [
                f["concurrency"],
                f"{f['client_presend_p50_ms']:.3f}/{f['client_presend_p95_ms']:.3f}",
                f"{f['intake_p50_ms']:.3f}/{f['intake_p95_ms']:.3f}",
                f"{f['emulator_late_p50_ms']:.3f}/{f['emulator_late_p95_ms']:.3f}",
                f"{f['return_path_p50_ms']:.3f}/{f['return_path_p95_ms']:.3f}",
                f"{f['server_itl_p50_ms']:.3f}/{f['server_itl_p95_ms']:.3f}",
                f"{f['answers_with_merged_writes']}/{f['matched']}",
                f"{f['client_cores']:.2f}/{f['emulator_cores']:.2f}/{f['other_cores']:.2f}",
                f"{f['self_check_cpu_fraction']:.2f}, "
                + ("-" if lag is None else f"{lag:.2f}")
                + ", "
                + ("-" if loop_late is None else f"{loop_late:.2f}")
                + f", {'yes' if f['self_check_client_bound'] else 'no'}",
            ]
        )
    return format_table(headers, rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timing_accuracy",
        description="TTFT, TPOT and ITL as the runner measures them against an emulator (in another process) "
        "with fixed, known timings.",
    )
    parser.add_argument(
        "--concurrency",
        type=comma_separated(int),
        default=list(DEFAULT_CONCURRENCY),
        help="comma-separated levels (default: 1,4,16,64,128,256)",
    )
    add_emulator_options(parser, ttft_ms=50.0, itl_ms=10.0, output_tokens=32)
    parser.add_argument(
        "--duration-s", type=float, default=12.0, help="measured window per level (default: 12)"
    )
    parser.add_argument(
        "--stock-emulator",
        action="store_true",
        help="run python -m fmbench.emulator itself (no server timestamps, no decomposition)",
    )
    parser.add_argument(
        "--spread-start",
        action="store_true",
        help="start the workers spread over one answer's time (load.ramp_up_s), not all at once",
    )
    add_run_options(parser, quick_help="smoke run in under a minute: 3 s per level")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s = 3.0
    return args


async def sweep(
    base_url: str, emulator_pid: int | None, args: argparse.Namespace, truth: Truth, storage_root: Path
) -> list[dict[str, Any]]:
    # A throwaway level first: the first Parquet write initialises pyarrow's writer, which would otherwise
    # land in the first level's figures.
    await measure_level(base_url, 4, truth, 0.5, emulator_pid, not args.stock_emulator, storage_root)
    levels = []
    for concurrency in args.concurrency:
        await asyncio.sleep(_PAUSE_BETWEEN_LEVELS_S)
        await wait_for_quiet(emulator_pid, args.quiet_wait_s)
        figures = await measure_level(
            base_url,
            concurrency,
            truth,
            args.duration_s,
            emulator_pid,
            not args.stock_emulator,
            storage_root,
            truth.request_s if args.spread_start else 0.0,
        )
        levels.append(figures)
        print(
            f"  c={concurrency:<4} TTFT p50 {figures['ttft_p50_ms']:.3f} ms, "
            f"TPOT p50 {figures['tpot_p50_ms']:.3f} ms, {figures['measured']} measured, "
            f"{figures['errors']} errors, other cores {figures['other_cores']:.2f}",
            flush=True,
        )
    return levels


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if time.get_clock_info("perf_counter").implementation != time.get_clock_info("monotonic").implementation:
        print("note: perf_counter is not the monotonic clock here; the decomposition may be offset")
    truth = Truth(args.ttft_ms, args.itl_ms, args.output_tokens)
    meta = run_metadata()
    settings = EmulatorSettings(
        model=BENCH_MODEL, ttft_ms=truth.ttft_ms, itl_ms=truth.itl_ms, output_tokens=truth.output_tokens
    )
    process = EmulatorProcess(settings) if args.stock_emulator else InstrumentedEmulatorProcess(settings)
    print(f"timing accuracy: {describe_machine(meta)}")
    print(
        f"truth: TTFT {truth.ttft_ms:g} ms from the request's arrival at the emulator, "
        f"inter-token {truth.itl_ms:g} ms, {truth.output_tokens} tokens; {args.duration_s:g} s per level; "
        f"emulator {'stock' if args.stock_emulator else 'instrumented'} in a child process; workers "
        + (f"spread over {truth.request_s * 1000:g} ms" if args.spread_start else "started together"),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fmbench-bench-") as storage, process:
        levels = asyncio.run(sweep(process.url, process.pid, args, truth, Path(storage)))
    print()
    print(render_accuracy(levels, truth))
    if not args.stock_emulator:
        print(
            "\nWhere the TTFT error arises (ms, p50/p95; TTFT = intake + truth + emulator late + return path;"
            " intake: from the send stamp, loopback and the emulator taking requests in; client pre-send"
            " comes before the send stamp and counts as schedule lag):"
        )
        print(render_decomposition(levels))
    note = starvation_note(f["other_cores"] for f in levels)
    if note:
        print(f"\n{note}")
    in_range = [f for f in levels if f["concurrency"] <= TARGET_MAX_CONCURRENCY]
    met = bool(in_range) and all(f["within_target"] for f in in_range)
    print(
        f"\nTTFT p50 within {TTFT_TOLERANCE_MS:g} ms and TPOT p50 within {TPOT_TOLERANCE_MS:g} ms of the "
        f"truth at every concurrency up to {TARGET_MAX_CONCURRENCY}: {'yes' if met else 'NO'}"
    )
    if not args.stock_emulator and in_range:
        runner_side_ok = all(f["return_path_p50_ms"] <= TTFT_TOLERANCE_MS for f in in_range)
        print(
            f"runner side alone (return path) p50 within {TTFT_TOLERANCE_MS:g} ms up to "
            f"{TARGET_MAX_CONCURRENCY}: {'yes' if runner_side_ok else 'NO'}"
        )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "timing_accuracy",
                "machine": meta,
                "truth": {
                    "ttft_ms": truth.ttft_ms,
                    "itl_ms": truth.itl_ms,
                    "output_tokens": truth.output_tokens,
                },
                "settings": {"duration_s": args.duration_s, "stock_emulator": args.stock_emulator},
                "levels": levels,
            },
        )
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
