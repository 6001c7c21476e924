"""Generate the built-in synthetic question-answering dataset (fmbench/data/synthetic-qa.jsonl).

Each record is a passage of invented facts about invented towns, a question about one fact and its
ground-truth answer, so quality evaluation has a reference and no licence or download is involved.
Passage lengths are spread log-uniformly from a few dozen to a few thousand tokens so that any
reasonable prompt-length bins are populated. The output is deterministic: the test suite regenerates
it and compares it with the committed file.

    python scripts/make_dataset.py [--out PATH] [--records N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

SYLLABLES = [
    "vel",
    "mor",
    "ka",
    "dra",
    "lin",
    "tor",
    "esh",
    "ban",
    "qui",
    "ro",
    "sa",
    "nel",
    "ith",
    "gar",
    "pu",
]
FIRST_NAMES = [
    "Ada",
    "Bram",
    "Cora",
    "Dario",
    "Elin",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kaia",
    "Lior",
]
EXPORTS = [
    "copper",
    "wool",
    "glassware",
    "salted fish",
    "timber",
    "honey",
    "paper",
    "olive oil",
    "clocks",
    "rope",
]
MONTHS = ["January", "March", "April", "June", "August", "September", "October", "December"]

FACTS = [
    (
        "founded",
        "The town of {town} was founded in {year} by {founder}.",
        "In which year was {town} founded?",
    ),
    ("export", "The main export of {town} is {export}.", "What is the main export of {town}?"),
    ("river", "{town} lies on the banks of the river {river}.", "On which river does {town} lie?"),
    (
        "festival",
        "Every year in {month}, {town} holds a festival of lanterns.",
        "In which month does {town} hold its festival?",
    ),
    ("mayor", "The current mayor of {town} is {mayor}.", "Who is the current mayor of {town}?"),
]


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _town(rng: random.Random) -> dict[str, str]:
    return {
        "town": _name(rng, 3),
        "year": str(rng.randint(1050, 1890)),
        "founder": f"{rng.choice(FIRST_NAMES)} {_name(rng, 2)}",
        "export": rng.choice(EXPORTS),
        "river": _name(rng, 2),
        "month": rng.choice(MONTHS),
        "mayor": f"{rng.choice(FIRST_NAMES)} {_name(rng, 2)}",
    }


def _answer(fact: str, town: dict[str, str]) -> str:
    return {
        "founded": town["year"],
        "export": town["export"],
        "river": town["river"],
        "festival": town["month"],
        "mayor": town["mayor"],
    }[fact]


def make_records(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records = []
    for index in range(count):
        # about 13 tokens per sentence: sentences = tokens / 13, log-uniform in [40, 4000] tokens
        target_tokens = math.exp(rng.uniform(math.log(40), math.log(4000)))
        sentences_wanted = max(2, round(target_tokens / 13))
        towns = [_town(rng) for _ in range(max(1, sentences_wanted // len(FACTS) + 1))]
        sentences = []
        for town in towns:
            for _, template, _ in FACTS:
                sentences.append(template.format(**town))
        rng.shuffle(sentences)
        sentences = sentences[:sentences_wanted]
        # ask about a fact that made it into the passage
        while True:
            town = rng.choice(towns)
            fact, template, question = rng.choice(FACTS)
            if template.format(**town) in sentences:
                break
        records.append(
            {
                "id": f"sqa-{index:04d}",
                "context": " ".join(sentences),
                "question": question.format(**town),
                "answer": _answer(fact, town),
            }
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "fmbench/data/synthetic-qa.jsonl"
    )
    parser.add_argument("--records", type=int, default=240)
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args(argv)
    lines = [json.dumps(record, sort_keys=True) for record in make_records(args.records, args.seed)]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} records to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
