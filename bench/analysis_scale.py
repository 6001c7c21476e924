"""Analysis at scale: the time and memory of the metrics SQL and of ``fmbench report`` on N request records.

For each size N, the demo suite (``examples/local-demo.yaml``: three emulated targets, two payload bins,
concurrency 1, 4 and 16) is planned and saved as a local run would save it, and N records of its 18 load
points are written with the product's ``RecordWriter`` (parts of at most ``PART_ROWS`` rows, as the runner
flushes them). The records look like the demo's: a warm-up share, streamed responses of 16-32 tokens with
their inter-token gaps, response text of that length, prompts reused across load points, and errors of
several classes (429, 5xx, timeouts, cut streams). Writing them is not measured.

Then, each in its own child process so that its peak resident memory is its own (``os.wait4``):

- ``sql``: ``report.query.compute_metrics`` alone (the metrics SQL on DuckDB, read into a frame);
- ``report``: the whole ``fmbench report <run>`` command, as a user runs it.

    nice python -m bench.analysis_scale [--sizes 100000,1000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import comma_separated, format_table, run_metadata, write_json


def describe_load(meta: dict[str, Any]) -> str:
    load = ", ".join(f"{value:.2f}" for value in meta["load_average_at_start"])
    return f"{meta['date_utc']}  {meta['cores']} cores ({meta['cpu_model']})  load average at start {load}"


REPO = Path(__file__).resolve().parent.parent
DEMO_SUITE = REPO / "examples" / "local-demo.yaml"
RUN_ID = "scale"
PART_ROWS = 20_000
WARMUP_SHARE = 0.02
ERROR_SHARE = 0.02
# Error classes drawn for failed requests, with their weights: mostly throttling, some of the others.
ERROR_CLASSES = (
    ("http_429", 0.5, 429),
    ("http_5xx", 0.2, 503),
    ("timeout", 0.2, None),
    ("stream_cut", 0.1, None),
)
PROMPTS_PER_BIN = 500
WORDS = [
    "the",
    "of",
    "model",
    "answer",
    "token",
    "latency",
    "question",
    "context",
    "serving",
    "instance",
    "cost",
    "request",
]


def _plan(root: Path) -> Any:
    from fmbench.branch import BranchStorage
    from fmbench.local import save_plan
    from fmbench.plan import BranchOutcome, plan_suite
    from fmbench.suite import load_suite

    suite = load_suite(DEMO_SUITE)
    plan = plan_suite(suite, storage_root=str(root), run_id=RUN_ID, dataset_base_dir=str(DEMO_SUITE.parent))
    save_plan(plan, str(root))
    return plan, BranchStorage, BranchOutcome


def _text(rng: np.random.Generator, tokens: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), tokens))


def write_records(root: Path, total: int, seed: int = 7) -> int:
    """The demo's run with ``total`` records written under ``root`` (plan, outcomes, Parquet parts)."""
    from fmbench.records import RecordWriter, RequestRecord

    plan, branch_storage, outcome_model = _plan(root)
    rng = np.random.default_rng(seed)
    texts = [_text(rng, n) for n in range(33)]  # response text of each length, reused: writing stays fast
    points = [(spec, point) for spec in plan.branches for point in spec.planned_load_points()]
    per_point = np.full(len(points), total // len(points))
    per_point[: total % len(points)] += 1
    written = 0
    clock = 1.8e9
    for index, (spec, (concurrency, rate, payload_bin)) in enumerate(points):
        writer = RecordWriter(str(root), RUN_ID, spec.branch_id)
        count = int(per_point[index])
        long_bin = payload_bin != spec.workload.bins[0].label
        # An emulated instance: a faster profile answers sooner; more concurrency queues longer.
        speed = 1.0 + 0.5 * (index // (len(points) // len(plan.branches)))
        load = 1.0 + 0.15 * (concurrency or 1)
        ttft = rng.lognormal(np.log(0.08 * load * (3.0 if long_bin else 1.0) / speed), 0.35, count)
        tokens = rng.integers(16, 33, count)
        gap_mean = 0.02 * load / speed
        failed = rng.random(count) < ERROR_SHARE
        error_pick = rng.choice(len(ERROR_CLASSES), count, p=[w for _, w, _ in ERROR_CLASSES])
        warmup = np.arange(count) < max(1, int(count * WARMUP_SHARE))
        prompts = rng.integers(0, PROMPTS_PER_BIN, count)
        prompt_tokens = rng.integers(1000, 2000, count) if long_bin else rng.integers(60, 500, count)
        lag = rng.exponential(0.0005, count)
        start = 0
        while start < count:
            stop = min(count, start + PART_ROWS)
            records = []
            for i in range(start, stop):
                send = clock + i * (0.5 / (concurrency or 1))
                n = int(tokens[i])
                if failed[i]:
                    error_class, _, http_status = ERROR_CLASSES[int(error_pick[i])]
                    latency = float(ttft[i]) * (60.0 if error_class == "timeout" else 0.5)
                    records.append(
                        RequestRecord(
                            suite_name=plan.suite.name,
                            target_name=spec.target.name,
                            platform=spec.target.platform,
                            model=spec.target.model,
                            container=spec.target.container,
                            instance_type=spec.instance_type,
                            instance_count=1,
                            instance_price_per_hour_usd=spec.instance_price_per_hour_usd,
                            api="chat",
                            load_mode="closed",
                            concurrency=concurrency,
                            request_rate_per_s=rate,
                            payload_bin=payload_bin,
                            request_id=f"{spec.branch_id}-{index}-{i}",
                            prompt_id=f"{payload_bin}-{prompts[i]}",
                            phase="warmup" if warmup[i] else "measured",
                            scheduled_epoch_s=send,
                            send_epoch_s=send,
                            first_token_epoch_s=None,
                            end_epoch_s=send + latency,
                            ttft_s=None,
                            latency_s=latency,
                            schedule_lag_s=float(lag[i]),
                            status="error",
                            error_class=error_class,
                            http_status=http_status,
                            error_message=f"{error_class}: the emulated endpoint refused or broke off",
                            runner_cpu_fraction=0.2,
                            runner_cpu_count=2,
                            max_tokens_requested=32,
                        )
                    )
                    continue
                gaps = rng.gamma(4.0, gap_mean / 4.0, n - 1)
                first = float(ttft[i])
                latency = first + float(gaps.sum())
                records.append(
                    RequestRecord(
                        suite_name=plan.suite.name,
                        target_name=spec.target.name,
                        platform=spec.target.platform,
                        model=spec.target.model,
                        container=spec.target.container,
                        instance_type=spec.instance_type,
                        instance_count=1,
                        instance_price_per_hour_usd=spec.instance_price_per_hour_usd,
                        api="chat",
                        load_mode="closed",
                        concurrency=concurrency,
                        request_rate_per_s=rate,
                        payload_bin=payload_bin,
                        request_id=f"{spec.branch_id}-{index}-{i}",
                        prompt_id=f"{payload_bin}-{prompts[i]}",
                        phase="warmup" if warmup[i] else "measured",
                        scheduled_epoch_s=send,
                        send_epoch_s=send,
                        first_token_epoch_s=send + first,
                        end_epoch_s=send + latency,
                        ttft_s=first,
                        latency_s=latency,
                        schedule_lag_s=float(lag[i]),
                        itl_s=gaps.tolist(),
                        prompt_tokens=int(prompt_tokens[i]),
                        completion_tokens=n,
                        token_source="server",
                        prompt_tokens_local=int(prompt_tokens[i]),
                        completion_tokens_local=n,
                        response_text=texts[n],
                        runner_cpu_fraction=0.2,
                        runner_cpu_count=2,
                        max_tokens_requested=32,
                        time_to_first_answer_s=first,
                    )
                )
            writer.extend(records)
            writer.flush()
            written += len(records)
            start = stop
        clock += count * (0.5 / (concurrency or 1)) + 10.0
    for spec in plan.branches:
        branch_points = [p for p in points if p[0] is spec]
        rows = sum(int(per_point[points.index(p)]) for p in branch_points)
        storage = branch_storage(spec)
        storage.write_outcome(
            outcome_model(
                branch_id=spec.branch_id,
                status="succeeded",
                requests_attempted=rows,
                records_written=rows,
                load_points_planned=spec.load_point_count,
                load_points_completed=spec.load_point_count,
                started_epoch_s=1.8e9,
                ended_epoch_s=clock,
            )
        )
    return written


def _measured_child(argv: list[str]) -> tuple[float, float, float, str]:
    """Run ``argv`` as a child, reaped with wait4: (wall s, CPU s (user + system), peak resident MB, stdout).

    CPU seconds say what the work cost whatever else the (shared) machine ran; wall time is at least CPU
    seconds / cores, and more when other processes took the cores."""
    env = dict(os.environ, MPLBACKEND="Agg")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({process.returncode}): {err.read().decode()[-3000:]}"
            )
        cpu_s = usage.ru_utime + usage.ru_stime
        return elapsed, cpu_s, usage.ru_maxrss / 1024.0, out.read().decode()


def _sql_only(root: str) -> None:
    """Child of the ``sql`` measurement: the metrics query alone; prints its own time and the row count."""
    from report.query import compute_metrics

    started = time.perf_counter()
    frame = compute_metrics(root, RUN_ID)
    print(f"{time.perf_counter() - started:.3f} {len(frame)} {int(frame['requests'].sum())}")


def measure(size: int, keep: Path | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"fmbench-scale-{size}-", dir=keep))
    try:
        started = time.perf_counter()
        written = write_records(folder, size)
        generate_s = time.perf_counter() - started
        parquet_mb = sum(p.stat().st_size for p in folder.rglob("*.parquet")) / 1e6
        print(
            f"  {size:,} records written in {generate_s:.0f} s ({parquet_mb:.0f} MB of Parquet)", flush=True
        )
        sql_wall_s, sql_cpu_s, sql_peak_mb, out = _measured_child(
            [sys.executable, "-m", "bench.analysis_scale", "--sql-only", str(folder)]
        )
        sql_s, rows, requests = out.split()
        report_s, report_cpu_s, report_peak_mb, _ = _measured_child(
            [
                sys.executable,
                "-m",
                "fmbench.cli",
                "report",
                RUN_ID,
                "--root",
                str(folder),
                "--out",
                str(folder / "report"),
            ]
        )
        return {
            "size": size,
            "records_written": written,
            "parquet_mb": parquet_mb,
            "load_points": int(rows),
            "measured_requests": int(requests),
            "sql_s": float(sql_s),
            "sql_child_s": sql_wall_s,
            "sql_cpu_s": sql_cpu_s,
            "sql_peak_mb": sql_peak_mb,
            "report_s": report_s,
            "report_cpu_s": report_cpu_s,
            "report_peak_mb": report_peak_mb,
            "load_average_after": os.getloadavg()[0],
        }
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.analysis_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", type=comma_separated(int), default=[100_000, 1_000_000])
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--keep", type=Path, help="build the records under this folder and keep them")
    parser.add_argument("--sql-only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sql_only:
        _sql_only(args.sql_only)
        return 0
    meta = run_metadata()
    results = []
    for size in args.sizes:
        print(f"size {size:,}:", flush=True)
        results.append(measure(size, args.keep))
    headers = [
        "records",
        "Parquet MB",
        "SQL s",
        "SQL CPU s",
        "SQL peak MB",
        "report s",
        "report CPU s",
        "report peak MB",
        "load avg",
    ]
    rows = [
        [
            f"{r['size']:,}",
            r["parquet_mb"],
            r["sql_s"],
            r["sql_cpu_s"],
            r["sql_peak_mb"],
            r["report_s"],
            r["report_cpu_s"],
            r["report_peak_mb"],
            r["load_average_after"],
        ]
        for r in results
    ]
    print(describe_load(meta))
    print(format_table(headers, rows))
    if args.json:
        write_json(args.json, {"meta": meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
