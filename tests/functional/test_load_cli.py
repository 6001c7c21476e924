"""`fmbench load` as users of vLLM's `bench serve`, GuideLLM and AIPerf expect it: a server root URL, a key
also for model discovery, headers, an extra body, a timeout, synthetic prompts and a fixed output length,
run as a real process against a scripted server or the emulator on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest
from aiohttp import web

from fmbench.cli import main
from fmbench.config import SuiteValidationError
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings
from fmbench.suite import validate_suite_data

KEY = "sk-load-test"


async def fmbench_load(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Runs `fmbench load` as its own process, so that the scripted server keeps answering on this loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fmbench.cli", "load", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return int(process.returncode or 0), stdout.decode(), stderr.decode()


async def fmbench_load_refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`fmbench load` in this process (in a thread, so that a scripted server on this loop can answer),
    for options refused before anything runs: its exit status must be 2; its stderr is returned."""
    status = await asyncio.to_thread(main, ["load", *args])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    return stderr


def records(out: Path) -> list[dict[str, Any]]:
    return ds.dataset(out / "records", format="parquet", partitioning="hive").to_table().to_pylist()


class KeyedServer:
    """An OpenAI-compatible server under /v1 that refuses requests without the key: it lists its model,
    keeps every body and header it got, and streams two reasoning chunks and ``max_tokens`` answer chunks."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.delay_s = delay_s

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "invalid key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "served-model", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "invalid key"}}, status=401)
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if body.get("model") != "served-model":
            return web.json_response({"error": {"message": "model is required"}}, status=400)
        await asyncio.sleep(self.delay_s)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas = [{"reasoning_content": " hmm"}, {"reasoning_content": " yes"}]
        deltas += [{"content": " word"}] * int(body["max_tokens"])
        for delta in deltas:
            event = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        await response.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        return response


@pytest.fixture
def serve(app_server: Callable[[web.Application], Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """``await serve(server)``: a KeyedServer's OpenAI paths on loopback (``None``: 404 to everything)."""

    async def start(server: KeyedServer | None = None, *, api_paths: bool = True) -> str:
        app = web.Application()
        if server is not None and api_paths:
            app.router.add_get("/v1/models", server.models)
            app.router.add_post("/v1/chat/completions", server.chat)
        return await app_server(app)

    return start


async def test_a_root_url_with_a_key_headers_and_an_extra_body(serve: Any, tmp_path: Path) -> None:
    server = KeyedServer()
    root = await serve(server)
    status, stdout, stderr = await fmbench_load(
        "--url", root,  # the server's root: /v1 is found by asking for the models
        "--api-key-env", "LOAD_TEST_KEY",
        "--header", "X-Team: bench",
        "--header", "X-Trace:on",
        "--extra-body", '{"top_k": 7, "chat_template_kwargs": {"enable_thinking": true}}',
        "--output-tokens", "5",
        "--prompt-tokens", "24",
        "--timeout", "30",
        "--concurrency", "2",
        "--requests", "6",
        "--out", str(tmp_path),
        env={"LOAD_TEST_KEY": KEY},
    )  # fmt: skip
    assert status == 0, stdout + stderr
    assert len(server.bodies) >= 6
    for body, headers in zip(server.bodies, server.headers, strict=True):
        assert body["model"] == "served-model"  # discovered with the key
        assert (body["max_tokens"], body["min_tokens"], body["ignore_eos"]) == (5, 5, True)
        assert (body["top_k"], body["chat_template_kwargs"]) == (7, {"enable_thinking": True})
        assert (headers["X-Team"], headers["X-Trace"]) == ("bench", "on")
        # synthetic prompts of 24 tokens of the (simple) tokenizer
        assert len(body["messages"][-1]["content"].split()) <= 24
    rows = records(tmp_path)
    assert len(rows) == 6
    assert {(r["status"], r["model"]) for r in rows} == {("ok", "served-model")}
    assert {(r["max_tokens_requested"], r["min_tokens_requested"]) for r in rows} == {(5, 5)}
    assert {(r["prompt_tokens_local"]) for r in rows} == {24}
    # no usage from this server: reasoning and completion tokens are the tokenizer's
    assert {(r["reasoning_tokens"], r["completion_tokens"], r["token_source"]) for r in rows} == {
        (2, 7, "tokenizer")
    }
    assert all(r["time_to_first_answer_s"] >= r["ttft_s"] for r in rows)
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary["reasoning_tokens_mean"].tolist() == [2.0]
    assert summary["time_to_first_answer_p50_s"].notna().all()
    # ... and the terminal, the report and result.json say the counts are the local tokenizer's
    measured = int(summary["requests"].sum())
    said = f"{measured} of {measured} successful measured requests have token counts from the local tokenizer"
    assert said in stdout + stderr
    assert said in (tmp_path / "report.md").read_text(encoding="utf-8")
    result = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert result["prompts"]["local_token_count_requests"] == measured > 0


async def test_discovery_without_the_key_says_a_key_is_wanted(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = await serve(KeyedServer())
    stderr = await fmbench_load_refused(capsys, "--url", root, "--requests", "1", "--out", str(tmp_path))
    assert "--url: GET " in stderr and "/v1/models: HTTP 401" in stderr
    assert "give --api-key-env NAME" in stderr
    assert not (tmp_path / "records").exists()


async def test_a_url_without_an_openai_api_is_named_with_what_was_tried(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = await serve(None)  # answers 404 to everything
    stderr = await fmbench_load_refused(capsys, "--url", root, "--requests", "1", "--out", str(tmp_path))
    assert f"no OpenAI-compatible API at {root}" in stderr
    assert f"GET {root}/v1/models: HTTP 404" in stderr and f"GET {root}/models: HTTP 404" in stderr


async def test_the_request_timeout_applies(serve: Any, tmp_path: Path) -> None:
    server = KeyedServer(delay_s=3.0)
    root = await serve(server)
    status, stdout, stderr = await fmbench_load(
        "--url", root + "/v1",
        "--model", "served-model",
        "--api-key-env", "LOAD_TEST_KEY",
        "--timeout", "0.3",
        "--concurrency", "1",
        "--requests", "1",
        "--out", str(tmp_path),
        env={"LOAD_TEST_KEY": KEY},
    )  # fmt: skip
    rows = records(tmp_path)
    assert [(r["status"], r["error_class"]) for r in rows] == [("error", "timeout")], stdout + stderr
    assert rows[0]["latency_s"] < 2.0
    assert status == 1  # every request failed: the branch failed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extra-body", "{top_k: 7}"], "--extra-body: not valid JSON"),
        (["--extra-body", "[1, 2]"], "--extra-body: must be a JSON object"),
        (["--output-tokens", "5", "--max-tokens", "9"], "--output-tokens fixes the output length"),
        (["--prompt-tokens", "20", "--dataset", "x.jsonl"], "--prompt-tokens makes synthetic prompts"),
        (["--api-key-env", "FMBENCH_NO_SUCH_VARIABLE"], "FMBENCH_NO_SUCH_VARIABLE is not set"),
    ],
)
async def test_bad_options_are_refused_before_anything_is_sent(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stderr = await fmbench_load_refused(capsys, "--url", "http://127.0.0.1:9", *args, "--out", str(tmp_path))
    assert message in stderr
    assert not (tmp_path / "records").exists()


async def test_a_local_dataset_and_the_emulator_reasoning_at_a_fixed_output_length(tmp_path: Path) -> None:
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": f"tell me about item {i} please"}) + "\n" for i in range(8)
        )
    )
    settings = EmulatorSettings(port=0, ttft_ms=20, itl_ms=10, output_tokens=4, reasoning_tokens=3)
    with EmulatorProcess(settings) as emulator:
        status, stdout, stderr = await fmbench_load(
            "--url", emulator.url,  # the emulator's root
            "--dataset", str(dataset),
            "--prompt-template", "{prompt}",
            "--output-tokens", "9",
            "--concurrency", "1",
            "--requests", "4",
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
    assert status == 0, stdout + stderr
    assert "answer p50 s" in stdout and "reason tok" in stdout  # the summary shows the reasoning
    rows = records(tmp_path / "out")
    assert len(rows) == 4
    assert {r["prompt_id"] for r in rows} <= {f"p{i}" for i in range(8)}
    # the emulated model would stop after 4 tokens; min_tokens and ignore_eos make it answer 9
    assert {(r["completion_tokens"], r["token_source"], r["min_tokens_requested"]) for r in rows} == {
        (9, "server", 9)
    }
    assert {(r["reasoning_tokens"], r["reasoning_tokens_local"]) for r in rows} == {(3, 3)}
    thinking_s = sorted(r["time_to_first_answer_s"] - r["ttft_s"] for r in rows)
    assert thinking_s[len(thinking_s) // 2] == pytest.approx(3 * 0.010, abs=0.008)


def test_fixed_output_tokens_is_refused_for_a_target_that_cannot_take_it() -> None:
    suite = {
        "name": "s",
        "targets": [
            {"name": "bed", "platform": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"}
        ],
        "workload": {
            "bins": [{"min_tokens": 0, "max_tokens": 100000}],
            "inference": {"fixed_output_tokens": True},
        },
        "load": {"concurrency": [1], "requests_per_level": 1},
    }
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(suite)
    assert [str(p) for p in caught.value.problems] == [
        "workload.inference.fixed_output_tokens: target 'bed' is bedrock: only OpenAI-compatible targets "
        "(openai, emulator) take min_tokens and ignore_eos"
    ]
