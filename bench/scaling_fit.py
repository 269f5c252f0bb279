"""Benchmark: fit the distillation law to synthetic runs with the paper's full initialisation grid.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.scaling_fit [--runs 700] [--starts 256] [--workers 2]

Runs are drawn from the paper's coefficients (Table 6) by `synthetic_runs`, so the fit should also predict
unseen runs of the same distribution. Prints seconds per stage, starts per second, and the ratio of the
vectorised grid scoring to scoring the grid's starts one at a time (extrapolated from a sample).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bench.harness import bench_parser
from distillab.scaling.fit import (
    DISTILLATION,
    POLISH_STARTS,
    FitData,
    fit_distillation,
    objective_and_gradient,
)
from distillab.scaling.laws import BUSBRIDGE2025, distillation_loss
from distillab.scaling.runs import synthetic_runs


def _rate(starts: int, seconds: float) -> str:
    return f"{starts:,} starts, {starts / seconds:,.1f} starts/s"


def one_at_a_time_seconds(data: FitData, sample: int, seed: int) -> float:
    """Seconds to score the whole grid start by start, extrapolated from `sample` random starts."""
    _, thetas = DISTILLATION.score_grid(data, DISTILLATION.grid)
    rows = np.random.default_rng(seed).choice(len(thetas), sample, replace=False)
    started = time.perf_counter()
    for row in rows:
        objective_and_gradient(thetas[row], DISTILLATION, data)
    return (time.perf_counter() - started) / sample * len(thetas)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=700)
    parser.add_argument("--starts", type=int, default=256, help="grid points kept for L-BFGS-B")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.0, help="log-normal noise on the losses")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    runs = synthetic_runs(args.runs, noise=args.noise, seed=args.seed)
    started = time.perf_counter()
    fit = fit_distillation(runs, BUSBRIDGE2025.supervised, n_starts=args.starts, workers=args.workers)
    total = time.perf_counter() - started

    probe = synthetic_runs(5000, seed=args.seed + 1)
    fitted = dataclasses.replace(BUSBRIDGE2025, distillation=fit.coefficients)
    predicted = distillation_loss(probe.student_params, probe.student_tokens, probe.teacher_loss, fitted)
    unseen_error = np.abs(predicted / probe.loss - 1)
    naive = one_at_a_time_seconds(FitData.from_runs(runs, BUSBRIDGE2025.supervised), 2000, args.seed)

    grid, lbfgsb = fit.seconds["grid"], fit.seconds["lbfgsb"]
    rows = [
        ("runs", f"{args.runs}"),
        ("workers", f"{args.workers}"),
        ("total", f"{total:.1f} s  (target <= 60 s)"),
        ("grid scoring", f"{grid:.2f} s  {_rate(fit.grid_starts, grid)}"),
        ("L-BFGS-B", f"{lbfgsb:.2f} s  {_rate(fit.optimized_starts, lbfgsb)}"),
        ("polish", f"{fit.seconds['polish']:.2f} s  {min(fit.optimized_starts, POLISH_STARTS)} starts"),
        ("whole fit", _rate(fit.grid_starts, total)),
        ("grid one at a time", f"{naive:.0f} s (extrapolated), ratio {naive / grid:.0f}x"),
    ]
    print("distillation fit, full paper grid")
    for name, value in rows:
        print(f"  {name:<24}{value}")
    print(f"  {'fit relative error':<24}mean {fit.relative_error:.2e}  max {fit.max_relative_error:.2e}")
    print(f"  {'unseen runs vs truth':<24}mean {unseen_error.mean():.2e}  max {unseen_error.max():.2e}")


if __name__ == "__main__":
    main()
