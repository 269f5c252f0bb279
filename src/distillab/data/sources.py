"""Where prompts and evaluation sets come from: tables (a local file or a Hub dataset), reasoning-gym tasks and
distillab's own offline tasks: `number_words` / `number_words_test`, a number below 100 written in words, to be
answered in digits, split once into 70 numbers to train on and 30 to evaluate on (no question in both).

Shared by `generate` (prompts) and `evaluate` (reference data). Every failure is a one-line `DataError` naming
the source; `what` says what the caller is loading ("prompt", "reference data").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillab.errors import DataError, first_line

REASONING_GYM_PREFIX = "reasoning-gym:"
TABLE_FILE_TYPES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def is_local_file(source: str) -> bool:
    """True when `source` names a local file (a table file suffix, or an existing path), not a Hub dataset."""
    path = Path(source)
    return path.suffix in TABLE_FILE_TYPES or path.exists()


def load_table(source: str, *, what: str, config_name: str | None = None, split: str = "train"):
    """A `datasets.Dataset` from a local table file (by its suffix) or the `split` of a Hub dataset."""
    import datasets

    if is_local_file(source):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{what} file not found: {source}")
        content = path.read_bytes()
        if not content.strip():
            raise DataError(f"the {what} file {source} is empty")
        builder = TABLE_FILE_TYPES.get(path.suffix)
        if builder is None:
            raise DataError(
                f"unsupported {what} file type {path.suffix!r} ({source}); use {', '.join(TABLE_FILE_TYPES)}"
            )
        if builder != "parquet":
            _check_utf8(content, f"the {what} file {source}")
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # malformed files surface as many different exception types
            raise DataError(f"cannot read {what} file {source}: {first_line(err)}") from None
    try:
        return datasets.load_dataset(source, config_name, split=split)
    except Exception as err:  # DatasetNotFoundError, ConnectionError, ValueError(split) ...
        raise DataError(
            f"cannot load dataset {source!r} (config={config_name}, split={split}): {first_line(err)}"
        ) from None


def _check_utf8(content: bytes, where: str) -> None:
    """Text tables must be UTF-8: the readers would fail later, deep inside, on the first bad row."""
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        raise DataError(f"{where} is not UTF-8 text (line {line}: {err.reason})") from None


def reasoning_gym_records(
    task: str, size: int, seed: int, what: str = "reasoning-gym task"
) -> list[dict[str, Any]]:
    """`size` items of a reasoning-gym `task` (or of an offline task of `OFFLINE_TASKS`) as {question, answer}
    (deterministic for a seed)."""
    if task in OFFLINE_TASKS:
        return OFFLINE_TASKS[task](size, seed)
    import reasoning_gym

    try:
        items = reasoning_gym.create_dataset(task, size=size, seed=seed)
    except (KeyError, ValueError) as err:
        raise DataError(f"unknown {what} {task!r}: {err}") from None
    return [{"question": item["question"], "answer": str(item["answer"])} for item in items]


ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_in_words(number: int) -> str:
    """0 <= number < 100 in English words: 7 -> seven, 42 -> forty-two."""
    if number < 20:
        return ONES[number]
    return TENS[number // 10 - 2] + (f"-{ONES[number % 10]}" if number % 10 else "")


def number_words_split() -> tuple[list[int], list[int]]:
    """The numbers below 100 in a fixed shuffle: (70 to train on, 30 to evaluate on)."""
    import random

    numbers = list(range(100))
    random.Random(0).shuffle(numbers)
    return numbers[:70], numbers[70:]


def number_words_records(split: int, size: int, seed: int) -> list[dict[str, Any]]:
    """`size` distinct questions of one split (0: train, 1: test), drawn with `seed`."""
    import random

    pool = number_words_split()[split]
    name = ("number_words", "number_words_test")[split]
    if size > len(pool):
        raise DataError(f"{name} has {len(pool)} distinct questions; {size} asked for")
    return [
        {"question": f"Write the number {number_in_words(n)} in digits.", "answer": str(n)}
        for n in random.Random(seed).sample(pool, size)
    ]


OFFLINE_TASKS = {
    "number_words": lambda size, seed: number_words_records(0, size, seed),
    "number_words_test": lambda size, seed: number_words_records(1, size, seed),
}
