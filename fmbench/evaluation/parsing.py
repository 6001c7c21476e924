"""A judge's answer into a verdict, tolerantly: the JSON object asked for, the same inside a Markdown fence
or among other text, or a ``Verdict: correct`` line; anything else is unparsed (None)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from fmbench.judge_format import CORRECT, INCORRECT

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_VERDICT_LINE = re.compile(
    r"^[\s>*_#-]*verdict[\s*_]*[:=\-][\s*_\"']*(correct|incorrect)\b", re.IGNORECASE | re.MULTILINE
)
_REASON_LINE = re.compile(r"^[\s>*_#-]*reason[\s*_]*[:=\-][\s*_]*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ParsedVerdict:
    verdict: Literal["correct", "incorrect"]
    reason: str | None
    how: Literal["json", "fenced_json", "embedded_json", "verdict_line"]


def _from_object(value: Any) -> tuple[Literal["correct", "incorrect"], str | None] | None:
    if not isinstance(value, dict):
        return None
    lowered = {str(k).lower(): v for k, v in value.items()}
    verdict = lowered.get("verdict")
    if not isinstance(verdict, str) or verdict.strip().lower() not in (CORRECT, INCORRECT):
        return None
    reason = lowered.get("reason")
    word: Literal["correct", "incorrect"] = "correct" if verdict.strip().lower() == CORRECT else "incorrect"
    return word, reason if isinstance(reason, str) else None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_verdict(text: str) -> ParsedVerdict | None:
    stripped = text.strip()
    whole = _from_object(_loads(stripped))
    if whole is not None:
        return ParsedVerdict(*whole, "json")
    for block in _FENCE.findall(stripped):
        found = _from_object(_loads(block.strip()))
        if found is not None:
            return ParsedVerdict(*found, "fenced_json")
    for candidate in _OBJECT.findall(stripped):
        found = _from_object(_loads(candidate))
        if found is not None:
            return ParsedVerdict(*found, "embedded_json")
    line = _VERDICT_LINE.search(stripped)
    if line is not None:
        word: Literal["correct", "incorrect"] = "correct" if line.group(1).lower() == CORRECT else "incorrect"
        reason = _REASON_LINE.search(stripped)
        return ParsedVerdict(word, reason.group(1).strip() if reason else None, "verdict_line")
    return None
