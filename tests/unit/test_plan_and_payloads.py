"""Planning (stable branch ids, prices) and payloads (binning, the built-in dataset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmbench.config import DatasetSpec
from fmbench.payloads import DatasetError, build_payloads, load_records
from fmbench.plan import plan_suite
from fmbench.pricing import instance_price_per_hour_usd
from fmbench.suite import validate_suite_data
from fmbench.tokenizer import SimpleTokenizer, TokenizerError, get_tokenizer

REPO = Path(__file__).resolve().parents[2]


def make_suite(**overrides: object):
    data = {
        "name": "plan",
        "targets": [
            {"name": "fast", "platform": "emulator", "emulator": {"profile": "g5-12xlarge"}},
            {
                "name": "ext",
                "platform": "openai",
                "endpoint_url": "http://127.0.0.1:9/v1",
                "instance_type": "ml.g5.2xlarge",
            },
            {
                "name": "fixed",
                "platform": "emulator",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 4},
            },
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 2000}]
        },
        "load": {"concurrency": [1, 4, 16], "requests_per_level": 8},
        "pricing": {"instance_price_per_hour_usd": {"ml.g5.2xlarge": 2.0}},
    }
    data.update(overrides)
    return validate_suite_data(data)


def test_branch_ids_are_stable_for_the_same_content_and_change_with_it() -> None:
    first = plan_suite(make_suite(), storage_root="/tmp/a", run_id="r1")
    second = plan_suite(make_suite(), storage_root="/tmp/b", run_id="r2")
    assert [b.branch_id for b in first.branches] == [b.branch_id for b in second.branches]
    assert [b.branch_id.rsplit("-", 1)[0] for b in first.branches] == ["fast", "ext", "fixed"]
    changed = plan_suite(make_suite(load={"concurrency": [1, 4], "requests_per_level": 8}), "/tmp/a", "r1")
    assert all(a.branch_id != b.branch_id for a, b in zip(first.branches, changed.branches, strict=True))


def test_instances_and_prices_resolve_from_profile_override_and_table() -> None:
    plan = plan_suite(make_suite(), storage_root="/tmp/a", run_id="r1")
    fast, ext, fixed = plan.branches
    assert (fast.instance_type, fast.instance_price_per_hour_usd) == ("ml.g5.12xlarge", 7.09)
    assert (ext.instance_type, ext.instance_price_per_hour_usd) == ("ml.g5.2xlarge", 2.0)  # suite override
    assert (fixed.instance_type, fixed.instance_price_per_hour_usd) == (None, None)
    assert fast.load_point_count == 6
    assert instance_price_per_hour_usd("ml.p4d.24xlarge") == 37.688
    assert instance_price_per_hour_usd("ml.unknown.size") is None


def test_run_ids_are_unique_and_valid() -> None:
    ids = {plan_suite(make_suite(), storage_root="/tmp/a").run_id for _ in range(5)}
    assert len(ids) == 5


def test_payloads_are_binned_by_the_rendered_prompt_token_count() -> None:
    suite = make_suite()
    by_bin = build_payloads(suite.workload)
    tokenizer = get_tokenizer("simple")
    assert set(by_bin) == {"50-500", "500-2000"}
    for label, (low, high) in {"50-500": (50, 500), "500-2000": (500, 2000)}.items():
        prompts = by_bin[label]
        assert len(prompts) >= 10
        for prompt in prompts:
            assert low <= prompt.prompt_tokens < high
            assert prompt.prompt_tokens == tokenizer.count(prompt.text)
            assert prompt.text.endswith("Answer:")
            assert prompt.reference_answer


def test_user_jsonl_dataset_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.jsonl"
    good.write_text('{"question": "one two three", "answer": "x"}\n\n{"question": "four", "answer": "y"}\n')
    records = load_records(DatasetSpec(source="mine.jsonl"), base_dir=tmp_path)
    assert [r["answer"] for r in records] == ["x", "y"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{not json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_records(DatasetSpec(source=str(bad)))
    with pytest.raises(DatasetError, match="unknown built-in dataset 'nope'"):
        load_records(DatasetSpec(source="builtin:nope"))


def test_builtin_dataset_is_what_the_script_generates(tmp_path: Path) -> None:
    out = tmp_path / "regenerated.jsonl"
    subprocess.run([sys.executable, str(REPO / "scripts/make_dataset.py"), "--out", str(out)], check=True)
    committed = REPO / "fmbench/data/synthetic-qa.jsonl"
    assert out.read_bytes() == committed.read_bytes()
    records = [json.loads(line) for line in committed.read_text().splitlines()]
    assert len(records) == 240
    for record in records:
        assert record["answer"] in record["context"]  # the ground truth is stated in the passage
        assert record["question"].endswith("?")


def test_simple_tokenizer_counts_words_and_punctuation() -> None:
    assert SimpleTokenizer().count("Hello, world! It's 2026.") == 9  # Hello , world ! It ' s 2026 .
    assert SimpleTokenizer().count("") == 0
    with pytest.raises(TokenizerError):
        get_tokenizer("gpt-magic")


def test_a_branch_spec_round_trips_through_json_with_all_its_defaults() -> None:
    """The runner and the workflow read specs that the planner wrote: dump -> load must give the same spec."""
    from fmbench.spec import BranchSpec

    closed = make_suite()
    opened = make_suite(load={"rates_per_s": [2.0, 4.0], "arrival": "constant", "requests_per_level": 8})
    for suite in (closed, opened):
        for spec in plan_suite(suite, storage_root="/tmp/a", run_id="r1").branches:
            assert BranchSpec.model_validate_json(spec.model_dump_json()) == spec
