"""Soft-label rows as tests read them: every stored format decoded to per-position lists of the stored slots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distillab.data.hardlabels import load_hard_labels, read_metadata
from distillab.data.softlabels import PAD_ID, TAIL_COLUMN, SoftLabelFormat, decode_soft_labels


def decoded_rows(folder: str | Path) -> list[dict]:
    """The dataset's rows with `topk_ids` / `topk_logprobs` as each position's stored slots (lists, padding
    dropped) and `topk_log_tail` (float32 list, None in format 1), whatever the format stores."""
    soft = read_metadata(folder)["soft_labels"]
    fmt = SoftLabelFormat.from_metadata(soft, str(folder))
    rows = []
    for row in load_hard_labels(str(folder)).to_list():
        ids, logprobs, log_tail = decode_soft_labels(row, fmt)
        kept = ids != PAD_ID
        rows.append(
            {c: v for c, v in row.items() if c not in fmt.columns or c in ("input_ids", "completion_start")}
            | {
                "topk_ids": [position[mask].tolist() for position, mask in zip(ids, kept, strict=True)],
                "topk_logprobs": [
                    position[mask].tolist() for position, mask in zip(logprobs, kept, strict=True)
                ],
                TAIL_COLUMN: None if log_tail is None else np.asarray(log_tail).tolist(),
            }
        )
    return rows
