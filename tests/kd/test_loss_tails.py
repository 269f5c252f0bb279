"""Near-zero tails (issue 11, item 1): with `tail_bucket` the KD loss is the exact divergence of the coarse-grained
distributions (the top-k ids plus ONE tail bucket) however small either tail, and continuous down to an empty
one, for every divergence and temperature, with float32 and bfloat16 student logits. Checked against a float64
textbook formula written here, gradients against its autograd; the dense path against the full formula."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from distillab.kd.losses import KDLossConfig, kd_loss, log_tail_mass, reference_kd_loss

VOCAB = 12
IDS = (3, 7, 0, 10)  # the teacher's top-4 ids; the 8 other tokens are the tail
TEACHER_TOP = (0.5, 0.25, 0.15, 0.1)  # each top-k, as a share of 1 - tail
STUDENT_TOP = (0.3, 0.4, 0.2, 0.1)
TEACHER_OUTSIDE = (
    0.3,
    0.2,
    0.1,
    0.1,
    0.1,
    0.1,
    0.05,
    0.05,
)  # each tail, as shares of the tail (dense targets)
STUDENT_OUTSIDE = (0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3)
TAILS = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 0.0)
VANISHING = 1e-30  # where a tail is empty the reference takes this one: the loss must be the limit there
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
# (dtype of the student logits, (rtol, atol) of the loss, of the gradient); the loss is computed in float32
# either way, the gradient comes back in the logits' dtype (bfloat16: 8 significant bits)
PRECISION = {torch.float32: ((1e-5, 1e-6), (1e-4, 1e-6)), torch.bfloat16: ((1e-5, 1e-6), (2**-7, 1e-5))}


def _outside() -> torch.Tensor:
    return torch.ones(VOCAB, dtype=torch.bool).index_fill(0, torch.tensor(IDS), False)


def _distribution(top: tuple[float, ...], outside: tuple[float, ...], tail: float) -> torch.Tensor:
    """[VOCAB] float64 probabilities: 1 - tail over IDS in the shares `top`, `tail` over the rest in `outside`."""
    probs = torch.zeros(VOCAB, dtype=torch.float64)
    probs[list(IDS)] = (1 - tail) * torch.tensor(top, dtype=torch.float64)
    probs[_outside()] = tail * torch.tensor(outside, dtype=torch.float64)
    return probs


def teacher_topk_logprobs(tail: float) -> torch.Tensor:
    """The stored form: the teacher's log-probs at IDS (float64, so that a tail of 1e-12 is exactly stored)."""
    return _distribution(TEACHER_TOP, TEACHER_OUTSIDE, tail)[list(IDS)].log()


def student_logits(tail: float, dtype: torch.dtype) -> torch.Tensor:
    """Logits whose softmax puts `tail` outside IDS (-inf logits there for an empty tail), in `dtype`."""
    return _distribution(STUDENT_TOP, STUDENT_OUTSIDE, tail).log().to(dtype)


def _divergence(q: torch.Tensor, p: torch.Tensor, divergence: str, beta: float = 0.5) -> torch.Tensor:
    def kl(a, b):
        return (torch.xlogy(a, a) - torch.xlogy(a, b)).sum()

    if divergence == "forward_kl":
        return kl(q, p)
    if divergence == "reverse_kl":
        return kl(p, q)
    m = beta * q + (1 - beta) * p
    return beta * kl(q, m) + (1 - beta) * kl(p, m)


def _tempered(probs: torch.Tensor, tau: float) -> torch.Tensor:
    powered = probs ** (1 / tau)
    return powered / powered.sum()


def coarse_grained_divergence(logprobs, logits, divergence: str, tau: float) -> torch.Tensor:
    """Textbook, float64: teacher (q_1..q_k, 1 - sum q) and student (p at the ids, sum of p outside them), each
    tempered as k + 1 outcomes, then D. An empty teacher tail counts as VANISHING."""
    q_top = logprobs.exp()
    q = torch.cat([q_top, (1 - q_top.sum()).clamp_min(VANISHING)[None]])
    p_all = torch.softmax(logits, dim=-1)
    p = torch.cat([p_all[list(IDS)], p_all[_outside()].sum()[None]])
    return _divergence(_tempered(q, tau), _tempered(p, tau), divergence)


def is_infinite(divergence: str, teacher_tail: float, student_tail: float) -> bool:
    """Mass where the other side has none: forward KL with an empty student tail, reverse KL with an empty
    teacher tail (jsd is bounded)."""
    if divergence == "forward_kl":
        return student_tail == 0 < teacher_tail
    return divergence == "reverse_kl" and teacher_tail == 0 < student_tail


def _sparse_loss(logits, logprobs, config):
    """kd_loss on one supervised token (label: the first id) and its gradient w.r.t. the logits."""
    logits = logits.detach().requires_grad_()
    output = kd_loss(
        logits[None, None],
        torch.tensor([[IDS[0]]]),
        teacher_topk_ids=torch.tensor([[IDS]], dtype=torch.int32),
        teacher_topk_logprobs=logprobs[None, None],
        config=config,
    )
    return output, torch.autograd.grad(output.loss, logits)[0]


def _mismatch(name, value, expected, rtol, atol) -> str | None:
    error = (value.double() - expected).abs().max().item()
    bound = atol + rtol * expected.abs().max().item()
    return None if error <= bound else f"{name}: error {error:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_tail_bucket_is_exact_for_tiny_and_empty_tails(divergence, tau, dtype):
    """Every pair of tails in TAILS, teacher and student: loss and gradient equal the textbook ones (the limit of
    a vanishing tail where one is empty); where the divergence is infinite, they are still finite."""
    config = KDLossConfig(divergence=divergence, temperature=tau, tail="tail_bucket", z_loss=0.0)
    (loss_tolerance, grad_tolerance), failures = PRECISION[dtype], []
    for teacher_tail, student_tail in itertools.product(TAILS, TAILS):
        case = f"teacher tail {teacher_tail:g}, student tail {student_tail:g}"
        logprobs = teacher_topk_logprobs(teacher_tail)
        output, grad = _sparse_loss(student_logits(student_tail, dtype), logprobs, config)
        if not (output.loss.isfinite() and grad.isfinite().all()):
            failures.append(f"{case}: loss {output.loss.item()} or its gradient is not finite")
            continue
        if is_infinite(divergence, teacher_tail, student_tail):
            continue
        logits = student_logits(student_tail or VANISHING, dtype).double().requires_grad_()
        expected = coarse_grained_divergence(logprobs, logits, divergence, tau)
        expected_grad = tau**2 * torch.autograd.grad(expected, logits)[0]
        for mismatch in (
            _mismatch("loss", output.kd, expected.detach(), *loss_tolerance),
            _mismatch("gradient", grad, expected_grad, *grad_tolerance),
        ):
            if mismatch:
                failures.append(
                    f"{case}: {mismatch} (loss {output.kd.item():.6g}, expected {expected.item():.6g})"
                )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_reference_loss_agrees_with_the_textbook_tails(divergence):
    """`reference_kd_loss`, the plain twin `kd_loss` is tested against, on the same grid (non-empty tails)."""
    config = KDLossConfig(divergence=divergence, temperature=2.0, tail="tail_bucket", z_loss=0.0)
    for teacher_tail, student_tail in itertools.product(TAILS[:-1], TAILS[:-1]):
        logprobs = teacher_topk_logprobs(teacher_tail)
        logits = student_logits(student_tail, torch.float64)
        output = reference_kd_loss(
            logits[None, None],
            torch.tensor([[IDS[0]]]),
            teacher_topk_ids=torch.tensor([[IDS]]),
            teacher_topk_logprobs=logprobs[None, None],
            config=config,
        )
        expected = coarse_grained_divergence(logprobs, logits, divergence, 2.0)
        assert output.kd.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-15), (
            teacher_tail,
            student_tail,
        )


@pytest.mark.parametrize(
    "divergence, k, teacher_tail, student_tail, before",
    [("forward_kl", 4, 1e-3, 1e-8, 9.99), ("reverse_kl", 64, 1e-6, 1e-2, 99.9)],
)
def test_the_issue_figures(divergence, k, teacher_tail, student_tail, before):
    """The issue's cases, float32 student: a tail below k * eps (float32) on one side used to count as log 0 =
    -1e4, adding about mass * 1e4 (`before`). With both top-k in the same shares the exact value has a closed
    form: a (log a - log b) over the top-k mass and the tail, a = the first distribution's (the teacher's for
    forward KL). The teacher's log-probs are given in float64, so that its stored tail is the one named."""
    vocab = 4 * k
    shares = torch.softmax(torch.linspace(2.0, -2.0, k, dtype=torch.float64), dim=0)
    logprobs = torch.log1p(torch.tensor(-teacher_tail, dtype=torch.float64)) + shares.log()
    logits = torch.full((vocab,), math.log(student_tail / (vocab - k)), dtype=torch.float64)
    logits[:k] = math.log1p(-student_tail) + shares.log()
    output = kd_loss(
        logits.float()[None, None],
        torch.tensor([[0]]),
        teacher_topk_ids=torch.arange(k, dtype=torch.int32)[None, None],
        teacher_topk_logprobs=logprobs[None, None],
        config=KDLossConfig(divergence=divergence, tail="tail_bucket", z_loss=0.0),
    )
    a, b = (teacher_tail, student_tail) if divergence == "forward_kl" else (student_tail, teacher_tail)
    exact = (1 - a) * math.log((1 - a) / (1 - b)) + a * math.log(a / b)
    print(f"{divergence} k={k}: {output.kd.item():.6g} (exact {exact:.6g}; before the fix about {before})")
    assert output.kd.item() == pytest.approx(exact, rel=1e-4)


def test_tail_mass_is_exact_for_stored_values():
    """log(1 - sum exp(l)) of float32 log-probs, to float64 precision: a tail of 1e-9 is below float32's eps,
    but exact for the stored numbers (summed here with math.fsum)."""
    logprobs = torch.log(
        torch.tensor([[0.25, 0.25, 0.5 - 1e-9], [0.5, 0.25, 0.125]], dtype=torch.float64)
    ).float()
    expected = [math.log(1 - math.fsum(math.exp(v) for v in row)) for row in logprobs.double().tolist()]
    assert log_tail_mass(logprobs).tolist() == pytest.approx(expected, rel=1e-6)
    assert log_tail_mass(logprobs).dtype == torch.float64
    assert 1e-10 < math.exp(expected[0]) < torch.finfo(torch.float32).eps  # below eps once rounded to float32
    too_much = torch.log(torch.tensor([[0.5, 0.5, 1e-6]]))  # sums to more than 1: no tail
    assert log_tail_mass(too_much).exp().item() == 0


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_dense_targets_with_tiny_and_empty_masses(divergence, tau):
    """The dense path (online KD) with the same teachers and students over the full vocabulary: the full
    divergence, however small the masses outside IDS (float32)."""
    config = KDLossConfig(divergence=divergence, temperature=tau, z_loss=0.0)
    failures = []
    for teacher_tail, student_tail in itertools.product(TAILS, TAILS):
        logits = student_logits(student_tail, torch.float32).requires_grad_()
        teacher_logits = _distribution(TEACHER_TOP, TEACHER_OUTSIDE, teacher_tail).log().float()
        output = kd_loss(
            logits[None, None],
            torch.tensor([[IDS[0]]]),
            teacher_logits=teacher_logits[None, None],
            config=config,
        )
        grad = torch.autograd.grad(output.loss, logits)[0]
        assert output.loss.isfinite() and grad.isfinite().all(), (teacher_tail, student_tail)
        if is_infinite(divergence, teacher_tail, student_tail):
            continue
        reference_logits = student_logits(student_tail or VANISHING, torch.float32).double().requires_grad_()
        teacher_logits = _distribution(TEACHER_TOP, TEACHER_OUTSIDE, teacher_tail or VANISHING).log().float()
        expected = _divergence(
            torch.softmax(teacher_logits.double() / tau, dim=-1),
            torch.softmax(reference_logits / tau, dim=-1),
            divergence,
        )
        expected_grad = tau**2 * torch.autograd.grad(expected, reference_logits)[0]
        for mismatch in (
            _mismatch("loss", output.kd, expected.detach(), 1e-5, 1e-6),
            _mismatch("gradient", grad, expected_grad, 1e-4, 1e-6),
        ):
            if mismatch:
                failures.append(f"teacher tail {teacher_tail:g}, student tail {student_tail:g}: {mismatch}")
    assert not failures, "\n".join(failures)
