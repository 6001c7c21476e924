"""A request record with every required field set, for tests that build records by hand."""

from __future__ import annotations

from typing import Any

from fmbench.records import RequestRecord


def make_record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "suite_name": "suite",
        "target_name": "target",
        "platform": "openai",
        "model": "model",
        "container": None,
        "instance_type": "ml.g5.xlarge",
        "instance_count": 1,
        "instance_price_per_hour_usd": 3.6,
        "api": "chat",
        "load_mode": "concurrency",
        "concurrency": 1,
        "request_rate_per_s": None,
        "payload_bin": "50-500",
        "request_id": "r",
        "prompt_id": None,
        "phase": "measured",
        "scheduled_epoch_s": 0.0,
        "send_epoch_s": 0.0,
        "first_token_epoch_s": None,
        "end_epoch_s": 1.0,
        "ttft_s": None,
        "latency_s": 1.0,
        "itl_s": [],
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "status": "ok",
    }
    fields.update(overrides)
    return RequestRecord(**fields)
