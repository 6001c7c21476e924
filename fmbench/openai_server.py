"""Finding the API base and the served models of an OpenAI-compatible server from a URL a user gives."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

API_PREFIX = "/v1"
DEFAULT_DISCOVERY_TIMEOUT_S = 10.0


class ServerDiscoveryError(ValueError):
    """No OpenAI-compatible API answered at the URL given (the message says what was tried and why)."""


@dataclass(frozen=True, slots=True)
class ServerApi:
    """Where the API is (``base_url`` ends before ``/chat/completions``) and the models it lists."""

    base_url: str
    models: tuple[str, ...]


def _candidates(url: str) -> list[str]:
    """The API bases worth trying: the URL as given when it names the API prefix, else the URL with the
    prefix first (vLLM, SGLang, TGI and Ollama serve it under /v1; vLLM's and GuideLLM's own clients take the
    server root and add it) and the URL as given after (a proxy that serves the API at its root)."""
    url = url.rstrip("/")
    path = urllib.parse.urlsplit(url).path
    if path.endswith(API_PREFIX):
        return [url]
    return [url + API_PREFIX, url]


def _list_models(base_url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[str, ...]:
    request = urllib.request.Request(f"{base_url}/models", headers={"Accept": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.load(response)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("the answer has no 'data' list of models")
    return tuple(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)


def find_api(
    url: str,
    *,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_DISCOVERY_TIMEOUT_S,
) -> ServerApi:
    """The API base of the server at ``url`` (its root or its API base) and the models it serves.

    Asks ``GET <base>/models`` with the key and headers every request will carry: a server that needs a
    key answers 401 without it, which would otherwise leave the model unknown and every request refused.
    Raises ``ServerDiscoveryError`` naming each URL tried and its answer when none lists models.
    """
    sent = dict(headers or {})
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    tried: list[str] = []
    for base_url in _candidates(url):
        try:
            return ServerApi(base_url, _list_models(base_url, sent, timeout_s))
        except urllib.error.HTTPError as exc:
            tried.append(f"GET {base_url}/models: HTTP {exc.code}")
            if exc.code in (401, 403):
                hint = (
                    "the server wants an API key: give --api-key-env NAME" if not api_key else "key refused"
                )
                raise ServerDiscoveryError(f"{'; '.join(tried)} ({hint})") from None
        except urllib.error.URLError as exc:
            reason = (
                exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            )
            raise ServerDiscoveryError(f"cannot connect to {base_url}: {reason}") from None
        except (OSError, ValueError) as exc:  # a timeout, or a body that is not a model list
            tried.append(f"GET {base_url}/models: {type(exc).__name__}: {exc}")
    raise ServerDiscoveryError(
        f"no OpenAI-compatible API at {url} ({'; '.join(tried)}); give the server's root "
        f"(http://HOST:PORT) or its API base (http://HOST:PORT{API_PREFIX})"
    )
