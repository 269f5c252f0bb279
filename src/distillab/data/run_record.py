"""The student run folder (docs/architecture.md): an HF model folder + `distillab_run.json` + a model card.

`distillab_run.json` is written when a run starts, with `"complete": false`, and again at the very end, after
the model, tokenizer and card, with `"complete": true` (atomic rename): an interrupted run is never taken for
a finished one. Both records carry the config fingerprint of the run (`config_fingerprint`): a relaunch with
another config is refused. Shared by `sft` and `kd` (method "kd", its settings under `details`).

FLOPs (scaling.flops) count every token each model ran over, with that model's exact forward FLOPs per token
at its mean sequence length. Student training: 3 F_S x `tokens_processed` (prompts go through forward and
backward too; D, `train_tokens`, stays the supervised tokens, the law's D). The teachers' share, each when its
config can be loaded: generation, by the model that generated the hard labels (the dataset's distillab.json),
F_G x (prompt + completion tokens of every row); scoring, by the model that scored them (`distillab label
--model`, or the online KD teacher), F_K x the tokens of every sequence its forward ran over. The record's
`teacher` is the model the student learnt from: the scorer when there is one, else the generator.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab import __version__
from distillab.configs import config_to_dict
from distillab.fileio import atomic_write_json, atomic_write_text, read_json, utc_timestamp
from distillab.markdown import markdown_table
from distillab.scaling.flops import ForwardFlops, model_forward_flops, non_embedding_params, run_flops

RUN_RECORD_NAME = "distillab_run.json"


@dataclass(frozen=True)
class TeacherPass:
    """A teacher model's forward passes over the training data: generating the hard labels, or scoring them."""

    model: str
    revision: str | None
    tokens: int  # every token its forward ran over
    mean_sequence_length: float  # of those sequences: the attention term of its FLOPs per token

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StudentRun:
    """What a finished training run reports about itself."""

    method: str  # sft | kd | supervised
    student: dict[str, Any]  # kind, source, peft, ...
    model_config: Any  # the trained student's HF config (its architecture)
    train_tokens: int  # D: the supervised tokens
    tokens_processed: int  # every token through forward and backward
    mean_sequence_length: float
    loss_history: list[dict[str, float]]
    config: Any  # the resolved run config
    dataset: str
    dataset_metadata: dict[str, Any] | None
    tokenizer_fingerprint: str
    generation: TeacherPass | None = None  # None: the dataset does not name the model that generated it
    scoring: TeacherPass | None = None  # None: no soft labels, no online teacher
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
        "teacher": _teacher(run),
        "tokenizer_fingerprint": run.tokenizer_fingerprint,
        "dataset_tokenizer_fingerprint": metadata.get("tokenizer_fingerprint"),
        "config": config_to_dict(run.config),
    }


def _teacher(run: StudentRun) -> dict[str, Any] | None:
    """The model the student learnt from: the one that scored its targets, else the one that generated them."""
    teacher = run.scoring or run.generation
    return {"model": teacher.model, "revision": teacher.revision} if teacher else None


def _flops(run: StudentRun) -> dict[str, Any]:
    student = forward_flops(run.model_config, run.mean_sequence_length)
    generation = teacher_forward_flops(run.generation)
    scoring = teacher_forward_flops(run.scoring)
    flops = run_flops(
        student.per_token,
        run.tokens_processed,
        generation.per_token if generation else 0.0,
        run.generation.tokens if generation else 0,
        scoring.per_token if scoring else 0.0,
        run.scoring.tokens if scoring else 0,
    )
    return {
        **flops.to_dict(),
        "student_forward": student.to_dict(),
        "generation": _pass_dict(run.generation, generation),
        "scoring": _pass_dict(run.scoring, scoring),
        # every teacher pass counted: the generator is known and loadable, and so is the scorer if any
        "teacher_included": generation is not None and (run.scoring is None or scoring is not None),
    }


def forward_flops(model_config: Any, mean_sequence_length: float) -> ForwardFlops:
    """Exact forward FLOPs per token of a model on sequences of `mean_sequence_length` tokens on average."""
    return model_forward_flops(model_config, method="exact", n_ctx=max(1, round(mean_sequence_length)))


def teacher_forward_flops(teacher: TeacherPass | None) -> ForwardFlops | None:
    """A teacher pass's forward FLOPs per token; None without a pass, or when the model's config cannot be
    loaded (a Hub id while offline, a folder since removed)."""
    from transformers import AutoConfig

    if teacher is None:
        return None
    try:
        config = AutoConfig.from_pretrained(teacher.model, revision=teacher.revision)
    except (OSError, ValueError):
        return None
    return forward_flops(config, teacher.mean_sequence_length)


def _pass_dict(teacher: TeacherPass | None, forward: ForwardFlops | None) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return {**teacher.to_dict(), "forward": forward.to_dict() if forward else None}


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
