"""The per-token metrics against direct reference formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillab.evaluate.metrics import (
    MetricTotals,
    cross_entropy_sum,
    kl_divergence_sum,
    shared_vocabulary,
    top1_agreement_count,
)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(2, 5, 7) * 3, torch.randn(2, 5, 7) * 3


def test_cross_entropy_is_the_summed_negative_log_likelihood(logits):
    student, _ = logits
    flat = student.reshape(-1, 7)
    targets = torch.tensor([0, 6, 3, 3, 1, 2, 5, 4, 0, 1])
    by_hand = -sum(math.log(torch.softmax(flat[i], -1)[t].item()) for i, t in enumerate(targets.tolist()))
    assert cross_entropy_sum(flat, targets) == pytest.approx(by_hand, rel=1e-5)
    # Divided by the token count it is torch's mean cross-entropy over the same (masked-in) tokens.
    assert cross_entropy_sum(flat, targets) / len(targets) == pytest.approx(
        F.cross_entropy(flat, targets).item()
    )


def test_kl_is_sum_of_teacher_probability_times_log_ratio(logits):
    student, teacher = (x.reshape(-1, 7) for x in logits)
    p_teacher, p_student = torch.softmax(teacher.double(), -1), torch.softmax(student.double(), -1)
    by_hand = (p_teacher * (p_teacher.log() - p_student.log())).sum().item()
    assert kl_divergence_sum(teacher, student) == pytest.approx(by_hand, rel=1e-4)


def test_kl_is_zero_for_identical_and_positive_for_different_distributions(logits):
    student, teacher = (x.reshape(-1, 7) for x in logits)
    assert kl_divergence_sum(teacher, teacher) == pytest.approx(0.0, abs=1e-5)
    assert kl_divergence_sum(teacher, student) > 0
    # Direction matters: KL(T||S) is not KL(S||T).
    assert kl_divergence_sum(teacher, student) != pytest.approx(kl_divergence_sum(student, teacher))


def test_top1_agreement_counts_matching_argmaxes():
    teacher = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    student = torch.tensor([[2.0, 1.0, 0.0], [3.0, 2.0, 1.0], [0.0, 0.1, 0.2], [0.0, 9.0, 0.0]])
    # argmax teacher: 0, 1, 2, 0; student: 0, 0, 2, 1 -> positions 0 and 2 agree.
    assert top1_agreement_count(teacher, student) == 2


def test_shared_vocabulary_drops_padding_rows():
    teacher, student = torch.zeros(3, 10), torch.zeros(3, 12)
    cut_teacher, cut_student = shared_vocabulary(teacher, student)
    assert cut_teacher.shape == cut_student.shape == (3, 10)


def test_totals_over_batches_equal_totals_over_all_tokens(logits):
    student, teacher = (x.reshape(-1, 7) for x in logits)
    targets = torch.randint(0, 7, (10,), generator=torch.Generator().manual_seed(1))
    whole, split = MetricTotals(), MetricTotals()
    whole.add(student, targets, teacher)
    split.add(student[:4], targets[:4], teacher[:4])
    split.add(student[4:], targets[4:], teacher[4:])
    assert split.tokens == whole.tokens == 10
    assert split.cross_entropy == pytest.approx(whole.cross_entropy)
    assert split.kl_per_token == pytest.approx(whole.kl_per_token)
    assert split.top1_agreement == whole.top1_agreement
    assert whole.kl_per_token == pytest.approx(kl_divergence_sum(teacher, student) / 10)


def test_totals_without_teacher_have_no_kl_or_agreement(logits):
    student, _ = logits
    totals = MetricTotals()
    totals.add(student.reshape(-1, 7), torch.zeros(10, dtype=torch.long))
    assert totals.kl_per_token is None and totals.top1_agreement is None
    assert totals.cross_entropy > 0
