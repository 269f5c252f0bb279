"""KD losses pinned to textbook formulas written out here in probability space, in float64 on a tiny vocab."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from distillab.data.softlabels import PAD_ID
from distillab.kd.losses import IGNORE_INDEX, KDLossConfig, kd_loss, log_tail_mass, shift_labels

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


def _textbook_divergence(
    q: torch.Tensor, p: torch.Tensor, divergence: str, beta: float = 0.5
) -> torch.Tensor:
    """D(q, p) from probabilities over the last dim, with 0 log 0 = 0."""
    if divergence == "forward_kl":
        return (torch.xlogy(q, q) - torch.xlogy(q, p)).sum(-1)
    if divergence == "reverse_kl":
        return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)
    m = beta * q + (1 - beta) * p
    return beta * _textbook_divergence(q, m, "forward_kl") + (1 - beta) * _textbook_divergence(
        p, m, "forward_kl"
    )


def _textbook_loss(student, labels, kd_per_token, config: KDLossConfig):
    """(loss, kd, ntp, z) means over supervised tokens, Eq. 6-7 with the z-loss."""
    mask = labels != IGNORE_INDEX
    probs = torch.softmax(student, dim=-1)
    ntp = -torch.log(probs.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1))
    z = torch.log(torch.exp(student).sum(-1)) ** 2
    per_token = (1 - config.lam) * ntp + config.lam * config.temperature**2 * kd_per_token + config.z_loss * z
    return tuple(term[mask].mean() for term in (per_token, kd_per_token, ntp, z))


def _tempered(probs: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(log(probs) / tau) written as probs^(1/tau), renormalised."""
    powered = probs ** (1 / tau)
    return powered / powered.sum(-1, keepdim=True)


def _textbook_dense_kd(student, teacher, config: KDLossConfig):
    tau = config.temperature
    q, p = torch.softmax(teacher / tau, dim=-1), torch.softmax(student / tau, dim=-1)
    return _textbook_divergence(q, p, config.divergence, config.jsd_beta)


def _textbook_sparse_kd(student, ids, logprobs, config: KDLossConfig):
    tau, ids = config.temperature, ids.long()
    if config.tail == "renormalize":  # full-vocab divergence against the renormalised, tempered top-k teacher
        q = torch.zeros_like(student).scatter(-1, ids, torch.softmax(logprobs / tau, dim=-1))
        return _textbook_divergence(
            q, torch.softmax(student / tau, dim=-1), config.divergence, config.jsd_beta
        )
    teacher_top = logprobs.exp()  # tail_bucket: k ids + one bucket, coarse-grained at tau = 1, then tempered
    student_top = torch.softmax(student, dim=-1).gather(-1, ids)
    q = torch.cat([teacher_top, 1 - teacher_top.sum(-1, keepdim=True)], dim=-1)
    p = torch.cat([student_top, 1 - student_top.sum(-1, keepdim=True)], dim=-1)
    return _textbook_divergence(_tempered(q, tau), _tempered(p, tau), config.divergence, config.jsd_beta)


def _grad(loss: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, student)[0]


def _assert_matches(output, expected, student):
    for name, value, reference in zip(
        ("loss", "kd", "ntp", "z"), (output.loss, output.kd, output.ntp, output.z), expected, strict=True
    ):
        torch.testing.assert_close(value, reference, msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(_grad(output.loss, student), _grad(expected[0], student))


MIXES = [(1.0, 0.0), (0.6, 0.1)]  # (lam, z_loss)


@pytest.mark.parametrize("lam, z_loss", MIXES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_dense_matches_textbook(divergence, tau, lam, z_loss):
    student, teacher, labels = _batch()
    config = KDLossConfig(divergence=divergence, temperature=tau, lam=lam, z_loss=z_loss, chunk_size=3)
    output = kd_loss(student, labels, teacher_logits=teacher, config=config)
    expected = _textbook_loss(student, labels, _textbook_dense_kd(student, teacher, config), config)
    _assert_matches(output, expected, student)


@pytest.mark.parametrize("lam, z_loss", MIXES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("tail, divergence", SPARSE_CASES)
def test_sparse_matches_textbook(tail, divergence, tau, lam, z_loss):
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher)
    config = KDLossConfig(
        divergence=divergence, temperature=tau, lam=lam, z_loss=z_loss, tail=tail, chunk_size=3
    )
    output = kd_loss(student, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, config=config)
    expected = _textbook_loss(student, labels, _textbook_sparse_kd(student, ids, logprobs, config), config)
    _assert_matches(output, expected, student)


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("tail, divergence", SPARSE_CASES)
def test_sparse_with_full_vocabulary_equals_dense(tail, divergence, tau):
    student, teacher, labels = _batch()
    ids, logprobs = _top_k(teacher, k=VOCAB)
    config = KDLossConfig(divergence=divergence, temperature=tau, lam=0.6, z_loss=0.1, tail=tail)
    sparse = kd_loss(student, labels, teacher_topk_ids=ids, teacher_topk_logprobs=logprobs, config=config)
    dense = kd_loss(student, labels, teacher_logits=teacher, config=config)
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(_grad(sparse.loss, student), _grad(dense.loss, student))


def test_tail_mass_is_textbook_and_empty_with_full_vocabulary():
    _, teacher, _ = _batch()
    full = torch.log_softmax(teacher, dim=-1)
    assert torch.equal(log_tail_mass(full).exp(), torch.zeros(full.shape[:-1], dtype=full.dtype))
    _, logprobs = _top_k(teacher)
    torch.testing.assert_close(log_tail_mass(logprobs), torch.log(1 - logprobs.exp().sum(-1)))
    tiny = torch.log(torch.tensor([[0.25, 0.25, 0.5 - 1e-9]], dtype=torch.float64))  # real tail of 1e-9
    torch.testing.assert_close(log_tail_mass(tiny), torch.log(torch.tensor([1e-9], dtype=torch.float64)))


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
    kl = _textbook_divergence(q, p, "forward_kl")[mask].mean()
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


def test_shift_labels_aligns_next_tokens_with_logits():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7]])
    assert shift_labels(labels).tolist() == [[IGNORE_INDEX, 5, 6, 7, IGNORE_INDEX]]
