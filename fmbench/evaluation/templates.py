"""The judge prompts: one template per model family, each asking for a JSON verdict.

Every template gives the question, the reference answer(s) (one a line) and the candidate answer between
the tags of ``fmbench.judge_format`` in its user message, and asks for exactly
``{"verdict": "correct" | "incorrect", "reason": "..."}``. The families differ in how they are best
instructed: Anthropic models follow XML-tagged instructions, Llama models a short system role and a
numbered rule list, Mistral and Cohere models everything in one user turn, Amazon Nova models Markdown
sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fmbench.judge_format import CANDIDATE_TAG, QUESTION_TAG, REFERENCE_TAG, JudgeFamily, tagged

_VERDICT_SHAPE = '{"verdict": "correct" or "incorrect", "reason": "<one short sentence>"}'

_RULES = (
    "The candidate is correct when it states the same fact as a reference answer, in any wording, and "
    "adds nothing that contradicts it.",
    "It is incorrect when it gives a different answer, several answers without choosing, no answer, or "
    "only part of an answer the question needs in full.",
    "Ignore style, length, politeness and any text after the answer that does not change it.",
    "Judge only against the reference answers, not against what you believe is true.",
)


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    system: str | None
    user: str

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.user}]

    def text(self) -> str:
        """The prompt as one text (for a completions API): the system part first."""
        return f"{self.system}\n\n{self.user}" if self.system else self.user


def _parts(question: str, references: Sequence[str], candidate: str) -> str:
    return "\n\n".join(
        (
            tagged(QUESTION_TAG, question.strip()),
            tagged(REFERENCE_TAG, "\n".join(r.strip() for r in references)),
            tagged(CANDIDATE_TAG, candidate.strip()),
        )
    )


def _anthropic(question: str, references: Sequence[str], candidate: str) -> JudgePrompt:
    rules = "\n".join(f"<rule>{rule}</rule>" for rule in _RULES)
    system = "You grade answers to questions against reference answers. You are strict, brief and consistent."
    user = (
        "Decide whether the candidate answer below is correct.\n\n"
        f"{_parts(question, references, candidate)}\n\n"
        f"<rules>\n{rules}\n</rules>\n\n"
        f"Reply with only this JSON object and nothing else: {_VERDICT_SHAPE}"
    )
    return JudgePrompt(system, user)


def _llama(question: str, references: Sequence[str], candidate: str) -> JudgePrompt:
    rules = "\n".join(f"{n}. {rule}" for n, rule in enumerate(_RULES, start=1))
    system = (
        "You are a strict grader. You compare a candidate answer with reference answers and reply with "
        "a single JSON object."
    )
    user = (
        f"{_parts(question, references, candidate)}\n\n"
        f"Grading rules:\n{rules}\n\n"
        f"Output format (JSON only, no other text): {_VERDICT_SHAPE}"
    )
    return JudgePrompt(system, user)


def _mistral(question: str, references: Sequence[str], candidate: str) -> JudgePrompt:
    rules = " ".join(_RULES)
    user = (
        "Task: grade the candidate answer to the question against the reference answers.\n"
        f"Rules: {rules}\n\n"
        f"{_parts(question, references, candidate)}\n\n"
        f"Answer in JSON only, exactly in this shape: {_VERDICT_SHAPE}"
    )
    return JudgePrompt(None, user)


def _nova(question: str, references: Sequence[str], candidate: str) -> JudgePrompt:
    rules = "\n".join(f"- {rule}" for rule in _RULES)
    system = "You are an answer grader. Follow the instructions exactly."
    user = (
        "## Task\nDecide whether the candidate answer is correct.\n\n"
        f"## Inputs\n{_parts(question, references, candidate)}\n\n"
        f"## Rules\n{rules}\n\n"
        f"## Response format\nOnly a JSON object: {_VERDICT_SHAPE}"
    )
    return JudgePrompt(system, user)


def _generic(question: str, references: Sequence[str], candidate: str) -> JudgePrompt:
    rules = "\n".join(f"- {rule}" for rule in _RULES)
    system = "You grade a candidate answer against reference answers and reply in JSON."
    user = (
        f"{_parts(question, references, candidate)}\n\n"
        f"Rules:\n{rules}\n\n"
        f"Reply with only a JSON object: {_VERDICT_SHAPE}"
    )
    return JudgePrompt(system, user)


_TEMPLATES = {
    "anthropic": _anthropic,
    "llama": _llama,
    "mistral": _mistral,
    "nova": _nova,
    "generic": _generic,
}
REASK_NOTE = (
    "Your previous reply could not be read as a verdict. Reply with only the JSON object asked for below.\n\n"
)


def judge_prompt(
    family: JudgeFamily, question: str, references: Sequence[str], candidate: str, *, reask: bool = False
) -> JudgePrompt:
    """The judge prompt of ``family``; ``reask``: the second asking, after an answer that did not parse."""
    prompt = _TEMPLATES[family](question, references, candidate)
    if reask:
        return JudgePrompt(prompt.system, REASK_NOTE + prompt.user)
    return prompt
