"""Bedrock Titan text embeddings: the emulator's InvokeModel route through a real aiobotocore client, the
product's Embedder on it, and a judging run that writes the answers' embedding similarity."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import numpy as np
import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError

from fmbench.config import EmbeddingsSpec, Evaluation
from fmbench.emulator.embeddings import bag_of_words_vector, normalized
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.evaluation.embeddings import Embedder
from fmbench.evaluation.run import evaluate_run_async
from fmbench.local import run_branches, save_plan
from fmbench.plan import RunPlan, plan_suite
from fmbench.prompt_store import materialize_plan, prompts_folder, read_prompts
from fmbench.suite import validate_suite_data

TITAN_V2 = "amazon.titan-embed-text-v2:0"
FAST = {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 6}
PRICE_PER_1K = 0.02


def _words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", text.lower()))


def _word_cosine(left: str, right: str) -> float:
    """Ground truth: the cosine of the two texts' word counts (what the hashed vector gives without
    collisions)."""
    a, b = _words(left), _words(right)
    dot = sum(a[w] * b[w] for w in a)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def _no_collisions(*texts: str, dimensions: int = 1024) -> bool:
    words = set().union(*(_words(t) for t in texts))
    slots = {
        int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "big") % dimensions for w in words
    }
    return len(slots) == len(words)


def _cos(left: list[float], right: list[float]) -> float:
    a, b = np.array(left), np.array(right)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


async def _invoke(url: str, model_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    session = AioSession()
    async with session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=url) as client:
        response = await client.invoke_model(
            modelId=model_id, body=json.dumps(body), contentType="application/json", accept="application/json"
        )
        return json.loads(await response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


async def test_invoke_model_answers_titan_v2_as_documented(offline_aws_credentials: None) -> None:
    settings = EmulatorSettings(**FAST, unavailable_models=("amazon.titan-embed-text-v1",))
    async with running_emulator(settings) as url:
        default, headers = await _invoke(url, TITAN_V2, {"inputText": "Paris, Paris and Lyon."})
        small, _ = await _invoke(
            url,
            TITAN_V2,
            {"inputText": "Paris, Paris and Lyon.", "dimensions": 256, "normalize": False,
             "embeddingTypes": ["float", "binary"]},
        )  # fmt: skip
        refusals = {}
        for model_id, body in (
            ("anthropic.claude-3-haiku-20240307-v1:0", {"inputText": "x"}),  # not an embeddings model
            ("amazon.titan-embed-text-v1", {"inputText": "x"}),  # no access (unavailable_models)
            (TITAN_V2, {"inputText": "x", "dimensions": 300}),
            (TITAN_V2, {"inputText": ""}),
            (TITAN_V2, {"inputText": "x", "temperature": 0}),
        ):
            with pytest.raises(ClientError) as caught:
                await _invoke(url, model_id, body)
            error = caught.value.response
            refusals[(model_id, json.dumps(body))] = (
                error["ResponseMetadata"]["HTTPStatusCode"],
                error["Error"]["Code"],
                error["Error"]["Message"],
            )
        async with aiohttp.ClientSession() as http, http.get(url + "/health") as response:
            health = await response.json()
    # V2 defaults: 1,024 dimensions, normalized, embeddingsByType carries the float vector too
    assert len(default["embedding"]) == 1024
    assert math.isclose(math.fsum(v * v for v in default["embedding"]), 1.0, abs_tol=1e-12)
    assert default["embeddingsByType"] == {"float": default["embedding"]}
    assert default["inputTextTokenCount"] == 6  # Paris , Paris and Lyon .
    assert headers["x-amzn-bedrock-input-token-count"] == "6"
    # dimensions 256, not normalized: the word counts themselves; binary: 1 where the float is positive
    assert len(small["embedding"]) == 256
    assert sorted(v for v in small["embedding"] if v) == [1.0, 1.0, 2.0]  # and, lyon; paris twice
    assert small["embeddingsByType"]["binary"] == [int(v > 0) for v in small["embedding"]]
    assert sorted(v for v in default["embedding"] if v) == pytest.approx([1 / 6**0.5] * 2 + [2 / 6**0.5])
    codes = [(status, code) for status, code, _ in refusals.values()]
    assert codes == [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (400, "ValidationException"),
        (400, "ValidationException"),
        (400, "ValidationException"),
    ]
    messages = [message for _, _, message in refusals.values()]
    assert "Titan text embeddings" in messages[0] and "anthropic.claude-3-haiku" in messages[0]
    assert "dimensions" in messages[2] and "inputText" in messages[3] and "temperature" in messages[4]
    assert health["embeddings_total"] == 2  # refusals are not embeddings


async def test_the_embedder_on_the_emulators_titan_model(offline_aws_credentials: None) -> None:
    answer = "The capital of France is Paris."
    partial = "Paris is a city in France, on the Seine."
    disjoint = "Green turtles swim slowly."
    assert _no_collisions(answer, partial, disjoint)  # so the word-count cosine is exact
    spec = EmbeddingsSpec(model_id=TITAN_V2, price_per_1k_tokens_usd=PRICE_PER_1K)
    async with running_emulator(EmulatorSettings(**FAST)) as url:
        embedder = Embedder(spec.model_copy(update={"endpoint_url": url}))
        try:
            same = await embedder.embed([answer, answer])
            near = await embedder.embed([answer, partial])
            apart = await embedder.embed([answer, disjoint])
        finally:
            await embedder.aclose()
    assert same is not None and near is not None and apart is not None
    assert abs(_cos(*same) - 1.0) <= 1e-9
    assert _cos(*near) == pytest.approx(_word_cosine(answer, partial), abs=1e-12)
    assert _cos(*apart) == 0.0 < _cos(*near) < 1.0
    # tokens are the service's inputTextTokenCount (punctuation counts), not the words of the fallback
    service_tokens = {answer: 7, partial: 11, disjoint: 5}
    assert embedder.tokens == 4 * service_tokens[answer] + service_tokens[partial] + service_tokens[disjoint]
    assert embedder.tokens != sum(len(t.split()) for t in (answer, answer, answer, partial, answer, disjoint))
    assert embedder.cost_usd == pytest.approx(embedder.tokens * PRICE_PER_1K / 1000)


@pytest.mark.parametrize("model_id", ["amazon.titan-embed-text-v1", "meta.llama3-8b-instruct-v1:0"])
async def test_a_refused_embeddings_model_gives_no_vectors_and_no_tokens(
    offline_aws_credentials: None, model_id: str
) -> None:
    settings = EmulatorSettings(**FAST, unavailable_models=("amazon.titan-embed-text-v1",))
    async with running_emulator(settings) as url:
        embedder = Embedder(EmbeddingsSpec(model_id=model_id, endpoint_url=url, price_per_1k_tokens_usd=1.0))
        try:
            assert await embedder.embed(["a", "b"]) is None
        finally:
            await embedder.aclose()
    assert (embedder.tokens, embedder.cost_usd) == (0, 0.0)


# ------------------------------------------------------------------------------------------ judging


def _finished_run(root: Path) -> RunPlan:
    data = {
        "name": "embedded",
        "targets": [
            {"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}
        ],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 1, "max_tokens": 100_000, "name": "all"}],
            "inference": {"max_new_tokens": 12, "stream": True},
        },
        "load": {"concurrency": [8], "requests_per_level": 16},
        "evaluation": {"judges": [{"name": "x", "model_id": "y"}]},
    }
    plan = materialize_plan(plan_suite(validate_suite_data(data), storage_root=str(root), run_id="r1"))
    save_plan(plan, str(root))
    outcomes = asyncio.run(run_branches(plan, 1))
    assert [o.status for o in outcomes] == ["succeeded"]
    return plan


def _judged(root: Path, plan: RunPlan, judge_url: str, embeddings_url: str, model_id: str) -> Any:
    target = {"name": "judge", "platform": "emulator", "model": "judge", "emulator": FAST}
    evaluation = Evaluation.model_validate(
        {
            "judges": [{"name": "j", "target": target}],
            "max_answers_per_bin": 6,
            "embeddings": {
                "model_id": model_id,
                "endpoint_url": embeddings_url,
                "price_per_1k_tokens_usd": PRICE_PER_1K,
            },
        }
    )
    judged = plan.model_copy(update={"suite": plan.suite.model_copy(update={"evaluation": evaluation})})
    return evaluate_run_async(judged, str(root), judge_urls={"j": judge_url})


def _rows(root: Path) -> list[dict[str, Any]]:
    glob = f"{root}/evaluations/*/*/*.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}')").df().to_dict("records")


async def test_judging_writes_the_titan_similarity_and_goes_on_without_it(
    tmp_path: Path, offline_aws_credentials: None
) -> None:
    plan = await asyncio.to_thread(_finished_run, tmp_path)
    judge = EmulatorSettings(model="judge", judge_error_rate=0.0, **FAST)
    bedrock = EmulatorSettings(**FAST, unavailable_models=(TITAN_V2,))
    async with running_emulator(judge) as judge_url, running_emulator(EmulatorSettings(**FAST)) as titan:
        summary = await _judged(tmp_path, plan, judge_url, titan, TITAN_V2)
    rows = _rows(tmp_path)
    prompts = read_prompts(prompts_folder(str(tmp_path), "r1"))
    glob = f"{tmp_path}/records/*/*/*.parquet"
    texts = dict(duckdb.sql(f"SELECT request_id, response_text FROM read_parquet('{glob}')").fetchall())
    assert len(rows) == 6 and {r["verdict"] for r in rows} <= {"correct", "incorrect"}
    tokens = 0
    for row in rows:
        answer = texts[row["request_id"]]
        references = prompts[("all", row["prompt_id"])].reference_answers
        vector = normalized(bag_of_words_vector(answer, 1024))
        expected = max(_cos(vector, normalized(bag_of_words_vector(r, 1024))) for r in references)
        assert row["embedding_similarity"] == pytest.approx(expected, abs=1e-12)
        tokens += sum(len(re.findall(r"\w+|[^\w\s]", t)) for t in (answer, *references))
    assert any(r["embedding_similarity"] > 0.5 for r in rows)  # some answers give their reference
    assert summary.embedding_cost_usd == pytest.approx(tokens * PRICE_PER_1K / 1000)

    # No access to the embeddings model: the similarity is NULL, the verdicts are all there.
    async with running_emulator(judge) as judge_url, running_emulator(bedrock) as denied:
        summary = await _judged(tmp_path, plan, judge_url, denied, TITAN_V2)
    rows = _rows(tmp_path)
    assert len(rows) == 6 and {r["verdict"] for r in rows} <= {"correct", "incorrect"}
    query = f"SELECT count(*) FROM read_parquet('{tmp_path}/evaluations/*/*/*.parquet') WHERE {{}}"
    assert duckdb.sql(query.format("embedding_similarity IS NULL")).fetchall() == [(6,)]
    assert summary.embedding_cost_usd == 0.0 and summary.judges[0].judged == 6
