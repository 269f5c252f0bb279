"""Figures of the laws: student vs teacher loss (paper Fig. 1 kind), distill-minus-supervised over (N_S, D_S)
(Fig. 6 kind) and student IsoFLOP profiles. Each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from distillab.scaling.flops import forward_flops_per_token, get_scenario, student_tokens_for_budget
from distillab.scaling.laws import CoefficientSet, distillation_loss, supervised_loss

DEFAULT_STUDENT_SIZES = (1e8, 3e8, 1e9, 3e9, 1e10)
DEFAULT_BUDGETS = (1e19, 1e20, 1e21, 1e22, 1e23)


def _short(number: float) -> str:
    """1e9 -> '1B', 3e8 -> '300M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number / scale:.3g}{suffix}"
    return f"{number:.3g}"


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_student_vs_teacher(
    coefficients: CoefficientSet,
    path: str | Path,
    student_sizes: Sequence[float] = DEFAULT_STUDENT_SIZES,
    tokens_per_param: float = 20.0,
) -> Path:
    """L_S against L_T for several students (D_S = tokens_per_param x N_S), with each student's supervised
    loss (dashed) and its best teacher loss (dot): the capacity gap."""
    teacher_losses = np.linspace(coefficients.supervised.E * 1.02, 3.5, 600)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(student_sizes)))
    for size, color in zip(student_sizes, colors, strict=True):
        tokens = tokens_per_param * size
        student = distillation_loss(size, tokens, teacher_losses, coefficients)
        ax.plot(
            teacher_losses, student, color=color, lw=2, label=f"$N_S$={_short(size)}, $D_S$={_short(tokens)}"
        )
        ax.axhline(supervised_loss(size, tokens, coefficients.supervised), color=color, ls="--", lw=1)
        best = int(np.argmin(student))
        ax.plot(teacher_losses[best], student[best], "o", color=color, ms=6)
    ax.plot(teacher_losses, teacher_losses, color="0.6", lw=1, ls=":", label="$L_S = L_T$")
    ax.set(xlabel="teacher loss $L_T$ (nats/token)", ylabel="student loss $L_S$ (nats/token)")
    ax.set_title(
        "Distilled student vs teacher loss\n(dashed: supervised on the same tokens; dot: best teacher)"
    )
    ax.set_ylim(teacher_losses[0], 3.7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_distill_minus_supervised(
    coefficients: CoefficientSet,
    path: str | Path,
    teacher_loss: float,
    student_params: tuple[float, float] = (1e8, 3e10),
    student_tokens: tuple[float, float] = (1e9, 1e13),
) -> Path:
    """L_S - Ltilde_S over (N_S, D_S) for a fixed teacher: negative (blue) where distilling beats training on
    as many tokens of data."""
    sizes = np.geomspace(*student_params, 160)
    tokens = np.geomspace(*student_tokens, 160)
    n, d = np.meshgrid(sizes, tokens)
    delta = distillation_loss(n, d, teacher_loss, coefficients) - supervised_loss(
        n, d, coefficients.supervised
    )
    limit = max(float(np.abs(delta).max()), 1e-6)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    mesh = ax.pcolormesh(n, d, delta, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), shading="auto")
    ax.contour(n, d, delta, levels=[0.0], colors="k", linewidths=1.5)
    fig.colorbar(mesh, ax=ax, label="$L_S - \\tilde L_S$ (nats/token)")
    ax.set(xscale="log", yscale="log", xlabel="student parameters $N_S$", ylabel="student tokens $D_S$")
    ax.set_title(
        f"Distilled minus supervised student loss, teacher $L_T$={teacher_loss:.3f}\n"
        "(blue: distillation better; black: break-even)"
    )
    return _save(fig, path)


def plot_isoflops(
    coefficients: CoefficientSet,
    path: str | Path,
    teacher_params: float,
    teacher_tokens: float,
    scenario: str = "teacher-inference",
    budgets: Sequence[float] = DEFAULT_BUDGETS,
) -> Path:
    """Student loss against N_S at fixed compute, distilled from a fixed teacher (solid, `scenario` decides
    which teacher costs count) and supervised (dashed); dots mark each profile's minimum. Profiles stop
    where a student would see fewer tokens than it has parameters, far outside the laws' fitted regime."""
    scenario_ = get_scenario(scenario)
    teacher_loss = supervised_loss(teacher_params, teacher_tokens, coefficients.supervised)
    sizes = np.geomspace(1e7, 1e11, 300)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    colors = plt.cm.plasma(np.linspace(0.0, 0.85, len(budgets)))
    for budget, color in zip(budgets, colors, strict=True):
        supervised_tokens = budget / (3.0 * forward_flops_per_token(sizes))
        tokens = student_tokens_for_budget(budget, sizes, teacher_params, teacher_tokens, scenario_)
        curves = {
            "-": np.where(
                tokens >= sizes, distillation_loss(sizes, tokens, teacher_loss, coefficients), np.nan
            ),
            "--": np.where(
                supervised_tokens >= sizes,
                supervised_loss(sizes, supervised_tokens, coefficients.supervised),
                np.nan,
            ),
        }
        for style, curve in curves.items():
            label = f"C = {budget:.0e} FLOPs" if style == "-" else None
            ax.plot(sizes, curve, color=color, lw=2 if style == "-" else 1.2, ls=style, label=label)
            if np.isfinite(curve).any():
                best = int(np.nanargmin(curve))
                ax.plot(sizes[best], curve[best], "o", color=color, ms=5)
    ax.axhline(teacher_loss, color="0.5", lw=1, ls=":", label=f"teacher loss {teacher_loss:.3f}")
    ax.set(xscale="log", xlabel="student parameters $N_S$", ylabel="student loss (nats/token)")
    ax.set_ylim(teacher_loss - 0.1, 4.0)
    ax.set_title(
        f"IsoFLOP profiles, teacher {_short(teacher_params)} params / {_short(teacher_tokens)} tokens, "
        f"{scenario_.name}\n(solid: distilled; dashed: supervised; curves end where $D_S < N_S$)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
