"""The LM head only where a loss or a metric reads it.

A causal LM's logits at position t score token t + 1; in a chat row only the assistant's turn is supervised
(`labels` != IGNORE_INDEX, `distillab.data.chat`), so the logits of the prompt's positions are never read. On a
short answer after a long prompt they are most of the head's work: the head is a [hidden, vocab] matmul per
position, and the loss a log-softmax over the vocabulary. `supervised_logits` asks the model for the logits of
the positions whose next token is supervised in some row of the batch (transformers' `logits_to_keep`, a 1-D
tensor of positions) and returns the labels there: a loss or metric over them equals the one over full logits.
Used by the SFT and KD trainers and by evaluate's scoring (`scored_logits`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distillab.data.chat import IGNORE_INDEX


def shift_labels(labels: Tensor) -> Tensor:
    """HF-style labels (label t = token t) -> labels aligned with the logits (label t = token t + 1)."""
    return F.pad(labels[..., 1:], (0, 1), value=IGNORE_INDEX)


def supervised_positions(shifted_labels: Tensor) -> Tensor:
    """The positions (1-D, ascending) whose label is supervised in at least one row of [batch, tokens]."""
    return (shifted_labels != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def supervised_logits(
    model, inputs: dict[str, Any], labels: Tensor, every_position: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """(logits [B, P, V], shifted labels [B, P], positions [P]) at the P positions of `supervised_positions`,
    or at every position with `every_position` (for callers that hand the logits on).

    `inputs` are the model's (input_ids, attention_mask, ...; no labels), `labels` HF-style and unshifted. A row
    is IGNORE_INDEX at the kept positions that only other rows supervise."""
    shifted = shift_labels(labels)
    if every_position:
        positions = torch.arange(shifted.shape[-1], device=shifted.device)
    else:
        positions = supervised_positions(shifted)
    logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    return logits, shifted[:, positions], positions


def scored_logits(model, inputs: dict[str, Any], labels: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [n, V], next tokens [n]) at the n supervised positions of the batch, row by row: what a metric
    over the scored tokens reads."""
    logits, shifted, _ = supervised_logits(model, inputs, labels)
    scored = shifted != IGNORE_INDEX
    return logits[scored], shifted[scored]
