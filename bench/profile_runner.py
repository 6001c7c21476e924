"""Where the runner's CPU goes per request, and what a cheaper stream reader would save (evidence only).

Against the zero-delay emulator, the runner, a candidate hot path and the reference client of
bench.throughput take turns (A B C, C B A, ...), each reporting its client CPU per request; then one
runner run is profiled with cProfile (main thread only, so the records written by the worker thread are
not in it) and its own time is grouped by where it is spent.

The candidate (``BlockReadClient``) changes only ``OpenAIClient._read_stream``: it takes whatever bytes
have arrived (``readany``) and splits them into lines itself, instead of one ``readline`` per SSE line
(half of which are blank separators), and it decodes each event with ``JSONDecoder.raw_decode`` on the
decoded text instead of ``json.loads`` on bytes (which sniffs the encoding and wraps the same call). Every
content chunk that arrived in one read gets that read's time, which is when it arrived.

    python -m bench.profile_runner [--concurrency 64] [--duration-s 4]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp

from bench.common import BENCH_MODEL, bench_prompts, chat_body, describe_machine, format_table, run_metadata
from bench.throughput import RunSettings, measure_reference, measure_runner
from fmbench.emulator import EmulatorProcess, EmulatorSettings
from fmbench.endpoints.base import MALFORMED_RESPONSE, STREAM_CUT, InvocationResult
from fmbench.endpoints.openai import OpenAIClient, _error_text, _take_usage

_MAX_SSE_LINE_BYTES = 1 << 20
_DECODER = json.JSONDecoder()
_DONE_LINES = (b"data: [DONE]", b"data:[DONE]")
# Profile rows are grouped by the first of these fragments found in their file name.
_GROUPS = (
    ("aiohttp/streams.py", "aiohttp line reading (StreamReader)"),
    ("aiohttp/", "aiohttp request/response/connection"),
    ("json/", "json decoding"),
    ("fmbench/endpoints/openai.py", "OpenAIClient's own code"),
    ("fmbench/loadgen/", "load engine (LoadPointRun, ClosedLoop)"),
    ("asyncio/", "asyncio event loop"),
)


class BlockReadClient(OpenAIClient):
    """A candidate ``_read_stream``: one read per arrival, lines split in bulk, a lighter JSON decode."""

    async def _read_stream(
        self, response: aiohttp.ClientResponse, result: InvocationResult, parts: list[str]
    ) -> None:
        content = response.content
        chunk_perf_s = result.chunk_perf_s
        is_chat = self._is_chat
        raw_decode = _DECODER.raw_decode
        data_lines = 0
        finished = False
        pending = b""
        while True:
            block = await content.readany()
            now_s = perf_counter()
            if not block:
                break
            lines = (pending + block if pending else block).split(b"\n")
            pending = lines.pop()  # an incomplete last line waits for the rest of its bytes
            if len(pending) > _MAX_SSE_LINE_BYTES:
                result.fail(MALFORMED_RESPONSE, f"an SSE line longer than {_MAX_SSE_LINE_BYTES} bytes")
                return
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                if line.startswith(_DONE_LINES):
                    result.end_perf_s = now_s
                    await self._drain(content)
                    return
                data_lines += 1
                text = line.decode()
                event = raw_decode(text, 6 if text.startswith(" ", 5) else 5)[0]
                choices = event.get("choices")
                if choices:
                    choice = choices[0]
                    if is_chat:
                        delta = choice.get("delta")
                        piece = delta.get("content") if delta else None
                    else:
                        piece = choice.get("text")
                    if piece:
                        chunk_perf_s.append(now_s)
                        parts.append(piece)
                    if choice.get("finish_reason"):
                        finished = True
                usage = event.get("usage")
                if usage:
                    _take_usage(result, usage)
                elif "error" in event:
                    result.fail(STREAM_CUT, self._redact(f"error event in stream: {_error_text(event)}"))
                    return
                if finished:
                    result.end_perf_s = now_s
        if finished:
            return
        if data_lines == 0:
            result.fail(MALFORMED_RESPONSE, "no SSE data lines in the response")
        else:
            result.fail(STREAM_CUT, f"stream ended without [DONE] or finish_reason after {data_lines} events")


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
    names = ["runner", "candidate", "reference"]
    await measure_runner(base_url, 4, -1, RunSettings(0.5, 1, args.output_tokens), prompts, pid, storage_root)
    for repetition in range(args.repetitions):
        for name in names if repetition % 2 == 0 else names[::-1]:
            gc.collect()
            await asyncio.sleep(0.3)
            if name == "reference":
                m = await measure_reference(base_url, args.concurrency, repetition, settings, bodies, pid)
            else:
                client_class = BlockReadClient if name == "candidate" else OpenAIClient
                m = await measure_runner(
                    base_url, args.concurrency, repetition, settings, prompts, pid, storage_root, client_class
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
        for name in ("runner", "candidate", "reference")
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
