"""The scaling laws as printed (Busbridge et al. 2025, Eq. 1 and Eq. 8), in float64 on plain dicts of
coefficients: the independent reference the tests compare the code's log-space laws against."""

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
