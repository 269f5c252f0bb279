"""`distillab scaling` configuration: one dataclass per subcommand; every field is a recipe key and a CLI flag.

Numbers may be written 1e9, 3e11, 1_000_000 or with a K/M/B/T suffix (7B); a recipe's values are checked
exactly as the same values given as flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field

from distillab.configs import check_choices
from distillab.scaling.flops import (
    FLOPS_METHODS,
    PAPER_N_CTX,
    PAPER_N_VOCAB,
    PAPER_OMEGA,
    PAPER_RHO,
    SCENARIOS,
)
from distillab.scaling.laws import DEFAULT_COEFFICIENTS, FIT_METHODS

SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


class PositiveNumber(float):
    """A finite float > 0, from '1e9', '3e11', '1_000', '7B' or a number."""

    def __new__(cls, value: str | float) -> PositiveNumber:
        text = str(value).strip().replace("_", "")
        scale = SUFFIXES.get(text[-1:].lower(), 1.0)
        try:
            number = float(text[:-1] if scale != 1.0 else text) * scale
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value!r}")
        return super().__new__(cls, number)


class Fraction(float):
    """A float in [0, 1)."""

    def __new__(cls, value: str | float) -> Fraction:
        try:
            number = float(str(value))
        except ValueError:
            number = math.nan
        if not 0.0 <= number < 1.0:
            raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {value!r}")
        return super().__new__(cls, number)


class Count(int):
    """An integer >= `minimum` (0)."""

    minimum = 0

    def __new__(cls, value: str | int) -> Count:
        try:
            number = int(str(value))
        except ValueError:
            number = cls.minimum - 1
        if number < cls.minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {cls.minimum}, got {value!r}")
        return super().__new__(cls, number)


class PositiveCount(Count):
    """An integer >= 1."""

    minimum = 1


CHECKED_TYPES = (PositiveNumber, Fraction, Count, PositiveCount)


@dataclass(kw_only=True)
class ScalingConfig:
    """What every scaling command takes."""

    json: bool = field(default=False, metadata={"help": "Print one JSON object instead of a table."})

    def __post_init__(self) -> None:
        """A recipe's values bypass the flags' types: check them with the same types."""
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            kinds = typing.get_args(hints[item.name]) or (hints[item.name],)
            kind = next((kind for kind in kinds if kind in CHECKED_TYPES), None)
            if kind is not None and value is not None:
                try:
                    setattr(self, item.name, kind(value))
                except argparse.ArgumentTypeError as err:
                    raise ValueError(f"{item.name}: {err}") from None
        check_choices(self)


@dataclass(kw_only=True)
class LawConfig(ScalingConfig):
    """A command that evaluates the laws."""

    coefficients: str = field(
        default=DEFAULT_COEFFICIENTS,
        metadata={"help": "Named coefficient set or a JSON/YAML file (NAME|FILE)."},
    )


@dataclass
class PredictConfig(LawConfig):
    """Student loss for a student, its tokens and a teacher."""

    student_params: PositiveNumber = field(metadata={"help": "Student non-embedding parameters N_S."})
    student_tokens: PositiveNumber = field(metadata={"help": "Tokens the student is distilled on D_S."})
    teacher_loss: PositiveNumber | None = field(
        default=None, metadata={"help": "The teacher's cross-entropy L_T (nats/token)."}
    )
    teacher_params: PositiveNumber | None = field(
        default=None,
        metadata={"help": "Teacher non-embedding parameters N_T (L_T from the supervised law)."},
    )
    teacher_tokens: PositiveNumber | None = field(
        default=None, metadata={"help": "Tokens the teacher was trained on D_T."}
    )


@dataclass
class FlopsConfig(ScalingConfig):
    """Forward FLOPs per token of a model."""

    params: PositiveNumber | None = field(default=None, metadata={"help": "Non-embedding parameters N."})
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "A Hugging Face config.json (or its model folder): exact count. `--config PATH` names it too "
            "when PATH is a folder or a .json file."
        },
    )
    method: str | None = field(
        default=None,
        metadata={
            "help": "exact (needs a model config) | approx_2n | paper_fixed_aspect (default: exact with a "
            "model config, else paper_fixed_aspect).",
            "choices": list(FLOPS_METHODS),
        },
    )
    n_ctx: PositiveNumber | None = field(
        default=None, metadata={"help": f"Context length (default: the model config's, else {PAPER_N_CTX})."}
    )
    n_vocab: PositiveNumber | None = field(
        default=None, metadata={"help": f"Vocabulary size for paper_fixed_aspect (default {PAPER_N_VOCAB})."}
    )
    rho: PositiveNumber = field(
        default=PAPER_RHO, metadata={"help": "d_model / n_layers for paper_fixed_aspect."}
    )
    omega: PositiveNumber = field(default=PAPER_OMEGA, metadata={"help": "Params per layer / d_model^2."})
    tokens: PositiveNumber | None = field(
        default=None, metadata={"help": "Also report the training FLOPs 3 F(N) D on this many tokens."}
    )


@dataclass
class PlanConfig(LawConfig):
    """Compute-optimal student tokens and teacher for a budget."""

    student_params: PositiveNumber = field(metadata={"help": "Student non-embedding parameters N_S."})
    compute: PositiveNumber = field(metadata={"help": "Total budget C in FLOPs."})
    scenario: str = field(
        default="best",
        metadata={"help": f"Which teacher costs count against the budget: {' | '.join(SCENARIOS)}."},
    )
    teacher: list[str] = field(
        default_factory=list,
        metadata={
            "help": "An existing teacher as PARAMS,TOKENS (repeatable): pick the best of them instead of the "
            "optimal one.",
            "action": "extend",
        },
    )


@dataclass
class FitConfig(LawConfig):
    """Fit the laws to measured runs. RUNS is a .csv or .jsonl file, one run per row, columns:
      student_params   non-embedding parameters N of the trained model
      student_tokens   tokens D it was trained on
      loss             its validation cross-entropy against data (nats/token)
      teacher_loss     the teacher's loss L_T for a distilled run; empty/absent for a supervised run
    The supervised law is fitted on supervised rows first; the distillation law on distilled rows takes
    Ltilde_S from it (or from --coefficients with --kind distillation). --method records what the set is for
    (evaluate predicts a student only from a set fitted for its method): a fit of the distillation law needs
    hard, soft or soft_data. Unfitted parts come from --coefficients.
    """

    runs: str | None = field(default=None, metadata={"help": "A .csv or .jsonl file of runs."})
    kind: str = field(
        default="auto",
        metadata={
            "help": "Which law(s) to fit (auto: from which rows have a teacher_loss).",
            "choices": ["auto", "supervised", "distillation", "both"],
        },
    )
    method: str | None = field(
        default=None,
        metadata={
            "help": "The training method of the runs, recorded in the set: supervised (the supervised law "
            "alone), or hard|soft|soft_data, required when the distillation law is fitted.",
            "choices": list(FIT_METHODS),
        },
    )
    bootstrap: Count = field(default=0, metadata={"help": "Bootstrap resamples for intervals."})
    confidence: Fraction = field(default=0.9, metadata={"help": "Interval coverage."})
    holdout: Fraction = field(
        default=0.0,
        metadata={"help": "Hold out this fraction of runs with the largest students and report their error."},
    )
    holdout_by: str = field(
        default="params",
        metadata={
            "help": "What 'largest' means for --holdout: N (params) or N·D (params_tokens).",
            "choices": ["params", "params_tokens"],
        },
    )
    starts: PositiveCount = field(default=256, metadata={"help": "L-BFGS-B starts kept from the grid."})
    workers: PositiveCount = field(default=1, metadata={"help": "Processes for L-BFGS-B and the bootstrap."})
    out: str | None = field(
        default=None, metadata={"help": "Write the fitted coefficient set (.json/.yaml), for --coefficients."}
    )
    name: str | None = field(
        default=None, metadata={"help": "Name of the fitted set (default: fit-<runs stem>)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.runs:
            raise ValueError("fit needs RUNS: a .csv or .jsonl file of runs")


@dataclass
class PlotConfig(LawConfig):
    """PNG figures of the laws."""

    out_dir: str = field(default="scaling_plots", metadata={"help": "Where to write the PNGs."})
    teacher_params: PositiveNumber = field(
        default=1e10, metadata={"help": "Teacher of the map and IsoFLOP plots."}
    )
    teacher_tokens: PositiveNumber = field(default=2e11, metadata={"help": "Its training tokens."})
    scenario: str = field(
        default="teacher-inference",
        metadata={"help": f"Teacher costs counted in the IsoFLOP plot: {' | '.join(SCENARIOS)}."},
    )
    tokens_per_param: PositiveNumber = field(
        default=20.0, metadata={"help": "D_S / N_S of the students in the L_S-vs-L_T plot."}
    )
