"""accuracy.sql (transpiled to DuckDB) against a plain Python/numpy count of the same definitions, and the
Wilson interval and both kappas against hand formulas and textbook cases."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from judgment_factory import judgment, write_judgments

from report.accuracy import (
    accuracy_view,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_sums,
    wilson_interval,
)
from report.query import ACCURACY_COLUMNS, accuracy_figures, athena_accuracy_query, has_judgments

RUN_ID = "20250101T000000Z-acc123"
BRANCHES = {"alpha-1111": "alpha", "beta-2222": "beta", "gamma-3333": "gamma"}
BINS = ["50-500", "500-2000"]
JUDGES = ["claude", "llama", "mistral", "nova"]  # four: ties of two against two happen
VERDICT_P = [0.5, 0.3, 0.1, 0.1]  # correct, incorrect, unparsed, error


def random_judgments(rng: np.random.Generator) -> dict[str, list[dict[str, Any]]]:
    """Judgments with ties, unparsed and error verdicts, a judge that skipped some prompts, rows written
    twice (a retried task: the later one counts), unknown costs and missing token counts."""
    by_branch: dict[str, list[dict[str, Any]]] = {}
    for branch_id, target in BRANCHES.items():
        skill = {"alpha-1111": 0.8, "beta-2222": 0.5, "gamma-3333": 0.3}[branch_id]
        rows = []
        for bin_label in BINS:
            for number in range(int(rng.integers(6, 14))):
                prompt = f"p{number:03d}"
                truth = rng.random() < skill
                for judge in JUDGES:
                    if judge == "nova" and rng.random() < 0.3:
                        continue  # this judge never saw the prompt
                    draw = rng.random()
                    if draw < 0.12:
                        verdict = "unparsed"
                    elif draw < 0.22:
                        verdict = "error"
                    else:
                        agree = rng.random() < 0.8
                        verdict = "correct" if truth == agree else "incorrect"
                    for copy in range(2 if rng.random() < 0.08 else 1):
                        flipped = {"correct": "incorrect", "incorrect": "correct"}.get(verdict, verdict)
                        rows.append(
                            judgment(
                                target,
                                prompt,
                                judge,
                                flipped if copy == 0 and rng.random() < 0.5 else verdict,
                                payload_bin=bin_label,
                                judged_epoch_s=1_700_000_000.0 + 10 * copy + rng.random(),
                                attempts=int(rng.integers(1, 3)),
                                prompt_tokens=None if rng.random() < 0.05 else int(rng.integers(200, 900)),
                                completion_tokens=int(rng.integers(5, 60)),
                                cost_usd=None if rng.random() < 0.1 else float(rng.uniform(1e-4, 3e-3)),
                            )
                        )
        rng.shuffle(rows)  # type: ignore[arg-type]
        by_branch[branch_id] = rows
    return by_branch


def expected_figures(by_branch: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every figure of accuracy.sql, counted in plain Python."""
    all_rows = [(branch_id, row) for branch_id, rows in by_branch.items() for row in rows]
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for branch_id, row in all_rows:
        key = (branch_id, row["payload_bin"], row["prompt_id"], row["judge"])
        if key not in latest or row["judged_epoch_s"] > latest[key]["judged_epoch_s"]:
            latest[key] = row
    votes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    prompts: set[tuple[str, str, str]] = set()
    for (branch_id, payload_bin, prompt, _judge), row in latest.items():
        prompts.add((branch_id, payload_bin, prompt))
        if row["verdict"] in ("correct", "incorrect"):
            votes[(branch_id, payload_bin, prompt)].append(row["verdict"])

    def majority(key: tuple[str, str, str]) -> str:
        cast = votes.get(key, [])
        correct, incorrect = cast.count("correct"), cast.count("incorrect")
        return "correct" if correct > incorrect else "incorrect" if incorrect > correct else "none"

    def majority_counts(keys: list[tuple[str, str, str]]) -> dict[str, Any]:
        outcome = [majority(key) for key in keys]
        return {
            "prompts": len(keys),
            "majority_correct": outcome.count("correct"),
            "majority_incorrect": outcome.count("incorrect"),
            "no_majority": outcome.count("none"),
            "accuracy": outcome.count("correct") / len(keys),
        }

    candidates = {b: majority_counts([k for k in prompts if k[0] == b]) for b in by_branch}
    per_bin = {
        (b, label): majority_counts([k for k in prompts if k[0] == b and k[1] == label])
        for b in by_branch
        for label in BINS
    }

    def judge_counts(rows: list[tuple[str, dict[str, Any]]], kept: list[dict[str, Any]]) -> dict[str, Any]:
        verdicts = [row["verdict"] for row in kept]
        correct, incorrect = verdicts.count("correct"), verdicts.count("incorrect")
        return {
            "verdicts": len(kept),
            "correct": correct,
            "incorrect": incorrect,
            "unparsed": verdicts.count("unparsed"),
            "error_verdicts": verdicts.count("error"),
            "share_correct": correct / (correct + incorrect) if correct + incorrect else None,
            "attempts": sum(row["attempts"] for _, row in rows),
            "prompt_tokens": sum(row["prompt_tokens"] or 0 for _, row in rows),
            "completion_tokens": sum(row["completion_tokens"] or 0 for _, row in rows),
            "cost_usd": sum(row["cost_usd"] or 0.0 for _, row in rows),
            "verdicts_without_cost": sum(row["cost_usd"] is None for _, row in rows),
        }

    judges = {
        judge: judge_counts(
            [(b, r) for b, r in all_rows if r["judge"] == judge],
            [r for k, r in latest.items() if k[3] == judge],
        )
        for judge in JUDGES
    }
    judge_candidates = {
        (judge, branch_id): judge_counts(
            [(b, r) for b, r in all_rows if r["judge"] == judge and b == branch_id],
            [r for k, r in latest.items() if k[3] == judge and k[0] == branch_id],
        )
        for judge in JUDGES
        for branch_id in by_branch
    }
    pairs = {}
    for first, second in itertools.combinations(sorted(JUDGES), 2):
        table = np.zeros((2, 2), dtype=int)
        for key in prompts:
            a, b = latest.get((*key, first)), latest.get((*key, second))
            if (
                a
                and b
                and a["verdict"] in ("correct", "incorrect")
                and b["verdict"] in ("correct", "incorrect")
            ):
                table[int(a["verdict"] == "incorrect"), int(b["verdict"] == "incorrect")] += 1
        pairs[(first, second)] = table
    counts = np.array(
        [[votes.get(k, []).count("correct"), votes.get(k, []).count("incorrect")] for k in sorted(prompts)]
    )
    return {
        "candidates": candidates,
        "per_bin": per_bin,
        "judges": judges,
        "judge_candidates": judge_candidates,
        "pairs": pairs,
        "vote_counts": counts,
        "panel": judge_counts(all_rows, list(latest.values())),
        "prompts": len(prompts),
    }


def close(actual: Any, expected: Any) -> bool:
    if expected is None:
        return actual is None or (isinstance(actual, float) and math.isnan(actual)) or actual is pd.NA
    if isinstance(expected, float):
        return math.isclose(float(actual), expected, rel_tol=1e-9, abs_tol=1e-12)
    return bool(actual == expected)


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, Any]]:
    root = tmp_path_factory.mktemp("judged")
    by_branch = random_judgments(np.random.default_rng(20251207))
    write_judgments(root, RUN_ID, by_branch, part_rows=37)
    figures = accuracy_figures(str(root), RUN_ID)
    assert figures is not None
    return figures, expected_figures(by_branch)


def rows_of(figures: pd.DataFrame, figure: str) -> list[dict[str, Any]]:
    return figures[figures["figure"] == figure].to_dict(orient="records")


def test_columns_and_figure_sets(judged: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    figures, expected = judged
    assert tuple(figures.columns) == ACCURACY_COLUMNS
    assert figures["figure"].value_counts().to_dict() == {
        "candidate": 3,
        "candidate_bin": 6,
        "judge": 4,
        "judge_candidate": 12,
        "judge_pair": 6,
        "panel": 1,
    }
    assert len(expected["candidates"]) == 3


def test_majority_accuracy_per_candidate_and_bin(judged: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    figures, expected = judged
    ties = 0
    for row in rows_of(figures, "candidate"):
        want = expected["candidates"][row["branch_id"]]
        assert row["target_name"] == BRANCHES[row["branch_id"]]
        for column, value in want.items():
            assert close(row[column], value), (row["branch_id"], column, row[column], value)
        ties += row["no_majority"]
    assert ties > 0  # the data exercise ties
    for row in rows_of(figures, "candidate_bin"):
        want = expected["per_bin"][(row["branch_id"], row["payload_bin"])]
        for column, value in want.items():
            assert close(row[column], value), (row["branch_id"], row["payload_bin"], column)


def test_per_judge_and_per_judge_and_candidate(judged: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    figures, expected = judged
    for row in rows_of(figures, "judge"):
        assert row["branch_id"] is None or pd.isna(row["branch_id"])
        assert row["judge_model"] == f"model-of-{row['judge']}"
        for column, value in expected["judges"][row["judge"]].items():
            assert close(row[column], value), (row["judge"], column, row[column], value)
    for row in rows_of(figures, "judge_candidate"):
        for column, value in expected["judge_candidates"][(row["judge"], row["branch_id"])].items():
            assert close(row[column], value), (row["judge"], row["branch_id"], column)
    panel = rows_of(figures, "panel")[0]
    assert panel["unparsed"] > 0 and panel["error_verdicts"] > 0 and panel["verdicts_without_cost"] > 0
    for column in ("verdicts", "unparsed", "error_verdicts", "attempts", "prompt_tokens", "cost_usd"):
        assert close(panel[column], expected["panel"][column]), column
    assert panel["prompts"] == expected["prompts"]


def test_judge_pairs_and_their_kappa(judged: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    figures, expected = judged
    view = accuracy_view(figures)
    assert view is not None
    assert {(p.judge, p.other_judge) for p in view.pairs} == set(expected["pairs"])
    for pair in view.pairs:
        table = expected["pairs"][(pair.judge, pair.other_judge)]
        assert [
            [pair.both_correct, pair.first_only_correct],
            [pair.second_only_correct, pair.both_incorrect],
        ] == (table.tolist())
        assert pair.prompts == table.sum()
        # Cohen's kappa by the hand formula on the 2 x 2 table
        n = table.sum()
        p_o = (table[0, 0] + table[1, 1]) / n
        p_e = (table[0].sum() * table[:, 0].sum() + table[1].sum() * table[:, 1].sum()) / n**2
        assert pair.cohen_kappa == pytest.approx((p_o - p_e) / (1 - p_e))


def test_panel_fleiss_kappa_and_wilson_from_the_sql(judged: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    figures, expected = judged
    view = accuracy_view(figures, min_accuracy=0.6)
    assert view is not None
    counts = expected["vote_counts"]
    rated = counts[counts.sum(axis=1) >= 2]
    assert view.rated_prompts == len(rated)
    # Fleiss by hand over prompts with two or more votes (raters per prompt vary)
    n = rated.sum(axis=1)
    p_bar = np.mean((rated * (rated - 1)).sum(axis=1) / (n * (n - 1)))
    shares = rated.sum(axis=0) / rated.sum()
    p_e = (shares**2).sum()
    assert view.fleiss_kappa == pytest.approx((p_bar - p_e) / (1 - p_e))
    for candidate in view.candidates:
        assert candidate.interval == pytest.approx(
            wilson_interval(candidate.majority_correct, candidate.prompts), abs=1e-12
        )
    alpha = view.of_branch("alpha-1111")
    assert alpha is not None and alpha.accuracy is not None
    assert view.meets_floor("alpha-1111") == (alpha.accuracy >= 0.6)
    assert not view.meets_floor("not-judged")
    assert view.cost_usd == pytest.approx(expected["panel"]["cost_usd"])


def test_a_run_without_judgments_has_no_accuracy(tmp_path: Path) -> None:
    assert not has_judgments(str(tmp_path), RUN_ID)
    assert accuracy_figures(str(tmp_path), RUN_ID) is None
    assert accuracy_view(None) is None


def test_a_known_case_end_to_end(tmp_path: Path) -> None:
    """Three judges on four prompts: 2-1 correct, 1-1 tie (one error), 0-3, and all unparsed."""
    rows = [
        judgment("a", "p1", "j1", "correct"),
        judgment("a", "p1", "j2", "correct"),
        judgment("a", "p1", "j3", "incorrect"),
        judgment("a", "p2", "j1", "correct"),
        judgment("a", "p2", "j2", "incorrect"),
        judgment("a", "p2", "j3", "error"),
        judgment("a", "p3", "j1", "incorrect"),
        judgment("a", "p3", "j2", "incorrect"),
        judgment("a", "p3", "j3", "incorrect"),
        judgment("a", "p4", "j1", "unparsed"),
        judgment("a", "p4", "j2", "unparsed"),
        judgment("a", "p4", "j3", "unparsed"),
    ]
    write_judgments(tmp_path, RUN_ID, {"a-1": rows})
    view = accuracy_view(accuracy_figures(str(tmp_path), RUN_ID), min_accuracy=0.25)
    assert view is not None
    (only,) = view.candidates
    assert (only.prompts, only.majority_correct, only.majority_incorrect, only.no_majority) == (4, 1, 1, 2)
    assert only.accuracy == 0.25
    assert view.meets_floor("a-1")
    assert view.rated_prompts == 3  # p4 has no vote
    assert [(j.judge, j.correct, j.incorrect, j.unparsed, j.error_verdicts) for j in view.judges] == [
        ("j1", 2, 1, 1, 0),
        ("j2", 1, 2, 1, 0),
        ("j3", 0, 2, 1, 1),
    ]
    assert view.judges[0].share_correct == pytest.approx(2 / 3)
    assert view.cost_usd == pytest.approx(0.012)


def test_wilson_interval_against_the_hand_formula() -> None:
    z = 1.959963984540054
    for successes, total in [(8, 10), (0, 5), (5, 5), (37, 120), (1, 1)]:
        p = successes / total
        centre = (p + z * z / (2 * total)) / (1 + z * z / total)
        half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
        low, high = wilson_interval(successes, total)  # type: ignore[misc]
        assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
        assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)
    # A published case: 8 of 10 gives about [0.490, 0.943] at 95%.
    low, high = wilson_interval(8, 10)  # type: ignore[misc]
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_the_wilson_interval_always_holds_its_estimate() -> None:
    """Every all-wrong, all-right and mixed count up to 200: low <= p <= high exactly (13 of 13 once came
    out with its upper end a rounding error below 1)."""
    for total in range(1, 201):
        for successes in {0, 1, total // 2, total - 1, total}:
            low, high = wilson_interval(successes, total)  # type: ignore[misc]
            assert 0.0 <= low <= successes / total <= high <= 1.0, (successes, total, low, high)


def test_cohen_kappa_textbook_case() -> None:
    # 50 items, two readers: 20 both yes, 15 both no, 5 and 10 disagreeing: p_o 0.7, p_e 0.5, kappa 0.4.
    assert cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert cohen_kappa([[10, 0], [0, 10]]) == pytest.approx(1.0)
    assert cohen_kappa([[7, 0], [0, 0]]) is None  # one category only: undefined
    assert cohen_kappa([[0, 0], [0, 0]]) is None


def test_fleiss_kappa_textbook_case() -> None:
    # Fleiss (1971) as worked in the usual textbook example: 10 subjects, 14 raters, 5 categories:
    # P_bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert round(fleiss_kappa(table), 3) == 0.210  # type: ignore[arg-type]
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # every vote in one category
    assert fleiss_kappa_from_sums(0, 0.0, [0, 0]) is None
    # Two raters: Fleiss' kappa is Scott's pi, close to (not equal to) Cohen's kappa.
    assert fleiss_kappa([[2, 0]] * 20 + [[0, 2]] * 15 + [[1, 1]] * 15) == pytest.approx(
        1 - (15 / 50) / (1 - ((55 / 100) ** 2 + (45 / 100) ** 2))
    )


def test_the_athena_query_names_the_judgments_partitions() -> None:
    sql = athena_accuracy_query(RUN_ID, ["alpha-1111", "beta-2222"])
    assert "FROM judgments" in sql
    assert "judgments.branch_id IN ('alpha-1111', 'beta-2222')" in sql
    assert f"run_id = '{RUN_ID}'" in sql


def test_the_answer_source_per_candidate_and_for_the_panel_and_old_files_without_it(tmp_path: Path) -> None:
    def rows(target: str, source: str | None) -> list[dict[str, Any]]:
        return [
            judgment(target, str(i), judge, "correct", answer_source=source)
            for i in range(3)
            for judge in ("a", "b")
        ]

    write_judgments(tmp_path / "mixed", RUN_ID, {"b1": rows("t1", "load"), "b2": rows("t2", "quality_pass")})
    figures = accuracy_figures(str(tmp_path / "mixed"), RUN_ID)
    assert figures is not None
    candidates = {r["branch_id"]: r["answer_source"] for r in rows_of(figures, "candidate")}
    assert candidates == {"b1": "load", "b2": "quality_pass"}
    assert {r["answer_source"] for r in rows_of(figures, "candidate_bin")} == {"load", "quality_pass"}
    assert all(pd.isna(r["answer_source"]) for r in rows_of(figures, "judge"))
    assert rows_of(figures, "panel")[0]["answer_source"] == "mixed"
    view = accuracy_view(figures)
    assert view is not None and view.answer_source == "mixed"
    assert {c.branch_id: c.answer_source for c in view.candidates} == candidates

    # judgments written before the column existed: the same figures, the source unknown
    old = tmp_path / "old"
    write_judgments(old, RUN_ID, {"b1": rows("t1", None)})
    for part in old.rglob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["answer_source"]), part)
    assert "answer_source" not in pq.read_schema(next(old.rglob("*.parquet"))).names
    figures = accuracy_figures(str(old), RUN_ID)
    assert figures is not None and figures["answer_source"].isna().all()
    candidate = rows_of(figures, "candidate")[0]
    assert (candidate["prompts"], candidate["majority_correct"]) == (3, 3)
