"""The soft-label contract's row check: padding accepted, each violation a one-line error naming row and field."""

from __future__ import annotations

import math
import re

import pytest

from distillab.data.softlabels import PAD_ID, validate_soft_labels
from distillab.errors import DataError


def _soft_row():
    ids = [[3, 1, PAD_ID], [0, 9, 2], [4, PAD_ID, PAD_ID]]
    logprobs = [
        [math.log(0.5), math.log(0.25), -math.inf],
        [math.log(0.9), math.log(0.05), math.log(0.01)],
        [0.0, 7.0, 0.0],
    ]
    return ids, logprobs


def test_validate_soft_labels_accepts_a_valid_row_with_padding():
    ids, logprobs = _soft_row()
    validate_soft_labels(ids, logprobs, vocab_size=10, n_positions=3, soft_labels_k=3, row=0)


@pytest.mark.parametrize(
    "edit, kwargs, message",
    [
        (
            lambda ids, lps: lps[1].__setitem__(2, math.nan),
            {},
            "soft labels row 7: topk_logprobs is nan at position 1, slot 2",
        ),
        (
            lambda ids, lps: ids[1].__setitem__(1, 10),
            {},
            "soft labels row 7: topk_ids has id 10 at position 1, slot 1, outside the vocabulary [0, 10)",
        ),
        (
            lambda ids, lps: ids[0].__setitem__(0, -2),
            {},
            "soft labels row 7: topk_ids has id -2 at position 0, slot 0",
        ),
        (
            lambda ids, lps: None,
            {"n_positions": 4},
            "soft labels row 7: topk_ids covers 3 positions, fewer than the 4 to train on",
        ),
        (
            lambda ids, lps: None,
            {"soft_labels_k": 5},
            "soft labels row 7: topk_ids stores 3 slots per position, fewer than the soft_labels_k=5 requested",
        ),
        (
            lambda ids, lps: lps[2].__setitem__(0, 1.0),
            {},
            "soft labels row 7: topk_logprobs at position 2 sum to probability 2.72 > 1",
        ),
        (
            lambda ids, lps: ids.pop(),
            {},
            "soft labels row 7: topk_ids (2, 3) and topk_logprobs (3, 3) must both be [positions, k]",
        ),
    ],
)
def test_validate_soft_labels_names_row_and_field(edit, kwargs, message):
    ids, logprobs = _soft_row()
    edit(ids, logprobs)
    arguments = {"vocab_size": 10, "n_positions": 3, "row": 7} | kwargs
    with pytest.raises(DataError, match=re.escape(message)):
        validate_soft_labels(ids, logprobs, **arguments)
