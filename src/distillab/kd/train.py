"""`distillab kd`: a hard-label dataset with soft labels (or a live teacher) -> a student run folder.

KD runs SFT's steps (`distillab.sft.train`: load the inputs, prepare the training data, run training) with its
own checks in between, so a KD and an SFT student of the same dataset and config are a matched pair (same
tokens, same order, same D). Before anything is tokenised or written, KD checks that the student shares the
teacher's tokenizer and vocabulary, and offline that the dataset holds complete soft labels with enough slots;
offline, the stored soft labels are attached to each sequence (`SoftLabelAttacher`) and checked row by row;
online, the teacher model is loaded. It trains with `DistillabKDTrainer`. The run record says method "kd",
with the KD settings under `details.kd`, and counts the teacher's scoring in FLOPs (offline: the tokens
`distillab label` scored; online: every token the teacher ran on, counted by the trainer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillab.data.run_record import TeacherPass
from distillab.data.softlabels import SoftLabelFormat
from distillab.errors import ConfigError, first_line
from distillab.kd.config import DistillabKDConfig
from distillab.kd.soft_labels import SoftLabelAttacher, check_same_vocabulary, soft_label_metadata
from distillab.kd.trainer import DistillabKDTrainer
from distillab.modelfiles import load_causal_lm
from distillab.sft import (
    StudentInputs,
    load_student_inputs,
    prepare_training_data,
    run_is_complete,
    run_training,
)


def train_kd(config: DistillabKDConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Run (or resume, or skip when complete) a KD job; returns the run folder."""
    if run_is_complete(config, DistillabKDTrainer.method):
        return Path(config.output_dir)
    inputs = load_student_inputs(config)
    vocab_size = _vocab_size(inputs.source, config.model_revision, config)
    if config.teacher_mode == "online":
        teacher = _check_online_teacher(config, inputs, vocab_size)
        data = prepare_training_data(config, inputs)
        teacher_model = _load_teacher(teacher, config)
        # it runs on the student's sequences; the trainer counts its tokens
        scoring = TeacherPass(teacher, config.teacher_revision, 0, data.report.tokens / data.report.sequences)
        record_fields = {"details": {"kd": {**config.kd_settings(), "teacher": teacher}}}
    else:
        soft, soft_format = _check_soft_labels(config, inputs, vocab_size)
        soft_labels_k = config.soft_labels_k or soft["k"]
        attacher = SoftLabelAttacher(
            inputs.hard_labels, vocab_size=vocab_size, soft_labels_k=soft_labels_k, soft_format=soft_format
        )
        data = prepare_training_data(config, inputs, attach=attacher)
        teacher_model = None
        scoring = _soft_label_scoring(soft, inputs)
        settings = {
            **config.kd_settings(),
            "soft_labels_k": soft_labels_k,
            "teacher": scoring.model,
            "soft_labels": {
                key: soft.get(key)
                for key in ("k", "mass", "min_k", "engine", "logprob_dtype", "scored_tokens")
            }
            | {"format_version": soft_format.version},
        }
        record_fields = {"scoring": scoring, "details": {"kd": settings}}
    return run_training(
        config,
        inputs,
        data,
        DistillabKDTrainer,
        trainer_kwargs={
            "loss_config": config.loss_config(),
            "teacher_model": teacher_model,
            "teacher": scoring,
        },
        record_fields=record_fields,
        callbacks=callbacks,
    )


def _soft_label_scoring(soft: dict[str, Any], inputs: StudentInputs) -> TeacherPass:
    """`distillab label`'s teacher (the model that scored, from the soft-label metadata) running its forward
    once over every row's full stored sequence (prompt and completion)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(inputs.hard_labels.data.column("input_ids"))
    tokens = pc.sum(lengths).as_py() or 0
    return TeacherPass(soft["teacher"], soft.get("revision"), tokens, tokens / max(len(lengths), 1))


def _check_soft_labels(
    config: DistillabKDConfig, inputs: StudentInputs, vocab_size: int
) -> tuple[dict[str, Any], SoftLabelFormat]:
    """The dataset's soft-label metadata and format, once the student matches their teacher and --soft_labels_k
    fits them."""
    soft, soft_format = soft_label_metadata(
        config.dataset_name, inputs.metadata, inputs.hard_labels.data.schema
    )
    check_same_vocabulary(
        inputs.tokenizer,
        vocab_size,
        soft["tokenizer_fingerprint"],
        soft["vocab_size"],
        "the soft labels' teacher",
    )
    if config.soft_labels_k is not None and config.soft_labels_k > soft["k"]:
        raise ConfigError(
            f"--soft_labels_k {config.soft_labels_k} is more than the {soft['k']} soft labels stored per position"
        )
    return soft, soft_format


def _check_online_teacher(config: DistillabKDConfig, inputs: StudentInputs, vocab_size: int) -> str:
    """The online teacher (--teacher, else the dataset's), once the student matches its tokenizer and vocabulary."""
    from transformers import AutoTokenizer

    from distillab.data.tokenizers import tokenizer_fingerprint

    teacher = config.teacher or _dataset_teacher(inputs.metadata)
    if not teacher:
        raise ConfigError(
            "--teacher_mode online needs --teacher: the dataset's metadata does not name its teacher"
        )
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(
            teacher, revision=config.teacher_revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot load the teacher's tokenizer from {teacher!r}: {first_line(err)}"
        ) from None
    check_same_vocabulary(
        inputs.tokenizer,
        vocab_size,
        tokenizer_fingerprint(teacher_tokenizer),
        _vocab_size(teacher, config.teacher_revision, config),
        f"the teacher's ({teacher})",
    )
    return teacher


def _dataset_teacher(metadata: dict[str, Any] | None) -> str | None:
    return ((metadata or {}).get("teacher") or {}).get("model")


def _vocab_size(model: str, revision: str | None, config: DistillabKDConfig) -> int:
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(
            model, revision=revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the model config of {model!r}: {first_line(err)}") from None
    return model_config.get_text_config().vocab_size


def _load_teacher(teacher: str, config: DistillabKDConfig):
    """The online teacher, in the student's precision (bf16 runs: bf16; else float32)."""
    import torch

    return load_causal_lm(
        teacher,
        "the teacher",
        revision=config.teacher_revision,
        dtype=torch.bfloat16 if config.bf16 else torch.float32,
        trust_remote_code=config.trust_remote_code,
    )
