"""Reading a suite: YAML or JSON -> a ``Suite`` checked whole, its dataset included, or every problem.

``fmbench.config`` holds the models and their field checks; the checks here need the whole suite and read
its dataset (``fmbench.payloads``), which itself reads the models, so they sit above both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fmbench.config import (
    Suite,
    SuiteProblem,
    SuiteValidationError,
    expand_targets,
    problems_from_validation_error,
)
from fmbench.instances import instance_accelerators, similar_instance_types
from fmbench.payloads import DatasetError, check_dataset


def instance_type_problem(target: Any) -> str | None:
    """Why a SageMaker target to deploy names an instance type that would fail at Deploy, or None.

    Only deployed targets are checked: elsewhere (an existing endpoint, an OpenAI server, the emulator)
    the instance type is a label for the price, and an unknown one only leaves the cost blank.
    """
    if target.platform != "sagemaker" or not target.needs_deploy or target.accelerators is not None:
        return None
    if target.instance_type is None or instance_accelerators(target.instance_type) is not None:
        return None
    known = ", ".join(similar_instance_types(target.instance_type))
    return (
        f"{target.instance_type!r} is not a SageMaker GPU, Inferentia or Trainium instance type FMBench "
        f"Flow knows (fmbench/instances.py; e.g. {known}); check the name, or for a newer type give "
        "accelerators: N (its GPU or device count; 0 for a CPU instance)"
    )


def semantic_problems(suite: Suite, base_dir: Path | None) -> list[SuiteProblem]:
    """Checks that need the whole suite (and the dataset) rather than one field."""
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
        instance_problem = instance_type_problem(each.target)
        if instance_problem:
            problems.append(SuiteProblem(path=each.field_path("instance_type"), reason=instance_problem))
    labels = [b.label for b in suite.workload.bins]
    if suite.report.headline_bin is not None and suite.report.headline_bin not in labels:
        problems.append(
            SuiteProblem(
                path="report.headline_bin",
                reason=f"{suite.report.headline_bin!r} is not a bin; bins: {', '.join(labels)}",
            )
        )
    try:
        for bin_problem in check_dataset(suite.workload, base_dir=base_dir):
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


def validate_suite_data(data: Any, base_dir: Path | None = None, source: str | None = None) -> Suite:
    """Validate a parsed suite (dict); raise ``SuiteValidationError`` listing every problem."""
    if not isinstance(data, dict):
        raise SuiteValidationError(
            [SuiteProblem(path="(suite)", reason=f"must be a mapping, got {type(data).__name__}")], source
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SuiteValidationError(problems_from_validation_error(exc), source) from None
    problems = semantic_problems(suite, base_dir)
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
