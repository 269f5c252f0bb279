"""`distillab scaling predict | flops | plan | fit | plot` (also `python -m distillab.scaling`).

Every flag takes dashes or underscores (`--student-params` = `--student_params`); numbers may be written
1e9, 3e11, 1_000_000 or with a K/M/B/T suffix (7B). `--json` prints one JSON object instead of a table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillab.errors import ConfigError, exit_on_user_error
from distillab.scaling.flops import (
    FLOPS_METHODS,
    PAPER_N_CTX,
    PAPER_N_VOCAB,
    PAPER_OMEGA,
    PAPER_RHO,
    SCENARIOS,
    approx_2n_flops_per_token,
    model_forward_flops,
)
from distillab.scaling.laws import (
    DEFAULT_COEFFICIENTS,
    FIT_METHODS,
    coefficients_to_dict,
    distillation_loss,
    load_coefficients,
    save_coefficients,
    supervised_loss,
)

SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line ConfigErrors (exit 2 through `exit_on_user_error`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read "-3e11" as a (bad) value rather than an unknown option, as Python >= 3.13's argparse does.
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def positive_number(text: str) -> float:
    """Parse '1e9', '3e11', '1_000', '7B' into a finite float > 0."""
    cleaned = text.strip().replace("_", "")
    scale = SUFFIXES.get(cleaned[-1:].lower(), 1.0)
    try:
        value = float(cleaned[:-1] if scale != 1.0 else cleaned) * scale
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def at_least(minimum: int):
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Register `--name-with-dashes` and `--name_with_underscores` for one option."""
    spellings = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])
    parser.add_argument(*spellings, dest=name, **kwargs)


def _number(parser, name: str, help: str, **kwargs) -> None:
    _flag(parser, name, type=positive_number, metavar=name.split("_")[-1].upper(), help=help, **kwargs)


def _common(parser: argparse.ArgumentParser, coefficients: bool = True) -> None:
    if coefficients:
        _flag(
            parser,
            "coefficients",
            default=DEFAULT_COEFFICIENTS,
            metavar="NAME|FILE",
            help=f"named coefficient set or a JSON/YAML file (default {DEFAULT_COEFFICIENTS})",
        )
    _flag(parser, "json", action="store_true", help="print one JSON object")


def _teacher_flags(parser: argparse.ArgumentParser) -> None:
    _number(parser, "teacher_loss", "the teacher's cross-entropy L_T (nats/token)")
    _number(parser, "teacher_params", "teacher non-embedding parameters N_T (L_T from the supervised law)")
    _number(parser, "teacher_tokens", "tokens the teacher was trained on D_T")


def _teacher_loss(args, coefficients) -> float:
    """L_T from --teacher-loss, or from --teacher-params/--teacher-tokens through the supervised law."""
    has_size = args.teacher_params is not None or args.teacher_tokens is not None
    if args.teacher_loss is not None and has_size:
        raise ConfigError("give either --teacher-loss or --teacher-params with --teacher-tokens, not both")
    if args.teacher_loss is not None:
        return args.teacher_loss
    if args.teacher_params is None or args.teacher_tokens is None:
        raise ConfigError("give the teacher: --teacher-loss L, or --teacher-params N with --teacher-tokens D")
    return float(supervised_loss(args.teacher_params, args.teacher_tokens, coefficients.supervised))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="distillab scaling", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="student loss for a student, its tokens and a teacher",
        description="Student loss for a student, its tokens and a teacher.",
    )
    _number(predict, "student_params", "student non-embedding parameters N_S", required=True)
    _number(predict, "student_tokens", "tokens the student is distilled on D_S", required=True)
    _teacher_flags(predict)
    _common(predict)

    flops = commands.add_parser(
        "flops", help="forward FLOPs per token of a model", description="Forward FLOPs per token of a model."
    )
    _number(flops, "params", "non-embedding parameters N")
    _flag(
        flops, "config", metavar="PATH", help="a Hugging Face config.json (or its model folder): exact count"
    )
    _flag(
        flops,
        "method",
        choices=FLOPS_METHODS,
        help="exact (needs --config) | approx_2n | paper_fixed_aspect (default: exact with --config)",
    )
    _number(flops, "n_ctx", f"context length (default: the config's, else {PAPER_N_CTX})")
    _number(flops, "n_vocab", f"vocabulary size for paper_fixed_aspect (default {PAPER_N_VOCAB})")
    _number(
        flops, "rho", f"d_model / n_layers for paper_fixed_aspect (default {PAPER_RHO:g})", default=PAPER_RHO
    )
    _number(flops, "omega", f"params per layer / d_model^2 (default {PAPER_OMEGA:g})", default=PAPER_OMEGA)
    _number(flops, "tokens", "also report the training FLOPs 3 F(N) D on this many tokens")
    _common(flops, coefficients=False)

    plan = commands.add_parser(
        "plan",
        help="compute-optimal student tokens and teacher for a budget",
        description="Compute-optimal student tokens and teacher for a budget.",
    )
    _number(plan, "student_params", "student non-embedding parameters N_S", required=True)
    _number(plan, "compute", "total budget C in FLOPs", required=True)
    _flag(
        plan,
        "scenario",
        default="best",
        metavar="|".join(SCENARIOS),
        help="which teacher costs count against the budget (default best)",
    )
    _flag(
        plan,
        "teacher",
        action="append",
        metavar="PARAMS,TOKENS",
        help="an existing teacher (repeatable): pick the best of them instead of the optimal one",
    )
    _common(plan)

    fit = commands.add_parser(
        "fit",
        help="fit the laws to measured runs (CSV or JSON lines)",
        description=_RUNS_HELP,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    fit.add_argument("runs", metavar="RUNS", help="a .csv or .jsonl file of runs")
    _flag(
        fit,
        "kind",
        default="auto",
        choices=("auto", "supervised", "distillation", "both"),
        help="which law(s) to fit (default auto: from which rows have a teacher_loss)",
    )
    _flag(
        fit,
        "method",
        choices=FIT_METHODS,
        help="the training method of the runs, recorded in the set: supervised (the supervised law alone), "
        "or hard|soft|soft_data, required when the distillation law is fitted",
    )
    _flag(
        fit,
        "bootstrap",
        type=at_least(0),
        default=0,
        metavar="B",
        help="bootstrap resamples for intervals (default 0)",
    )
    _flag(fit, "confidence", type=fraction, default=0.9, help="interval coverage (default 0.9)")
    _flag(
        fit,
        "holdout",
        type=fraction,
        default=0.0,
        metavar="FRACTION",
        help="hold out this fraction of runs with the largest students and report their prediction error",
    )
    _flag(
        fit,
        "holdout_by",
        default="params",
        choices=("params", "params_tokens"),
        help="what 'largest' means for --holdout: N (params, default) or N·D (params_tokens)",
    )
    _flag(
        fit, "starts", type=at_least(1), default=256, help="L-BFGS-B starts kept from the grid (default 256)"
    )
    _flag(
        fit,
        "workers",
        type=at_least(1),
        default=1,
        help="processes for L-BFGS-B and the bootstrap (default 1)",
    )
    _flag(
        fit, "out", metavar="FILE", help="write the fitted coefficient set (.json/.yaml), for --coefficients"
    )
    _flag(fit, "name", help="name of the fitted set (default: fit-<runs file stem>)")
    _common(fit)

    plot = commands.add_parser("plot", help="PNG figures of the laws", description="PNG figures of the laws.")
    _flag(plot, "out_dir", default="scaling_plots", metavar="DIR", help="where to write the PNGs")
    _number(plot, "teacher_params", "teacher of the map and IsoFLOP plots (default 1e10)", default=1e10)
    _number(plot, "teacher_tokens", "its training tokens (default 2e11)", default=2e11)
    _flag(
        plot,
        "scenario",
        default="teacher-inference",
        metavar="|".join(SCENARIOS),
        help="teacher costs counted in the IsoFLOP plot (default teacher-inference)",
    )
    _number(
        plot,
        "tokens_per_param",
        "D_S / N_S of the students in the L_S-vs-L_T plot (default 20)",
        default=20.0,
    )
    _common(plot)
    return parser


_RUNS_HELP = """Fit the laws to measured runs. RUNS is a .csv or .jsonl file, one run per row, columns:
  student_params   non-embedding parameters N of the trained model
  student_tokens   tokens D it was trained on
  loss             its validation cross-entropy against data (nats/token)
  teacher_loss     the teacher's loss L_T for a distilled run; empty/absent for a supervised run
The supervised law is fitted on supervised rows first; the distillation law on distilled rows takes
Ltilde_S from it (or from --coefficients with --kind distillation). --method records what the set is for
(evaluate predicts a student only from a set fitted for its method): a fit of the distillation law needs
hard, soft or soft_data. Unfitted parts come from --coefficients."""


# --- output -------------------------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or value == 0 or abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def _emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(_finite_or_none(result)))
        return
    rows = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    width = max(map(len, rows))
    print(title)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {_format(value)}")


# --- commands -----------------------------------------------------------------------------------------------


def run_predict(args) -> dict[str, Any]:
    from distillab.scaling.plan import crossover_tokens, optimal_teacher_loss

    coefficients = load_coefficients(args.coefficients)
    teacher_loss = _teacher_loss(args, coefficients)
    n, d = args.student_params, args.student_tokens
    student = float(distillation_loss(n, d, teacher_loss, coefficients))
    supervised = float(supervised_loss(n, d, coefficients.supervised))
    return {
        "coefficients": coefficients.name,
        "student_params": n,
        "student_tokens": d,
        "teacher_loss": teacher_loss,
        "student_loss": student,
        "supervised_student_loss": supervised,
        "distillation_gain": supervised - student,
        "optimal_teacher_loss": optimal_teacher_loss(n, d, coefficients),
        "crossover_tokens": crossover_tokens(n, teacher_loss, coefficients),
    }


def _read_config(path: str) -> dict[str, Any]:
    file = Path(path)
    file = file / "config.json" if file.is_dir() else file
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read a model config from {path}: {err}") from None


def run_flops(args) -> dict[str, Any]:
    config = _read_config(args.config) if args.config else None
    if config is None and args.params is None:
        raise ConfigError("give --params N or --config PATH")
    method = args.method or ("exact" if config else "paper_fixed_aspect")
    result = model_forward_flops(
        config,
        params=args.params,
        method=method,
        n_ctx=args.n_ctx and int(args.n_ctx),
        n_vocab=args.n_vocab and int(args.n_vocab),
        rho=args.rho,
        omega=args.omega,
    ).to_dict()
    result["forward_flops_per_token"] = result.pop("per_token")
    result["approx_2n_flops_per_token"] = float(approx_2n_flops_per_token(result["params"]))
    result["train_flops_per_token"] = 3.0 * result["forward_flops_per_token"]
    if args.tokens:
        result["tokens"] = args.tokens
        result["train_flops"] = result["train_flops_per_token"] * args.tokens
    return result


def _parse_teacher(text: str):
    from distillab.scaling.plan import Teacher

    parts = text.split(",")
    if len(parts) != 2:
        raise ConfigError(f"--teacher takes PARAMS,TOKENS (e.g. 7e9,2e12), got {text!r}")
    try:
        return Teacher(*(positive_number(part) for part in parts))
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"--teacher {text!r}: {err}") from None


def run_plan(args) -> dict[str, Any]:
    from distillab.scaling.plan import best_existing_teacher, compute_optimal_plan

    if not args.teacher:
        plan = compute_optimal_plan(args.student_params, args.compute, args.scenario, args.coefficients)
        return {"coefficients": load_coefficients(args.coefficients).name, **plan.to_dict()}
    teachers = [_parse_teacher(text) for text in args.teacher]
    plans = best_existing_teacher(
        args.student_params, args.compute, teachers, args.scenario, args.coefficients
    )
    candidates = [plan.to_dict() for plan in plans]
    return {
        "coefficients": load_coefficients(args.coefficients).name,
        **candidates[0],
        "candidates": candidates,
    }


def run_fit(args) -> dict[str, Any]:
    from distillab.scaling.fit import fit_coefficients
    from distillab.scaling.runs import load_runs

    runs = load_runs(args.runs)
    report = fit_coefficients(
        runs,
        args.kind,
        base=args.coefficients,
        name=args.name or f"fit-{Path(args.runs).stem}",
        holdout=args.holdout,
        source=str(args.runs),
        method=args.method,
        holdout_by=args.holdout_by,
        n_starts=args.starts,
        workers=args.workers,
        bootstrap=args.bootstrap,
        confidence=args.confidence,
    )
    if args.out:
        save_coefficients(report.coefficients, args.out)
    result = coefficients_to_dict(report.coefficients)
    for fit in report.fits:
        result[f"{fit.kind}_relative_error"] = fit.relative_error
        result[f"{fit.kind}_runs"] = fit.n_runs
        result[f"{fit.kind}_seconds"] = sum(fit.seconds.values())
    for kind, error in report.held_out_relative_error.items():
        result[f"{kind}_held_out_relative_error"] = error
    if args.out:
        result["out"] = str(args.out)
    return result


def _print_fit(result: dict[str, Any]) -> None:
    intervals = result.get("intervals", {})
    fitted = ", ".join(result["metadata"]["fitted"])
    print(f"coefficient set {result['name']} for method {result['method']} (fitted: {fitted})")
    for law in result["metadata"]["fitted"]:
        print(f"  {law}")
        for name, value in result[law].items():
            low_high = intervals.get(f"{law}.{name}")
            extra = f"  [{_format(low_high[0])}, {_format(low_high[1])}]" if low_high else ""
            print(f"    {name:<6} {_format(value)}{extra}")
    _emit({k: v for k, v in result.items() if k not in {"name"}}, False, "fit")


def run_plot(args) -> dict[str, Any]:
    from distillab.scaling import plots

    coefficients = load_coefficients(args.coefficients)
    out = Path(args.out_dir)
    teacher_loss = float(supervised_loss(args.teacher_params, args.teacher_tokens, coefficients.supervised))
    paths = [
        plots.plot_student_vs_teacher(
            coefficients, out / "student_vs_teacher.png", tokens_per_param=args.tokens_per_param
        ),
        plots.plot_distill_minus_supervised(coefficients, out / "distill_minus_supervised.png", teacher_loss),
        plots.plot_isoflops(
            coefficients, out / "isoflops.png", args.teacher_params, args.teacher_tokens, args.scenario
        ),
    ]
    return {"plots": [str(path) for path in paths]}


COMMANDS = {"predict": run_predict, "flops": run_flops, "plan": run_plan, "fit": run_fit, "plot": run_plot}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    result = COMMANDS[args.command](args)
    if args.command == "fit" and not args.json:
        _print_fit(result)
    elif args.command == "plot" and not args.json:
        print("\n".join(result["plots"]))
    else:
        _emit(result, args.json, f"scaling {args.command}")
