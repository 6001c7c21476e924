"""Synthetic prompts of an exact length in the workload tokenizer's tokens, unique per request.

A prompt is words of the tokenizer's own vocabulary, drawn at random, then cut where its token count is
the one asked for. Cutting text at a token's end and counting again is not always the same count (a BPE
tokenizer may merge across the cut), so the cut is corrected until the count is exact, and a prompt that
cannot be made exact is drawn anew. Prompt ``i`` of a bin depends only on the seed, the bin and ``i``, so
any runner makes the same prompts, and there are as many as there are requests: no two requests share
more than the shared prefix, which is identical in text and in token ids across every prompt.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property

from fmbench.config import NormalLength, SyntheticSpec, TokenBin, UniformLength
from fmbench.tokenizer import Tokenizer

MAX_LENGTH_DRAWS = 10_000
MAX_PROMPT_ATTEMPTS = 20
_MAX_CUT_CORRECTIONS = 8
MIN_BIN_PROBABILITY = 1e-3


class SyntheticError(ValueError):
    """Synthetic prompts that cannot be made as asked; ``path`` is the suite field to blame."""

    def __init__(self, message: str, path: str = "workload.synthetic") -> None:
        super().__init__(message)
        self.path = path


def length_bounds(spec: SyntheticSpec) -> tuple[int, float]:
    """Shortest and longest prompt the spec can ask for (the longest may be unbounded)."""
    lengths = spec.prompt_tokens
    if isinstance(lengths, int):
        return lengths, lengths
    if isinstance(lengths, UniformLength):
        return lengths.min_tokens, lengths.max_tokens
    shortest = lengths.min_tokens or spec.shared_prefix_tokens + 1
    return shortest, math.inf if lengths.max_tokens is None else lengths.max_tokens


def bin_probability(spec: SyntheticSpec, token_bin: TokenBin) -> float:
    """Share of drawn lengths that fall in the bin: zero means the bin can never get a prompt."""
    lengths = spec.prompt_tokens
    low = max(token_bin.min_tokens, spec.shared_prefix_tokens + 1)
    high = token_bin.max_tokens - 1  # inclusive
    if isinstance(lengths, int):
        return 1.0 if low <= lengths <= high else 0.0
    if isinstance(lengths, UniformLength):
        overlap = min(high, lengths.max_tokens) - max(low, lengths.min_tokens) + 1
        return max(0, overlap) / (lengths.max_tokens - lengths.min_tokens + 1)
    return _normal_mass(lengths, low, high, lengths.min_tokens or spec.shared_prefix_tokens + 1)


def _normal_mass(lengths: NormalLength, low: int, high: int, shortest: int) -> float:
    def cdf(x: float) -> float:
        if lengths.stddev_tokens == 0:
            return 1.0 if x >= lengths.mean_tokens else 0.0
        return 0.5 * (1 + math.erf((x - lengths.mean_tokens) / (lengths.stddev_tokens * math.sqrt(2))))

    upper = high if lengths.max_tokens is None else min(high, lengths.max_tokens)
    lower = max(low, shortest)
    if upper < lower:
        return 0.0
    bounds_upper = math.inf if lengths.max_tokens is None else lengths.max_tokens + 0.5
    allowed = cdf(bounds_upper) - cdf(shortest - 0.5)
    if allowed <= 0:
        return 0.0
    return (cdf(upper + 0.5) - cdf(lower - 0.5)) / allowed


def check_synthetic(spec: SyntheticSpec, bins: list[TokenBin]) -> list[tuple[str, str]]:
    """(field path, reason) for each bin the synthetic lengths (almost) never reach."""
    problems = []
    for index, token_bin in enumerate(bins):
        probability = bin_probability(spec, token_bin)
        if probability < MIN_BIN_PROBABILITY:
            problems.append(
                (
                    f"workload.bins.{index}",
                    f"synthetic prompts of {_describe_lengths(spec)} tokens "
                    f"{'never' if probability == 0 else 'almost never'} have [{token_bin.min_tokens}, "
                    f"{token_bin.max_tokens}) tokens",
                )
            )
    return problems


def _describe_lengths(spec: SyntheticSpec) -> str:
    lengths = spec.prompt_tokens
    if isinstance(lengths, int):
        return str(lengths)
    if isinstance(lengths, UniformLength):
        return f"{lengths.min_tokens}-{lengths.max_tokens} (uniform)"
    return f"mean {lengths.mean_tokens:g}, stddev {lengths.stddev_tokens:g} (normal)"


def draw_length(spec: SyntheticSpec, token_bin: TokenBin, rng: random.Random) -> int:
    """A prompt length from the spec's distribution, drawn again until it is in the bin."""
    low = max(token_bin.min_tokens, spec.shared_prefix_tokens + 1)
    high = token_bin.max_tokens - 1
    lengths = spec.prompt_tokens
    for _ in range(MAX_LENGTH_DRAWS):
        if isinstance(lengths, int):
            length = lengths
        elif isinstance(lengths, UniformLength):
            length = rng.randint(max(low, lengths.min_tokens), min(high, lengths.max_tokens))
        else:
            length = round(rng.gauss(lengths.mean_tokens, lengths.stddev_tokens))
            if length < (lengths.min_tokens or 1) or (
                lengths.max_tokens is not None and length > lengths.max_tokens
            ):
                continue
        if low <= length <= high:
            return length
        if isinstance(lengths, int):
            break
    raise SyntheticError(
        f"synthetic prompts of {_describe_lengths(spec)} tokens do not fall in bin {token_bin.label}",
        "workload.synthetic.prompt_tokens",
    )


@dataclass(frozen=True, slots=True)
class SyntheticPrompt:
    index: int
    text: str
    prompt_tokens: int


class SyntheticPromptMaker:
    """Prompts of one bin, made on demand: ``prompt(i)`` is the same text for the same seed, bin and i."""

    def __init__(self, spec: SyntheticSpec, tokenizer: Tokenizer, token_bin: TokenBin, seed: int) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.token_bin = token_bin
        self.seed = seed
        self._words = tokenizer.words()
        if not self._words:
            raise SyntheticError(
                f"tokenizer {tokenizer.name} has no words to make text of", "workload.tokenizer"
            )

    @cached_property
    def prefix(self) -> str:
        """The shared prefix: the same for every bin, since it depends on the seed alone."""
        if not self.spec.shared_prefix_tokens:
            return ""
        rng = random.Random(f"fmbench-synthetic/{self.seed}/prefix")
        for _ in range(MAX_PROMPT_ATTEMPTS):
            text = self._fit("", self.spec.shared_prefix_tokens, rng)
            if text is not None:
                return text
        raise SyntheticError(
            f"cannot make a prefix of exactly {self.spec.shared_prefix_tokens} tokens with "
            f"{self.tokenizer.name}",
            "workload.synthetic.shared_prefix_tokens",
        )

    @cached_property
    def prefix_ids(self) -> list[object]:
        return self.tokenizer.ids(self.prefix) if self.prefix else []

    def prompt(self, index: int) -> SyntheticPrompt:
        rng = random.Random(f"fmbench-synthetic/{self.seed}/{self.token_bin.label}/{index}")
        target = draw_length(self.spec, self.token_bin, rng)
        head = self.prefix
        for _ in range(MAX_PROMPT_ATTEMPTS):
            text = self._fit(head, target, rng)
            if text is not None and self._keeps_prefix(text):
                return SyntheticPrompt(index, text, target)
        raise SyntheticError(
            f"cannot make a prompt of exactly {target} tokens with {self.tokenizer.name}",
            "workload.synthetic.prompt_tokens",
        )

    def _keeps_prefix(self, text: str) -> bool:
        count = len(self.prefix_ids)
        return not count or self.tokenizer.ids(text)[:count] == self.prefix_ids

    def _fit(self, head: str, target: int, rng: random.Random) -> str | None:
        """``head`` and random words cut to exactly ``target`` tokens; None if the cut will not settle."""
        tokenizer = self.tokenizer
        text = head
        count = tokenizer.count(text)
        while count < target:
            words = rng.choices(self._words, k=target - count + 2)
            text = f"{text} {' '.join(words)}" if text else " ".join(words)
            count = tokenizer.count(text)
        if count == target:
            return text
        spans = tokenizer.spans(text)
        keep = target
        for _ in range(_MAX_CUT_CORRECTIONS):
            if not 1 <= keep <= len(spans):
                return None
            cut = spans[keep - 1][1]
            if cut <= len(head):
                return None
            candidate = text[:cut]
            got = tokenizer.count(candidate)
            if got == target:
                return candidate
            keep += target - got
        return None
