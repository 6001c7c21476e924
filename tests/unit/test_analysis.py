"""SLO selection and the result document: exact expectations on small hand-made metric tables."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from fmbench.config import Slo
from fmbench.suite import validate_suite_data
from report.analysis import (
    SELECTION_RULE,
    best_configuration,
    headline_bin_label,
    meets_slo,
    python_value,
    select_best,
)
from report.query import METRIC_COLUMNS
from report.result import (
    Artifacts,
    BestConfiguration,
    ResultDocument,
    SloSummary,
    overall_status,
    result_json_schema,
    write_result_schema,
)

NAN = math.nan


def metrics_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: NAN for name in METRIC_COLUMNS}
    row.update(
        run_id="run",
        branch_id="a-0001",
        target_name="a",
        platform="openai",
        model="m",
        container=None,
        instance_type="ml.g5.xlarge",
        instance_count=1,
        instance_price_per_hour_usd=1.0,
        load_mode="concurrency",
        concurrency=1,
        request_rate_per_s=NAN,
        payload_bin="big",
        requests=10,
        successes=10,
        errors=0,
        error_rate=0.0,
        window_s=10.0,
        latency_mean_s=1.0,
        latency_p50_s=1.0,
        latency_p95_s=1.5,
        latency_p99_s=1.8,
        ttft_p95_s=0.2,
        prompt_tokens_mean=100.0,
        completion_tokens_mean=50.0,
        prompt_token_throughput_per_s=100.0,
        completion_token_throughput_per_s=50.0,
        transactions_per_minute=60.0,
        price_per_txn_usd=0.001,
        price_per_1m_output_tokens_usd=20.0,
        client_bound=False,
    )
    row.update(overrides)
    return row


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))


def chosen(metrics: pd.DataFrame, slo: Slo, bin_label: str = "big") -> tuple[str, int] | None:
    best = select_best(metrics, slo, bins=[bin_label], headline_bin=bin_label).best
    return None if best is None else (best.branch_id, best.concurrency)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- meets_slo


def test_each_limit_of_the_slo() -> None:
    metrics = frame(
        metrics_row(concurrency=1),  # meets everything
        metrics_row(concurrency=2, errors=1, error_rate=0.1),  # exactly at the error limit: meets
        metrics_row(concurrency=3, errors=2, error_rate=0.2),  # above the error limit
        metrics_row(concurrency=4, latency_p95_s=2.0),  # exactly at the latency limit: meets
        metrics_row(concurrency=5, latency_p95_s=2.01),  # above the latency limit
        metrics_row(concurrency=6, ttft_p95_s=0.31),  # above the TTFT limit
        metrics_row(concurrency=7, ttft_p95_s=NAN),  # not streamed: no TTFT, cannot show it meets the limit
        metrics_row(
            concurrency=8, successes=0, errors=10, error_rate=0.0, latency_p95_s=NAN
        ),  # nothing served
    )
    slo = Slo(p95_latency_s=2.0, p95_ttft_s=0.3, max_error_rate=0.1)
    assert meets_slo(metrics, slo).tolist() == [True, True, False, True, False, False, False, False]


def test_unset_limits_are_not_checked() -> None:
    metrics = frame(metrics_row(latency_p95_s=100.0, ttft_p95_s=NAN), metrics_row(errors=1, error_rate=0.1))
    assert meets_slo(metrics, Slo()).tolist() == [True, False]  # max_error_rate defaults to 0
    assert meets_slo(metrics, Slo(max_error_rate=0.5)).tolist() == [True, True]


def test_empty_metrics_meet_nothing() -> None:
    assert meets_slo(frame(), Slo()).tolist() == []
    selection = select_best(frame(), Slo(), bins=["big"], headline_bin="big")
    assert selection.best is None
    assert selection.best_per_bin == {"big": None}


# ------------------------------------------------------------------------------------------- selection


def test_lowest_price_wins() -> None:
    metrics = frame(
        metrics_row(
            branch_id="a-0001", concurrency=1, price_per_txn_usd=0.003, transactions_per_minute=900.0
        ),
        metrics_row(branch_id="b-0002", concurrency=4, price_per_txn_usd=0.001, transactions_per_minute=10.0),
        metrics_row(
            branch_id="c-0003", concurrency=8, price_per_txn_usd=0.0005, latency_p95_s=9.0
        ),  # misses SLO
    )
    assert chosen(metrics, Slo(p95_latency_s=2.0)) == ("b-0002", 4)


def test_a_client_bound_load_point_is_never_best_even_if_cheapest() -> None:
    metrics = frame(
        metrics_row(branch_id="a-0001", concurrency=64, price_per_txn_usd=0.0001, client_bound=True),
        metrics_row(branch_id="a-0001", concurrency=8, price_per_txn_usd=0.002),
        metrics_row(
            branch_id="b-0002",
            concurrency=None,
            request_rate_per_s=40.0,
            load_mode="rate",
            price_per_txn_usd=0.00005,
            client_bound=True,
        ),
    )
    assert meets_slo(metrics, Slo()).tolist() == [True, True, True]  # the SLO figures alone would pass
    assert chosen(metrics, Slo()) == ("a-0001", 8)
    only_bound = frame(metrics_row(client_bound=True), metrics_row(concurrency=2, client_bound=True))
    assert select_best(only_bound, Slo(), bins=["big"], headline_bin="big").best is None
    assert "client-bound" in SELECTION_RULE and "never chosen" in SELECTION_RULE


def test_a_rate_mode_best_names_its_rate() -> None:
    metrics = frame(
        metrics_row(branch_id="r-0001", concurrency=None, request_rate_per_s=12.5, load_mode="rate"),
        metrics_row(branch_id="c-0002", concurrency=4, price_per_txn_usd=0.01),
    )
    best = select_best(metrics, Slo(), bins=["big"], headline_bin="big").best
    assert best is not None
    assert (best.branch_id, best.concurrency, best.request_rate_per_s) == ("r-0001", None, 12.5)


def test_price_tie_goes_to_more_transactions_then_lower_latency() -> None:
    metrics = frame(
        metrics_row(branch_id="a-0001", concurrency=1, transactions_per_minute=60.0, latency_p95_s=0.5),
        metrics_row(branch_id="b-0002", concurrency=2, transactions_per_minute=120.0, latency_p95_s=1.9),
        metrics_row(branch_id="c-0003", concurrency=4, transactions_per_minute=120.0, latency_p95_s=1.2),
    )
    assert chosen(metrics, Slo(p95_latency_s=2.0)) == ("c-0003", 4)


def test_full_tie_is_broken_by_branch_id_for_a_stable_answer() -> None:
    metrics = frame(
        metrics_row(branch_id="z-0009", concurrency=2), metrics_row(branch_id="m-0005", concurrency=2)
    )
    assert chosen(metrics, Slo()) == ("m-0005", 2)


def test_unknown_price_ranks_last() -> None:
    metrics = frame(
        metrics_row(branch_id="free-0001", price_per_txn_usd=NAN, transactions_per_minute=10_000.0),
        metrics_row(branch_id="paid-0002", price_per_txn_usd=5.0, transactions_per_minute=1.0),
    )
    assert chosen(metrics, Slo()) == ("paid-0002", 1)
    only_unknown = frame(
        metrics_row(branch_id="x-0001", price_per_txn_usd=NAN, transactions_per_minute=10.0),
        metrics_row(branch_id="y-0002", price_per_txn_usd=NAN, transactions_per_minute=20.0),
    )
    best = select_best(only_unknown, Slo(), bins=["big"], headline_bin="big").best
    assert best is not None
    assert (best.branch_id, best.price_per_txn, best.price_per_1m_output_tokens) == ("y-0002", None, 20.0)


def test_nobody_meets_the_slo() -> None:
    metrics = frame(
        metrics_row(payload_bin="small", latency_p95_s=3.0), metrics_row(payload_bin="big", latency_p95_s=4.0)
    )
    selection = select_best(metrics, Slo(p95_latency_s=2.0), bins=["small", "big"], headline_bin="big")
    assert selection.best is None
    assert selection.best_per_bin == {"small": None, "big": None}
    assert selection.found == []


def test_best_per_bin_in_the_given_bin_order() -> None:
    metrics = frame(
        metrics_row(payload_bin="big", branch_id="a-0001", concurrency=1, price_per_txn_usd=0.002),
        metrics_row(payload_bin="big", branch_id="a-0001", concurrency=4, price_per_txn_usd=0.001),
        metrics_row(payload_bin="small", branch_id="b-0002", concurrency=2, price_per_txn_usd=0.0001),
        metrics_row(payload_bin="mid", branch_id="a-0001", concurrency=1, latency_p95_s=50.0),
    )
    selection = select_best(metrics, Slo(p95_latency_s=2.0), bins=["small", "mid", "big"], headline_bin="big")
    assert list(selection.best_per_bin) == ["small", "mid", "big"]
    assert selection.best_per_bin["mid"] is None
    assert [(b.payload_file, b.branch_id, b.concurrency) for b in selection.found] == [
        ("small", "b-0002", 2),
        ("big", "a-0001", 4),
    ]
    assert selection.best == selection.best_per_bin["big"]


def test_best_configuration_uses_fmbench_field_names() -> None:
    row = pd.Series(
        metrics_row(
            target_name="llama-g5",
            branch_id="llama-g5-1234abcd",
            payload_bin="500-2000",
            instance_type="ml.g5.2xlarge",
            instance_count=2,
            concurrency=8,
            error_rate=0.05,
            latency_p95_s=2.5,
            ttft_p95_s=NAN,
        )
    )
    assert best_configuration(row).model_dump() == {
        "experiment_name": "llama-g5",
        "branch_id": "llama-g5-1234abcd",
        "payload_file": "500-2000",
        "instance_type": "ml.g5.2xlarge",
        "instance_count": 2,
        "concurrency": 8,
        "request_rate_per_s": None,
        "error_rate": 0.05,
        "prompt_token_count_mean": 100.0,
        "prompt_token_throughput": 100.0,
        "completion_token_count_mean": 50.0,
        "completion_token_throughput": 50.0,
        "latency_mean": 1.0,
        "latency_p50": 1.0,
        "latency_p95": 2.5,
        "latency_p99": 1.8,
        "ttft_p95": None,
        "transactions_per_minute": 60.0,
        "price_per_txn": 0.001,
        "price_per_1m_output_tokens": 20.0,
    }


def test_headline_bin_defaults_to_the_longest_prompts() -> None:
    data: dict[str, Any] = {
        "name": "s",
        "targets": [{"name": "t", "platform": "openai", "endpoint_url": "http://127.0.0.1:9/v1"}],
        "workload": {
            "bins": [{"min_tokens": 500, "max_tokens": 2000}, {"min_tokens": 50, "max_tokens": 500}]
        },
        "load": {"concurrency": [1], "requests_per_level": 1},
    }
    assert headline_bin_label(validate_suite_data(data)) == "500-2000"
    data["report"] = {"headline_bin": "50-500"}
    assert headline_bin_label(validate_suite_data(data)) == "50-500"


def test_selection_rule_names_every_criterion() -> None:
    for words in (
        "error rate",
        "p95 end-to-end latency",
        "time to first token",
        "lowest price per transaction",
    ):
        assert words in SELECTION_RULE
    assert "most transactions per minute" in SELECTION_RULE


def test_python_value_turns_missing_into_none() -> None:
    assert [python_value(v) for v in (NAN, pd.NA, None)] == [None, None, None]
    assert python_value(pd.Series([3], dtype="Int64")[0]) == 3
    assert isinstance(python_value(pd.Series([2.5])[0]), float)


# ------------------------------------------------------------------------------------------ result.json


def document(**overrides: Any) -> ResultDocument:
    fields: dict[str, Any] = {
        "run_id": "run",
        "suite_name": "s",
        "title": "t",
        "generated_at": datetime(2025, 1, 1, tzinfo=UTC),
        "status": "succeeded",
        "slo": SloSummary(p95_latency_s=2.0, p95_ttft_s=None, max_error_rate=0.0),
        "selection_rule": SELECTION_RULE,
        "headline_bin": "big",
        "best": None,
        "best_per_bin": [],
        "branches": [],
        "artifacts": Artifacts(
            report_md="r.md",
            report_html="r.html",
            summary_parquet="s.parquet",
            result_json="result.json",
            charts={},
            records_prefix="records/run_id=run/",
        ),
    }
    fields.update(overrides)
    return ResultDocument(**fields)


def test_nan_becomes_null_in_json() -> None:
    best = best_configuration(pd.Series(metrics_row(price_per_txn_usd=NAN, latency_p99_s=float("nan"))))
    data = json.loads(document(best=best, best_per_bin=[best]).model_dump_json())
    assert data["best"]["price_per_txn"] is None
    assert data["best"]["latency_p99"] is None
    assert data["generated_at"] == "2025-01-01T00:00:00Z"


def test_result_document_is_strict() -> None:
    with pytest.raises(ValidationError, match="extra"):
        document(unexpected=1)
    with pytest.raises(ValidationError, match="UTC"):
        document(generated_at=datetime(2025, 1, 1))
    with pytest.raises(ValidationError):
        BestConfiguration.model_validate({"experiment_name": "x"})


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["succeeded", "succeeded"], "succeeded"),
        (["succeeded", "failed"], "partial"),
        (["partial", "succeeded"], "partial"),
        (["failed", "failed"], "failed"),
        ([], "failed"),
    ],
)
def test_overall_status(statuses: list[Any], expected: str) -> None:
    assert overall_status(statuses) == expected


def test_schema_file_round_trips(tmp_path: Any) -> None:
    path = write_result_schema(tmp_path / "result.schema.json")
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema == json.loads(json.dumps(result_json_schema()))
    assert schema["properties"]["schema_version"]["const"] == "1"
    assert "seconds" in schema["$defs"]["BestConfiguration"]["properties"]["latency_p95"]["description"]
