"""Offline KD end to end on the tiny models (issue 11, item 13): the loss the trainer logs is the formula on the
stored top-k, computed here by hand in float64; with supervised end-of-turn tokens and with packing, every
supervised token trains on the teacher's own distribution for that token (checked against the teacher's logits)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import load_hard_labels
from distillab.data.run_record import read_run_record
from distillab.data.softlabels import TAIL_COLUMN
from distillab.kd import trainer as kd_trainer
from distillab.kd.trainer import DistillabKDTrainer
from distillab.sft.data import DataOptions, build_training_data
from tests.kd.conftest import kd_argv, run_kd
from tests.kd.test_train import InitialStudent

pytestmark = pytest.mark.slow

K = 16  # stored slots per position (finished_soft_label_dir)
FLOAT16_LOGPROB = 1e-2  # the stored log-probs are float16: |log p| < 10 is kept to 5e-3


def stored_divergence(
    log_q: torch.Tensor, log_tail: float, log_p: torch.Tensor, ids: list[int], tail: str
) -> float:
    """KL(teacher || student) at one position, float64, from the stored top-k log-probs `log_q` at `ids`, the
    stored log tail mass and the student's full log-softmax `log_p`: renormalize (teacher = its top-k
    renormalised) or tail_bucket (k ids plus one bucket each: the stored tail; the student's mass outside)."""
    if tail == "renormalize":
        q = torch.softmax(log_q, dim=-1)
        return (q * (q.log() - log_p[ids])).sum().item()
    p = log_p.exp()
    outside = torch.ones_like(p, dtype=torch.bool)
    outside[ids] = False
    q = torch.cat([log_q.exp(), torch.tensor([log_tail], dtype=torch.float64).exp()])
    q = q / q.sum()  # the float16 top-k and the exact tail sum to 1 up to rounding
    p = torch.cat([p[ids], p[outside].sum(-1, keepdim=True)])
    return (q * (q.log() - p.log())).sum().item()


@pytest.mark.parametrize("tail", ["renormalize", "tail_bucket"])
def test_offline_kd_loss_is_the_formula_on_the_stored_top_k(
    finished_soft_label_dir, tiny_teacher, tmp_path, tail
):
    """lam=1, tau=1, one batch of every row: loss = mean over supervised tokens of KL(stored teacher || student)
    + 1e-4 logsumexp(student)^2. Stored row j of a dataset row is the teacher's distribution at position
    completion_start - 1 + j: the one the student's logits at that position are compared with."""
    rows = load_hard_labels(str(finished_soft_label_dir)).to_list()
    initial = InitialStudent()
    output_dir = run_kd(
        kd_argv(finished_soft_label_dir, tmp_path / "run", "--tail", tail, "--max_steps", "1",
                "--per_device_train_batch_size", str(len(rows))),  # the whole dataset in one batch
        [initial],
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    sequences = build_training_data(load_hard_labels(str(finished_soft_label_dir)), tokenizer, DataOptions())
    kl, squared_logsumexp, end_of_turn = [], [], 0
    for row, sequence in zip(rows, sequences.dataset, strict=True):
        ids, labels, start = sequence["input_ids"], sequence["labels"], row["completion_start"]
        assert ids == row["input_ids"][: len(ids)]
        with torch.no_grad():
            logits = initial.model(input_ids=torch.tensor([ids])).logits[0].double()
        log_p = torch.log_softmax(logits, dim=-1)
        for token in range(start, len(ids)):  # supervised: the completion and the end-of-turn token
            assert labels[token] == ids[token]
            position, stored = token - 1, token - start
            log_q = torch.tensor(row["topk_logprobs"][stored], dtype=torch.float64)
            log_tail = row[TAIL_COLUMN][stored]
            kl.append(stored_divergence(log_q, log_tail, log_p[position], row["topk_ids"][stored], tail))
            squared_logsumexp.append(torch.logsumexp(logits[position], dim=-1).item() ** 2)
        end_of_turn += ids[-1] == tokenizer.eos_token_id
    assert end_of_turn == len(rows) // 2  # the finished rows end with their supervised end-of-turn token

    (logged,) = read_run_record(output_dir)["loss_history"]
    kd, z = math.fsum(kl) / len(kl), math.fsum(squared_logsumexp) / len(kl)
    assert logged["kd"] == pytest.approx(kd, rel=1e-4)
    assert logged["z"] == pytest.approx(z, rel=1e-4)
    assert logged["loss"] == pytest.approx(kd + 1e-4 * z, rel=1e-4)


class LossInputsRecorder:
    """For every training step: the tokens the student saw (`input_ids`, and `position_ids` when packed), and the
    labels and top-k targets `kd_loss` was given (`labels`, `ids`, `logprobs`), put back at their places in the
    batch (the loss gets the supervised positions only, `supervised_logits`; elsewhere: -100, -1, -inf)."""

    def __init__(self, monkeypatch):
        self.steps = []
        compute_loss, loss = DistillabKDTrainer.compute_loss, kd_trainer.kd_loss
        logits_at = kd_trainer.supervised_logits

        def recording_compute_loss(trainer, model, inputs, *args, **kwargs):
            self.steps.append({k: inputs[k].clone() for k in ("input_ids", "position_ids") if k in inputs})
            return compute_loss(trainer, model, inputs, *args, **kwargs)

        def recording_logits(*args, **kwargs):
            logits, labels, positions = logits_at(*args, **kwargs)
            self.steps[-1]["positions"] = positions
            return logits, labels, positions

        def recording_loss(logits, labels, **kwargs):
            step = self.steps[-1]
            targets = {
                "labels": (labels, IGNORE_INDEX),
                "ids": (kwargs["teacher_topk_ids"], -1),
                "logprobs": (kwargs["teacher_topk_logprobs"], -math.inf),
            }
            for name, (kept, fill) in targets.items():
                step[name] = kept.new_full((len(kept), step["input_ids"].shape[1], *kept.shape[2:]), fill)
                step[name][:, step["positions"]] = kept
            return loss(logits, labels, **kwargs)

        monkeypatch.setattr(DistillabKDTrainer, "compute_loss", recording_compute_loss)
        monkeypatch.setattr(kd_trainer, "supervised_logits", recording_logits)
        monkeypatch.setattr(kd_trainer, "kd_loss", recording_loss)


def documents(step) -> list[tuple[int, int, int]]:
    """(batch row, start, end) of each sequence of a step: packed rows restart position_ids at 0."""
    spans = []
    rows, length = step["input_ids"].shape
    for row in range(rows):
        starts = (
            (step["position_ids"][row] == 0).nonzero().squeeze(1).tolist() if "position_ids" in step else [0]
        )
        spans += [(row, s, e) for s, e in zip(starts, [*starts[1:], length], strict=True)]
    return spans


@torch.no_grad()
def check_soft_labels_against_the_teacher(steps, teacher, end_of_turn_id) -> tuple[int, int, int]:
    """For every supervised position t (label: token t + 1) of every step: the top-k the loss got at t are the
    teacher's largest log-probs there, with the teacher's values, the teacher run on that sequence alone.
    Returns (supervised tokens checked, end-of-turn tokens among them, most sequences in one batch row)."""
    checked = end_of_turn = most_documents = 0
    for step in steps:
        spans = documents(step)
        most_documents = max(most_documents, *(sum(r == row for r, _, _ in spans) for row, _, _ in spans))
        for row, start, end in spans:
            tokens = step["input_ids"][row, start:end]
            log_q = torch.log_softmax(teacher(input_ids=tokens[None]).logits[0].double(), dim=-1)
            for t in range(end - start):
                label = step["labels"][row, start + t].item()
                if label == IGNORE_INDEX:
                    continue
                assert t + 1 < end - start and label == tokens[t + 1].item(), (
                    "a label that is not the next token"
                )
                ids = step["ids"][row, start + t].long()
                stored = step["logprobs"][row, start + t].double()
                assert (ids >= 0).all(), "a supervised token without stored soft labels"
                torch.testing.assert_close(stored, log_q[t][ids], rtol=0, atol=FLOAT16_LOGPROB)
                largest_left_out = log_q[t].scatter(0, ids, -math.inf).max()
                assert stored.min() >= largest_left_out - FLOAT16_LOGPROB, "not the teacher's top-k"
                checked += 1
                end_of_turn += label == end_of_turn_id
    return checked, end_of_turn, most_documents


@pytest.mark.parametrize(
    "packing", [[], ["--packing", "true", "--max_length", "128"]], ids=["padded", "packed"]
)
def test_kd_trains_each_token_on_its_own_teacher_distribution(
    finished_soft_label_dir, tiny_teacher, tmp_path, monkeypatch, packing
):
    """Half the rows end their turn (supervised end-of-turn token), half are truncated; with and without
    packing. Every supervised token of every batch, the end-of-turn tokens included, is checked."""
    recorder = LossInputsRecorder(monkeypatch)
    epochs = 2
    output_dir = run_kd(
        kd_argv(finished_soft_label_dir, tmp_path / "run", "--num_train_epochs", str(epochs), *packing)
    )

    record = read_run_record(output_dir)
    assert record["complete"] and record["method"] == "kd"
    assert len(recorder.steps) == record["training"]["global_step"] > 0
    losses = [entry["loss"] for entry in record["loss_history"]]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0], losses

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    checked, end_of_turn, most_documents = check_soft_labels_against_the_teacher(
        recorder.steps, teacher, tokenizer.eos_token_id
    )
    assert checked == record["train_tokens"]  # D: every supervised token trained on was checked
    finished = sum(row["finish_reason"] == "stop" for row in load_hard_labels(str(finished_soft_label_dir)))
    assert end_of_turn == epochs * finished == epochs * 24
    assert most_documents > 1 if packing else most_documents == 1
