"""The cloud execution's bounded output stays bounded for a judged run: however many judges, pairs and
judged branches result.json holds, the output carries none of them (result.json has them)."""

from __future__ import annotations

import itertools

from test_analysis import document

from report.execution_output import execution_output
from report.result import (
    BranchAccuracy,
    BranchResult,
    JudgeCandidateShare,
    JudgePairAgreement,
    JudgeSummary,
    PanelAgreement,
)


def branch(index: int, judged: bool) -> BranchResult:
    accuracy = BranchAccuracy(
        majority_accuracy=0.8,
        interval_low=0.7,
        interval_high=0.9,
        confidence=0.95,
        judged_prompts=100,
        majority_correct=80,
        majority_incorrect=15,
        no_majority=5,
        meets_floor=True,
    )
    return BranchResult(
        branch_id=f"b-{index:04d}",
        target_name=f"target-{index}",
        platform="openai",
        model=None,
        container=None,
        instance_type=None,
        instance_count=None,
        instance_price_per_hour_usd=None,
        status="succeeded",
        reason=None,
        requests_attempted=10,
        records_written=10,
        load_points_planned=1,
        load_points_completed=1,
        load_points=[],
        accuracy=accuracy if judged else None,
    )


def panel(judges: int, branches: int) -> PanelAgreement:
    names = [f"judge-{n}" for n in range(judges)]
    return PanelAgreement(
        judged_prompts=100 * branches,
        rated_prompts=100 * branches,
        fleiss_kappa=0.5,
        judges=[
            JudgeSummary(
                judge=name,
                judge_model="m",
                verdicts=100,
                correct=80,
                incorrect=20,
                unparsed=0,
                errors=0,
                share_correct=0.8,
                attempts=100,
                prompt_tokens=1000,
                completion_tokens=100,
                cost_usd=0.1,
            )
            for name in names
        ],
        judge_candidates=[
            JudgeCandidateShare(
                judge=name,
                branch_id=f"b-{b:04d}",
                target_name=f"t{b}",
                correct=8,
                incorrect=2,
                share_correct=0.8,
            )
            for name in names
            for b in range(branches)
        ],
        pairs=[
            JudgePairAgreement(judge=a, other_judge=b, prompts=100, observed_agreement=0.9, cohen_kappa=0.6)
            for a, b in itertools.combinations(names, 2)
        ],
    )


def test_a_judged_run_has_the_same_bounded_output_as_an_unjudged_one() -> None:
    plain = document(branches=[branch(i, judged=False) for i in range(200)])
    judged = document(branches=[branch(i, judged=True) for i in range(200)], agreement=panel(12, 200))
    assert len(judged.model_dump_json()) > 256 * 1024  # result.json alone would break the state limit
    assert execution_output(judged).model_dump_json() == execution_output(plain).model_dump_json()
    assert len(execution_output(judged).model_dump_json()) < 4_000


def test_the_output_says_whether_the_answers_were_judged_and_stays_bounded_when_judging_failed() -> None:
    from fmbench.judging_outcome import bounded_error_text
    from report.result import EvaluationStatus

    error = bounded_error_text("States.TaskFailed: " + "the task's description " * 2_000)  # ~46 KB, cut
    failed = EvaluationStatus(status="failed", error=error, rejudge="fmbench evaluate s3://b --run-id r")
    judged_doc = document(branches=[branch(i, judged=True) for i in range(3)]).model_copy(
        update={"evaluation": EvaluationStatus(status="judged")}
    )
    failed_doc = document(branches=[branch(i, judged=False) for i in range(200)]).model_copy(
        update={"evaluation": failed}
    )
    assert execution_output(judged_doc).evaluation == EvaluationStatus(status="judged")
    output = execution_output(failed_doc)
    assert output.evaluation is not None and output.evaluation.status == "failed"
    assert output.evaluation.error == error and output.evaluation.rejudge is not None
    assert len(output.model_dump_json()) < 5_000  # an error as the record cuts it still fits
    assert execution_output(document(branches=[branch(0, judged=False)])).evaluation is None
