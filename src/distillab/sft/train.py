"""`distillab sft`: a hard-label dataset -> a student run folder, through TRL's SFTTrainer.

Order of work: check every input (dataset, tokenizer, chat template, max_length) before the run folder is
touched; build the student; record the run as started (complete: false); train, resuming from the last
checkpoint in output_dir when there is one; save model + tokenizer; write the card and the complete record.
Relaunching a finished run does nothing; relaunching an interrupted one resumes it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distillab.configs import save_resolved_config
from distillab.data.hardlabels import METADATA_NAME, load_hard_labels, read_metadata
from distillab.data.run_record import StudentRun, finish_run, is_complete, mark_run_started
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.sft import students
from distillab.sft.config import DistillabSFTConfig
from distillab.sft.data import DataOptions, TrainingData, build_training_data
from distillab.sft.trainer import DistillabSFTTrainer

INIT_DIR = "student_init"
ADAPTER_DIR = "adapter"


class TrainingMethod:
    """What a training method adds to the shared orchestration of `train_student`: hard-label SFT adds nothing;
    soft-label KD (`distillab.kd`) checks its teacher, attaches soft labels and brings its own trainer."""

    name = "sft"
    trainer_class: type[DistillabSFTTrainer] = DistillabSFTTrainer
    # Adds per-token columns to the tokenised rows (see `build_training_data`); KD attaches its soft labels.
    attach: Callable[[Any], Any] | None = None

    def check_inputs(self, config, hard_labels, metadata: dict | None, tokenizer) -> None:
        """Refuse inputs this method cannot train on, before anything is tokenised or written."""

    def trainer_kwargs(self, config) -> dict[str, Any]:
        """Extra keyword arguments of `trainer_class`."""
        return {}

    def run_fields(self, config, trainer, metadata: dict | None) -> dict[str, Any]:
        """`StudentRun` fields of this method (`details` entries are merged into the shared ones)."""
        return {}


def train_student(
    config: DistillabSFTConfig, callbacks: Sequence[Any] = (), method: TrainingMethod | None = None
) -> Path:
    """Run (or resume, or skip when complete) an SFT job (or `method`'s); returns the run folder."""
    method = method or TrainingMethod()
    output_dir = Path(config.output_dir)
    if is_complete(output_dir) and not config.overwrite:
        _say(
            config,
            f"{output_dir} is already a complete run; nothing to do (--overwrite to start over)",
            method,
        )
        return output_dir

    hard_labels = load_hard_labels(config.dataset_name, split=config.dataset_split)
    metadata = dataset_metadata(config.dataset_name)
    source = students.student_source(config, metadata)
    tokenizer = students.load_student_tokenizer(
        source, config.model_revision, config.chat_template_path, config.trust_remote_code
    )
    method.check_inputs(config, hard_labels, metadata, tokenizer)
    with config.main_process_first(desc="tokenizing the hard labels"):
        data = build_training_data(
            hard_labels, tokenizer, DataOptions.from_config(config), attach=method.attach
        )
    _say(config, f"data: {data.report.summary()}", method)

    _prepare_output_dir(config, output_dir, method.name)
    model_path = _student_weights(config, source, tokenizer, output_dir)
    model = students.load_student(
        model_path, config, revision=config.model_revision if model_path == source else None
    )
    trainer = method.trainer_class(
        model=model,
        args=config,
        train_dataset=data.dataset,
        processing_class=tokenizer,
        peft_config=students.lora_config(config),
        callbacks=list(callbacks),
        **method.trainer_kwargs(config),
    )
    checkpoint = _last_checkpoint(output_dir)
    if checkpoint:
        _say(config, f"resuming from {checkpoint}", method)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    _save_student(trainer, config, model_path, output_dir)
    if config.process_index == 0:
        run = _student_run(config, trainer, data, source, hard_labels, metadata, checkpoint, result.metrics)
        fields = method.run_fields(config, trainer, metadata)
        details = {**run.details, **fields.pop("details", {})}
        finish_run(output_dir, dataclasses.replace(run, method=method.name, details=details, **fields))
        _cleanup(config, output_dir)
        _say(config, f"wrote the student run folder {output_dir}", method)
    config.distributed_state.wait_for_everyone()
    return output_dir


def dataset_metadata(source: str) -> dict[str, Any] | None:
    """The hard-label dataset's distillab.json: from its folder, or its Hub repo (None when absent)."""
    if Path(source).exists():
        return read_metadata(source)
    try:
        from huggingface_hub import hf_hub_download

        return read_metadata(Path(hf_hub_download(source, METADATA_NAME, repo_type="dataset")).parent)
    except Exception:  # offline, no such file, no access: the run works without it
        return None


def _prepare_output_dir(config: DistillabSFTConfig, output_dir: Path, method: str) -> None:
    """Start over when asked, then mark the run as started (main process; the others wait)."""
    with config.main_process_first(desc="preparing the run folder"):
        if config.process_index == 0:
            if config.overwrite:
                shutil.rmtree(output_dir, ignore_errors=True)
            output_dir.mkdir(parents=True, exist_ok=True)
            mark_run_started(output_dir, method, config)
            save_resolved_config(config, output_dir)


def _student_weights(config: DistillabSFTConfig, source: str, tokenizer, output_dir: Path) -> str:
    """Where the student's initial weights load from: the pretrained model, or a fresh/pruned folder."""
    if config.student_kind == "pretrained":
        return source
    directory = output_dir / INIT_DIR
    with config.main_process_first(desc="building the student"):
        if config.process_index == 0 and not (directory / "config.json").is_file():
            students.materialize_student(config, source, tokenizer, directory)
    return str(directory)


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def _save_student(
    trainer: DistillabSFTTrainer, config: DistillabSFTConfig, model_path: str, output_dir: Path
):
    """Model + tokenizer at the top of the run folder (a LoRA run with --save_merged: merged weights there,
    the adapter under adapter/)."""
    if not config.save_merged:
        trainer.save_model(str(output_dir))
        return
    adapter_dir = output_dir / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))
    if config.process_index == 0:
        revision = config.model_revision if config.student_kind == "pretrained" else None
        students.merge_lora_adapter(model_path, adapter_dir, output_dir, config, revision)
        trainer.processing_class.save_pretrained(output_dir)


def _student_run(
    config, trainer, data: TrainingData, source, hard_labels, metadata, checkpoint, metrics
) -> StudentRun:
    state = trainer.state
    return StudentRun(
        method="sft",
        student={
            "kind": config.student_kind,
            "source": source,
            "revision": config.model_revision,
            "peft": _lora_summary(config),
            "merged": config.save_merged,
        },
        model_config=trainer.model.config,
        train_tokens=trainer.token_counter.supervised,
        tokens_processed=trainer.token_counter.processed,
        mean_sequence_length=data.report.tokens / data.report.sequences,
        loss_history=[
            {"step": log["step"], "epoch": log["epoch"], "loss": log["loss"]}
            for log in state.log_history
            if "loss" in log
        ],
        config=config,
        dataset=config.dataset_name,
        dataset_metadata=metadata,
        tokenizer_fingerprint=tokenizer_fingerprint(trainer.processing_class),
        teacher_generated_tokens=sum(hard_labels["prompt_tokens"]) + sum(hard_labels["completion_tokens"]),
        training={
            "global_step": state.global_step,
            "epochs": state.epoch,
            "resumed_from_step": _step_of(checkpoint),
            "runtime_seconds": metrics["train_runtime"],  # this launch's training loop
            "processes": config.world_size,
            "train_batch_size": config.per_device_train_batch_size
            * config.gradient_accumulation_steps
            * config.world_size,
        },
        details={"data": data.report.to_dict(), "truncated": config.truncated},
    )


def _lora_summary(config: DistillabSFTConfig) -> dict[str, Any] | None:
    if not config.use_peft:
        return None
    return {
        "r": config.lora_r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": config.lora_target_modules or "all-linear",
    }


def _cleanup(config: DistillabSFTConfig, output_dir: Path) -> None:
    """Drop the fresh/pruned initial weights unless a LoRA adapter at the top still needs them as its base."""
    if not config.use_peft or config.save_merged:
        shutil.rmtree(output_dir / INIT_DIR, ignore_errors=True)


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


def _say(config: DistillabSFTConfig, message: str, method: TrainingMethod) -> None:
    if config.process_index == 0:
        print(f"{method.name}: {message}", flush=True)
