"""Which answers are judged: for each candidate (branch), one answer per distinct prompt, capped per bin.

One definition of the judged prompts (``judged_prompts``): of a bin's candidate prompts with a reference
answer, distinct by id, the first ``max_answers_per_bin`` in one seeded order of the bin's prompt ids, the
same for every candidate, so candidates are compared on the same prompts wherever they all answered them.

Where the answers come from (``AnswerSource``):

- ``load``: the candidates are the prompts answered under load; a prompt's answer is that of its first
  measured, successful request (earliest send time, then request id), so repeated prompts are judged once.
- ``quality_pass``: the candidates are every prompt of the bin, known before the load, so the runner can
  send the judged prompts once more after it (``evaluation.quality_pass``, phase ``quality``); a prompt's
  answer is that of its successful quality-pass request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import pyarrow.compute as pc
import pyarrow.dataset as ds

from fmbench import layout, storage
from fmbench.payloads import Prompt

_COLUMNS = ["prompt_id", "payload_bin", "request_id", "response_text", "send_epoch_s", "status", "phase"]

AnswerSource = Literal["load", "quality_pass"]
ANSWER_SOURCES: Final[tuple[AnswerSource, ...]] = ("load", "quality_pass")
# The record phase each source's answers are read from.
SOURCE_PHASE: Final[dict[AnswerSource, str]] = {"load": "measured", "quality_pass": "quality"}


@dataclass(frozen=True, slots=True)
class Answer:
    """One candidate's answer to one prompt, with the prompt it answers."""

    branch_id: str
    target_name: str
    payload_bin: str
    prompt: Prompt
    request_id: str
    text: str
    source: AnswerSource = "load"


def _order_key(seed: int, payload_bin: str, prompt_id: str) -> str:
    return hashlib.sha256(f"fmbench-judged/{seed}/{payload_bin}/{prompt_id}".encode()).hexdigest()


def judged_prompts(
    prompts_by_bin: Mapping[str, Iterable[Prompt]], *, max_per_bin: int, seed: int
) -> dict[str, list[Prompt]]:
    """Bin -> the prompts judged there, in the seeded order: of the candidates with a reference answer
    (the first of each id), the first ``max_per_bin``. Bins without one are left out."""
    chosen: dict[str, list[Prompt]] = {}
    for payload_bin in sorted(prompts_by_bin):
        distinct: dict[str, Prompt] = {}
        for prompt in prompts_by_bin[payload_bin]:
            if prompt.reference_answers and prompt.record_id not in distinct:
                distinct[prompt.record_id] = prompt
        ordered = sorted(distinct.values(), key=lambda p: _order_key(seed, payload_bin, p.record_id))
        if ordered:
            chosen[payload_bin] = ordered[:max_per_bin]
    return chosen


def recorded_answers(
    root: str, run_id: str, branch_id: str, source: AnswerSource = "load"
) -> dict[tuple[str, str], tuple[str, str]]:
    """(bin, prompt id) -> (request id, text) of the first successful answer of each prompt among the
    branch's records of the source's phase ('measured' for ``load``, 'quality' for ``quality_pass``)."""
    filesystem, path = storage.resolve_filesystem(layout.records_prefix(root, run_id, branch_id))
    try:
        dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
    except (FileNotFoundError, OSError):
        return {}
    wanted = (pc.field("phase") == SOURCE_PHASE[source]) & (pc.field("status") == "ok")
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
    source: AnswerSource = "load",
) -> list[Answer]:
    """The answers to judge, bin by bin in the seeded order; prompts without a reference are skipped.

    For ``load`` the candidates are the answered prompts. For ``quality_pass`` they are every prompt of
    the run (as the runner chose what to send), of which those without an answer (a failed request) are
    then left out, so a quality pass that failed leaves nothing to judge rather than other prompts.
    """
    if source == "load":
        candidates: dict[str, list[Prompt]] = {}
        for payload_bin, prompt_id in answers:
            prompt = prompts.get((payload_bin, prompt_id))
            if prompt is not None:
                candidates.setdefault(payload_bin, []).append(prompt)
    else:
        candidates = {}
        for (payload_bin, _), prompt in prompts.items():
            candidates.setdefault(payload_bin, []).append(prompt)
    chosen: list[Answer] = []
    for payload_bin, bin_prompts in judged_prompts(candidates, max_per_bin=max_per_bin, seed=seed).items():
        for prompt in bin_prompts:
            found = answers.get((payload_bin, prompt.record_id))
            if found is None:
                continue
            request_id, text = found
            chosen.append(Answer(branch_id, target_name, payload_bin, prompt, request_id, text, source))
    return chosen
