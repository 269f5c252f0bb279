"""`distillab kd` configuration: the SFT config (data, student, LoRA, TRL/transformers training fields) plus the
KD loss (`KDLossConfig`: divergence, temperature, lam, z_loss, tail, jsd_beta, chunk_size) and the teacher.

Defaults follow the paper's practice findings: forward KL, tau = 1, lam = 1 (pure KD), z-loss 1e-4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from distillab.configs import model_reference
from distillab.errors import ConfigError
from distillab.kd.losses import KDLossConfig
from distillab.sft import DistillabSFTConfig

TEACHER_MODES = ("offline", "online")


@dataclass
class DistillabKDConfig(DistillabSFTConfig, KDLossConfig):
    teacher_mode: str = field(
        default="offline",
        metadata={
            "help": "offline: the top-k soft labels stored in the dataset (`distillab label`); online: run "
            "--teacher beside the student and distil its full distributions.",
            "choices": list(TEACHER_MODES),
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={"help": "online: the teacher (Hub id or local folder); default: the dataset's teacher."},
    )
    teacher_revision: str | None = field(default=None, metadata={"help": "online: revision of --teacher."})
    soft_labels_k: int | None = field(
        default=None,
        metadata={
            "help": "offline: train on the soft_labels_k most likely of the stored soft-label slots (default: "
            "all k stored by `distillab label --soft_labels_k`)."
        },
    )
    output_dir: str | None = field(default="outputs/kd", metadata={"help": "The student run folder."})

    def __post_init__(self) -> None:
        if self.teacher_mode not in TEACHER_MODES:
            raise ConfigError(
                f"--teacher_mode must be one of {', '.join(TEACHER_MODES)}, got {self.teacher_mode!r}"
            )
        if self.teacher_mode == "offline" and (self.teacher or self.teacher_revision):
            raise ConfigError(
                "--teacher/--teacher_revision apply to --teacher_mode online (offline reads the dataset)"
            )
        if self.soft_labels_k is not None and self.teacher_mode == "online":
            raise ConfigError(
                "--soft_labels_k applies to --teacher_mode offline (the online teacher gives every logit)"
            )
        if self.train_on != "completion":
            raise ConfigError(
                "--train_on reference is sft's supervised baseline: kd learns the teacher's turn"
            )
        if self.soft_labels_k is not None and self.soft_labels_k < 1:
            raise ConfigError(f"--soft_labels_k must be >= 1, got {self.soft_labels_k}")
        if self.teacher_mode == "offline" and self.divergence == "reverse_kl" and self.tail == "renormalize":
            raise ConfigError(
                "--divergence reverse_kl with offline top-k soft labels needs --tail tail_bucket: the renormalised "
                "teacher is zero outside its top-k, so KL(student || teacher) is infinite"
            )
        self.loss_config()  # validates the KD fields
        self.teacher = self.teacher and model_reference(self.teacher)
        super().__post_init__()

    def loss_config(self) -> KDLossConfig:
        """The `KDLossConfig` of these fields."""
        try:
            return KDLossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(KDLossConfig)})
        except ValueError as err:
            raise ConfigError(f"--{err}") from None

    def kd_settings(self) -> dict:
        """The KD fields, as recorded in the run folder's details."""
        return {
            "teacher_mode": self.teacher_mode,
            **dataclasses.asdict(self.loss_config()),
            "soft_labels_k": self.soft_labels_k,
        }
