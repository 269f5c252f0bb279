"""`distillab kd`: a hard-label dataset with soft labels (or a live teacher) -> a student run folder.

The orchestration is SFT's (`distillab.sft.train.train_student`: run folder, resume, save, record) with the
same training sequences, so a KD and an SFT student of the same dataset and config are a matched pair (same
tokens, same order, same D). KD adds, before anything is tokenised or written: the check that the student
shares the teacher's tokenizer and vocabulary; offline, the stored soft labels attached to each sequence
(`SoftLabelAttacher`); online, the teacher model. The run record says method "kd", with the KD settings under
`details.kd`, and counts the teacher's scoring in FLOPs (offline: the tokens `distillab label` scored; online:
every token the teacher ran on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillab.errors import ConfigError, first_line
from distillab.kd.config import DistillabKDConfig
from distillab.kd.soft_labels import SoftLabelAttacher, check_same_vocabulary, soft_label_metadata
from distillab.kd.trainer import LOGGED_TERMS, DistillabKDTrainer
from distillab.sft import students
from distillab.sft.train import TrainingMethod, train_student


def train_kd(config: DistillabKDConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Run (or resume, or skip when complete) a KD job; returns the run folder."""
    return train_student(config, callbacks, KnowledgeDistillation())


class KnowledgeDistillation(TrainingMethod):
    """The KD additions to `train_student` (module docstring); `check_inputs` resolves the teacher's side."""

    name = "kd"
    trainer_class = DistillabKDTrainer

    def __init__(self):
        self.attach: SoftLabelAttacher | None = None
        self.soft_labels: dict[str, Any] | None = None
        self.teacher: str | None = None

    def check_inputs(self, config: DistillabKDConfig, hard_labels, metadata, tokenizer) -> None:
        vocab_size = _vocab_size(students.student_source(config, metadata), config.model_revision, config)
        if config.teacher_mode == "online":
            self._check_teacher(config, metadata, tokenizer, vocab_size)
            return
        soft = soft_label_metadata(config.dataset_name, metadata, hard_labels.column_names)
        check_same_vocabulary(
            tokenizer,
            vocab_size,
            soft["tokenizer_fingerprint"],
            soft["vocab_size"],
            "the soft labels' teacher",
        )
        if config.top_k is not None and config.top_k > soft["k"]:
            raise ConfigError(
                f"--top_k {config.top_k} is more than the {soft['k']} soft labels stored per position"
            )
        self.soft_labels = soft
        self.attach = SoftLabelAttacher(
            hard_labels,
            vocab_size=vocab_size,
            top_k=config.top_k or soft["k"],
            logprob_dtype=soft.get("logprob_dtype", "float32"),
        )

    def _check_teacher(self, config: DistillabKDConfig, metadata, tokenizer, vocab_size: int) -> None:
        from transformers import AutoTokenizer

        from distillab.data.tokenizers import tokenizer_fingerprint

        self.teacher = config.teacher or ((metadata or {}).get("teacher") or {}).get("model")
        if not self.teacher:
            raise ConfigError(
                "--teacher_mode online needs --teacher: the dataset's metadata does not name its teacher"
            )
        try:
            teacher_tokenizer = AutoTokenizer.from_pretrained(
                self.teacher, revision=config.teacher_revision, trust_remote_code=config.trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot load the teacher's tokenizer from {self.teacher!r}: {first_line(err)}"
            ) from None
        check_same_vocabulary(
            tokenizer,
            vocab_size,
            tokenizer_fingerprint(teacher_tokenizer),
            _vocab_size(self.teacher, config.teacher_revision, config),
            f"the teacher's ({self.teacher})",
        )

    def trainer_kwargs(self, config: DistillabKDConfig) -> dict[str, Any]:
        teacher = None if self.teacher is None else _load_teacher(self.teacher, config)
        return {"loss_config": config.loss_config(), "teacher_model": teacher}

    def run_fields(self, config: DistillabKDConfig, trainer, metadata) -> dict[str, Any]:
        soft = self.soft_labels
        settings = {
            **config.kd_settings(),
            "teacher": self.teacher or (metadata or {}).get("teacher", {}).get("model"),
        }
        if soft is not None:
            settings["top_k"] = self.attach.top_k
            settings["soft_labels"] = {
                key: soft.get(key) for key in ("k", "engine", "logprob_dtype", "scored_tokens")
            }
        return {
            # offline: the teacher scored the dataset once (distillab label); online: every token trained on
            "teacher_scored_tokens": soft["scored_tokens"] if soft else trainer.token_counter.processed,
            "loss_history": [
                {key: log[key] for key in ("step", "epoch", "loss", *LOGGED_TERMS) if key in log}
                for log in trainer.state.log_history
                if "loss" in log
            ],
            "details": {"kd": settings},
        }


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
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    try:
        return AutoModelForCausalLM.from_pretrained(
            teacher, revision=config.teacher_revision, dtype=dtype, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the teacher from {teacher!r}: {first_line(err)}") from None
