"""Report figures: one bar chart per metric, reference CE against training FLOPs, predicted against measured
loss. Each function writes one PNG and returns its path (None when no model has the values it needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

METHOD_COLORS = {
    "teacher": "#444444",
    "sft": "#1f77b4",
    "kd": "#ff7f0e",
    "supervised": "#2ca02c",
}
METHOD_LABELS = {
    "teacher": "teacher",
    "sft": "hard labels (sft)",
    "kd": "soft labels (kd)",
    "supervised": "supervised",
}
OTHER_COLOR = "#9467bd"


def _color(method: str) -> str:
    return METHOD_COLORS.get(method, OTHER_COLOR)


def _display_name(model: dict[str, Any]) -> str:
    """`name (method)`, or just the name when it is the method."""
    return model["name"] if model["name"] == model["method"] else f"{model['name']} ({model['method']})"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _method_legend(ax, methods: list[str], extra_handles: tuple = ()) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=_color(m), label=METHOD_LABELS.get(m, m)) for m in dict.fromkeys(methods)]
    ax.legend(handles=[*handles, *extra_handles], loc="best", fontsize=9, framealpha=0.9)


def _label_points(ax, names: list[str], xs: list[float], ys: list[float]) -> None:
    """Name each point; neighbours alternate above and below so that close points stay readable."""
    for index, (name, x, y) in enumerate(zip(names, xs, ys, strict=True)):
        offset = (7, 5) if index % 2 == 0 else (7, -13)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=offset, fontsize=9)


def metric_bars(
    models: list[dict[str, Any]], values: list[float | None], label: str, path: Path, fraction: bool = False
) -> Path | None:
    """One horizontal bar per model that has a value, coloured by method, the value written at its end;
    a `fraction` (accuracy, agreement) is drawn on its full 0-1 scale."""
    shown = [(m, v) for m, v in zip(models, values, strict=True) if v is not None][::-1]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.5 * len(shown)))
    numbers = [v for _, v in shown]
    bars = ax.barh(
        [_display_name(m) for m, _ in shown],
        numbers,
        color=[_color(m["method"]) for m, _ in shown],
    )
    ax.bar_label(bars, labels=[f"{v:.4g}" for v in numbers], padding=3, fontsize=9)
    ax.set_xlim(0, 1.12 if fraction else max(max(numbers), 1e-9) * 1.18)
    ax.set_title(label, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, path)


def ce_vs_flops(models: list[dict[str, Any]], path: Path) -> Path | None:
    """Students' reference CE against their total FLOPs (training + teacher generation/scoring); the teacher's
    reference CE as a dashed line."""
    from matplotlib.lines import Line2D

    students = [m for m in models if m["method"] != "teacher" and (m.get("flops") or {}).get("total")]
    if not students:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs, ys = [m["flops"]["total"] for m in students], [m["ce_reference"] for m in students]
    ax.scatter(xs, ys, s=60, color=[_color(m["method"]) for m in students], zorder=3)
    _label_points(ax, [m["name"] for m in students], xs, ys)
    extra = ()
    teacher = next((m for m in models if m["method"] == "teacher"), None)
    if teacher is not None:
        ax.axhline(teacher["ce_reference"], color=_color("teacher"), ls="--", lw=1)
        extra = (Line2D([], [], color=_color("teacher"), ls="--", label=_display_name(teacher)),)
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("total FLOPs (student training + teacher generation/scoring)")
    ax.set_ylabel("cross-entropy on reference data (nats/token)")
    ax.set_title("Reference cross-entropy vs compute", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    _method_legend(ax, [m["method"] for m in students], extra)
    return _save(fig, path)


def predicted_vs_measured(models: list[dict[str, Any]], path: Path) -> Path | None:
    """Each predicted student's loss (the law fitted for its method) against its measured reference CE, with
    the y = x line; students without a prediction are not drawn."""
    shown = [m for m in models if m.get("predicted_loss") is not None]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    xs, ys = [m["ce_reference"] for m in shown], [m["predicted_loss"] for m in shown]
    ax.scatter(xs, ys, s=60, color=[_color(m["method"]) for m in shown], zorder=3)
    _label_points(ax, [m["name"] for m in shown], xs, ys)
    low, high = min(xs + ys), max(xs + ys)
    pad = 0.08 * (high - low) + 0.05
    (diagonal,) = ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#888888", ls=":", lw=1)
    diagonal.set_label("predicted = measured")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("measured cross-entropy on reference data (nats/token)")
    ax.set_ylabel("predicted loss (law fitted for the student's method)")
    ax.set_title("Scaling-law prediction vs measurement", fontsize=11)
    ax.grid(alpha=0.3)
    _method_legend(ax, [m["method"] for m in shown], (diagonal,))
    return _save(fig, path)
