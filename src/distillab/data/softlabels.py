"""The soft-label contract (docs/architecture.md): extra columns on the hard-label rows, same tokens.

    input_ids         list<int32>          the teacher's tokens of the full chat-formatted sequence
    completion_start  int32                index in input_ids of the first completion token
    topk_ids          list<list<int32>>    [T - completion_start, k]
    topk_logprobs     list<list<float16>>  [T - completion_start, k], raw log-probs at temperature 1

Alignment: row j of topk_* is the teacher's distribution at position t = completion_start - 1 + j, i.e. over the
token input_ids[completion_start + j] (position t holds the distribution over token t+1). Only the completion
(the teacher's assistant turn and the chat template's tokens after it) is covered: prompts are never trained on.
A slot with id PAD_ID (-1) is padding; its log-prob is ignored. The tail mass 1 - sum(exp(topk_logprobs)) is
not stored; the KD loss decides how to treat it. `validate_soft_labels` checks one row against this contract.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from distillab.errors import DataError

SOFT_COLUMNS = ("input_ids", "completion_start", "topk_ids", "topk_logprobs")
ALIGNMENT = "topk_*[j] is the teacher distribution at position completion_start-1+j, over token input_ids[completion_start+j]"
TAIL = "not stored: the missing mass 1 - sum(exp(topk_logprobs)) is left to the KD loss (renormalize | tail_bucket)"
LOGPROB_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
PAD_ID = -1
MASS_TOLERANCE = 1e-2  # stored top-k probabilities may exceed 1 by float16 rounding, not more


def soft_label_fields(logprob_dtype: str) -> list[tuple[str, pa.DataType]]:
    return [
        ("input_ids", pa.list_(pa.int32())),
        ("completion_start", pa.int32()),
        ("topk_ids", pa.list_(pa.list_(pa.int32()))),
        ("topk_logprobs", pa.list_(pa.list_(LOGPROB_DTYPES[logprob_dtype]))),
    ]


def validate_soft_labels(
    topk_ids: Any,
    topk_logprobs: Any,
    *,
    vocab_size: int,
    n_positions: int,
    soft_labels_k: int | None = None,
    row: int | str = "?",
) -> None:
    """Check one row's stored top-k against the contract; raise a one-line `DataError` naming row and field.

    `n_positions` is how many positions must be covered (the positions that predict a next token, usually
    ``len(input_ids) - 1``); `soft_labels_k` is how many slots the trainer will use (default: all stored).
    Only those positions and slots are checked. Padding slots (id PAD_ID) may hold any log-prob.
    """
    where = f"soft labels row {row}:"
    try:
        ids, logprobs = np.asarray(topk_ids), np.asarray(topk_logprobs)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where} topk_ids/topk_logprobs are not rectangular arrays ({err})") from None
    if ids.ndim != 2 or ids.shape != logprobs.shape:
        raise DataError(
            f"{where} topk_ids {ids.shape} and topk_logprobs {logprobs.shape} must both be [positions, k]"
        )
    if ids.dtype.kind not in "iu":
        raise DataError(f"{where} topk_ids must hold integer token ids, got {ids.dtype}")
    stored_positions, stored_k = ids.shape
    if soft_labels_k is not None and soft_labels_k > stored_k:
        raise DataError(
            f"{where} topk_ids stores {stored_k} slots per position, fewer than the soft_labels_k="
            f"{soft_labels_k} requested"
        )
    if stored_positions < n_positions:
        raise DataError(
            f"{where} topk_ids covers {stored_positions} positions, fewer than the {n_positions} to train on"
        )
    ids, logprobs = (
        ids[:n_positions, :soft_labels_k],
        logprobs[:n_positions, :soft_labels_k].astype(np.float64),
    )
    padding = ids == PAD_ID
    bad = ((ids < 0) & ~padding) | (ids >= vocab_size)
    if bad.any():
        position, slot = np.argwhere(bad)[0]
        raise DataError(
            f"{where} topk_ids has id {ids[position, slot]} at position {position}, slot {slot}, "
            f"outside the vocabulary [0, {vocab_size}) (padding is {PAD_ID})"
        )
    bad = ~padding & (np.isnan(logprobs) | (logprobs == math.inf))
    if bad.any():
        position, slot = np.argwhere(bad)[0]
        raise DataError(
            f"{where} topk_logprobs is {logprobs[position, slot]} at position {position}, slot {slot}; "
            "log-probs must be finite, or -inf for padding"
        )
    with np.errstate(over="ignore"):
        mass = np.exp(np.where(padding, -math.inf, logprobs)).sum(-1)
    if (mass > 1 + MASS_TOLERANCE).any():
        position = np.argmax(mass > 1 + MASS_TOLERANCE)
        raise DataError(
            f"{where} topk_logprobs at position {position} sum to probability {mass[position]:.3g} > 1; "
            "store log-probabilities at temperature 1, not logits"
        )
