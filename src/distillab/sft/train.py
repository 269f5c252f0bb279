"""`distillab sft`: a hard-label dataset -> a student run folder, through TRL's SFTTrainer.

Order of work: check every input (output_dir, dataset, tokenizer, chat template, max_length) before the run
folder is touched; build the student (written atomically); record the run as started (complete: false, with
the config fingerprint); train, resuming from the newest complete checkpoint in output_dir when there is one;
save model + tokenizer; write the card and the complete record. Relaunching a finished run does nothing;
relaunching an interrupted one resumes it; relaunching either with another config is an error (--overwrite
starts over).

`train_student` is four steps that other training methods (`distillab.kd`) call with their own checks in
between: `run_is_complete`, `load_student_inputs`, `prepare_training_data` (optionally attaching per-token
columns), `run_training` (with a trainer class, its arguments and extra run-record fields).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillab.configs import save_resolved_config
from distillab.data.hardlabels import METADATA_NAME, load_hard_labels, read_metadata
from distillab.data.run_record import (
    StudentRun,
    TeacherPass,
    finish_run,
    mark_run_started,
    read_run_record,
)
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.errors import ConfigError, DataError
from distillab.fileio import atomic_directory, check_output_dir, read_json
from distillab.modelfiles import check_model_files
from distillab.sft import students
from distillab.sft.config import DistillabSFTConfig
from distillab.sft.data import DataOptions, TrainingData, build_training_data, with_reference_answers
from distillab.sft.trainer import DistillabSFTTrainer, SupervisedSFTTrainer

INIT_DIR = "student_init"
ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class StudentInputs:
    """What a student run starts from: the hard-label rows, their distillab.json, the student and its tokenizer."""

    hard_labels: Any  # datasets.Dataset
    metadata: dict[str, Any] | None
    source: str  # the student's model (pretrained) or the model it is built from (fresh, pruned)
    tokenizer: Any


def train_student(config: DistillabSFTConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Run (or resume, or skip when complete) an SFT job (supervised with `--train_on reference`); returns the
    run folder."""
    trainer_class = SupervisedSFTTrainer if config.train_on == "reference" else DistillabSFTTrainer
    if run_is_complete(config, trainer_class.method):
        return Path(config.output_dir)
    inputs = load_student_inputs(config)
    data = prepare_training_data(config, inputs)
    return run_training(config, inputs, data, trainer_class, callbacks=callbacks)


def run_is_complete(config: DistillabSFTConfig, method: str) -> bool:
    """True (and says so) when output_dir holds a complete run of this config that --overwrite does not ask to
    redo. An output_dir that is not a writable folder, or holds a run of another config, is a `ConfigError`."""
    check_output_dir(config.output_dir)
    record = None if config.overwrite else read_run_record(config.output_dir)
    if record is None:
        return False
    if record.get("config_fingerprint") != config.fingerprint():
        raise ConfigError(
            f"output_dir {config.output_dir} holds a {record.get('method')} run with a different config; pass "
            "--overwrite to replace it or choose another --output_dir"
        )
    if record.get("complete"):
        _say(
            config,
            method,
            f"{config.output_dir} is already a complete run; nothing to do (--overwrite to start over)",
        )
        return True
    return False


def load_student_inputs(config: DistillabSFTConfig) -> StudentInputs:
    """The hard labels (their reference answers with `--train_on reference`), their metadata, and the student's
    source and tokenizer (checks the chat template, and the source's weights unless the student is fresh)."""
    hard_labels = load_hard_labels(config.dataset_name, split=config.dataset_split)
    if config.train_on == "reference":
        hard_labels = with_reference_answers(hard_labels)
    metadata = dataset_metadata(config.dataset_name)
    source = students.student_source(config, metadata)
    tokenizer = students.load_student_tokenizer(
        source, config.model_revision, config.chat_template_path, config.trust_remote_code
    )
    if config.student_kind != "fresh":
        check_model_files(source)
    return StudentInputs(hard_labels, metadata, source, tokenizer)


def prepare_training_data(
    config: DistillabSFTConfig, inputs: StudentInputs, attach: Callable[[Any], Any] | None = None
) -> TrainingData:
    """The tokenised, cut, shuffled and packed training sequences and their token counts (`data.report`).

    `attach` adds per-token columns to the tokenised rows, which are then cut and packed with the tokens (KD
    attaches its soft labels; see `build_training_data`).
    """
    with config.main_process_first(desc="tokenizing the hard labels"):
        return build_training_data(
            inputs.hard_labels, inputs.tokenizer, DataOptions.from_config(config), attach=attach
        )


def run_training(
    config: DistillabSFTConfig,
    inputs: StudentInputs,
    data: TrainingData,
    trainer_class: type[DistillabSFTTrainer] = DistillabSFTTrainer,
    *,
    trainer_kwargs: dict[str, Any] | None = None,
    record_fields: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
) -> Path:
    """Train a student on `data` with `trainer_class` (and its `trainer_kwargs`) and write the run folder.

    Marks the run started, builds and loads the student, trains (resuming from the last checkpoint in
    output_dir), saves model + tokenizer, then writes the card and the complete record: the shared fields, the
    trainer's own (`trainer.run_fields()`: method, token counts, loss history) and `record_fields` (extra
    `StudentRun` fields; their `details` join the shared ones). Returns the run folder.
    """
    method = trainer_class.method
    _say(config, method, f"data: {data.report.summary()}")
    output_dir = Path(config.output_dir)
    _prepare_output_dir(config, output_dir, method)
    if config.train_tokens:  # after the run is marked started: its fingerprint is the one of the command
        config.max_steps = steps_for_tokens(config, data)
        _say(config, method, f"{config.max_steps} steps for about {config.train_tokens:,} supervised tokens")
    model_path = _student_weights(config, inputs.source, inputs.tokenizer, output_dir)
    model = students.load_student(
        model_path, config, revision=config.model_revision if model_path == inputs.source else None
    )
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=data.dataset,
        processing_class=inputs.tokenizer,
        peft_config=students.lora_config(config),
        callbacks=list(callbacks),
        **(trainer_kwargs or {}),
    )
    checkpoint = _last_checkpoint(output_dir)
    if checkpoint:
        _say(config, method, f"resuming from {checkpoint}")
    result = trainer.train(resume_from_checkpoint=checkpoint)
    _save_student(trainer, config, model_path, output_dir)
    if config.process_index == 0:
        run = _student_run(config, inputs, data, trainer, checkpoint, result.metrics, record_fields or {})
        finish_run(output_dir, run)
        _cleanup(config, output_dir)
        _say(config, method, f"wrote the student run folder {output_dir}")
    config.distributed_state.wait_for_everyone()
    return output_dir


def steps_for_tokens(config: DistillabSFTConfig, data: TrainingData) -> int:
    """The optimizer steps that train on about `config.train_tokens` supervised tokens: an epoch has
    ceil(sequences / global batch) steps and `data.report.supervised_tokens` tokens."""
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.world_size
    steps_per_epoch = -(-data.report.sequences // batch)
    return max(1, round(config.train_tokens / data.report.supervised_tokens * steps_per_epoch))


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
        if config.process_index == 0 and not directory.is_dir():
            with atomic_directory(directory) as staging:  # a kill mid-write leaves no half-written student
                students.materialize_student(config, source, tokenizer, staging)
    return str(directory)


def _last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint: the trainer writes its trainer_state.json last, so a checkpoint whose
    write was interrupted has none (or a truncated one) and is skipped."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    checkpoints = sorted(
        (path for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if _step_of(path.name) is not None),
        key=lambda path: _step_of(path.name),
        reverse=True,
    )
    return next((str(path) for path in checkpoints if _is_complete_checkpoint(path)), None)


def _is_complete_checkpoint(path: Path) -> bool:
    from transformers.trainer import TRAINER_STATE_NAME

    try:
        read_json(path / TRAINER_STATE_NAME)
    except (OSError, DataError):
        return False
    return True


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
    config, inputs: StudentInputs, data: TrainingData, trainer, checkpoint, metrics, record_fields
) -> StudentRun:
    fields = {**trainer.run_fields(), **record_fields}
    details = {"data": data.report.to_dict(), "truncated": config.truncated, **fields.pop("details", {})}
    state = trainer.state
    return StudentRun(
        student={
            "kind": config.student_kind,
            "source": inputs.source,
            "revision": config.model_revision,
            "peft": _lora_summary(config),
            "merged": config.save_merged,
        },
        model_config=trainer.model.config,
        mean_sequence_length=data.report.tokens / data.report.sequences,
        config=config,
        dataset=config.dataset_name,
        dataset_metadata=inputs.metadata,
        tokenizer_fingerprint=tokenizer_fingerprint(trainer.processing_class),
        generation=None if config.train_on == "reference" else _generation(inputs),
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
        details=details,
        **fields,
    )


def _generation(inputs: StudentInputs) -> TeacherPass | None:
    """The dataset's teacher generating every row (prompt + completion tokens); None when it is not named."""
    teacher = (inputs.metadata or {}).get("teacher") or {}
    if not teacher.get("model"):
        return None
    rows = inputs.hard_labels
    tokens = sum(rows["prompt_tokens"]) + sum(rows["completion_tokens"])
    return TeacherPass(teacher["model"], teacher.get("revision"), tokens, tokens / max(len(rows), 1))


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
    step = checkpoint.rsplit("-", 1)[-1] if checkpoint else ""
    return int(step) if step.isdigit() else None


def _say(config: DistillabSFTConfig, method: str, message: str) -> None:
    if config.process_index == 0:
        print(f"{method}: {message}", flush=True)
