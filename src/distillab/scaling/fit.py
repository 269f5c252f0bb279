"""Fit the laws to measured runs (paper App. F): Huber loss in log space, L-BFGS-B from the paper's grids.

The whole initialisation grid (9,600 supervised / 216,000 distillation starts) is scored at once with numpy,
factored so that each law term is computed once per distinct sub-grid; L-BFGS-B with analytic gradients then
runs from the best `n_starts` of them (optionally on several processes), and the best `n_polish` are refined
to full convergence. The supervised law is fitted first; the distillation fit takes Ltilde_S from it.
The objective is the paper's sum of Huber_delta residuals, divided by n * delta so that L-BFGS-B's tolerances
see numbers of order one; the minimiser is the same.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from distillab.errors import ConfigError, DataError
from distillab.scaling.laws import (
    DEFAULT_COEFFICIENTS,
    FIT_METHODS,
    CoefficientSet,
    DistillationCoefficients,
    SupervisedCoefficients,
    load_coefficients,
    log_power_term,
    scaled_softplus,
    supervised_log_loss,
)
from distillab.scaling.runs import Runs

HUBER_DELTA = 1e-4
SHORT_MAXITER = 200  # L-BFGS-B iterations for every kept start
POLISH_MAXITER = 5000  # ... and for the few best of them
POLISH_STARTS = 8


@dataclass(frozen=True)
class FitData:
    """Log-space arrays of the runs a law is fitted to (log_teacher, log_supervised: distillation only)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    log_teacher: np.ndarray | None = None
    log_supervised: np.ndarray | None = None

    @classmethod
    def from_runs(cls, runs: Runs, supervised: SupervisedCoefficients | None = None) -> FitData:
        data = cls(np.log(runs.student_params), np.log(runs.student_tokens), np.log(runs.loss))
        if supervised is None:
            return data
        log_supervised = supervised_log_loss(runs.student_params, runs.student_tokens, supervised)
        return cls(data.log_n, data.log_d, data.log_loss, np.log(runs.teacher_loss), log_supervised)


def huber(residual: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber_delta(r): r^2 / 2 inside |r| <= delta, linear outside.

    Written delta (|r| - delta / 2) + max(delta - |r|, 0)^2 / 2: no branch, one pass fewer.
    """
    a = np.abs(residual)
    inside = np.maximum(delta - a, 0)
    return delta * (a - 0.5 * delta) + 0.5 * inside * inside


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x), stable for any x (faster than np.logaddexp(0, x))."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _power_term_jacobian(theta_ab, data: FitData, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """s = log(A/N^alpha + B/D^beta) and d(gamma s)/d(log A, log B, alpha, beta), shape (4, n)."""
    log_a, log_b, alpha, beta = theta_ab
    s = log_power_term(data.log_n, data.log_d, log_a, log_b, alpha, beta)
    share_a = np.exp(log_a - alpha * data.log_n - s)
    share_b = 1.0 - share_a
    return s, gamma * np.stack([share_a, share_b, -share_a * data.log_n, -share_b * data.log_d])


def _product_rows(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Every (outer row, inner row) pair as one row, outer-major: the order of a nested loop."""
    return np.hstack([np.repeat(outer, len(inner), axis=0), np.tile(inner, (len(outer), 1))])


# --- the supervised law: theta = (log E, log A, log B, alpha, beta, gamma) ---------------------------------


def _supervised_predict(theta: np.ndarray, data: FitData) -> tuple[np.ndarray, np.ndarray]:
    log_e, log_a, log_b, alpha, beta, gamma = theta
    s, ds = _power_term_jacobian((log_a, log_b, alpha, beta), data, gamma)
    y = np.logaddexp(log_e, gamma * s)
    share_e = np.exp(log_e - y)
    share_w = 1.0 - share_e
    return y, np.vstack([share_e[None], share_w * ds, (share_w * s)[None]])


def _supervised_grid(data: FitData, grid) -> tuple[np.ndarray, np.ndarray]:
    log_e_values, log_a_values, log_b_values, alpha_values, beta_values, gamma_values = grid
    power = list(itertools.product(log_a_values, log_b_values, alpha_values, beta_values))
    log_power = np.stack([log_power_term(data.log_n, data.log_d, *p) for p in power])  # (P, n)
    outer = list(itertools.product(log_e_values, gamma_values))
    objective = [
        _scaled_huber_sum(np.logaddexp(log_e, gamma * log_power) - data.log_loss) for log_e, gamma in outer
    ]
    thetas = _product_rows(np.array(outer), np.array(power))[:, [0, 2, 3, 4, 5, 1]]
    return np.concatenate(objective), thetas


def _to_supervised(theta: np.ndarray) -> SupervisedCoefficients:
    log_e, log_a, log_b, alpha, beta, gamma = map(float, theta)
    return SupervisedCoefficients(
        E=float(np.exp(log_e)),
        A=float(np.exp(log_a)),
        B=float(np.exp(log_b)),
        alpha=alpha,
        beta=beta,
        gamma=gamma,
    )


# --- the distillation law: theta = (log A', log B', alpha', beta', gamma', c0, c1, f1, log d1) --------------


def _distillation_predict(theta: np.ndarray, data: FitData) -> tuple[np.ndarray, np.ndarray]:
    log_a, log_b, alpha, beta, gamma, c0, c1, f1, log_d1 = theta
    lt = data.log_teacher
    s, ds = _power_term_jacobian((log_a, log_b, alpha, beta), data, gamma)
    x = lt - data.log_supervised - log_d1
    gap = scaled_softplus(x, f1)
    with np.errstate(divide="ignore", invalid="ignore"):  # f1 = 0 (a grid value): ratio = +-inf, limits below
        ratio = x / f1
        d_gap_d_f1 = np.where(np.isfinite(ratio), np.logaddexp(0.0, ratio) - ratio * expit(ratio), 0.0)
    z = -c0 * lt - c1 * gap + gamma * s
    y = np.logaddexp(lt, z)
    share_z = np.exp(z - y)
    dz = np.vstack([ds, s[None], -lt[None], -gap[None], (-c1 * d_gap_d_f1)[None], (c1 * expit(ratio))[None]])
    return y, share_z * dz


def _distillation_grid(data: FitData, grid) -> tuple[np.ndarray, np.ndarray]:
    """Score every grid point: y - log L = softplus(student - gap) + log L_T - log L, factored into a student
    term (log A', log B', alpha', beta', gamma': 675 rows) and a gap term (c0, c1, f1, log d1: 320 rows).
    The 216,000 x n residuals are formed in float32, plenty to rank starting points."""
    *student_values, c0_values, c1_values, f1_values, log_d1_values = grid
    lt = data.log_teacher
    students = list(itertools.product(*student_values))
    gaps = list(itertools.product(c0_values, c1_values, f1_values, log_d1_values))
    gap_terms = np.stack(
        [
            (c0 + 1.0) * lt + c1 * scaled_softplus(lt - data.log_supervised - log_d1, f1)
            for c0, c1, f1, log_d1 in gaps
        ]
    ).astype(np.float32)
    offset = (lt - data.log_loss).astype(np.float32)
    objective = np.empty((len(students), len(gaps)))
    for i, (log_a, log_b, alpha, beta, gamma) in enumerate(students):
        student = gamma * log_power_term(data.log_n, data.log_d, log_a, log_b, alpha, beta)
        objective[i] = _scaled_huber_sum(_softplus(student.astype(np.float32) - gap_terms) + offset)
    return objective.ravel(), _product_rows(np.array(students), np.array(gaps))


def _to_distillation(theta: np.ndarray) -> DistillationCoefficients:
    log_a, log_b, alpha, beta, gamma, c0, c1, f1, log_d1 = map(float, theta)
    return DistillationCoefficients(
        A=float(np.exp(log_a)),
        B=float(np.exp(log_b)),
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        c0=c0,
        c1=c1,
        f1=f1,
        d1=float(np.exp(log_d1)),
    )


# --- law specifications -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LawSpec:
    """What the fitter needs to know about one law."""

    kind: str
    names: tuple[str, ...]  # optimisation variables, in theta order
    grid: tuple[tuple[float, ...], ...]  # the paper's initialisation values, per variable
    bounds: tuple[tuple[float, float], ...]
    predict: Callable[[np.ndarray, FitData], tuple[np.ndarray, np.ndarray]]  # log prediction, jacobian (p, n)
    score_grid: Callable[[FitData, tuple], tuple[np.ndarray, np.ndarray]]  # objective (G,), thetas (G, p)
    to_coefficients: Callable[[np.ndarray], SupervisedCoefficients | DistillationCoefficients]

    @property
    def grid_size(self) -> int:
        return int(np.prod([len(values) for values in self.grid]))

    @property
    def free_names(self) -> tuple[str, ...]:
        """The variables the fit optimises (not held fixed)."""
        return tuple(name for name, (low, high) in zip(self.names, self.bounds, strict=True) if low < high)

    def fix(self, values: Mapping[str, float]) -> LawSpec:
        """This law with some coefficients held at given values ({"c1": 522.6, "d1": 1.315}, names as in
        the coefficient dataclasses): their grid is that one value and their bounds pin them there."""
        grid, bounds = list(self.grid), list(self.bounds)
        for name, value in values.items():
            variable = name if name in self.names else f"log_{name}"
            if variable not in self.names:
                raise ConfigError(f"the {self.kind} law has no coefficient {name!r}")
            theta = math.log(value) if variable.startswith("log_") else float(value)
            index = self.names.index(variable)
            grid[index], bounds[index] = (theta,), (theta, theta)
        return dataclasses.replace(self, grid=tuple(grid), bounds=tuple(bounds))


# Wide bounds, only to keep L-BFGS-B away from overflow along the laws' flat directions (the paper does not
# list its own): log coefficients in [-30, 60], exponents in [0, 4], c0 in [0, 20], c1 in [0, 2000].
_LOG, _EXPONENT = (-30.0, 60.0), (0.0, 4.0)
_LOG_AB = (0.0, 5.0, 10.0, 15.0, 20.0)

SUPERVISED = LawSpec(
    kind="supervised",
    names=("log_E", "log_A", "log_B", "alpha", "beta", "gamma"),
    grid=((-1.0, -0.5, 0.0, 0.5, 1.0, 1.5), _LOG_AB, _LOG_AB, *[(0.0, 0.5, 1.0, 1.5)] * 3),
    bounds=(_LOG, _LOG, _LOG, _EXPONENT, _EXPONENT, _EXPONENT),
    predict=_supervised_predict,
    score_grid=_supervised_grid,
    to_coefficients=_to_supervised,
)

DISTILLATION = LawSpec(
    kind="distillation",
    names=("log_A", "log_B", "alpha", "beta", "gamma", "c0", "c1", "f1", "log_d1"),
    grid=(_LOG_AB, _LOG_AB, *[(0.0, 0.5, 1.0)] * 3, *[(0.0, 0.5, 1.0, 1.5)] * 3, (-1.0, -0.5, 0.0, 0.5, 1.0)),
    # f1 = 0 is the law's max(x, 0) limit, which has no gradient in f1: optimise from just above it.
    bounds=(
        _LOG,
        _LOG,
        _EXPONENT,
        _EXPONENT,
        _EXPONENT,
        (0.0, 20.0),
        (0.0, 2000.0),
        (1e-3, 5.0),
        (-3.0, 3.0),
    ),
    predict=_distillation_predict,
    score_grid=_distillation_grid,
    to_coefficients=_to_distillation,
)

# --- the objective and the optimiser ------------------------------------------------------------------------


def _scaled_huber_sum(residual: np.ndarray) -> np.ndarray:
    """The objective: sum of Huber over the last axis (the runs), divided by n * delta."""
    delta = residual.dtype.type(HUBER_DELTA)
    return huber(residual, delta).sum(axis=-1, dtype=np.float64) / (residual.shape[-1] * HUBER_DELTA)


def objective_and_gradient(theta: np.ndarray, spec: LawSpec, data: FitData) -> tuple[float, np.ndarray]:
    """The objective at one theta and its analytic gradient."""
    prediction, jacobian = spec.predict(np.asarray(theta, dtype=float), data)
    residual = prediction - data.log_loss
    gradient = jacobian @ np.clip(residual, -HUBER_DELTA, HUBER_DELTA) / (residual.size * HUBER_DELTA)
    return float(_scaled_huber_sum(residual)), gradient


def _lbfgsb(spec: LawSpec, data: FitData, start: np.ndarray, maxiter: int) -> tuple[float, np.ndarray]:
    start = np.clip(start, *zip(*spec.bounds, strict=True))
    result = minimize(
        objective_and_gradient,
        start,
        args=(spec, data),
        jac=True,
        method="L-BFGS-B",
        bounds=spec.bounds,
        options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20},
    )
    return float(result.fun), result.x


def _lbfgsb_many(
    spec: LawSpec, data: FitData, maxiter: int, starts: np.ndarray
) -> list[tuple[float, np.ndarray]]:
    return [_lbfgsb(spec, data, start, maxiter) for start in starts]


def _map_chunks(function: Callable[..., list], items: np.ndarray, workers: int, *args) -> list:
    """`function(*args, chunk)` over `workers` chunks of `items` (forked processes if workers > 1)."""
    if workers <= 1 or len(items) < 2 * workers:
        return function(*args, items)
    chunks = np.array_split(items, workers)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = pool.map(function, *([arg] * workers for arg in args), chunks)
        return [result for part in parts for result in part]


def optimize_from(
    spec: LawSpec, data: FitData, starts: np.ndarray, maxiter: int, workers: int = 1
) -> list[tuple[float, np.ndarray]]:
    """L-BFGS-B from every start, as (objective, theta) pairs."""
    return _map_chunks(_lbfgsb_many, starts, workers, spec, data, maxiter)


class _StageClock:
    """Seconds spent per stage."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now


@dataclass(frozen=True, eq=False)
class LawFit:
    """The result of fitting one law."""

    spec: LawSpec = field(repr=False)
    coefficients: SupervisedCoefficients | DistillationCoefficients
    theta: np.ndarray = field(repr=False)
    objective: float
    relative_error: float  # mean |prediction / observation - 1| on the fitted runs
    max_relative_error: float
    n_runs: int
    grid_starts: int
    optimized_starts: int
    seconds: dict[str, float]  # per stage: grid, lbfgsb, polish, bootstrap
    bootstrap_thetas: np.ndarray | None = field(default=None, repr=False)  # (resamples, parameters)
    confidence: float = 0.9

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def fixed(self) -> dict[str, float]:
        """The coefficients held fixed, keyed "distillation.c1", ... (see `LawSpec.fix`)."""
        values = vars(self.coefficients)
        free = {name.removeprefix("log_") for name in self.spec.free_names}
        return {f"{self.kind}.{name}": value for name, value in values.items() if name not in free}

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile bootstrap intervals per coefficient, keyed "supervised.E", "distillation.c0", ..."""
        if self.bootstrap_thetas is None:
            return {}
        values = [vars(self.spec.to_coefficients(theta)) for theta in self.bootstrap_thetas]
        return {
            f"{self.kind}.{name}": _percentile_interval([v[name] for v in values], self.confidence)
            for name in values[0]
        }

    def log_predict(self, data: FitData) -> np.ndarray:
        """log of the fitted law's loss for the runs of `data` (their observed losses are not used)."""
        return self.spec.predict(self.theta, data)[0]

    def prediction_interval(self, data: FitData) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of the predicted loss for each run of `data`."""
        if self.bootstrap_thetas is None:
            raise ValueError("prediction intervals need a fit with bootstrap > 0")
        predictions = np.exp([self.spec.predict(theta, data)[0] for theta in self.bootstrap_thetas])
        return _percentile_interval(predictions, self.confidence)


def _percentile_interval(values, confidence: float):
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(values, [tail, 100.0 - tail], axis=0)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def relative_error(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """|predicted / observed - 1| per run."""
    return np.abs(np.asarray(predicted) / np.asarray(observed) - 1.0)


def _check_size(spec: LawSpec, data: FitData) -> None:
    free = len(spec.free_names)
    if data.log_loss.size <= free:
        raise DataError(f"fitting the {spec.kind} law needs more than {free} runs, got {data.log_loss.size}")


def fit_law(
    spec: LawSpec,
    data: FitData,
    *,
    n_starts: int = 256,
    n_polish: int = POLISH_STARTS,
    workers: int = 1,
    bootstrap: int = 0,
    confidence: float = 0.9,
    seed: int = 0,
) -> LawFit:
    """Score the full grid, run L-BFGS-B from its `n_starts` best points, polish the `n_polish` best results;
    with `bootstrap` > 0, refit that many resamples of the runs for `confidence` intervals."""
    _check_size(spec, data)
    clock = _StageClock()
    grid_objective, thetas = spec.score_grid(data, spec.grid)
    order = np.argsort(grid_objective, kind="stable")[: max(n_starts, 1)]
    clock.lap("grid")
    short = optimize_from(spec, data, thetas[order], SHORT_MAXITER, workers)
    clock.lap("lbfgsb")
    best_short = sorted(short, key=lambda result: result[0])[:n_polish]
    polished = optimize_from(
        spec, data, np.array([theta for _, theta in best_short]), POLISH_MAXITER, workers
    )
    objective, theta = min(polished, key=lambda result: result[0])
    clock.lap("polish")
    resampled = bootstrap_thetas(spec, data, theta, bootstrap, seed, workers) if bootstrap else None
    clock.lap("bootstrap")
    errors = relative_error(np.exp(spec.predict(theta, data)[0]), np.exp(data.log_loss))
    return LawFit(
        spec=spec,
        coefficients=spec.to_coefficients(theta),
        theta=theta,
        objective=objective,
        relative_error=float(errors.mean()),
        max_relative_error=float(errors.max()),
        n_runs=int(data.log_loss.size),
        grid_starts=len(thetas),
        optimized_starts=len(order),
        seconds=clock.laps,
        bootstrap_thetas=resampled,
        confidence=confidence,
    )


def _resample(data: FitData, rows: np.ndarray) -> FitData:
    arrays = (getattr(data, name) for name in FitData.__dataclass_fields__)
    return FitData(*(None if a is None else a[rows] for a in arrays))


def _bootstrap_fits(
    spec: LawSpec, data: FitData, theta: np.ndarray, row_sets: np.ndarray
) -> list[np.ndarray]:
    return [_lbfgsb(spec, _resample(data, rows), theta, POLISH_MAXITER)[1] for rows in row_sets]


def bootstrap_thetas(
    spec: LawSpec, data: FitData, theta: np.ndarray, resamples: int, seed: int = 0, workers: int = 1
) -> np.ndarray:
    """Fits to `resamples` resamplings of the runs (with replacement), as rows of parameters.

    Each is L-BFGS-B warm-started from the full-data optimum `theta`: a full grid per resample would cost
    `resamples` times the fit.
    """
    n = data.log_loss.size
    row_sets = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return np.array(_map_chunks(_bootstrap_fits, row_sets, workers, spec, data, theta))


def fit_supervised(runs: Runs, **options) -> LawFit:
    """Fit Eq. 1 to supervised runs (`options`: see `fit_law`)."""
    return fit_law(SUPERVISED, FitData.from_runs(runs), **options)


def fit_distillation(runs: Runs, supervised: SupervisedCoefficients, **options) -> LawFit:
    """Fit Eq. 8 to distilled runs, with Ltilde_S from the (already fitted) supervised law."""
    if np.isnan(runs.teacher_loss).any():
        raise DataError("fitting the distillation law needs a teacher_loss for every run")
    return fit_law(DISTILLATION, FitData.from_runs(runs, supervised), **options)


# --- fitting a runs file: supervised then distillation ------------------------------------------------------

FIT_KINDS = ("auto", "supervised", "distillation", "both")
DISTILLATION_METHODS = FIT_METHODS[1:]
HOLDOUT_KEYS: dict[str, Callable[[Runs], np.ndarray]] = {
    "params": lambda runs: runs.student_params,
    "params_tokens": lambda runs: runs.student_params * runs.student_tokens,
}


@dataclass(frozen=True, eq=False)
class FitReport:
    """Fitted coefficient set (unfitted parts taken from the base set) and the per-law fits behind it."""

    coefficients: CoefficientSet
    fits: list[LawFit]
    held_out_relative_error: dict[str, float]  # law -> mean |prediction / observation - 1| on held-out runs
    held_out: dict[str, Runs] = field(default_factory=dict)  # law -> the runs held out of its fit


def resolve_kind(kind: str, runs: Runs) -> str:
    """`auto`: supervised if no run has a teacher_loss, distillation if all do, else both."""
    if kind not in FIT_KINDS:
        raise DataError(f"unknown fit kind {kind!r}; choose from {', '.join(FIT_KINDS)}")
    if kind != "auto":
        return kind
    distilled = runs.is_distilled
    return "supervised" if not distilled.any() else "distillation" if distilled.all() else "both"


def resolve_method(method: str | None, kind: str) -> str:
    """The method the fitted set is for: `supervised` when only the supervised law is fitted; a fit of the
    distillation law must name the method its runs were distilled with."""
    if kind == "supervised":
        if method not in (None, "supervised"):
            raise ConfigError(
                f"method {method!r} needs the distillation law fitted, not only the supervised law"
            )
        return "supervised"
    if method not in DISTILLATION_METHODS:
        raise ConfigError(
            f"fitting the distillation law needs the method its runs used: {', '.join(DISTILLATION_METHODS)} "
            f"(got {method!r})"
        )
    return method


def _runs_of(runs: Runs, distilled: bool, source: str) -> Runs:
    selected = runs.subset(runs.is_distilled == distilled)
    if not len(selected):
        what = (
            "distilled runs (rows with a teacher_loss)"
            if distilled
            else "supervised runs (rows without teacher_loss)"
        )
        raise DataError(f"{source}: no {what}")
    return selected


def largest(runs: Runs, fraction: float, by: str = "params") -> np.ndarray:
    """Indices of the `fraction` of runs with the largest N (`by="params"`) or N·D (`by="params_tokens"`):
    at least one when `fraction` > 0, none when it is 0."""
    if by not in HOLDOUT_KEYS:
        raise ConfigError(f"unknown hold-out key {by!r}; choose from {', '.join(HOLDOUT_KEYS)}")
    if fraction <= 0:
        return np.array([], dtype=int)
    order = np.argsort(HOLDOUT_KEYS[by](runs), kind="stable")
    return order[-max(1, round(fraction * len(runs))) :]


def split_largest(runs: Runs, fraction: float, by: str = "params") -> tuple[Runs, Runs | None]:
    """(runs to fit, runs held out): the runs `largest` picks are held out (None when `fraction` is 0)."""
    held = largest(runs, fraction, by)
    if not len(held):
        return runs, None
    fitted = np.ones(len(runs), dtype=bool)
    fitted[held] = False
    return runs.subset(fitted), runs.subset(held)


def _fit_and_hold_out(
    spec: LawSpec, runs: Runs, supervised, holdout: float, holdout_by: str, options
) -> tuple[LawFit, Runs | None, float | None]:
    train, held = split_largest(runs, holdout, holdout_by)
    fit = fit_law(spec, FitData.from_runs(train, supervised), **options)
    if held is None:
        return fit, None, None
    error = relative_error(np.exp(fit.log_predict(FitData.from_runs(held, supervised))), held.loss)
    return fit, held, float(error.mean())


def _fixed_by_law(fixed: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{"distillation.c1": v} -> {"distillation": {"c1": v}}."""
    by_law: dict[str, dict[str, float]] = {"supervised": {}, "distillation": {}}
    for key, value in fixed.items():
        law, _, name = key.partition(".")
        if law not in by_law or not name:
            raise ConfigError(f"fixed coefficient {key!r}: name it supervised.<name> or distillation.<name>")
        by_law[law][name] = value
    return by_law


def fit_coefficients(
    runs: Runs,
    kind: str = "auto",
    base: CoefficientSet | str = DEFAULT_COEFFICIENTS,
    name: str = "fit",
    holdout: float = 0.0,
    source: str = "runs",
    *,
    method: str | None = None,
    holdout_by: str = "params",
    fixed: Mapping[str, float] | None = None,
    **options,
) -> FitReport:
    """Fit the laws `kind` asks for; the supervised law (fitted, or `base`'s) provides Ltilde_S.

    `method` is what the set is fitted for (see `resolve_method`; `supervised` alone fits the supervised law).
    `holdout` > 0 fits each law without that fraction of its runs with the largest students (`holdout_by`
    "params": N, "params_tokens": N·D) and reports the relative error of predicting them (extrapolation).
    `fixed` holds coefficients at given values ({"distillation.c1": 522.6}); `options` go to `fit_law`.
    """
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout must be a fraction in [0, 1), got {holdout}")
    base = load_coefficients(base)
    kind = "supervised" if method == "supervised" and kind == "auto" else resolve_kind(kind, runs)
    method = resolve_method(method, kind)
    fixed_by_law = _fixed_by_law(fixed or {})
    supervised, distillation = base.supervised, base.distillation
    fits, held_out, errors, intervals = [], {}, {}, {}
    if kind in ("supervised", "both"):
        spec = SUPERVISED.fix(fixed_by_law["supervised"])
        fit, held_out["supervised"], errors["supervised"] = _fit_and_hold_out(
            spec, _runs_of(runs, False, source), None, holdout, holdout_by, options
        )
        supervised = fit.coefficients
        fits.append(fit)
    if kind in ("distillation", "both"):
        spec = DISTILLATION.fix(fixed_by_law["distillation"])
        fit, held_out["distillation"], errors["distillation"] = _fit_and_hold_out(
            spec, _runs_of(runs, True, source), supervised, holdout, holdout_by, options
        )
        distillation = fit.coefficients
        fits.append(fit)
    for fit in fits:
        intervals.update(fit.intervals)
    metadata = {
        "fitted": [fit.kind for fit in fits],
        "base": base.name,
        "source": source,
        "runs": {fit.kind: fit.n_runs for fit in fits},
        "relative_error": {fit.kind: fit.relative_error for fit in fits},
    }
    held_fixed = {key: value for fit in fits for key, value in fit.fixed.items()}
    if held_fixed:
        metadata["fixed"] = held_fixed
    if holdout:
        metadata["held_out_relative_error"] = errors
        metadata["holdout_by"] = holdout_by
    if intervals:
        metadata["confidence"] = fits[0].confidence
    coefficients = CoefficientSet(name, supervised, distillation, intervals, metadata, method)
    return FitReport(
        coefficients,
        fits,
        {k: v for k, v in errors.items() if v is not None},
        {k: v for k, v in held_out.items() if v is not None},
    )
