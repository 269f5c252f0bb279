"""Stored top-k soft labels on the SFT training sequences: checked, aligned per row, and batched.

The soft labels (`distillab.data.softlabels`) cover the teacher's tokens of the full chat sequence from
`completion_start`; the SFT pipeline (`distillab.sft.data`) builds the student's sequences from the same rows.
`SoftLabelAttacher` decodes them (`decode_soft_labels`, any stored format) and joins them by row id before the
sequences are cut, shuffled and packed, as per-token columns aligned with the logits (position t holds the
teacher's top-k over token t + 1, and the log of its mass outside them when the dataset stores it; -1 / -inf
where nothing is stored), so that cutting and packing carry them along with the tokens. A row is refused (`DataError` naming
it) when its student tokens are not a prefix of the stored `input_ids`, or when a supervised token is not
covered by a stored, valid top-k.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import METADATA_NAME
from distillab.data.softlabels import (
    PAD_ID,
    SoftLabelFormat,
    decode_soft_labels,
    keep_first_slots,
    validate_soft_labels,
)
from distillab.errors import DataError

TOPK_IDS, TOPK_LOGPROBS, TOPK_LOG_TAIL = "teacher_topk_ids", "teacher_topk_logprobs", "teacher_topk_log_tail"
TEACHER_COLUMNS = (TOPK_IDS, TOPK_LOGPROBS, TOPK_LOG_TAIL)  # the tail only where the dataset stores it
PADDING = {TOPK_IDS: PAD_ID, TOPK_LOGPROBS: -math.inf, TOPK_LOG_TAIL: -math.inf}
BATCH_DTYPES = {TOPK_IDS: np.int32, TOPK_LOGPROBS: np.float32, TOPK_LOG_TAIL: np.float32}


def soft_label_metadata(
    dataset: str, metadata: dict[str, Any] | None, schema: pa.Schema
) -> tuple[dict[str, Any], SoftLabelFormat]:
    """The dataset's `soft_labels` metadata and the format it declares, checked to describe complete soft labels
    whose columns in `schema` are there with the declared types (else a one-line error naming distillab.json)."""
    soft = (metadata or {}).get("soft_labels")
    where = str(Path(dataset) / METADATA_NAME)
    if not soft or not soft.get("complete"):
        raise DataError(
            f"{dataset} has no complete soft labels (distillab.json soft_labels): run `distillab label --dataset "
            f"{dataset}` first, or use --teacher_mode online"
        )
    soft_format = SoftLabelFormat.from_metadata(soft, where)
    soft_format.check_schema(schema, where)
    return soft, soft_format


def check_same_vocabulary(
    student_tokenizer, student_vocab_size: int, fingerprint: str, vocab_size: int, what: str
):
    """KD compares distributions token by token: the student must share `what`'s tokenizer and vocabulary size."""
    from distillab.data.tokenizers import tokenizer_fingerprint

    student_fingerprint = tokenizer_fingerprint(student_tokenizer)
    if student_fingerprint != fingerprint:
        raise DataError(
            f"the student's tokenizer (fingerprint {student_fingerprint}) differs from {what} ({fingerprint}): "
            "KD needs the teacher's tokenizer"
        )
    if student_vocab_size != vocab_size:
        raise DataError(
            f"the student's vocabulary has {student_vocab_size} entries, {what} {vocab_size}: KD needs the same "
            "vocabulary size"
        )


class SoftLabelAttacher:
    """Adds TEACHER_COLUMNS to tokenised SFT rows (`id`, `input_ids`, `labels`), from the hard-label rows' soft
    label columns stored in `soft_format`, keyed by `id`; the first `soft_labels_k` stored slots per position
    (and, with a stored tail, the tail plus the dropped slots' mass)."""

    def __init__(self, hard_labels, *, vocab_size: int, soft_labels_k: int, soft_format: SoftLabelFormat):
        self.soft = hard_labels.select_columns(["id", *soft_format.columns])
        self.vocab_size = vocab_size
        self.soft_labels_k = soft_labels_k
        self.format = soft_format

    def __call__(self, rows):
        index = {row_id: i for i, row_id in enumerate(self.soft["id"])}
        return rows.map(
            lambda row: self.align(row["id"], row["input_ids"], row["labels"], self.soft[index[row["id"]]]),
            desc="Attaching soft labels",
        )

    def align(self, row_id: str, input_ids: list[int], labels: list[int], soft: dict[str, Any]) -> dict:
        """One row's per-token top-k (TEACHER_COLUMNS), after checking it matches and covers the row."""
        start = soft["completion_start"]
        mismatch = _first_difference(input_ids, soft["input_ids"])
        if mismatch is not None:
            raise DataError(
                f"soft labels row {row_id}: the student's token {mismatch} differs from the soft labels' input_ids "
                "(the student's chat template must render the conversation as the teacher's did)"
            )
        supervised = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
        if supervised[0] < start:
            raise DataError(
                f"soft labels row {row_id}: token {supervised[0]} is supervised, but the soft labels only cover "
                f"tokens from completion_start={start}"
            )
        stored_ids, stored_logprobs, stored_tail = decode_soft_labels(soft, self.format)
        validate_soft_labels(
            stored_ids,
            stored_logprobs,
            vocab_size=self.vocab_size,
            n_positions=supervised[-1] - start + 1,
            soft_labels_k=self.soft_labels_k,
            row=row_id,
            mass_tolerance=self.format.mass_tolerance(),
        )
        stored = keep_first_slots(stored_ids, stored_logprobs, stored_tail, self.soft_labels_k)
        # stored row j: the distribution at position start - 1 + j; positions past the sequence are dropped
        covered = min(len(stored_ids), len(input_ids) - start + 1)
        aligned = {}
        for column, values in zip(TEACHER_COLUMNS, stored, strict=True):
            if values is not None:
                laid_out = np.full(
                    (len(input_ids), *values.shape[1:]), PADDING[column], dtype=BATCH_DTYPES[column]
                )
                laid_out[start - 1 : start - 1 + covered] = values[:covered]
                aligned[column] = laid_out
        return aligned


def _first_difference(student: list[int], teacher: list[int]) -> int | None:
    """The first position where `student` is not a prefix of `teacher`, or None."""
    for position, token in enumerate(student):
        if position >= len(teacher) or teacher[position] != token:
            return position
    return None


class SoftLabelCollator:
    """TRL's collator for the tokens, plus TEACHER_COLUMNS laid out like them: right-padded to the batch length,
    or concatenated into one row when the base collator is padding-free (bfd packing)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base([{k: v for k, v in e.items() if k not in TEACHER_COLUMNS} for e in examples])
        length = batch["input_ids"].shape[1]
        for column in (c for c in TEACHER_COLUMNS if c in examples[0]):
            pieces = [torch.from_numpy(np.asarray(e[column], dtype=BATCH_DTYPES[column])) for e in examples]
            if getattr(self.base, "padding_free", False):
                pieces = [torch.cat(pieces)]
            batch[column] = torch.stack(
                [
                    F.pad(p, (0, 0) * (p.dim() - 1) + (0, length - len(p)), value=PADDING[column])
                    for p in pieces
                ]
            )
        return batch
