"""The two parts of a custom payload format a suite writes: the request template and the text path.

The suite's validation (``fmbench.config``) parses them so that a bad template is a field error before
anything runs; the SageMaker client (``fmbench.endpoints.formats``) uses them on every request. Both depend
on this module, and it on neither.
"""

from __future__ import annotations

import json
import re
from typing import Any

TEMPLATE_PLACEHOLDERS = ("prompt", "max_new_tokens", "temperature", "top_p")

_PLACEHOLDER_PATTERN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


class PayloadFormatError(ValueError):
    """An answer or a streamed line without the shape its payload format promises."""


class TextPath:
    """Where the generated text is in a JSON answer: ``generated_text``, ``[0].generated_text``,
    ``choices.0.message.content`` or ``outputs[0]``; a leading ``$`` or ``$.`` is allowed."""

    def __init__(self, expression: str) -> None:
        text = expression.strip()
        if text.startswith("$"):
            text = text[1:]
        segments: list[str | int] = []
        position = 0
        while position < len(text):
            match = _PATH_SEGMENT.match(text, position)
            if match is None or (match.group(1) is not None and position and text[position] != "."):
                raise ValueError(f"response_text_path {expression!r}: cannot read it at position {position}")
            key, index = match.groups()
            if index is not None:
                segments.append(int(index))
            elif key.isdigit():
                segments.append(int(key))
            else:
                segments.append(key)
            position = match.end()
        if not segments:
            raise ValueError("response_text_path is empty")
        self.expression = expression
        self.segments = tuple(segments)

    def find(self, document: Any) -> str | None:
        """The text at the path; None when the path is absent; PayloadFormatError for a non-text value."""
        node = document
        for segment in self.segments:
            if isinstance(segment, int) and isinstance(node, list):
                if segment >= len(node):
                    return None
                node = node[segment]
            elif isinstance(segment, str) and isinstance(node, dict):
                if segment not in node:
                    return None
                node = node[segment]
            else:
                return None
        if node is None:
            return None
        if isinstance(node, str):
            return node
        if isinstance(node, list) and all(isinstance(item, str) for item in node):
            return "".join(node)
        raise PayloadFormatError(f"the value at {self.expression!r} is not text: {type(node).__name__}")


class RequestTemplate:
    """A JSON request body with ``{prompt}``, ``{max_new_tokens}``, ``{temperature}``, ``{top_p}``.

    The template is parsed as JSON once, and values are put into the parsed tree (never pasted into the
    text), so a prompt with quotes or newlines stays valid JSON. A string that is exactly one numeric
    placeholder becomes that number (``"{max_new_tokens}"`` -> 128); inside a longer string a placeholder
    is replaced by its text. ``{top_p}`` is null (or empty text) when the workload sets no top_p.
    """

    def __init__(self, template: str) -> None:
        try:
            self._tree = json.loads(template)
        except ValueError as exc:
            raise ValueError(
                f"request_template is not valid JSON ({exc}); quote every placeholder, "
                'e.g. {"inputs": "{prompt}", "max_tokens": "{max_new_tokens}"}'
            ) from None
        found: set[str] = set()
        self._collect(self._tree, found)
        unknown = sorted(found - set(TEMPLATE_PLACEHOLDERS))
        if unknown:
            known = ", ".join(f"{{{name}}}" for name in TEMPLATE_PLACEHOLDERS)
            raise ValueError(f"request_template: unknown placeholder {{{unknown[0]}}}; known: {known}")
        if "prompt" not in found:
            raise ValueError("request_template must contain the {prompt} placeholder")

    @classmethod
    def _collect(cls, node: Any, found: set[str]) -> None:
        if isinstance(node, dict):
            for value in node.values():
                cls._collect(value, found)
        elif isinstance(node, list):
            for value in node:
                cls._collect(value, found)
        elif isinstance(node, str):
            found.update(_PLACEHOLDER_PATTERN.findall(node))

    def render(
        self, prompt_text: str, *, max_new_tokens: int, temperature: float, top_p: float | None
    ) -> bytes:
        values: dict[str, Any] = {
            "prompt": prompt_text,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        return json.dumps(self._fill(self._tree, values)).encode()

    @classmethod
    def _fill(cls, node: Any, values: dict[str, Any]) -> Any:
        if isinstance(node, dict):
            return {key: cls._fill(value, values) for key, value in node.items()}
        if isinstance(node, list):
            return [cls._fill(value, values) for value in node]
        if not isinstance(node, str) or "{" not in node:
            return node
        exact = _PLACEHOLDER_PATTERN.fullmatch(node)
        if exact is not None:
            return values[exact.group(1)]

        def text_of(match: re.Match[str]) -> str:
            value = values[match.group(1)]
            return "" if value is None else str(value)

        return _PLACEHOLDER_PATTERN.sub(text_of, node)
