"""Workload prompts from local dataset files of every format, field mapping, malformed rows, prompt decks and
synthetic prompts counted with the simple tokenizer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmbench.config import SuiteValidationError, SyntheticSpec, TokenBin, Workload
from fmbench.datasets import DatasetError, hub_data_files
from fmbench.hub import HubSettings, hub_settings
from fmbench.payloads import (
    ChatMessage,
    PromptDeck,
    PromptsExhaustedError,
    check_dataset,
    draw_prompts,
    prepare_workload,
)
from fmbench.suite import validate_suite_data
from fmbench.synthetic import SyntheticPromptMaker, check_synthetic
from fmbench.tokenizer import SimpleTokenizer, TokenizerError, check_tokenizer_spec, load_tokenizer

RECORDS = [
    {"id": "q1", "passage": "Lyon is on the Rhone.", "question": "Which river?", "answer": "Rhone"},
    {"id": "q2", "passage": "Bern is in Switzerland.", "question": "Which country?", "answer": "Switzerland"},
    {"id": "q3", "passage": "The Nile is long.", "question": "Which is long?", "answer": "The Nile"},
]
TEMPLATE = "{context}\nQ: {question}"
EXPECTED_TEXTS = [
    "Lyon is on the Rhone.\nQ: Which river?",
    "Bern is in Switzerland.\nQ: Which country?",
    "The Nile is long.\nQ: Which is long?",
]
ALL_TOKENS = [{"min_tokens": 1, "max_tokens": 100000}]


def workload(dataset: dict[str, Any], **extra: Any) -> Workload:
    fields = {"dataset": dataset, "bins": extra.pop("bins", ALL_TOKENS), **extra}
    if "messages" not in dataset and "prompt_template" not in fields:
        fields["prompt_template"] = TEMPLATE
    return Workload.model_validate(fields)


def write_all_formats(folder: Path, records: list[dict[str, Any]]) -> dict[str, Path]:
    paths = {fmt: folder / f"qa.{fmt}" for fmt in ("jsonl", "json", "csv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records))
    paths["json"].write_text(json.dumps(records))
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    pq.write_table(pa.Table.from_pylist(records), paths["parquet"])
    paths["json-object"] = folder / "qa-object.json"
    paths["json-object"].write_text(json.dumps({"version": 2, "data": records}))
    return paths


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "json-object"])
def test_every_file_format_gives_the_same_prompts(tmp_path: Path, fmt: str) -> None:
    paths = write_all_formats(tmp_path, RECORDS)
    spec = {"source": paths[fmt].name, "fields": {"context": "passage"}}
    prepared = prepare_workload(workload(spec), base_dir=tmp_path)
    (prompts,) = prepared.by_bin.values()
    tokenizer = SimpleTokenizer()
    assert [p.text for p in prompts] == EXPECTED_TEXTS
    assert [p.record_id for p in prompts] == ["q1", "q2", "q3"]
    assert [p.reference_answer for p in prompts] == ["Rhone", "Switzerland", "The Nile"]
    assert [p.prompt_tokens for p in prompts] == [tokenizer.count(t) for t in EXPECTED_TEXTS]
    assert prepared.dataset is not None and prepared.dataset.files == [str(paths[fmt])]
    assert len(prepared.dataset.content_sha256) == 64
    assert prepared.malformed == [] and prepared.duplicates == 0


def test_a_format_is_told_by_name_or_given(tmp_path: Path) -> None:
    data = tmp_path / "qa.txt"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    problems = check_dataset(workload({"source": str(data), "fields": {"context": "passage"}}))
    assert problems == [
        (
            "workload.dataset.format",
            f"cannot tell the format of {data} from its name: set workload.dataset.format "
            "(jsonl, json, csv, parquet)",
        )
    ]
    prepared = prepare_workload(
        workload({"source": str(data), "format": "jsonl", "fields": {"context": "passage"}})
    )
    assert [p.text for p in prepared.by_bin["1-100000"]] == EXPECTED_TEXTS


def test_malformed_rows_are_named_and_refused_or_counted(tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(RECORDS[0]),
        "{not json",
        "[1, 2]",
        json.dumps({"id": "q9", "passage": "No question here."}),
        json.dumps(RECORDS[1]),
    ]
    data.write_text("\n".join(lines) + "\n")
    spec: dict[str, Any] = {"source": str(data), "fields": {"context": "passage"}}
    with pytest.raises(DatasetError) as refused:
        prepare_workload(workload(spec))
    message = str(refused.value)
    assert message.startswith("2 malformed row(s): ")
    assert f"{data}, line 2: not valid JSON" in message
    assert f"{data}, line 3: each line must be a JSON object" in message
    assert "malformed_rows: skip" in message

    skipped = prepare_workload(workload({**spec, "malformed_rows": "skip"}))
    assert [str(m) for m in skipped.malformed] == [
        f"{data}, line 2: not valid JSON (Expecting property name enclosed in double quotes)",
        f"{data}, line 3: each line must be a JSON object",
        f"{data}, line 4: field 'question' (prompt_template {{question}}) is missing or not text",
    ]
    assert [p.record_id for p in skipped.by_bin["1-100000"]] == ["q1", "q2"]


def test_malformed_csv_and_json_rows_name_their_line_or_item(tmp_path: Path) -> None:
    table = tmp_path / "qa.csv"
    table.write_text("id,passage,question\nq1,Lyon.,Where?\nq2,too,many,values\nq3,Bern.,What?\n")
    spec = {"source": str(table), "fields": {"context": "passage"}, "malformed_rows": "skip"}
    prepared = prepare_workload(workload(spec))
    assert [str(m) for m in prepared.malformed] == [f"{table}, line 3: has 4 values, the header names 3"]
    assert [p.record_id for p in prepared.by_bin["1-100000"]] == ["q1", "q3"]

    listing = tmp_path / "qa.json"
    listing.write_text(json.dumps([RECORDS[0], "a string", RECORDS[2]]))
    prepared = prepare_workload(workload({**spec, "source": str(listing)}))
    assert [str(m) for m in prepared.malformed] == [f"{listing}, item 2: must be a JSON object, is str"]


@pytest.mark.parametrize(
    ("content", "dataset", "path", "reason"),
    [
        ("{", {}, "workload.dataset.source", "not valid JSON at line 1, column 2"),
        (json.dumps({"a": [], "b": []}), {}, "workload.dataset.records_key", "holds 2 (a, b)"),
        (
            json.dumps({"a": RECORDS}),
            {"records_key": "b"},
            "workload.dataset.records_key",
            "no list under 'b'",
        ),
        (
            json.dumps(RECORDS),
            {"fields": {"context": "text"}},
            "workload.dataset.fields.context",
            "lacks field(s) text",
        ),
        (
            json.dumps(RECORDS),
            {"fields": {"context": "passage"}, "ground_truth": "label"},
            "workload.dataset.ground_truth",
            "lacks field(s) label used by dataset.ground_truth",
        ),
        (json.dumps([]), {}, "workload.dataset.source", "has no records"),
    ],
)
def test_a_dataset_that_does_not_fit_names_the_suite_field(
    tmp_path: Path, content: str, dataset: dict[str, Any], path: str, reason: str
) -> None:
    data = tmp_path / "qa.json"
    data.write_text(content)
    problems = check_dataset(workload({"source": str(data), **dataset}))
    assert [p for p, _ in problems] == [path]
    assert reason in problems[0][1]


def test_an_unreadable_parquet_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "qa.parquet"
    data.write_bytes(b"PAR1 but not really")
    ((path, reason),) = check_dataset(workload({"source": str(data)}))
    assert path == "workload.dataset.source"
    assert reason.startswith(f"{data}: not a readable Parquet file")


def test_a_suite_names_the_field_path_of_a_missing_dataset_field(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    suite = {
        "name": "s",
        "targets": [{"name": "emu", "platform": "emulator"}],
        "workload": {
            "dataset": {"source": "qa.jsonl", "fields": {"context": "passage", "question": "query"}},
            "prompt_template": TEMPLATE,
            "bins": ALL_TOKENS,
        },
        "load": {"concurrency": [1], "requests_per_level": 2},
    }
    with pytest.raises(SuiteValidationError) as refused:
        validate_suite_data(suite, base_dir=tmp_path)
    (problem,) = refused.value.problems
    assert problem.path == "workload.dataset.fields.question"
    assert problem.reason.startswith(
        "every record of qa.jsonl lacks field(s) query used by workload.prompt_template"
    )


def test_system_prompt_and_list_answers_are_kept_on_every_prompt(tmp_path: Path) -> None:
    data = tmp_path / "longbench.jsonl"
    records = [
        {"_id": "a1", "context": "Doc one.", "input": "Who?", "answers": ["Ann", "Anne"], "sys": "Be brief."},
        {"_id": "a2", "context": "Doc two.", "input": "When?", "answers": ["1999"], "sys": "Be brief."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = {"source": str(data), "fields": {"question": "input"}, "id_field": "_id", "system_prompt": "sys"}
    (prompts,) = prepare_workload(workload(spec)).by_bin.values()
    assert [p.record_id for p in prompts] == ["a1", "a2"]
    assert prompts[0].reference_answers == ("Ann", "Anne") and prompts[0].reference_answer == "Ann"
    assert prompts[0].chat_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Doc one.\nQ: Who?"},
    ]
    tokenizer = SimpleTokenizer()
    assert prompts[0].prompt_tokens == tokenizer.count("Be brief.") + tokenizer.count("Doc one.\nQ: Who?")


def test_a_sharegpt_conversation_is_sent_as_chat_messages(tmp_path: Path) -> None:
    data = tmp_path / "sharegpt.json"
    conversations = [
        {
            "id": "c1",
            "conversations": [
                {"from": "human", "value": "Hi there"},
                {"from": "gpt", "value": "Hello!"},
                {"from": "human", "value": "Name a river"},
                {"from": "gpt", "value": "The Rhone"},
            ],
        },
        {"id": "c2", "conversations": [{"from": "gpt", "value": "Only me"}]},
        {"id": "c3", "conversations": [{"role": "user", "content": "Plain OpenAI form"}]},
    ]
    data.write_text(json.dumps(conversations))
    prepared = prepare_workload(
        workload({"source": str(data), "messages": "conversations", "malformed_rows": "skip"})
    )
    first, third = prepared.by_bin["1-100000"]
    assert first.messages == (
        ChatMessage("user", "Hi there"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "Name a river"),
    )
    assert first.reference_answer == "The Rhone"
    assert first.prompt_tokens == 2 + 2 + 3  # Hi there | Hello ! | Name a river
    assert third.chat_messages() == [{"role": "user", "content": "Plain OpenAI form"}]
    assert [str(m) for m in prepared.malformed] == [
        f"{data}, item 2: field 'conversations' (messages) has no user message"
    ]


def test_identical_prompts_are_sent_once(tmp_path: Path) -> None:
    data = tmp_path / "dup.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [RECORDS[0], RECORDS[1], RECORDS[0]]))
    prepared = prepare_workload(workload({"source": str(data), "fields": {"context": "passage"}}))
    assert len(prepared.by_bin["1-100000"]) == 2 and prepared.duplicates == 1


# ------------------------------------------------------------------------------------------ decks


def three_hundred_records(folder: Path) -> Path:
    data = folder / "many.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "question": f"What is item number {i}?"}) + "\n" for i in range(300)
        )
    )
    return data


def test_200_requests_over_300_records_get_200_distinct_prompts(tmp_path: Path) -> None:
    data = three_hundred_records(tmp_path)
    prepared = prepare_workload(workload({"source": str(data)}, prompt_template="{question}"))
    deck = prepared.deck("1-100000")
    sent = deck.take(200)
    assert len({p.text for p in sent}) == 200
    assert (deck.distinct, deck.drawn, deck.reused) == (300, 200, 0)
    # seeded: the same order again for the same seed, another for another seed; not the file's order
    assert [p.record_id for p in prepared.deck("1-100000").take(200)] == [p.record_id for p in sent]
    other = PromptDeck("1-100000", prepared.by_bin["1-100000"], seed=1).take(200)
    assert [p.record_id for p in other] != [p.record_id for p in sent]
    assert [p.record_id for p in sent] != [f"r{i}" for i in range(200)]


def test_past_the_last_distinct_prompt_cycle_counts_reuse_and_error_refuses(tmp_path: Path) -> None:
    data = three_hundred_records(tmp_path)
    prompts = prepare_workload(workload({"source": str(data)}, prompt_template="{question}")).by_bin[
        "1-100000"
    ]
    drawn = draw_prompts(prompts, 350, seed=3, repeat="cycle", label="all")
    assert drawn.reused == 50
    assert len({p.text for p in drawn.prompts[:300]}) == 300
    assert drawn.prompts[300:] == drawn.prompts[:50]
    deck = PromptDeck("all", prompts, seed=3, repeat="error")
    deck.take(300)
    with pytest.raises(PromptsExhaustedError, match="bin all has 300 distinct prompt"):
        deck.draw()


# -------------------------------------------------------------------------------------- synthetic


def test_synthetic_prompts_have_exact_lengths_and_a_shared_prefix_with_the_simple_tokenizer() -> None:
    work = Workload.model_validate(
        {
            "synthetic": {
                "prompt_tokens": {"distribution": "normal", "mean_tokens": 120, "stddev_tokens": 30},
                "shared_prefix_tokens": 32,
            },
            "bins": [{"min_tokens": 1, "max_tokens": 100}, {"min_tokens": 100, "max_tokens": 400}],
            "seed": 5,
        }
    )
    prepared = prepare_workload(work, synthetic_prompts_per_bin=40)
    tokenizer = SimpleTokenizer()
    prefixes = set()
    for token_bin in work.bins:
        prompts = prepared.by_bin[token_bin.label]
        assert len(prompts) == 40 and len({p.text for p in prompts}) == 40
        for prompt in prompts:
            assert tokenizer.count(prompt.text) == prompt.prompt_tokens
            assert token_bin.min_tokens <= prompt.prompt_tokens < token_bin.max_tokens
            prefixes.add(tuple(tokenizer.split(prompt.text)[:32]))
    assert len(prefixes) == 1
    # the same seed makes the same prompts; a deck over a synthetic bin never runs out
    again = prepare_workload(work, synthetic_prompts_per_bin=40)
    assert again.by_bin == prepared.by_bin
    deck = prepared.deck("100-400")
    assert deck.distinct is None
    assert deck.take(40) == prepared.by_bin["100-400"]
    assert len({p.text for p in deck.take(100)}) == 100 and deck.reused == 0


def test_a_synthetic_workload_round_trips_through_json_with_all_its_defaults() -> None:
    work = Workload.model_validate(
        {"synthetic": {"prompt_tokens": 64, "shared_prefix_tokens": 8}, "bins": ALL_TOKENS, "repeat": "error"}
    )
    assert Workload.model_validate_json(work.model_dump_json()) == work
    chat = workload({"source": "chat.jsonl", "messages": "conversations"})
    assert Workload.model_validate_json(chat.model_dump_json()) == chat


def test_synthetic_lengths_that_miss_a_bin_are_refused() -> None:
    spec = SyntheticSpec.model_validate(
        {"prompt_tokens": {"distribution": "uniform", "min_tokens": 10, "max_tokens": 20}}
    )
    bins = [
        TokenBin(min_tokens=1, max_tokens=15),
        TokenBin(min_tokens=15, max_tokens=30),
        TokenBin(min_tokens=50, max_tokens=60),
    ]
    assert check_synthetic(spec, bins) == [
        ("workload.bins.2", "synthetic prompts of 10-20 (uniform) tokens never have [50, 60) tokens")
    ]
    maker = SyntheticPromptMaker(spec, SimpleTokenizer(), bins[0], seed=0)
    assert {maker.prompt(i).prompt_tokens for i in range(50)} <= set(range(10, 15))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"synthetic": {"prompt_tokens": 64}, "dataset": {"source": "x.jsonl"}},
            "give dataset or synthetic, not both",
        ),
        ({"synthetic": {"prompt_tokens": 64}, "prompt_template": "{q}"}, "prompt_template does not apply"),
        (
            {"synthetic": {"prompt_tokens": 64, "shared_prefix_tokens": 64}},
            "must be below the shortest prompt",
        ),
        ({"dataset": {"source": "x.jsonl", "split": "test"}}, "split apply to Hub datasets"),
        ({"dataset": {"source": "hf:not a repo"}}, "a Hub dataset is hf:OWNER/NAME"),
        ({"dataset": {"source": "gs://bucket/x.jsonl"}}, "unsupported scheme gs://"),
        ({"tokenizer": "hf:what is this"}, "neither a Hub model id"),
    ],
)
def test_workload_options_are_checked(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Workload.model_validate({"bins": ALL_TOKENS, **fields})


# ------------------------------------------------------------------------------ hub file choice


def test_hub_data_files_follow_the_card_configs_then_the_file_names() -> None:
    files = (
        "README.md",
        "qa/train-00000-of-00001.parquet",
        "qa/test-00000-of-00001.parquet",
        "chat/test.jsonl",
        "chat/validation.jsonl",
        "data.zip",
    )
    cards = (
        {"config_name": "qa", "data_files": [{"split": "test", "path": "qa/test-*"}]},
        {"config_name": "chat", "data_files": [{"split": "test", "path": ["chat/test.jsonl"]}]},
    )
    assert hub_data_files(files, cards, "qa", "test") == ["qa/test-00000-of-00001.parquet"]
    assert hub_data_files(files, cards, "chat", "test") == ["chat/test.jsonl"]
    with pytest.raises(DatasetError, match="the dataset has configs qa, chat: name one"):
        hub_data_files(files, cards, None, "test")
    with pytest.raises(DatasetError, match="no split 'train' in config 'qa'; it has test"):
        hub_data_files(files, cards, "qa", None)
    assert hub_data_files(files, (), "chat", "validation") == ["chat/validation.jsonl"]
    assert hub_data_files(files, (), None, None) == ["qa/train-00000-of-00001.parquet"]
    with pytest.raises(DatasetError, match="no data files under a folder 'nope'") as refused:
        hub_data_files(files, (), "nope", None)
    assert refused.value.path == "workload.dataset.config"


# --------------------------------------------------------------------------------- tokenizer names


def test_tokenizer_names_and_local_tokenizer_files(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    for spec in ("simple", "hf:Qwen/Qwen2.5-7B-Instruct", "hf:gpt2@main", "hf:./tok", "hf:/x/tokenizer.json"):
        assert check_tokenizer_spec(spec) == spec
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, ",": 3}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "tok"
    folder.mkdir()
    word_level.save(str(folder / "tokenizer.json"))
    for spec in ("hf:./tok", f"hf:{folder}", "hf:./tok/tokenizer.json"):
        tokenizer = load_tokenizer(spec, base_dir=tmp_path)
        assert tokenizer.count("hello, world unknown") == 4
        assert tokenizer.name == spec
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        load_tokenizer("hf:./elsewhere", base_dir=tmp_path)
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"hf:./broken.json: not a valid tokenizer.json"):
        load_tokenizer("hf:./broken.json", base_dir=tmp_path)


def test_hub_settings_are_read_from_the_environment_of_the_moment() -> None:
    assert hub_settings(environ={"HF_ENDPOINT": "http://127.0.0.1:9/", "HF_HOME": "/h"}) == HubSettings(
        "http://127.0.0.1:9", Path("/h/hub"), None
    )
    env = {"HF_HUB_CACHE": "/c", "HF_HOME": "/h", "HF_TOKEN": "hf_env"}
    assert hub_settings(environ=env) == HubSettings("https://huggingface.co", Path("/c"), "hf_env")
    assert hub_settings("hf_caller", environ=env).token == "hf_caller"
    assert hub_settings(environ={"XDG_CACHE_HOME": "/x"}).cache_dir == Path("/x/huggingface/hub")
