"""Synthetic runs drawn from known coefficients, shared by the fitting tests."""

from __future__ import annotations

import numpy as np

from distillab.scaling.laws import BUSBRIDGE2025, CoefficientSet, distillation_loss, supervised_loss
from distillab.scaling.runs import Runs


def supervised_runs(
    n: int, seed: int, noise: float = 0.0, coefficients: CoefficientSet = BUSBRIDGE2025
) -> Runs:
    """Supervised runs over N in [3e7, 3e10], D in [1e9, 3e12]; multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    params, tokens = 10 ** rng.uniform(7.5, 10.5, n), 10 ** rng.uniform(9, 12.5, n)
    loss = supervised_loss(params, tokens, coefficients.supervised) * np.exp(noise * rng.standard_normal(n))
    return Runs.from_arrays(params, tokens, loss)


def distillation_runs(
    n: int, seed: int, noise: float = 0.0, coefficients: CoefficientSet = BUSBRIDGE2025
) -> Runs:
    """Distilled runs: students N_S in [1e8, 3e10], D_S in [1e9, 1e12]; teachers of 1e8..3e11 params trained
    on 1e10..3e12 tokens (L_T from the supervised law), so weak and strong teachers both occur."""
    rng = np.random.default_rng(seed)
    params, tokens = 10 ** rng.uniform(8, 10.5, n), 10 ** rng.uniform(9, 12, n)
    teacher = supervised_loss(
        10 ** rng.uniform(8, 11.5, n), 10 ** rng.uniform(10, 12.5, n), coefficients.supervised
    )
    loss = distillation_loss(params, tokens, teacher, coefficients) * np.exp(noise * rng.standard_normal(n))
    return Runs.from_arrays(params, tokens, loss, teacher)
