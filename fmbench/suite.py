"""Reading a suite: YAML or JSON -> a ``Suite`` checked whole, its dataset included, or every problem.

``fmbench.config`` holds the models and their field checks; the checks here need the whole suite and read
its dataset (``fmbench.payloads``), which itself reads the models, so they sit above both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fmbench.config import (
    LoadPlan,
    Suite,
    SuiteProblem,
    SuiteValidationError,
    expand_targets,
    problems_from_validation_error,
)
from fmbench.payloads import DatasetError, check_dataset


def requests_per_bin(load: LoadPlan) -> int | None:
    """Requests a branch sends to each bin over its whole sweep, or None when a phase is timed (unknown).

    Each bin's deck serves every load point of the branch, so this is what ``repeat: error`` is held to.
    """
    if load.duration_s is not None or load.warmup_s is not None or load.cooldown_s is not None:
        return None
    per_point = load.warmup_requests + (load.requests_per_level or 0) + load.cooldown_requests
    return load.level_count * per_point


def semantic_problems(
    suite: Suite, base_dir: Path | None, hub_token: Callable[[Suite], str | None] | None = None
) -> list[SuiteProblem]:
    """Checks that need the whole suite (and the dataset) rather than one field.

    ``hub_token`` gives the Hugging Face token for the suite's dataset (the cloud reads it from Secrets
    Manager); it raises ``ValueError`` saying why it cannot, which becomes the problem of
    ``workload.dataset.hub_token``.
    """
    expanded, problems = expand_targets(suite)
    if not expanded and not problems:
        problems.append(
            SuiteProblem(path="targets", reason="the suite has no targets (give targets or matrix)")
        )
    seen: set[str] = set()
    for each in expanded:
        name = each.target.name
        if name in seen:
            problems.append(
                SuiteProblem(path=each.field_path("name"), reason=f"duplicate target name {name!r}")
            )
        seen.add(name)
    labels = [b.label for b in suite.workload.bins]
    if suite.report.headline_bin is not None and suite.report.headline_bin not in labels:
        problems.append(
            SuiteProblem(
                path="report.headline_bin",
                reason=f"{suite.report.headline_bin!r} is not a bin; bins: {', '.join(labels)}",
            )
        )
    token = None
    if hub_token is not None:
        try:
            token = hub_token(suite)
        except ValueError as exc:
            problems.append(SuiteProblem(path="workload.dataset.hub_token", reason=str(exc)))
            return problems
    try:
        requests = requests_per_bin(suite.load)
        found = check_dataset(suite.workload, base_dir=base_dir, requests_per_bin=requests, token=token)
        for bin_problem in found:
            problems.append(SuiteProblem(path=bin_problem[0], reason=bin_problem[1]))
    except DatasetError as exc:
        problems.append(SuiteProblem(path="workload.dataset.source", reason=str(exc)))
    return problems


def parse_suite_text(text: str, source: str = "<suite>") -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"not valid YAML/JSON at {where}")], source
        ) from None
    except RecursionError:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason="nested too deeply to be a suite")], source
        ) from None
    return data


def validate_suite_data(
    data: Any,
    base_dir: Path | None = None,
    source: str | None = None,
    *,
    hub_token: Callable[[Suite], str | None] | None = None,
) -> Suite:
    """Validate a parsed suite (dict); raise ``SuiteValidationError`` listing every problem."""
    if not isinstance(data, dict):
        raise SuiteValidationError(
            [SuiteProblem(path="(suite)", reason=f"must be a mapping, got {type(data).__name__}")], source
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteValidationError(problems_from_validation_error(exc), source) from None
    problems = semantic_problems(suite, base_dir, hub_token)
    if problems:
        raise SuiteValidationError(problems, source)
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read a YAML or JSON suite file and validate it completely."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"cannot read: {exc}")], str(file)
        ) from None
    data = parse_suite_text(text, str(file))
    return validate_suite_data(data, base_dir=file.resolve().parent, source=str(file))
