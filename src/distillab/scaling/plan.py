"""Planning with the laws: compute-optimal distillation (paper Eq. 10), the best of existing teachers, the
best teacher loss for a student (the capacity gap), and the distill-vs-supervised crossover."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq, minimize, minimize_scalar

from distillab.errors import ConfigError
from distillab.scaling.flops import (
    Scenario,
    distillation_flops,
    forward_flops_per_token,
    get_scenario,
    student_tokens_for_budget,
)
from distillab.scaling.laws import (
    CoefficientSet,
    distillation_log_loss,
    load_coefficients,
    supervised_log_loss,
    supervised_loss,
)

PAPER_BOUNDS = (1e6, 1e17)  # on N_T, D_S and D_T (the paper's SLSQP bounds)
FlopsPerToken = Callable[[ArrayLike], np.ndarray]


def require_positive(name: str, value: float) -> float:
    """`value` as a float if it is finite and > 0, else a ConfigError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class Plan:
    """A student and teacher choice for a budget, and what the laws predict for it."""

    scenario: str
    compute: float
    student_params: float
    student_tokens: float
    teacher_params: float
    teacher_tokens: float
    teacher_loss: float
    student_loss: float
    supervised_student_tokens: float  # the same student trained on data with the whole budget
    supervised_student_loss: float

    @property
    def distillation_gain(self) -> float:
        """Nats/token saved by distilling rather than training the student on data (negative: a loss)."""
        return self.supervised_student_loss - self.student_loss

    def to_dict(self) -> dict[str, float | str]:
        return {**dataclasses.asdict(self), "distillation_gain": self.distillation_gain}


def _log_student_loss(
    student_params, student_tokens, teacher_params, teacher_tokens, coefficients
) -> np.ndarray:
    teacher_loss = supervised_loss(teacher_params, teacher_tokens, coefficients.supervised)
    return distillation_log_loss(student_params, student_tokens, teacher_loss, coefficients)


def _make_plan(
    scenario: Scenario,
    compute,
    student_params,
    student_tokens,
    teacher_params,
    teacher_tokens,
    coefficients: CoefficientSet,
    flops_per_token: FlopsPerToken,
    teacher_loss: float | None = None,
) -> Plan:
    if teacher_loss is None:
        teacher_loss = float(supervised_loss(teacher_params, teacher_tokens, coefficients.supervised))
    supervised_tokens = compute / (3.0 * float(flops_per_token(student_params)))
    return Plan(
        scenario=scenario.name,
        compute=float(compute),
        student_params=float(student_params),
        student_tokens=float(student_tokens),
        teacher_params=float(teacher_params),
        teacher_tokens=float(teacher_tokens),
        teacher_loss=float(teacher_loss),
        student_loss=float(
            np.exp(distillation_log_loss(student_params, student_tokens, teacher_loss, coefficients))
        ),
        supervised_student_tokens=supervised_tokens,
        supervised_student_loss=float(
            supervised_loss(student_params, supervised_tokens, coefficients.supervised)
        ),
    )


def optimal_teacher_loss(student_params: float, student_tokens: float, coefficients: CoefficientSet) -> float:
    """argmin over L_T of L_S(N_S, D_S, L_T): the teacher loss that suits the student best (capacity gap)."""
    log_floor = math.log(coefficients.supervised.E)
    grid = np.linspace(log_floor, log_floor + math.log(20.0), 400)[1:]
    values = distillation_log_loss(student_params, student_tokens, np.exp(grid), coefficients)
    i = int(np.argmin(values))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    found = minimize_scalar(
        lambda log_t: float(
            distillation_log_loss(student_params, student_tokens, math.exp(log_t), coefficients)
        ),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(found.x)


def cheapest_teacher(
    teacher_loss: float, coefficients: CoefficientSet, flops_per_token: FlopsPerToken
) -> tuple[float, float]:
    """The (N_T, D_T) reaching `teacher_loss` under the supervised law with the least pretraining compute."""
    log_target = math.log(teacher_loss)
    log10_bounds = [tuple(math.log10(b) for b in PAPER_BOUNDS)] * 2

    def log_pretraining_flops(x):
        return math.log(3.0 * float(flops_per_token(10 ** x[0]))) + x[1] * math.log(10)

    def reaches(x):
        return float(supervised_log_loss(10 ** x[0], 10 ** x[1], coefficients.supervised)) - log_target

    if reaches([log10_bounds[0][1]] * 2) > 0:
        raise ConfigError(f"no teacher within {PAPER_BOUNDS} reaches a loss of {teacher_loss:.4g}")
    result = minimize(
        log_pretraining_flops,
        x0=[11.0, 13.0],
        method="SLSQP",
        bounds=log10_bounds,
        constraints=[{"type": "eq", "fun": reaches}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    if not (result.success and abs(reaches(result.x)) < 1e-8):
        raise ConfigError(
            f"could not find the cheapest teacher with loss {teacher_loss:.4g}: {result.message}"
        )
    return 10 ** result.x[0], 10 ** result.x[1]


def _best_case_plan(student_params, compute, coefficients, flops_per_token) -> Plan:
    """Scenario (0, 0): D_S takes the whole budget; the teacher is the cheapest at the best teacher loss."""
    scenario = get_scenario("best")
    student_tokens = compute / (3.0 * float(flops_per_token(student_params)))
    teacher_loss = optimal_teacher_loss(student_params, student_tokens, coefficients)
    strongest = float(supervised_loss(PAPER_BOUNDS[1], PAPER_BOUNDS[1], coefficients.supervised))
    if teacher_loss <= strongest:  # the best teacher lies beyond the bounds: L_S is unimodal in L_T
        teacher_loss, teacher_params, teacher_tokens = strongest, PAPER_BOUNDS[1], PAPER_BOUNDS[1]
    else:
        teacher_params, teacher_tokens = cheapest_teacher(teacher_loss, coefficients, flops_per_token)
    return _make_plan(
        scenario,
        compute,
        student_params,
        student_tokens,
        teacher_params,
        teacher_tokens,
        coefficients,
        flops_per_token,
        teacher_loss=teacher_loss,
    )


def _feasible_starts(student_params, compute, scenario: Scenario, flops_per_token) -> list[list[float]]:
    """(log10 D_S, log10 N_T, log10 D_T) starting points inside the bounds that spend exactly `compute`:
    teachers of 0.3x..30x the student, pretrained with 10%..70% of the budget (or on 1e11..1e15 tokens when
    pretraining is free), D_S taking what is left."""
    low, high = PAPER_BOUNDS
    starts = []
    for ratio, share in itertools.product((0.3, 3.0, 30.0), (0.1, 0.4, 0.7)):
        teacher_params = min(max(ratio * student_params, low), high)
        if scenario.delta_pretraining:
            teacher_tokens = share * compute / (3.0 * float(flops_per_token(teacher_params)))
        else:
            teacher_tokens = 10 ** (11 + 4 * share)
        teacher_tokens = min(max(teacher_tokens, low), high)
        student_tokens = float(
            student_tokens_for_budget(
                compute, student_params, teacher_params, teacher_tokens, scenario, flops_per_token
            )
        )
        if low <= student_tokens <= high:  # False for NaN: the teacher alone exceeds the budget
            starts.append(
                [math.log10(student_tokens), math.log10(teacher_params), math.log10(teacher_tokens)]
            )
    return starts


def _slsqp_plan(student_params, compute, scenario: Scenario, coefficients, flops_per_token) -> Plan:
    """Eq. 10 by SLSQP over (log10 D_S, log10 N_T, log10 D_T) with FLOPs = C, from a few feasible starts."""
    log_compute = math.log(compute)
    bounds = [tuple(math.log10(b) for b in PAPER_BOUNDS)] * 3

    def objective(x):
        return float(_log_student_loss(student_params, 10 ** x[0], 10 ** x[1], 10 ** x[2], coefficients))

    def spends_budget(x):
        flops = distillation_flops(
            student_params, 10 ** x[0], 10 ** x[1], 10 ** x[2], scenario, flops_per_token
        )
        return float(np.log(flops)) - log_compute

    results = []
    for start in _feasible_starts(student_params, compute, scenario, flops_per_token):
        result = minimize(
            objective,
            start,
            method="SLSQP",
            bounds=bounds,
            constraints=[{"type": "eq", "fun": spends_budget}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if result.success and abs(spends_budget(result.x)) < 1e-6:
            results.append(result)
    if not results:
        raise ConfigError(
            f"found no plan for a {student_params:.3g}-parameter student with {compute:.3g} FLOPs within "
            f"the bounds {PAPER_BOUNDS} (scenario {scenario.name})"
        )
    x = min(results, key=lambda r: r.fun).x
    return _make_plan(scenario, compute, student_params, *(10**x), coefficients, flops_per_token)


def _check_budget(student_params: float, compute: float, flops_per_token: FlopsPerToken) -> None:
    minimum = 3.0 * float(flops_per_token(student_params)) * PAPER_BOUNDS[0]
    if compute < minimum:
        raise ConfigError(
            f"compute {compute:.3g} FLOPs is below {minimum:.3g}, the cost of training a "
            f"{student_params:.3g}-parameter student on {PAPER_BOUNDS[0]:.0e} tokens"
        )


def compute_optimal_plan(
    student_params: float,
    compute: float,
    scenario: str | Scenario = "best",
    coefficients: CoefficientSet | str = "busbridge2025",
    flops_per_token: FlopsPerToken = forward_flops_per_token,
) -> Plan:
    """(D_S*, N_T*, D_T*) minimising the student's loss for `compute` FLOPs (paper Eq. 10).

    In the best case the teacher costs nothing, so only its loss matters: the plan reports the teacher that
    reaches the optimal loss with the least pretraining compute.
    """
    student_params = require_positive("student params", student_params)
    compute = require_positive("compute", compute)
    scenario, coefficients = get_scenario(scenario), load_coefficients(coefficients)
    _check_budget(student_params, compute, flops_per_token)
    if scenario.delta_logits == 0 and scenario.delta_pretraining == 0:
        return _best_case_plan(student_params, compute, coefficients, flops_per_token)
    return _slsqp_plan(student_params, compute, scenario, coefficients, flops_per_token)


@dataclass(frozen=True)
class Teacher:
    """An existing teacher: its size, the tokens it was trained on, and (if measured) its loss."""

    params: float
    tokens: float
    loss: float | None = None


def best_existing_teacher(
    student_params: float,
    compute: float,
    teachers: Sequence[Teacher],
    scenario: str | Scenario = "teacher-inference",
    coefficients: CoefficientSet | str = "busbridge2025",
    flops_per_token: FlopsPerToken = forward_flops_per_token,
) -> list[Plan]:
    """One plan per teacher that fits the budget (D_S spends the rest of it), best student loss first."""
    student_params = require_positive("student params", student_params)
    compute = require_positive("compute", compute)
    scenario, coefficients = get_scenario(scenario), load_coefficients(coefficients)
    plans = []
    for teacher in teachers:
        params, tokens = (
            require_positive("teacher params", teacher.params),
            require_positive("teacher tokens", teacher.tokens),
        )
        loss = None if teacher.loss is None else require_positive("teacher loss", teacher.loss)
        student_tokens = float(
            student_tokens_for_budget(compute, student_params, params, tokens, scenario, flops_per_token)
        )
        if student_tokens > 0:
            plans.append(
                _make_plan(
                    scenario,
                    compute,
                    student_params,
                    student_tokens,
                    params,
                    tokens,
                    coefficients,
                    flops_per_token,
                    loss,
                )
            )
    if not plans:
        raise ConfigError(
            f"no teacher fits in a budget of {compute:.3g} FLOPs under scenario {scenario.name}"
        )
    return sorted(plans, key=lambda plan: plan.student_loss)


def distillation_wins(
    student_params: float,
    teacher_loss: float,
    coefficients: CoefficientSet | str = "busbridge2025",
    token_range: tuple[float, float] = PAPER_BOUNDS,
) -> list[tuple[float, float]]:
    """The token ranges, within `token_range`, where distilling this student from a teacher of loss L_T beats
    training it on as many tokens of data (Eq. 8 below Eq. 1). An end is a crossing L_S = L (solved to 1e-12 in
    log D) or an end of `token_range`; fitted laws need not have the paper's one crossing."""
    student_params = require_positive("student params", student_params)
    teacher_loss = require_positive("teacher loss", teacher_loss)
    coefficients = load_coefficients(coefficients)

    def advantage(log_tokens):  # < 0 where distillation wins
        tokens = np.exp(log_tokens)
        distilled = distillation_log_loss(student_params, tokens, teacher_loss, coefficients)
        return distilled - supervised_log_loss(student_params, tokens, coefficients.supervised)

    grid = np.linspace(*np.log(token_range), 256)
    wins = advantage(grid) < 0
    edges = [token_range[0]] if wins[0] else []
    for i in np.flatnonzero(wins[1:] != wins[:-1]) + 1:
        edges.append(float(np.exp(brentq(lambda t: float(advantage(t)), grid[i - 1], grid[i], xtol=1e-12))))
    if wins[-1]:
        edges.append(token_range[1])
    return list(zip(edges[::2], edges[1::2], strict=True))


def crossover_tokens(
    student_params: float,
    teacher_loss: float,
    coefficients: CoefficientSet | str = "busbridge2025",
    token_range: tuple[float, float] = PAPER_BOUNDS,
) -> float:
    """Up to how many tokens distilling this student from a teacher of loss L_T beats training it on as many
    tokens of data: the D_S where L_S(N_S, D_S, L_T) = L(N_S, D_S), the paper's crossover.

    Returns 0.0 when distillation does not win at the low end of `token_range` (`distillation_wins` gives every
    range where it does), inf when it wins throughout.
    """
    wins = distillation_wins(student_params, teacher_loss, coefficients, token_range)
    if not wins or wins[0][0] != token_range[0]:
        return 0.0
    end = wins[0][1]
    return math.inf if end == token_range[1] else end
