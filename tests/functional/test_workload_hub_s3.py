"""Datasets and tokenizers from a loopback stand-in of the Hugging Face Hub (through the real
``huggingface_hub`` client) and from S3 (a moto server); synthetic prompts exact in a trained tokenizer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_standin import HubRepo, HubStandIn, running_hub, train_tokenizer_json
from tokenizers import Tokenizer as HFTokenizer

from fmbench.config import SuiteValidationError, Workload
from fmbench.payloads import check_dataset, prepare_workload
from fmbench.suite import validate_suite_data
from fmbench.tokenizer import TokenizerError, load_tokenizer

TOKENIZER_JSON = train_tokenizer_json()
TOKEN = "hf_test_token_with_access"
ALL_TOKENS = [{"min_tokens": 1, "max_tokens": 100000}]


def parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue()


def qa_records(count: int, prefix: str = "") -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "question": f"{prefix}What does request {i} ask?", "answer": f"answer {i}"}
        for i in range(count)
    ]


def hub_repos() -> tuple[dict[str, HubRepo], dict[str, HubRepo]]:
    datasets = {
        "acme/qa": HubRepo(
            files={
                "README.md": b"# qa\n",
                "long/test-00000-of-00001.parquet": parquet_bytes(qa_records(300)),
                "short/test.jsonl": "".join(json.dumps(r) + "\n" for r in qa_records(5, "s")).encode(),
            },
            card_configs=[
                {"config_name": "long", "data_files": [{"split": "test", "path": "long/test-*.parquet"}]},
                {"config_name": "short", "data_files": [{"split": "test", "path": "short/test.jsonl"}]},
            ],
        ),
        "acme/plain": HubRepo(
            files={"data/train-00000-of-00001.parquet": parquet_bytes(qa_records(4, "p"))},
            other_branches={"v1": {"data/train.jsonl": b'{"question": "old?", "answer": "v1"}\n'}},
        ),
        "acme/gated": HubRepo(
            files={"data/train.jsonl": b'{"question": "secret?", "answer": "yes"}\n'},
            gated=True,
            tokens={TOKEN},
        ),
    }
    models = {
        "acme/tiny-model": HubRepo(files={"tokenizer.json": TOKENIZER_JSON.encode(), "config.json": b"{}"}),
        "acme/gated-model": HubRepo(
            files={"tokenizer.json": TOKENIZER_JSON.encode()}, gated=True, tokens={TOKEN}
        ),
        "acme/no-tokenizer": HubRepo(files={"config.json": b"{}"}),
    }
    return datasets, models


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    datasets, models = hub_repos()
    with running_hub(datasets, models) as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        for name in ("HF_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield standin


def qa_workload(dataset: dict[str, Any], **extra: Any) -> Workload:
    return Workload.model_validate(
        {"dataset": dataset, "prompt_template": "{question}", "bins": ALL_TOKENS, **extra}
    )


def test_a_hub_dataset_by_config_and_split_gives_200_distinct_prompts_to_200_requests(
    hub: HubStandIn, tmp_path: Path
) -> None:
    work = qa_workload({"source": "hf:acme/qa", "config": "long", "split": "test"}, seed=11)
    prepared = prepare_workload(work)
    assert prepared.dataset is not None
    assert prepared.dataset.revision == hub.datasets["acme/qa"].commit
    assert prepared.dataset.files == [
        f"hf:acme/qa/long/test-00000-of-00001.parquet@{prepared.dataset.revision[:12]}"
    ]
    prompts = prepared.by_bin["1-100000"]
    assert len(prompts) == 300
    assert prompts[7].text == "What does request 7 ask?" and prompts[7].reference_answer == "answer 7"
    sent = prepared.deck("1-100000").take(200)
    assert len({p.text for p in sent}) == 200
    # the real client asked the stand-in for the listing, then HEAD and GET of the one file of the split
    paths = [(method, path) for method, path, _ in hub.requests]  # nothing else: no telemetry
    assert paths == [
        ("GET", "/api/datasets/acme/qa"),
        ("HEAD", f"/datasets/acme/qa/resolve/{prepared.dataset.revision}/long/test-00000-of-00001.parquet"),
        ("GET", f"/datasets/acme/qa/resolve/{prepared.dataset.revision}/long/test-00000-of-00001.parquet"),
    ]
    assert list((tmp_path / "hf-home" / "hub").glob("datasets--acme--qa/snapshots/*/long/*.parquet"))


def test_a_hub_dataset_at_a_revision_and_by_file_names(hub: HubStandIn) -> None:
    current = prepare_workload(qa_workload({"source": "hf:acme/plain"}))
    assert [p.text for p in current.by_bin["1-100000"]] == [f"pWhat does request {i} ask?" for i in range(4)]
    old = prepare_workload(qa_workload({"source": "hf:acme/plain", "revision": "v1"}))
    assert [p.text for p in old.by_bin["1-100000"]] == ["old?"]
    assert old.dataset is not None and old.dataset.revision == hub.datasets["acme/plain"].branches["v1"]


@pytest.mark.parametrize(
    ("dataset", "path", "reason"),
    [
        (
            {"source": "hf:acme/missing"},
            "workload.dataset.source",
            "dataset acme/missing not found on http://",
        ),
        (
            {"source": "hf:acme/plain", "revision": "v9"},
            "workload.dataset.source",
            "the revision does not exist",
        ),
        (
            {"source": "hf:acme/qa", "split": "test"},
            "workload.dataset.config",
            "configs long, short: name one",
        ),
        (
            {"source": "hf:acme/qa", "config": "long"},
            "workload.dataset.split",
            "no split 'train' in config 'long'",
        ),
        (
            {"source": "hf:acme/gated"},
            "workload.dataset.source",
            "dataset acme/gated is gated: accept its terms",
        ),
    ],
)
def test_a_hub_dataset_that_cannot_be_had_names_the_suite_field(
    hub: HubStandIn, dataset: dict[str, Any], path: str, reason: str
) -> None:
    problems = check_dataset(qa_workload(dataset))
    assert [p for p, _ in problems] == [path]
    assert reason in problems[0][1]


def test_a_gated_hub_dataset_opens_with_a_token_from_the_environment_or_the_caller(
    hub: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = qa_workload({"source": "hf:acme/gated"})
    monkeypatch.setenv("HF_TOKEN", "hf_a_token_without_access")
    ((_, reason),) = check_dataset(work)
    assert "the token given has no access yet" in reason
    prepared = prepare_workload(work, token=TOKEN)  # the caller's token wins over HF_TOKEN
    assert [p.reference_answer for p in prepared.by_bin["1-100000"]] == ["yes"]
    assert ("GET", f"Bearer {TOKEN}") in {(m, a) for m, p, a in hub.requests if "/resolve/" in p}
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert check_dataset(work) == []


def test_the_model_tokenizer_comes_from_the_hub_and_counts_as_trained(hub: HubStandIn) -> None:
    reference = HFTokenizer.from_str(TOKENIZER_JSON)
    tokenizer = load_tokenizer("hf:acme/tiny-model")
    text = "the cache serves a prefix request, then streams tokens"
    assert tokenizer.count(text) == len(reference.encode(text, add_special_tokens=False).ids)
    assert tokenizer.count(text) != len(text.split())  # subwords, not words
    commit = hub.models["acme/tiny-model"].commit
    assert load_tokenizer(f"hf:acme/tiny-model@{commit}").count(text) == tokenizer.count(text)
    with pytest.raises(
        TokenizerError, match=r"model acme/no-tokenizer: tokenizer\.json is not in the repository"
    ):
        load_tokenizer("hf:acme/no-tokenizer")
    with pytest.raises(TokenizerError, match="model acme/gated-model is gated"):
        load_tokenizer("hf:acme/gated-model")
    assert load_tokenizer("hf:acme/gated-model", token=TOKEN).count(text) == tokenizer.count(text)
    with pytest.raises(TokenizerError, match="model acme/tiny-model@v404: the revision does not exist"):
        load_tokenizer("hf:acme/tiny-model@v404")


def test_a_suite_with_a_tokenizer_not_on_the_hub_names_workload_tokenizer(hub: HubStandIn) -> None:
    suite = {
        "name": "s",
        "targets": [{"name": "emu", "platform": "emulator"}],
        "workload": {"tokenizer": "hf:acme/unknown-model", "bins": ALL_TOKENS},
        "load": {"concurrency": [1], "requests_per_level": 2},
    }
    with pytest.raises(SuiteValidationError) as refused:
        validate_suite_data(suite)
    (problem,) = refused.value.problems
    assert problem.path == "workload.tokenizer"
    assert problem.reason.startswith(f"model acme/unknown-model not found on {hub.url}")


def test_synthetic_prompts_are_exact_in_the_trained_tokenizer_with_a_shared_prefix(hub: HubStandIn) -> None:
    work = Workload.model_validate(
        {
            "synthetic": {
                "prompt_tokens": {"distribution": "uniform", "min_tokens": 64, "max_tokens": 512},
                "shared_prefix_tokens": 48,
            },
            "tokenizer": "hf:acme/tiny-model",
            "bins": [{"min_tokens": 1, "max_tokens": 256}, {"min_tokens": 256, "max_tokens": 1024}],
        }
    )
    prepared = prepare_workload(work, synthetic_prompts_per_bin=60)
    reference = HFTokenizer.from_str(TOKENIZER_JSON)
    prefix_ids: set[tuple[int, ...]] = set()
    lengths: set[int] = set()
    for token_bin in work.bins:
        prompts = prepared.by_bin[token_bin.label]
        assert len({p.text for p in prompts}) == 60
        for prompt in prompts:
            ids = reference.encode(prompt.text, add_special_tokens=False).ids
            assert len(ids) == prompt.prompt_tokens
            assert token_bin.min_tokens <= len(ids) < token_bin.max_tokens
            prefix_ids.add(tuple(ids[:48]))
            lengths.add(len(ids))
            # after the shared prefix, no two prompts begin alike
        assert len({tuple(reference.encode(p.text).ids[48:64]) for p in prompts}) == 60
    assert len(prefix_ids) == 1
    assert len(lengths) > 40  # lengths spread over the range, not one length


# ----------------------------------------------------------------------------------------------- S3


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
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
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="workload-data")
    return client


def test_an_s3_dataset_and_tokenizer(s3: Any) -> None:
    lines = "".join(json.dumps(r) + "\n" for r in qa_records(6))
    s3.put_object(Bucket="workload-data", Key="sets/qa.jsonl", Body=lines.encode())
    s3.put_object(Bucket="workload-data", Key="tok/tokenizer.json", Body=TOKENIZER_JSON.encode())
    work = qa_workload({"source": "s3://workload-data/sets/qa.jsonl"}, tokenizer="hf:s3://workload-data/tok")
    prepared = prepare_workload(work)
    reference = HFTokenizer.from_str(TOKENIZER_JSON)
    prompts = prepared.by_bin["1-100000"]
    assert [p.record_id for p in prompts] == [str(i) for i in range(6)]
    assert [p.prompt_tokens for p in prompts] == [len(reference.encode(p.text).ids) for p in prompts]
    assert prepared.tokenizer.name == "hf:s3://workload-data/tok"
    assert check_dataset(qa_workload({"source": "s3://workload-data/sets/none.jsonl"})) == [
        ("workload.dataset.source", "dataset file not found: s3://workload-data/sets/none.jsonl")
    ]
    problems = check_dataset(
        qa_workload({"source": "s3://workload-data/sets/qa.jsonl"}, tokenizer="hf:s3://workload-data/x")
    )
    assert problems == [
        ("workload.tokenizer", "tokenizer file not found: s3://workload-data/x/tokenizer.json")
    ]
