"""Calling one judge: its endpoint client, bounded concurrency, retries with backoff, the re-ask, the cost.

A judge is called as a branch calls a target, through ``fmbench.endpoints`` (Bedrock Converse, the OpenAI
chat API, a SageMaker endpoint), without streaming. A call that fails with a class worth retrying
(throttling, a 5xx, a timeout, a lost connection) is retried after ``backoff_s``, doubled each time, at
most ``retries`` times; a refusal (403, 404, a validation error) is not. An answer with no readable verdict
is asked again once. Whatever happens, the verdict is a row: ``error`` (with the last call's error class)
when no call answered, ``unparsed`` when both answers were unreadable.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from fmbench.config import (
    BedrockTarget,
    EmulatorTarget,
    Evaluation,
    InferenceParameters,
    Judge,
    OpenAITarget,
    SageMakerTarget,
)
from fmbench.endpoints.base import (
    CONNECTION_ERROR,
    HTTP_5XX,
    HTTP_429,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    TIMEOUT,
    EndpointClient,
    InvocationResult,
)
from fmbench.endpoints.bedrock import BedrockClient
from fmbench.endpoints.formats import payload_format
from fmbench.endpoints.openai import OpenAIClient
from fmbench.endpoints.sagemaker import SageMakerClient
from fmbench.evaluation.parsing import ParsedVerdict, parse_verdict
from fmbench.evaluation.templates import JudgePrompt, judge_prompt
from fmbench.tokenizer import get_tokenizer

REFUSALS_BEFORE_GIVING_UP = 3
RETRIED_CLASSES = frozenset({HTTP_429, HTTP_5XX, TIMEOUT, CONNECTION_ERROR, STREAM_CUT, MALFORMED_RESPONSE})


class JudgeSetupError(ValueError):
    """A judge that cannot be called at all (an emulator judge without its URL, an unset API key)."""


def judge_client(judge: Judge, evaluation: Evaluation, emulator_url: str | None = None) -> EndpointClient:
    """The endpoint client of a judge, with a pool as large as its concurrency."""
    pool = evaluation.max_concurrency
    read_timeout_s = evaluation.request_timeout_s + 1.0
    target = judge.target
    if target is None or isinstance(target, BedrockTarget):
        model_id = judge.model_id if target is None else target.model_id
        assert model_id is not None
        return BedrockClient(
            model_id,
            region=judge.region if target is None else target.region,
            endpoint_url=judge.endpoint_url if target is None else target.endpoint_url,
            max_connections=pool,
            read_timeout_s=read_timeout_s,
        )
    if isinstance(target, EmulatorTarget):
        if emulator_url is None:
            raise JudgeSetupError(f"evaluation judge {judge.name!r}: its emulator was not started")
        return OpenAIClient(
            emulator_url.rstrip("/") + "/v1", api="chat", model=target.model, max_connections=pool
        )
    if isinstance(target, OpenAITarget):
        api_key = None
        if target.api_key_env:
            api_key = os.environ.get(target.api_key_env)
            if api_key is None:
                raise JudgeSetupError(
                    f"evaluation judge {judge.name!r}: environment variable {target.api_key_env} is not set"
                )
        return OpenAIClient(
            target.endpoint_url,
            api=target.api,
            model=target.model,
            api_key=api_key,
            headers=target.headers,
            max_connections=pool,
            extra_body=target.extra_body,
        )
    if not isinstance(target, SageMakerTarget):  # an ec2 judge is refused by the suite's models
        raise JudgeSetupError(f"evaluation judge {judge.name!r}: platform {target.platform} cannot judge")
    assert target.endpoint_name is not None  # a deployed SageMaker judge is refused by the suite's models
    payload = payload_format(
        target.payload_format,
        model=target.model,
        request_template=target.request_template,
        response_text_path=target.response_text_path,
    )
    return SageMakerClient(
        target.endpoint_name,
        payload,
        region=target.region,
        endpoint_url=target.endpoint_url,
        max_connections=pool,
        read_timeout_s=read_timeout_s,
    )


@dataclass(slots=True)
class Verdict:
    """What one judge made of one answer, after its retries and its re-ask."""

    verdict: str
    reason: str | None = None
    error_class: str | None = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    cost_usd: float | None = None
    raw_text: str | None = None
    how: str | None = None  # how the verdict was read (parsing), for tests and logs


@dataclass(slots=True)
class _Spent:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    answered: bool = False


@dataclass
class JudgeCaller:
    """One judge of the panel with its client; ``verdict`` is safe to call concurrently."""

    judge: Judge
    evaluation: Evaluation
    client: EndpointClient

    def __post_init__(self) -> None:
        # A judge refused three times in a row (denied, not found: no retry helps) is not called again;
        # its remaining verdicts carry that refusal.
        self._refusals = 0
        self._refusal: InvocationResult | None = None
        self._gate = asyncio.Semaphore(self.evaluation.max_concurrency)
        self._params = InferenceParameters(
            max_new_tokens=self.evaluation.inference.max_tokens,
            temperature=self.evaluation.inference.temperature,
            stream=False,
        )

    @property
    def uses_chat(self) -> bool:
        return not isinstance(self.client, SageMakerClient)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        judge = self.judge
        return (
            prompt_tokens * judge.input_price_per_1k_tokens_usd
            + completion_tokens * judge.output_price_per_1k_tokens_usd
        ) / 1000.0

    async def _call(self, prompt: JudgePrompt, spent: _Spent) -> tuple[InvocationResult, int]:
        """One asking, retried while worth it; (the last result, the calls made)."""
        calls = 0
        delay_s = self.evaluation.backoff_s
        while True:
            if self._refusal is not None:
                return self._refusal, calls
            calls += 1
            async with self._gate:
                result = await self.client.invoke(
                    prompt.text(),
                    self._params,
                    self.evaluation.request_timeout_s,
                    messages=prompt.messages() if self.uses_chat else None,
                )
            spent.latency_s += max(0.0, result.end_perf_s - result.send_perf_s)
            if result.status == "ok":
                spent.answered = True
                counter = get_tokenizer("simple")
                spent.prompt_tokens += (
                    result.usage_prompt_tokens
                    if result.usage_prompt_tokens is not None
                    else counter.count(prompt.text())
                )
                spent.completion_tokens += (
                    result.usage_completion_tokens
                    if result.usage_completion_tokens is not None
                    else counter.count(result.text)
                )
                self._refusals = 0
                return result, calls
            if result.error_class not in RETRIED_CLASSES:
                self._refusals += 1
                if self._refusals >= REFUSALS_BEFORE_GIVING_UP:
                    self._refusal = result
                return result, calls
            if calls > self.evaluation.retries:
                return result, calls
            await asyncio.sleep(delay_s)
            delay_s *= 2

    async def verdict(self, question: str, references: tuple[str, ...], candidate: str) -> Verdict:
        family = self.judge.resolved_family
        spent = _Spent()
        attempts = 0
        raw: str | None = None
        parsed: ParsedVerdict | None = None
        last: InvocationResult | None = None
        for reask in (False, True):
            prompt = judge_prompt(family, question, references, candidate, reask=reask)
            last, calls = await self._call(prompt, spent)
            attempts += calls
            if last.status != "ok":
                break
            raw = last.text
            parsed = parse_verdict(last.text)
            if parsed is not None:
                break
        outcome = Verdict(verdict="unparsed", attempts=attempts, raw_text=raw, latency_s=spent.latency_s)
        if spent.answered:
            outcome.prompt_tokens = spent.prompt_tokens
            outcome.completion_tokens = spent.completion_tokens
            outcome.cost_usd = self.cost(spent.prompt_tokens, spent.completion_tokens)
        else:
            outcome.cost_usd = 0.0
        if parsed is not None:
            outcome.verdict, outcome.reason, outcome.how = parsed.verdict, parsed.reason, parsed.how
        elif raw is None and last is not None and last.status != "ok":  # no call answered at all
            outcome.verdict = "error"
            outcome.error_class = last.error_class
            outcome.reason = last.error_message
        return outcome


def now_epoch_s() -> float:
    return time.time()
