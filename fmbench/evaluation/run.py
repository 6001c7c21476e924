"""Judging a finished run's answers: every selected answer of every candidate, by every judge.

``evaluate_run`` is what ``fmbench run`` calls after the branches (when the suite has ``evaluation``) and
what ``fmbench evaluate`` calls on a saved run, local or ``s3://``: it replaces the run's judgments
(``evaluations/run_id=R/``) and touches nothing else of the run. A judge that cannot be called or keeps
failing leaves rows with verdict ``error`` and its error class; the other judges go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fmbench.config import Evaluation, Judge
from fmbench.endpoints.base import CLIENT_ERROR
from fmbench.evaluation.embeddings import Embedder
from fmbench.evaluation.judges import JudgeCaller, JudgeSetupError, Verdict, judge_client, now_epoch_s
from fmbench.evaluation.lexical import cosine, rouge_l, token_f1
from fmbench.evaluation.selection import (
    ANSWER_SOURCES,
    Answer,
    AnswerSource,
    recorded_answers,
    select_answers,
)
from fmbench.evaluation.writer import Judgment, JudgmentWriter, clear_evaluations
from fmbench.plan import RunPlan
from fmbench.prompt_store import prompts_folder, read_prompts
from fmbench.spec import BranchSpec

# Answers judged together (each by every judge) and written as one part.
ANSWERS_PER_PART = 250


class EvaluationError(ValueError):
    """The run cannot be judged (no evaluation section, no materialized prompts)."""


@dataclass
class JudgeTally:
    """One judge's account of a run: verdicts by kind and what they cost."""

    judge: str
    model: str
    family: str
    judged: int = 0
    correct: int = 0
    incorrect: int = 0
    unparsed: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    error_classes: dict[str, int] = field(default_factory=dict)

    def add(self, verdict: Verdict) -> None:
        self.judged += 1
        if verdict.verdict == "correct":
            self.correct += 1
        elif verdict.verdict == "incorrect":
            self.incorrect += 1
        elif verdict.verdict == "unparsed":
            self.unparsed += 1
        else:
            self.errors += 1
            key = verdict.error_class or "unknown"
            self.error_classes[key] = self.error_classes.get(key, 0) + 1
        self.cost_usd += verdict.cost_usd or 0.0


@dataclass
class EvaluationSummary:
    run_id: str
    answers: int = 0  # answers judged (each by every judge)
    rows: int = 0
    judges: list[JudgeTally] = field(default_factory=list)
    embedding_cost_usd: float = 0.0
    answer_sources: set[str] = field(default_factory=set)  # where the branches' judged answers came from

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.judges) + self.embedding_cost_usd


def _failed_setup(message: str) -> Verdict:
    return Verdict(verdict="error", error_class=CLIENT_ERROR, reason=message, attempts=0, cost_usd=0.0)


async def _score(
    answers: list[Answer], evaluation: Evaluation, embedder: Embedder | None
) -> list[tuple[float | None, ...]]:
    scores: list[tuple[float | None, ...]] = []
    for answer in answers:
        references = answer.prompt.reference_answers
        f1 = token_f1(answer.text, references) if evaluation.lexical else None
        rl = rouge_l(answer.text, references) if evaluation.lexical else None
        similarity = None
        if embedder is not None:
            vectors = await embedder.embed([answer.text, *references])
            if vectors is not None:
                similarity = max((cosine(vectors[0], v) or 0.0) for v in vectors[1:])
        scores.append((f1, rl, similarity))
    return scores


async def _judge_one(caller: JudgeCaller | str, answer: Answer) -> Verdict:
    if isinstance(caller, str):
        return _failed_setup(caller)
    return await caller.verdict(answer.prompt.text, answer.prompt.reference_answers, answer.text)


def _row(
    plan: RunPlan, answer: Answer, judge: Judge, verdict: Verdict, scores: tuple[float | None, ...]
) -> Judgment:
    return Judgment(
        suite_name=plan.suite.name,
        target_name=answer.target_name,
        prompt_id=answer.prompt.record_id,
        payload_bin=answer.payload_bin,
        request_id=answer.request_id,
        judge=judge.name,
        judge_model=judge.model,
        judge_family=judge.resolved_family,
        verdict=verdict.verdict,
        reason=verdict.reason,
        error_class=verdict.error_class,
        attempts=verdict.attempts,
        prompt_tokens=verdict.prompt_tokens,
        completion_tokens=verdict.completion_tokens,
        latency_s=verdict.latency_s,
        cost_usd=verdict.cost_usd,
        judged_epoch_s=now_epoch_s(),
        raw_text=verdict.raw_text,
        token_f1=scores[0],
        rouge_l=scores[1],
        embedding_similarity=scores[2],
        answer_source=answer.source,
    )


def answer_source(spec: BranchSpec, answers_from: AnswerSource | None = None) -> AnswerSource:
    """Where a branch's judged answers come from: ``answers_from`` when given, else its quality pass when
    it ran one. A branch whose quality pass gave no answer (every request failed) has nothing judged: its
    load's answers are not taken instead, so that a run's accuracy is of one kind of answer."""
    if answers_from is not None:
        return answers_from
    return "quality_pass" if spec.quality_pass is not None else "load"


async def evaluate_run_async(
    plan: RunPlan,
    root: str,
    *,
    judge_urls: dict[str, str] | None = None,
    on_answer: Callable[[int], None] | None = None,
    answers_from: AnswerSource | None = None,
) -> EvaluationSummary:
    """Judge the run's answers under ``root`` (the run's storage, local or ``s3://``) and write the rows.

    ``judge_urls``: the base URL of each emulator judge the caller started (by judge name).
    ``answers_from``: judge the answers under load or those of the quality pass; default: the quality
    pass's where the branch ran one (``evaluation.quality_pass``), else the load's (``answer_source``).
    """
    evaluation = plan.suite.evaluation
    if evaluation is None:
        raise EvaluationError("the suite has no evaluation section: nothing to judge with")
    if answers_from is not None and answers_from not in ANSWER_SOURCES:
        raise EvaluationError(f"answers: {answers_from!r} is not one of {', '.join(ANSWER_SOURCES)}")
    if answers_from == "quality_pass" and not any(spec.quality_pass for spec in plan.branches):
        raise EvaluationError(
            f"answers: run {plan.run_id} ran no quality pass (its suite's evaluation.quality_pass was off)"
        )
    prompts = read_prompts(prompts_folder(root, plan.run_id))
    clear_evaluations(root, plan.run_id)
    summary = EvaluationSummary(plan.run_id)
    callers: list[tuple[Judge, JudgeCaller | str]] = []
    for judge in evaluation.judges:
        try:
            client = judge_client(judge, evaluation, (judge_urls or {}).get(judge.name))
            callers.append((judge, JudgeCaller(judge, evaluation, client)))
        except JudgeSetupError as exc:
            callers.append((judge, str(exc)))
        summary.judges.append(JudgeTally(judge.name, judge.model, judge.resolved_family))
    embedder = (
        Embedder(evaluation.embeddings, evaluation.request_timeout_s) if evaluation.embeddings else None
    )
    try:
        for spec in plan.branches:
            source = answer_source(spec, answers_from)
            summary.answer_sources.add(source)
            found = recorded_answers(root, plan.run_id, spec.branch_id, source)
            answers = select_answers(
                found,
                prompts,
                branch_id=spec.branch_id,
                target_name=spec.target.name,
                max_per_bin=evaluation.max_answers_per_bin,
                seed=evaluation.seed,
                source=source,
            )
            writer = JudgmentWriter(root, plan.run_id, spec.branch_id)
            for start in range(0, len(answers), ANSWERS_PER_PART):
                chunk = answers[start : start + ANSWERS_PER_PART]
                scores = await _score(chunk, evaluation, embedder)
                verdicts = await asyncio.gather(
                    *(_judge_one(caller, answer) for answer in chunk for _, caller in callers)
                )
                rows = []
                position = 0
                for index, answer in enumerate(chunk):
                    for tally, (judge, _) in zip(summary.judges, callers, strict=True):
                        verdict = verdicts[position]
                        position += 1
                        tally.add(verdict)
                        rows.append(_row(plan, answer, judge, verdict, scores[index]))
                writer.write(rows)
                summary.rows += len(rows)
                summary.answers += len(chunk)
                if on_answer is not None:
                    on_answer(len(chunk))
            writer.close()
    finally:
        for _, caller in callers:
            if isinstance(caller, JudgeCaller):
                await caller.client.aclose()
        if embedder is not None:
            summary.embedding_cost_usd = embedder.cost_usd
            await embedder.aclose()
    return summary


def evaluate_run(
    plan: RunPlan,
    root: str,
    *,
    judge_urls: dict[str, str] | None = None,
    answers_from: AnswerSource | None = None,
) -> EvaluationSummary:
    return asyncio.run(evaluate_run_async(plan, root, judge_urls=judge_urls, answers_from=answers_from))
