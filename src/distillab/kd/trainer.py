"""The SFT trainer with the KD loss (`distillab.kd.losses.kd_loss`) in place of next-token cross-entropy.

Everything else is the SFT trainer's: logging, checkpointing, resume, D counting. Targets come from the batch
(offline: the stored top-k and, when stored, its tail mass, `SoftLabelCollator`) or from a frozen teacher run
on the same batch (online: dense logits, chunked inside the loss). The loss is normalised like SFT's: summed
over the supervised tokens and divided by their count over the whole (accumulated, all-process) batch, so an
SFT and a KD run weigh tokens alike. The KD, NTP and z-loss terms are logged as `kd`, `ntp` and `z` (per-token means).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutput

from distillab.data.chat import IGNORE_INDEX
from distillab.data.run_record import TeacherPass
from distillab.data.softlabels import PAD_ID
from distillab.errors import DataError
from distillab.kd.losses import KDLossConfig, KDLossOutput, kd_loss
from distillab.kd.soft_labels import (
    TEACHER_COLUMNS,
    TOPK_IDS,
    TOPK_LOG_TAIL,
    TOPK_LOGPROBS,
    SoftLabelCollator,
)
from distillab.lmhead import supervised_logits
from distillab.sft import DistillabSFTTrainer

LOGGED_TERMS = ("kd", "ntp", "z")


class DistillabKDTrainer(DistillabSFTTrainer):
    """KD on the SFT trainer: `teacher_model` None reads stored top-k targets from the batch, else distils it
    (`teacher` names it, for the run record)."""

    method = "kd"
    logged_keys = (*DistillabSFTTrainer.logged_keys, *LOGGED_TERMS)

    def __init__(
        self,
        *args,
        loss_config: KDLossConfig,
        teacher_model=None,
        teacher: TeacherPass | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.teacher = teacher
        if teacher_model is None:
            self.teacher_model = None
            self.data_collator = SoftLabelCollator(self.data_collator)
        else:
            self.teacher_model = self._prepare_teacher(teacher_model)

    def run_fields(self) -> dict[str, Any]:
        """The SFT fields, plus (online) the teacher's scoring: its forward ran on every token the student
        processed."""
        fields = super().run_fields()
        if self.teacher_model is not None:
            fields["scoring"] = dataclasses.replace(self.teacher, tokens=self.token_counter.processed)
        return fields

    def _prepare_teacher(self, teacher):
        """Frozen, in eval mode; sharded like the student under ZeRO-3 (as TRL prepares teachers)."""
        from trl.models import prepare_deepspeed

        teacher.eval().requires_grad_(False)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, *TEACHER_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", *TEACHER_COLUMNS)}
        logits, labels, positions = supervised_logits(model, model_inputs, inputs["labels"], return_outputs)
        result = kd_loss(
            logits,
            labels,
            **self._targets(inputs, model_inputs, labels, positions),
            config=self.loss_config,
            reduction="sum",
        )
        tokens = result.n_tokens if num_items_in_batch is None else num_items_in_batch
        loss = result.loss / torch.as_tensor(tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (
                self.accelerator.num_processes // self.get_tp_size()
            )  # as SFTTrainer: DDP averages
        self._log_terms(result)
        return (loss, CausalLMOutput(loss=loss, logits=logits)) if return_outputs else loss

    def _targets(self, inputs, model_inputs, labels, positions) -> dict[str, torch.Tensor]:
        """The teacher's targets at the kept `positions` (those of the student's logits and `labels`)."""
        if self.teacher_model is not None:
            with torch.no_grad():
                teacher = self.teacher_model(**model_inputs, use_cache=False, logits_to_keep=positions)
                return {"teacher_logits": teacher.logits}
        ids = inputs[TOPK_IDS][:, positions]
        if ((labels != IGNORE_INDEX) & (ids[..., 0] == PAD_ID)).any():
            raise DataError(
                "a supervised token of the batch has no stored soft labels: the soft labels are misaligned"
            )
        log_tail = inputs.get(TOPK_LOG_TAIL)
        return {
            "teacher_topk_ids": ids,
            "teacher_topk_logprobs": inputs[TOPK_LOGPROBS][:, positions],
            "teacher_topk_log_tail": None if log_tail is None else log_tail[:, positions],
        }

    def _log_terms(self, result: KDLossOutput) -> None:
        """Per-token means of the loss terms over every process, averaged per logging step by `SFTTrainer.log`."""
        sums = torch.stack([result.kd, result.ntp, result.z, result.n_tokens.to(result.kd.dtype)])
        *terms, count = self.accelerator.reduce(sums, reduction="sum").tolist()
        if count:
            mode = "train" if self.model.training else "eval"
            for name, value in zip(LOGGED_TERMS, terms, strict=True):
                self._metrics[mode][name].append(value / count)
