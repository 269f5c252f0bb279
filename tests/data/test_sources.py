"""Prompt / eval-set sources: every local table file type, reasoning-gym tasks, and one-line errors naming the
source."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distillab.data.sources import load_table, number_in_words, reasoning_gym_records
from distillab.errors import DataError

ROWS = [{"question": "What is 2+2?", "answer": "four"}, {"question": "Name a prime.", "answer": "seven"}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_table_file_type_loads_its_rows(tmp_path, suffix):
    frame = pd.DataFrame(ROWS)
    path = tmp_path / f"table{suffix}"
    {
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".json": lambda: path.write_text(json.dumps(ROWS)),
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    assert load_table(str(path), what="prompt").to_list() == ROWS


def test_a_text_file_is_one_row_per_line(tmp_path):
    path = tmp_path / "reference.txt"
    path.write_text("first line\nsecond line\n")
    assert load_table(str(path), what="reference data")["text"] == ["first line", "second line"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "prompt file not found: {path}"),
        ("empty.jsonl", "\n", "the prompt file {path} is empty"),
        ("prompts.xlsx", "a", "unsupported prompt file type '.xlsx' ({path}); use .jsonl, .json, .parquet"),
        ("broken.parquet", "not parquet", "cannot read prompt file {path}: "),
        (
            "latin1.jsonl",
            b'{"q": "a"}\n{"q": "\xe9"}\n',
            "the prompt file {path} is not UTF-8 text (line 2: ",
        ),
        ("latin1.json", b'[{"q": "\xe9"}]', "the prompt file {path} is not UTF-8 text (line 1: "),
        ("latin1.csv", b"q\nok\n\xe9t\xe9\n", "the prompt file {path} is not UTF-8 text (line 3: "),
        ("latin1.txt", b"\xff\n", "the prompt file {path} is not UTF-8 text (line 1: "),
    ],
)
def test_table_file_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        load_table(str(path), what="prompt")
    assert str(err.value).startswith(message.format(path=path))


def test_an_unknown_hub_dataset_is_a_data_error():
    with pytest.raises(
        DataError, match=r"^cannot load dataset 'no-such-org/no-such-data' \(config=None, split=test\)"
    ):
        load_table("no-such-org/no-such-data", what="prompt", split="test")


def test_reasoning_gym_records_are_seeded_questions_with_string_answers():
    first = reasoning_gym_records("basic_arithmetic", 5, seed=3)
    assert first == reasoning_gym_records("basic_arithmetic", 5, seed=3)
    assert first != reasoning_gym_records("basic_arithmetic", 5, seed=4)
    assert len(first) == 5 and all(r["question"].startswith("Calculate") for r in first)
    assert all(isinstance(r["answer"], str) and r["answer"] for r in first)


def test_an_unknown_reasoning_gym_task_is_named_as_the_caller_asks():
    with pytest.raises(DataError, match=r"^unknown reasoning-gym task 'no_such_task': "):
        reasoning_gym_records("no_such_task", 5, seed=0)
    with pytest.raises(DataError, match=r"^unknown --generator 'no_such_task': "):
        reasoning_gym_records("no_such_task", 5, seed=0, what="--generator")


def test_numbers_in_words():
    assert [number_in_words(n) for n in (0, 7, 14, 19, 20, 40, 42, 99)] == [
        "zero",
        "seven",
        "fourteen",
        "nineteen",
        "twenty",
        "forty",
        "forty-two",
        "ninety-nine",
    ]


def test_number_words_train_and_test_questions_never_meet():
    train = reasoning_gym_records("number_words", 70, seed=1)
    test = reasoning_gym_records("number_words_test", 30, seed=2)
    assert len({r["question"] for r in train}) == 70 and len({r["question"] for r in test}) == 30
    assert sorted(int(r["answer"]) for r in train + test) == list(range(100))
    assert train[0] == {
        "question": f"Write the number {number_in_words(int(train[0]['answer']))} in digits.",
        "answer": train[0]["answer"],
    }
    assert reasoning_gym_records("number_words", 5, seed=3) == reasoning_gym_records(
        "number_words", 5, seed=3
    )
    with pytest.raises(DataError, match="number_words_test has 30 distinct questions; 31 asked for"):
        reasoning_gym_records("number_words_test", 31, seed=0)
