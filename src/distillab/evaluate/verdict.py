"""What the students kept of the teacher, and a verdict in plain sentences, from the measured entries.

Retention: each student's lm-eval score as a percentage of the teacher's, per task (the task's first metric),
the number practitioners quote. Students are grouped by training method (supervised, hard = sft, soft = kd);
a method trained with several seeds is summarised by its mean and its seed-to-seed spread (max - min), and a
difference between two methods is called real only when it is larger than both methods' spreads.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

METHOD_NAMES = {"supervised": "supervised", "sft": "hard", "kd": "soft"}


def primary_metrics(models: list[dict[str, Any]]) -> dict[str, str]:
    """{task: its first metric} over the teacher's lm-eval results (the tasks retention is computed on)."""
    return {task: next(iter(metrics)) for task, metrics in models[0]["lm_eval"].items() if metrics}


def retention(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task, the teacher's score and each student's score and percentage of it (None when the teacher
    scores 0: nothing to retain)."""
    teacher, students = models[0], models[1:]
    tasks = primary_metrics(models)
    rows = []
    for student in students:
        scores = {task: student["lm_eval"].get(task, {}).get(metric) for task, metric in tasks.items()}
        rows.append(
            {
                "name": student["name"],
                "method": student["method"],
                "scores": scores,
                "retained_percent": {
                    task: _percent(score, teacher["lm_eval"][task][tasks[task]])
                    for task, score in scores.items()
                },
            }
        )
    return {
        "tasks": {
            task: {"metric": metric, "teacher": teacher["lm_eval"][task][metric]}
            for task, metric in tasks.items()
        },
        "students": rows,
    }


def by_method(models: list[dict[str, Any]], value) -> dict[str, dict[str, Any]]:
    """{method: {mean, spread, seeds}} of `value(model)` over the students of each method (None values out)."""
    groups: dict[str, list[float]] = {}
    for model in models[1:]:
        number = value(model)
        if number is not None:
            groups.setdefault(model["method"], []).append(number)
    return {
        method: {"mean": mean(values), "spread": max(values) - min(values), "seeds": len(values)}
        for method, values in groups.items()
    }


def verdict(results: dict[str, Any]) -> list[str]:
    """3-5 sentences: the teacher's score, the closest method and by how much, what soft labels cost, and
    whether the gap exceeds the seed-to-seed spread."""
    models = results["models"]
    kept = results["retention"]
    if len(models) < 2:
        return ["No student was evaluated."]
    sentences = []
    if kept["tasks"]:
        task, info = next(iter(kept["tasks"].items()))
        sentences.append(f"The teacher scores {info['teacher']:.1%} on {task} ({info['metric']}).")
        groups = by_method(models, lambda m: _retained(kept, m["name"], task))
        quantity, unit = f"of the teacher's {task} score", "points"
    else:
        groups = by_method(models, lambda m: None if m.get("kl_teacher") is None else -m["kl_teacher"])
        quantity, unit = "negative KL(teacher‖student) on held-out teacher generations", "nats"
    if not groups:
        return [*sentences, "No student has a score to compare (no lm-eval task and no KL)."]
    ranked = sorted(groups.items(), key=lambda item: item[1]["mean"], reverse=True)
    sentences.append(_closest_sentence(ranked, quantity, unit))
    sentences += _cost_sentences(models)
    sentences.append(_spread_sentence(ranked, unit))
    return sentences


def _closest_sentence(ranked: list[tuple[str, dict[str, Any]]], quantity: str, unit: str) -> str:
    """The best method and its lead over the runner-up, or the tie when that lead rounds to 0.0."""
    best, best_group = ranked[0]
    value = f"{_value(best_group['mean'], unit)} {quantity}{_mean_of(best_group)}"
    if len(ranked) < 2:
        return f"Closest to the teacher: the {_name(best)} student, {value}."
    runner, runner_group = ranked[1]
    gap = f"{best_group['mean'] - runner_group['mean']:.1f}"
    if gap == "0.0":
        return f"Closest to the teacher, tied: the {_name(best)} and {_name(runner)} students, {value}."
    return (
        f"Closest to the teacher: the {_name(best)} student, {value}, {gap} {unit} ahead of {_name(runner)}"
        f" ({_value(runner_group['mean'], unit)})."
    )


def _cost_sentences(models: list[dict[str, Any]]) -> list[str]:
    soft = next((m for m in models if m["method"] == "kd" and m.get("flops")), None)
    hard = next((m for m in models if m["method"] == "sft" and m.get("flops")), None)
    if soft is None:
        return []
    scoring = soft["flops"].get("teacher_scoring") or 0
    text = f"Soft labels cost {scoring:.3g} FLOPs of teacher scoring"
    if hard is not None and hard["flops"].get("total"):
        extra = soft["flops"]["total"] / hard["flops"]["total"] - 1
        text += f" ({extra:+.0%} total FLOPs over the hard student)"
    size = soft.get("soft_label_bytes")
    text += f" and {size / 1e6:.2f} MB on disk." if size else "; their size on disk is not recorded."
    return [text]


def _spread_sentence(ranked: list[tuple[str, dict[str, Any]]], unit: str) -> str:
    best, best_group = ranked[0]
    if best_group["seeds"] < 2:
        return (
            "Each student ran with one seed (--quick): the seed-to-seed spread is not measured, so a gap this "
            "size may be noise; the full demo trains every student with two seeds."
        )
    if len(ranked) < 2:
        return f"The {_name(best)} students differ by {best_group['spread']:.1f} {unit} between seeds."
    runner_group = ranked[1][1]
    gap = best_group["mean"] - runner_group["mean"]
    spread = max(best_group["spread"], runner_group["spread"])
    larger = "larger" if gap > spread else "not larger"
    return (
        f"That gap ({gap:.1f} {unit}) is {larger} than the seed-to-seed spread ({spread:.1f} {unit}, "
        f"{best_group['seeds']} seeds per student)"
        + ("." if gap > spread else ": with this budget the two methods are not told apart.")
    )


def _retained(kept: dict[str, Any], name: str, task: str) -> float | None:
    row = next((r for r in kept["students"] if r["name"] == name), None)
    return None if row is None else row["retained_percent"].get(task)


def _percent(score: float | None, teacher: float | None) -> float | None:
    if score is None or not teacher:
        return None
    return 100 * score / teacher


def _name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _value(number: float, unit: str) -> str:
    return f"{number:.1f}%" if unit == "points" else f"{number:.3f} {unit}"


def _mean_of(group: dict[str, Any]) -> str:
    return f" (mean of {group['seeds']} seeds)" if group["seeds"] > 1 else ""
