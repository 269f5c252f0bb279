"""The scaling laws as printed (Busbridge et al. 2025, Eq. 1 and Eq. 8), in float64 on plain dicts of
coefficients: the independent reference the tests compare the code's log-space laws against; and a Llama's
forward FLOPs per token counted matrix by matrix, the reference for the FLOPs of run records."""

from __future__ import annotations


def supervised_loss(n, d, c: dict):
    """Eq. 1: E + (A / N^alpha + B / D^beta)^gamma."""
    return c["E"] + (c["A"] / n ** c["alpha"] + c["B"] / d ** c["beta"]) ** c["gamma"]


def distillation_loss(n, d, teacher, supervised: dict, c: dict):
    """Eq. 8: ratio L_T / (Ltilde_S d1) (a product, not a power), exponent 1/f1."""
    ratio = teacher / (supervised_loss(n, d, supervised) * c["d1"])
    gap = (1.0 + ratio ** (1.0 / c["f1"])) ** (-c["c1"] * c["f1"])
    student = (c["A"] / n ** c["alpha"] + c["B"] / d ** c["beta"]) ** c["gamma"]
    return teacher + teacher ** (-c["c0"]) * gap * student


def llama_forward_flops(shape: dict, vocab: int, n_ctx: int) -> int:
    """Forward FLOPs per token of a Llama (gated MLP) of `shape` (tests/tiny.py MODEL_SIZES names): 2 per
    multiply-accumulate of the q/k/v/o projections, the three MLP matrices, attention over a causal context
    of n_ctx tokens (on average (n_ctx + 1) / 2 keys for QK^T and as many for AV) and the lm-head."""
    hidden, layers = shape["hidden_size"], shape["num_hidden_layers"]
    heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]
    head_dim = hidden // heads
    projections = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * shape["intermediate_size"]
    attention = 2 * (n_ctx + 1) * heads * head_dim
    return 2 * layers * projections + layers * attention + 2 * hidden * vocab
