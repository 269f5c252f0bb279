"""Students: hard-label SFT on TRL's SFTTrainer.

`python -m distillab.sft --config recipe.yaml`, also under `accelerate launch -m distillab.sft`. The names below
are sft's public API, the one edge between stages (docs/architecture.md): kd is SFT with another trainer and
calls them in order, with its own checks in between.
"""

from __future__ import annotations

from distillab.errors import exit_on_user_error
from distillab.sft.config import DistillabSFTConfig
from distillab.sft.train import (
    StudentInputs,
    load_student_inputs,
    prepare_training_data,
    run_is_complete,
    run_training,
    train_student,
)
from distillab.sft.trainer import DistillabSFTTrainer

__all__ = [
    "DistillabSFTConfig",
    "DistillabSFTTrainer",
    "StudentInputs",
    "load_student_inputs",
    "main",
    "prepare_training_data",
    "run_is_complete",
    "run_training",
    "train_student",
]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config

    train_student(parse_config(DistillabSFTConfig, argv))
