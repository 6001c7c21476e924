"""Datasets into prompts binned by token count, and the order in which requests get them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fmbench.config import DatasetSpec, TokenBin, Workload, template_fields
from fmbench.datasets import BUILTIN_DATASETS, DatasetError, LoadedDataset, MalformedRow, Row, read_dataset
from fmbench.synthetic import SyntheticError, SyntheticPromptMaker, check_synthetic
from fmbench.tokenizer import Tokenizer, TokenizerError, load_tokenizer

__all__ = [
    "BUILTIN_DATASETS",
    "ChatMessage",
    "DatasetError",
    "Prompt",
    "PromptDeck",
    "PromptsExhaustedError",
    "WorkloadPrompts",
    "build_payloads",
    "check_dataset",
    "draw_prompts",
    "load_records",
    "prepare_workload",
    "render_prompt",
]

RepeatPolicy = Literal["cycle", "error"]
DEFAULT_SYNTHETIC_PROMPTS_PER_BIN = 1000
GROUND_TRUTH_FIELDS = ("answer", "answers", "reference_answer", "ground_truth", "output")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt as sent. ``prompt_tokens`` counts every message sent (system prompt included).

    ``text`` is the user's prompt (for a conversation, its messages' contents one after the other), which
    a completions API sends as it is; a chat API sends ``chat_messages()``.
    """

    record_id: str
    text: str
    prompt_tokens: int
    reference_answer: str | None
    system_prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    reference_answers: tuple[str, ...] = ()

    def chat_messages(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        return [*system, {"role": "user", "content": self.text}]


def render_prompt(template: str, record: dict[str, Any], fields: dict[str, str] | None = None) -> str:
    mapping = fields or {}
    return template.format(**{name: record[mapping.get(name, name)] for name in template_fields(template)})


def load_records(
    spec: DatasetSpec, base_dir: Path | None = None, token: str | None = None
) -> list[dict[str, Any]]:
    """Records of a dataset (see ``read_dataset``); malformed rows refused if the spec says so."""
    loaded = read_dataset(spec, base_dir, token)
    if loaded.malformed and spec.malformed_rows == "error":
        raise DatasetError(_malformed_message(loaded.malformed))
    return [row.record for row in loaded.rows]


def _malformed_message(malformed: list[MalformedRow]) -> str:
    shown = "; ".join(str(m) for m in malformed[:5])
    more = f" (and {len(malformed) - 5} more)" if len(malformed) > 5 else ""
    return (
        f"{len(malformed)} malformed row(s): {shown}{more}; set workload.dataset.malformed_rows: skip "
        "to leave them out"
    )


# ----------------------------------------------------------------------------------- records -> prompts


def _text_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _answers(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _conversation(value: Any) -> tuple[tuple[ChatMessage, ...], str | None] | str:
    """(messages up to the last user turn, the assistant's answer after it) or why the value is not one."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of messages"
    messages: list[ChatMessage] = []
    for position, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            return f"message {position} is not an object"
        role = item.get("role", item.get("from"))
        content = item.get("content", item.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            return f"message {position} needs role and content (or ShareGPT's from and value) as strings"
        normalized = _SHAREGPT_ROLES.get(role.lower(), role.lower())
        messages.append(ChatMessage(normalized, content))
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        return "has no user message"
    after = messages[last_user + 1] if last_user + 1 < len(messages) else None
    answer = after.content if after is not None and after.role == "assistant" else None
    return tuple(messages[: last_user + 1]), answer


@dataclass(slots=True)
class _PromptBuilder:
    workload: Workload
    tokenizer: Tokenizer
    ground_truth_field: str | None

    def build(self, row: Row, position: int) -> Prompt | MalformedRow:
        spec = self.workload.dataset
        record = row.record
        system_prompt = None
        if spec.system_prompt is not None:
            system_prompt = _text_value(record.get(spec.system_prompt))
            if system_prompt is None:
                reason = f"field {spec.system_prompt!r} (system_prompt) is missing or not text"
                return MalformedRow(row.where, reason)
        messages: tuple[ChatMessage, ...] | None = None
        answer_after: str | None = None
        if spec.messages is not None:
            conversation = _conversation(record.get(spec.messages))
            if isinstance(conversation, str):
                return MalformedRow(row.where, f"field {spec.messages!r} (messages) {conversation}")
            messages, answer_after = conversation
            if system_prompt is not None and messages[0].role != "system":
                messages = (ChatMessage("system", system_prompt), *messages)
            text = "\n\n".join(m.content for m in messages if m.role != "system")
            tokens = sum(self.tokenizer.count(m.content) for m in messages)
        else:
            values = {}
            for name in template_fields(self.workload.prompt_template):
                column = spec.fields.get(name, name)
                value = _text_value(record.get(column))
                if value is None:
                    reason = f"field {column!r} (prompt_template {{{name}}}) is missing or not text"
                    return MalformedRow(row.where, reason)
                values[name] = value
            text = self.workload.prompt_template.format(**values)
            tokens = self.tokenizer.count(text)
            if system_prompt:
                tokens += self.tokenizer.count(system_prompt)
        answers: tuple[str, ...] = (answer_after,) if answer_after is not None else ()
        if self.ground_truth_field is not None:
            found = _answers(record.get(self.ground_truth_field))
            if found is None and spec.ground_truth is not None:  # only a field the suite named must be there
                reason = f"field {self.ground_truth_field!r} (ground_truth) is missing or not text"
                return MalformedRow(row.where, reason)
            answers = found or answers
        record_id = _text_value(record.get(spec.id_field or "id"))
        return Prompt(
            record_id=record_id if record_id is not None else str(position),
            text=text,
            prompt_tokens=tokens,
            reference_answer=answers[0] if answers else None,
            system_prompt=system_prompt if messages is None else None,
            messages=messages,
            reference_answers=answers,
        )


def _check_fields_exist(workload: Workload, rows: list[Row]) -> None:
    """A field no record has is the suite's mistake, not the rows': refuse it naming the suite field."""
    spec = workload.dataset
    present: set[str] = set()
    for row in rows:
        present.update(row.record)
    wanted: list[tuple[str, str, str]] = []  # (record field, suite field path, what reads it)
    if spec.messages is not None:
        wanted.append((spec.messages, "workload.dataset.messages", "dataset.messages"))
    else:
        for name in template_fields(workload.prompt_template):
            if name in spec.fields:
                wanted.append(
                    (spec.fields[name], f"workload.dataset.fields.{name}", "workload.prompt_template")
                )
            else:
                wanted.append((name, "workload.dataset.source", "workload.prompt_template"))
    for attribute in ("ground_truth", "system_prompt", "id_field"):
        column = getattr(spec, attribute)
        if column is not None:
            wanted.append((column, f"workload.dataset.{attribute}", f"dataset.{attribute}"))
    missing: dict[tuple[str, str], list[str]] = {}
    for column, path, reader in wanted:
        if column not in present:
            missing.setdefault((path, reader), []).append(column)
    for (path, reader), columns in missing.items():
        shown = ", ".join(sorted(present)[:30])
        raise DatasetError(
            f"every record of {spec.source} lacks field(s) {', '.join(columns)} used by {reader}; "
            f"its fields: {shown}",
            path,
        )


def _ground_truth_field(spec: DatasetSpec, rows: list[Row]) -> str | None:
    if spec.ground_truth is not None:
        return spec.ground_truth
    first = rows[0].record
    return next((name for name in GROUND_TRUTH_FIELDS if _answers(first.get(name)) is not None), None)


# ---------------------------------------------------------------------------------------- the workload


class PromptsExhaustedError(RuntimeError):
    """A bin has fewer distinct prompts than requests, and the workload's repeat policy is ``error``."""


@dataclass(slots=True)
class PromptDeck:
    """The prompts of one bin in the order requests get them: each distinct while there are any left.

    The order is a shuffle seeded by the workload's seed and the bin, so every runner sends the same
    prompts in the same order. A deck over a synthetic bin never runs out. Past the last distinct
    prompt, ``cycle`` starts the same order again and counts each draw as ``reused``; ``error`` raises.
    """

    label: str
    prompts: Sequence[Prompt]
    seed: int
    repeat: RepeatPolicy = "cycle"
    maker: SyntheticPromptMaker | None = None
    drawn: int = 0
    reused: int = 0
    _order: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.maker is None:
            if not self.prompts:
                raise PromptsExhaustedError(f"bin {self.label} has no prompts")
            self._order = list(range(len(self.prompts)))
            random.Random(f"fmbench-prompt-order/{self.seed}/{self.label}").shuffle(self._order)

    @property
    def distinct(self) -> int | None:
        """Distinct prompts the deck can give; None when unbounded (synthetic)."""
        return None if self.maker is not None else len(self.prompts)

    def draw(self) -> Prompt:
        if self.maker is not None:
            prompt = synthetic_prompt(self.maker, self.drawn)
            self.drawn += 1
            return prompt
        count = len(self._order)
        if self.drawn >= count:
            if self.repeat == "error":
                raise PromptsExhaustedError(
                    f"bin {self.label} has {count} distinct prompt(s) and request {self.drawn + 1} needs "
                    "another; "
                    "use a larger dataset or set workload.repeat: cycle"
                )
            self.reused += 1
        prompt = self.prompts[self._order[self.drawn % count]]
        self.drawn += 1
        return prompt

    def take(self, count: int) -> list[Prompt]:
        return [self.draw() for _ in range(count)]


@dataclass(frozen=True, slots=True)
class DrawnPrompts:
    prompts: list[Prompt]
    reused: int  # requests whose prompt an earlier request of the draw already had


def draw_prompts(
    prompts: Sequence[Prompt], count: int, *, seed: int, repeat: RepeatPolicy = "cycle", label: str = ""
) -> DrawnPrompts:
    """``count`` prompts for the requests of a bin, distinct while the bin has them (see ``PromptDeck``)."""
    deck = PromptDeck(label, prompts, seed, repeat)
    return DrawnPrompts(deck.take(count), deck.reused)


def synthetic_prompt(maker: SyntheticPromptMaker, index: int) -> Prompt:
    made = maker.prompt(index)
    return Prompt(f"synthetic-{maker.token_bin.label}-{index}", made.text, made.prompt_tokens, None)


@dataclass(slots=True)
class WorkloadPrompts:
    """Everything the prompts of a workload are: per bin, with what the report says about their source."""

    workload: Workload
    tokenizer: Tokenizer
    by_bin: dict[str, list[Prompt]]
    dataset: LoadedDataset | None  # None for synthetic prompts
    malformed: list[MalformedRow] = field(default_factory=list)  # rows left out (malformed_rows: skip)
    duplicates: int = 0  # records whose prompt an earlier record already made (left out)
    makers: dict[str, SyntheticPromptMaker] = field(default_factory=dict)

    def deck(self, label: str) -> PromptDeck:
        """A fresh deck for one bin: one per branch, drawn by every load point of the bin in turn."""
        return PromptDeck(
            label,
            self.by_bin[label],
            self.workload.seed,
            self.workload.repeat,
            maker=self.makers.get(label),
        )


def prepare_workload(
    workload: Workload,
    base_dir: Path | None = None,
    *,
    token: str | None = None,
    synthetic_prompts_per_bin: int | None = None,
) -> WorkloadPrompts:
    """The workload's prompts per bin, made with its tokenizer; ``DatasetError``, ``TokenizerError`` or
    ``SyntheticError`` when they cannot be had.

    Dataset bins hold every distinct prompt in the bin (in dataset order, at most ``max_prompts_per_bin``);
    synthetic bins hold the first ``synthetic_prompts_per_bin`` (default ``max_prompts_per_bin``, else
    1000) of an unbounded supply that ``deck()`` draws from. ``token`` is a Hugging Face token for gated
    or private Hub datasets and tokenizers (else ``HF_TOKEN``).
    """
    tokenizer = load_tokenizer(workload.tokenizer, base_dir=base_dir, token=token)
    cap = workload.max_prompts_per_bin
    if workload.synthetic is not None:
        count = synthetic_prompts_per_bin or cap or DEFAULT_SYNTHETIC_PROMPTS_PER_BIN
        makers = {
            b.label: SyntheticPromptMaker(workload.synthetic, tokenizer, b, workload.seed)
            for b in workload.bins
        }
        by_bin = {
            label: [synthetic_prompt(maker, i) for i in range(count)] for label, maker in makers.items()
        }
        return WorkloadPrompts(workload, tokenizer, by_bin, None, makers=makers)
    loaded = read_dataset(workload.dataset, base_dir, token)
    if loaded.malformed and workload.dataset.malformed_rows == "error":
        raise DatasetError(_malformed_message(loaded.malformed))
    _check_fields_exist(workload, loaded.rows)
    builder = _PromptBuilder(workload, tokenizer, _ground_truth_field(workload.dataset, loaded.rows))
    prompts_by_bin: dict[str, list[Prompt]] = {b.label: [] for b in workload.bins}
    malformed = list(loaded.malformed)
    seen: set[tuple[str, str | None, tuple[ChatMessage, ...] | None]] = set()
    duplicates = 0
    bad_rows: list[MalformedRow] = []
    for position, row in enumerate(loaded.rows):
        built = builder.build(row, position)
        if isinstance(built, MalformedRow):
            bad_rows.append(built)
            continue
        key = (built.text, built.system_prompt, built.messages)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        token_bin = _bin_of(workload.bins, built.prompt_tokens)
        if token_bin is not None and (cap is None or len(prompts_by_bin[token_bin.label]) < cap):
            prompts_by_bin[token_bin.label].append(built)
    if bad_rows and workload.dataset.malformed_rows == "error":
        raise DatasetError(_malformed_message(bad_rows))
    malformed += bad_rows
    return WorkloadPrompts(workload, tokenizer, prompts_by_bin, loaded, malformed, duplicates)


def _bin_of(bins: list[TokenBin], tokens: int) -> TokenBin | None:
    return next((b for b in bins if b.min_tokens <= tokens < b.max_tokens), None)


def build_payloads(workload: Workload, base_dir: Path | None = None) -> dict[str, list[Prompt]]:
    """Prompts per bin label (see ``prepare_workload``)."""
    return prepare_workload(workload, base_dir).by_bin


def check_dataset(
    workload: Workload,
    base_dir: Path | None = None,
    *,
    requests_per_bin: int | None = None,
    token: str | None = None,
    needs_ground_truth: bool = False,
) -> list[tuple[str, str]]:
    """(field path, reason) for each way the dataset, tokenizer or synthetic spec does not fit.

    ``requests_per_bin`` (what a branch's sweep sends to each bin, when known) is held against the
    distinct prompts of each bin under ``repeat: error``, so the suite is refused before anything runs.
    ``needs_ground_truth`` (a suite that judges accuracy): every prompt must have a reference answer.
    """
    if needs_ground_truth and workload.synthetic is not None:
        return [
            (
                "workload.dataset.ground_truth",
                "synthetic prompts have no ground truth, and evaluation judges answers against it: use a "
                "dataset with reference answers, or remove evaluation",
            )
        ]
    if workload.synthetic is not None:
        problems = check_synthetic(workload.synthetic, workload.bins)
        if problems:
            return problems
    try:
        prepared = prepare_workload(workload, base_dir, token=token, synthetic_prompts_per_bin=1)
    except TokenizerError as exc:
        return [("workload.tokenizer", str(exc))]
    except (DatasetError, SyntheticError) as exc:
        return [(exc.path, str(exc))]
    except (KeyError, IndexError, ValueError) as exc:
        return [("workload.prompt_template", f"cannot render: {exc}")]
    problems = []
    source = "synthetic prompts" if workload.synthetic is not None else workload.dataset.source
    if needs_ground_truth:
        lacking = sum(1 for prompts in prepared.by_bin.values() for p in prompts if not p.reference_answers)
        if lacking:
            named = workload.dataset.ground_truth
            known = ", ".join(GROUND_TRUTH_FIELDS)
            field = f"field {named!r}" if named else f"a ground-truth field ({known})"
            problems.append(
                (
                    "workload.dataset.ground_truth",
                    f"{lacking} prompt(s) of {source} have no reference answer in {field}; evaluation "
                    "judges answers against it: name the field holding it, or remove evaluation",
                )
            )
    for index, token_bin in enumerate(workload.bins):
        if not prepared.by_bin[token_bin.label]:
            problems.append(
                (
                    f"workload.bins.{index}",
                    f"no prompt of {source} has [{token_bin.min_tokens}, {token_bin.max_tokens}) tokens",
                )
            )
        elif (
            workload.repeat == "error"
            and workload.synthetic is None
            and requests_per_bin is not None
            and len(prepared.by_bin[token_bin.label]) < requests_per_bin
        ):
            problems.append(
                (
                    "workload.repeat",
                    f"'error' refuses to send a prompt twice, but bin {token_bin.label} has "
                    f"{len(prepared.by_bin[token_bin.label])} distinct prompt(s) and each branch sends it "
                    f"{requests_per_bin} requests (all load points, warm-up and cool-down included); "
                    "use a larger dataset, fewer requests, or repeat: cycle",
                )
            )
    return problems
