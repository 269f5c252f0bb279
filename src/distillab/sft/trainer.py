"""TRL's SFTTrainer on distillab's pre-tokenised sequences, counting the tokens it actually trains on.

D (the supervised tokens trained on, docs/architecture.md) is counted from the batches themselves: the label
positions that enter the loss (`labels[..., 1:] != -100`, the causal shift), summed over processes and
micro-batches, so partial epochs, `max_steps` and packing boundaries are all accounted for. The count travels
in every checkpoint (`ExportableState`), so a resumed run reports the same D as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import SFTTrainer

from distillab.data.chat import IGNORE_INDEX


class TrainedTokenCounter(TrainerCallback, ExportableState):
    """Supervised tokens (D) and all tokens processed, over every process; restored on resume."""

    def __init__(self, supervised: int = 0, processed: int = 0):
        self.supervised = supervised
        self.processed = processed

    def count(self, accelerator, inputs: dict[str, torch.Tensor]) -> None:
        labels = inputs["labels"]
        supervised = (labels[..., 1:] != IGNORE_INDEX).sum()
        mask = inputs.get("attention_mask")
        processed = mask.sum() if mask is not None else torch.tensor(labels.numel(), device=labels.device)
        total = accelerator.reduce(torch.stack([supervised, processed]), reduction="sum")
        self.supervised += int(total[0])
        self.processed += int(total[1])

    def state(self) -> dict:
        return {"args": {}, "attributes": {"supervised": self.supervised, "processed": self.processed}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, dict):  # a resumed run: the counts of its checkpoint
            self.supervised = saved["attributes"]["supervised"]
            self.processed = saved["attributes"]["processed"]


class DistillabSFTTrainer(SFTTrainer):
    """SFTTrainer that counts the tokens it trains on (`self.token_counter`). KD subclasses it."""

    method = "sft"  # the run record's method
    logged_keys: tuple[str, ...] = ("step", "epoch", "loss")  # of each loss-history entry in the run record

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_counter = TrainedTokenCounter()
        self.add_callback(self.token_counter)

    def run_fields(self) -> dict[str, Any]:
        """This trainer's fields of the run record (`StudentRun`): method, D, tokens processed, loss history."""
        return {
            "method": self.method,
            "train_tokens": self.token_counter.supervised,
            "tokens_processed": self.token_counter.processed,
            "loss_history": [
                {key: log[key] for key in self.logged_keys if key in log}
                for log in self.state.log_history
                if "loss" in log
            ],
        }

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.token_counter.count(self.accelerator, inputs)
        return super().training_step(model, inputs, num_items_in_batch)


class SupervisedSFTTrainer(DistillabSFTTrainer):
    """SFT on reference answers (`--train_on reference`): the supervised baseline, recorded as such."""

    method = "supervised"
