"""What keeps a valid suite from running in the cloud, found before anything is created or paid for."""

from __future__ import annotations

from typing import Any, Final

from fmbench.cloud.sagemaker import resolve_image_uri
from fmbench.config import BUILTIN_DATASET_PREFIX, Suite, SuiteProblem, SuiteValidationError
from fmbench.deployment import (
    ServingContainerError,
    parse_container,
    payload_format_problem,
    secret_reference_problems,
)
from fmbench.suite import validate_suite_data

# How a problem of the execution input names its source (``execution input: field.path: reason``).
EXECUTION_INPUT_SOURCE: Final = "execution input"


def _deploy_target_problems(target: Any, region: str, resolve_images: bool) -> list[tuple[str, str]]:
    """(field, reason) for each way a target to deploy would fail once its endpoint is being paid for."""
    problems = [
        (f"environment.{name}", reason)
        for name, reason in secret_reference_problems(target.environment).items()
    ]
    if target.container and not target.image_uri:
        try:
            parse_container(target.container)
        except ServingContainerError as exc:
            return [*problems, (exc.field, exc.reason)]
    format_problem = payload_format_problem(target)
    if format_problem:
        problems.append(("payload_format", format_problem))
    if resolve_images:
        try:
            resolve_image_uri(target, target.region or region)
        except ServingContainerError as exc:
            problems.append((exc.field, exc.reason))
    return problems


def cloud_suite_problems(suite: Suite, region: str, *, resolve_images: bool = True) -> list[SuiteProblem]:
    """What keeps a valid suite from running in the cloud, found before anything is created.

    Container names, payload formats and secret references are checked offline; ``resolve_images`` also
    resolves every image in its region (the SageMaker SDK's tables), catching a version that does not exist.
    """
    problems: list[SuiteProblem] = []
    if not suite.workload.dataset.source.startswith(BUILTIN_DATASET_PREFIX):
        problems.append(
            SuiteProblem(
                path="workload.dataset.source",
                reason="the cloud runner reads built-in datasets only (builtin:NAME); a local file is not "
                "uploaded with the suite",
            )
        )
    for expanded in suite.expanded():
        target = expanded.target
        if not target.needs_deploy:
            continue
        note = f" (target {target.name})" if expanded.from_matrix else ""
        problems += [
            SuiteProblem(path=expanded.field_path(field), reason=reason + note)
            for field, reason in _deploy_target_problems(target, region, resolve_images)
        ]
    return problems


def validate_cloud_suite(data: Any, region: str, *, resolve_images: bool = True) -> Suite:
    """The suite of an execution input, or ``SuiteValidationError`` listing every problem."""
    suite = validate_suite_data(data, base_dir=None, source=EXECUTION_INPUT_SOURCE)
    problems = cloud_suite_problems(suite, region, resolve_images=resolve_images)
    if problems:
        raise SuiteValidationError(problems, EXECUTION_INPUT_SOURCE)
    return suite
