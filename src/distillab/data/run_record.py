"""The student run folder (DESIGN.md section 3): an HF model folder + `distillab_run.json` + a model card.

`distillab_run.json` is written when a run starts, with `"complete": false`, and again at the very end, after
the model, tokenizer and card, with `"complete": true` (atomic rename): an interrupted run is never taken for
a finished one. Both records carry the config fingerprint of the run (`config_fingerprint`): a relaunch with
another config is refused. Shared by `sft` and `kd` (method "kd", its settings under `details`).

FLOPs (scaling.flops): student training 3 F_S D with F_S the student's exact forward FLOPs per token at the
mean training sequence length and D the supervised tokens trained on (prompt tokens also pass through the
model; they are counted in `tokens_processed`, not in D). The teacher's share, when its config can be loaded
(the dataset's distillab.json names it): generation F_T x (prompt + completion tokens of every row), and
scoring F_T x the tokens it scored for soft labels (KD).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab import __version__
from distillab.configs import config_to_dict
from distillab.fileio import atomic_write_json, atomic_write_text, read_json, utc_timestamp
from distillab.markdown import markdown_table
from distillab.scaling.flops import model_forward_flops, non_embedding_params, run_flops

RUN_RECORD_NAME = "distillab_run.json"


@dataclass
class StudentRun:
    """What a finished training run reports about itself."""

    method: str  # sft | kd | supervised
    student: dict[str, Any]  # kind, source, peft, ...
    model_config: Any  # the trained student's HF config (its architecture)
    train_tokens: int  # D
    tokens_processed: int
    mean_sequence_length: float
    loss_history: list[dict[str, float]]
    config: Any  # the resolved run config
    dataset: str
    dataset_metadata: dict[str, Any] | None
    tokenizer_fingerprint: str
    teacher_generated_tokens: int = 0
    teacher_scored_tokens: int = 0
    training: dict[str, Any] = field(default_factory=dict)  # steps, epochs, runtime, resumed_from_step
    details: dict[str, Any] = field(default_factory=dict)  # method-specific (sft: the data report)


def read_run_record(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / RUN_RECORD_NAME
    return read_json(path) if path.is_file() else None


def mark_run_started(output_dir: str | Path, method: str, config: Any) -> None:
    """Record an unfinished run of `config` (its `fingerprint()`), replacing any earlier record."""
    atomic_write_json(
        Path(output_dir) / RUN_RECORD_NAME,
        {
            "kind": "student_run",
            "method": method,
            "complete": False,
            "distillab_version": __version__,
            "started_at": utc_timestamp(),
            "config_fingerprint": config.fingerprint(),
            "config": config_to_dict(config),
        },
    )


def finish_run(output_dir: str | Path, run: StudentRun) -> dict[str, Any]:
    """Write the model card, then the complete run record (last), which keeps the start time and config
    fingerprint of the started one. Returns the record."""
    output_dir = Path(output_dir)
    started = read_run_record(output_dir) or {}
    record = {
        **run_record(run, started_at=started.get("started_at")),
        "config_fingerprint": started.get("config_fingerprint"),
    }
    atomic_write_text(output_dir / "README.md", render_model_card(record))
    atomic_write_json(output_dir / RUN_RECORD_NAME, record)
    return record


def run_record(run: StudentRun, started_at: str | None = None) -> dict[str, Any]:
    metadata = run.dataset_metadata or {}
    return {
        "kind": "student_run",
        "method": run.method,
        "complete": True,
        "distillab_version": __version__,
        "started_at": started_at,
        "finished_at": utc_timestamp(),
        "student": {**run.student, "model_type": run.model_config.model_type},
        "params_non_embedding": non_embedding_params(run.model_config),
        "train_tokens": run.train_tokens,
        "tokens_processed": run.tokens_processed,
        "flops": _flops(run),
        "loss_history": run.loss_history,
        "training": run.training,
        "details": run.details,
        "dataset": {"source": run.dataset, "rows": metadata.get("rows"), "kind": metadata.get("kind")},
        "teacher": metadata.get("teacher"),
        "tokenizer_fingerprint": run.tokenizer_fingerprint,
        "dataset_tokenizer_fingerprint": metadata.get("tokenizer_fingerprint"),
        "config": config_to_dict(run.config),
    }


def _flops(run: StudentRun) -> dict[str, Any]:
    student = model_forward_flops(
        run.model_config, method="exact", n_ctx=max(1, round(run.mean_sequence_length))
    )
    teacher = teacher_forward_flops(run.dataset_metadata)
    flops = run_flops(
        student.per_token,
        run.train_tokens,
        teacher.per_token if teacher else 0.0,
        run.teacher_generated_tokens if teacher else 0,
        run.teacher_scored_tokens if teacher else 0,
    )
    return {
        **flops.to_dict(),
        "student_forward": student.to_dict(),
        "teacher_forward": teacher.to_dict() if teacher else None,
        "teacher_included": teacher is not None,
    }


def teacher_forward_flops(dataset_metadata: dict[str, Any] | None):
    """The teacher's exact forward FLOPs per token, at the mean generated sequence length; None when its
    config cannot be loaded (unknown teacher, or a Hub id while offline)."""
    from transformers import AutoConfig

    metadata = dataset_metadata or {}
    teacher = metadata.get("teacher") or {}
    if not teacher.get("model"):
        return None
    try:
        config = AutoConfig.from_pretrained(teacher["model"], revision=teacher.get("revision"))
    except (OSError, ValueError):
        return None
    mean_length = (metadata.get("prompt_tokens") or {}).get("mean", 0) + (
        metadata.get("completion_tokens") or {}
    ).get("mean", 0)
    return model_forward_flops(
        config, method="exact", n_ctx=max(1, round(mean_length)) if mean_length else None
    )


def render_model_card(record: dict[str, Any]) -> str:
    """README.md of a run folder: Hub YAML header, a summary table, the loss curve in brief."""
    student, flops, teacher = record["student"], record["flops"], record.get("teacher") or {}
    losses = record["loss_history"]
    header = [
        "---",
        "library_name: transformers",
        "tags:",
        "- distillab",
        "- distillation",
        f"- {record['method']}",
    ]
    if student.get("kind") == "pretrained" and not Path(str(student.get("source"))).exists():
        header.append(f"base_model: {student['source']}")
    header.append("---")
    rows = [
        ("method", record["method"]),
        (
            "student",
            f"{student.get('kind')} from `{student.get('source')}`"
            + (" + LoRA" if student.get("peft") else ""),
        ),
        ("teacher", f"`{teacher.get('model')}`" if teacher.get("model") else "unknown"),
        ("hard-label dataset", f"`{record['dataset']['source']}`"),
        ("N (non-embedding params)", f"{record['params_non_embedding']:,}"),
        ("D (supervised tokens trained on)", f"{record['train_tokens']:,}"),
        ("FLOPs (student train / teacher / total)", _flops_cell(flops)),
        ("steps / epochs", f"{record['training'].get('global_step')} / {record['training'].get('epochs')}"),
        (
            "loss (first -> last logged)",
            f"{losses[0]['loss']:.4f} -> {losses[-1]['loss']:.4f}" if losses else "n/a",
        ),
    ]
    table = markdown_table(["field", "value"], rows)
    return (
        "\n".join(header)
        + f"\n\n# distillab {record['method']} student\n\n"
        + "A student model trained with [distillab](https://pypi.org/project/distillab/). It loads with "
        + "`AutoModelForCausalLM.from_pretrained` (or lm-eval's `pretrained=` / `peft=`).\n\n"
        + table
        + "\n\n<details><summary>distillab_run.json</summary>\n\n```json\n"
        + json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2)
        + "\n```\n</details>\n"
    )


def _flops_cell(flops: dict[str, Any]) -> str:
    teacher = flops["teacher_generation"] + flops["teacher_scoring"]
    teacher_text = f"{teacher:.3g}" if flops["teacher_included"] else "not counted"
    return f"{flops['student_train']:.3g} / {teacher_text} / {flops['total']:.3g}"
