"""The judging's pure parts: verdict parsing, the templates and the emulated judge reading them, lexical
scores against hand computation, answer selection, the judgment row, and the suite's evaluation checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmbench.config import SuiteValidationError
from fmbench.emulator.answers import AnswerBook, chunks, judge_verdict, verdict_text
from fmbench.evaluation.lexical import cosine, rouge_l_one, token_f1, token_f1_one
from fmbench.evaluation.parsing import parse_verdict
from fmbench.evaluation.selection import judged_prompts, select_answers
from fmbench.evaluation.templates import REASK_NOTE, judge_prompt
from fmbench.evaluation.writer import Judgment
from fmbench.judge_format import FAMILIES, family_of
from fmbench.judgments import JUDGMENT_SCHEMA
from fmbench.payloads import Prompt
from fmbench.suite import validate_suite_data

# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "verdict", "how"),
    [
        ('{"verdict": "correct", "reason": "same city"}', "correct", "json"),
        ('  {"Verdict": "INCORRECT"}  ', "incorrect", "json"),
        ('Sure.\n```json\n{"verdict": "incorrect", "reason": "no"}\n```\nDone.', "incorrect", "fenced_json"),
        ('```\n{"verdict": "correct"}\n```', "correct", "fenced_json"),
        ('Here is my assessment: {"verdict": "correct", "reason": "ok"} Thanks.', "correct", "embedded_json"),
        ("Verdict: correct\nReason: it names the mayor", "correct", "verdict_line"),
        ("**Verdict:** incorrect", "incorrect", "verdict_line"),
        ("reasoning first...\nverdict = Correct", "correct", "verdict_line"),
    ],
)
def test_a_verdict_is_read_from_json_fences_embedded_objects_and_lines(
    text: str, verdict: str, how: str
) -> None:
    parsed = parse_verdict(text)
    assert parsed is not None
    assert (parsed.verdict, parsed.how) == (verdict, how)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer seems right to me.",
        '{"verdict": "partially correct"}',
        '{"score": 1}',
        "Verdict: maybe",
        '["correct"]',
        "incorrectly formatted",
    ],
)
def test_anything_else_is_unparsed(text: str) -> None:
    assert parse_verdict(text) is None


def test_the_reason_comes_with_the_verdict() -> None:
    assert parse_verdict('{"verdict": "correct", "reason": "same"}').reason == "same"  # type: ignore[union-attr]
    assert parse_verdict("Verdict: incorrect\nReason: other year").reason == "other year"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- templates and families


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic"),
        ("us.meta.llama3-3-70b-instruct-v1:0", "llama"),
        ("mistral.mistral-large-2407-v1:0", "mistral"),
        ("cohere.command-r-plus-v1:0", "mistral"),
        ("us.amazon.nova-pro-v1:0", "nova"),
        ("gpt-4o-mini", "generic"),
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku", "anthropic"),
    ],
)
def test_the_family_is_detected_from_the_model_id(model_id: str, family: str) -> None:
    assert family_of(model_id) == family


@pytest.mark.parametrize("family", FAMILIES)
def test_every_template_holds_the_parts_the_emulated_judge_reads(family: Any) -> None:
    prompt = judge_prompt(
        family, "Who is the mayor of Salinka?", ("Bram Banka", "B. Banka"), "It is Bram Banka."
    )
    assert '"verdict"' in prompt.user and "correct" in prompt.user
    assert judge_verdict(prompt.user, 0.0, 0, family) == (
        "correct",
        "The candidate gives the reference answer.",
    )
    wrong = judge_prompt(family, "Who is the mayor of Salinka?", ("Bram Banka",), "Ada Velro")
    assert judge_verdict(wrong.user, 0.0, 0, family)[0] == "incorrect"  # type: ignore[index]
    assert judge_verdict(wrong.user, 1.0, 0, family)[0] == "correct"  # type: ignore[index]  # always flipped
    reask = judge_prompt(family, "q", ("a",), "a", reask=True)
    assert reask.user.startswith(REASK_NOTE)
    assert len({judge_prompt(f, "q", ("a",), "b").user for f in FAMILIES}) == len(FAMILIES)  # five templates


@pytest.mark.parametrize("family", FAMILIES)
def test_the_emulated_judges_formats_are_all_parsed(family: Any) -> None:
    text = verdict_text(family, "incorrect", "different year")
    parsed = parse_verdict(text)
    assert parsed is not None and (parsed.verdict, parsed.reason) == ("incorrect", "different year")
    assert "".join(chunks(text)) == text.rstrip()  # streamed as tokens, it reads back whole


def test_an_emulated_judge_errs_at_its_rate() -> None:
    prompts = [judge_prompt("generic", f"q{i}", ("yes",), "yes").user for i in range(2000)]
    flipped = sum(judge_verdict(p, 0.2, 7, "m")[0] == "incorrect" for p in prompts)  # type: ignore[index]
    assert abs(flipped / 2000 - 0.2) <= 4 * (0.2 * 0.8 / 2000) ** 0.5


def test_the_emulated_accuracy_falls_with_prompt_length() -> None:
    lines = [
        {"bin": "b", "id": str(i), "text": f"question {i}", "reference_answers": [f"answer{i}"]}
        for i in range(3000)
    ]
    book = AnswerBook(lines)
    for tokens, expected in ((0, 0.8), (1000, 0.5), (3000, 0.0)):
        right = sum(book.answer(f"question {i}", tokens, 0.8, 0.3, 1) == f"answer{i}" for i in range(3000))
        assert abs(right / 3000 - expected) <= 4 * (max(expected * (1 - expected), 1e-9) / 3000) ** 0.5 + 1e-9
    wrong = book.answer("question 5", 3000, 0.8, 0.3, 1)
    assert wrong != "answer5" and wrong is not None and wrong.startswith("answer")  # another prompt's truth
    assert book.answer("an unknown prompt", 0, 1.0, 0.0, 1) is None
    assert book.answer("question 9", 500, 0.8, 0.3, 4) == book.answer("question 9", 500, 0.8, 0.3, 4)


# ---------------------------------------------------------------------------------------- lexical


def _lcs(a: list[str], b: list[str]) -> int:
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i, j] = table[i - 1, j - 1] + 1 if x == y else max(table[i - 1, j], table[i, j - 1])
    return int(table[-1, -1])


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("The mayor is Bram Banka.", "Bram Banka"),
        ("banka bram", "Bram Banka"),
        ("in 1359, then 1360", "1359"),
        ("olive oil and copper and oil", "olive oil"),
        ("nothing here", "copper"),
    ],
)
def test_token_f1_and_rouge_l_match_hand_computation(prediction: str, reference: str) -> None:
    norm = {
        "The mayor is Bram Banka.": "mayor is bram banka",
        "banka bram": "banka bram",
        "in 1359, then 1360": "in 1359 then 1360",
        "olive oil and copper and oil": "olive oil and copper and oil",
        "nothing here": "nothing here",
        "Bram Banka": "bram banka",
        "1359": "1359",
        "olive oil": "olive oil",
        "copper": "copper",
    }
    pred, ref = norm[prediction].split(), norm[reference].split()
    common = sum(min(pred.count(t), ref.count(t)) for t in set(ref))
    f1 = (
        0.0
        if common == 0
        else 2 * (common / len(pred)) * (common / len(ref)) / (common / len(pred) + common / len(ref))
    )
    lcs = _lcs(pred, ref)
    rl = 0.0 if lcs == 0 else 2 * (lcs / len(pred)) * (lcs / len(ref)) / (lcs / len(pred) + lcs / len(ref))
    assert token_f1_one(prediction, reference) == pytest.approx(f1)
    assert rouge_l_one(prediction, reference) == pytest.approx(rl)


def test_the_best_reference_counts_and_empty_texts() -> None:
    assert token_f1("Bram Banka", ["Ada Velro", "Bram Banka"]) == 1.0
    assert token_f1("", ["x"]) == 0.0 and token_f1_one("", "") == 1.0
    assert token_f1("x", []) is None
    vectors = np.array([[1.0, 2.0, 3.0], [2.0, 0.5, -1.0]])
    expected = float(vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1]))
    assert cosine(list(vectors[0]), list(vectors[1])) == pytest.approx(expected)
    assert cosine([0.0, 0.0], [1.0, 1.0]) is None and cosine([1.0], [1.0, 2.0]) is None


# -------------------------------------------------------------------------------------- selection


def test_the_same_prompts_are_judged_for_every_candidate_capped_per_bin() -> None:
    prompts = {
        ("b", str(i)): Prompt(str(i), f"q{i}", 5, f"a{i}", reference_answers=(f"a{i}",)) for i in range(50)
    }
    prompts[("b", "nogt")] = Prompt("nogt", "q", 5, None)
    first = {("b", str(i)): (f"r{i}", "x") for i in range(50)}
    first[("b", "nogt")] = ("rn", "x")
    second = {key: (f"s{key[1]}", "y") for key in first}
    chosen = [
        select_answers(found, prompts, branch_id=name, target_name=name, max_per_bin=10, seed=3)
        for name, found in (("one", first), ("two", second))
    ]
    ids = [[a.prompt.record_id for a in answers] for answers in chosen]
    assert len(ids[0]) == 10 and ids[0] == ids[1]  # the same ten prompts, in the same order
    assert "nogt" not in ids[0]  # a prompt without a reference is not judged
    other_seed = select_answers(first, prompts, branch_id="one", target_name="one", max_per_bin=10, seed=4)
    assert [a.prompt.record_id for a in other_seed] != ids[0]


def test_the_quality_pass_sends_what_the_judging_of_a_full_load_selects() -> None:
    """One definition of the judged prompts: chosen from the bins' prompts before the load (what a quality
    pass sends), they are those chosen from the answers of a load that answered every prompt."""
    prompts = {
        (b, f"{b}{i}"): Prompt(f"{b}{i}", f"q{i}", 5, "a", reference_answers=("a",))
        for b, count in (("x", 30), ("y", 4))
        for i in range(count)
    }
    by_bin: dict[str, list[Prompt]] = {}
    for (b, _), prompt in prompts.items():
        by_bin.setdefault(b, []).append(prompt)
    sent = judged_prompts(by_bin, max_per_bin=7, seed=5)
    assert {b: len(found) for b, found in sent.items()} == {"x": 7, "y": 4}
    everything = {key: (f"r-{key[1]}", "t") for key in prompts}
    under_load = select_answers(everything, prompts, branch_id="b", target_name="t", max_per_bin=7, seed=5)
    assert [(a.payload_bin, a.prompt.record_id) for a in under_load] == [
        (b, p.record_id) for b, found in sent.items() for p in found
    ]
    # the quality pass's answers, one per prompt sent: judged as they are, marked as theirs
    answered = {(b, p.record_id): (f"q-{p.record_id}", "t") for b, found in sent.items() for p in found}
    quality = select_answers(
        answered, prompts, branch_id="b", target_name="t", max_per_bin=7, seed=5, source="quality_pass"
    )
    assert [a.request_id for a in quality] == [
        answered[(a.payload_bin, a.prompt.record_id)][0] for a in quality
    ]
    assert len(quality) == 11 and {a.source for a in quality} == {"quality_pass"}
    # a prompt whose quality request failed is missing, not replaced by another prompt
    del answered[("x", sent["x"][0].record_id)]
    fewer = select_answers(
        answered, prompts, branch_id="b", target_name="t", max_per_bin=7, seed=5, source="quality_pass"
    )
    assert len(fewer) == 10 and sent["x"][0].record_id not in {a.prompt.record_id for a in fewer}


def test_the_judgment_row_is_the_schema() -> None:
    assert [f.name for f in dataclasses.fields(Judgment)] == JUDGMENT_SCHEMA.names


# ------------------------------------------------------------------------------------- suite checks


def _suite(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "s",
        "targets": [{"name": "t", "platform": "emulator"}],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 1, "max_tokens": 9000}],
        },
        "load": {"concurrency": [1], "requests_per_level": 2},
        "evaluation": {"judges": [{"name": "j", "model_id": "us.amazon.nova-pro-v1:0"}]},
    }
    data.update(changes)
    return data


def _problems(tmp_path: Path, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data, base_dir=tmp_path)
    return {p.path: p.reason for p in caught.value.problems}


def test_min_accuracy_needs_an_evaluation(tmp_path: Path) -> None:
    data = _suite(tmp_path, slo={"min_accuracy": 0.8})
    del data["evaluation"]
    assert "evaluation" in _problems(tmp_path, data)["slo.min_accuracy"]
    assert validate_suite_data(_suite(tmp_path, slo={"min_accuracy": 0.8})).slo.min_accuracy == 0.8


def test_a_judged_dataset_needs_its_ground_truth(tmp_path: Path) -> None:
    rows = [{"context": "c", "question": f"q{i}?", "answer": "a"} for i in range(3)]
    (tmp_path / "no-truth.jsonl").write_text(
        "\n".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) for r in rows)
    )
    workload = {"dataset": {"source": "no-truth.jsonl"}, "bins": [{"min_tokens": 1, "max_tokens": 9000}]}
    reason = _problems(tmp_path, _suite(tmp_path, workload=workload))["workload.dataset.ground_truth"]
    assert "no reference answer" in reason and "answer, answers" in reason
    named = {**workload, "dataset": {"source": "no-truth.jsonl", "ground_truth": "gold"}}
    assert "gold" in _problems(tmp_path, _suite(tmp_path, workload=named))["workload.dataset.ground_truth"]
    synthetic = {"synthetic": {"prompt_tokens": 20}, "bins": [{"min_tokens": 1, "max_tokens": 9000}]}
    reason = _problems(tmp_path, _suite(tmp_path, workload=synthetic))["workload.dataset.ground_truth"]
    assert "synthetic prompts have no ground truth" in reason
    # a quality pass sends the judged prompts: its own field is named too
    passed = {"judges": [{"name": "j", "model_id": "us.amazon.nova-pro-v1:0"}], "quality_pass": True}
    found = _problems(tmp_path, _suite(tmp_path, workload=synthetic, evaluation=passed))
    assert "reference answer" in found["evaluation.quality_pass"]
    assert "evaluation.quality_pass" not in _problems(tmp_path, _suite(tmp_path, workload=synthetic))


def test_the_default_panel_is_three_bedrock_families_and_judges_are_checked(tmp_path: Path) -> None:
    suite = validate_suite_data(_suite(tmp_path, evaluation={}))
    assert suite.evaluation is not None
    panel = suite.evaluation.judges
    assert [j.resolved_family for j in panel] == ["anthropic", "llama", "nova"]
    assert all(j.model_id and j.input_price_per_1k_tokens_usd > 0 for j in panel)
    twice = {"judges": [{"name": "j", "model_id": "a"}, {"name": "j", "model_id": "b"}]}
    assert "unique" in _problems(tmp_path, _suite(tmp_path, evaluation=twice))["evaluation.judges"]
    both = {"judges": [{"name": "j", "model_id": "a", "target": {"name": "x", "platform": "emulator"}}]}
    assert "exactly one" in _problems(tmp_path, _suite(tmp_path, evaluation=both))["evaluation.judges.0"]
    ec2_target = {"name": "x", "platform": "ec2", "instance_type": "g5.xlarge", "container": "vllm"}
    ec2_target["model_source"] = {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"}
    ec2 = {"judges": [{"name": "j", "target": ec2_target}]}
    assert (
        "judges are not deployed"
        in _problems(tmp_path, _suite(tmp_path, evaluation=ec2))["evaluation.judges.0"]
    )
    unknown = {"judges": [{"name": "j", "model_id": "a", "temperature": 0}]}
    assert (
        "unknown field"
        in _problems(tmp_path, _suite(tmp_path, evaluation=unknown))["evaluation.judges.0.temperature"]
    )


# ----------------------------------------------------------------------------------------- estimate


def test_the_template_bound_holds_every_template() -> None:
    from fmbench.judge_format import TEMPLATE_TOKENS_BOUND
    from fmbench.tokenizer import get_tokenizer

    count = get_tokenizer("simple").count
    assert all(
        count(judge_prompt(f, "", (), "", reask=True).text()) <= TEMPLATE_TOKENS_BOUND for f in FAMILIES
    )


def test_the_judging_cost_bound_is_answers_times_judges_times_tokens_times_price(tmp_path: Path) -> None:
    from fmbench.config import Budget
    from fmbench.estimate import BudgetExceededError, check_budget
    from fmbench.judge_format import TEMPLATE_TOKENS_BOUND
    from fmbench.plan import plan_suite

    judge = {
        "name": "j",
        "model_id": "m",
        "input_price_per_1k_tokens_usd": 0.001,
        "output_price_per_1k_tokens_usd": 0.002,
    }
    evaluation = {"judges": [judge, {**judge, "name": "k"}], "max_answers_per_bin": 30}
    workload = {
        "dataset": {"source": "builtin:synthetic-qa"},
        "bins": [{"min_tokens": 1, "max_tokens": 500}, {"min_tokens": 500, "max_tokens": 9000}],
        "inference": {"max_new_tokens": 64},
    }
    data = _suite(
        tmp_path,
        workload=workload,
        evaluation=evaluation,
        load={"concurrency": [1, 2], "requests_per_level": 10},
    )
    suite = validate_suite_data(data)
    estimate = plan_suite(suite, str(tmp_path), "r").cost_estimate
    assert estimate is not None
    parts = [p for p in estimate.parts if p.platform == "judge"]
    assert [p.target_name for p in parts] == ["judge j", "judge k"]
    answers_per_bin = min(30, 2 * 10)  # two levels of 10 requests, capped at 30
    calls = 2 * answers_per_bin * 2  # two bins, each answer asked twice
    tokens_in = (
        2
        * answers_per_bin
        * ((TEMPLATE_TOKENS_BOUND + 2 * 499 + 64) + (TEMPLATE_TOKENS_BOUND + 2 * 8999 + 64))
    )
    tokens_out = calls * 256
    for part in parts:
        assert (part.requests, part.input_tokens, part.output_tokens) == (calls, tokens_in, tokens_out)
        assert part.usd == pytest.approx((tokens_in * 0.001 + tokens_out * 0.002) / 1000)
    assert estimate.total_usd == pytest.approx(sum(p.usd or 0 for p in estimate.parts))
    with pytest.raises(BudgetExceededError, match="judge j"):
        check_budget(estimate, Budget(max_usd=sum(p.usd or 0 for p in parts) / 2))


def test_a_judges_unset_api_key_is_refused_before_the_run(tmp_path: Path) -> None:
    from fmbench.suite import unset_api_keys

    target = {
        "name": "x",
        "platform": "openai",
        "endpoint_url": "http://127.0.0.1:1/v1",
        "api_key_env": "JUDGE_KEY",
    }
    suite = validate_suite_data(_suite(tmp_path, evaluation={"judges": [{"name": "j", "target": target}]}))
    assert [str(p) for p in unset_api_keys(suite, {})] == [
        "evaluation.judges.0.target.api_key_env: environment variable JUDGE_KEY is not set"
    ]
    assert unset_api_keys(suite, {"JUDGE_KEY": "k"}) == []
