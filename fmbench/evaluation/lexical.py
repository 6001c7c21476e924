"""Reference-based scores of one answer, besides the judges': token F1 and ROUGE-L over normalized
tokens (the best over the reference answers), and the cosine similarity of two embeddings."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from rapidfuzz.distance import LCSseq

from fmbench.judge_format import normalize_answer


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _f_measure(overlap: float, predicted: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision = overlap / predicted
    recall = overlap / reference
    return 2 * precision * recall / (precision + recall)


def token_f1_one(prediction: str, reference: str) -> float:
    """SQuAD's F1: the harmonic mean of token precision and recall of the normalized bags of tokens; two
    empty texts score 1, one empty text 0."""
    predicted, wanted = _tokens(prediction), _tokens(reference)
    if not predicted or not wanted:
        return float(predicted == wanted)
    overlap = sum((Counter(predicted) & Counter(wanted)).values())
    return _f_measure(overlap, len(predicted), len(wanted))


def rouge_l_one(prediction: str, reference: str) -> float:
    """ROUGE-L F1: the longest common subsequence of the normalized token sequences, as precision over the
    prediction and recall over the reference (beta 1); two empty texts score 1, one empty text 0."""
    predicted, wanted = _tokens(prediction), _tokens(reference)
    if not predicted or not wanted:
        return float(predicted == wanted)
    common = LCSseq.similarity(predicted, wanted)
    return _f_measure(common, len(predicted), len(wanted))


def token_f1(prediction: str, references: Sequence[str]) -> float | None:
    return max((token_f1_one(prediction, r) for r in references), default=None)


def rouge_l(prediction: str, references: Sequence[str]) -> float | None:
    return max((rouge_l_one(prediction, r) for r in references), default=None)


def cosine(left: Sequence[float], right: Sequence[float]) -> float | None:
    """Cosine similarity; None when a vector is empty, of another length or all zeros."""
    if not left or len(left) != len(right):
        return None
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norms = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norms if norms else None
