"""Property-based: malformed and hostile suites never crash validation; each gets a clear error."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmbench.config import Suite, SuiteValidationError
from fmbench.estimate import BudgetExceededError, check_budget
from fmbench.plan import plan_suite
from fmbench.suite import parse_suite_text, validate_suite_data

VALID: dict[str, Any] = {
    "name": "fuzz",
    "targets": [
        {"name": "emu", "platform": "emulator", "emulator": {"profile": "g5-2xlarge"}},
        {"name": "api", "platform": "openai", "endpoint_url": "http://127.0.0.1:8000/v1"},
    ],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 16}},
    "load": {"concurrency": [1, 4], "requests_per_level": 10},
    "slo": {"p95_latency_s": 5},
    "budget": {"max_usd": 25.0},
    "execution": {"max_parallel_branches": 2, "endpoint_ttl_s": 7200},
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["emulator", "openai", "sagemaker", "bedrock", "builtin:nope", "../../etc/passwd", "{x}"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def assert_clear_outcome(data: Any) -> None:
    try:
        suite = validate_suite_data(data)
    except SuiteValidationError as error:
        assert error.problems, "an invalid suite must name at least one problem"
        for problem in error.problems:
            assert problem.path and problem.reason
            assert "Traceback" not in problem.reason
        assert str(error).startswith("invalid suite")
    else:
        assert isinstance(suite, Suite)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_arbitrary_documents_get_a_clear_error(data: Any) -> None:
    assert_clear_outcome(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice=st.data())
def test_mutated_valid_suites_never_crash(choice: st.DataObject) -> None:
    """Replace, delete or add one field anywhere in a valid suite."""
    data = copy.deepcopy(VALID)
    path = choice.draw(st.sampled_from(paths(data)[1:]))
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    action = choice.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = choice.draw(json_values)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[choice.draw(st.text(max_size=12))] = choice.draw(json_values)
    else:
        parent.append(choice.draw(json_values))
    assert_clear_outcome(data)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        data = parse_suite_text(text, "fuzz.yaml")
    except SuiteValidationError as error:
        assert error.problems[0].path == "(file)"
        return
    assert_clear_outcome(data)


def test_hostile_yaml_is_refused_cleanly() -> None:
    hostile = [
        "!!python/object/apply:os.system ['echo pwned']",  # code execution attempt: safe_load refuses
        "a: &a [*a]",  # self-referencing alias
        "[" * 5000 + "]" * 5000,  # deep nesting
        json.dumps({"name": "x" * 100_000}),
    ]
    for text in hostile:
        try:
            data = parse_suite_text(text, "hostile.yaml")
        except SuiteValidationError as error:
            assert error.problems
            continue
        assert_clear_outcome(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_usd=json_values)
def test_any_budget_is_refused_clearly_or_checked_against_the_estimate(max_usd: Any) -> None:
    """NaN, infinities, negatives, strings, nesting: a clear problem at budget.max_usd, or a budget the
    estimate is checked against without a crash."""
    data = {**copy.deepcopy(VALID), "budget": {"max_usd": max_usd}}
    try:
        suite = validate_suite_data(data)
    except SuiteValidationError as error:
        assert [problem.path for problem in error.problems] == ["budget.max_usd"]
        return
    assert suite.budget.max_usd is None or (0 <= suite.budget.max_usd < float("inf"))
    estimate = plan_suite(suite, storage_root="(not written)", run_id="fuzz").cost_estimate
    assert estimate is not None
    try:
        check_budget(estimate, suite.budget)
    except BudgetExceededError as error:
        assert suite.budget.max_usd is not None and estimate.total_usd > suite.budget.max_usd
        assert str(error).splitlines()[0].startswith("the estimated cost")
