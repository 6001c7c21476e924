"""What an emulated answer says: the ground truth or a plausible wrong answer (``accuracy``), or a judge's
verdict (``judge_error_rate``). Timing and length stay the engine's; only the words change.

- Accuracy: the run's prompts file (``prompts_file``, ``datasets/run_id=R/prompts.jsonl``) maps each
  prompt's text to its reference answers. A prompt of ``n`` tokens is answered right with probability
  ``max(0, accuracy - accuracy_drop_per_1k_tokens * n / 1000)``, drawn once per prompt from the seed (the
  same prompt always gets the same answer, as a model at temperature 0 would); otherwise with the ground
  truth of another prompt of the same dataset. The answer's words come first, then the emulator's filler
  words up to the length the engine planned, so the timing is the same with and without ``accuracy``.
- Judge: a prompt holding fmbench's judge tags (``fmbench.judge_format``) gets a verdict from comparing the
  normalized reference answers with the normalized candidate (a reference found in the candidate, as a run
  of whole words, is correct), flipped with probability ``judge_error_rate`` (seeded per judge prompt), in
  the answer format its model family tends to use. The answer ends where the verdict ends.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from fmbench.judge_format import (
    CANDIDATE_TAG,
    CORRECT,
    INCORRECT,
    REFERENCE_TAG,
    JudgeFamily,
    extract_tagged,
    family_of,
    normalize_answer,
)

_CHUNK = re.compile(r"\s*(?:\w+|[^\w\s])")


def chunks(text: str) -> tuple[str, ...]:
    """``text`` as tokens of the simple tokenizer, each with the white space before it (they join back)."""
    return tuple(_CHUNK.findall(text))


@dataclass(frozen=True, slots=True)
class Script:
    """The words of one answer; ``ends``: the answer stops after them (else filler follows)."""

    tokens: tuple[str, ...]
    ends: bool


class AnswerBookError(ValueError):
    """The prompts file cannot be read as a run's prompts."""


class AnswerBook:
    """Prompt text -> (reference answers, the prompt's position), read from a run's prompts file."""

    def __init__(self, lines: list[dict[str, object]]) -> None:
        self._by_text: dict[str, tuple[str, ...]] = {}
        self._answers: list[str] = []
        for line in lines:
            answers = tuple(str(a) for a in (line.get("reference_answers") or []))  # type: ignore[attr-defined]
            if not answers:
                continue
            self._by_text[_prompt_key(line)] = answers
            self._answers.append(answers[0])
        self._distinct = [(answer, normalize_answer(answer)) for answer in sorted(set(self._answers))]

    @classmethod
    def read(cls, path: str) -> AnswerBook:
        try:
            raw = Path(path).read_text(encoding="utf-8")
            return cls([json.loads(text) for text in raw.splitlines() if text.strip()])
        except (OSError, ValueError) as exc:
            raise AnswerBookError(f"cannot read the prompts file {path}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._by_text)

    def answer(
        self, prompt_text: str, prompt_tokens: int, accuracy: float, drop: float, seed: int
    ) -> str | None:
        """The answer to a known prompt (right with the stated probability), None for an unknown one."""
        answers = self._by_text.get(prompt_text.strip())
        if answers is None:
            return None
        chance = max(0.0, accuracy - drop * prompt_tokens / 1000.0)
        draw = random.Random(f"fmbench-accuracy/{seed}/{prompt_text.strip()}")
        if draw.random() < chance:
            return answers[0]
        rights = {normalize_answer(x) for x in answers}
        for _ in range(8):  # another prompt's answer, drawn until it differs (almost always at once)
            answer, normalized = draw.choice(self._distinct)
            if normalized not in rights:
                return answer
        wrong = [answer for answer, normalized in self._distinct if normalized not in rights]
        return draw.choice(wrong) if wrong else "I do not know."


def _prompt_key(line: dict[str, object]) -> str:
    messages = line.get("messages")
    if isinstance(messages, list):
        users = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1]).strip()
    return str(line.get("text", "")).strip()


def judge_verdict(judge_prompt: str, error_rate: float, seed: int, model: str) -> tuple[str, str] | None:
    """(verdict, reason) for one of fmbench's judge prompts, None for any other prompt."""
    references = extract_tagged(judge_prompt, REFERENCE_TAG)
    candidate = extract_tagged(judge_prompt, CANDIDATE_TAG)
    if references is None or candidate is None:
        return None
    said = f" {normalize_answer(candidate)} "
    wanted = [normalize_answer(line) for line in references.splitlines()]
    right = any(w and f" {w} " in said for w in wanted)
    flipped = random.Random(f"fmbench-judge/{seed}/{model}/{judge_prompt}").random() < error_rate
    if right != flipped:
        return CORRECT, "The candidate gives the reference answer."
    return INCORRECT, "The candidate does not give the reference answer."


def verdict_text(family: JudgeFamily, verdict: str, reason: str) -> str:
    """A verdict the way models of the family tend to write it when asked for JSON."""
    body = json.dumps({"verdict": verdict, "reason": reason})
    if family == "llama":
        return f"```json\n{body}\n```"
    if family == "mistral":
        return f"Here is my assessment:\n{body}"
    if family == "nova":
        return f"Verdict: {verdict}\nReason: {reason}"
    return body


def judge_script(judge_prompt: str, error_rate: float, seed: int, model: str) -> Script | None:
    judged = judge_verdict(judge_prompt, error_rate, seed, model)
    if judged is None:
        return None
    return Script(chunks(verdict_text(family_of(model), *judged)), ends=True)
