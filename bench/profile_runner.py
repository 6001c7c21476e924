"""Where the runner's CPU goes per request, beside the reference client (evidence only).

Against the zero-delay emulator, the runner and the reference client of bench.throughput take turns
(A B, B A, ...), each reporting its client CPU per request; then one runner run is profiled with cProfile
(main thread only, so the records written by the worker thread are not in it) and its own time is grouped
by where it is spent. This is how the block reader now in ``OpenAIClient._read_stream`` was found: the
earlier line-by-line reader spent most of its time in aiohttp's ``readline`` and ``json.loads``.

    python -m bench.profile_runner [--concurrency 64] [--duration-s 4]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import BENCH_MODEL, bench_prompts, chat_body, describe_machine, format_table, run_metadata
from bench.throughput import RunSettings, measure_reference, measure_runner
from fmbench.emulator import EmulatorProcess, EmulatorSettings
from fmbench.endpoints.openai import OpenAIClient

# Profile rows are grouped by the first of these fragments found in their file name.
_GROUPS = (
    ("aiohttp/streams.py", "aiohttp line reading (StreamReader)"),
    ("aiohttp/", "aiohttp request/response/connection"),
    ("json/", "json decoding"),
    ("fmbench/endpoints/openai.py", "OpenAIClient's own code"),
    ("fmbench/loadgen/", "load engine (LoadPointRun, ClosedLoop)"),
    ("asyncio/", "asyncio event loop"),
)


def _group_profile(stats: pstats.Stats) -> list[tuple[str, float]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime_s, _ct, _callers) in raw.items():
        group = next(
            (label for fragment, label in _GROUPS if fragment in filename), "other (builtins, C calls)"
        )
        by_group[group] += tottime_s
    return sorted(by_group.items(), key=lambda item: -item[1])


async def compare_and_profile(
    base_url: str, pid: int | None, args: argparse.Namespace, storage_root: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]], pstats.Stats, float]:
    settings = RunSettings(args.duration_s, 1, args.output_tokens)
    prompts = bench_prompts(4096)
    bodies = [chat_body(p.text, args.output_tokens) for p in prompts]
    cpu_ms: dict[str, list[float]] = defaultdict(list)
    rates: dict[str, list[float]] = defaultdict(list)
    names = ["runner", "reference"]
    await measure_runner(base_url, 4, -1, RunSettings(0.5, 1, args.output_tokens), prompts, pid, storage_root)
    for repetition in range(args.repetitions):
        for name in names if repetition % 2 == 0 else names[::-1]:
            gc.collect()
            await asyncio.sleep(0.3)
            if name == "reference":
                m = await measure_reference(base_url, args.concurrency, repetition, settings, bodies, pid)
            else:
                m = await measure_runner(
                    base_url, args.concurrency, repetition, settings, prompts, pid, storage_root, OpenAIClient
                )
            cpu_ms[name].append(m.client_cpu_ms_per_request)
            rates[name].append(m.request_rate_per_s)
            print(
                f"  rep {repetition} {name:<9} {m.request_rate_per_s:8.1f} req/s  "
                f"{m.client_cpu_ms_per_request:.3f} client CPU ms/req  other cores {m.cpu.other_cores:.2f}",
                flush=True,
            )
    profiler = cProfile.Profile()
    profiler.enable()
    profiled = await measure_runner(base_url, args.concurrency, 0, settings, prompts, pid, storage_root)
    profiler.disable()
    return cpu_ms, rates, pstats.Stats(profiler), profiled.requests_attempted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_runner", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--concurrency", type=int, default=64, help="default: 64")
    parser.add_argument("--duration-s", type=float, default=4.0, help="window per run (default: 4)")
    parser.add_argument(
        "--repetitions", type=int, default=4, help="runs per client, alternating (default: 4)"
    )
    parser.add_argument("--output-tokens", type=int, default=64, help="default: 64")
    parser.add_argument("--top", type=int, default=15, help="profile rows to print (default: 15)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1.5 s windows, two repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration_s = 1.5
        args.repetitions = 2
    meta = run_metadata()
    print(f"profile: {describe_machine(meta)}")
    print(
        f"concurrency {args.concurrency}, {args.output_tokens} tokens per answer, zero-delay emulator",
        flush=True,
    )
    settings = EmulatorSettings(model=BENCH_MODEL, ttft_ms=0, itl_ms=0, output_tokens=args.output_tokens)
    with (
        tempfile.TemporaryDirectory(prefix="fmbench-bench-") as storage,
        EmulatorProcess(settings) as emulator,
    ):
        cpu_ms, rates, stats, requests = asyncio.run(
            compare_and_profile(emulator.url, emulator.pid, args, Path(storage))
        )
    reference_cpu = statistics.median(cpu_ms["reference"])
    rows = [
        [
            name,
            statistics.median(cpu_ms[name]),
            min(cpu_ms[name]),
            f"{statistics.median(cpu_ms[name]) / reference_cpu:.2f}x",
            max(rates[name]),
        ]
        for name in ("runner", "reference")
    ]
    print()
    print(
        format_table(
            ["client", "CPU ms/req (median)", "CPU ms/req (min)", "vs reference", "best req/s"],
            rows,
        )
    )
    total_s = sum(seconds for _, seconds in _group_profile(stats))
    print(f"\nrunner under cProfile ({requests} requests; profiling inflates every figure, read the shares):")
    print(
        format_table(
            ["where", "own time s", "share", "us/request"],
            [
                [group, seconds, f"{seconds / total_s:.0%}", f"{seconds / requests * 1e6:.0f}"]
                for group, seconds in _group_profile(stats)
            ],
        )
    )
    print()
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
