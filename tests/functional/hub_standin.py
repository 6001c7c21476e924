"""A stand-in for the Hugging Face Hub on loopback: the few HTTP endpoints ``huggingface_hub`` calls.

``HfApi.dataset_info`` reads ``GET /api/datasets/{id}[/revision/{rev}]``; ``hf_hub_download`` sends
``HEAD`` then ``GET`` to ``/[datasets/]{id}/resolve/{rev}/{file}`` and needs ``X-Repo-Commit``, ``ETag``
and ``Content-Length``. Errors carry ``X-Error-Code`` as the Hub's do (``RepoNotFound``, ``GatedRepo``,
``RevisionNotFound``, ``EntryNotFound``), which is how the client tells them apart. Also a helper that
trains a small byte-level BPE ``tokenizer.json`` with the ``tokenizers`` trainer.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


def _commit_of(files: dict[str, bytes]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    return digest.hexdigest()


@dataclass
class HubRepo:
    """A repository: ``files`` on main, ``other_branches`` each with a tree (and commit) of its own."""

    files: dict[str, bytes]
    card_configs: list[dict[str, Any]] | None = None
    gated: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens with access to a gated repository
    other_branches: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.commit = _commit_of(self.files)
        self.trees = {self.commit: self.files}
        self.branches = {"main": self.commit}
        for name, files in self.other_branches.items():
            commit = _commit_of(files)
            self.trees[commit] = files
            self.branches[name] = commit

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.trees else self.branches.get(revision)


@dataclass
class HubStandIn:
    url: str
    datasets: dict[str, HubRepo]
    models: dict[str, HubRepo]
    requests: list[tuple[str, str, str | None]]  # (method, path, Authorization header)


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _error(self, status: int, code: str, commit: str | None = None) -> None:
            payload = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(payload)

        def _serve(self, body: bool) -> None:
            auth = self.headers.get("Authorization")
            hub.requests.append((self.command, self.path, auth))
            parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("datasets", "models"):
                repos = hub.datasets if parts[1] == "datasets" else hub.models
                repo_id = f"{parts[2]}/{parts[3]}"
                revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
                self._info(repos, repo_id, revision)
                return
            repos = hub.models
            if parts[:1] == ["datasets"]:
                repos, parts = hub.datasets, parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(repos, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), auth, body)
                return
            self._error(404, "NotFound")

        def _info(self, repos: dict[str, HubRepo], repo_id: str, revision: str) -> None:
            repo = repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound")
                return
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound")
                return
            info: dict[str, Any] = {
                "id": repo_id,
                "sha": commit,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "siblings": [{"rfilename": name} for name in sorted(repo.trees[commit])],
            }
            if repo.card_configs is not None:
                info["cardData"] = {"configs": repo.card_configs}
            payload = json.dumps(info).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _resolve(
            self,
            repos: dict[str, HubRepo],
            repo_id: str,
            revision: str,
            name: str,
            auth: str | None,
            body: bool,
        ) -> None:
            repo = repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound")
                return
            if repo.gated and (auth is None or auth.removeprefix("Bearer ") not in repo.tokens):
                self._error(401, "GatedRepo")
                return
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound")
                return
            if name not in repo.trees[commit]:
                self._error(404, "EntryNotFound", commit)
                return
            data = repo.trees[commit][name]
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@contextmanager
def running_hub(datasets: dict[str, HubRepo], models: dict[str, HubRepo]) -> Iterator[HubStandIn]:
    """The stand-in on a free loopback port, stopped when the block ends."""
    hub = HubStandIn("", datasets, models, [])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


_CORPUS = (
    "river mountain forest signal packet latency throughput token model serve answer question "
    "compute memory cache prefix request stream window sample metric report budget region"
)
CORPUS_WORDS = _CORPUS.split()


def train_tokenizer_json(vocab_size: int = 400, seed: int = 7) -> str:
    """A byte-level BPE tokenizer trained on sentences of the corpus words: merges make multi-token words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(CORPUS_WORDS, k=12)) + "." for _ in range(400)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer)
    return tokenizer.to_str()
