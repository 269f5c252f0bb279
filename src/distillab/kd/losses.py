"""Token-level knowledge-distillation losses (Busbridge et al. 2025, "Distillation Scaling Laws", Eq. 6-7).

For every supervised token t (``labels[b, t] != -100``) with student logits x, label y and teacher q::

    loss_t = (1 - lam) * L_NTP + lam * tau**2 * L_KD(tau) + z_loss * L_Z

    L_NTP    = -log softmax(x)[y]                           next-token cross-entropy on the labels
    L_KD     = D(q^tau, p^tau)   p^tau = softmax(x / tau),  q^tau = softmax(teacher_logits / tau)
    L_Z      = logsumexp(x)**2                              z-loss, on the untempered student logits

Each term is reduced as a mean over supervised tokens, or as a sum plus the token count so that a distributed
trainer can all-reduce both and divide once. tau**2 keeps the KD gradient scale independent of tau (Hinton
et al. 2015).

Divergences D(q, p), teacher q, student p:

    forward_kl  KL(q || p) = sum q log(q / p)                            mode-covering, the default (App. G)
    reverse_kl  KL(p || q) = sum p log(p / q)                            mode-seeking
    jsd         JSD_beta = beta KL(q || m) + (1 - beta) KL(p || m),      m = beta q + (1 - beta) p

``jsd`` uses TRL's GKD convention (Agarwal et al. 2024, Eq. 1) and needs 0 < beta < 1: JSD_beta vanishes at
both end points, and its limits are scaled KLs, JSD_beta / beta -> KL(q || p) as beta -> 0 and
JSD_beta / (1 - beta) -> KL(p || q) as beta -> 1 (TRL substitutes those KLs at exactly 0 and 1; choose
forward_kl or reverse_kl instead). beta = 0.5 is the symmetric Jensen-Shannon divergence.

Alignment: every per-token input is aligned with the student's logits at position t. ``labels[b, t]`` is the
token at t + 1 (see `distillab.lmhead.shift_labels`), and the teacher's distribution at t is over the token at t + 1
(docs/architecture.md): the usual causal-LM shift, applied once by the data pipeline.

Sparse targets are the stored teacher top-k: ``topk_ids`` and raw ``topk_logprobs`` at temperature 1. A slot
with id -1 or log-prob -inf is padding and is ignored. The tail mass R = 1 - sum_k q_i (or the dataset's stored
tail, ``teacher_topk_log_tail``, when given) is treated as:

    renormalize  the teacher is its top-k renormalised, q_i^tau proportional to q_i^(1/tau) on the k ids and
                 zero elsewhere (truncating and tempering commute). D is the exact full-vocabulary divergence
                 between that teacher and the full student p^tau: the student enters through its log-probs at
                 the k ids, x_i / tau - logsumexp(x / tau), and its mass outside them, one extra outcome where
                 the teacher is zero. The student is thus penalised for mass outside the top-k through the
                 normaliser. reverse_kl is infinite here (p > 0 where q = 0) and is rejected.
    tail_bucket  both distributions are coarse-grained at temperature 1 to k + 1 outcomes, the k ids plus
                 one bucket holding R (teacher) and r = 1 - sum_k p_i (student), then tempered alike,
                 softmax(log(.) / tau): the tail is tempered as if it were one token. At tau = 1 this is the
                 exact divergence of the coarse-grained distributions (a lower bound of the full one); with
                 k = V the bucket is empty and the loss equals the dense one for every tau.

Tails are exact however small, so the loss is continuous in both. The teacher's R is 1 - sum_k q_i from the
stored log-probs, computed in float64 (exact for float16/float32 values; a sum >= 1 leaves no tail). The
student's r is its mass outside the k ids, a log-sum-exp of its log-probs there (never 1 minus a sum that
rounds to 1), and its gradient reaches those tokens directly. Where the ids cover the whole vocabulary there is
no tail. An empty outcome (a padding slot, an empty tail) carries the finite log-probability LOG_ZERO, so no
infinity reaches the arithmetic or the gradients: an infinite divergence (reverse KL against an empty teacher
tail, forward KL against an empty student tail) is capped at about mass * |LOG_ZERO| / tau.

Two implementations (as torchtune pairs `ForwardKLLoss` with its chunked variant): `kd_loss`, the fast one,
and `reference_kd_loss`, the same loss written out plainly in probability space, the one `kd_loss` is tested
against. `kd_loss` saves memory: one autograd.Function walks the supervised tokens in chunks and computes the
gradient with respect to the student logits in closed form, chunk by chunk, during the forward pass (as
Liger-Kernel does); backward only scales it. Apart from that gradient nothing of size [tokens, vocab] is
allocated. The sparse path touches the vocabulary through one log-softmax per chunk (two when tau != 1 with
``renormalize``), plus one log-sum-exp over the tokens outside the ids where the student's tail counts
(tail_bucket, or jsd); everything else is [tokens, k].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from distillab.data.chat import IGNORE_INDEX

LOG_ZERO = -1e4  # log-probability of an impossible outcome: exp() is exactly 0 and differences stay finite
# Default chunk, in elements of a float32 [tokens, vocab] temporary: 4 MiB on CPU, where memory is tight and
# per-chunk overhead is small; 64 MiB on GPUs, where small chunks would be bound by kernel launches.
CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**24}
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
TAIL_MODES = ("renormalize", "tail_bucket")
REDUCTIONS = ("mean", "sum")


@dataclass
class KDLossConfig:
    """Weights and options of the KD loss; defaults follow the paper's practice findings (App. G)."""

    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": f"One of {DIVERGENCES}. Forward KL beat reverse KL by about 0.28 nats in the paper."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "tau: both distributions are softened by it; tau > 3 or < 1 hurt."}
    )
    lam: float = field(
        default=1.0,
        metadata={
            "help": "lambda: weight of KD, 1 - lambda of next-token loss. 1 (pure KD) is robust; with a "
            "top-k teacher, 0.7 recovers most of the truncation loss."
        },
    )
    z_loss: float = field(
        default=1e-4, metadata={"help": "Weight of the z-loss logsumexp(x)^2 (paper: 1e-4)."}
    )
    tail: str = field(
        default="renormalize", metadata={"help": f"Sparse targets: tail treatment, one of {TAIL_MODES}."}
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "beta of jsd, in (0, 1); 0.5 is symmetric."})
    chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per chunk; None: 2**20 // vocab on CPU, 2**24 // vocab on GPUs (see CHUNK_ELEMENTS)."
        },
    )

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if self.tail not in TAIL_MODES:
            raise ValueError(f"tail must be one of {TAIL_MODES}, got {self.tail!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")
        if not self.z_loss >= 0:
            raise ValueError(f"z_loss must be >= 0, got {self.z_loss}")
        if not 0 < self.jsd_beta < 1:
            raise ValueError(
                f"jsd_beta must be in (0, 1), got {self.jsd_beta}; for the end points use forward_kl or reverse_kl"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}")

    def tokens_per_chunk(self, vocab_size: int, device: torch.device) -> int:
        budget = CHUNK_ELEMENTS["cuda"] if device.type == "cuda" else CHUNK_ELEMENTS["cpu"]
        return self.chunk_size or max(1, budget // vocab_size)


@dataclass(frozen=True)
class KDLossOutput:
    """`loss` is differentiable; `kd` (before lam * tau**2), `ntp`, `z` are its terms, detached, reduced alike."""

    loss: Tensor
    kd: Tensor
    ntp: Tensor
    z: Tensor
    n_tokens: Tensor


def kd_loss(
    student_logits: Tensor,
    labels: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_topk_ids: Tensor | None = None,
    teacher_topk_logprobs: Tensor | None = None,
    teacher_topk_log_tail: Tensor | None = None,
    config: KDLossConfig | None = None,
    reduction: str = "mean",
) -> KDLossOutput:
    """The KD loss of the module docstring over the tokens with ``labels != -100``.

    Args:
        student_logits: [B, T, V], any float dtype (computed in float32 or wider, gradient in this dtype).
            Pass the model's full logits with shifted labels: a non-contiguous slice would be copied.
        labels: [B, T] next-token ids aligned with the logits (``labels[b, t]`` is token t + 1), -100 = skip.
        teacher_logits: dense targets [B, T, V], the live teacher's logits at the same positions.
        teacher_topk_ids, teacher_topk_logprobs: sparse targets [B, T, k], raw top-k log-probs at temperature 1.
        teacher_topk_log_tail: optional [B, T], the stored log of the teacher's mass outside its top-k; the
            ``tail_bucket`` teacher uses it instead of deriving it from the top-k (``renormalize`` ignores it).
        config: weights and options (default `KDLossConfig()`); a teacher is required when ``config.lam > 0``.
        reduction: "mean" over supervised tokens (0 when there are none) or "sum"; `n_tokens` is the count.
    """
    config = config or KDLossConfig()
    _check_inputs(
        student_logits, labels, teacher_logits, teacher_topk_ids, teacher_topk_logprobs, config, reduction
    )
    if teacher_topk_log_tail is not None and teacher_topk_log_tail.shape != labels.shape:
        raise ValueError(
            f"teacher_topk_log_tail {tuple(teacher_topk_log_tail.shape)} must be [batch, tokens] like the labels"
        )
    vocab_size = student_logits.shape[-1]
    flat_labels = labels.reshape(-1)
    rows = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    n_tokens = rows.numel()
    scale = 1.0 / max(n_tokens, 1) if reduction == "mean" else 1.0
    sparse = None
    if teacher_topk_ids is not None and teacher_topk_logprobs is not None:
        k = teacher_topk_ids.shape[-1]
        log_tail = None if teacher_topk_log_tail is None else teacher_topk_log_tail.reshape(-1)
        sparse = (teacher_topk_ids.reshape(-1, k), teacher_topk_logprobs.reshape(-1, k), log_tail)
    dense = None if teacher_logits is None else teacher_logits.reshape(-1, vocab_size)
    need_grad = torch.is_grad_enabled() and student_logits.requires_grad
    loss, kd, ntp, z = _ChunkedKDLoss.apply(
        student_logits.reshape(-1, vocab_size), flat_labels, rows, dense, sparse, config, scale, need_grad
    )
    count = torch.tensor(n_tokens, device=student_logits.device)
    return KDLossOutput(loss=loss, kd=kd, ntp=ntp, z=z, n_tokens=count)


def log_tail_mass(log_probs: Tensor) -> Tensor:
    """log(1 - sum(exp(log_probs))) over the last dim, computed and returned in float64 (exact for float16 and
    float32 inputs, however small the tail); LOG_ZERO where the sum is 1 or more: no tail."""
    covered = torch.logsumexp(log_probs.double(), dim=-1)
    safe = covered.clamp(max=-torch.finfo(covered.dtype).tiny)  # log(1 - exp(c)) needs c < 0
    log_tail = torch.where(safe > -math.log(2), torch.log(-torch.expm1(safe)), torch.log1p(-torch.exp(safe)))
    return torch.where(covered < 0, log_tail, LOG_ZERO)


def reference_kd_loss(
    student_logits: Tensor,
    labels: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_topk_ids: Tensor | None = None,
    teacher_topk_logprobs: Tensor | None = None,
    teacher_topk_log_tail: Tensor | None = None,
    config: KDLossConfig | None = None,
) -> KDLossOutput:
    """`kd_loss` with reduction "mean", the plain way: every distribution written out in probability space,
    gradients by autograd, [tokens, vocab] temporaries. Readable, not fast; run it in float64."""
    config = config or KDLossConfig()
    supervised = labels != IGNORE_INDEX
    x = student_logits[supervised]
    ntp = F.cross_entropy(x, labels[supervised], reduction="none")
    z = torch.logsumexp(x, dim=-1).square()
    kd = torch.zeros_like(z)
    if teacher_logits is not None:
        tau = config.temperature
        kd = reference_divergence(
            torch.softmax(teacher_logits[supervised] / tau, dim=-1), torch.softmax(x / tau, dim=-1), config
        )
    elif teacher_topk_ids is not None and teacher_topk_logprobs is not None:
        tail = None if teacher_topk_log_tail is None else teacher_topk_log_tail[supervised].exp()
        q, p = _reference_sparse(
            x, teacher_topk_ids[supervised], teacher_topk_logprobs[supervised], tail, config
        )
        kd = reference_divergence(q, p, config)
    kd, ntp, z = (term.sum() / max(len(term), 1) for term in (kd, ntp, z))
    loss = (1 - config.lam) * ntp + config.lam * config.temperature**2 * kd + config.z_loss * z
    return KDLossOutput(loss, kd.detach(), ntp.detach(), z.detach(), n_tokens=supervised.sum())


def reference_divergence(q: Tensor, p: Tensor, config: KDLossConfig) -> Tensor:
    """D(q, p) of `config.divergence` over the last dim, from probabilities, with 0 log 0 = 0."""

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return (torch.xlogy(a, a) - torch.xlogy(a, b)).sum(-1)

    if config.divergence == "forward_kl":
        return kl(q, p)
    if config.divergence == "reverse_kl":
        return kl(p, q)
    m = config.jsd_beta * q + (1 - config.jsd_beta) * p
    return config.jsd_beta * kl(q, m) + (1 - config.jsd_beta) * kl(p, m)


def _reference_sparse(
    x: Tensor, ids: Tensor, logprobs: Tensor, tail: Tensor | None, config: KDLossConfig
) -> tuple[Tensor, Tensor]:
    """Teacher and student distributions at tau for top-k targets, per tail treatment (module docstring)."""
    tau, valid = config.temperature, (ids >= 0) & (logprobs != -math.inf)
    ids = ids.clamp_min(0).long()
    if config.tail == "renormalize":  # the top-k renormalised at tau, zero elsewhere; the full student at tau
        q_topk = torch.softmax((logprobs / tau).masked_fill(~valid, -math.inf), dim=-1)
        return torch.zeros_like(x).scatter_add(-1, ids, q_topk), torch.softmax(x / tau, dim=-1)

    def bucketed(top: Tensor, tail: Tensor) -> Tensor:  # tail_bucket: the k ids + one bucket, tempered alike
        powered = torch.cat([top, tail[..., None]], dim=-1) ** (1 / tau)
        return powered / powered.sum(-1, keepdim=True)

    p, q_top = torch.softmax(x, dim=-1), logprobs.exp() * valid
    outside = torch.zeros_like(x).scatter_add(-1, ids, valid.to(x.dtype)) == 0  # the tokens outside the top-k
    rest = (1 - q_top.sum(-1)).clamp_min(0) if tail is None else tail  # the stored tail, when given
    teacher_tail = torch.where(outside.any(-1), rest, 0)
    return bucketed(q_top, teacher_tail), bucketed(p.gather(-1, ids) * valid, (p * outside).sum(-1))


def _check_inputs(
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None,
    topk_ids: Tensor | None,
    topk_logprobs: Tensor | None,
    config: KDLossConfig,
    reduction: str,
) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if student_logits.dim() != 3:
        raise ValueError(
            f"student_logits must be [batch, tokens, vocab], got shape {tuple(student_logits.shape)}"
        )
    batch_tokens = tuple(student_logits.shape[:2])
    if tuple(labels.shape) != batch_tokens:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match student_logits [batch, tokens] {batch_tokens}"
        )
    if (topk_ids is None) != (topk_logprobs is None):
        raise ValueError("teacher_topk_ids and teacher_topk_logprobs must be given together")
    sparse = topk_ids is not None and topk_logprobs is not None
    if sparse and teacher_logits is not None:
        raise ValueError(
            "give either teacher_logits (dense) or teacher_topk_ids/teacher_topk_logprobs, not both"
        )
    if config.lam > 0 and teacher_logits is None and not sparse:
        raise ValueError(
            f"lam={config.lam} needs teacher targets: teacher_logits or teacher_topk_ids/logprobs"
        )
    if teacher_logits is not None and teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits shape {tuple(teacher_logits.shape)} does not match student_logits shape "
            f"{tuple(student_logits.shape)} (slice a padded teacher vocabulary to the student's)"
        )
    if sparse:
        assert topk_ids is not None and topk_logprobs is not None
        if (
            topk_ids.shape != topk_logprobs.shape
            or tuple(topk_ids.shape[:2]) != batch_tokens
            or topk_ids.dim() != 3
        ):
            raise ValueError(
                f"teacher_topk_ids {tuple(topk_ids.shape)} and teacher_topk_logprobs {tuple(topk_logprobs.shape)} "
                f"must both be [batch, tokens, k] with [batch, tokens] = {batch_tokens} as in student_logits"
            )
        if topk_ids.dtype.is_floating_point:
            raise ValueError(f"teacher_topk_ids must be an integer tensor, got {topk_ids.dtype}")
        if config.divergence == "reverse_kl" and config.tail == "renormalize":
            raise ValueError(
                "reverse_kl with top-k targets needs tail='tail_bucket': the renormalised teacher is zero outside "
                "its top-k, so KL(student || teacher) is infinite"
            )


class _ChunkedKDLoss(torch.autograd.Function):
    """Loss sums over chunks of supervised rows; d(loss)/d(logits) is built in forward, chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        labels: Tensor,
        rows: Tensor,
        dense: Tensor | None,
        sparse: tuple[Tensor, Tensor, Tensor | None] | None,
        config: KDLossConfig,
        scale: float,
        need_grad: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        # The student's full log-softmax at tau is needed by dense targets and by renormalised top-k targets.
        needs_tempered = dense is not None or (sparse is not None and config.tail == "renormalize")
        student_tau = config.temperature if needs_tempered else 1.0
        grad = torch.zeros_like(logits) if need_grad else None
        sums = torch.zeros(3, dtype=compute_dtype, device=logits.device)  # kd, ntp, z
        step = config.tokens_per_chunk(logits.shape[-1], logits.device)
        for start in range(0, rows.numel(), step):
            chunk_rows = rows[start : start + step]
            y = labels.index_select(0, chunk_rows).long()
            teacher = _teacher_chunk(dense, sparse, chunk_rows, config.temperature, compute_dtype)
            outside_of = teacher if isinstance(teacher, _TopK) and _student_tail_counts(config) else None
            x = logits.index_select(0, chunk_rows).to(compute_dtype)
            student = _student_chunk(x, y, student_tau, outside_of)
            chunk_sums, chunk_grad = _chunk_loss(student, y, teacher, config, scale, need_grad)
            sums += chunk_sums
            if grad is not None and chunk_grad is not None:
                grad.index_copy_(0, chunk_rows, chunk_grad.to(grad.dtype))
        kd, ntp, z = (term * scale for term in sums)
        loss = (1 - config.lam) * ntp + config.lam * config.temperature**2 * kd + config.z_loss * z
        ctx.mark_non_differentiable(kd, ntp, z)
        if grad is not None:
            ctx.save_for_backward(grad)
        return loss, kd, ntp, z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        if not torch.equal(grad_loss, torch.ones_like(grad_loss)):
            grad = grad * grad_loss.to(grad.dtype)
        return grad, None, None, None, None, None, None, None


@dataclass
class _TopK:
    """Sparse targets of one chunk: ids (padding clamped to 0), which slots are valid, the stored log-probs and,
    when the dataset stores it, the log of the teacher's mass outside the ids."""

    ids: Tensor
    valid: Tensor
    logprobs: Tensor
    log_tail: Tensor | None = None


@dataclass
class _StudentChunk:
    """Student rows of one chunk: log-softmax at temperature 1 and at tau (the same tensor when tau is 1); with
    top-k targets where it counts, the log of its mass outside the ids at tau and each token's share of that
    mass (0 at the ids)."""

    log_probs: Tensor
    tempered: Tensor
    logsumexp: Tensor
    label_log_probs: Tensor
    log_tail: Tensor | None = None
    tail_share: Tensor | None = None


@dataclass
class _KDGradient:
    """d(sum of KD terms)/d(student log-probs `log_probs` at `temperature`), gathered at `ids` (None: all) and
    then, with `tail_share`, d/d(log of the student's mass outside the ids)."""

    grad: Tensor
    ids: Tensor | None
    temperature: float
    log_probs: Tensor
    tail_share: Tensor | None = None


def _student_tail_counts(config: KDLossConfig) -> bool:
    """Whether the student's mass outside the top-k enters the loss: always with tail_bucket; against a
    renormalised teacher (no tail) only through jsd's mixture, as forward KL weighs it by the teacher's 0."""
    return config.tail == "tail_bucket" or config.divergence == "jsd"


def _student_chunk(x: Tensor, y: Tensor, tau: float, outside_of: _TopK | None) -> _StudentChunk:
    """Consumes `x`, a private copy of the chunk's logits (divided by tau in place, then reused for the mass
    outside the ids of `outside_of`, when given)."""
    label_logits = x.gather(1, y[:, None]).squeeze(1)
    log_probs = torch.log_softmax(x, dim=-1)
    tempered = log_probs if tau == 1 else torch.log_softmax(x.div_(tau), dim=-1)
    label_log_probs = log_probs.gather(1, y[:, None]).squeeze(1)
    student = _StudentChunk(log_probs, tempered, label_logits - label_log_probs, label_log_probs)
    if outside_of is not None:
        student.log_tail, student.tail_share = _mass_outside(x.copy_(tempered), outside_of)
    return student


def _mass_outside(log_probs: Tensor, top_k: _TopK) -> tuple[Tensor, Tensor]:
    """The log of the mass outside the valid ids (-inf: none) and each token's share of it, in place.

    A log-sum-exp over the tokens outside, shifted by the largest of them, so that a tail of 1e-30 is as exact
    as one of 0.5."""
    excluded = torch.where(top_k.valid, -math.inf, math.inf).to(log_probs.dtype)
    outside = log_probs.scatter_reduce_(1, top_k.ids, excluded, reduce="amin")  # -inf at the valid ids
    largest = outside.amax(-1, keepdim=True).clamp_min(LOG_ZERO)
    share = outside.sub_(largest).exp_()
    total = share.sum(-1, keepdim=True)  # >= 1 (the largest counts 1) unless no token is outside
    return (largest + total.log()).squeeze(1), share.div_(total.clamp_min(1))


def _teacher_chunk(
    dense: Tensor | None,
    sparse: tuple[Tensor, Tensor, Tensor | None] | None,
    rows: Tensor,
    tau: float,
    dtype: torch.dtype,
) -> Tensor | _TopK | None:
    """Dense: the teacher's log-softmax at tau (floored at LOG_ZERO); sparse: the top-k slots as stored."""
    if dense is not None:
        logits = dense.index_select(0, rows).to(dtype)
        return torch.log_softmax(logits if tau == 1 else logits.div_(tau), dim=-1).clamp_min_(LOG_ZERO)
    if sparse is not None:
        ids, logprobs, log_tail = sparse
        ids, logprobs = ids.index_select(0, rows), logprobs.index_select(0, rows)
        valid = (ids >= 0) & (logprobs != -math.inf)  # NaN stays valid so that it shows in the loss
        tail = None if log_tail is None else log_tail.index_select(0, rows).to(dtype).clamp_min(LOG_ZERO)
        return _TopK(ids.clamp_min(0).long(), valid, logprobs, tail)
    return None


def _chunk_loss(
    student: _StudentChunk,
    y: Tensor,
    teacher: Tensor | _TopK | None,
    config: KDLossConfig,
    weight: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Sums of (kd, ntp, z) over the chunk's tokens, and d(weight * sum of losses)/dx when `need_grad`."""
    if teacher is None:
        kd, kd_gradient = torch.zeros_like(student.logsumexp), None
    elif isinstance(teacher, Tensor):
        kd, kd_gradient = _dense_kd(student.tempered, teacher, config)
    else:
        kd, kd_gradient = _sparse_kd(student, teacher, config, need_grad)
    sums = torch.stack([kd.sum(), -student.label_log_probs.sum(), student.logsumexp.square().sum()])
    if not need_grad:
        return sums, None
    return sums, _student_grad(student, y, kd_gradient, config, weight)


def _student_grad(
    student: _StudentChunk, y: Tensor, kd: _KDGradient | None, config: KDLossConfig, weight: float
) -> Tensor:
    """Chain rule through log-softmax, in place: d log p_i / dx_j = (delta_ij - p_j) / temperature, and for the
    log of the mass r outside the ids, d log r / dx_j = (share_j - p_j) / temperature."""
    lam = config.lam
    # NTP: (1 - lam) (softmax(x) - onehot(y)); z-loss: 2 z_loss logsumexp(x) softmax(x); KD: via its leaf.
    p_coef = weight * ((1 - lam) + 2 * config.z_loss * student.logsumexp)
    tempered_softmax = None
    if kd is not None:
        kd_grad = kd.grad.mul_(weight * lam * config.temperature**2 / kd.temperature)
        if kd.log_probs is student.log_probs:
            p_coef = p_coef - kd_grad.sum(-1)
        else:
            tempered_softmax = kd.log_probs.exp_().mul_(-kd_grad.sum(-1, keepdim=True))
    grad = student.log_probs.exp_().mul_(p_coef[:, None])
    if tempered_softmax is not None:
        grad.add_(tempered_softmax)
    if kd is not None:
        if kd.ids is None:
            grad.add_(kd_grad)
        else:
            grad.scatter_add_(1, kd.ids, kd_grad[:, :-1])
            if kd.tail_share is not None:
                grad.addcmul_(kd.tail_share, kd_grad[:, -1:])
    label_grad = torch.full_like(student.logsumexp, -weight * (1 - lam))
    return grad.scatter_add_(1, y[:, None], label_grad[:, None])


def _dense_kd(log_p: Tensor, log_q: Tensor, config: KDLossConfig) -> tuple[Tensor, _KDGradient]:
    """D(q, p) per token and its gradient w.r.t. log p in closed form, in place in `log_q` to save memory."""
    log_p.clamp_min_(LOG_ZERO)  # -inf logits: an empty outcome, like the teacher's
    if config.divergence == "forward_kl":  # d/d log p = -q
        q = log_q.exp()
        kd = log_q.sub_(log_p).mul_(q).sum(-1)
        grad = q.neg_()
    elif config.divergence == "reverse_kl":  # d/d log p = p (log p - log q) + p; log-softmax cancels the + p
        grad = log_q.neg_().add_(log_p).mul_(log_p.exp())
        kd = grad.sum(-1)
    else:  # jsd: d/d log p = (1 - beta) p (log p - log m)
        beta = config.jsd_beta
        log_m = torch.logaddexp(log_q + math.log(beta), log_p + math.log1p(-beta))
        teacher_term = log_q.exp().mul_(log_q.sub_(log_m)).sum(-1)
        grad = log_m.neg_().add_(log_p).mul_(log_p.exp()).mul_(1 - beta)
        kd = beta * teacher_term + grad.sum(-1)
    return kd, _KDGradient(grad, None, config.temperature, log_p)


def _sparse_kd(
    student: _StudentChunk, top_k: _TopK, config: KDLossConfig, need_grad: bool
) -> tuple[Tensor, _KDGradient | None]:
    """D on the k ids plus the rest (module docstring); the gradient by autograd w.r.t. the student's log-probs
    at the ids and the log of its tail, [tokens, k + 1] only."""
    tau, valid, logprobs = config.temperature, top_k.valid, top_k.logprobs.to(student.log_probs.dtype)
    if config.tail == "renormalize":
        temperature, log_probs = tau, student.tempered
        teacher = torch.log_softmax((logprobs / tau).masked_fill(~valid, LOG_ZERO), dim=-1)
        teacher = teacher.masked_fill(~valid, LOG_ZERO)
        teacher = _with_tail(teacher, torch.full_like(teacher[:, 0], LOG_ZERO))

        def kd_of(leaf: Tensor) -> Tensor:
            return _divergence(teacher, _student_outcomes(leaf, valid), config)

    else:
        temperature, log_probs = 1.0, student.log_probs
        # the stored tail, else the tail of the stored values (in float64); none where the ids cover the
        # vocabulary: that is rounding
        teacher_tail = top_k.log_tail
        if teacher_tail is None:
            teacher_tail = log_tail_mass(top_k.logprobs.masked_fill(~valid, -math.inf)).to(logprobs.dtype)
        teacher_tail = teacher_tail.masked_fill(valid.sum(-1) == log_probs.shape[-1], LOG_ZERO)
        teacher = _tempered(_with_tail(logprobs.masked_fill(~valid, LOG_ZERO), teacher_tail), tau)

        def kd_of(leaf: Tensor) -> Tensor:
            return _divergence(teacher, _tempered(_student_outcomes(leaf, valid), tau), config)

    log_tail = torch.full_like(log_probs[:, 0], LOG_ZERO) if student.log_tail is None else student.log_tail
    leaf = _with_tail(log_probs.gather(1, top_k.ids), log_tail)
    kd, grad = _value_and_grad(kd_of, leaf, need_grad)
    if grad is None:
        return kd, None
    return kd, _KDGradient(grad, top_k.ids, temperature, log_probs, student.tail_share)


def _with_tail(log_probs: Tensor, tail: Tensor) -> Tensor:
    """Append the log of the mass outside these outcomes as one more outcome."""
    return torch.cat([log_probs, tail[:, None]], dim=-1)


def _student_outcomes(leaf: Tensor, valid: Tensor) -> Tensor:
    """The student's log-probs at the ids then of its tail (`leaf`), with LOG_ZERO for padding and no tail."""
    return torch.cat([leaf[:, :-1].masked_fill(~valid, LOG_ZERO), leaf[:, -1:].clamp_min(LOG_ZERO)], dim=-1)


def _tempered(log_probs: Tensor, tau: float) -> Tensor:
    return torch.log_softmax(log_probs / tau, dim=-1)


def _divergence(teacher: Tensor, student: Tensor, config: KDLossConfig) -> Tensor:
    """D(q, p) over the last dim, from log-probabilities."""
    if config.divergence == "forward_kl":
        return _kl(teacher, student)
    if config.divergence == "reverse_kl":
        return _kl(student, teacher)
    beta = config.jsd_beta
    mixture = torch.logaddexp(teacher + math.log(beta), student + math.log1p(-beta))
    return beta * _kl(teacher, mixture) + (1 - beta) * _kl(student, mixture)


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _value_and_grad(
    fn: Callable[[Tensor], Tensor], leaf: Tensor, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """fn(leaf) per token and, when `need_grad`, d(sum fn)/d(leaf)."""
    if not need_grad:
        return fn(leaf), None
    with torch.enable_grad():
        leaf = leaf.detach().requires_grad_()
        value = fn(leaf)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), grad
