"""Per-token metrics as small pure functions over logits at the scored positions ([n, vocab] each).

All sums are in nats (natural log) and in float32, whatever the model's dtype; `MetricTotals` accumulates them
over batches and divides by the number of scored tokens (token-weighted means, as a loss is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Σ_t −log p(target_t): the summed negative log-likelihood of `targets` (nats)."""
    return F.cross_entropy(logits.float(), targets, reduction="sum").item()


def kl_divergence_sum(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Σ_t KL(p_T,t ‖ p_S,t) = Σ_t Σ_v p_T (log p_T − log p_S) (nats)."""
    teacher_log_probs = F.log_softmax(teacher_logits.float(), dim=-1)
    student_log_probs = F.log_softmax(student_logits.float(), dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="sum").item()


def top1_agreement_count(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> int:
    """Positions where the student's most likely next token is the teacher's."""
    return int((teacher_logits.argmax(dim=-1) == student_logits.argmax(dim=-1)).sum())


def shared_vocabulary(teacher_logits: torch.Tensor, student_logits: torch.Tensor):
    """Both logits cut to the vocabulary they share: models with one tokenizer may pad their embedding
    matrices to different sizes; the padding rows are not tokens."""
    size = min(teacher_logits.shape[-1], student_logits.shape[-1])
    return teacher_logits[..., :size], student_logits[..., :size]


@dataclass
class MetricTotals:
    """Sums over scored tokens; the per-token means are None when nothing of that kind was accumulated."""

    tokens: int = 0
    nll: float = 0.0
    kl: float | None = None
    agreements: int | None = None

    def add(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> None:
        """Accumulate one batch of scored positions (and the teacher's logits there, for KL and agreement)."""
        self.tokens += targets.numel()
        self.nll += cross_entropy_sum(logits, targets)
        if teacher_logits is not None:
            teacher_logits, logits = shared_vocabulary(teacher_logits, logits)
            self.kl = (self.kl or 0.0) + kl_divergence_sum(teacher_logits, logits)
            self.agreements = (self.agreements or 0) + top1_agreement_count(teacher_logits, logits)

    @property
    def cross_entropy(self) -> float:
        return self.nll / self.tokens

    @property
    def kl_per_token(self) -> float | None:
        return None if self.kl is None else self.kl / self.tokens

    @property
    def top1_agreement(self) -> float | None:
        return None if self.agreements is None else self.agreements / self.tokens
