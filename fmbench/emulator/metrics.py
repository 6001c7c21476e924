"""The emulator's ``/metrics``: Prometheus text exposition under vLLM's metric names (or TGI's or SGLang's,
``metrics_dialect``), from its own state.

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

``metrics_dialect: tgi`` or ``sglang`` publishes the same figures under those servers' names (as far as
they have one: TGI has no TTFT, KV-cache or prefix-cache figure), so the scraper's translation
(``fmbench.server_metrics.TRANSLATED_SAMPLES``) can be checked against the vLLM names of the same state.
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
    """Reads one emulator's state afresh at each scrape, under the names of its ``metrics_dialect``."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        dialect = self._state.settings.metrics_dialect
        if dialect == "tgi":
            yield from self._tgi()
        elif dialect == "sglang":
            yield from self._sglang()
        else:
            yield from self._vllm()

    def _kv_cache_usage(self) -> float | None:
        engine = self._state.engine
        if engine is None:
            return None
        return min(1.0, engine.kv_tokens_held / (KV_TOKENS_PER_SLOT * self._state.profile.max_batch))

    def _vllm(self) -> Iterator[Metric]:
        state = self._state
        model = [state.settings.model]
        labels = ["model_name"]
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
        usage = self._kv_cache_usage()
        if usage is not None:
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
        yield from self._latencies("vllm:", labels, model)

    def _latencies(self, prefix: str, labels: list[str], values: list[str]) -> Iterator[Metric]:
        totals = self._state.totals
        for name, doc, histogram in (
            ("time_to_first_token_seconds", "Time to first token from arrival.", totals.ttft),
            ("e2e_request_latency_seconds", "Arrival to last token, requests answered whole.", totals.e2e),
        ):
            family = HistogramMetricFamily(prefix + name, doc, labels=labels)
            family.add_metric(values, histogram.cumulative(), sum_value=histogram.sum_s)
            yield family

    def _sglang(self) -> Iterator[Metric]:
        """SGLang's names (``sglang:``, label ``model_name``); its token usage is the KV-cache usage."""
        state = self._state
        model = [state.settings.model]
        labels = ["model_name"]
        running, waiting = state.occupancy
        gauges = [
            ("sglang:num_running_reqs", "The number of running requests.", running),
            ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", waiting),
            ("sglang:cache_hit_rate", "The prefix cache hit rate.", 0.0),
        ]
        usage = self._kv_cache_usage()
        if usage is not None:
            gauges.append(("sglang:token_usage", "The token usage (KV cache), 1 is full.", usage))
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            gauge.add_metric(model, value)
            yield gauge
        for name, doc, total in (
            ("sglang:prompt_tokens", "Number of prefill tokens processed.", state.prompt_tokens_total),
            (
                "sglang:generation_tokens",
                "Number of generation tokens processed.",
                state.generation_tokens_total,
            ),
            ("sglang:cached_tokens", "Number of cached prompt tokens.", 0),
            ("sglang:num_requests", "Number of requests processed.", state.succeeded_total),
        ):
            counter = CounterMetricFamily(name, doc, labels=labels)
            counter.add_metric(model, total)
            yield counter
        yield from self._latencies("sglang:", labels, model)

    def _tgi(self) -> Iterator[Metric]:
        """TGI's names (``tgi_``, no model label, counters without ``_total`` as its Rust exporter writes
        them). TGI publishes no TTFT and no KV-cache usage, so neither is here. Its token histograms have
        one bucket (+Inf): the emulator keeps totals of tokens, not each request's."""
        state = self._state
        running, waiting = state.occupancy
        for name, doc, value in (
            ("tgi_batch_current_size", "Current batch size.", running),
            ("tgi_queue_size", "Current queue size.", waiting),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        for name, doc, tokens, count in (
            (
                "tgi_request_input_length",
                "Input tokens per request.",
                state.prompt_tokens_total,
                state.requests_total,
            ),
            (
                "tgi_request_generated_tokens",
                "Generated tokens per request.",
                state.generation_tokens_total,
                state.succeeded_total,
            ),
        ):
            family = HistogramMetricFamily(
                name, doc, buckets=[("+Inf", float(count))], sum_value=float(tokens)
            )
            yield family
        e2e = state.totals.e2e
        duration = HistogramMetricFamily(
            "tgi_request_duration", "Total time spent processing the request (e2e)."
        )
        duration.add_metric([], e2e.cumulative(), sum_value=e2e.sum_s)
        yield duration


def metrics_registry(state: EmulatorState) -> CollectorRegistry:
    """A registry of its own per emulator (never the process-wide one), holding only its collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EmulatorCollector(state))
    return registry


def _tgi_counters(state: EmulatorState) -> bytes:
    """TGI's counters as its Rust exporter writes them: ``# TYPE name counter`` and a sample of the same
    name, without the ``_total`` that prometheus_client's exposition would add to both."""
    lines = []
    for name, doc, total in (
        ("tgi_request_count", "Total number of requests.", state.requests_total),
        ("tgi_request_success", "Number of successful requests.", state.succeeded_total),
    ):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name} {float(total)!r}"]
    return ("\n".join(lines) + "\n").encode()


def exposition(registry: CollectorRegistry, state: EmulatorState | None = None) -> bytes:
    """The page: the registry's families, and with ``state`` in the TGI dialect TGI's counters."""
    page = generate_latest(registry)
    if state is not None and state.settings.metrics_dialect == "tgi":
        page += _tgi_counters(state)
    return page
