"""Open-loop benchmark: does the runner send at the asked rate, on schedule, against an emulator?

Each load point is the product's open loop (``LoadPoint(request_rate_per_s=..., arrival=...)`` run by
``LoadPointRun``, as the branch runner does) against a fixed-timing emulator in a child process. Figures:
the rate the runner actually sent at, beside the asked rate and beside the rate of the schedule it was
given, and the schedule lag (send time minus scheduled arrival time) p50/p99/max.

A Poisson schedule of n arrivals has a rate that differs from the asked one by chance (about 1.96/sqrt(n)
either way, 95% of the time): over 10 s at 50 req/s that is +-9%, whatever the runner does. So for Poisson
arrivals the runner's fidelity is judged against its own schedule's rate and the asked-rate error is shown
with that band; constant arrivals have no such noise and are judged against the asked rate directly.

    python -m bench.open_loop [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, get_args

import numpy as np

import fmbench.loadgen
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
from fmbench.config import Arrival, InferenceParameters
from fmbench.emulator import EmulatorProcess, EmulatorSettings
from fmbench.endpoints.openai import OpenAIClient
from fmbench.loadgen import LoadPoint

DEFAULT_RATES_PER_S = (5.0, 20.0, 50.0, 100.0, 200.0, 400.0)
RATE_TOLERANCE = 0.02
_PAUSE_BETWEEN_POINTS_S = 0.5
# The connection pool of an open loop has no level to be sized by; this many covers the rates above with
# the default answer time (rate x answer time in flight, with room for bursts), as load.connection_pool_size
# would for a suite.
_MAX_CONNECTIONS = 1024


def _rate(times_s: np.ndarray) -> float:
    """Events per second between the first and the last event: (n - 1) gaps over their span."""
    if len(times_s) < 2:
        return float("nan")
    span_s = float(times_s.max() - times_s.min())
    return (len(times_s) - 1) / span_s if span_s > 0 else float("nan")


async def measure_point(
    base_url: str,
    rate_per_s: float,
    arrival: Arrival,
    args: argparse.Namespace,
    duration_s: float,
    emulator_pid: int | None,
    storage_root: Path,
) -> dict[str, Any]:
    client = OpenAIClient(f"{base_url}/v1", api="chat", model=BENCH_MODEL, max_connections=_MAX_CONNECTIONS)
    point = LoadPoint(
        concurrency=None,
        request_rate_per_s=rate_per_s,
        arrival=arrival,
        seed=args.seed,
        payload_bin="bench",
        prompts=bench_prompts(256),
        params=InferenceParameters(max_new_tokens=args.output_tokens, stream=True),
        timeout_s=REQUEST_TIMEOUT_S,
        warmup_s=args.warmup_s,
        duration_s=duration_s,
    )
    gc.collect()
    meter = MachineCpuMeter(emulator_pid)
    try:
        run = await run_point_like_the_runner(client, point, storage_root)
        cpu = meter.stop()
    finally:
        await client.aclose()
    measured = [a for a in run.attempts if a.is_measured]
    scheduled_s = np.array([a.scheduled_perf_s for a in measured])
    sent_s = np.array([a.result.send_perf_s for a in measured])
    lag_ms = np.array([a.schedule_lag_s for a in measured]) * 1000.0
    count = len(measured)
    schedule_rate = _rate(scheduled_s)
    sent_rate = _rate(sent_s)
    check = run.result.check
    figures: dict[str, Any] = {
        "rate_per_s": rate_per_s,
        "arrival": arrival,
        "measured": count,
        "errors": sum(1 for a in measured if a.result.status != "ok"),
        "schedule_rate_per_s": schedule_rate,
        "sent_rate_per_s": sent_rate,
        "sent_vs_asked": sent_rate / rate_per_s - 1.0,
        "sent_vs_schedule": sent_rate / schedule_rate - 1.0,
        # How far a Poisson schedule of this many arrivals strays from the asked rate by chance (95%).
        "poisson_band": 1.96 / math.sqrt(count) if arrival == "poisson" and count else 0.0,
        "lag_p50_ms": percentile(lag_ms, 50),
        "lag_p99_ms": percentile(lag_ms, 99),
        "lag_max_ms": float(lag_ms.max()) if count else float("nan"),
        "max_in_flight": run.result.max_in_flight,
        "client_cores": cpu.client_cores,
        "emulator_cores": cpu.emulator_cores,
        "other_cores": cpu.other_cores,
        "self_check_client_bound": check.client_bound,
        "self_check_reasons": list(check.reasons),
    }
    judged = figures["sent_vs_schedule"] if arrival == "poisson" else figures["sent_vs_asked"]
    figures["within_target"] = abs(judged) <= RATE_TOLERANCE
    return figures


def render(points: list[dict[str, Any]]) -> str:
    headers = [
        "arrival",
        "asked req/s",
        "measured",
        "errors",
        "schedule req/s",
        "sent req/s",
        "sent vs asked",
        "Poisson band",
        "sent vs schedule",
        f"within {RATE_TOLERANCE:.0%}",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
        "max in flight",
        "cores client/emulator/other",
        "client-bound",
    ]
    rows = [
        [
            p["arrival"],
            f"{p['rate_per_s']:g}",
            p["measured"],
            p["errors"],
            p["schedule_rate_per_s"],
            p["sent_rate_per_s"],
            f"{p['sent_vs_asked']:+.2%}",
            f"±{p['poisson_band']:.1%}" if p["arrival"] == "poisson" else "-",
            f"{p['sent_vs_schedule']:+.2%}",
            "yes" if p["within_target"] else "NO",
            p["lag_p50_ms"],
            p["lag_p99_ms"],
            p["lag_max_ms"],
            p["max_in_flight"],
            f"{p['client_cores']:.2f}/{p['emulator_cores']:.2f}/{p['other_cores']:.2f}",
            "yes" if p["self_check_client_bound"] else "no",
        ]
        for p in points
    ]
    return format_table(headers, rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.open_loop",
        description="Achieved rate and schedule lag of the runner's open loop against a fixed-timing "
        "emulator.",
    )
    parser.add_argument(
        "--rates",
        type=comma_separated(float),
        default=list(DEFAULT_RATES_PER_S),
        help="comma-separated request rates per second (default: 5,20,50,100,200,400)",
    )
    parser.add_argument(
        "--arrivals",
        type=lambda text: text.split(","),
        default=list(get_args(Arrival)),
        help="comma-separated arrival processes (default: poisson,constant)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=10.0, help="measured seconds per point (default: 10)"
    )
    parser.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per point (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Poisson schedule (default: 0)")
    add_emulator_options(parser, ttft_ms=20.0, itl_ms=5.0, output_tokens=16)
    add_run_options(parser, quick_help="smoke run in under a minute: 2 rates, 4 s each")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arrivals if a not in get_args(Arrival)]
    if unknown:
        parser.error(f"unknown arrival(s) {', '.join(unknown)}; known: {', '.join(get_args(Arrival))}")
    if args.quick:
        args.rates = [20.0, 200.0]
        args.duration_s = 4.0
        args.warmup_s = 0.5
    return args


async def sweep(
    base_url: str, emulator_pid: int | None, args: argparse.Namespace, storage_root: Path
) -> list[dict[str, Any]]:
    # A throwaway point first: the first Parquet write initialises pyarrow's writer, which would otherwise
    # land in the first point's figures.
    await measure_point(base_url, 20.0, "constant", args, 0.5, emulator_pid, storage_root)
    points = []
    for arrival in args.arrivals:
        for rate_per_s in args.rates:
            await asyncio.sleep(_PAUSE_BETWEEN_POINTS_S)
            await wait_for_quiet(emulator_pid, args.quiet_wait_s)
            figures = await measure_point(
                base_url, rate_per_s, arrival, args, args.duration_s, emulator_pid, storage_root
            )
            points.append(figures)
            print(
                f"  {arrival:<8} {rate_per_s:>6g} req/s asked: sent {figures['sent_rate_per_s']:.2f} req/s, "
                f"lag p99 {figures['lag_p99_ms']:.2f} ms, other cores {figures['other_cores']:.2f}",
                flush=True,
            )
    return points


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not hasattr(fmbench.loadgen, "OpenLoop"):
        print(
            "bench.open_loop: fmbench.loadgen has no open loop yet (expected OpenLoop and "
            "LoadPoint(request_rate_per_s=..., arrival='poisson'|'constant')); nothing measured.",
            file=sys.stderr,
        )
        return 2
    meta = run_metadata()
    settings = EmulatorSettings(
        model=BENCH_MODEL, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, output_tokens=args.output_tokens
    )
    answer_ms = args.ttft_ms + (args.output_tokens - 1) * args.itl_ms
    print(f"open loop: {describe_machine(meta)}")
    print(
        f"emulator: fixed timing, {answer_ms:g} ms per answer ({args.output_tokens} tokens), in a child "
        f"process; {args.warmup_s:g} s warm-up + {args.duration_s:g} s measured per point; "
        f"Poisson seed {args.seed}",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="fmbench-bench-") as storage,
        EmulatorProcess(settings) as emulator,
    ):
        points = asyncio.run(sweep(emulator.url, emulator.pid, args, Path(storage)))
    print()
    print(render(points))
    note = starvation_note(p["other_cores"] for p in points)
    if note:
        print(f"\n{note}")
    met = all(p["within_target"] for p in points)
    print(
        f"\nsent rate within {RATE_TOLERANCE:.0%} (Poisson: of the schedule's own rate; constant: of the "
        f"asked rate) at every point: {'yes' if met else 'NO'}"
    )
    print(
        "lag: send time minus scheduled arrival time of the measured requests; Poisson band: the 95% range "
        "of a Poisson schedule's rate around the asked rate for that many arrivals."
    )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "open_loop",
                "machine": meta,
                "settings": {
                    **settings.model_dump(),
                    "duration_s": args.duration_s,
                    "warmup_s": args.warmup_s,
                    "seed": args.seed,
                },
                "rate_tolerance": RATE_TOLERANCE,
                "points": points,
            },
        )
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
