"""`distillab sft` configuration: TRL's `SFTConfig` plus the dataset, student and LoRA fields.

Every field is a YAML key of the recipe and a CLI flag (`--learning_rate 1e-3`). Defaults that differ from TRL:
on a machine without a GPU, bf16 and gradient checkpointing are off and the launch mode is picked for the CPU
(see `apply_cpu_defaults`); checkpoints every 250 steps, two kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from distillab.configs import config_fingerprint, config_to_dict, model_reference
from distillab.errors import ConfigError

STUDENT_KINDS = ("pretrained", "fresh", "pruned")
TRUNCATED_POLICIES = ("keep", "drop")
# Fields that say where a run is written, how it is logged, checkpointed, evaluated or launched: the trained
# weights do not depend on them, so they stay out of the config fingerprint (every other field is in it).
RUN_ONLY_FIELDS = frozenset(
    {
        "output_dir",
        "overwrite",
        "run_name",
        "project",
        "report_to",
        "disable_tqdm",
        "resume_from_checkpoint",
        "local_rank",
        "use_cpu",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
        "torch_empty_cache_steps",
        "skip_memory_metrics",
        "debug",
        "deepspeed",
        "fsdp",
        "fsdp_config",
        "accelerator_config",
        "parallelism_config",
        "dataset_num_proc",
        "do_train",
        "do_eval",
        "do_predict",
        "per_device_eval_batch_size",
        "prediction_loss_only",
        "include_for_metrics",
        "batch_eval_metrics",
        "load_best_model_at_end",
        "metric_for_best_model",
        "greater_is_better",
        "enable_jit_checkpoint",
        "restore_callback_states_from_checkpoint",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "dataloader_multiprocessing_context",
    }
)
RUN_ONLY_PREFIXES = ("logging_", "log_", "save_", "eval_", "hub_", "push_to_hub", "trackio_", "ddp_")


@dataclass
class DistillabSFTConfig(SFTConfig):
    # Hard-label data
    dataset_name: str = field(
        default="",
        metadata={
            "help": "The hard-label dataset: a `distillab generate` output folder or a Hub dataset id."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read (Hub datasets)."})
    truncated: str = field(
        default="keep",
        metadata={
            "help": "Rows the teacher did not finish (finish_reason=length): keep = train on the cut completion "
            "without the end-of-turn token (the student is not taught to stop there); drop = leave them out.",
            "choices": list(TRUNCATED_POLICIES),
        },
    )

    train_on: str = field(
        default="completion",
        metadata={
            "help": "completion: the teacher's turn (hard-label distillation, method sft); reference: the "
            "dataset's `reference` answers on the same prompts (a supervised baseline, method supervised).",
            "choices": ["completion", "reference"],
        },
    )
    train_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Train on about this many supervised tokens D (to within one step), whatever the dataset "
            "size: the number of steps follows from the tokens of one epoch (students at matched D)."
        },
    )

    # Student
    student_kind: str = field(
        default="pretrained",
        metadata={
            "help": "pretrained: train --model_name_or_path as is; fresh: a new model shaped like the teacher "
            "(sizes below), using the teacher's tokenizer; pruned: a copy of the teacher keeping some layers.",
            "choices": list(STUDENT_KINDS),
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "pretrained: the student (Hub id or local folder). fresh/pruned: the model to copy the "
            "architecture, tokenizer (and, pruned, weights) from; default: the dataset's teacher."
        },
    )
    model_revision: str | None = field(default=None, metadata={"help": "Revision of --model_name_or_path."})
    student_preset: str | None = field(
        default=None, metadata={"help": "fresh: a size preset (see distillab.sft.students.PRESETS)."}
    )
    student_num_layers: int | None = field(default=None, metadata={"help": "fresh: number of layers."})
    student_hidden_size: int | None = field(default=None, metadata={"help": "fresh: hidden size."})
    student_num_heads: int | None = field(default=None, metadata={"help": "fresh: attention heads."})
    student_num_kv_heads: int | None = field(
        default=None, metadata={"help": "fresh: key/value heads (default: the number of attention heads)."}
    )
    student_intermediate_size: int | None = field(
        default=None, metadata={"help": "fresh: MLP width (default: the teacher's MLP/hidden ratio)."}
    )
    prune_keep_every: int | None = field(
        default=None, metadata={"help": "pruned: keep layers 0, k, 2k, ... of the teacher."}
    )
    prune_keep_first: int = field(default=0, metadata={"help": "pruned: keep the first n layers."})
    prune_keep_last: int = field(
        default=0, metadata={"help": "pruned: keep the last n layers (with --prune_keep_first)."}
    )

    # LoRA (peft)
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers but the LM head)."}
    )
    save_merged: bool = field(
        default=False,
        metadata={
            "help": "LoRA: save the merged model at the top of the run folder (the adapter goes to adapter/)."
        },
    )

    # Run folder
    overwrite: bool = field(
        default=False, metadata={"help": "Delete output_dir and start over instead of resuming or skipping."}
    )

    # TRL/transformers defaults that differ here
    output_dir: str | None = field(default="outputs/sft", metadata={"help": "The student run folder."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on with a GPU, off on CPU (fp32)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing; default: on with a GPU, off on CPU."}
    )
    save_steps: float = field(
        default=250, metadata={"help": "Save a checkpoint every N steps (resume point)."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept in output_dir."})

    def __post_init__(self) -> None:
        self._validate_distillab_fields()
        self.model_name_or_path = self.model_name_or_path and model_reference(self.model_name_or_path)
        apply_cpu_defaults(self)
        super().__post_init__()
        # distillab tokenises, masks, cuts and packs itself (distillab.sft.data): TRL takes the sequences as is.
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}

    def fingerprint(self) -> str:
        """Hash of every field that changes the trained weights (`RUN_ONLY_FIELDS` aside); a relaunch into
        the same run folder must match it."""
        return config_fingerprint(
            {name: value for name, value in config_to_dict(self).items() if not _run_only(name)}
        )

    def _validate_distillab_fields(self) -> None:
        if not self.dataset_name:
            raise ConfigError(
                "--dataset_name is required: a distillab generate output folder or a Hub dataset id"
            )
        if self.student_kind == "pretrained" and not self.model_name_or_path:
            raise ConfigError("--student_kind pretrained needs --model_name_or_path (Hub id or local folder)")
        if self.student_kind == "pruned" and not (
            self.prune_keep_every or self.prune_keep_first or self.prune_keep_last
        ):
            raise ConfigError(
                "--student_kind pruned needs --prune_keep_every k or --prune_keep_first/--prune_keep_last n"
            )
        if self.prune_keep_every is not None and (self.prune_keep_first or self.prune_keep_last):
            raise ConfigError(
                "give either --prune_keep_every or --prune_keep_first/--prune_keep_last, not both"
            )
        for name in ("prune_keep_every", "student_num_layers", "student_hidden_size", "student_num_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        if self.train_on not in ("completion", "reference"):
            raise ConfigError(f"--train_on must be completion or reference, got {self.train_on!r}")
        if self.train_tokens is not None and self.train_tokens < 1:
            raise ConfigError(f"--train_tokens must be >= 1, got {self.train_tokens}")
        if self.prune_keep_first < 0 or self.prune_keep_last < 0:
            raise ConfigError("--prune_keep_first and --prune_keep_last must be >= 0")
        if self.completion_only_loss is False or self.assistant_only_loss:
            raise ConfigError(
                "distillab sft always trains on the teacher's completion only (prompt masked): leave "
                "completion_only_loss and assistant_only_loss unset"
            )
        if self.chat_template_path and Path(self.chat_template_path).suffix not in {".jinja", ".j2"}:
            raise ConfigError(
                f"--chat_template_path must be a .jinja file, got {self.chat_template_path!r} "
                "(to borrow another tokenizer's template, save its chat_template to a .jinja file)"
            )
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"--max_length must be >= 2, got {self.max_length}")
        if self.packing and self.max_length is None:
            raise ConfigError("--packing needs --max_length (the length of a packed sequence)")
        if self.save_merged and not self.use_peft:
            raise ConfigError("--save_merged only applies to LoRA runs (--use_peft)")


def apply_cpu_defaults(config: DistillabSFTConfig) -> None:
    """Resolve the device-dependent defaults, so that CPU runs work without knowing TRL's GPU defaults.

    With a GPU (any torch accelerator) TRL's defaults stay: bf16 unless fp16, gradient checkpointing on.
    Without one, both are off (bf16 is slow on CPUs, checkpointing only saves memory). A multi-process launch
    needs a CPU backend: DeepSpeed gets `ddp_backend=gloo`; every other launch runs with `use_cpu`, which makes
    accelerate's `--multi_gpu --num_processes N` a DDP over gloo. (With neither, each process would train alone.)
    """
    import torch

    if torch.accelerator.is_available() and not config.use_cpu:
        config.bf16 = not config.fp16 if config.bf16 is None else config.bf16
        config.gradient_checkpointing = (
            True if config.gradient_checkpointing is None else config.gradient_checkpointing
        )
        return
    config.bf16 = bool(config.bf16)
    config.gradient_checkpointing = bool(config.gradient_checkpointing)
    if _launched_with_deepspeed(config):
        config.ddp_backend = config.ddp_backend or "gloo"
    else:
        config.use_cpu = True


def _run_only(name: str) -> bool:
    return name in RUN_ONLY_FIELDS or name.startswith(RUN_ONLY_PREFIXES)


def _launched_with_deepspeed(config: DistillabSFTConfig) -> bool:
    return bool(config.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
