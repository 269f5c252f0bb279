"""`distillab scaling predict | flops | plan | fit | plot` (also `python -m distillab.scaling`).

Each command's options are the fields of its config (distillab/scaling/config.py): flags take dashes or
underscores (`--student-params` = `--student_params`), `--config recipe.yaml` sets any of them, and numbers may
be written 1e9, 3e11, 1_000_000 or with a K/M/B/T suffix (7B). `--json` prints one JSON object instead of a table.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillab.configs import ConfigParser, add_positional, parse_command
from distillab.errors import ConfigError, exit_on_user_error
from distillab.fileio import check_output_dir
from distillab.scaling.config import (
    FitConfig,
    FlopsConfig,
    PlanConfig,
    PlotConfig,
    PositiveNumber,
    PredictConfig,
    ScalingConfig,
)
from distillab.scaling.flops import approx_2n_flops_per_token, model_forward_flops
from distillab.scaling.laws import (
    coefficients_to_dict,
    distillation_loss,
    load_coefficients,
    save_coefficients,
    supervised_loss,
)


def _teacher_loss(config: PredictConfig, coefficients) -> float:
    """L_T from --teacher-loss, or from --teacher-params/--teacher-tokens through the supervised law."""
    has_size = config.teacher_params is not None or config.teacher_tokens is not None
    if config.teacher_loss is not None and has_size:
        raise ConfigError("give either --teacher-loss or --teacher-params with --teacher-tokens, not both")
    if config.teacher_loss is not None:
        return config.teacher_loss
    if config.teacher_params is None or config.teacher_tokens is None:
        raise ConfigError("give the teacher: --teacher-loss L, or --teacher-params N with --teacher-tokens D")
    return float(supervised_loss(config.teacher_params, config.teacher_tokens, coefficients.supervised))


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


def run_predict(config: PredictConfig) -> dict[str, Any]:
    from distillab.scaling.plan import crossover_tokens, optimal_teacher_loss

    coefficients = load_coefficients(config.coefficients)
    teacher_loss = _teacher_loss(config, coefficients)
    n, d = config.student_params, config.student_tokens
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


def run_flops(config: FlopsConfig) -> dict[str, Any]:
    model_config = _read_config(config.model_config) if config.model_config else None
    if model_config is None and config.params is None:
        raise ConfigError("give --params N or --config PATH (a model's config.json or its folder)")
    method = config.method or ("exact" if model_config else "paper_fixed_aspect")
    result = model_forward_flops(
        model_config,
        params=config.params,
        method=method,
        n_ctx=config.n_ctx and int(config.n_ctx),
        n_vocab=config.n_vocab and int(config.n_vocab),
        rho=config.rho,
        omega=config.omega,
    ).to_dict()
    result["forward_flops_per_token"] = result.pop("per_token")
    result["approx_2n_flops_per_token"] = float(approx_2n_flops_per_token(result["params"]))
    result["train_flops_per_token"] = 3.0 * result["forward_flops_per_token"]
    if config.tokens:
        result["tokens"] = config.tokens
        result["train_flops"] = result["train_flops_per_token"] * config.tokens
    return result


def _parse_teacher(text: str):
    from distillab.scaling.plan import Teacher

    parts = text.split(",")
    if len(parts) != 2:
        raise ConfigError(f"--teacher takes PARAMS,TOKENS (e.g. 7e9,2e12), got {text!r}")
    try:
        return Teacher(*(PositiveNumber(part) for part in parts))
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"--teacher {text!r}: {err}") from None


def run_plan(config: PlanConfig) -> dict[str, Any]:
    from distillab.scaling.plan import best_existing_teacher, compute_optimal_plan

    if not config.teacher:
        plan = compute_optimal_plan(
            config.student_params, config.compute, config.scenario, config.coefficients
        )
        return {"coefficients": load_coefficients(config.coefficients).name, **plan.to_dict()}
    teachers = [_parse_teacher(text) for text in config.teacher]
    plans = best_existing_teacher(
        config.student_params, config.compute, teachers, config.scenario, config.coefficients
    )
    candidates = [plan.to_dict() for plan in plans]
    return {
        "coefficients": load_coefficients(config.coefficients).name,
        **candidates[0],
        "candidates": candidates,
    }


def run_fit(config: FitConfig) -> dict[str, Any]:
    from distillab.scaling.fit import fit_coefficients
    from distillab.scaling.runs import load_runs

    runs = load_runs(config.runs)
    report = fit_coefficients(
        runs,
        config.kind,
        base=config.coefficients,
        name=config.name or f"fit-{Path(config.runs).stem}",
        holdout=config.holdout,
        source=str(config.runs),
        method=config.method,
        holdout_by=config.holdout_by,
        n_starts=config.starts,
        workers=config.workers,
        bootstrap=config.bootstrap,
        confidence=config.confidence,
    )
    if config.out:
        save_coefficients(report.coefficients, config.out)
    result = coefficients_to_dict(report.coefficients)
    for fit in report.fits:
        result[f"{fit.kind}_relative_error"] = fit.relative_error
        result[f"{fit.kind}_runs"] = fit.n_runs
        result[f"{fit.kind}_seconds"] = sum(fit.seconds.values())
    for kind, error in report.held_out_relative_error.items():
        result[f"{kind}_held_out_relative_error"] = error
    if config.out:
        result["out"] = str(config.out)
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


def run_plot(config: PlotConfig) -> dict[str, Any]:
    from distillab.scaling import plots

    coefficients = load_coefficients(config.coefficients)
    out = Path(config.out_dir)
    check_output_dir(out)
    teacher_loss = float(
        supervised_loss(config.teacher_params, config.teacher_tokens, coefficients.supervised)
    )
    paths = [
        plots.plot_student_vs_teacher(
            coefficients, out / "student_vs_teacher.png", tokens_per_param=config.tokens_per_param
        ),
        plots.plot_distill_minus_supervised(coefficients, out / "distill_minus_supervised.png", teacher_loss),
        plots.plot_isoflops(
            coefficients, out / "isoflops.png", config.teacher_params, config.teacher_tokens, config.scenario
        ),
    ]
    return {"plots": [str(path) for path in paths]}


@dataclass(frozen=True)
class Command:
    config: type[ScalingConfig]
    run: Callable[[Any], dict[str, Any]]
    help: str


COMMANDS = {
    "predict": Command(PredictConfig, run_predict, "student loss for a student, its tokens and a teacher"),
    "flops": Command(FlopsConfig, run_flops, "forward FLOPs per token of a model"),
    "plan": Command(PlanConfig, run_plan, "compute-optimal student tokens and teacher for a budget"),
    "fit": Command(FitConfig, run_fit, "fit the laws to measured runs (CSV or JSON lines)"),
    "plot": Command(PlotConfig, run_plot, "PNG figures of the laws"),
}


def make_parser() -> ConfigParser:
    """`distillab scaling COMMAND ...`: one subparser per command config (TRL's `make_parser(subparsers)`)."""
    parser = ConfigParser(prog="distillab scaling", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        description = inspect.cleandoc(command.config.__doc__)
        commands.add_parser(
            name, help=command.help, description=description, dataclass_types=[command.config]
        )
    add_positional(commands.choices["fit"], "runs")
    return parser


def _model_config_flag(argv: list[str]) -> list[str]:
    """`flops --config PATH` names a model's config.json or folder; any other `--config` is a YAML recipe."""
    if argv[:1] == ["flops"] and "--config" in argv[:-1]:
        path = argv[argv.index("--config") + 1]
        if Path(path).is_dir() or path.endswith(".json"):
            argv[argv.index("--config")] = "--model_config"
    return argv


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, config = parse_command(make_parser(), _model_config_flag(argv))
    result = COMMANDS[command].run(config)
    if command == "fit" and not config.json:
        _print_fit(result)
    elif command == "plot" and not config.json:
        print("\n".join(result["plots"]))
    else:
        _emit(result, config.json, f"scaling {command}")
