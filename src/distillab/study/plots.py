"""The study report's figures (matplotlib, Agg): loss vs tokens with the fitted laws, held-out predictions,
student loss vs teacher loss, iso-FLOP. Each function writes one PNG and returns its path, or the reason it
drew nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from distillab.scaling import supervised_loss
from distillab.study.grid import same_budget

if TYPE_CHECKING:
    from distillab.study.analysis import IsoFlop, MethodFit

METHOD_COLORS = {"supervised": "#2ca02c", "hard": "#1f77b4", "soft": "#ff7f0e", "soft_data": "#d62728"}
CURVE_POINTS = 64


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _size_colors(fits: dict[str, MethodFit]) -> dict[float, tuple]:
    sizes = sorted({r.student_params for fit in fits.values() for r in fit.runs})
    return {n: plt.cm.viridis(i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}


def _token_grid(runs) -> np.ndarray:
    tokens = [r.student_tokens for r in runs]
    return np.geomspace(min(tokens) / 1.5, max(tokens) * 1.5, CURVE_POINTS)


def loss_vs_tokens(fits: dict[str, MethodFit], path: Path) -> Path:
    """One panel per fitted method: measured loss against D, coloured by N (x: held out), the fitted law per N
    (distillation: at the teacher with the most runs; other teachers' runs hollow)."""
    colors = _size_colors(fits)
    fig, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 4.4), squeeze=False)
    for ax, (method, fit) in zip(axes[0], fits.items(), strict=True):
        teacher, teacher_loss, _ = fit.main_setting() if method != "supervised" else ("", None, None)
        shown = [r for r in fit.runs if r.teacher == teacher]
        grid = _token_grid(fit.runs)
        for n in sorted({r.student_params for r in shown}):
            ax.plot(grid, fit.loss_at(n, grid, teacher_loss), color=colors[n], lw=1.2, label=f"N = {n:.3g}")
        held = {id(r) for r in fit.held_out}
        for r in fit.runs:
            color = colors[r.student_params]
            if id(r) in held:
                ax.scatter(r.student_tokens, r.loss, marker="x", s=36, color=color)
            else:
                face = color if r.teacher == teacher else "none"
                ax.scatter(r.student_tokens, r.loss, marker="o", s=36, facecolors=face, edgecolors=color)
        title = (
            method if method == "supervised" else f"{method} (teacher {teacher}, L_T = {teacher_loss:.3f})"
        )
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log")
        ax.set_xlabel("D (supervised tokens)")
        ax.set_ylabel("held-out CE (nats/token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="x: held out", title_fontsize=8)
    return _save(fig, path)


def predicted_vs_measured(fits: dict[str, MethodFit], path: Path) -> Path | str:
    """Each held-out run's predicted loss against its measured loss, with its relative error."""
    fits = {m: fit for m, fit in fits.items() if fit.held_out}
    if not fits:
        return "no run was held out"
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    values = []
    for method, fit in fits.items():
        measured = [r.loss for r in fit.held_out]
        label = f"{method} (median error {fit.median_error:.2%})"
        ax.scatter(measured, fit.predicted, s=50, color=METHOD_COLORS[method], label=label, zorder=3)
        for x, y, error in zip(measured, fit.predicted, fit.errors, strict=True):
            ax.annotate(f"{error:.1%}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        values += [*measured, *fit.predicted]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) + 0.02
    ax.plot(
        [low - pad, high + pad],
        [low - pad, high + pad],
        color="#888888",
        ls=":",
        lw=1,
        label="predicted = measured",
    )
    ax.set_xlabel("measured held-out CE (nats/token)")
    ax.set_ylabel("predicted by the fitted law")
    ax.set_title("Held-out runs (largest N·D): predicted vs measured", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


SAME_BUDGET = (
    0.1  # runs of one N whose D differ by less than this fraction share a budget (teachers' sequences
)
# end at different lengths, so one nominal budget gives a slightly different D per teacher)


def _teacher_groups(fit: MethodFit) -> dict[tuple[float, float], list]:
    """Runs by (N, D) where at least two teacher losses were tried; one nominal budget is one D (the key holds
    the group's median D)."""
    groups: list[list] = []
    for r in sorted(fit.runs, key=lambda r: (r.student_params, r.student_tokens)):
        last = groups[-1][0] if groups else None
        if (
            last
            and last.student_params == r.student_params
            and same_budget(last.student_tokens, r.student_tokens)
        ):
            groups[-1].append(r)
        else:
            groups.append([r])
    return {
        (runs[0].student_params, float(np.median([r.student_tokens for r in runs]))): runs
        for runs in groups
        if len({r.teacher_loss for r in runs}) >= 2
    }


def student_vs_teacher(fits: dict[str, MethodFit], path: Path) -> Path | str:
    """L_S against L_T per (N, D) with at least two teachers: runs, the fitted law, Ltilde_S, L_S = L_T."""
    panels = {m: _teacher_groups(fit) for m, fit in fits.items() if m != "supervised"}
    panels = {m: groups for m, groups in panels.items() if groups}
    if not panels:
        return "no (N, D) of the grid was distilled from two or more teachers"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (method, groups) in zip(axes[0], panels.items(), strict=True):
        fit = fits[method]
        teacher_losses = [r.teacher_loss for runs in groups.values() for r in runs]
        grid = np.linspace(min(teacher_losses) * 0.9, max(teacher_losses) * 1.1, CURVE_POINTS)
        for index, ((n, d), runs) in enumerate(groups.items()):
            color = plt.cm.tab10(index % 10)
            ax.plot(grid, fit.loss_at(n, d, grid), color=color, lw=1.2, label=f"N = {n:.3g}, D = {d:.3g}")
            ax.axhline(
                float(supervised_loss(n, d, fit.coefficients.supervised)), color=color, ls="--", lw=0.8
            )
            ax.scatter([r.teacher_loss for r in runs], [r.loss for r in runs], color=color, s=40, zorder=3)
        ax.plot(grid, grid, color="#888888", ls=":", lw=1, label="L_S = L_T")
        ax.set_title(f"{method}: student vs teacher loss (dashed: supervised law)", fontsize=10)
        ax.set_xlabel("teacher loss L_T (nats/token)")
        ax.set_ylabel("student loss L_S (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def iso_flop(isos: list[IsoFlop], path: Path) -> Path | str:
    """Per scenario: each run's loss against its cost, each method's best-so-far frontier, the shared budget."""
    if not isos:
        return "fewer than two methods have runs of known cost"
    columns = min(len(isos), 2)
    rows = -(-len(isos) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.4 * rows), squeeze=False)
    for ax, iso in zip(axes.flat, isos, strict=False):
        for method, costs in iso.costs.items():
            known = np.isfinite(costs)
            cost, loss = costs[known], iso.losses[method][known]
            if not cost.size:
                continue
            order = np.argsort(cost)
            color = METHOD_COLORS[method]
            ax.scatter(cost, loss, s=24, color=color, alpha=0.6)
            ax.step(cost[order], np.minimum.accumulate(loss[order]), where="post", color=color, label=method)
        ax.axvline(iso.budget, color="#444444", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{iso.scenario.name}: {iso.scenario.description}", fontsize=9)
        ax.set_xlabel("FLOPs counted under the scenario")
        ax.set_ylabel("held-out CE (nats/token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(isos) :]:
        ax.set_visible(False)
    return _save(fig, path)


def write_figures(fits: dict[str, MethodFit], isos: list[IsoFlop], output_dir: Path) -> dict[str, Path | str]:
    """{title: PNG path, or why it was not drawn}."""
    return {
        "Loss vs tokens per method, with the fitted laws": loss_vs_tokens(
            fits, output_dir / "loss_vs_tokens.png"
        ),
        "Held-out runs: predicted vs measured": predicted_vs_measured(
            fits, output_dir / "predicted_vs_measured.png"
        ),
        "Student loss vs teacher loss": student_vs_teacher(fits, output_dir / "student_vs_teacher.png"),
        "Iso-FLOP comparison": iso_flop(isos, output_dir / "iso_flop.png"),
    }
