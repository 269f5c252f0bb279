"""The LM head at the supervised positions only (`distillab.lmhead`): the positions by hand, and the SFT and KD
trainers' losses and gradients from those logits equal to the same losses over the full logits, in float64
(textbook cross-entropy; the plain `reference_kd_loss`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from distillab.data.chat import IGNORE_INDEX
from distillab.kd.losses import KDLossConfig, reference_kd_loss
from distillab.kd.soft_labels import TOPK_IDS, TOPK_LOGPROBS
from distillab.kd.trainer import DistillabKDTrainer
from distillab.lmhead import scored_logits, shift_labels, supervised_logits, supervised_positions
from distillab.sft import DistillabSFTConfig, DistillabSFTTrainer

X = IGNORE_INDEX
PAD = 0
# Three right-padded rows (lengths 9, 7, 5): prompts, then supervised answers at different places; the second
# row's supervised tokens end before the row does, as in a packed or cut sequence.
IDS = [
    [11, 12, 13, 14, 15, 16, 17, 18, 19],
    [21, 22, 23, 24, 25, 26, 27, PAD, PAD],
    [31, 32, 33, 34, 35, PAD, PAD, PAD, PAD],
]
LABELS = [
    [X, X, X, X, X, X, 17, 18, 19],
    [X, X, X, 24, 25, X, X, X, X],
    [X, X, X, X, 35, X, X, X, X],
]
# Shifted (label t = token t + 1): supervised at positions 5, 6, 7 (row 0), 2, 3 (row 1), 3 (row 2)
KEPT = [2, 3, 5, 6, 7]


def test_shift_labels_aligns_next_tokens_with_logits():
    labels = torch.tensor([[X, X, 5, 6, 7]])
    assert shift_labels(labels).tolist() == [[X, 5, 6, 7, X]]


def test_supervised_positions_are_the_union_over_rows():
    assert supervised_positions(shift_labels(torch.tensor(LABELS))).tolist() == KEPT
    assert supervised_positions(torch.full((2, 4), X)).tolist() == []


class LogitsOf:
    """A stand-in model whose logits are `full`, with transformers' `logits_to_keep` (positions)."""

    def __init__(self, full: torch.Tensor):
        self.full = full

    def __call__(self, *, logits_to_keep, **inputs):
        return SimpleNamespace(logits=self.full[:, logits_to_keep])


def test_scored_logits_shift_and_mask():
    full = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    labels = torch.tensor([[X, X, 1, 2], [X, 0, X, 1]])
    selected, targets = scored_logits(LogitsOf(full), {}, labels)
    # Row 0: labels at t=2,3 are predicted by logits at t=1,2; row 1: t=1 and t=3 by t=0 and t=2.
    assert torch.equal(selected, torch.stack([full[0, 1], full[0, 2], full[1, 0], full[1, 2]]))
    assert targets.tolist() == [1, 2, 0, 1]


def test_a_label_at_position_zero_is_never_scored():
    selected, targets = scored_logits(LogitsOf(torch.zeros(1, 3, 5)), {}, torch.tensor([[3, X, X]]))
    assert selected.shape == (0, 5) and targets.numel() == 0


@pytest.fixture
def model(tiny_teacher):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_teacher, dtype=torch.float64).train()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor(IDS)
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": torch.tensor(LABELS)}


def test_supervised_logits_are_the_full_logits_there(model):
    inputs = batch()
    labels = inputs.pop("labels")
    full = model(**inputs).logits
    logits, kept_labels, positions = supervised_logits(model, inputs, labels)
    assert positions.tolist() == KEPT
    assert kept_labels.tolist() == [
        [X, X, 17, 18, 19],  # row 0 is unsupervised at 2, 3 (rows 1, 2 supervise them)
        [24, 25, X, X, X],
        [X, 35, X, X, X],
    ]
    torch.testing.assert_close(logits, full[:, KEPT], rtol=0, atol=1e-12)
    every, _, _ = supervised_logits(model, inputs, labels, every_position=True)
    torch.testing.assert_close(every, full, rtol=0, atol=1e-12)


def textbook_nll(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_t −log softmax(full logits_t)[token t + 1] over the supervised tokens, written out in float64."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    total = torch.zeros((), dtype=torch.float64)
    for row, labels in enumerate(LABELS):
        for position, label in enumerate(labels[1:]):
            if label != X:
                z = logits[row, position]
                total = total + torch.logsumexp(z, dim=0) - z[label]
    return total


def gradients(model, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def make_trainer(trainer_class, model, tmp_path, **kwargs):
    config = DistillabSFTConfig(
        output_dir=str(tmp_path),
        report_to="none",
        dataset_name="unused",
        model_name_or_path=model.name_or_path,
    )
    data = Dataset.from_dict({"input_ids": IDS, "labels": LABELS})
    return trainer_class(model=model, args=config, train_dataset=data, **kwargs)


@pytest.mark.parametrize("num_items_in_batch", [None, 10])
def test_sft_loss_and_gradients_equal_the_full_logits_ones(model, tmp_path, num_items_in_batch):
    trainer = make_trainer(DistillabSFTTrainer, model, tmp_path)
    loss = trainer.compute_loss(model, batch(), num_items_in_batch=num_items_in_batch)
    expected = textbook_nll(model, batch()) / (6 if num_items_in_batch is None else num_items_in_batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for ours, reference in zip(gradients(model, loss), gradients(model, expected), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)
    logged = trainer._metrics["train"]
    assert logged["mean_token_accuracy"] and logged["entropy"]  # TRL's per-step metrics are still logged


def test_kd_loss_and_gradients_equal_the_full_logits_ones(model, tmp_path):
    """Stored top-4 targets at every position (random, normalised over 4 ids plus a tail); the trainer's loss
    from the supervised logits = the plain reference KD loss over the full logits, per supervised token."""
    config = KDLossConfig(lam=0.7, z_loss=1e-3)
    trainer = make_trainer(DistillabKDTrainer, model, tmp_path, loss_config=config)
    generator = torch.Generator().manual_seed(1)
    shape = (len(IDS), len(IDS[0]), 4)
    topk_ids = torch.randint(1, model.config.vocab_size, shape, generator=generator)
    topk_logprobs = torch.log_softmax(torch.randn(shape, generator=generator, dtype=torch.float64), -1) - 0.1
    inputs = batch() | {TOPK_IDS: topk_ids, TOPK_LOGPROBS: topk_logprobs}
    loss = trainer.compute_loss(model, inputs)
    full = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    expected = reference_kd_loss(
        full,
        shift_labels(inputs["labels"]),
        teacher_topk_ids=topk_ids,
        teacher_topk_logprobs=topk_logprobs,
        config=config,
    ).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    for ours, reference in zip(gradients(model, loss), gradients(model, expected), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-8, atol=1e-12)
