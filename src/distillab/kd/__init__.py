"""Soft-label knowledge distillation: a student trained on the teacher's distributions over the same tokens as SFT.

`python -m distillab.kd --config recipe.yaml`, also under `accelerate launch -m distillab.kd` (1 process, DDP,
DeepSpeed ZeRO-3). Offline mode reads the top-k soft labels stored by `distillab label`; online mode runs the
teacher beside the student and distils its full distributions. Both train on exactly SFT's sequences (cut,
shuffled and packed alike: the soft labels travel with their tokens), so an SFT and a KD student of one
dataset and config are a matched pair.
"""

from __future__ import annotations

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config
    from distillab.kd.config import DistillabKDConfig
    from distillab.kd.train import train_kd

    train_kd(parse_config(DistillabKDConfig, argv))
