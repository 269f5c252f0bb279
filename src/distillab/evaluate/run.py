"""`distillab evaluate`: measure a teacher and its students, run lm-eval, compare against the scaling law.

Order: every input is checked first (model folders, eval sets, lm-eval task names, coefficients), so a typo
fails in seconds with one line. Then the teacher is loaded once and kept; each student is loaded in turn and
scored on the reference data and, beside the teacher, on the held-out teacher generations (the teacher's
logits at the scored held-out positions are computed once when they fit in `TEACHER_LOGITS_BYTES`, else
recomputed beside each student); then lm-eval runs per model.
Output, in `output_dir`:

    results.json            one entry per model + the eval sets, decontamination and law settings used
    report.md               a verdict, then the comparison tables (retention of the teacher's lm-eval scores,
                            hard vs soft vs supervised, law, lm-eval, decontamination)
    report.html             the same as one self-contained page (plots embedded)
    plots/*.png             one chart per metric, CE vs FLOPs, predicted vs measured
    eval_sets/*.jsonl       the reference and held-out rows actually scored
    lm_eval/tasks/          the offline task YAMLs + their data (an lm-eval include path)
    lm_eval/<model>/<task>/ lm-eval's own results_*.json and samples_*.jsonl
    distillab_config.yaml   the resolved config
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillab import __version__
from distillab.configs import save_resolved_config
from distillab.data.hardlabels import read_metadata
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.devices import resolve_device
from distillab.evaluate import decontamination, harness, law, plots
from distillab.evaluate.config import LOCAL_TASKS, EvaluateConfig
from distillab.evaluate.evalsets import (
    EncodedSet,
    EvalSet,
    encode_set,
    heldout_system_prompt,
    load_heldout_set,
    load_reference_set,
    save_eval_set,
)
from distillab.evaluate.html import render_html
from distillab.evaluate.models import ModelSpec, load_model, load_tokenizer, resolve_models
from distillab.evaluate.report import METRIC_LABELS, lm_eval_columns, render_report, token_match
from distillab.evaluate.scoring import score, teacher_logits
from distillab.evaluate.verdict import retention, verdict
from distillab.fileio import atomic_write_json, atomic_write_text, check_output_dir, utc_timestamp
from distillab.scaling import load_coefficients
from distillab.scaling.flops import non_embedding_params

NO_HELDOUT = "no held-out teacher generations given (--heldout_data)"
TEACHER_LOGITS_BYTES = 2 * 2**30  # the teacher's held-out logits are kept for every student up to this size


@dataclass
class Teacher:
    """What the students are compared with: the loaded teacher and its tokenization of the held-out set."""

    model: Any
    fingerprint: str
    pad_id: int
    heldout: EncodedSet | None
    heldout_logits: list | None  # the teacher's logits at the scored positions of `heldout`, per batch

    @property
    def heldout_pair(self):
        """What a student's held-out scores pair with (`score`'s `teacher`): the kept logits, or the model."""
        return self.model if self.heldout_logits is None else self.heldout_logits


def evaluate(config: EvaluateConfig) -> Path:
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir)
    specs = resolve_models(config.teacher, config.students)
    coefficient_sets = [load_coefficients(name) for name in config.coefficients]
    law.check_coefficient_sets(coefficient_sets)
    heldout = load_heldout_set(config)
    system_prompt = config.system_prompt or heldout_system_prompt(config)
    reference = load_reference_set(config, system_prompt)
    eval_sets = [s for s in (reference, heldout) if s is not None]
    for eval_set in eval_sets:
        save_eval_set(eval_set, output_dir / "eval_sets")
    local_tasks, manager = _prepare_lm_eval(config, output_dir / "lm_eval")
    device = resolve_device(config.device)
    save_resolved_config(config, output_dir)

    entries = measure_models(specs, reference, heldout, config, device)
    for spec, entry in zip(specs, entries, strict=True):
        runs = (
            harness.run_lm_eval(spec, config, manager, device, output_dir / "lm_eval", system_prompt)
            if manager
            else {}
        )
        entry["lm_eval_runs"] = runs
        entry["lm_eval"] = {task: run["metrics"] for task, run in runs.items() if "metrics" in run}
        entry["prediction"] = law.predict(entry, entries[0]["ce_reference"], coefficient_sets)
        entry["predicted_loss"] = entry["prediction"].get("predicted_loss")

    results = {
        "distillab_version": __version__,
        "created_at": utc_timestamp(),
        "teacher": specs[0].name,
        "eval_sets": {
            **{s.name: s.to_dict() for s in eval_sets},
            "lm_eval": _lm_eval_settings(config, local_tasks, output_dir / "lm_eval"),
        },
        "scaling_law": {
            "coefficient_sets": [
                {"name": s.name, "method": s.method, "source": s.metadata.get("source", given)}
                for s, given in zip(coefficient_sets, config.coefficients, strict=True)
            ],
            "note": law.NOTE,
        },
        "decontamination": _decontamination(config, specs, eval_sets, local_tasks),
        "matched_tokens": token_match(entries),
        "models": entries,
        "retention": retention(entries),
    }
    results["verdict"] = verdict(results)
    write_outputs(results, output_dir)
    return output_dir


def write_outputs(results: dict[str, Any], output_dir: Path) -> None:
    """plots/*.png, then results.json, report.md and report.html (atomically)."""
    charts = write_plots(results["models"], output_dir / "plots")
    results["plots"] = [str(path.relative_to(output_dir)) for path in charts]
    atomic_write_json(output_dir / "results.json", results)
    atomic_write_text(output_dir / "report.md", render_report(results))
    atomic_write_text(output_dir / "report.html", render_html(results, output_dir))
    print(
        f"evaluate: wrote {output_dir / 'results.json'}, {output_dir / 'report.md'} and "
        f"{output_dir / 'report.html'}",
        flush=True,
    )


def measure_models(
    specs: list[ModelSpec], reference: EvalSet, heldout: EvalSet | None, config: EvaluateConfig, device: str
) -> list[dict[str, Any]]:
    """The teacher (first) then each student: reference CE, held-out CE, KL and top-1 agreement."""
    teacher_spec, *students = specs
    tokenizer = load_tokenizer(teacher_spec)
    model = load_model(teacher_spec, device, config.dtype)
    encoded = encode_set(heldout, tokenizer, config.max_length) if heldout is not None else None
    teacher = Teacher(
        model,
        tokenizer_fingerprint(tokenizer),
        _pad_id(tokenizer),
        encoded,
        _kept_teacher_logits(model, encoded, config.batch_size, _pad_id(tokenizer)),
    )
    entries = [measure(teacher_spec, model, tokenizer, reference, heldout, config, teacher=None)]
    for spec in students:
        tokenizer = load_tokenizer(spec)
        model = load_model(spec, device, config.dtype)
        entries.append(measure(spec, model, tokenizer, reference, heldout, config, teacher))
        del model  # free it before the next student loads
        gc.collect()
    return entries


def measure(
    spec: ModelSpec,
    model,
    tokenizer,
    reference: EvalSet,
    heldout: EvalSet | None,
    config: EvaluateConfig,
    teacher: Teacher | None,
) -> dict[str, Any]:
    """One model's entry of results.json (lm-eval and the prediction are added later). `teacher` is None for
    the teacher itself, whose KL and agreement with itself are not measured."""
    entry = _describe(spec, model, tokenizer_fingerprint(tokenizer))
    encoded = encode_set(reference, tokenizer, config.max_length)
    totals = score(
        model, encoded, config.batch_size, _pad_id(tokenizer), description=f"{spec.name}: reference"
    )
    entry.update(
        ce_reference=totals.cross_entropy, ce_teacher_generations=None, kl_teacher=None, top1_agreement=None
    )
    entry["tokens"] = {"reference": encoded.scored_tokens}
    if heldout is None:
        entry["skipped"].update(
            dict.fromkeys(("ce_teacher_generations", "kl_teacher", "top1_agreement"), NO_HELDOUT)
        )
    else:
        _measure_heldout(entry, model, tokenizer, heldout, config, teacher)
    return entry


def _measure_heldout(
    entry, model, tokenizer, heldout: EvalSet, config: EvaluateConfig, teacher: Teacher | None
):
    """Student CE on the held-out completions through its own chat template; KL and top-1 agreement on the
    teacher's tokens, which needs a shared vocabulary (one pass when both templates give the same tokens)."""
    encoded = encode_set(heldout, tokenizer, config.max_length)
    entry["tokens"]["teacher_generations"] = encoded.scored_tokens
    description = f"{entry['name']}: teacher generations"
    shared_vocab = teacher is not None and entry["tokenizer_fingerprint"] == teacher.fingerprint
    same_tokens = shared_vocab and (encoded.input_ids, encoded.labels) == (
        teacher.heldout.input_ids,
        teacher.heldout.labels,
    )
    own = score(
        model,
        encoded,
        config.batch_size,
        _pad_id(tokenizer),
        teacher.heldout_pair if same_tokens else None,
        description,
    )
    entry["ce_teacher_generations"] = own.cross_entropy
    if shared_vocab:
        paired = (
            own
            if same_tokens
            else score(
                model,
                teacher.heldout,
                config.batch_size,
                teacher.pad_id,
                teacher.heldout_pair,
                f"{description} (teacher's tokens)",
            )
        )
        entry.update(kl_teacher=paired.kl_per_token, top1_agreement=paired.top1_agreement)
    elif teacher is not None:
        reason = (
            f"its tokenizer differs from the teacher's (fingerprint {entry['tokenizer_fingerprint']} != "
            f"{teacher.fingerprint}); KL and top-1 agreement need a shared vocabulary"
        )
        print(f"evaluate: warning: {entry['name']}: KL and top-1 agreement skipped: {reason}", flush=True)
        entry["skipped"].update(dict.fromkeys(("kl_teacher", "top1_agreement"), reason))


def _kept_teacher_logits(model, encoded: EncodedSet | None, batch_size: int, pad_id: int) -> list | None:
    """The teacher's logits at the scored held-out positions, computed once for every student when they fit in
    TEACHER_LOGITS_BYTES (None: the teacher runs again beside each student)."""
    if encoded is None:
        return None
    element_size = next(model.parameters()).element_size()
    if encoded.scored_tokens * model.config.vocab_size * element_size > TEACHER_LOGITS_BYTES:
        return None
    return teacher_logits(model, encoded, batch_size, pad_id, "teacher: logits on the teacher generations")


def _describe(spec: ModelSpec, model, fingerprint: str) -> dict[str, Any]:
    run = spec.run
    return {
        "name": spec.name,
        "path": spec.path,
        "method": spec.method,
        "base_model": spec.base,
        "params_non_embedding": run.get("params_non_embedding") or non_embedding_params(model.config),
        "train_tokens": run.get("train_tokens"),
        "flops": run.get("flops"),
        "tokenizer_fingerprint": fingerprint,
        "trained_on": (run.get("dataset") or {}).get("source"),
        "soft_label_bytes": _soft_label_bytes(run),
        "skipped": {},
    }


def _soft_label_bytes(run: dict[str, Any]) -> int | None:
    """The on-disk bytes of the soft labels a KD student trained on (its dataset's metadata), when known."""
    source = (run.get("dataset") or {}).get("source")
    if run.get("method") != "kd" or not source or not Path(source).is_dir():
        return None
    soft = (read_metadata(source) or {}).get("soft_labels") or {}
    if soft.get("bytes_per_token") is None or soft.get("scored_tokens") is None:
        return None
    return round(soft["bytes_per_token"] * soft["scored_tokens"])


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def _prepare_lm_eval(config: EvaluateConfig, directory: Path):
    """The offline tasks' files and a TaskManager that knows every configured task (None: lm-eval skipped)."""
    if not config.lm_eval_tasks:
        return None, None
    include_paths = list(config.lm_eval_include_path)
    local_tasks = None
    local_names = [task for task in config.lm_eval_tasks if task in LOCAL_TASKS]
    if local_names:
        local_tasks = harness.write_local_tasks(
            directory / "tasks", local_names, config.lm_eval_num_docs, config.lm_eval_seed
        )
        include_paths.append(str(local_tasks.include_path))
    return local_tasks, harness.task_manager(include_paths, config.lm_eval_tasks)


def _lm_eval_settings(config: EvaluateConfig, local_tasks, directory: Path) -> dict[str, Any]:
    return {
        "tasks": config.lm_eval_tasks,
        "include_path": str(local_tasks.include_path) if local_tasks else config.lm_eval_include_path,
        "data_files": {task: str(path) for task, path in local_tasks.data_files.items()}
        if local_tasks
        else {},
        "limit": config.lm_eval_limit_value,
        "apply_chat_template": config.lm_eval_apply_chat_template,
        "output_dir": str(directory),
    }


def _decontamination(
    config: EvaluateConfig, specs: list[ModelSpec], eval_sets: list[EvalSet], local_tasks
) -> dict[str, Any]:
    """n-gram overlap of the students' training data with each eval set."""
    sources = config.train_datasets or sorted(
        {s.run["dataset"]["source"] for s in specs if (s.run.get("dataset") or {}).get("source")}
    )
    texts, unreadable = decontamination.training_texts(sources)
    index = decontamination.NgramIndex(texts, config.decontamination_ngram)
    sets = {s.name: decontamination.overlap_report(index, s.queries) for s in eval_sets}
    if local_tasks is not None:
        for task, questions in local_tasks.questions.items():
            sets[f"lm_eval:{task}"] = decontamination.overlap_report(index, questions)
    not_checked = {
        f"lm_eval:{task}": "documents of a non-local task are not read"
        for task in config.lm_eval_tasks
        if task not in LOCAL_TASKS
    }
    return {
        "ngram": config.decontamination_ngram,
        "train_datasets": sources,
        "unreadable": unreadable,
        "sets": sets if texts else {},
        "not_checked": not_checked,
    }


def write_plots(models: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One bar chart per metric (lm-eval metrics included), CE vs FLOPs, predicted vs measured."""
    charts = [
        plots.metric_bars(
            models, [m.get(key) for m in models], label, directory / f"{key}.png", key == "top1_agreement"
        )
        for key, label in METRIC_LABELS.items()
    ]
    for task, metric in lm_eval_columns(models):
        values = [m["lm_eval"].get(task, {}).get(metric) for m in models]
        name = f"lm_eval_{_slug(task)}_{_slug(metric)}.png"
        fraction = all(v is None or 0 <= v <= 1 for v in values)
        charts.append(
            plots.metric_bars(models, values, f"lm-eval {task}: {metric}", directory / name, fraction)
        )
    charts += [
        plots.ce_vs_flops(models, directory / "ce_vs_flops.png"),
        plots.predicted_vs_measured(models, directory / "predicted_vs_measured.png"),
    ]
    return [chart for chart in charts if chart is not None]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
