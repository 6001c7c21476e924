"""How the report writes numbers, units, loads and user text in its Markdown (and the HTML made from it)."""

from __future__ import annotations

import html
import re
from typing import Any

from fmbench.config import Slo
from fmbench.estimate import usd_text
from report.analysis import python_value
from report.result import SloSummary

NOT_AVAILABLE = "n/a"

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md(text: Any) -> str:
    """User text (names, error reasons) made safe for a Markdown table cell and for the HTML built from it."""
    if text is None:
        return NOT_AVAILABLE
    flat = " ".join(str(text).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)


def number(value: Any, digits: int = 4) -> str:
    value = python_value(value)
    if value is None:
        return NOT_AVAILABLE
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def seconds(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:.3f}" if value >= 0.01 else f"{value:.3g}"


def usd(value: Any) -> str:
    value = python_value(value)
    if value is None:
        return NOT_AVAILABLE
    return f"{value:,.4f}" if value >= 0.01 else f"{value:.3g}"


def money(value: float | None) -> str:
    """A cost total in the estimate's own wording (the same text as ``fmbench plan`` prints)."""
    return NOT_AVAILABLE if value is None else usd_text(value)


def percent(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value * 100:.1f}%"


def signed_percent(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:+.1f}%"


def cores(value: Any) -> str:
    value = python_value(value)
    return NOT_AVAILABLE if value is None else f"{value:.2f}"


def load_label(concurrency: Any, rate_per_s: Any) -> str:
    concurrency, rate_per_s = python_value(concurrency), python_value(rate_per_s)
    if concurrency is not None:
        return f"concurrency {concurrency}"
    if rate_per_s is not None:
        return f"{rate_per_s:g} req/s"
    return NOT_AVAILABLE


def slo_text(slo: Slo | SloSummary) -> str:
    latency = f"<= {slo.p95_latency_s:g} s" if slo.p95_latency_s is not None else "no limit"
    ttft = f"<= {slo.p95_ttft_s:g} s" if slo.p95_ttft_s is not None else "no limit"
    text = f"p95 latency {latency}; p95 TTFT {ttft}; error rate <= {slo.max_error_rate * 100:g}%"
    if slo.min_accuracy is not None:
        text += f"; majority-vote accuracy >= {slo.min_accuracy * 100:g}%"
    return text + goodput_slo_text(slo)


def goodput_slo_text(slo: Slo | SloSummary) -> str:
    """'; goodput: TTFT <= 0.5 s, TPOT <= 0.05 s per request', or '' when no per-request SLO is set."""
    limits = [
        f"{label} <= {value:g} s"
        for label, value in (
            ("TTFT", getattr(slo, "request_ttft_s", None)),
            ("TPOT", getattr(slo, "request_tpot_s", None)),
            ("latency", getattr(slo, "request_latency_s", None)),
        )
        if value is not None
    ]
    return f"; goodput: {', '.join(limits)} per request" if limits else ""


def goodput(share: Any, per_s: Any) -> str:
    """A load point's goodput cell: '12.3/s (95.0%)', requests per second and share; n/a: not computed."""
    share, per_s = python_value(share), python_value(per_s)
    if share is None or per_s is None:
        return NOT_AVAILABLE
    return f"{number(per_s)}/s ({percent(share)})"
