"""Stops from outside a local run: SIGTERM and SIGINT at random moments, SIGKILL, an emulator child that
dies, and unusable or reused output folders. Nothing measured is lost, nothing is left running."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from fmbench import cli
from fmbench.emulator.cli import PARENT_PID_ENV_VAR
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings

REPO = Path(__file__).resolve().parents[2]
# Fixed timing, so that a point's length is known: about 30 ms a request.
TIMING = {"ttft_ms": 20, "itl_ms": 3, "output_tokens": 4}
STOP_TIMEOUT_S = 120.0  # a generous bound for a busy 2-core machine; a healthy stop takes seconds
LOOP_RUNS = 20
LOOP_PARALLEL = 2  # the machine's 2 cores: a run's own start-up (imports) is most of its time
LOOP_REQUESTS = 16  # per load point: about half a second of load at concurrency 1


def suite_file(folder: Path, url: str | None, *, emulator_child: bool, requests: int = 30) -> Path:
    """A suite with an 'openai' target at the test's own emulator (its /health counts what it was sent)
    and, if asked, an 'emulator' target, whose child process the run starts and must stop."""
    targets: list[dict[str, Any]] = []
    if url is not None:
        targets.append({"name": "counted", "platform": "openai", "endpoint_url": f"{url}/v1", "model": "m"})
    if emulator_child:
        targets.append({"name": "child", "platform": "emulator", "emulator": TIMING})
    suite = {
        "name": "stops",
        "targets": targets,
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 4}},
        "load": {
            "concurrency": [1, 2],
            "requests_per_level": requests,
            "request_timeout_s": 10,
            "client_check": {
                "max_schedule_lag_p99_s": 60,
                "max_runner_cpu_fraction": 64,
                "max_loop_lag_p99_s": 60,
            },
        },
        "slo": {"p95_latency_s": 5},
        "execution": {"max_parallel_branches": 2},
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def requests_total(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        return int(json.load(response)["requests_total"])


def cancelled_rows(out: Path, prefix: str) -> int:
    """Records of requests the stop cancelled before their answer was read (the product writes them too)."""
    return sum(
        pq.read_table(part, columns=["error_message"]).column("error_message").to_pylist().count("cancelled")
        for part in out.glob(f"records/run_id=*/branch_id={prefix}*/*.parquet")
    )


def rows_per_branch(out: Path) -> dict[str, int]:
    """Rows of every Parquet part on disk, by branch folder name (each part read whole: readable)."""
    counts: dict[str, int] = {}
    for part in out.glob("records/run_id=*/branch_id=*/*.parquet"):
        branch = part.parent.name.removeprefix("branch_id=")
        counts[branch] = counts.get(branch, 0) + pq.read_table(part).num_rows
    return counts


def outcomes(out: Path) -> dict[str, dict[str, Any]]:
    return {
        path.parent.name.removeprefix("branch_id="): json.loads(path.read_text())
        for path in out.glob("outcomes/run_id=*/branch_id=*/outcome.json")
    }


def children_of(pid: int) -> list[psutil.Process]:
    """Emulator processes started by ``pid`` (found by the parent pid they were given, so that they are
    found even once reparented)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "fmbench.emulator" not in cmdline:
            continue
        try:
            if process.environ().get(PARENT_PID_ENV_VAR) == str(pid):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_for_no_children(pid: int, timeout_s: float = 30.0) -> list[psutil.Process]:
    deadline_s = time.monotonic() + timeout_s
    while (left := children_of(pid)) and time.monotonic() < deadline_s:
        time.sleep(0.1)
    return left


def start_run(suite: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fmbench.cli", "run", str(suite), "--out", str(out), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_load(process: subprocess.Popen[str], seen: list[str]) -> bool:
    """Read the run's lines until a branch has started (plain lines: stdout is not a terminal)."""
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if line.startswith("["):
            return True
    return False


@pytest.fixture(scope="module")
def emulators() -> Iterator[list[str]]:
    """One emulator per parallel run, so that each run's requests are counted on its own."""
    processes = [
        EmulatorProcess(EmulatorSettings(port=0, model="m", **TIMING), startup_timeout_s=STOP_TIMEOUT_S)
        for _ in range(LOOP_PARALLEL)
    ]
    try:
        yield [process.__enter__().url for process in processes]
    finally:
        for process in processes:
            process.__exit__(None, None, None)


# ------------------------------------------------------------------------------- SIGTERM and SIGINT


@dataclass
class Tried:
    signal_name: str
    returncode: int
    answered: int  # requests the counted emulator received from this run
    kept: int  # records on disk of the counted branch
    cancelled: int  # of which records of requests cancelled before their answer was read
    outcome_counts: list[tuple[int, int, int]]  # (attempted, written, rows on disk) per branch
    orphans: int
    stderr: str


def one_stopped_run(index: int, url: str, folder: Path, rng: random.Random) -> Tried:
    signum = signal.SIGTERM if index % 2 else signal.SIGINT
    during_start = index % 7 == 3  # a few stops land before any load, while the command starts
    delay_s = rng.uniform(0.0, 1.0) if during_start else rng.uniform(0.0, 1.5)
    # a child every 4th run: they are slow
    suite = suite_file(folder, url, emulator_child=index % 4 == 0, requests=LOOP_REQUESTS)
    out = folder / "out"
    before = requests_total(url)
    process = start_run(suite, out)
    seen: list[str] = []
    try:
        if not during_start:
            wait_for_load(process, seen)
        time.sleep(delay_s)  # the seeded random moment of the stop, not a wait for something to happen
        process.send_signal(signum)
        _rest, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    orphans = len(wait_for_no_children(process.pid))
    rows = rows_per_branch(out)
    counted = [branch for branch in rows if branch.startswith("counted")]
    saved = outcomes(out)
    return Tried(
        signal_name=signum.name,
        returncode=process.returncode,
        answered=requests_total(url) - before,
        kept=sum(rows[branch] for branch in counted),
        cancelled=cancelled_rows(out, "counted"),
        outcome_counts=[
            (o["requests_attempted"], o["records_written"], rows.get(branch, 0))
            for branch, o in saved.items()
        ],
        orphans=orphans,
        stderr=err,
    )


# 20 runs of a few seconds each on an idle 2-core machine; a machine shared by many test sessions needs
# far longer, which is no fault of the runs.
@pytest.mark.timeout(1500)
def test_sigterm_and_sigint_at_random_moments_keep_every_request_and_leave_no_child(
    tmp_path: Path, emulators: list[str]
) -> None:
    rng = random.Random(17)
    seeds = [rng.random() for _ in range(LOOP_RUNS)]

    free: queue.Queue[str] = queue.Queue()
    for url in emulators:
        free.put(url)

    def tried(index: int) -> Tried:
        folder = tmp_path / f"run{index:02d}"
        folder.mkdir()
        url = free.get()  # an emulator no other run is using now, so that its count is this run's
        try:
            return one_stopped_run(index, url, folder, random.Random(seeds[index]))
        finally:
            free.put(url)

    with ThreadPoolExecutor(LOOP_PARALLEL) as pool:
        results = list(pool.map(tried, range(LOOP_RUNS)))

    answered = sum(r.answered for r in results)
    kept = sum(r.kept for r in results)
    cancelled = sum(r.cancelled for r in results)
    mid_load = [r for r in results if r.returncode != 0 and r.kept]
    figures = (
        f"runs tried {len(results)}, stopped mid-load {len(mid_load)}, requests answered {answered}, "
        f"records kept {kept} (of which cancelled mid-request {cancelled}), "
        f"orphans {sum(r.orphans for r in results)}"
    )
    print(figures)
    print([(r.signal_name, r.returncode, r.answered, r.kept, r.cancelled) for r in results])
    for r in results:
        signum = signal.Signals[r.signal_name]
        if r.returncode == -signum:
            # the stop came while Python itself was starting, before fmbench's handlers: nothing had begun
            assert r.answered == 0 and r.outcome_counts == [], r
            continue
        assert "Traceback" not in r.stderr, r.stderr
        # stopped: 128 + the signal; or the run was over before the signal came
        assert r.returncode in (0, 128 + signum), (r.returncode, r.stderr)
        assert r.orphans == 0
        # Every request the endpoint received has its record, and every record but a cancelled request's
        # is of a request the endpoint received. A request the stop cancelled is recorded whether or not
        # it reached the endpoint (and whether or not the endpoint finished its answer: the client did not
        # read it, so it is not measured), so it may count on either side.
        assert r.kept - r.cancelled <= r.answered <= r.kept, (r, figures)
        for attempted, written, on_disk in r.outcome_counts:
            assert attempted == written == on_disk, (r.outcome_counts, r.stderr)
    assert len(mid_load) >= LOOP_RUNS // 2, figures  # most stops landed while load was sent
    assert answered > 0


def test_a_stopped_run_says_how_to_render_it_and_the_report_counts_what_is_on_disk(
    tmp_path: Path, emulators: list[str]
) -> None:
    out = tmp_path / "out"
    # the second point lasts about 4 s (250 requests, 2 at a time): the stop lands in it
    process = start_run(suite_file(tmp_path, emulators[0], emulator_child=False, requests=250), out)
    assert process.stdout is not None
    try:
        for line in process.stdout:  # the first point is over (and written) when its line is printed
            if "(load point 1/2)" in line:
                break
        assert rows_per_branch(out)
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    (run_dir,) = (out / "specs").iterdir()
    run_id = run_dir.name.removeprefix("run_id=")
    assert f"fmbench report {run_id} --root {out}" in rest
    (outcome,) = outcomes(out).values()
    assert outcome["reason"].startswith("stopped by SIGINT after 1 of 2 load point(s)")
    assert outcome["load_points_completed"] == 1
    assert cli.main(["report", run_id, "--root", str(out)]) == 0
    result = json.loads((out / "reports" / f"run_id={run_id}" / "result.json").read_text())
    (branch,) = result["branches"]
    assert branch["records_written"] == branch["requests_attempted"] == sum(rows_per_branch(out).values())
    points = branch["load_points"]
    assert [p["concurrency"] for p in points if p["completed"]] == [1]  # the finished point is complete
    assert json.loads((out / ".fmbench-report.json").read_text())["run_id"] == run_id


# ------------------------------------------------------------------------------------------- SIGKILL


def test_sigkill_leaves_no_emulator_and_the_report_counts_the_records_on_disk(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_run(suite_file(tmp_path, None, emulator_child=True, requests=200), out)
    seen: list[str] = []
    try:
        assert wait_for_load(process, seen)
        deadline_s = time.monotonic() + STOP_TIMEOUT_S
        while not children_of(process.pid) and time.monotonic() < deadline_s:
            time.sleep(0.05)
        children = children_of(process.pid)
        assert children, "the run started no emulator child"
        while not rows_per_branch(out) and time.monotonic() < deadline_s:
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert wait_for_no_children(process.pid) == []
    assert all(not child.is_running() or child.status() == psutil.STATUS_ZOMBIE for child in children)
    (outcome,) = outcomes(out).values()
    assert outcome["reason"].startswith("the local run did not finish")  # the placeholder stayed
    run_id = next((out / "specs").iterdir()).name.removeprefix("run_id=")
    assert cli.main(["report", run_id, "--root", str(out)]) == 0
    (branch,) = json.loads((out / "result.json").read_text())["branches"]
    on_disk = sum(rows_per_branch(out).values())
    assert on_disk > 0
    assert branch["records_written"] == branch["requests_attempted"] == on_disk
    assert branch["load_points_completed"] >= 1
    assert branch["status"] == "partial"


# ------------------------------------------------------------------------------ a child that dies


def test_an_emulator_child_that_dies_mid_run_fails_the_run_with_its_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start_run(suite_file(tmp_path, None, emulator_child=True, requests=400), out)
    seen: list[str] = []
    try:
        assert wait_for_load(process, seen)
        deadline_s = time.monotonic() + STOP_TIMEOUT_S
        while not (children := children_of(process.pid)) and time.monotonic() < deadline_s:
            time.sleep(0.05)
        while not rows_per_branch(out) and time.monotonic() < deadline_s:  # the first point is written
            time.sleep(0.05)
        (child,) = children
        child.kill()
        rest, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, rest + err
    assert "the emulator process exited with code -9 mid-run" in err
    (outcome,) = outcomes(out).values()
    assert outcome["status"] == "partial"
    assert outcome["reason"].startswith("the emulator process exited with code -9 mid-run")
    assert outcome["records_written"] == sum(rows_per_branch(out).values())


# ------------------------------------------------------------------------------------- --out folders


def test_an_unusable_out_folder_is_refused_before_any_load(
    tmp_path: Path, emulators: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = emulators[0]
    suite = suite_file(tmp_path, url, emulator_child=False, requests=2)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    cases = {"a file": a_file, "under a file": a_file / "sub"}
    if os.geteuid() != 0:  # root writes in any folder: this variant needs an ordinary user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases["not writable"] = locked
    before = requests_total(url)
    for name, out in cases.items():
        for argv in (
            ["run", str(suite), "--out", str(out)],
            ["load", "--url", f"{url}/v1", "--model", "m", "--requests", "2", "--out", str(out)],
        ):
            assert cli.main(argv) == 2, name
            err = capsys.readouterr().err
            assert err.startswith("--out: ") and "nothing was sent" in err, (name, err)
            assert "Traceback" not in err
    assert requests_total(url) == before
    assert a_file.read_text() == "mine\n"


def test_a_rerun_keeps_the_earlier_report_and_a_run_id_names_one_execution(
    tmp_path: Path, emulators: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    suite = suite_file(tmp_path, emulators[0], emulator_child=False, requests=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    assert cli.main(["run", str(suite), "--out", str(out), "--run-id", "first"]) == 0
    assert "is not a report fmbench wrote: left as it is" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "my own notes\n"
    assert cli.main(["run", str(suite), "--out", str(out), "--run-id", "second"]) == 0
    capsys.readouterr()
    for run_id in ("first", "second"):
        result = json.loads((out / "reports" / f"run_id={run_id}" / "result.json").read_text())
        assert result["run_id"] == run_id
        assert [b["records_written"] for b in result["branches"]] == [6]
    assert json.loads((out / "result.json").read_text())["run_id"] == "second"
    assert json.loads((out / ".fmbench-report.json").read_text())["run_id"] == "second"
    assert cli.main(["report", "first", "--root", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["run_id"] == "first"
    assert (out / "report.md").read_text() == "my own notes\n"

    before = requests_total(emulators[0])
    assert cli.main(["run", str(suite), "--out", str(out), "--run-id", "first"]) == 2
    err = capsys.readouterr().err
    assert "run id 'first' is already used" in err and "delete" in err
    assert requests_total(emulators[0]) == before
    result = json.loads((out / "reports" / "run_id=first" / "result.json").read_text())
    assert [b["records_written"] for b in result["branches"]] == [6]


def test_fmbench_load_stopped_by_sigterm_keeps_a_record_of_every_request_sent(
    tmp_path: Path, emulators: list[str]
) -> None:
    url = emulators[1]
    out = tmp_path / "out"
    before = requests_total(url)
    argv = ["load", "--url", f"{url}/v1", "--model", "m", "--concurrency", "1,2", "--requests", "400"]
    process = subprocess.Popen(
        [sys.executable, "-m", "fmbench.cli", *argv, "--max-tokens", "4", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline_s = time.monotonic() + STOP_TIMEOUT_S
        while requests_total(url) - before < 5 and time.monotonic() < deadline_s:  # load is being sent
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err
    assert "Traceback" not in err
    answered = requests_total(url) - before
    kept = sum(rows_per_branch(out).values())
    assert 5 <= answered <= kept
    assert kept - cancelled_rows(out, "") <= answered  # a record but a cancelled one is of a received request
    ((attempted, written),) = [
        (o["requests_attempted"], o["records_written"]) for o in outcomes(out).values()
    ]
    assert attempted == written == kept
    assert "fmbench report " in rest
