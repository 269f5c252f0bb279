"""TRL's SFTTrainer on distillab's pre-tokenised sequences, counting the tokens it actually trains on.

D (the supervised tokens trained on, docs/architecture.md) is counted from the batches themselves: the label
positions that enter the loss (`labels[..., 1:] != -100`, the causal shift), summed over processes and
micro-batches, so partial epochs, `max_steps` and packing boundaries are all accounted for. The count travels
in every checkpoint (`ExportableState`), so a resumed run reports the same D as an uninterrupted one.

On CPU the loss is TRL's (next-token cross-entropy summed over the supervised tokens, divided by their count
over the accumulated batch) computed from the logits of the supervised positions only (`distillab.lmhead`):
TRL's fused LM head scores every position off Triton devices, and on a short answer after a long prompt the
prompt's positions are most of that work, for nothing. On GPUs (where TRL's head keeps only the supervised
positions) and for losses TRL builds otherwise (DFT, label smoothing, a custom loss function, a MoE auxiliary
loss, sequence or context parallelism) TRL's own `compute_loss` runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.modeling_outputs import CausalLMOutput
from transformers.trainer_callback import ExportableState
from trl import SFTTrainer

from distillab.data.chat import IGNORE_INDEX
from distillab.lmhead import supervised_logits


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._loss_needs_trl():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        logits, labels, _ = supervised_logits(model, model_inputs, inputs["labels"], return_outputs)
        wide = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> float32
        nll = F.cross_entropy(wide, labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        tokens = (labels != IGNORE_INDEX).sum() if num_items_in_batch is None else num_items_in_batch
        loss = nll / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as TRL: DDP averages
        self._log_token_metrics(logits.detach(), labels)
        return (loss, CausalLMOutput(loss=loss, logits=logits)) if return_outputs else loss

    def _loss_needs_trl(self) -> bool:
        """Whether TRL's `compute_loss` is the one to run: on an accelerator (its fused LM head there scores the
        supervised positions only, in tiles, without materialising logits), or for a loss other than
        cross-entropy on the supervised tokens."""
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        return (
            self.accelerator.device.type != "cpu"
            or self.args.loss_type != "nll"
            or self.label_smoother is not None
            or self.compute_loss_func is not None
            or self.aux_loss_enabled
            or (parallelism is not None and (parallelism.sp_enabled or parallelism.cp_enabled))
        )

    def _log_token_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """TRL's per-step metrics: entropy and top-1 accuracy on the supervised tokens, tokens processed."""
        mode = "train" if self.model.training else "eval"
        supervised = labels != IGNORE_INDEX
        logits, labels = logits[supervised].float(), labels[supervised]
        log_probs = torch.log_softmax(logits, dim=-1)
        sums = torch.stack(
            [
                -(log_probs.exp() * log_probs).sum(),
                (logits.argmax(dim=-1) == labels).sum().to(logits.dtype),
                torch.tensor(labels.numel(), dtype=logits.dtype, device=logits.device),
            ]
        )
        entropy, correct, count = self.accelerator.gather_for_metrics(sums[None]).sum(dim=0).tolist()
        self._metrics[mode]["entropy"].append(entropy / count if count else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append(correct / count if count else 0.0)
        self._metrics[mode]["num_tokens"] = [self.token_counter.processed]


class SupervisedSFTTrainer(DistillabSFTTrainer):
    """SFT on reference answers (`--train_on reference`): the supervised baseline, recorded as such."""

    method = "supervised"
