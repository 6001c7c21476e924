"""`fmbench validate`: every problem with its path and exit 2; a valid suite prints its branches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fmbench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fmbench.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_valid_suite_prints_the_planned_branches() -> None:
    result = fmbench("validate", "examples/local-demo.yaml")
    assert result.returncode == 0, result.stderr
    for name in ("g5-xlarge-", "g5-2xlarge-", "g5-12xlarge-"):
        assert name in result.stdout
    assert "ml.g5.12xlarge x1" in result.stdout
    assert "7.090" in result.stdout  # the emulated instance's hourly price


def test_validate_counts_the_quality_pass_requests_beside_the_load(tmp_path: Path) -> None:
    demo = (REPO / "examples" / "local-demo.yaml").read_text(encoding="utf-8")
    suite = tmp_path / "quality.yaml"
    suite.write_text(
        demo.replace("  max_answers_per_bin: 40\n", "  max_answers_per_bin: 40\n  quality_pass: true\n")
    )
    result = fmbench("validate", str(suite))
    assert result.returncode == 0, result.stderr
    # 3 levels x 2 bins x (2 warm-up + 16) requests, then at most 40 judged prompts in each of the 2 bins
    assert result.stdout.count("108 + up to 80 quality") == 3, result.stdout
    plain = fmbench("validate", "examples/local-demo.yaml")
    assert "quality" not in plain.stdout


def test_invalid_suite_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        """
name: demo
targets:
  - {name: a, platform: emulator, emulator: {profile: g9-huge}}
  - {name: b, platform: openai, endpoint_url: "ftp://x"}
workload:
  bins: [{min_tokens: 10, max_tokens: 5}]
  colour: blue
load: {concurrency: [1], requests_per_level: 0}
""",
        encoding="utf-8",
    )
    result = fmbench("validate", str(suite))
    assert result.returncode == 2
    assert "5 problem(s)" in result.stderr
    for line in (
        "targets.0.emulator.profile: unknown profile 'g9-huge'",
        "targets.1.endpoint_url: must be an http:// or https:// URL",
        "workload.bins.0: min_tokens must be below max_tokens",
        "workload.colour: unknown field",
        "load.requests_per_level: Input should be greater than or equal to 1",
    ):
        assert line in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_an_invalid_suite_before_creating_anything(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: x\nworkload: {bins: []}\nload: {concurrency: [1], duration_s: 1}\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    result = fmbench("run", str(suite), "--out", str(out))
    assert result.returncode == 2
    assert "workload.bins: List should have at least 1 item" in result.stderr
    assert not out.exists()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = fmbench("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "(file): cannot read" in result.stderr


def test_a_duplicate_key_is_refused_with_its_lines(tmp_path: Path) -> None:
    suite = tmp_path / "twice.yaml"
    suite.write_text(
        "name: demo\ntargets: [{name: a, platform: emulator}]\n"
        "workload: {bins: [{min_tokens: 1, max_tokens: 9}]}\n"
        "load: {concurrency: [1], requests_per_level: 4}\n"
        "load: {concurrency: [1], requests_per_level: 100000}\n",
        encoding="utf-8",
    )
    for command in ("validate", "run"):
        result = fmbench(command, str(suite), *(["--out", str(tmp_path / "out")] if command == "run" else []))
        assert result.returncode == 2, result.stderr
        output = result.stdout + result.stderr
        assert "load: duplicate key at line 5 (first at line 4)" in output
    assert not (tmp_path / "out").exists()


def test_an_unset_api_key_variable_is_refused_by_validate_and_run(tmp_path: Path) -> None:
    suite = tmp_path / "keyed.yaml"
    suite.write_text(
        "name: demo\ntargets:\n  - {name: a, platform: openai, endpoint_url: 'http://127.0.0.1:9/v1', "
        "api_key_env: FMBENCH_CLI_TEST_UNSET_KEY}\nworkload: {bins: [{min_tokens: 1, max_tokens: 5000}]}\n"
        "load: {concurrency: [1], requests_per_level: 4}\n",
        encoding="utf-8",
    )
    for command in ("validate", "run"):
        result = fmbench(command, str(suite), *(["--out", str(tmp_path / "out")] if command == "run" else []))
        assert result.returncode == 2, result.stderr
        output = result.stdout + result.stderr
        assert "targets.0.api_key_env: environment variable FMBENCH_CLI_TEST_UNSET_KEY is not set" in output
    assert not (tmp_path / "out").exists()
