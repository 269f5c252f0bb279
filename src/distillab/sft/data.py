"""Hard-label rows -> the token sequences a student trains on. Shared by `sft` and `kd`: both train on exactly
these tokens, in this order, so a hard and a soft student of a matched pair see the same token budget D.

Each row is tokenised and masked through the *student's* chat template
(`distillab.data.chat.tokenize_conversation`). Truncated rows (finish_reason=length) stop before the end-of-turn
token; training on one would teach the student to stop mid-answer. `truncated=drop` leaves such rows out instead.

Then (`fit_to_length`): without packing, or with `bfd` packing, sequences longer than `max_length` are cut
(rows whose prompt alone fills `max_length` are dropped); `wrapped` and `bfd_split` packing split sequences
instead of cutting them. Packing uses TRL's `pack_dataset`; `bfd` adds `seq_lengths` (document boundaries for
padding-free attention). Every count is in the `DataReport`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
from trl.data_utils import pack_dataset

from distillab.data.chat import (
    IGNORE_INDEX,
    check_end_of_turn_supervised,
    end_of_turn_token_id,
    tokenize_conversation,
)
from distillab.errors import ConfigError, DataError

TOKEN_COLUMNS = ("input_ids", "labels")
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")


@dataclass(frozen=True)
class DataOptions:
    """How hard-label rows become training sequences (the SFT/KD config fields of the same names)."""

    max_length: int | None = 1024
    packing: bool = False
    packing_strategy: str = "bfd"
    truncated: str = "keep"
    end_of_turn_token: str | None = None  # default: the tokenizer's eos token
    shuffle: bool = False
    seed: int = 42
    num_proc: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> DataOptions:
        return cls(
            max_length=config.max_length,
            packing=config.packing,
            packing_strategy=config.packing_strategy,
            truncated=config.truncated,
            end_of_turn_token=config.eos_token,
            shuffle=config.shuffle_dataset,
            seed=config.seed,
            num_proc=config.dataset_num_proc,
        )

    @property
    def cuts_long_sequences(self) -> bool:
        """True when sequences over max_length lose their tail (no packing, or bfd packing)."""
        return self.max_length is not None and (not self.packing or self.packing_strategy == "bfd")


@dataclass
class DataReport:
    """What happened to the rows on their way to training sequences."""

    rows: int = 0
    truncated_rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    rows_cut_at_max_length: int = 0
    tokens_cut: int = 0
    supervised_tokens_cut: int = 0
    sequences: int = 0
    tokens: int = 0
    supervised_tokens: int = 0  # per epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        parts = [
            f"{self.rows} rows -> {self.sequences} sequences, {self.tokens:,} tokens "
            f"({self.supervised_tokens:,} supervised per epoch)"
        ]
        if self.truncated_rows_kept:
            parts.append(f"{self.truncated_rows_kept} truncated rows kept without end-of-turn")
        if self.rows_cut_at_max_length:
            parts.append(
                f"{self.rows_cut_at_max_length} rows cut at max_length ({self.tokens_cut:,} tokens, "
                f"{self.supervised_tokens_cut:,} supervised)"
            )
        parts += [f"{count} rows dropped ({reason})" for reason, count in self.dropped.items() if count]
        return "; ".join(parts)


@dataclass
class TrainingData:
    dataset: Any  # datasets.Dataset: input_ids, labels (+ seq_lengths with bfd packing)
    report: DataReport


def build_training_data(
    hard_labels, tokenizer, options: DataOptions, attach: Callable[[Any], Any] | None = None
) -> TrainingData:
    """The training sequences of a hard-label dataset for a student tokenizer (deterministic).

    `attach` (KD) receives the tokenised rows (`id`, `input_ids`, `labels`, `truncated`) before they are cut,
    shuffled and packed, and returns them with extra per-token columns (one entry per token of `input_ids`),
    which are then cut, shuffled and packed along with the tokens.
    """
    if len(hard_labels) == 0:
        raise DataError("the hard-label dataset has no rows")
    end_of_turn_id = end_of_turn_token_id(tokenizer, options.end_of_turn_token)
    check_end_of_turn_supervised(tokenizer, end_of_turn_id)
    rows = tokenize_hard_labels(hard_labels, tokenizer, end_of_turn_id, options.num_proc)
    report = DataReport(rows=len(hard_labels))
    rows = _apply_truncated_policy(rows, options.truncated, report)
    rows = _drop_rows_without_supervision(rows, report)
    token_columns = TOKEN_COLUMNS
    if attach is not None:
        columns = set(rows.column_names)
        rows = attach(rows)
        token_columns = (*TOKEN_COLUMNS, *(c for c in rows.column_names if c not in columns))
    return TrainingData(fit_to_length(rows, options, report, token_columns), report)


def with_reference_answers(hard_labels):
    """The rows with the dataset's `reference` answer as the assistant turn (finished): a supervised baseline
    on the teacher's prompts. A `DataError` names a dataset without references or a row without one."""
    if "reference" not in hard_labels.column_names:
        raise DataError("--train_on reference: the dataset has no `reference` column (reference answers)")
    missing = [
        row_id for row_id, ref in zip(hard_labels["id"], hard_labels["reference"], strict=True) if not ref
    ]
    if missing:
        raise DataError(
            f"--train_on reference: {len(missing)} row(s) have no reference answer, e.g. {missing[0]}"
        )

    def answer_with_reference(row):
        messages = [*row["messages"][:-1], {"role": "assistant", "content": row["reference"]}]
        return {"messages": messages, "completion": row["reference"], "finish_reason": "stop"}

    return hard_labels.map(answer_with_reference, desc="Reference answers")


def tokenize_hard_labels(hard_labels, tokenizer, end_of_turn_id: int, num_proc: int | None = None):
    """Rows -> id, input_ids, labels, truncated (bool); a `DataError` names rows the template cannot handle."""
    rows = hard_labels.map(
        _tokenize_row,
        fn_kwargs={"tokenizer": tokenizer, "end_of_turn_id": end_of_turn_id},
        remove_columns=[c for c in hard_labels.column_names if c != "id"],
        num_proc=num_proc,
        desc="Tokenizing hard labels",
    )
    problems = [
        (row_id, problem) for row_id, problem in zip(rows["id"], rows["problem"], strict=True) if problem
    ]
    if problems:
        row_id, problem = problems[0]
        raise DataError(
            f"{len(problems)} row(s) cannot be trained on through the student's chat template "
            f"(first: id {row_id}: {problem})"
        )
    return rows.remove_columns("problem")


def _tokenize_row(row: dict, tokenizer, end_of_turn_id: int) -> dict:
    truncated = row["finish_reason"] == "length"
    return {
        **tokenize_conversation(row["messages"], tokenizer, end_of_turn_id, not truncated),
        "truncated": truncated,
    }


def _apply_truncated_policy(rows, policy: str, report: DataReport):
    truncated = sum(rows["truncated"])
    if policy == "drop":
        rows = rows.filter(lambda flag: not flag, input_columns="truncated")
        report.dropped["truncated (finish_reason=length)"] = truncated
        if len(rows) == 0:
            raise DataError(
                "every row is truncated (finish_reason=length) and truncated=drop: use --truncated keep, "
                "or regenerate with a larger max_new_tokens"
            )
    else:
        report.truncated_rows_kept = truncated
    return rows


def _drop_rows_without_supervision(rows, report: DataReport):
    kept = rows.filter(lambda labels: any(t != IGNORE_INDEX for t in labels), input_columns="labels")
    report.dropped["no completion tokens"] = len(rows) - len(kept)
    if len(kept) == 0:
        raise DataError("no row has a completion token to train on")
    return kept


def fit_to_length(rows, options: DataOptions, report: DataReport, token_columns=TOKEN_COLUMNS):
    """Cut (no packing, bfd) or split (wrapped, bfd_split) to `max_length`, shuffle if asked, then pack.

    `token_columns` are the per-token columns carried along (KD adds its teacher columns); row order is kept
    unless `options.shuffle`.
    """
    if options.cuts_long_sequences:
        rows = _cut_at_max_length(rows, options.max_length, token_columns, report)
    rows = rows.select_columns(list(token_columns))
    if options.shuffle:
        rows = rows.shuffle(seed=options.seed).flatten_indices()
    if options.packing:
        if options.packing_strategy not in PACKING_STRATEGIES:
            raise ConfigError(
                f"unknown packing strategy {options.packing_strategy!r}; choose from {PACKING_STRATEGIES}"
            )
        rows = pack_dataset(
            rows, options.max_length, options.packing_strategy, {"num_proc": options.num_proc}
        )
    labels = rows.with_format("arrow")["labels"]
    report.sequences = len(rows)
    report.tokens = pc.sum(pc.list_value_length(labels)).as_py()
    report.supervised_tokens = supervised_token_count(rows)
    return rows


def supervised_token_count(sequences) -> int:
    """Number of supervised tokens (labels != -100) in a dataset of training sequences."""
    labels = pc.list_flatten(sequences.with_format("arrow")["labels"])
    return pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0


def _cut_at_max_length(rows, max_length: int, token_columns, report: DataReport):
    stats = rows.map(
        lambda labels: {
            "length": len(labels),
            "supervised_kept": sum(t != IGNORE_INDEX for t in labels[:max_length]),
            "supervised_cut": sum(t != IGNORE_INDEX for t in labels[max_length:]),
        },
        input_columns="labels",
        remove_columns=rows.column_names,
    )
    lengths, kept, cut = stats["length"], stats["supervised_kept"], stats["supervised_cut"]
    keep = [i for i, supervised in enumerate(kept) if supervised]
    if not keep:
        shortest_prompt = min(length - s - c for length, s, c in zip(lengths, kept, cut, strict=True))
        raise DataError(
            f"max_length={max_length} leaves no completion token to train on: the shortest prompt is "
            f"{shortest_prompt} tokens; raise --max_length"
        )
    report.dropped["prompt fills max_length"] = len(lengths) - len(keep)
    report.rows_cut_at_max_length = sum(lengths[i] > max_length for i in keep)
    report.tokens_cut = sum(max(0, lengths[i] - max_length) for i in keep)
    report.supervised_tokens_cut = sum(cut[i] for i in keep)
    rows = rows.select(keep) if len(keep) < len(lengths) else rows
    return rows.map(lambda row: {c: row[c][:max_length] for c in token_columns}, desc="Cutting at max_length")
