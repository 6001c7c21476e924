"""The load runner's entry point: spec sources, S3 through a moto server, exit codes, SIGTERM mid-sweep."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fmbench import branch, runner_main
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

REPO = Path(__file__).resolve().parents[2]
FAST = {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4}
REQUESTS = 3
REGION = "us-east-1"


def make_spec(storage_root: str, target: dict[str, Any], run_id: str = "run-1", **load: Any) -> BranchSpec:
    data = {
        "name": "runner-main",
        "targets": [target],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 4},
            "max_prompts_per_bin": 3,
        },
        "load": {"concurrency": [1, 2], "requests_per_level": REQUESTS, "request_timeout_s": 10, **load},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=storage_root, run_id=run_id).branches
    return spec


def spec_json(spec: BranchSpec) -> str:
    # As the plan step writes specs (fmbench.cloud.steps): only the fields that were given, because the
    # suite's checks refuse an open-loop option that is present in a closed loop, even at its default.
    return spec.model_dump_json(exclude_unset=True)


def emulator_target() -> dict[str, Any]:
    return {"name": "emu", "platform": "emulator", "emulator": FAST}


def openai_target(url: str) -> dict[str, Any]:
    return {"name": "ext", "platform": "openai", "endpoint_url": url, "model": "served-model"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stdout line must be a JSON object: that is the logging contract."""
    return [json.loads(line) for line in text.splitlines()]


def outcome_path(root: Path, spec: BranchSpec) -> Path:
    return root / "outcomes" / f"run_id={spec.run_id}" / f"branch_id={spec.branch_id}" / "outcome.json"


def records_dir(root: Path, spec: BranchSpec) -> Path:
    return root / "records" / f"run_id={spec.run_id}" / f"branch_id={spec.branch_id}"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """One emulator for the tests that use an 'openai' target, so that they do not each start one."""
    with EmulatorProcess(EmulatorSettings(port=0, model="served-model", **FAST)) as emulator:
        yield f"{emulator.url}/v1"


class _CountingHandler(BaseHTTPRequestHandler):
    def _count(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST = _count

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def counting_server() -> Iterator[ThreadingHTTPServer]:
    """An endpoint that counts every request it gets: proof that a refused spec sent nothing."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of the moto server, with the environment pointing the runner at it too."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)


def new_bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


# ------------------------------------------------------------------------------------- spec sources


@pytest.mark.parametrize(
    "source", ["--spec-json", "FMBENCH_BRANCH_SPEC", "--spec-uri", "FMBENCH_BRANCH_SPEC_URI"]
)
def test_the_spec_can_come_inline_or_from_a_file_by_argument_or_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], emulator_url: str, source: str
) -> None:
    root = tmp_path / "results"
    spec = make_spec(str(root), openai_target(emulator_url))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec_json(spec))
    value = spec_json(spec) if source in ("--spec-json", "FMBENCH_BRANCH_SPEC") else str(spec_file)
    argv, environ = ([source, value], {}) if source.startswith("--") else ([], {source: value})

    assert runner_main.main(argv, environ=environ) == 0

    outcome = json.loads(outcome_path(root, spec).read_text())
    rows = REQUESTS * 2
    assert outcome == {
        "branch_id": spec.branch_id,
        "status": "succeeded",
        "reason": None,
        "requests_attempted": rows,
        "records_written": rows,
        "load_points_planned": 2,
        "load_points_completed": 2,
        "started_epoch_s": outcome["started_epoch_s"],
        "ended_epoch_s": outcome["ended_epoch_s"],
    }
    assert sorted(p.name for p in records_dir(root, spec).iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    events = json_lines(capsys.readouterr().out)
    assert events[0]["kind"] == "runner_started"
    assert events[0]["spec_source"] == source
    assert events[-1] == {**events[-1], "kind": "runner_exit", "exit_code": 0}


def test_an_emulator_target_gets_its_own_emulator_and_every_log_line_is_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = make_spec(str(tmp_path), emulator_target())
    assert runner_main.main(["--spec-json", spec_json(spec)], environ={}) == 0

    table = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == REQUESTS * 2
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert set(table.column("branch_id").to_pylist()) == {spec.branch_id}
    events = json_lines(capsys.readouterr().out)
    for event in events:
        assert {"timestamp", "level", "kind"} <= set(event), event
        assert event["timestamp"].endswith("Z")
    branch_events = [e for e in events if e["kind"] != "runner_exit"]
    assert {(e["run_id"], e["branch_id"]) for e in branch_events} == {("run-1", spec.branch_id)}
    finished = [e for e in events if e["kind"] == "load_point_finished"]
    assert [(e["load_point_index"], e["concurrency"], e["completed"], e["errors"]) for e in finished] == [
        (0, 1, REQUESTS, 0),
        (1, 2, REQUESTS, 0),
    ]
    kinds = [e["kind"] for e in events if e["kind"] != "log"]
    assert kinds[:3] == ["runner_started", "emulator_started", "branch_started"]
    assert kinds[-3:] == ["branch_finished", "outcome_written", "runner_exit"]
    assert "request_done" not in kinds  # one line per request would flood CloudWatch


# --------------------------------------------------------------------------------------------- S3


def test_spec_records_and_outcome_in_s3(
    s3: Any, emulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = new_bucket(s3, "fmbench-results")
    spec = make_spec(f"s3://{bucket}/bench", openai_target(emulator_url), run_id="run-s3")
    s3.put_object(Bucket=bucket, Key="specs/branch.json", Body=spec_json(spec).encode())

    exit_code = runner_main.main(
        [], environ={**os.environ, "FMBENCH_BRANCH_SPEC_URI": f"s3://{bucket}/specs/branch.json"}
    )

    assert exit_code == 0, capsys.readouterr()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    records = f"bench/records/run_id=run-s3/branch_id={spec.branch_id}"
    outcome_key = f"bench/outcomes/run_id=run-s3/branch_id={spec.branch_id}/outcome.json"
    # the emulator's /metrics, scraped during each load point (docs/metrics.md, "Server-side metrics")
    server = f"bench/server_metrics/run_id=run-s3/branch_id={spec.branch_id}"
    # Exactly these: no empty "directory" objects, which Athena would try to read as data.
    assert keys == [
        outcome_key,
        f"{records}/part-00000.parquet",
        f"{records}/part-00001.parquet",
        f"{server}/part-00000.parquet",
        f"{server}/part-00001.parquet",
        "specs/branch.json",
    ]
    rows = 0
    for key in keys[1:3]:
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert table.column("concurrency").to_pylist() == [1 if key.endswith("0.parquet") else 2] * REQUESTS
        rows += table.num_rows
    response = s3.get_object(Bucket=bucket, Key=outcome_key)
    assert response["ContentType"] == "application/json"
    outcome = json.loads(response["Body"].read())
    assert (outcome["status"], outcome["records_written"], rows) == ("succeeded", 2 * REQUESTS, 2 * REQUESTS)


def test_a_missing_spec_object_is_an_invalid_spec(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = new_bucket(s3, "fmbench-no-spec")
    assert runner_main.main(["--spec-uri", f"s3://{bucket}/specs/none.json"], environ={}) == 2
    assert f"--spec-uri: cannot read s3://{bucket}/specs/none.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ invalid specs


def _invalid_spec(storage_root: str, endpoint_url: str) -> dict[str, Any]:
    data = json.loads(spec_json(make_spec(storage_root, openai_target(endpoint_url))))
    data["run_id"] = "not a valid id!"
    data["target"]["api"] = "telepathy"
    data["load"]["concurrency"] = [0]
    data["surprise"] = True
    return data


def test_an_invalid_spec_lists_every_problem_and_sends_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], counting_server: ThreadingHTTPServer
) -> None:
    root = tmp_path / "results"
    port = counting_server.server_address[1]
    data = _invalid_spec(str(root), f"http://127.0.0.1:{port}/v1")

    assert runner_main.main(["--spec-json", json.dumps(data)], environ={}) == 2

    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "fmbench-runner: invalid branch spec from --spec-json: 4 problem(s)"
    assert sorted(line.split(": ", 1)[0] for line in lines[1:]) == [
        "load.concurrency",
        "run_id",
        "surprise",
        "target.api",
    ]
    assert "target.api: Input should be 'chat' or 'completions'" in lines
    assert "load.concurrency: levels must be between 1 and 4096" in lines
    (event,) = json_lines(captured.out)
    assert (event["kind"], len(event["problems"])) == ("spec_invalid", 4)
    assert not root.exists()
    assert counting_server.requests == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--spec-json", "{not json"], {}, "(spec): not valid JSON at line 1, column 2"),
        (["--spec-json", "[]"], {}, "(spec): must be a JSON object, got list"),
        ([], {}, "FMBENCH_BRANCH_SPEC: no branch spec: set FMBENCH_BRANCH_SPEC"),
        (
            [],
            {"FMBENCH_BRANCH_SPEC": "{}", "FMBENCH_BRANCH_SPEC_URI": "/tmp/x.json"},
            "FMBENCH_BRANCH_SPEC, FMBENCH_BRANCH_SPEC_URI: give one spec source, not both",
        ),
        (["--spec-uri", "/nonexistent/spec.json"], {}, "--spec-uri: cannot read /nonexistent/spec.json"),
        (
            ["--spec-json", "{}"],
            {"FMBENCH_PROGRESS_INTERVAL_S": "-1"},
            "FMBENCH_PROGRESS_INTERVAL_S: Input should be greater than 0",
        ),
    ],
)
def test_unusable_spec_sources_exit_2_with_the_problem(
    argv: list[str], environ: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner_main.main(argv, environ=environ) == 2
    assert expected in capsys.readouterr().err


def test_problems_beyond_the_schema_are_found_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], counting_server: ThreadingHTTPServer
) -> None:
    port = counting_server.server_address[1]
    data = json.loads(spec_json(make_spec(str(tmp_path), openai_target(f"http://127.0.0.1:{port}/v1"))))
    data["storage_root"] = "gs://elsewhere/results"
    data["workload"]["bins"] = [{"min_tokens": 90000, "max_tokens": 90001}]

    assert runner_main.main(["--spec-json", json.dumps(data)], environ={}) == 2

    err = capsys.readouterr().err
    assert "storage_root: unsupported scheme gs://; give a local path or s3://bucket/prefix" in err
    assert "workload.bins.0: no prompt of builtin:synthetic-qa has [90000, 90001) tokens" in err
    assert counting_server.requests == 0  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------- storage failures


@pytest.mark.parametrize("where", ["local", "s3"])
def test_unwritable_storage_exits_3_before_any_request(
    where: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    counting_server: ThreadingHTTPServer,
    request: pytest.FixtureRequest,
) -> None:
    if where == "local":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        root = str(blocker / "results")
    else:
        request.getfixturevalue("s3")
        root = "s3://fmbench-no-such-bucket/results"
    port = counting_server.server_address[1]
    spec = make_spec(root, openai_target(f"http://127.0.0.1:{port}/v1"))

    assert runner_main.main(["--spec-json", spec_json(spec)], environ=dict(os.environ)) == 3

    err = capsys.readouterr().err
    assert err.startswith(f"fmbench-runner: storage error: cannot write {root}/")
    assert counting_server.requests == 0  # type: ignore[attr-defined]


def test_a_crash_exits_1_and_still_leaves_a_failed_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator_url: str
) -> None:
    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(branch, "run_branch", crash)
    spec = make_spec(str(tmp_path), openai_target(emulator_url))

    assert runner_main.main(["--spec-json", spec_json(spec)], environ={}) == 1

    outcome = json.loads(outcome_path(tmp_path, spec).read_text())
    assert (outcome["status"], outcome["reason"]) == ("failed", "runner crashed: RuntimeError: boom")
    events = json_lines(capsys.readouterr().out)
    crash_logs = [e for e in events if e["kind"] == "log" and e["level"] == "error"]
    assert "RuntimeError: boom" in crash_logs[0]["exception"]


# ------------------------------------------------------------------------------------------- SIGTERM


def test_sigterm_mid_sweep_keeps_finished_load_points_and_writes_a_stopped_outcome(tmp_path: Path) -> None:
    # Every load point runs 2 s; the signal comes as the second one starts, so the first has finished.
    spec = make_spec(
        str(tmp_path), emulator_target(), concurrency=[1, 2, 3], requests_per_level=None, duration_s=2.0
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "fmbench.runner_main", "--spec-json", spec_json(spec)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        for line in process.stdout:
            seen.append(json.loads(line))
            if seen[-1]["kind"] == "load_point_started" and seen[-1]["load_point_index"] == 1:
                break
        signalled_s = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stop_s = time.monotonic() - signalled_s
    events = seen + json_lines(rest)

    assert process.returncode == 0, err
    assert stop_s < 5
    outcome = json.loads(outcome_path(tmp_path, spec).read_text())
    assert outcome["status"] == "partial"
    assert outcome["reason"].startswith("stopped by SIGTERM after 1 of 3 load point(s)")
    assert outcome["load_points_completed"] == 1
    table = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table()
    assert outcome["records_written"] == outcome["requests_attempted"] == table.num_rows
    rows = table.to_pylist()
    first = [r for r in rows if r["concurrency"] == 1]
    assert first and {r["status"] for r in first} == {"ok"}
    interrupted = [r for r in rows if r["concurrency"] == 2]
    assert [r["error_message"] for r in interrupted if r["status"] == "error"] == ["cancelled"] * 2
    assert not [r for r in rows if r["concurrency"] == 3]
    kinds = [e["kind"] for e in events]
    assert kinds.index("stop_requested") < kinds.index("outcome_written") < kinds.index("runner_exit")
    (emulator,) = [e for e in events if e["kind"] == "emulator_started"]
    with pytest.raises(ProcessLookupError):
        os.kill(emulator["pid"], 0)  # the emulator child did not outlive the runner


def test_an_unset_api_key_variable_refuses_the_spec_before_any_request(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    counting_server: ThreadingHTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FMBENCH_TEST_UNSET_KEY", raising=False)
    root = tmp_path / "results"
    target = {**openai_target(f"http://127.0.0.1:{counting_server.server_address[1]}/v1")}
    target["api_key_env"] = "FMBENCH_TEST_UNSET_KEY"
    spec = make_spec(str(root), target)

    assert runner_main.main(["--spec-json", spec_json(spec)], environ={}) == 2

    lines = capsys.readouterr().err.splitlines()
    assert "target.api_key_env: environment variable FMBENCH_TEST_UNSET_KEY is not set" in lines
    assert not root.exists()
    assert counting_server.requests == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, "(spec): nested too deeply to be a spec"),
        (b'{"run_id": "caf\xe9"}', "(spec): not UTF-8: byte 0xe9 at offset 15"),
    ],
    ids=["nested-5000-deep", "latin-1"],
)
def test_a_spec_file_nested_too_deep_or_not_utf8_is_an_invalid_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(content)
    assert runner_main.main(["--spec-uri", str(spec_file)], environ={}) == 2
    assert expected in capsys.readouterr().err.splitlines()
