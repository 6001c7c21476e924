"""Embeddings of answers and references, for their cosine similarity: a Bedrock Titan text embeddings
model (InvokeModel, one text a call) or an OpenAI-compatible ``/embeddings`` API (a batch a call).
A failure leaves the similarity empty (NULL); it never stops the judging."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import aiohttp

from fmbench.config import EmbeddingsSpec
from fmbench.endpoints.bedrock import BedrockClient

LOG = logging.getLogger(__name__)


class Embedder:
    def __init__(self, spec: EmbeddingsSpec, timeout_s: float = 60.0) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.tokens = 0  # tokens embedded (as the service counted them, else words)
        self._bedrock = (
            BedrockClient(spec.model_id, region=spec.region, endpoint_url=spec.endpoint_url)
            if spec.model_id is not None
            else None
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def cost_usd(self) -> float:
        return self.tokens * self.spec.price_per_1k_tokens_usd / 1000.0

    async def embed(self, texts: Sequence[str]) -> list[list[float]] | None:
        try:
            if self._bedrock is not None:
                return [await self._bedrock_one(text) for text in texts]
            return await self._openai(texts)
        except Exception as exc:  # noqa: BLE001 - a similarity is optional; the verdicts are what counts
            LOG.warning("embeddings failed: %s: %s", type(exc).__name__, exc)
            return None

    async def _bedrock_one(self, text: str) -> list[float]:
        assert self._bedrock is not None
        client = await self._bedrock._get_client()
        response = await client.invoke_model(
            modelId=self.spec.model_id,
            body=json.dumps({"inputText": text}),
            contentType="application/json",
            accept="application/json",
        )
        body = json.loads(await response["body"].read())
        self.tokens += int(body.get("inputTextTokenCount") or len(text.split()))
        return [float(x) for x in body["embedding"]]

    async def _openai(self, texts: Sequence[str]) -> list[list[float]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        body = {"model": self.spec.model, "input": list(texts)}
        async with self._session.post(f"{self.spec.url}/embeddings", json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        usage = answer.get("usage") or {}
        self.tokens += int(usage.get("prompt_tokens") or sum(len(t.split()) for t in texts))
        data = sorted(answer["data"], key=lambda item: item["index"])
        return [[float(x) for x in item["embedding"]] for item in data]

    async def aclose(self) -> None:
        if self._bedrock is not None:
            await self._bedrock.aclose()
        if self._session is not None:
            await self._session.close()
