"""A run's prompts materialized once into its storage, so that every branch's runner sends the same ones.

The cloud plan step reads the dataset (local file, ``s3://`` or Hub), bins it with the workload's
tokenizer and writes the result under ``datasets/run_id=R/``: ``manifest.json`` (where the prompts came
from: source, files, revision, content hash, rows left out) and ``prompts.jsonl`` (one prompt a line,
with its bin, id, text or messages, token count and reference answers). A runner reads those instead of
the source, so the branches neither need the source's credentials nor can see a dataset that changed
between them. Synthetic prompts are not materialized: they are made from the seed, the same anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fmbench.config import Workload
from fmbench.datasets import DatasetError, LoadedDataset, MalformedRow
from fmbench.layout import datasets_prefix
from fmbench.payloads import ChatMessage, Prompt, WorkloadPrompts, prepare_workload
from fmbench.plan import RunPlan
from fmbench.spec import DatasetSummary
from fmbench.storage import StorageAccessError, read_bytes, write_bytes
from fmbench.tokenizer import load_tokenizer

MANIFEST_NAME = "manifest.json"
PROMPTS_NAME = "prompts.jsonl"
FORMAT_VERSION = 1
# What the cloud plan step (a Lambda function: 1769 MiB, 3 minutes) writes per bin at most: 5,000 LongBench
# prompts of 8,000 tokens are about 160 MB of JSONL, held in memory once as records and once as prompts.
MAX_MATERIALIZED_PROMPTS_PER_BIN = 5_000
# (uri, bytes, content type): fmbench.storage.write_bytes unless given; the cloud plan step uses its S3 client
Writer = Callable[[str, bytes, str], None]


def summarize(prepared: WorkloadPrompts, truncated_bins: Iterable[str] = ()) -> DatasetSummary:
    """The summary of prepared prompts (for synthetic ones, the source is named 'synthetic')."""
    loaded = prepared.dataset
    counts = {label: len(prompts) for label, prompts in prepared.by_bin.items()}
    if loaded is None:
        return DatasetSummary(source="synthetic")  # unbounded: a prompt of its own for every request
    return DatasetSummary(
        source=loaded.source,
        revision=loaded.revision,
        content_sha256=loaded.content_sha256 or None,
        files=list(loaded.files),
        malformed_rows=len(prepared.malformed),
        duplicates=prepared.duplicates,
        prompts_per_bin=counts,
        truncated_bins=list(truncated_bins),
    )


def prompts_folder(storage_root: str, run_id: str) -> str:
    return datasets_prefix(storage_root, run_id).rstrip("/")


def _prompt_json(label: str, prompt: Prompt) -> dict[str, Any]:
    line: dict[str, Any] = {
        "bin": label,
        "id": prompt.record_id,
        "text": prompt.text,
        "prompt_tokens": prompt.prompt_tokens,
        "reference_answers": list(prompt.reference_answers),
    }
    if prompt.reference_answer is not None and not prompt.reference_answers:
        line["reference_answers"] = [prompt.reference_answer]
    if prompt.system_prompt is not None:
        line["system_prompt"] = prompt.system_prompt
    if prompt.messages is not None:
        line["messages"] = [{"role": m.role, "content": m.content} for m in prompt.messages]
    return line


def _prompt_of(line: dict[str, Any]) -> Prompt:
    answers = tuple(line.get("reference_answers") or ())
    messages = line.get("messages")
    return Prompt(
        record_id=str(line["id"]),
        text=str(line["text"]),
        prompt_tokens=int(line["prompt_tokens"]),
        reference_answer=answers[0] if answers else None,
        system_prompt=line.get("system_prompt"),
        messages=None if messages is None else tuple(ChatMessage(m["role"], m["content"]) for m in messages),
        reference_answers=answers,
    )


def read_prompts(folder: str) -> dict[tuple[str, str], Prompt]:
    """(bin, prompt id) -> prompt, as a run materialized them (no tokenizer needed): what the judging reads.

    ``DatasetError`` when the folder holds no prompts this version wrote."""
    try:
        raw = read_bytes(f"{folder}/{PROMPTS_NAME}").decode()
        lines = [json.loads(text) for text in raw.splitlines() if text.strip()]
        return {(str(line["bin"]), str(line["id"])): _prompt_of(line) for line in lines}
    except (StorageAccessError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read the run's materialized prompts at {folder}: {exc}") from exc


def materialize(
    prepared: WorkloadPrompts,
    storage_root: str,
    run_id: str,
    *,
    max_prompts_per_bin: int | None = None,
    write: Writer = write_bytes,
) -> tuple[str, DatasetSummary]:
    """Write the prepared prompts under the run's datasets folder; (the folder, its summary).

    ``max_prompts_per_bin`` keeps the first prompts of each bin in dataset order (a bound for where the
    writer runs, e.g. a Lambda function's memory); the summary names the bins it cut.
    """
    folder = prompts_folder(storage_root, run_id)
    lines: list[str] = []
    truncated: list[str] = []
    for label, prompts in prepared.by_bin.items():
        kept = prompts
        if max_prompts_per_bin is not None and len(prompts) > max_prompts_per_bin:
            kept = prompts[:max_prompts_per_bin]
            truncated.append(label)
        lines.extend(json.dumps(_prompt_json(label, p), ensure_ascii=False) for p in kept)
    summary = summarize(prepared, truncated)
    if truncated and max_prompts_per_bin is not None:
        counts = {k: min(v, max_prompts_per_bin) for k, v in summary.prompts_per_bin.items()}
        summary = summary.model_copy(update={"prompts_per_bin": counts})
    body = ("\n".join(lines) + "\n").encode()
    write(f"{folder}/{PROMPTS_NAME}", body, "application/x-ndjson")
    manifest = {"format_version": FORMAT_VERSION, "dataset": summary.model_dump(mode="json")}
    write(f"{folder}/{MANIFEST_NAME}", json.dumps(manifest, indent=2).encode(), "application/json")
    return folder, summary


def read_summary(folder: str) -> DatasetSummary:
    manifest = json.loads(read_bytes(f"{folder}/{MANIFEST_NAME}"))
    return DatasetSummary.model_validate(manifest["dataset"])


def load_materialized(workload: Workload, folder: str, base_dir: Path | None = None) -> WorkloadPrompts:
    """The prompts a plan step materialized, ready for decks; the tokenizer is the workload's own.

    ``DatasetError`` (at ``workload.dataset.source``) when the folder cannot be read or is not one this
    version wrote.
    """
    try:
        summary = read_summary(folder)
        raw = read_bytes(f"{folder}/{PROMPTS_NAME}").decode()
    except (StorageAccessError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read the run's materialized prompts at {folder}: {exc}") from exc
    by_bin: dict[str, list[Prompt]] = {b.label: [] for b in workload.bins}
    for number, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            by_bin[line["bin"]].append(_prompt_of(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{folder}/{PROMPTS_NAME}, line {number}: not a prompt this fmbench wrote ({exc})"
            ) from exc
    tokenizer = load_tokenizer(workload.tokenizer, base_dir=base_dir)
    loaded = LoadedDataset(
        source=summary.source,
        rows=[],
        files=list(summary.files),
        revision=summary.revision,
        content_sha256=summary.content_sha256 or "",
    )
    # the rows themselves stay with the plan step; the count is what a report shows
    malformed = [
        MalformedRow("(materialized)", "left out when the prompts were made")
    ] * summary.malformed_rows
    return WorkloadPrompts(workload, tokenizer, by_bin, loaded, malformed, summary.duplicates)


def materialize_plan(
    plan: RunPlan,
    base_dir: Path | None = None,
    *,
    token: str | None = None,
    max_prompts_per_bin: int | None = None,
    write: Writer = write_bytes,
) -> RunPlan:
    """The plan with its prompts made once and written under the run's storage, every branch pointed at
    them and the dataset's summary kept for the report. Synthetic prompts are summarized, not written.

    Raises ``DatasetError``, ``TokenizerError`` or ``SyntheticError`` (as ``prepare_workload``).
    """
    workload = plan.suite.workload
    prepared = prepare_workload(workload, base_dir, token=token, synthetic_prompts_per_bin=1)
    if prepared.dataset is None or not plan.branches:
        return plan.model_copy(update={"dataset": summarize(prepared)})
    storage_root = plan.branches[0].storage_root
    folder, summary = materialize(
        prepared, storage_root, plan.run_id, max_prompts_per_bin=max_prompts_per_bin, write=write
    )
    branches = [spec.model_copy(update={"prompts_uri": folder}) for spec in plan.branches]
    return plan.model_copy(update={"dataset": summary, "branches": branches})
