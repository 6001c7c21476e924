"""The runner image, checked without Docker: its Dockerfile, build context, lock file, and a clean install.

The entry point is run from a clean virtual environment installed from the same lock file and the same
build context as the image, since no Docker engine is available to the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fmbench.plan import plan_suite
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "runner_image" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RUNNER_LOCK = REPO / "requirements-runner.lock"
LAMBDA_LOCK = REPO / "requirements-lambda.lock"
# What the SageMaker SDK brings for image URIs alone (about 250 MB): only the Plan function needs it.
PLAN_ONLY_PACKAGES = ("sagemaker", "sagemaker-core", "mlflow", "mlflow-skinny", "scipy", "scikit-learn")
PROJECT_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
INSTALL_TIMEOUT_S = 240


# ------------------------------------------------------------------------------------------ Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for name, args in self.instructions if name == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined and comments dropped, as Docker reads them."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage must be named: FROM {args}"
            stages.append(Stage(name=match.group(2), base=match.group(1)))
        elif not stages and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip()
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert [s.name for s in stages] == ["builder", "runner", "lambda"]  # the CDK app targets these names
    return global_args, {s.name: s for s in stages}


def test_every_base_image_is_pinned_to_an_exact_version(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    global_args, stages = dockerfile
    for stage in stages.values():
        image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], stage.base)
        if image in stages:
            continue  # built on an earlier stage of this file
        assert "latest" not in image, image
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), (
            f"{stage.name}: {image} is not pinned"
        )


def test_the_builder_installs_exactly_the_hashed_lock_file(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    builder = dockerfile[1]["builder"]
    assert "requirements-runner.lock /src/requirements-runner.lock" in builder.all("COPY")
    installs = [run for run in builder.all("RUN") if "-r /src/requirements-runner.lock" in run]
    assert len(installs) == 1
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0]
    assert any("pip install --no-deps /wheels/" in run for run in builder.all("RUN"))


def test_the_runner_stage_runs_the_entry_point_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    runner = dockerfile[1]["runner"]
    assert runner.last("USER") == "10001:10001"
    assert json.loads(runner.last("ENTRYPOINT") or "null") == ["python", "-m", "fmbench.runner_main"]
    assert runner.last("WORKDIR") == "/app"
    assert any("PYTHONUNBUFFERED=1" in env for env in runner.all("ENV"))
    assert "--from=builder /opt/venv /opt/venv" in runner.all("COPY")
    assert "--from=builder /src/lambdas /app/lambdas" in runner.all("COPY")


def test_the_lambda_stage_is_the_runner_behind_the_runtime_interface_client(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    stage = dockerfile[1]["lambda"]
    assert stage.base == "runner"  # the same wheels and code as the load runner, and its own on top
    assert "requirements-lambda.lock /tmp/requirements-lambda.lock" in stage.all("COPY")
    (install,) = [run for run in stage.all("RUN") if "-r /tmp/requirements-lambda.lock" in run]
    assert "--require-hashes" in install and "--no-deps" in install
    # Installed as root into the runner's environment, then back to the unprivileged user.
    users = [args for name, args in stage.instructions if name == "USER"]
    assert users == ["root", "10001:10001"]
    position = [args for name, args in stage.instructions if name in ("USER", "RUN")]
    assert position.index("root") < position.index(install) < position.index("10001:10001")
    assert json.loads(stage.last("ENTRYPOINT") or "null") == ["python", "-m", "awslambdaric"]
    assert any("PYTHONPATH=/app" in env for env in stage.all("ENV"))  # where lambdas/ is
    assert stage.last("CMD") is None  # the handler comes from CDK, per function


# ------------------------------------------------------------------------------------- build context


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's matcher reads it: ``**`` spans folders, ``*`` stays in one."""
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str], str]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((keep, _pattern_regex(pattern), pattern))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """The last rule that matches the path or one of its parent folders decides, as in Docker."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for keep, regex, _ in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not keep
    return excluded


def build_context_files() -> list[str]:
    rules = dockerignore_rules()
    kept_prefixes = [pattern for keep, _, pattern in rules if keep]
    files = []
    for folder, dirs, names in os.walk(REPO):
        relative = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [
            d
            for d in dirs
            if not is_excluded(prefix + d, rules) or any(k.startswith(prefix + d) for k in kept_prefixes)
        ]
        files += [prefix + name for name in names if not is_excluded(prefix + name, rules)]
    return sorted(files)


def test_the_build_context_holds_the_code_and_nothing_else() -> None:
    files = build_context_files()
    for needed in [
        "pyproject.toml",
        "README.md",
        "requirements-runner.lock",
        "requirements-lambda.lock",
        "fmbench/runner_main.py",
        "fmbench/data/synthetic-qa.jsonl",
        "report/sql/metrics.sql",
    ]:
        assert needed in files
    top_level = {f.split("/")[0] for f in files}
    assert top_level <= {
        "fmbench",
        "report",
        "lambdas",
        "pyproject.toml",
        "README.md",
        "requirements-runner.lock",
        "requirements-lambda.lock",
    }
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for excluded in [
        ".venv/bin/python",
        ".git/HEAD",
        "results/x",
        "cdk.out/x",
        "tests/unit/x.py",
        "node_modules/x",
    ]:
        assert is_excluded(excluded, dockerignore_rules()), excluded


# ------------------------------------------------------------------------------------------ lock files


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


@pytest.mark.parametrize("lock", [RUNNER_LOCK, LAMBDA_LOCK], ids=lambda p: p.name)
def test_each_image_lock_pins_what_the_tests_run_with_with_hashes(lock: Path) -> None:
    lock_pins = pins(lock)
    tested_pins = pins(DEV_LOCK)
    missing = sorted(set(pins(PROJECT_LOCK)) - set(lock_pins))
    assert not missing, f"runtime packages missing from {lock.name}: {missing}"
    stale = {
        name: (tested_pins[name], version)
        for name, version in lock_pins.items()
        if name in tested_pins and tested_pins[name] != version
    }
    assert not stale, f"{lock.name} is out of date (run `make runner-lock`): {stale}"
    text = lock.read_text()
    unhashed = [
        name
        for name in lock_pins
        if not re.search(rf"^{re.escape(name)}==\S+ \\\n\s+--hash=", text, re.M | re.I)
    ]
    assert not unhashed, f"pins without hashes: {unhashed}"


def test_the_runner_stage_does_not_ship_the_sagemaker_sdk_and_the_lambda_stage_adds_it() -> None:
    runner_pins = pins(RUNNER_LOCK)
    lambda_pins = pins(LAMBDA_LOCK)
    assert not [name for name in PLAN_ONLY_PACKAGES if name in runner_pins]
    assert "awslambdaric" not in runner_pins
    # The plan step resolves serving-container images with the SDK; awslambdaric runs the handlers.
    assert {"sagemaker", "awslambdaric"} <= set(lambda_pins)
    # The lambda stage adds packages to the runner's environment and changes none of its pins.
    assert {name: lambda_pins.get(name) for name in runner_pins} == runner_pins


# ------------------------------------------------------------------------------------ clean environment


def _uv() -> str:
    candidates = [Path(sys.executable).parent / "uv", shutil.which("uv")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("uv is needed to build the clean environment: `make test` installs it into .venv")


def _run(argv: list[Any], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    if completed.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {completed.returncode}); the packages come from PyPI "
            f"(or a warm uv cache).\n--- stderr ---\n{completed.stderr[-4000:]}"
        )
    return completed


def _spec(storage_root: Path, **load: Any) -> BranchSpec:
    data = {
        "name": "clean-venv",
        "targets": [
            {
                "name": "emu",
                "platform": "emulator",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4},
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 4}},
        "load": {"concurrency": [1, 2], "requests_per_level": 4, **load},
    }
    (spec,) = plan_suite(
        validate_suite_data(data), storage_root=str(storage_root), run_id="run-clean"
    ).branches
    return spec


def test_the_entry_point_runs_from_a_clean_environment_built_like_the_image(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for relative in build_context_files():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, context / relative)
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], "creating the virtual environment")
    uv = _uv()
    # The same two steps as the image's builder stage: the hashed lock without resolution, then the project.
    lock = context / "requirements-runner.lock"
    _run(
        [
            uv,
            "pip",
            "install",
            "--python",
            python,
            "--require-hashes",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-r",
            lock,
        ],
        "installing requirements-runner.lock",
        timeout=INSTALL_TIMEOUT_S,
    )
    _run(
        [uv, "pip", "install", "--python", python, "--no-deps", context],
        "installing the project",
        timeout=INSTALL_TIMEOUT_S,
    )

    workdir = tmp_path / "work"  # not the repository: nothing may be imported from the sources
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = _run([python, "-c", "import fmbench; print(fmbench.__file__)"], "importing", cwd=workdir, env=env)
    assert where.stdout.strip().startswith(str(venv))
    # The runner stage has no SageMaker SDK: the load runner never resolves an image.
    absent = subprocess.run(
        [python, "-c", "import sagemaker"], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    assert absent.returncode != 0 and "No module named 'sagemaker'" in absent.stderr

    _runs_a_branch(python, workdir, env, tmp_path)

    # The lambda stage: its own lock on top, then its handlers (lambdas/ copied to /app, PYTHONPATH=/app).
    _run(
        [
            uv,
            "pip",
            "install",
            "--python",
            python,
            "--require-hashes",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-r",
            context / "requirements-lambda.lock",
        ],
        "installing requirements-lambda.lock",
        timeout=INSTALL_TIMEOUT_S,
    )
    app = tmp_path / "app"
    if (context / "lambdas").is_dir():
        shutil.copytree(context / "lambdas", app / "lambdas")
    handlers = sorted(f"lambdas.{p.stem}" for p in (app / "lambdas").glob("*.py") if p.stem != "__init__")
    imports = "; ".join(
        [
            "import awslambdaric.bootstrap",
            "import sagemaker.core.image_uris",
            *(f"import {h}" for h in handlers),
        ]
    )
    _run(
        [python, "-c", imports],
        "importing the Lambda handlers",
        cwd=workdir,
        env={**env, "PYTHONPATH": str(app)},
    )


def _runs_a_branch(python: Path, workdir: Path, env: dict[str, str], tmp_path: Path) -> None:
    """The runner's entry point sweeps a branch and refuses a bad spec, from the clean environment."""
    results = tmp_path / "results"
    spec = _spec(results)
    ran = subprocess.run(
        [python, "-m", "fmbench.runner_main", "--spec-json", spec.model_dump_json(exclude_unset=True)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert events[-1]["kind"] == "runner_exit"
    outcome_file = results / "outcomes" / "run_id=run-clean" / f"branch_id={spec.branch_id}" / "outcome.json"
    outcome = json.loads(outcome_file.read_text())
    assert (outcome["status"], outcome["records_written"], outcome["load_points_completed"]) == (
        "succeeded",
        8,
        2,
    )
    parts = sorted((results / "records" / "run_id=run-clean" / f"branch_id={spec.branch_id}").iterdir())
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]

    bad = json.loads(spec.model_dump_json(exclude_unset=True))
    bad["storage_root"] = str(tmp_path / "bad-results")
    bad["load"]["requests_per_level"] = 0
    bad["target"]["emulator"]["ttft_ms"] = -1
    refused = subprocess.run(
        [python, "-m", "fmbench.runner_main", "--spec-json", json.dumps(bad)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    problem_lines = refused.stderr.splitlines()[1:]
    assert [line.split(": ", 1)[0] for line in problem_lines] == [
        "target.emulator.ttft_ms",
        "load.requests_per_level",
    ]
    assert not (tmp_path / "bad-results").exists()
