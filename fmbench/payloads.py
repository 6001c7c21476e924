"""Datasets into prompts, rendered from a template and binned by prompt token count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fmbench.config import BUILTIN_DATASET_PREFIX, DatasetSpec, Workload, template_fields
from fmbench.tokenizer import get_tokenizer

BUILTIN_DATASETS = {"synthetic-qa": "synthetic-qa.jsonl"}


class DatasetError(ValueError):
    """A dataset that cannot be read or does not fit the workload."""


@dataclass(frozen=True, slots=True)
class Prompt:
    record_id: str
    text: str
    prompt_tokens: int
    reference_answer: str | None


def _iter_jsonl(lines: Iterator[str], origin: str, max_records: int | None) -> Iterator[dict[str, Any]]:
    count = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{origin}, line {line_number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{origin}, line {line_number}: each line must be a JSON object")
        yield record
        count += 1
        if max_records is not None and count >= max_records:
            return


def load_records(spec: DatasetSpec, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """Records of a built-in dataset or of a user's JSONL file (path relative to the suite's folder)."""
    source = spec.source
    if source.startswith(BUILTIN_DATASET_PREFIX):
        name = source[len(BUILTIN_DATASET_PREFIX) :]
        if name not in BUILTIN_DATASETS:
            raise DatasetError(
                f"unknown built-in dataset {name!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}"
            )
        text = resources.files("fmbench.data").joinpath(BUILTIN_DATASETS[name]).read_text(encoding="utf-8")
        records = list(_iter_jsonl(iter(text.splitlines()), source, spec.max_records))
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {path}")
        with path.open(encoding="utf-8") as handle:
            records = list(_iter_jsonl(iter(handle), str(path), spec.max_records))
    if not records:
        raise DatasetError(f"dataset {source} has no records")
    return records


def render_prompt(template: str, record: dict[str, Any]) -> str:
    return template.format(**{key: record[key] for key in template_fields(template)})


def _reference(record: dict[str, Any]) -> str | None:
    for key in ("answer", "reference_answer", "ground_truth", "output"):
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


def build_payloads(workload: Workload, base_dir: Path | None = None) -> dict[str, list[Prompt]]:
    """Prompts per bin label, in dataset order, at most ``max_prompts_per_bin`` each."""
    records = load_records(workload.dataset, base_dir)
    fields = template_fields(workload.prompt_template)
    tokenizer = get_tokenizer(workload.tokenizer)
    by_bin: dict[str, list[Prompt]] = {b.label: [] for b in workload.bins}
    for index, record in enumerate(records):
        missing = [f for f in fields if f not in record]
        if missing:
            raise DatasetError(
                f"record {index + 1} of {workload.dataset.source} lacks field(s) {', '.join(missing)} "
                "used by workload.prompt_template"
            )
        text = render_prompt(workload.prompt_template, record)
        tokens = tokenizer.count(text)
        for token_bin in workload.bins:
            prompts = by_bin[token_bin.label]
            if (
                token_bin.min_tokens <= tokens < token_bin.max_tokens
                and len(prompts) < workload.max_prompts_per_bin
            ):
                record_id = str(record.get("id", index))
                prompts.append(Prompt(record_id, text, tokens, _reference(record)))
    return by_bin


def check_dataset(workload: Workload, base_dir: Path | None = None) -> list[tuple[str, str]]:
    """(field path, reason) for each way the dataset does not fit the workload."""
    try:
        by_bin = build_payloads(workload, base_dir)
    except DatasetError as exc:
        return [("workload.dataset.source", str(exc))]
    except (KeyError, IndexError, ValueError) as exc:
        return [("workload.prompt_template", f"cannot render: {exc}")]
    problems = []
    for index, token_bin in enumerate(workload.bins):
        if not by_bin[token_bin.label]:
            problems.append(
                (
                    f"workload.bins.{index}",
                    f"no prompt of {workload.dataset.source} has [{token_bin.min_tokens}, "
                    f"{token_bin.max_tokens}) tokens",
                )
            )
    return problems
