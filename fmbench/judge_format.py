"""What a judge prompt looks like from outside: the families, the tags around its parts, the verdict words.

Shared, without imports, by the suite's models (a judge's family detected from its model id), the judging
(``fmbench.evaluation``, whose templates put the parts between these tags) and the emulator (whose emulated
judge finds the parts by them and answers the way its family tends to). Only the tags and words are here;
the templates themselves are ``fmbench.evaluation.templates``.
"""

from __future__ import annotations

import re
import string
from typing import Final, Literal

JudgeFamily = Literal["anthropic", "llama", "mistral", "nova", "generic"]
FAMILIES: Final[tuple[JudgeFamily, ...]] = ("anthropic", "llama", "mistral", "nova", "generic")

QUESTION_TAG: Final = "question"
REFERENCE_TAG: Final = "reference_answers"
CANDIDATE_TAG: Final = "candidate_answer"
# The words a verdict is given in (JSON {"verdict": ...} or a "Verdict: ..." line).
CORRECT: Final = "correct"
INCORRECT: Final = "incorrect"

# Tokens of a judge prompt besides its question, references and candidate (the longest template, re-asked,
# counted by the simple tokenizer has some 230): what the cost estimate adds per judge call.
TEMPLATE_TOKENS_BOUND: Final = 400

# Substrings of a model id (lower case) -> the family of its template; the first match wins.
_FAMILY_HINTS: Final[tuple[tuple[str, JudgeFamily], ...]] = (
    ("anthropic", "anthropic"),
    ("claude", "anthropic"),
    ("llama", "llama"),
    ("meta.", "llama"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
    ("cohere", "mistral"),
    ("command", "mistral"),
    ("nova", "nova"),
    ("amazon.", "nova"),
)


def family_of(model_id: str) -> JudgeFamily:
    """The template family of a model id: Bedrock ids and ARNs name the provider (anthropic.claude-...,
    us.meta.llama3-..., amazon.nova-...); other ids are matched by the model's name; else 'generic'."""
    lowered = model_id.lower()
    return next((family for hint, family in _FAMILY_HINTS if hint in lowered), "generic")


def tagged(tag: str, text: str) -> str:
    return f"<{tag}>\n{text}\n</{tag}>"


def extract_tagged(text: str, tag: str) -> str | None:
    """The text between ``<tag>`` and ``</tag>`` (the last such block), stripped; None when absent."""
    found = re.findall(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, flags=re.DOTALL)
    return found[-1].strip() if found else None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles (a, an, the), single spaces."""
    lowered = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())
