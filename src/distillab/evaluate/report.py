"""report.md: the comparison of hard-label (sft), soft-label (kd) and supervised students against the teacher
and the scaling law, rendered from the results dict that results.json holds."""

from __future__ import annotations

from typing import Any

from distillab.markdown import markdown_table

METRIC_LABELS = {
    "ce_reference": "CE reference (nats/token)",
    "ce_teacher_generations": "CE teacher generations (nats/token)",
    "kl_teacher": "KL(teacher‖student) (nats/token)",
    "top1_agreement": "top-1 agreement with the teacher",
}
MATCHED_TOKENS_TOLERANCE = 0.05


def lm_eval_columns(models: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (task, metric) any model has, in first-seen order."""
    columns: dict[tuple[str, str], None] = {}
    for model in models:
        for task, metrics in model["lm_eval"].items():
            columns.update(dict.fromkeys((task, metric) for metric in metrics))
    return list(columns)


def token_match(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the students trained on matched token budgets D (within MATCHED_TOKENS_TOLERANCE)."""
    budgets = {
        m["name"]: m["train_tokens"] for m in models if m["method"] != "teacher" and m.get("train_tokens")
    }
    if len(budgets) < 2:
        return {"train_tokens": budgets, "spread": None, "matched": None}
    spread = max(budgets.values()) / min(budgets.values()) - 1
    return {"train_tokens": budgets, "spread": spread, "matched": spread <= MATCHED_TOKENS_TOLERANCE}


def render_report(results: dict[str, Any]) -> str:
    models = results["models"]
    sections = [
        _header(results),
        _verdict_section(results["verdict"]),
        _retention_section(results["retention"]),
        _main_table(models),
        token_match_text(results["matched_tokens"]),
        _lm_eval_section(models, results["eval_sets"]["lm_eval"]),
        _law_section(models, results["scaling_law"]),
        _skipped_section(models),
        _decontamination_section(results["decontamination"]),
        _eval_sets_section(results["eval_sets"]),
        _plots_section(results["plots"]),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}" if value < 10**7 else f"{value:.3g}"
    return str(value)


def _header(results: dict[str, Any]) -> str:
    students = [m for m in results["models"] if m["method"] != "teacher"]
    return (
        f"# distillab evaluation\n\nTeacher `{results['teacher']}` and {len(students)} student(s), "
        f"{results['created_at']}. Cross-entropies are in nats per token of each model's own tokenizer, on "
        "completion tokens only for chat data (the prompt is context, not scored); KL(teacher‖student) and top-1 "
        "agreement are per held-out completion token, teacher and student reading the same tokens."
    )


def _verdict_section(sentences: list[str]) -> str:
    return "## Verdict\n\n" + " ".join(sentences)


def retention_table(kept: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the retention table: per task, the score and its % of the teacher's."""
    tasks = kept["tasks"]
    header = ["model", "method", *(f"{task}: {info['metric']}" for task, info in tasks.items())]
    header += [f"{task}: % of teacher" for task in tasks]
    teacher_percent = [_percent(100.0 if info["teacher"] else None) for info in tasks.values()]
    rows = [["teacher", "teacher", *(_fmt(info["teacher"]) for info in tasks.values()), *teacher_percent]]
    for student in kept["students"]:
        rows.append(
            [
                student["name"],
                student["method"],
                *(_fmt(student["scores"][task]) for task in tasks),
                *(_percent(student["retained_percent"][task]) for task in tasks),
            ]
        )
    return header, rows


def _retention_section(kept: dict[str, Any]) -> str:
    if not kept["tasks"]:
        return ""
    return "## What the students kept of the teacher\n\n" + markdown_table(*retention_table(kept))


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _flops_cells(model: dict[str, Any]) -> list[str]:
    flops = model.get("flops") or {}
    if not flops:
        return ["—", "—"]
    teacher = (flops.get("teacher_generation") or 0) + (flops.get("teacher_scoring") or 0)
    counted = flops.get("teacher_included", True) or model["method"] == "supervised"
    teacher_cell = _fmt(float(teacher)) if counted else "not counted"
    return [_fmt(float(flops["total"])), f"{_fmt(float(flops.get('student_train') or 0))} / {teacher_cell}"]


def main_table(models: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (one row per model)."""
    header = [
        "model",
        "method",
        "N (non-emb.)",
        "D (train tokens)",
        "FLOPs total",
        "FLOPs student / teacher gen.+scoring",
        "CE reference",
        "predicted L",
        "CE teacher gen.",
        "KL(T‖S)",
        "top-1 agree",
    ]
    rows = [
        [
            m["name"],
            m["method"],
            _fmt(m.get("params_non_embedding")),
            _fmt(m.get("train_tokens")),
            *_flops_cells(m),
            _fmt(m["ce_reference"]),
            _fmt(m.get("predicted_loss")),
            _fmt(m.get("ce_teacher_generations")),
            _fmt(m.get("kl_teacher")),
            _fmt(m.get("top1_agreement")),
        ]
        for m in models
    ]
    return header, rows


def _main_table(models: list[dict[str, Any]]) -> str:
    header, rows = main_table(models)
    rows = [[f"**{name}**", *cells] for name, *cells in rows]
    return "## Hard vs soft vs supervised\n\n" + markdown_table(header, rows)


def token_match_text(match: dict[str, Any]) -> str:
    if match["matched"] is None:
        return ""
    budgets = ", ".join(f"{name} {tokens:,}" for name, tokens in match["train_tokens"].items())
    verdict = "matched" if match["matched"] else "**not matched**: compare their metrics with care"
    return (
        f"Training tokens D: {budgets} (spread {match['spread']:.1%}, {verdict}; "
        f"tolerance {MATCHED_TOKENS_TOLERANCE:.0%})."
    )


def _lm_eval_section(models: list[dict[str, Any]], lm_eval: dict[str, Any]) -> str:
    columns = lm_eval_columns(models)
    errors = [
        (m["name"], task, run["error"])
        for m in models
        for task, run in m["lm_eval_runs"].items()
        if "error" in run
    ]
    if not columns and not errors:
        return ""
    parts = ["## lm-eval"]
    if columns:
        header = ["model", *(f"{task}: {metric}" for task, metric in columns)]
        rows = [
            [m["name"], *(_fmt(m["lm_eval"].get(task, {}).get(metric)) for task, metric in columns)]
            for m in models
        ]
        parts.append(markdown_table(header, rows))
        runs = {task: run for m in models for task, run in m["lm_eval_runs"].items() if "error" not in run}
        details = [
            [
                task,
                _fmt(run["version"]),
                _fmt((run["n_samples"] or {}).get("effective")),
                _fmt((run["n_samples"] or {}).get("original")),
            ]
            for task, run in runs.items()
        ]
        parts.append(markdown_table(["task", "version", "samples scored", "samples in task"], details))
        parts.append(
            f"Chat template applied: {lm_eval['apply_chat_template']}; limit: {_fmt(lm_eval['limit'])}; "
            f"include path: `{lm_eval['include_path']}`. lm-eval's own results and per-sample files are under "
            f"`{lm_eval['output_dir']}/<model>/<task>/`."
        )
    parts += [f"- lm-eval `{task}` failed on {name}: {error}" for name, task, error in errors]
    return "\n\n".join(parts)


def _law_section(models: list[dict[str, Any]], law: dict[str, Any]) -> str:
    students = [m for m in models if m["method"] != "teacher"]
    if not students:
        return ""
    header = [
        "model",
        "law",
        "coefficients",
        "N",
        "D",
        "L_T (teacher CE)",
        "predicted",
        "measured CE reference",
        "measured − predicted",
    ]
    rows = [
        [
            m["name"],
            m["prediction"].get("law", "—"),
            m["prediction"].get("coefficients", "—"),
            _fmt(m.get("params_non_embedding")),
            _fmt(m.get("train_tokens")),
            _fmt(m["prediction"].get("teacher_loss")),
            _fmt(m.get("predicted_loss")),
            _fmt(m["ce_reference"]),
            _fmt(m["ce_reference"] - m["predicted_loss"]) if m.get("predicted_loss") is not None else "—",
        ]
        for m in students
    ]
    reasons = [
        f"- {m['name']}: no prediction ({m['prediction']['reason']})"
        for m in students
        if "reason" in m["prediction"]
    ]
    return "\n\n".join(
        [
            f"## Scaling law: predicted vs measured\n\nCoefficient sets: {_coefficient_sets(law['coefficient_sets'])}.",
            markdown_table(header, rows),
            *(["\n".join(reasons)] if reasons else []),
            f"> {law['note']}",
        ]
    )


def _coefficient_sets(sets: list[dict[str, Any]]) -> str:
    if not sets:
        return "none given"
    described = []
    for s in sets:
        fitted = f"fitted for {s['method']}" if s["method"] else "the paper's, fitted for no method"
        described.append(f"`{s['name']}` ({fitted}; {s['source']})")
    return ", ".join(described)


def _skipped_section(models: list[dict[str, Any]]) -> str:
    lines = []
    for model in models:
        by_reason: dict[str, list[str]] = {}
        for metric, reason in model["skipped"].items():
            by_reason.setdefault(reason, []).append(metric)
        lines += [
            f"- {model['name']}: {', '.join(metrics)} skipped: {reason}"
            for reason, metrics in by_reason.items()
        ]
    return "## Skipped metrics\n\n" + "\n".join(lines) if lines else ""


def _decontamination_section(decontamination: dict[str, Any]) -> str:
    sets = decontamination["sets"]
    head = (
        f"## Decontamination\n\nWord {decontamination['ngram']}-gram overlap between the training data "
        f"({', '.join(f'`{s}`' for s in decontamination['train_datasets']) or 'none known'}) and each eval set: "
        "rows of the eval set that share an n-gram with a training prompt or completion."
    )
    parts = [head]
    if sets:
        rows = [
            [
                name,
                str(r["rows"]),
                str(r["overlapping_rows"]),
                f"{r['fraction']:.1%}",
                "; ".join(f"`{e[:60]}`" for e in r["examples"][:2]) or "—",
            ]
            for name, r in sets.items()
        ]
        parts.append(markdown_table(["eval set", "rows", "overlapping rows", "fraction", "examples"], rows))
    parts += [
        f"- {source}: not checked ({reason})" for source, reason in decontamination["unreadable"].items()
    ]
    parts += [f"- {name}: not checked ({reason})" for name, reason in decontamination["not_checked"].items()]
    return "\n\n".join(parts)


def _eval_sets_section(eval_sets: dict[str, Any]) -> str:
    lines = ["## Eval sets"]
    for name in ("reference", "teacher_generations"):
        data = eval_sets.get(name)
        if data:
            lines.append(
                f"- {name}: `{data['source']}`, {data['rows']} rows ({data['selection']}, {data['kind']}) → `{data['path']}`"
            )
    for task, path in eval_sets["lm_eval"].get("data_files", {}).items():
        lines.append(f"- offline lm-eval task {task}: `{path}`")
    return "\n".join(lines)


def _plots_section(plots: list[str]) -> str:
    if not plots:
        return ""
    return "## Plots\n\n" + "\n\n".join(f"![{path}]({path})" for path in plots)
