"""Reading a suite: YAML or JSON -> a ``Suite`` checked whole, its dataset included, or every problem.

``fmbench.config`` holds the models and their field checks; the checks here need the whole suite and read
its dataset (``fmbench.payloads``), which itself reads the models, so they sit above both.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fmbench.config import (
    FIXED_OUTPUT_PLATFORMS,
    Ec2Target,
    LoadPlan,
    Suite,
    SuiteProblem,
    SuiteValidationError,
    expand_targets,
    problems_from_validation_error,
)
from fmbench.ec2_deployment import ec2_target_problems
from fmbench.emulator.profiles import get_profile
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
        if (
            suite.workload.inference.fixed_output_tokens
            and each.target.platform not in FIXED_OUTPUT_PLATFORMS
        ):
            problems.append(
                SuiteProblem(
                    path="workload.inference.fixed_output_tokens",
                    reason=f"target {name!r} is {each.target.platform}: only OpenAI-compatible targets "
                    f"({', '.join(FIXED_OUTPUT_PLATFORMS)}) take min_tokens and ignore_eos",
                )
            )
        instance_problem = instance_type_problem(each.target)
        if instance_problem:
            problems.append(SuiteProblem(path=each.field_path("instance_type"), reason=instance_problem))
        if isinstance(each.target, Ec2Target):
            problems += [
                SuiteProblem(path=each.field_path(field), reason=reason)
                for field, reason in ec2_target_problems(each.target)
            ]
    problems.extend(_unused_prices(suite, [each.target for each in expanded]))
    labels = [b.label for b in suite.workload.bins]
    if suite.report.headline_bin is not None and suite.report.headline_bin not in labels:
        problems.append(
            SuiteProblem(
                path="report.headline_bin",
                reason=f"{suite.report.headline_bin!r} is not a bin; bins: {', '.join(labels)}",
            )
        )
    problems.extend(_evaluation_problems(suite))
    token = None
    if hub_token is not None:
        try:
            token = hub_token(suite)
        except ValueError as exc:
            problems.append(SuiteProblem(path="workload.dataset.hub_token", reason=str(exc)))
            return problems
    try:
        requests = requests_per_bin(suite.load)
        found = check_dataset(
            suite.workload,
            base_dir=base_dir,
            requests_per_bin=requests,
            token=token,
            needs_ground_truth=suite.evaluation is not None,
        )
        for bin_problem in found:
            problems.append(SuiteProblem(path=bin_problem[0], reason=bin_problem[1]))
        if suite.evaluation is not None and suite.evaluation.quality_pass:
            problems.extend(_quality_pass_problems(found))
    except DatasetError as exc:
        problems.append(SuiteProblem(path="workload.dataset.source", reason=str(exc)))
    return problems


def _quality_pass_problems(dataset_problems: list[tuple[str, str]]) -> list[SuiteProblem]:
    """A quality pass sends only prompts with a reference answer: without any, it has nothing to send."""
    if not any(path == "workload.dataset.ground_truth" for path, _ in dataset_problems):
        return []
    reason = (
        "sends the prompts the judges judge, which need a reference answer each "
        "(workload.dataset.ground_truth); use a dataset with reference answers, or turn it off"
    )
    return [SuiteProblem(path="evaluation.quality_pass", reason=reason)]


def _evaluation_problems(suite: Suite) -> list[SuiteProblem]:
    """An accuracy floor needs the judges that measure accuracy."""
    if suite.slo.min_accuracy is not None and suite.evaluation is None:
        reason = "needs an evaluation section (the judges that measure accuracy); add one, or remove this"
        return [SuiteProblem(path="slo.min_accuracy", reason=reason)]
    return []


# A suite is a page of YAML; the bound keeps a wrong file (a dataset, a log) from being parsed at all.
MAX_SUITE_BYTES = 1_000_000
# The deepest suite field is some 8 levels down; the bound keeps the parser's recursion far from Python's.
MAX_SUITE_DEPTH = 64


def unset_api_keys(suite: Suite, environ: Mapping[str, str]) -> list[SuiteProblem]:
    """Targets whose ``api_key_env`` names a variable this machine does not set: a local run would send
    every request without its key. Not part of ``validate_suite_data``: a cloud runner has its own
    environment, and ``fmbench-runner`` checks the variable there."""
    expanded, _ = expand_targets(suite)
    problems = [
        SuiteProblem(
            path=each.field_path("api_key_env"),
            reason=f"environment variable {each.target.api_key_env} is not set",
        )
        for each in expanded
        if getattr(each.target, "api_key_env", None) and each.target.api_key_env not in environ
    ]
    judges = suite.evaluation.judges if suite.evaluation is not None else []
    for index, judge in enumerate(judges):
        key = getattr(judge.target, "api_key_env", None)
        if key and key not in environ:
            problems.append(
                SuiteProblem(
                    path=f"evaluation.judges.{index}.target.api_key_env",
                    reason=f"environment variable {key} is not set",
                )
            )
    return problems


def _priced_instance_type(target: Any) -> str | None:
    """The instance type a target's price is looked up by (an emulator profile's, as ``plan`` does)."""
    if target.platform == "emulator" and target.emulator.profile and target.emulator.ttft_ms is None:
        return target.instance_type or get_profile(target.emulator.profile).instance_type
    return target.instance_type


def _unused_prices(suite: Suite, targets: list[Any]) -> list[SuiteProblem]:
    """A price for an instance type no target uses is refused rather than warned about: it is a typo
    (and the bundled price of the type meant is then used without a word) or text that applies to
    nothing, and either way deleting or fixing one line is the cure."""
    used = sorted({t for t in map(_priced_instance_type, targets) if t is not None})
    problems = []
    for instance_type in suite.pricing.instance_price_per_hour_usd:
        if instance_type in used:
            continue
        near = difflib.get_close_matches(instance_type, used, n=1, cutoff=0.8)
        hint = f"; did you mean {near[0]}?" if near else f"; in use: {', '.join(used) or 'none'}"
        problems.append(
            SuiteProblem(
                path=f"pricing.instance_price_per_hour_usd.{instance_type}",
                reason=f"no target uses this instance type{hint}",
            )
        )
    return problems


def parse_suite_text(text: str, source: str = "<suite>") -> Any:
    """YAML or JSON -> plain data, refusing what YAML allows but a suite must not have: a key given twice
    in one mapping (the later one would silently win) and nesting deeper than ``MAX_SUITE_DEPTH``."""
    try:
        loader = yaml.SafeLoader(text)  # reads the first characters already: may raise a ReaderError
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            problems = _node_problems(node)
            if problems:
                raise SuiteValidationError(problems, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"not valid YAML/JSON at {where}")], source
        ) from None
    except RecursionError:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"nested deeper than {MAX_SUITE_DEPTH} levels")], source
        ) from None


def _node_problems(root: yaml.Node) -> list[SuiteProblem]:
    """Duplicate keys (at any depth, with their path and line) and too deep nesting, before construction."""
    problems: list[SuiteProblem] = []
    stack: list[tuple[yaml.Node, str, int]] = [(root, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_SUITE_DEPTH:
            reason = f"nested deeper than {MAX_SUITE_DEPTH} levels (line {node.start_mark.line + 1})"
            return [SuiteProblem(path="(file)", reason=reason)]
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "(complex key)"
                child = f"{path}.{key}" if path else key
                line = key_node.start_mark.line + 1
                if key in first_line and key_node.tag != "tag:yaml.org,2002:merge":
                    problems.append(
                        SuiteProblem(
                            path=child,
                            reason=f"duplicate key at line {line} (first at line {first_line[key]}); "
                            "YAML would keep only the last one",
                        )
                    )
                first_line.setdefault(key, line)
                stack.append((value_node, child, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, f"{path}.{index}" if path else str(index), depth + 1))
    problems.sort(key=lambda problem: problem.path)
    return problems


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
    """Read a YAML or JSON suite file (UTF-8, at most ``MAX_SUITE_BYTES``) and validate it completely."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"cannot read: {exc.strerror or exc}")], str(file)
        ) from None
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteValidationError(
            [SuiteProblem(path="(file)", reason=f"larger than {MAX_SUITE_BYTES:,} bytes: not a suite")],
            str(file),
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteValidationError(
            [
                SuiteProblem(
                    path="(file)", reason=f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
                )
            ],
            str(file),
        ) from None
    data = parse_suite_text(text, str(file))
    return validate_suite_data(data, base_dir=file.resolve().parent, source=str(file))
