"""The Hugging Face Hub: dataset listings and file downloads, with errors a suite's author can act on.

``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HOME`` once, when it is imported. A benchmark reads them
when it loads a dataset or a tokenizer instead, so that the environment of that moment counts (a test's
stand-in Hub, a runner told where to cache); the endpoint and cache folder are therefore passed to every
call. The token is the caller's (the cloud resolves a Secrets Manager reference) or ``HF_TOKEN``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
REQUEST_TIMEOUT_S = 30.0


class HubError(ValueError):
    """A repository, revision or file of the Hub that cannot be had; the message says what to do."""


def _quiet_client() -> None:
    """Keep ``huggingface_hub`` to the requests a benchmark asks for.

    With telemetry on, building request headers fetches a registry of "agent harnesses" from the endpoint
    fixed at import time, which need not be the one ``HF_ENDPOINT`` names now: an extra request, perhaps
    to the public Hub, from a run that was pointed elsewhere. The library reads this flag at call time.
    """
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True


@dataclass(frozen=True, slots=True)
class HubSettings:
    endpoint: str
    cache_dir: Path
    token: str | None


def hub_settings(token: str | None = None, environ: dict[str, str] | None = None) -> HubSettings:
    """Endpoint, cache folder and token as the environment sets them now (see the module's docstring)."""
    env = os.environ if environ is None else environ
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if env.get("HF_HUB_CACHE"):
        cache_dir = Path(env["HF_HUB_CACHE"])
    else:
        cache_home = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
        home = Path(env["HF_HOME"]) if env.get("HF_HOME") else cache_home / "huggingface"
        cache_dir = home / "hub"
    return HubSettings(endpoint, cache_dir.expanduser(), token or env.get("HF_TOKEN") or None)


def _describe(
    exc: BaseException, kind: str, repo_id: str, revision: str | None, settings: HubSettings
) -> str:
    """One sentence per way a Hub call fails, naming the repository and what to do."""
    from huggingface_hub import errors

    where = f"{kind} {repo_id}" + (f"@{revision}" if revision else "")
    if isinstance(exc, errors.GatedRepoError):
        hint = "accept its terms on the Hub with your account and give that account's token (HF_TOKEN)"
        if settings.token:
            hint = "the token given has no access yet: accept the terms on the Hub with its account"
        return f"{where} is gated: {hint}"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{where}: the revision does not exist"
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return f"{where}: {_missing_file(exc)} is not in the repository"
    if isinstance(exc, errors.RepositoryNotFoundError):
        token_hint = "" if settings.token else " (a private repository needs a token: HF_TOKEN)"
        return f"{where} not found on {settings.endpoint}{token_hint}"
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return (
            f"{where}: cannot reach {settings.endpoint} and the file is not in the cache {settings.cache_dir}"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return f"{where}: the Hub answered HTTP {status}"
    return f"{where}: cannot reach {settings.endpoint} ({type(exc).__name__}: {exc})"


def _missing_file(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    url = str(response.url) if response is not None else ""
    return url.rsplit("/", 1)[-1] if url else "the file"


def _is_hub_failure(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub import errors

    return isinstance(
        exc, errors.HfHubHTTPError | errors.LocalEntryNotFoundError | httpx2.HTTPError | OSError
    )


@dataclass(frozen=True, slots=True)
class HubDatasetListing:
    repo_id: str
    commit: str
    files: tuple[str, ...]
    card_configs: tuple[dict[str, Any], ...]


def dataset_listing(repo_id: str, revision: str | None, token: str | None = None) -> HubDatasetListing:
    """The files of a dataset repository at a revision, the commit it resolves to and its card's configs."""
    from huggingface_hub import HfApi

    _quiet_client()
    settings = hub_settings(token)
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    try:
        info = api.dataset_info(repo_id, revision=revision, timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:
        if not _is_hub_failure(exc):
            raise
        raise HubError(_describe(exc, "dataset", repo_id, revision, settings)) from None
    configs: Any = info.card_data.get("configs") if info.card_data is not None else None
    card_configs = tuple(c for c in configs if isinstance(c, dict)) if isinstance(configs, list) else ()
    files = tuple(sorted(s.rfilename for s in info.siblings or []))
    return HubDatasetListing(repo_id, info.sha or (revision or "main"), files, card_configs)


def download(
    repo_id: str,
    filename: str,
    *,
    repo_type: str,
    revision: str | None,
    token: str | None = None,
    asked_revision: str | None = None,
) -> Path:
    """A file of a repository in the local Hub cache (downloaded once; a later call reads the cache).

    ``asked_revision`` is the one the suite named, for the error message, when ``revision`` is the
    commit it resolved to.
    """
    from huggingface_hub import hf_hub_download

    _quiet_client()
    settings = hub_settings(token)
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            repo_type=repo_type,
            revision=revision,
            endpoint=settings.endpoint,
            cache_dir=settings.cache_dir,
            token=settings.token,
            etag_timeout=REQUEST_TIMEOUT_S,
        )
    except Exception as exc:
        if not _is_hub_failure(exc):
            raise
        kind = "dataset" if repo_type == "dataset" else "model"
        shown = asked_revision if asked_revision is not None else revision
        raise HubError(_describe(exc, kind, repo_id, shown, settings)) from None
    return Path(path)


def snapshot_commit(path: Path) -> str | None:
    """The commit a downloaded file belongs to: the Hub cache files it under ``snapshots/<commit>/``."""
    parts = path.parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None
