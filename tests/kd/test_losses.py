"""The KD loss: the plain reference (`reference_kd_loss`) pinned to hand-worked values, the chunked closed-form
`kd_loss` to the reference, in float64 on a tiny vocab; plus the properties of the fast path alone."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from distillab.data.chat import IGNORE_INDEX
from distillab.data.softlabels import PAD_ID
from distillab.kd.losses import (
    KDLossConfig,
    kd_loss,
    reference_divergence,
    reference_kd_loss,
)

VOCAB = 11
TOP_K = 4
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
SPARSE_CASES = [  # reverse KL against a renormalised top-k teacher is infinite, hence rejected
    (tail, divergence)
    for tail in ("renormalize", "tail_bucket")
    for divergence in DIVERGENCES
    if (tail, divergence) != ("renormalize", "reverse_kl")
]


def _batch(seed: int = 0, batch: int = 2, length: int = 7, vocab: int = VOCAB):
    """Student (requires grad), teacher logits and labels; 11 of the 14 positions supervised."""
    generator = torch.Generator().manual_seed(seed)
    student = (
        2 * torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64)
    ).requires_grad_()
    teacher = 2 * torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[0, :2] = IGNORE_INDEX
    labels[-1, -1] = IGNORE_INDEX
    return student, teacher, labels


def _top_k(teacher: torch.Tensor, k: int = TOP_K):
    """The stored soft-label form: int32 ids and raw log-probs at temperature 1."""
    logprobs, ids = torch.log_softmax(teacher, dim=-1).topk(k, dim=-1)
    return ids.int(), logprobs


def _grad(loss: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, student)[0]


# The reference against values worked out by hand: teacher q = (1/2, 1/4, 1/4), student p = (1/4, 1/2, 1/4).
Q, P = (0.5, 0.25, 0.25), (0.25, 0.5, 0.25)
ROOT_HALF, ROOT_3 = math.sqrt(0.5), math.sqrt(3)
HAND_WORKED = [  # (teacher targets, KDLossConfig arguments, D(q^tau, p^tau))
    ("dense", {}, 0.5 * math.log(2) + 0.25 * math.log(0.5)),
    ("dense", {"divergence": "reverse_kl"}, 0.25 * math.log(0.5) + 0.5 * math.log(2)),
    # m = (3/8, 3/8, 1/4): JSD = 1/2 KL(q || m) + 1/2 KL(p || m), and the two KLs are equal
    ("dense", {"divergence": "jsd"}, 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3)),
    # beta = 1/4: m = 1/4 q + 3/4 p = (5/16, 7/16, 1/4)
    (
        "dense",
        {"divergence": "jsd", "jsd_beta": 0.25},
        0.25 * (0.5 * math.log(1.6) + 0.25 * math.log(4 / 7))
        + 0.75 * (0.25 * math.log(0.8) + 0.5 * math.log(8 / 7)),
    ),
    # tau = 2: q^tau = (r, 1/2, 1/2) / S and p^tau = (1/2, r, 1/2) / S with r = sqrt(1/2), S = 1 + r
    ("dense", {"temperature": 2.0}, (ROOT_HALF - 0.5) * math.log(2 * ROOT_HALF) / (1 + ROOT_HALF)),
    # top-2 renormalised: q = (2/3, 1/3, 0)
    ("top-2", {}, 2 / 3 * math.log(8 / 3) + 1 / 3 * math.log(2 / 3)),
    # m = (11/24, 10/24, 3/24)
    (
        "top-2",
        {"divergence": "jsd"},
        0.5 * (2 / 3 * math.log(16 / 11) + 1 / 3 * math.log(4 / 5))
        + 0.5 * (0.25 * math.log(6 / 11) + 0.5 * math.log(6 / 5) + 0.25 * math.log(2)),
    ),
    # top-1 (+ a padding slot) with a tail bucket: q = (1/2, 1/2), p = (1/4, 3/4)
    ("top-1", {"tail": "tail_bucket"}, 0.5 * math.log(2) + 0.5 * math.log(2 / 3)),
    (
        "top-1",
        {"tail": "tail_bucket", "divergence": "reverse_kl"},
        0.25 * math.log(0.5) + 0.75 * math.log(1.5),
    ),
    # tau = 2 tempers the bucketed pairs: q = (1/2, 1/2), p = (1, sqrt(3)) / (1 + sqrt(3))
    ("top-1", {"tail": "tail_bucket", "temperature": 2.0}, math.log((1 + ROOT_3) / 2) - 0.25 * math.log(3)),
]


def _hand_worked_inputs(targets: str):
    """Position 1 holds p and is supervised (label 1); position 0 holds other logits and is masked."""
    student = torch.log(torch.tensor([[(0.6, 0.3, 0.1), P]], dtype=torch.float64)).requires_grad_()
    labels = torch.tensor([[IGNORE_INDEX, 1]])
    if targets == "dense":
        return student, labels, {"teacher_logits": torch.log(torch.tensor([[Q, Q]], dtype=torch.float64))}
    ids, logprobs = (
        ([[0, 1]] * 2, [[0.5, 0.25]] * 2) if targets == "top-2" else ([[0, PAD_ID]] * 2, [[0.5, 1.0]] * 2)
    )
    return (
        student,
        labels,
        {
            "teacher_topk_ids": torch.tensor([ids], dtype=torch.int32),
            "teacher_topk_logprobs": torch.log(torch.tensor([logprobs], dtype=torch.float64)),
        },
    )


@pytest.mark.parametrize("targets, kwargs, expected", HAND_WORKED)
def test_reference_divergence_matches_hand_worked_values(targets, kwargs, expected):
    student, labels, teacher = _hand_worked_inputs(targets)
    output = reference_kd_loss(student, labels, **teacher, config=KDLossConfig(z_loss=0.0, **kwargs))
    assert output.kd.item() == pytest.approx(expected, rel=1e-12)
    assert output.n_tokens.item() == 1


@pytest.mark.parametrize("tau, kd", [(1.0, HAND_WORKED[0][2]), (2.0, HAND_WORKED[4][2])])
def test_reference_weighs_ntp_kd_and_z_loss(tau, kd):
    """Logits log p + 1: softmax p, logsumexp 1 (z = 1); the label's probability is 1/2 (NTP = log 2)."""
    student, labels, teacher = _hand_worked_inputs("dense")
    config = KDLossConfig(lam=0.6, z_loss=0.1, temperature=tau)
    output = reference_kd_loss(student + 1, labels, **teacher, config=config)
    assert (output.ntp.item(), output.z.item()) == (pytest.approx(math.log(2)), pytest.approx(1.0))
    assert output.loss.item() == pytest.approx(0.4 * math.log(2) + 0.6 * tau**2 * kd + 0.1)


def _assert_matches(output, expected, student):
    for name in ("loss", "kd", "ntp", "z", "n_tokens"):
        value, reference = getattr(output, name), getattr(expected, name)
        torch.testing.assert_close(value, reference, msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(_grad(output.loss, student), _grad(expected.loss, student))


MIXES = [(1.0, 0.0), (0.6, 0.1)]  # (lam, z_loss)


@pytest.mark.parametrize("lam, z_loss", MIXES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_dense_matches_reference(divergence, tau, lam, z_loss):
    student, teacher, labels = _batch()
    config = KDLossConfig(divergence=divergence, temperature=tau, lam=lam, z_loss=z_loss, chunk_size=3)
    output = kd_loss(student, labels, teacher_logits=teacher, config=config)
    _assert_matches(
        output, reference_kd_loss(student, labels, teacher_logits=teacher, config=config), student
    )


@pytest.mark.parametrize("lam, z_loss", MIXES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("tail, divergence", SPARSE_CASES)
def test_sparse_matches_reference(tail, divergence, tau, lam, z_loss):
    student, teacher, labels = _batch()
    targets = dict(zip(("teacher_topk_ids", "teacher_topk_logprobs"), _top_k(teacher), strict=True))
    config = KDLossConfig(
        divergence=divergence, temperature=tau, lam=lam, z_loss=z_loss, tail=tail, chunk_size=3
    )
    output = kd_loss(student, labels, **targets, config=config)
    _assert_matches(output, reference_kd_loss(student, labels, **targets, config=config), student)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("tail, divergence", SPARSE_CASES)
def test_sparse_with_full_vocabulary_equals_dense(tail, divergence, tau, dtype):
    """k = V leaves no tail: whatever 1 - sum of the stored probabilities rounds to is not a bucket."""
    student, teacher, labels = _batch()
    student, teacher = student.detach().to(dtype).requires_grad_(), teacher.to(dtype)
    ids, logprobs = _top_k(teacher, k=VOCAB)
    config = KDLossConfig(divergence=divergence, temperature=tau, lam=0.6, z_loss=0.1, tail=tail)
    sparse = kd_loss(student, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, config=config)
    dense = kd_loss(student, labels, teacher_logits=teacher, config=config)
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(_grad(sparse.loss, student), _grad(dense.loss, student))


@pytest.mark.parametrize("tail, divergence", SPARSE_CASES)
def test_padding_slots_are_ignored(tail, divergence):
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher)
    padded_ids = torch.cat([ids, torch.full_like(ids[..., :2], PAD_ID)], dim=-1)
    padded_ids[..., -1] = ids[..., 0]  # a real id whose log-prob is -inf is padding too
    padded_logprobs = torch.cat(
        [logprobs, torch.zeros_like(logprobs[..., :1]), torch.full_like(logprobs[..., :1], -math.inf)], dim=-1
    )
    config = KDLossConfig(divergence=divergence, temperature=2.0, lam=0.6, tail=tail, chunk_size=3)
    padded = kd_loss(
        student, labels, teacher_topk_ids=padded_ids, teacher_topk_logprobs=padded_logprobs, config=config
    )
    plain = kd_loss(student, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, config=config)
    torch.testing.assert_close(padded.loss, plain.loss)
    torch.testing.assert_close(_grad(padded.loss, student), _grad(plain.loss, student))


TARGETS = ["dense", "sparse-renormalize", "sparse-tail_bucket"]
TARGET_CASES = [("dense", divergence) for divergence in DIVERGENCES] + [
    (f"sparse-{tail}", divergence) for tail, divergence in SPARSE_CASES
]


def _targets(kind: str, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
    if kind == "dense":
        return {"teacher_logits": teacher}
    ids, logprobs = _top_k(teacher)
    return {"teacher_topk_ids": ids, "teacher_topk_logprobs": logprobs}


def _config(kind: str, divergence: str, **kwargs) -> KDLossConfig:
    tail = kind.removeprefix("sparse-") if kind != "dense" else "renormalize"
    return KDLossConfig(divergence=divergence, tail=tail, temperature=2.0, lam=0.6, z_loss=0.1, **kwargs)


@pytest.mark.parametrize("kind, divergence", TARGET_CASES)
def test_chunked_equals_unchunked(kind, divergence):
    student, teacher, labels = _batch()  # 11 supervised tokens: chunks of 3 leave a remainder
    targets = _targets(kind, teacher)
    chunked = kd_loss(student, labels, **targets, config=_config(kind, divergence, chunk_size=3))
    whole = kd_loss(student, labels, **targets, config=_config(kind, divergence, chunk_size=labels.numel()))
    for name in ("loss", "kd", "ntp", "z"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name))
    torch.testing.assert_close(_grad(chunked.loss, student), _grad(whole.loss, student))


@pytest.mark.parametrize("kind", TARGETS)
def test_masked_positions_contribute_nothing(kind):
    student, teacher, labels = _batch()
    masked = labels == IGNORE_INDEX
    config = _config(kind, "jsd")
    reference = kd_loss(student, labels, **_targets(kind, teacher), config=config)
    changed_student = torch.where(
        masked[..., None], 100 * torch.randn_like(student), student.detach()
    ).requires_grad_()
    targets = _targets(kind, teacher)
    for name, value in targets.items():  # garbage, even NaN, where nothing is supervised
        if value.dtype.is_floating_point:
            targets[name] = value.masked_fill(masked[..., None], math.nan)
    changed = kd_loss(changed_student, labels, **targets, config=config)
    torch.testing.assert_close(changed.loss, reference.loss)
    grad, changed_grad = _grad(reference.loss, student), _grad(changed.loss, changed_student)
    torch.testing.assert_close(changed_grad, grad)
    assert torch.equal(grad[masked], torch.zeros_like(grad[masked]))


@pytest.mark.parametrize("kind, divergence", TARGET_CASES)
def test_gradcheck(kind, divergence):
    student, teacher, labels = _batch(batch=1, length=6, vocab=5)  # 3 supervised tokens
    targets = _targets(kind, teacher)
    config = _config(kind, divergence, chunk_size=2)
    assert torch.autograd.gradcheck(
        lambda logits: kd_loss(logits, labels, **targets, config=config).loss, (student,)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lam_zero_is_cross_entropy(dtype):
    student, _, labels = _batch()
    student = student.detach().to(dtype).requires_grad_()
    output = kd_loss(student, labels, config=KDLossConfig(lam=0.0, z_loss=0.0, chunk_size=3))
    expected = F.cross_entropy(student.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(_grad(output.loss, student), _grad(expected, student))
    assert output.kd == 0


def test_sum_reduction_and_token_count():
    student, teacher, labels = _batch()
    n_supervised = int((labels != IGNORE_INDEX).sum())
    mean = kd_loss(student, labels, teacher_logits=teacher)
    summed = kd_loss(student, labels, teacher_logits=teacher, reduction="sum")
    assert mean.n_tokens.item() == summed.n_tokens.item() == n_supervised
    for name in ("loss", "kd", "ntp", "z"):
        torch.testing.assert_close(getattr(summed, name), n_supervised * getattr(mean, name))
    torch.testing.assert_close(_grad(summed.loss, student), n_supervised * _grad(mean.loss, student))


def test_no_supervised_tokens_gives_zero_loss_and_gradient():
    student, teacher, labels = _batch()
    output = kd_loss(student, torch.full_like(labels, IGNORE_INDEX), teacher_logits=teacher)
    assert output.loss.item() == 0 and output.n_tokens.item() == 0
    assert torch.equal(_grad(output.loss, student), torch.zeros_like(student))


def test_backward_scales_by_the_outer_gradient_and_eval_needs_no_grad():
    student, teacher, labels = _batch()
    config = KDLossConfig(divergence="jsd", lam=0.6)
    output = kd_loss(student, labels, teacher_logits=teacher, config=config)
    tripled = 3 * kd_loss(student, labels, teacher_logits=teacher, config=config).loss
    torch.testing.assert_close(_grad(tripled, student), 3 * _grad(output.loss, student))
    with torch.no_grad():
        evaluated = kd_loss(student, labels, teacher_logits=teacher, config=config)
    assert evaluated.loss.grad_fn is None
    torch.testing.assert_close(evaluated.loss, output.loss.detach())


def test_low_precision_inputs_give_gradients_in_their_dtype():
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher)
    config = KDLossConfig(lam=0.6, z_loss=0.1, chunk_size=3)
    reference = kd_loss(student, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, config=config)
    low = student.detach().bfloat16().requires_grad_()
    output = kd_loss(low, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs.half(), config=config)
    assert output.loss.dtype == torch.float32
    grad = _grad(output.loss, low)
    assert grad.dtype == torch.bfloat16
    # the inputs are rounded to bf16 / fp16 (relative error 2**-8, 2**-11): compare at that precision
    torch.testing.assert_close(output.loss.double(), reference.loss.detach(), rtol=2**-6, atol=2**-6)
    torch.testing.assert_close(grad.double(), _grad(reference.loss, student), rtol=2**-6, atol=2**-10)


# Toward 0 the expansion needs small * max(q / p) << 1, and q / p reaches 1e5 here; toward 1, jsd_beta = 1 - small
# carries an absolute rounding error of 1e-16, which must stay far below the O(small^2) remainder.
@pytest.mark.parametrize("limit, small", [("beta->0", 1e-6), ("beta->1", 1e-5)])
def test_jsd_limits_are_scaled_kls(limit, small):
    """As b -> 0, JSD_b / b = KL(q||p) - (b / 2) chi2(q||p) + O(b^2): with m = p + b (q - p), Taylor expansion gives
    KL(q||m) = KL(q||p) - b chi2(q||p) + O(b^2) and KL(p||m) = (b^2 / 2) chi2(q||p) + O(b^3). As b -> 1 the same
    holds with q and p swapped and 1 - b for b. So shrinking b tenfold shrinks the error of the limit tenfold
    (first order) and that of the corrected limit a hundredfold (second order); checked within a factor of 2."""
    student, teacher, labels = _batch()
    mask = labels != IGNORE_INDEX
    q, p = torch.softmax(teacher, dim=-1), torch.softmax(student.detach(), dim=-1)
    if limit == "beta->1":
        q, p = p, q
    kl = reference_divergence(q, p, KDLossConfig())[mask].mean()
    chi2 = ((q - p) ** 2 / p).sum(-1)[mask].mean()
    errors = []
    for beta_distance in (small, small / 10):
        beta = beta_distance if limit == "beta->0" else 1 - beta_distance
        config = KDLossConfig(divergence="jsd", jsd_beta=beta, z_loss=0.0)
        scaled = kd_loss(student, labels, teacher_logits=teacher, config=config).kd / beta_distance
        errors.append((abs(scaled - kl).item(), abs(scaled - (kl - beta_distance / 2 * chi2)).item()))
    first_order, second_order = (errors[0][i] / errors[1][i] for i in (0, 1))
    assert 10 / 2 < first_order < 10 * 2
    assert second_order > 100 / 2


def test_symmetric_jsd_is_symmetric():
    student, teacher, labels = _batch()
    config = KDLossConfig(divergence="jsd", jsd_beta=0.5)
    forward = kd_loss(student, labels, teacher_logits=teacher, config=config).kd
    swapped = kd_loss(teacher, labels, teacher_logits=student.detach(), config=config).kd
    torch.testing.assert_close(forward, swapped)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"divergence": "kl"}, "divergence must be one of"),
        ({"tail": "drop"}, "tail must be one of"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"lam": 1.5}, "lam must be in [0, 1]"),
        ({"z_loss": -1.0}, "z_loss must be >= 0"),
        ({"jsd_beta": 0.0}, "use forward_kl or reverse_kl"),
        ({"jsd_beta": 1.0}, "jsd_beta must be in (0, 1)"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        KDLossConfig(**kwargs)


def test_default_chunk_follows_the_device_budget():
    config = KDLossConfig()
    assert config.tokens_per_chunk(2**15, torch.device("cpu")) == 2**5
    assert config.tokens_per_chunk(2**15, torch.device("cuda")) == 2**9
    assert config.tokens_per_chunk(2**30, torch.device("cpu")) == 1
    assert KDLossConfig(chunk_size=7).tokens_per_chunk(2**15, torch.device("cpu")) == 7


def test_shape_and_argument_errors_name_the_mismatch():
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher)
    cases = [
        (
            {"labels": labels[:, :-1]},
            "labels shape (2, 6) does not match student_logits [batch, tokens] (2, 7)",
        ),
        (
            {"teacher_logits": teacher[..., :-1]},
            "teacher_logits shape (2, 7, 10) does not match student_logits shape (2, 7, 11)",
        ),
        (
            {"teacher_topk_ids": ids[:, :-1], "teacher_topk_logprobs": logprobs[:, :-1]},
            "teacher_topk_ids (2, 6, 4)",
        ),
        ({"teacher_topk_ids": ids}, "must be given together"),
        ({"teacher_topk_ids": logprobs, "teacher_topk_logprobs": logprobs}, "must be an integer tensor"),
        ({"teacher_logits": teacher, "teacher_topk_ids": ids, "teacher_topk_logprobs": logprobs}, "not both"),
        ({}, "lam=1.0 needs teacher targets"),
        ({"reduction": "none"}, "reduction must be one of"),
        (
            {
                "teacher_topk_ids": ids,
                "teacher_topk_logprobs": logprobs,
                "config": KDLossConfig(divergence="reverse_kl"),
            },
            "reverse_kl with top-k targets needs tail='tail_bucket'",
        ),
    ]
    for kwargs, message in cases:
        arguments = {"labels": labels} | kwargs
        with pytest.raises(ValueError, match=re.escape(message)):
            kd_loss(student, arguments.pop("labels"), **arguments)
    with pytest.raises(
        ValueError, match=r"student_logits must be \[batch, tokens, vocab\], got shape \(14, 11\)"
    ):
        kd_loss(student.flatten(0, 1), labels, teacher_logits=teacher)


@pytest.mark.parametrize("loss", [kd_loss, reference_kd_loss])
def test_tail_bucket_uses_the_stored_tail(loss):
    """Stored top-1 mass 1/2 and tail 3/10 (quantisation left 1/5 unaccounted): the teacher bucket is their
    normalisation (5/8, 3/8); a uniform student over 3 ids has (1/3, 2/3). KL by hand, tau = 1."""
    student = torch.zeros(1, 1, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0]])
    targets = {
        "teacher_topk_ids": torch.tensor([[[0]]], dtype=torch.int32),
        "teacher_topk_logprobs": torch.tensor([[[math.log(0.5)]]], dtype=torch.float64),
        "teacher_topk_log_tail": torch.tensor([[math.log(0.3)]], dtype=torch.float64),
    }
    config = KDLossConfig(tail="tail_bucket", z_loss=0.0)
    expected = 0.625 * math.log(0.625 * 3) + 0.375 * math.log(0.375 * 3 / 2)
    assert loss(student, labels, **targets, config=config).kd.item() == pytest.approx(expected, rel=1e-12)
    derived = loss(student, labels, **{**targets, "teacher_topk_log_tail": None}, config=config)
    assert derived.kd.item() == pytest.approx(
        0.5 * math.log(0.5 * 3) + 0.5 * math.log(0.5 * 3 / 2), rel=1e-12
    )


def test_stored_tail_gradient_matches_the_reference():
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher)
    log_tail = (
        torch.log(-torch.expm1(logprobs.logsumexp(-1))) - 0.1
    )  # a stored tail, a little off the derived
    config = KDLossConfig(tail="tail_bucket", temperature=2.0, chunk_size=3)
    targets = {"teacher_topk_ids": ids, "teacher_topk_logprobs": logprobs, "teacher_topk_log_tail": log_tail}
    fast, plain = (
        kd_loss(student, labels, **targets, config=config),
        reference_kd_loss(student, labels, **targets, config=config),
    )
    assert fast.loss.item() == pytest.approx(plain.loss.item(), rel=1e-10)
    torch.testing.assert_close(_grad(fast.loss, student), _grad(plain.loss, student), rtol=1e-8, atol=1e-10)
