"""Batched forward passes over an encoded eval set: a model alone (cross-entropy) or a student beside the
teacher on the same tokens (cross-entropy, KL(teacher‖student), top-1 agreement). The LM head runs at the
scored positions only (`distillab.lmhead`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from distillab.data.chat import IGNORE_INDEX
from distillab.evaluate.evalsets import EncodedSet
from distillab.evaluate.metrics import MetricTotals
from distillab.lmhead import scored_logits


def padded_batches(
    encoded: EncodedSet, batch_size: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, labels) batches, right-padded, longest rows first (least padding)."""
    order = sorted(range(len(encoded.input_ids)), key=lambda i: -len(encoded.input_ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded.input_ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            length = len(encoded.input_ids[index])
            input_ids[row, :length] = torch.tensor(encoded.input_ids[index])
            labels[row, :length] = torch.tensor(encoded.labels[index])
            attention_mask[row, :length] = 1
        yield input_ids, attention_mask, labels


@torch.inference_mode()
def score(
    model,
    encoded: EncodedSet,
    batch_size: int,
    pad_id: int,
    teacher=None,
    description: str = "scoring",
) -> MetricTotals:
    """Cross-entropy of `model` on the scored tokens; with `teacher`, also KL(teacher‖model) and top-1
    agreement. `teacher`: a model run on the same token ids (both must share a tokenizer), or its logits at the
    scored positions of the same batches (`teacher_logits`, computed once for several students)."""
    totals = MetricTotals()
    for index, (inputs, labels) in enumerate(_batches(model, encoded, batch_size, pad_id, description)):
        logits, targets = scored_logits(model, inputs, labels)
        if isinstance(teacher, list):
            paired = teacher[index]
        elif teacher is not None:
            paired, _ = scored_logits(teacher, inputs, labels)
        else:
            paired = None
        totals.add(logits, targets, paired)
    return totals


@torch.inference_mode()
def teacher_logits(
    model, encoded: EncodedSet, batch_size: int, pad_id: int, description: str = "teacher logits"
) -> list[torch.Tensor]:
    """`model`'s logits at the scored positions of each batch of `encoded` (for `score`'s `teacher`)."""
    return [
        scored_logits(model, inputs, labels)[0]
        for inputs, labels in _batches(model, encoded, batch_size, pad_id, description)
    ]


def _batches(model, encoded: EncodedSet, batch_size: int, pad_id: int, description: str):
    """(model inputs, labels) of each batch of `padded_batches`, on the model's device, with a progress bar."""
    device = next(model.parameters()).device
    n_batches = -(-len(encoded.input_ids) // batch_size)
    for input_ids, attention_mask, labels in tqdm(
        padded_batches(encoded, batch_size, pad_id), total=n_batches, desc=description, unit="batch"
    ):
        yield (
            {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)},
            labels.to(device),
        )
