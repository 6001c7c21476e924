"""Judging a finished run: real emulator targets answer from the run's ground truth, real emulator judges
(OpenAI chat and, through botocore, Bedrock Converse) give verdicts, real Parquet read back by DuckDB."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from fmbench.cli import main
from fmbench.config import Evaluation
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.evaluation.run import evaluate_run_async
from fmbench.judge_format import normalize_answer
from fmbench.judgments import JUDGMENT_SCHEMA
from fmbench.local import run_branches, save_plan
from fmbench.plan import RunPlan, plan_suite
from fmbench.prompt_store import materialize_plan, prompts_folder, read_prompts
from fmbench.suite import validate_suite_data

FAST = {"ttft_ms": 1, "itl_ms": 1, "output_tokens": 6}


def _suite(targets: list[dict[str, Any]], requests: int, evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "judged",
        "targets": targets,
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 1, "max_tokens": 100_000, "name": "all"}],
            "inference": {"max_new_tokens": 12, "stream": True},
        },
        "load": {"concurrency": [16], "requests_per_level": requests},
        "evaluation": evaluation,
    }


def _finished_run(tmp_path: Path, data: dict[str, Any]) -> RunPlan:
    """A run whose branches ran and whose plan is saved, as ``fmbench run`` leaves it before the report."""
    suite = validate_suite_data(data)
    plan = plan_suite(suite, storage_root=str(tmp_path), run_id="r1")
    plan = materialize_plan(plan)
    save_plan(plan, str(tmp_path))
    outcomes = asyncio.run(run_branches(plan, 2))
    assert [o.status for o in outcomes] == ["succeeded"] * len(outcomes)
    return plan


def _rows(root: Path) -> list[dict[str, Any]]:
    glob = f"{root}/evaluations/*/*/*.parquet"
    return (
        duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").df().to_dict("records")
    )


def _truth(root: Path, rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Prompt id -> whether the judged answer gives its reference answer (read from the answer's text)."""
    references = {
        pid: p.reference_answers for (_, pid), p in read_prompts(prompts_folder(str(root), "r1")).items()
    }
    glob = f"{root}/records/*/*/*.parquet"
    texts = dict(duckdb.sql(f"SELECT request_id, response_text FROM read_parquet('{glob}')").fetchall())
    said = {r["prompt_id"]: f" {normalize_answer(texts[r['request_id']])} " for r in rows}
    return {
        pid: any(f" {normalize_answer(a)} " in text for a in references[pid]) for pid, text in said.items()
    }


def _binomial_bound(share: float, expected: float, n: int, sigmas: float = 4.0) -> None:
    bound = sigmas * math.sqrt(expected * (1 - expected) / n)
    assert abs(share - expected) <= bound, (share, expected, n, bound)


@pytest.fixture(scope="module")
def accuracy_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunPlan]]:
    """One emulated target answering 240 distinct prompts right with probability 0.7."""
    root = tmp_path_factory.mktemp("accuracy")
    target = {"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.7}}
    judge = {"name": "j", "model_id": "x"}
    yield root, _finished_run(root, _suite([target], 240, {"judges": [judge]}))


def test_emulated_accuracy_is_recovered_by_emulated_judges(accuracy_run: tuple[Path, RunPlan]) -> None:
    root, plan = accuracy_run
    p, e = 0.7, 0.1
    judges = [
        {
            "name": f"judge-{family}",
            "family": family,
            "target": {
                "name": f"t-{family}",
                "platform": "emulator",
                "model": f"{family}-judge",
                "emulator": {**FAST, "judge_error_rate": e, "seed": seed},
            },
        }
        for seed, family in enumerate(("anthropic", "llama"))
    ]
    evaluation = Evaluation.model_validate(
        {"judges": judges, "max_answers_per_bin": 1000, "max_concurrency": 8}
    )
    judged = plan.model_copy(update={"suite": plan.suite.model_copy(update={"evaluation": evaluation})})

    async def judge_all() -> Any:
        urls = {}
        async with (
            running_emulator(
                EmulatorSettings(model="anthropic-judge", judge_error_rate=e, seed=0, **FAST)
            ) as a,
            running_emulator(EmulatorSettings(model="llama-judge", judge_error_rate=e, seed=1, **FAST)) as b,
        ):
            urls = {"judge-anthropic": a, "judge-llama": b}
            return await evaluate_run_async(judged, str(root), judge_urls=urls)

    summary = asyncio.run(judge_all())
    rows = _rows(root)
    assert summary.answers == 240 and len(rows) == 480  # every distinct prompt once, by both judges
    assert {r["verdict"] for r in rows} <= {"correct", "incorrect"}  # both families' formats parsed
    correct_share = sum(r["verdict"] == "correct" for r in rows) / len(rows)
    # a judgment is 'correct' when a right answer is not flipped or a wrong one is: p(1-e) + (1-p)e
    _binomial_bound(correct_share, p * (1 - e) + (1 - p) * e, n=240)
    # the answers themselves: right with probability p (the truth read from the answer text)
    prompts = {r["prompt_id"] for r in rows}
    truth = _truth(root, rows)
    _binomial_bound(sum(truth.values()) / len(truth), p, n=len(truth))
    # each judge errs at its own rate against that truth
    for judge in ("judge-anthropic", "judge-llama"):
        mine = [r for r in rows if r["judge"] == judge]
        wrong = sum((r["verdict"] == "correct") != truth[r["prompt_id"]] for r in mine)
        _binomial_bound(wrong / len(mine), e, n=len(mine))
    # lexical scores are per answer: the same on both judges' rows, 1 for an exact answer
    f1 = {(r["prompt_id"], r["judge"]): r["token_f1"] for r in rows}
    assert all(f1[(pid, "judge-anthropic")] == f1[(pid, "judge-llama")] for pid in prompts)


def test_a_failing_judge_leaves_error_rows_and_the_others_judge(
    tmp_path: Path, offline_aws_credentials: None
) -> None:
    good = {"name": "fine", "family": "nova", "target": _judge_target("nova-judge", judge_error_rate=0.0)}
    throttled = {
        "name": "throttled",
        "family": "generic",
        "target": _judge_target("generic-judge", judge_error_rate=0.0, error_429_rate=1.0),
    }
    unreachable = {"name": "gone", "model_id": "anthropic.claude-x", "endpoint_url": "http://127.0.0.1:9"}
    targets = [{"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 1.0}}]
    evaluation = {
        "judges": [good, throttled, unreachable],
        "max_answers_per_bin": 10,
        "retries": 2,
        "backoff_s": 0,
        "request_timeout_s": 5,
    }
    plan = _finished_run(tmp_path, _suite(targets, 16, evaluation))
    records_before = pq.read_table(tmp_path / "records").num_rows

    async def judge_all() -> Any:
        async with (
            running_emulator(EmulatorSettings(model="nova-judge", judge_error_rate=0.0, **FAST)) as fine,
            running_emulator(
                EmulatorSettings(model="generic-judge", judge_error_rate=0.0, error_429_rate=1.0, **FAST)
            ) as bad,
        ):
            return await evaluate_run_async(plan, str(tmp_path), judge_urls={"fine": fine, "throttled": bad})

    summary = asyncio.run(judge_all())
    rows = _rows(tmp_path)
    by_judge = {name: [r for r in rows if r["judge"] == name] for name in ("fine", "throttled", "gone")}
    assert [len(v) for v in by_judge.values()] == [10, 10, 10]
    assert {r["verdict"] for r in by_judge["fine"]} == {"correct"}  # accuracy 1, no judge error
    assert {(r["verdict"], r["error_class"]) for r in by_judge["throttled"]} == {("error", "http_429")}
    assert {r["attempts"] for r in by_judge["throttled"]} == {3}  # the call and its 2 retries
    assert {(r["verdict"], r["error_class"]) for r in by_judge["gone"]} == {("error", "connection_error")}
    tallies = {t.judge: (t.correct, t.errors) for t in summary.judges}
    assert tallies == {"fine": (10, 0), "throttled": (0, 10), "gone": (0, 10)}
    assert pq.read_table(tmp_path / "records").num_rows == records_before  # nothing measured is lost


def _judge_target(model: str, **options: Any) -> dict[str, Any]:
    return {"name": model, "platform": "emulator", "model": model, "emulator": {**FAST, **options}}


def test_fmbench_evaluate_replaces_a_runs_judgments_with_schema_rows(tmp_path: Path) -> None:
    judge = {"name": "solo", "target": _judge_target("meta.llama-judge", judge_error_rate=0.0)}
    targets = [
        {"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}},
    ]
    _finished_run(tmp_path, _suite(targets, 16, {"judges": [judge], "max_answers_per_bin": 8}))
    for _ in range(2):  # judging again replaces the rows, it does not add to them
        assert main(["evaluate", str(tmp_path), "--run-id", "r1"]) == 0
    parts = sorted((tmp_path / "evaluations").rglob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet"]
    assert pq.read_schema(parts[0]).remove_metadata() == JUDGMENT_SCHEMA
    glob = f"{tmp_path}/evaluations/*/*/*.parquet"
    query = f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)"
    columns = duckdb.sql(query).fetchall()
    names = [c[0] for c in columns]
    assert names[: len(JUDGMENT_SCHEMA)] == JUDGMENT_SCHEMA.names
    assert set(names[len(JUDGMENT_SCHEMA) :]) == {"run_id", "branch_id"}
    rows = _rows(tmp_path)
    assert len(rows) == 8 and {r["run_id"] for r in rows} == {"r1"}
    assert {r["judge_family"] for r in rows} == {"llama"}  # detected from the model id
    assert all(r["verdict"] in ("correct", "incorrect") for r in rows)
    # a verdict agrees with the answer text (no judge error): correct exactly when the reference is in it
    truth = _truth(tmp_path, rows)
    assert 0 < sum(truth.values()) < len(rows)  # both kinds judged
    for row in rows:
        assert (row["verdict"] == "correct") == truth[row["prompt_id"]]


async def test_bedrock_judge_through_botocore_and_the_emulators_converse_route(
    tmp_path: Path, offline_aws_credentials: None
) -> None:
    model_id = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    targets = [{"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}]
    plan = await asyncio.to_thread(
        _finished_run, tmp_path, _suite(targets, 32, {"judges": [{"name": "x", "model_id": "y"}]})
    )
    async with running_emulator(EmulatorSettings(model="unused", judge_error_rate=0.0, **FAST)) as url:
        evaluation = Evaluation.model_validate(
            {
                "judges": [
                    {
                        "name": "haiku",
                        "model_id": model_id,
                        "endpoint_url": url,
                        "input_price_per_1k_tokens_usd": 0.0008,
                        "output_price_per_1k_tokens_usd": 0.004,
                    }
                ],
                "max_answers_per_bin": 12,
            }
        )
        judged = plan.model_copy(update={"suite": plan.suite.model_copy(update={"evaluation": evaluation})})
        summary = await evaluate_run_async(judged, str(tmp_path))
    rows = _rows(tmp_path)
    assert len(rows) == 12 and summary.judges[0].judged == 12
    assert {r["judge_family"] for r in rows} == {"anthropic"}
    assert {r["judge_model"] for r in rows} == {model_id}
    truth = _truth(tmp_path, rows)
    for row in rows:
        assert (row["verdict"] == "correct") == truth[row["prompt_id"]]
        assert row["raw_text"].startswith("{")  # the anthropic family answers in plain JSON
        # the cost is the service's token counts (Converse usage) times the judge's prices
        expected = (row["prompt_tokens"] * 0.0008 + row["completion_tokens"] * 0.004) / 1000
        assert row["cost_usd"] == pytest.approx(expected)
        assert row["prompt_tokens"] > 100
    assert summary.judges[0].cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows))


def _chat_answer(text: str) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320},
    }


async def test_an_unreadable_verdict_is_asked_again_once_and_a_refusing_judge_is_given_up(
    scripted_server: Any,
) -> None:
    from aiohttp import web

    from fmbench.config import Evaluation
    from fmbench.evaluation.judges import JudgeCaller, judge_client
    from fmbench.evaluation.templates import REASK_NOTE

    replies: dict[str, list[str]] = {"q-late": ["I think so.", "Verdict: correct"], "q-never": ["hm", "hmm"]}
    asked: list[tuple[str, bool]] = []

    async def judge(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        user = body["messages"][-1]["content"]
        question = next(q for q in ("q-late", "q-never", "q-denied") if q in user)
        asked.append((question, user.startswith(REASK_NOTE)))
        if question == "q-denied":
            return web.json_response({"error": {"message": "denied"}}, status=403)
        return web.json_response(_chat_answer(replies[question].pop(0)))

    url = await scripted_server(judge, "/v1/chat/completions")
    target = {"name": "j", "platform": "openai", "endpoint_url": f"{url}/v1", "model": "gpt-judge"}
    evaluation = Evaluation.model_validate(
        {"judges": [{"name": "j", "target": target, "input_price_per_1k_tokens_usd": 0.01}], "backoff_s": 0}
    )
    judge_spec = evaluation.judges[0]
    caller = JudgeCaller(judge_spec, evaluation, judge_client(judge_spec, evaluation))
    try:
        late = await caller.verdict("q-late", ("a",), "a")
        never = await caller.verdict("q-never", ("a",), "a")
        denied = [await caller.verdict("q-denied", ("a",), "a") for _ in range(5)]
    finally:
        await caller.client.aclose()
    assert (late.verdict, late.attempts, late.how) == ("correct", 2, "verdict_line")
    assert late.cost_usd == pytest.approx(2 * 300 * 0.01 / 1000)  # both calls are paid
    assert (never.verdict, never.attempts, never.raw_text) == ("unparsed", 2, "hmm")
    assert asked[:4] == [("q-late", False), ("q-late", True), ("q-never", False), ("q-never", True)]
    assert [(d.verdict, d.error_class) for d in denied] == [("error", "http_4xx")] * 5
    # a refusal is not retried, and after three in a row the judge is not called again
    assert [d.attempts for d in denied] == [1, 1, 1, 0, 0]
    assert sum(1 for q, _ in asked if q == "q-denied") == 3


async def test_embedding_similarity_comes_from_an_openai_compatible_embeddings_api(
    tmp_path: Path, scripted_server: Any
) -> None:
    import numpy as np
    from aiohttp import web

    def vector(text: str) -> list[float]:
        return [float(text.lower().count(letter)) for letter in "abcdefghijklmnopqrstuvwxyz"]

    async def embeddings(request: web.Request) -> web.StreamResponse:
        texts = (await request.json())["input"]
        data = [{"index": i, "embedding": vector(t), "object": "embedding"} for i, t in enumerate(texts)]
        return web.json_response({"data": data, "usage": {"prompt_tokens": 10, "total_tokens": 10}})

    url = await scripted_server(embeddings, "/v1/embeddings")
    targets = [{"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}]
    evaluation = {
        "judges": [{"name": "j", "target": _judge_target("judge", judge_error_rate=0.0)}],
        "max_answers_per_bin": 6,
        "embeddings": {"url": f"{url}/v1", "model": "e", "price_per_1k_tokens_usd": 0.1},
    }
    plan = await asyncio.to_thread(_finished_run, tmp_path, _suite(targets, 16, evaluation))
    async with running_emulator(EmulatorSettings(model="judge", judge_error_rate=0.0, **FAST)) as judge_url:
        summary = await evaluate_run_async(plan, str(tmp_path), judge_urls={"j": judge_url})
    rows = _rows(tmp_path)
    prompts = read_prompts(prompts_folder(str(tmp_path), "r1"))
    glob = f"{tmp_path}/records/*/*/*.parquet"
    texts = dict(duckdb.sql(f"SELECT request_id, response_text FROM read_parquet('{glob}')").fetchall())
    assert len(rows) == 6
    for row in rows:
        answer = np.array(vector(texts[row["request_id"]]))
        reference = np.array(vector(prompts[("all", row["prompt_id"])].reference_answers[0]))
        expected = answer @ reference / np.linalg.norm(answer) / np.linalg.norm(reference)
        assert row["embedding_similarity"] == pytest.approx(expected)
    assert summary.embedding_cost_usd == pytest.approx(6 * 10 * 0.1 / 1000)


def test_fmbench_evaluate_judges_a_run_under_an_s3_root(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    judge = {"name": "solo", "target": _judge_target("judge", judge_error_rate=0.0)}
    targets = [{"name": "cand", "platform": "emulator", "model": "m", "emulator": {**FAST, "accuracy": 0.5}}]
    local = tmp_path / "local"
    _finished_run(local, _suite(targets, 16, {"judges": [judge], "max_answers_per_bin": 5}))
    for path in local.rglob("*"):  # the run as a cloud run leaves it in its bucket
        if path.is_file():
            s3.upload_file(str(path), "results", f"root/{path.relative_to(local)}")
    branch = next(p.name for p in (local / "records" / "run_id=r1").iterdir())
    folder = f"root/evaluations/run_id=r1/{branch}"
    for number in (0, 3):  # an earlier judging's parts: written over, or emptied
        s3.put_object(Bucket="results", Key=f"{folder}/part-0000{number}.parquet", Body=b"earlier")
    assert main(["evaluate", "s3://results/root", "--run-id", "r1"]) == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="root/")["Contents"])
    judged = [key for key in keys if key.startswith("root/evaluations/")]
    assert judged == [f"{folder}/part-00000.parquet", f"{folder}/part-00003.parquet"]  # no folder markers
    tables = []
    for number, key in enumerate(judged):
        s3.download_file("results", key, str(tmp_path / f"{number}.parquet"))
        tables.append(pq.read_table(tmp_path / f"{number}.parquet"))
    assert [t.schema.remove_metadata() == JUDGMENT_SCHEMA for t in tables] == [True, True]
    assert [t.num_rows for t in tables] == [5, 0]
    assert not [key for key in keys if key.endswith("/")]


async def test_the_emulator_answers_from_the_prompts_file_on_every_api(tmp_path: Path) -> None:
    import json

    import aiohttp

    lines = [
        {"bin": "b", "id": str(i), "text": f"Where is place {i}?", "reference_answers": [f"Town{i}"]}
        for i in range(20)
    ]
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    async def answers(accuracy: float) -> list[str]:
        settings = EmulatorSettings(accuracy=accuracy, prompts_file=str(prompts_file), **FAST)
        said = []
        async with running_emulator(settings) as url, aiohttp.ClientSession() as session:
            prompt = "Where is place 7?"
            chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
            async with session.post(f"{url}/v1/chat/completions", json=chat) as response:
                said.append((await response.json())["choices"][0]["message"]["content"])
            async with session.post(
                f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 8}
            ) as response:
                said.append((await response.json())["choices"][0]["text"])
            lmi = {"inputs": prompt, "parameters": {"max_new_tokens": 8}}
            async with session.post(f"{url}/endpoints/e/invocations", json=lmi) as response:
                said.append((await response.json())["generated_text"])
            async with session.get(f"{url}/health") as response:
                health = await response.json()
            assert (health["known_prompts"], health["scripted_answers"]) == (20, 3)
        return said

    right = await answers(1.0)
    assert [text.split()[0] for text in right] == ["Town7"] * 3
    assert all(len(text.split()) == 6 for text in right)  # the answer, then filler to the planned length
    wrong = await answers(0.0)
    assert len({text.split()[0] for text in wrong}) == 1  # the same wrong answer on every API
    assert wrong[0].split()[0].startswith("Town") and wrong[0].split()[0] != "Town7"
