"""`distillab study` configuration: every field is a YAML key of the recipe and a CLI flag (`--workers 2`).

The grid: supervised students (sizes x budgets); teachers (supervised cells `size@budget`, or HF model folders);
hard and soft students (sizes x budgets, from the first teacher) plus one student size and budget distilled
from every teacher (the teacher-loss axis); soft_data students (KD on the teacher's distributions over the real
sequences). A budget is the student's supervised tokens D; a cell trains on the first D / (continuation + 1)
examples, one epoch, so every budget is a prefix of the larger ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from distillab.errors import ConfigError

SIZE_KEYS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size")
SIZE_TRAIN_KEYS = (
    "learning_rate",
)  # per-size training flags, after train_args (smaller models take larger steps)
GRID_FIELDS = (
    "supervised_sizes",
    "supervised_budgets",
    "teachers",
    "distill_sizes",
    "distill_budgets",
    "teacher_axis_size",
    "teacher_axis_budget",
    "soft_data_sizes",
    "soft_data_budgets",
)


@dataclass
class StudyConfig:
    # Output and execution
    output_dir: str = field(
        default="outputs/study",
        metadata={
            "help": "Study folder: corpus, teachers, cells, runs.csv, report. A finished cell is reused."
        },
    )
    quick: bool = field(
        default=False,
        metadata={
            "help": "Run the recipe's `quick_preset` (a tiny grid, same code path) instead of the full grid."
        },
    )
    quick_preset: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Fields that --quick replaces (flags given on the command line still win)."},
    )
    workers: int = field(
        default=1,
        metadata={"help": "Cells run in parallel processes; each gets cpu_count / workers threads."},
    )
    accelerate_config: str = field(
        default="accelerate_configs/cpu.yaml",
        metadata={"help": "`accelerate launch --config_file` of the sft/kd runs."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of every student's initialisation and data order."})

    # Corpus (CPython's stdlib sources; distillab.study.corpus)
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary (special tokens included)."})
    tokenizer_train_bytes: int = field(
        default=3_000_000, metadata={"help": "Bytes of train-split documents the BPE is trained on."}
    )
    prompt_tokens: int = field(default=24, metadata={"help": "Prompt = this many tokens of a document."})
    continuation_tokens: int = field(
        default=48, metadata={"help": "Reference = the next this many tokens (the real continuation)."}
    )
    windows_per_document: int = field(
        default=4, metadata={"help": "Examples cut from one document at most (consecutive windows)."}
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of documents held out (by a hash of their path)."}
    )
    eval_rows: int = field(
        default=256, metadata={"help": "Held-out examples every model's loss is measured on."}
    )

    # Students and grid
    sizes: dict[str, dict[str, int]] = field(
        default_factory=dict,
        metadata={
            "help": "Student sizes: name -> {num_layers, hidden_size, num_heads, num_kv_heads, "
            "intermediate_size, learning_rate} (fresh Llamas with the corpus tokenizer; learning_rate overrides "
            "train_args' for that size)."
        },
    )
    supervised_sizes: list[str] = field(default_factory=list, metadata={"help": "Supervised grid: sizes."})
    supervised_budgets: list[int] = field(
        default_factory=list, metadata={"help": "Supervised grid: token budgets D."}
    )
    teachers: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Teachers: `size@budget` (that supervised cell) or an HF model folder with the corpus "
            "tokenizer. The first one teaches the hard/soft/soft_data grids."
        },
    )
    distill_sizes: list[str] = field(default_factory=list, metadata={"help": "hard and soft grid: sizes."})
    distill_budgets: list[int] = field(
        default_factory=list, metadata={"help": "hard and soft grid: budgets."}
    )
    teacher_axis_size: str | None = field(
        default=None, metadata={"help": "hard and soft from every teacher: this student size ..."}
    )
    teacher_axis_budget: int | None = field(default=None, metadata={"help": "... at this budget."})
    soft_data_sizes: list[str] = field(default_factory=list, metadata={"help": "soft_data grid: sizes."})
    soft_data_budgets: list[int] = field(default_factory=list, metadata={"help": "soft_data grid: budgets."})

    # Stage settings
    train_args: list[str] = field(
        default_factory=list,
        metadata={"help": "Extra flags of every `sft`/`kd` run (learning rate, batch size, schedule ...)."},
    )
    soft_labels_k: int = field(default=32, metadata={"help": "Top-k soft labels stored per position."})
    generate_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Teacher continuation length cap (default: continuation_tokens, the real ones')."},
    )
    generate_batch_size: int = field(default=64, metadata={"help": "Prompts per teacher generate call."})
    eval_batch_size: int = field(
        default=32, metadata={"help": "Sequences per forward pass in evaluate/label."}
    )
    eval_group_size: int = field(
        default=8, metadata={"help": "Finished students measured per `distillab evaluate` call."}
    )

    # Analysis (distillab.study.analysis)
    holdout_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of runs (largest N*D) held out of every fit and predicted."}
    )
    bootstrap: int = field(default=200, metadata={"help": "Bootstrap resamples of the fitted coefficients."})

    def __post_init__(self) -> None:
        for name in (
            "workers",
            "eval_group_size",
            "vocab_size",
            "prompt_tokens",
            "continuation_tokens",
            "eval_rows",
            "soft_labels_k",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        unknown = set(self.quick_preset) - {f.name for f in dataclasses.fields(self)} | (
            set(self.quick_preset) & {"quick", "quick_preset"}
        )
        if unknown:
            raise ConfigError(f"quick_preset: unknown or unsupported field(s) {', '.join(sorted(unknown))}")

    def with_quick_preset(self, cli_fields: set[str]) -> StudyConfig:
        """The config --quick runs: `quick_preset` applied, except fields given on the command line."""
        preset = {k: v for k, v in self.quick_preset.items() if k not in cli_fields}
        return dataclasses.replace(self, **preset, quick=True)

    def validate_grid(self) -> None:
        """Every size a grid names is defined, budgets are positive, and the grid is not empty."""
        for name, shape in self.sizes.items():
            missing = [key for key in ("num_layers", "hidden_size", "num_heads") if key not in shape]
            extra = set(shape) - set(SIZE_KEYS) - set(SIZE_TRAIN_KEYS)
            if missing or extra:
                raise ConfigError(
                    f"sizes.{name}: needs num_layers, hidden_size, num_heads (and optionally num_kv_heads, "
                    f"intermediate_size, learning_rate); got {', '.join(shape) or 'nothing'}"
                )
        named = [*self.supervised_sizes, *self.distill_sizes, *self.soft_data_sizes]
        named += [self.teacher_axis_size] if self.teacher_axis_size else []
        named += [t.split("@")[0] for t in self.teachers if "@" in t]
        for size in named:
            if size not in self.sizes:
                raise ConfigError(f"size {size!r} is not defined under `sizes` ({', '.join(self.sizes)})")
        budgets = [*self.supervised_budgets, *self.distill_budgets, *self.soft_data_budgets]
        budgets += [self.teacher_axis_budget] if self.teacher_axis_budget else []
        budgets += [_budget_of(t) for t in self.teachers if "@" in t]
        if any(b < 1 for b in budgets):
            raise ConfigError(f"token budgets must be >= 1, got {sorted(budgets)}")
        if not self.supervised_sizes or not self.supervised_budgets:
            raise ConfigError("the supervised grid is empty: set supervised_sizes and supervised_budgets")
        distilled = self.distill_sizes or self.soft_data_sizes or self.teacher_axis_size
        if distilled and not self.teachers:
            raise ConfigError("hard/soft/soft_data cells need at least one entry under `teachers`")
        if bool(self.teacher_axis_size) != bool(self.teacher_axis_budget):
            raise ConfigError("give both teacher_axis_size and teacher_axis_budget, or neither")


def _budget_of(teacher: str) -> int:
    try:
        return int(teacher.split("@", 1)[1])
    except ValueError:
        raise ConfigError(f"teacher {teacher!r}: expected `size@budget` with an integer budget") from None
