"""Evaluation sets: reference data (text the teacher did not write) and held-out teacher generations, and their
tokenization for a model.

Chat rows are scored on the final assistant turn only, through each model's own chat template, exactly as the
students were trained (`distillab.data.chat.tokenize_conversation`): the completion plus the end-of-turn token,
which a truncated teacher row (finish_reason=length) does not have. Text rows are scored on every token.
Every set used is written to `output_dir/eval_sets/<name>.jsonl`, so results name a file for each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab.data.chat import (
    IGNORE_INDEX,
    NO_ASSISTANT_TURN,
    chat_messages,
    end_of_turn_token_id,
    tokenize_conversation,
)
from distillab.data.sources import REASONING_GYM_PREFIX, load_table, reasoning_gym_records
from distillab.errors import DataError
from distillab.evaluate.config import EvaluateConfig
from distillab.fileio import atomic_write_text


@dataclass
class EvalSet:
    """Rows to score: chats (lists of {role, content}, ending with the assistant turn) or plain texts."""

    name: str
    source: str
    kind: str  # chat | text
    rows: list[Any]
    finished: list[bool]  # chat: the assistant turn ended (its end-of-turn token is scored)
    queries: list[str]  # the text of each row that n-gram decontamination compares (prompts, texts)
    selection: str = "all rows"
    path: str | None = None  # the jsonl copy written beside the results

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "kind": self.kind,
            "rows": len(self.rows),
            "selection": self.selection,
        }


@dataclass
class EncodedSet:
    """Token ids and unshifted labels (-100 where not scored) of an EvalSet, for one tokenizer."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    rows_cut: int = 0
    scored_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.scored_tokens = sum(sum(t != IGNORE_INDEX for t in labels[1:]) for labels in self.labels)


def load_reference_set(config: EvaluateConfig, system_prompt: str | None) -> EvalSet:
    """The reference data of the config: a reasoning-gym generator, a local file or a Hub dataset."""
    source = config.reference_data
    if source.startswith(REASONING_GYM_PREFIX):
        records = reasoning_gym_records(
            source.removeprefix(REASONING_GYM_PREFIX), config.reference_num_rows or 64, config.reference_seed
        )
        rows = [chat_messages(r["question"], system_prompt, r["answer"]) for r in records]
        return _chat_set("reference", f"{source} (seed {config.reference_seed})", rows)
    table = load_table(
        source, what="reference data", config_name=config.reference_config, split=config.reference_split
    )
    if config.reference_num_rows is not None:
        table = table.select(range(min(config.reference_num_rows, len(table))))
    columns = table.column_names
    if config.reference_messages_column in columns:
        return _chat_set("reference", source, [list(m) for m in table[config.reference_messages_column]])
    if config.reference_prompt_column:
        for column in (config.reference_prompt_column, config.reference_answer_column):
            if column not in columns:
                raise DataError(
                    f"column {column!r} not found in reference data {source}; columns: {', '.join(columns)}"
                )
        pairs = zip(table[config.reference_prompt_column], table[config.reference_answer_column], strict=True)
        return _chat_set(
            "reference", source, [chat_messages(str(p), system_prompt, str(a)) for p, a in pairs]
        )
    if config.reference_text_column in columns:
        texts = [t for t in table[config.reference_text_column] if isinstance(t, str) and t.strip()]
        return _checked(EvalSet("reference", source, "text", texts, [True] * len(texts), texts))
    raise DataError(
        f"reference data {source} has no {config.reference_messages_column!r} (chat) or "
        f"{config.reference_text_column!r} (text) column; columns: {', '.join(columns)} "
        "(set --reference_messages_column, --reference_text_column or --reference_prompt/answer_column)"
    )


def load_heldout_set(config: EvaluateConfig) -> EvalSet | None:
    """The held-out teacher generations (a hard-label dataset), narrowed by --heldout_ids_file / --heldout_last_n."""
    from distillab.data.hardlabels import load_hard_labels

    if not config.heldout_data:
        return None
    dataset = load_hard_labels(config.heldout_data, split=config.heldout_split)
    selection = "all rows"
    if config.heldout_ids_file:
        wanted = set(_read_ids(config.heldout_ids_file))
        dataset = dataset.filter(lambda row_id: row_id in wanted, input_columns="id")
        selection = f"ids in {config.heldout_ids_file}"
    if config.heldout_last_n:
        dataset = dataset.select(range(max(0, len(dataset) - config.heldout_last_n), len(dataset)))
        selection = f"last {config.heldout_last_n} rows" + (
            "" if selection == "all rows" else f" of the {selection}"
        )
    return _checked(
        EvalSet(
            "teacher_generations",
            config.heldout_data,
            "chat",
            [list(m) for m in dataset["messages"]],
            [reason != "length" for reason in dataset["finish_reason"]],
            list(dataset["prompt"]),
            selection,
        )
    )


def heldout_system_prompt(config: EvaluateConfig) -> str | None:
    """The system prompt the held-out generations were made with (their distillab.json), if any."""
    from distillab.data.hardlabels import read_metadata

    if not config.heldout_data or not Path(config.heldout_data).is_dir():
        return None
    return ((read_metadata(config.heldout_data) or {}).get("generation") or {}).get("system_prompt")


def save_eval_set(eval_set: EvalSet, directory: Path) -> None:
    """Write the rows actually scored to `directory/<name>.jsonl` and record the path."""
    path = Path(directory) / f"{eval_set.name}.jsonl"
    key = "messages" if eval_set.kind == "chat" else "text"
    atomic_write_text(
        path, "".join(json.dumps({key: row}, ensure_ascii=False) + "\n" for row in eval_set.rows)
    )
    eval_set.path = str(path)


def encode_set(eval_set: EvalSet, tokenizer, max_length: int) -> EncodedSet:
    """Token ids and labels of every row for `tokenizer`, cut to `max_length` tokens."""
    input_ids, labels, rows_cut = [], [], 0
    end_of_turn = end_of_turn_token_id(tokenizer) if eval_set.kind == "chat" else None
    for row, finished in zip(eval_set.rows, eval_set.finished, strict=True):
        if eval_set.kind == "chat":
            encoded = tokenize_conversation(row, tokenizer, end_of_turn, finished)
            if encoded["problem"] == NO_ASSISTANT_TURN:
                raise DataError(
                    f"a {eval_set.name} row ({eval_set.source}) does not end with an assistant turn"
                )
            ids, row_labels = encoded["input_ids"], encoded["labels"]
        else:
            ids = tokenizer(row, add_special_tokens=True)["input_ids"]
            row_labels = list(ids)
        rows_cut += len(ids) > max_length
        input_ids.append(list(ids[:max_length]))
        labels.append(list(row_labels[:max_length]))
    encoded_set = EncodedSet(input_ids, labels, rows_cut)
    if encoded_set.scored_tokens == 0:
        raise DataError(
            f"the {eval_set.name} set ({eval_set.source}) has no token to score (max_length {max_length})"
        )
    return encoded_set


def _chat_set(name: str, source: str, rows: list[list[dict[str, str]]]) -> EvalSet:
    queries = [" ".join(m["content"] for m in row if m["role"] == "user") for row in rows]
    return _checked(EvalSet(name, source, "chat", rows, [True] * len(rows), queries))


def _checked(eval_set: EvalSet) -> EvalSet:
    if not eval_set.rows:
        raise DataError(f"the {eval_set.name} set is empty ({eval_set.source}, {eval_set.selection})")
    return eval_set


def _read_ids(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"--heldout_ids_file not found: {path}")
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]
