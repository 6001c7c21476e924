"""A judged run's report: accuracy tables, charts, result.json, the judging cost and the accuracy floor in the
selection, from real Parquet judgments read by DuckDB (accuracy.sql) under the run's evaluations layout."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_report_render import REPO, run_plan, suite_data

from fmbench.config import RegressionOptions, Slo
from fmbench.plan import BranchOutcome, RunPlan
from report.regression_report import compare_saved_runs
from report.render import generate_report
from report.result import ResultDocument, read_result

sys.path.insert(0, str(REPO / "tests" / "unit"))
from judgment_factory import judgment, write_judgments

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
JUDGES = ("claude", "llama", "nova")
# Per target: prompts per bin whose judges vote (correct, incorrect); one tie and one all-unparsed prompt
# are added to "large".
SMALL_VOTES = [(3, 0)] * 8 + [(2, 1)] * 1 + [(0, 3)] * 1  # 9 of 10 majority-correct per bin
LARGE_VOTES = [(3, 0)] * 3 + [(1, 2)] * 6  # 3 of 9 majority-correct per bin, + a tie + no vote
COST_PER_ROW = 0.002


def judgments_for(target: str, votes: list[tuple[int, int]], extra: bool) -> list[dict[str, Any]]:
    rows = []
    for bin_label in ("50-500", "500-2000"):
        for number, (correct, incorrect) in enumerate(votes):
            verdicts = ["correct"] * correct + ["incorrect"] * incorrect
            for judge, verdict in zip(JUDGES, verdicts, strict=True):
                rows.append(
                    judgment(
                        target, f"p{number}", judge, verdict, payload_bin=bin_label, cost_usd=COST_PER_ROW
                    )
                )
        if extra:
            tie = ["correct", "incorrect", "error"]
            for judge, verdict in zip(JUDGES, tie, strict=True):
                rows.append(
                    judgment(target, "tie", judge, verdict, payload_bin=bin_label, cost_usd=COST_PER_ROW)
                )
            for judge in JUDGES:
                rows.append(
                    judgment(
                        target, "unread", judge, "unparsed", payload_bin=bin_label, cost_usd=COST_PER_ROW
                    )
                )
    return rows


def with_slo(plan: RunPlan, **slo: Any) -> RunPlan:
    """The plan with another SLO, as if the suite had said so (the evaluation section is not this test's)."""
    suite = plan.suite.model_copy(update={"slo": Slo(p95_latency_s=3.0, **slo)})
    return plan.model_copy(update={"suite": suite})


def judged_run(tmp_path: Path) -> tuple[RunPlan, list[BranchOutcome], str]:
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    ids = {b.target.name: b.branch_id for b in plan.branches}
    write_judgments(
        root,
        plan.run_id,
        {
            ids["small"]: judgments_for("small", SMALL_VOTES, extra=False),
            ids["large"]: judgments_for("large", LARGE_VOTES, extra=True),
        },
        part_rows=25,
    )
    return plan, outcomes, root


@pytest.fixture(scope="module")
def floored(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPlan, ResultDocument, Path]:
    tmp_path = tmp_path_factory.mktemp("judged")
    plan, outcomes, root = judged_run(tmp_path)
    plan = with_slo(plan, min_accuracy=0.7)
    report_dir = tmp_path / "reports"
    document = generate_report(plan, outcomes, root, report_dir, generated_at=WHEN)
    return plan, document, report_dir


def test_a_cheaper_inaccurate_branch_loses_to_a_dearer_accurate_one(
    floored: tuple[RunPlan, ResultDocument, Path], tmp_path: Path
) -> None:
    _, document, _ = floored
    assert document.best is not None
    # Without the floor "large" is the cheapest under the latency SLO; with it, "small" (concurrency 1: its
    # p95 latency at concurrency 4 is 4 s, over the 3 s limit).
    assert (document.best.experiment_name, document.best.concurrency) == ("small", 1)
    assert "accuracy floor" in document.selection_rule
    assert document.slo.min_accuracy == 0.7
    unfloored_plan, outcomes, root = judged_run(tmp_path)
    unfloored = generate_report(unfloored_plan, outcomes, root, tmp_path / "reports", generated_at=WHEN)
    assert unfloored.best is not None and unfloored.best.experiment_name == "large"
    assert "accuracy floor" not in unfloored.selection_rule
    assert price(unfloored) < price(document)


def price(document: ResultDocument) -> float:
    assert document.best is not None and document.best.price_per_txn is not None
    return document.best.price_per_txn


def test_result_json_carries_accuracy_per_branch_and_the_agreement(
    floored: tuple[RunPlan, ResultDocument, Path],
) -> None:
    _, document, report_dir = floored
    assert read_result(report_dir / "result.json") == document
    by_name = {b.target_name: b for b in document.branches}
    small, large = by_name["small"].accuracy, by_name["large"].accuracy
    assert by_name["broken"].accuracy is None  # never judged
    assert small is not None and large is not None
    assert (small.judged_prompts, small.majority_correct, small.no_majority) == (20, 18, 0)
    assert small.majority_accuracy == pytest.approx(0.9) and small.meets_floor
    # large: 2 x (9 + tie + unread) = 22 prompts, 6 majority-correct, 4 without a majority
    assert (large.judged_prompts, large.majority_correct, large.majority_incorrect, large.no_majority) == (
        22,
        6,
        12,
        4,
    )
    assert large.majority_accuracy == pytest.approx(6 / 22) and large.meets_floor is False
    assert small.interval_low is not None and small.interval_high is not None
    assert small.interval_low < 0.9 < small.interval_high
    agreement = document.agreement
    assert agreement is not None
    assert [j.judge for j in agreement.judges] == list(JUDGES)
    nova = agreement.judges[2]
    assert (nova.unparsed, nova.errors) == (2, 2)
    assert len(agreement.pairs) == 3 and agreement.fleiss_kappa is not None
    assert agreement.rated_prompts == 40  # every prompt but the two unread ones has 2 or 3 votes
    assert {(s.judge, s.target_name) for s in agreement.judge_candidates} == {
        (j, t) for j in JUDGES for t in ("small", "large")
    }


def test_the_judging_cost_is_its_own_line_in_the_actual_cost(
    floored: tuple[RunPlan, ResultDocument, Path],
) -> None:
    _, document, report_dir = floored
    cost = document.cost
    assert cost is not None and cost.judging is not None
    rows = (len(SMALL_VOTES) * 3 + (len(LARGE_VOTES) + 2) * 3) * 2
    assert cost.judging.usd == pytest.approx(rows * COST_PER_ROW)
    assert cost.judging.complete
    branches = sum(part.usd or 0.0 for part in cost.actual_parts)
    assert cost.actual_usd == pytest.approx(branches + rows * COST_PER_ROW, abs=1e-6)
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    assert re.search(r"\| Judging \(panel of LLM judges\) \|  \| n/a \| \$0\.\d+ \|", text)


def test_markdown_and_html_show_the_accuracy(floored: tuple[RunPlan, ResultDocument, Path]) -> None:
    _, document, report_dir = floored
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    sections = ["## Cost", "## Accuracy", "### Judges", "### Agreement between judges", "## Results per load"]
    positions = [text.index(heading) for heading in sections]
    assert positions == sorted(positions)
    assert "| `accuracy` (majority vote) | 90.0% |" in text
    assert "Accuracy (majority vote) |" in text  # the best-per-bin table's column
    assert re.search(
        r"\| large \| `[^`]+` \| 22 \| 6 \| 12 \| 4 \| 27\.3% \| [\d.]+% to [\d.]+% \| \*\*no\*\* \|", text
    )
    assert "4 judged prompt(s) had no majority" in text
    assert "Fleiss' kappa over the panel: **" in text
    assert "Cohen's kappa" in text and "Wilson score interval" in text  # the definitions
    assert set(document.artifacts.charts) >= {"majority_accuracy", "accuracy_vs_prompt_length"}
    assert "](majority_accuracy.png)" in text and "](accuracy_vs_prompt_length.png)" in text
    assert (report_dir / "majority_accuracy.png").read_bytes().startswith(b"\x89PNG")
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "<h2>Accuracy</h2>" in html and "(majority_accuracy.png)" not in html


def test_a_floor_without_judgments_chooses_nothing(tmp_path: Path) -> None:
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    document = generate_report(
        with_slo(plan, min_accuracy=0.5), outcomes, root, tmp_path / "r", generated_at=WHEN
    )
    assert document.best is None and document.best_per_bin == []
    assert all(b.accuracy is None for b in document.branches) and document.agreement is None
    text = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "## Accuracy" not in text
    assert "majority_accuracy" not in document.artifacts.charts
    assert "but not the accuracy floor of 50% (the run was not judged)" in text


def test_a_run_never_judged_has_no_accuracy_anywhere(tmp_path: Path) -> None:
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    document = generate_report(plan, outcomes, root, tmp_path / "r", generated_at=WHEN)
    data = json.loads((tmp_path / "r" / "result.json").read_text(encoding="utf-8"))
    assert data["agreement"] is None and data["cost"]["judging"] is None
    assert all(branch["accuracy"] is None for branch in data["branches"])
    text = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "ccuracy" not in text.split("## Metric definitions")[0]
    assert document.best is not None and document.best.experiment_name == "large"


def test_accuracy_definitions_are_the_same_in_docs_and_report() -> None:
    definitions = (REPO / "report" / "templates" / "accuracy_definitions.md").read_text(encoding="utf-8")
    docs = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    between = re.search(
        r"<!-- accuracy-definitions:start -->\n(.*?)<!-- accuracy-definitions:end -->", docs, re.S
    )
    assert between is not None
    assert between.group(1) == definitions


def test_a_saved_run_whose_accuracy_dropped_is_regressed(tmp_path: Path) -> None:
    """compare_saved_runs reads both runs' judgments (accuracy.sql on DuckDB) beside their requests."""
    runs = {}
    for name, correct_share in (("base", 1.0), ("cand", 0.5)):
        plan, _, root = run_plan(tmp_path / name, suite_data())
        ids = {b.target.name: b.branch_id for b in plan.branches}
        rows = [
            judgment("small", f"p{n}", judge, "correct" if n < 60 * correct_share else "incorrect")
            for n in range(60)
            for judge in JUDGES
        ]
        write_judgments(root, plan.run_id, {ids["small"]: rows})
        runs[name] = (root, plan.run_id)
    result = compare_saved_runs(runs["base"], runs["cand"], RegressionOptions())
    accuracy = {f.target_name: f for f in result.findings if f.metric == "accuracy"}
    assert accuracy["small"].verdict == "regressed" and accuracy["small"].change == pytest.approx(-50.0)
    assert accuracy["large"].verdict == "skipped"  # never judged
    assert result.verdict == "regressed" and result.regressed_metrics == ["accuracy"]


def test_a_candidate_judged_right_on_every_prompt_gets_its_charts(tmp_path: Path) -> None:
    """13 of 13 correct per bin: computed as written, the Wilson interval's upper end is 1 less a rounding
    error, below the estimate, and the chart's error bar would be negative."""
    plan, outcomes, root = run_plan(tmp_path, suite_data())
    ids = {b.target.name: b.branch_id for b in plan.branches}
    perfect = [(3, 0)] * 13
    write_judgments(root, plan.run_id, {ids["small"]: judgments_for("small", perfect, extra=False)})
    report_dir = tmp_path / "reports"
    document = generate_report(plan, outcomes, root, report_dir, generated_at=WHEN)
    small = next(b for b in document.branches if b.target_name == "small")
    assert small.accuracy is not None and small.accuracy.majority_accuracy == 1.0
    assert small.accuracy.interval_high is not None and small.accuracy.interval_high == 1.0
    for chart in ("majority_accuracy.png", "accuracy_vs_prompt_length.png"):
        assert (report_dir / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
