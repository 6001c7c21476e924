"""Titan text embeddings as Bedrock's InvokeModel serves them, emulated: the request body, the answer and a
vector that means something.

The vector is a hashed bag of words: each lower-cased word (``\\w+``) adds 1 to the coordinate its
BLAKE2b hash picks (modulo the dimension). So the same text always gets the same vector, texts sharing
words point the same way (cosine 1 for the same bag of words, 0 for texts without a common word unless
two words collide on one coordinate), and the figure a test computes from the text is exact. It is no
semantic model: synonyms score 0.

Wire format (AWS's model parameters for Titan Text Embeddings): V2 (``amazon.titan-embed-text-v2:0``)
takes ``inputText`` and optionally ``dimensions`` (1024, 512 or 256; default 1024), ``normalize`` (default
true) and ``embeddingTypes`` (``float`` and/or ``binary``) and answers ``embedding``,
``inputTextTokenCount`` and ``embeddingsByType``; G1 (``amazon.titan-embed-text-v1``) takes ``inputText``
only and answers a 1,536-dimension ``embedding`` and ``inputTextTokenCount``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from fmbench.tokenizer import get_tokenizer

V2_DIMENSIONS: Final = (1024, 512, 256)
V1_DIMENSIONS: Final = 1536
_EMBEDDING_TYPES: Final = ("float", "binary")
_V2_KEYS: Final = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})
_WORD = re.compile(r"\w+")
_V1_MODELS: Final = frozenset({"amazon.titan-embed-text-v1", "amazon.titan-embed-g1-text-02"})
_V2_MODEL: Final = "amazon.titan-embed-text-v2"

Generation = Literal["v1", "v2"]


class EmbeddingsRequestError(ValueError):
    """A request Bedrock refuses: ``error_type`` (its x-amzn-ErrorType) and HTTP ``status``."""

    def __init__(self, message: str, error_type: str = "ValidationException", status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status


def titan_generation(model_id: str) -> Generation | None:
    """``v1``/``v2`` for a Titan text embeddings model id (a bare id, ``:N`` version or an ARN), else None."""
    base = model_id.rsplit("/", 1)[-1].split(":", 1)[0]
    if base == _V2_MODEL:
        return "v2"
    if base in _V1_MODELS:
        return "v1"
    return None


def bag_of_words_vector(text: str, dimensions: int) -> list[float]:
    """Word counts hashed onto ``dimensions`` coordinates (not normalized)."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest, "big") % dimensions] += 1.0
    return vector


def normalized(vector: list[float]) -> list[float]:
    """The vector at unit length (an all-zero vector stays as it is)."""
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


@dataclass(frozen=True)
class EmbeddingsRequest:
    text: str
    dimensions: int
    normalize: bool
    types: tuple[str, ...]


def parse_embeddings_request(raw: bytes, generation: Generation) -> EmbeddingsRequest:
    """The request body, checked as Bedrock checks it (a bad one: EmbeddingsRequestError)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbeddingsRequestError("Malformed input request: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise EmbeddingsRequestError("Malformed input request: the body must be a JSON object")
    allowed = {"inputText"} if generation == "v1" else _V2_KEYS
    extra = sorted(set(body) - allowed)
    if extra:
        raise EmbeddingsRequestError(f"Malformed input request: extraneous key [{extra[0]}] is not permitted")
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise EmbeddingsRequestError("Malformed input request: inputText: a non-empty string is required")
    if generation == "v1":
        return EmbeddingsRequest(text=text, dimensions=V1_DIMENSIONS, normalize=True, types=("float",))
    dimensions = body.get("dimensions", V2_DIMENSIONS[0])
    if isinstance(dimensions, bool) or dimensions not in V2_DIMENSIONS:
        raise EmbeddingsRequestError(
            f"Malformed input request: dimensions: {dimensions!r} is not one of 1024, 512, 256"
        )
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise EmbeddingsRequestError("Malformed input request: normalize: expected a boolean")
    types = body.get("embeddingTypes", ["float"])
    if not isinstance(types, list) or not types or any(t not in _EMBEDDING_TYPES for t in types):
        raise EmbeddingsRequestError(
            "Malformed input request: embeddingTypes: a non-empty list of 'float' and 'binary' is required"
        )
    return EmbeddingsRequest(text=text, dimensions=int(dimensions), normalize=normalize, types=tuple(types))


def embeddings_answer(request: EmbeddingsRequest, generation: Generation) -> dict[str, Any]:
    """The InvokeModel answer body for one text."""
    vector = bag_of_words_vector(request.text, request.dimensions)
    if request.normalize:
        vector = normalized(vector)
    answer: dict[str, Any] = {
        "embedding": vector,
        "inputTextTokenCount": get_tokenizer("simple").count(request.text),
    }
    if generation == "v2":
        by_type: dict[str, list[Any]] = {}
        if "float" in request.types:
            by_type["float"] = vector
        if "binary" in request.types:
            by_type["binary"] = [1 if v > 0 else 0 for v in vector]
        answer["embeddingsByType"] = by_type
    return answer
