"""The accuracy floor in the selection: the cheapest load point that meets the latency and error SLO *and*
whose branch's majority-vote accuracy reaches slo.min_accuracy; a branch never judged cannot reach it."""

from __future__ import annotations

from test_analysis import chosen, frame, metrics_row

from fmbench.config import Slo
from report.analysis import SELECTION_RULE, meets_accuracy_floor, select_best, selection_rule
from report.formatting import slo_text

CHEAP_WRONG = metrics_row(branch_id="cheap-1", target_name="cheap", price_per_txn_usd=0.001)
DEAR_RIGHT = metrics_row(branch_id="dear-2", target_name="dear", price_per_txn_usd=0.004)
UNJUDGED = metrics_row(branch_id="unjudged-3", target_name="unjudged", price_per_txn_usd=0.0001)
ACCURACY = {"cheap-1": 0.55, "dear-2": 0.91}


def test_a_cheaper_but_inaccurate_branch_loses_to_a_dearer_accurate_one() -> None:
    metrics = frame(CHEAP_WRONG, DEAR_RIGHT, UNJUDGED)
    floored = Slo(p95_latency_s=2.0, min_accuracy=0.8)
    best = select_best(metrics, floored, bins=["big"], headline_bin="big", accuracy=ACCURACY).best
    assert best is not None and best.branch_id == "dear-2"
    # Without a floor the accuracy does not matter: the cheapest wins, the unjudged one included.
    assert chosen(metrics, Slo(p95_latency_s=2.0)) == ("unjudged-3", 1)


def test_the_floor_is_inclusive_and_needs_judgments() -> None:
    metrics = frame(CHEAP_WRONG, DEAR_RIGHT, UNJUDGED)
    assert meets_accuracy_floor(metrics, Slo(min_accuracy=0.55), ACCURACY).tolist() == [True, True, False]
    assert meets_accuracy_floor(metrics, Slo(min_accuracy=0.92), ACCURACY).tolist() == [False, False, False]
    assert meets_accuracy_floor(metrics, Slo(), None).tolist() == [True, True, True]
    assert meets_accuracy_floor(metrics, Slo(min_accuracy=0.1), None).tolist() == [False, False, False]
    assert meets_accuracy_floor(frame(), Slo(min_accuracy=0.1), ACCURACY).tolist() == []
    # A judged branch without a judged prompt (accuracy None) does not reach a floor either.
    assert meets_accuracy_floor(frame(CHEAP_WRONG), Slo(min_accuracy=0.0), {"cheap-1": None}).tolist() == [
        False
    ]


def test_nothing_is_chosen_when_no_judged_branch_reaches_the_floor() -> None:
    metrics = frame(CHEAP_WRONG, DEAR_RIGHT)
    selection = select_best(
        metrics, Slo(min_accuracy=0.95), bins=["big"], headline_bin="big", accuracy=ACCURACY
    )
    assert selection.best is None and selection.best_per_bin == {"big": None}


def test_the_rule_and_the_slo_text_read_the_floor_only_when_set() -> None:
    assert selection_rule(Slo()) == SELECTION_RULE
    rule = selection_rule(Slo(min_accuracy=0.8))
    assert rule.startswith(SELECTION_RULE) and "accuracy floor" in rule and "not judged" in rule
    assert "accuracy" not in slo_text(Slo(p95_latency_s=2.0))
    assert slo_text(Slo(p95_latency_s=2.0, min_accuracy=0.8)).endswith("; majority-vote accuracy >= 80%")
