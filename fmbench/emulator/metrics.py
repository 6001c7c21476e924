"""The emulator's ``/metrics``: Prometheus text exposition under vLLM's metric names, from its own state.

Every figure is the emulator's true one at the moment of the scrape: the requests running and waiting
(``EmulatorState.occupancy``: the batch engine's batch and queue plus every request in flight outside the
engine, on any route), the tokens the batch holds, the tokens prefilled and generated, the requests answered
whole (by finish reason), and histograms of time to first token and end-to-end latency. The names and the
``model_name`` label are vLLM's (V1 engine, ``vllm:kv_cache_usage_perc`` rather than the older
``vllm:gpu_cache_usage_perc``), so the runner's scraper reads the emulator and a vLLM server alike.

The emulator models no KV-cache blocks and no prefix cache: its KV-cache usage is the tokens the batch
holds over ``KV_TOKENS_PER_SLOT`` tokens per batch slot, and its prefix cache is queried for every prompt
token and never hits. In fixed-timing mode every request is served on its own: all in flight are running,
none waits, and no KV-cache usage is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fmbench.emulator.state import EmulatorState

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Capacity of the emulated KV cache per batch slot, in tokens (prompt plus generated).
KV_TOKENS_PER_SLOT: Final = 4096


class EmulatorCollector(Collector):
    """Reads one emulator's state afresh at each scrape."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        model = [state.settings.model]
        labels = ["model_name"]
        engine = state.engine
        running, waiting = state.occupancy

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(model, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(model, value)
            return family

        yield gauge("vllm:num_requests_running", "Requests holding a batch slot.", running)
        yield gauge("vllm:num_requests_waiting", "Requests queued for a batch slot.", waiting)
        if engine is not None:
            capacity = KV_TOKENS_PER_SLOT * state.profile.max_batch
            usage = min(1.0, engine.kv_tokens_held / capacity)
            yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 is full.", usage)
        prompt_tokens = state.prompt_tokens_total
        yield counter("vllm:prompt_tokens", "Prompt tokens prefilled.", prompt_tokens)
        yield counter("vllm:generation_tokens", "Tokens generated.", state.generation_tokens_total)
        yield counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", prompt_tokens
        )
        yield counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", 0)
        success = CounterMetricFamily(
            "vllm:request_success", "Requests answered whole.", labels=[*labels, "finished_reason"]
        )
        for reason in sorted({"stop", "length", *state.totals.succeeded}):
            success.add_metric([*model, reason], state.totals.succeeded.get(reason, 0))
        yield success
        for name, doc, histogram in (
            ("vllm:time_to_first_token_seconds", "Time to first token from arrival.", state.totals.ttft),
            (
                "vllm:e2e_request_latency_seconds",
                "Arrival to last token, requests answered whole.",
                state.totals.e2e,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=labels)
            family.add_metric(model, histogram.cumulative(), sum_value=histogram.sum_s)
            yield family


def metrics_registry(state: EmulatorState) -> CollectorRegistry:
    """A registry of its own per emulator (never the process-wide one), holding only its collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EmulatorCollector(state))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
