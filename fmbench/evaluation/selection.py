"""Which answers are judged: for each candidate (branch), one answer per distinct prompt, capped per bin.

The answer of a prompt is that of its first measured, successful request (earliest send time, then
request id), so repeated prompts are judged once. When a bin has more distinct prompts than
``max_answers_per_bin``, the prompts kept are the first in one seeded order of the bin's prompt ids, the
same for every candidate, so candidates are compared on the same prompts wherever they all answered them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow.compute as pc
import pyarrow.dataset as ds

from fmbench import layout, storage
from fmbench.payloads import Prompt

_COLUMNS = ["prompt_id", "payload_bin", "request_id", "response_text", "send_epoch_s", "status", "phase"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One candidate's answer to one prompt, with the prompt it answers."""

    branch_id: str
    target_name: str
    payload_bin: str
    prompt: Prompt
    request_id: str
    text: str


def _order_key(seed: int, payload_bin: str, prompt_id: str) -> str:
    return hashlib.sha256(f"fmbench-judged/{seed}/{payload_bin}/{prompt_id}".encode()).hexdigest()


def measured_answers(root: str, run_id: str, branch_id: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(bin, prompt id) -> (request id, text) of the first measured ok answer of each prompt."""
    filesystem, path = storage.resolve_filesystem(layout.records_prefix(root, run_id, branch_id))
    try:
        dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
    except (FileNotFoundError, OSError):
        return {}
    wanted = (pc.field("phase") == "measured") & (pc.field("status") == "ok")
    table = dataset.to_table(columns=_COLUMNS, filter=wanted & pc.field("prompt_id").is_valid())
    rows = sorted(table.to_pylist(), key=lambda r: (r["send_epoch_s"], r["request_id"]))
    first: dict[tuple[str, str], tuple[str, str]] = {}
    for row in rows:
        key = (row["payload_bin"], row["prompt_id"])
        if key not in first and row["response_text"] is not None:
            first[key] = (row["request_id"], row["response_text"])
    return first


def select_answers(
    answers: dict[tuple[str, str], tuple[str, str]],
    prompts: dict[tuple[str, str], Prompt],
    *,
    branch_id: str,
    target_name: str,
    max_per_bin: int,
    seed: int,
) -> list[Answer]:
    """The answers to judge, bin by bin in the seeded order; prompts without a reference are skipped."""
    by_bin: dict[str, list[tuple[str, Answer]]] = {}
    for (payload_bin, prompt_id), (request_id, text) in answers.items():
        prompt = prompts.get((payload_bin, prompt_id))
        if prompt is None or not prompt.reference_answers:
            continue
        answer = Answer(branch_id, target_name, payload_bin, prompt, request_id, text)
        by_bin.setdefault(payload_bin, []).append((_order_key(seed, payload_bin, prompt_id), answer))
    chosen: list[Answer] = []
    for payload_bin in sorted(by_bin):
        ordered = sorted(by_bin[payload_bin], key=lambda pair: pair[0])
        chosen.extend(answer for _, answer in ordered[:max_per_bin])
    return chosen
