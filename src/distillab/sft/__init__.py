"""Students: hard-label SFT (TRL's SFTTrainer) and, built on the same data pipeline, soft-label KD.

`python -m distillab.sft --config recipe.yaml`, also under `accelerate launch -m distillab.sft`.
"""

from __future__ import annotations

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config
    from distillab.sft.config import DistillabSFTConfig
    from distillab.sft.train import train_student

    train_student(parse_config(DistillabSFTConfig, argv))
