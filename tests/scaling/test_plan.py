"""Planning: the optimisers against brute force, budgets spent exactly, teachers ranked, the crossover."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillab.errors import ConfigError
from distillab.scaling.flops import distillation_flops, forward_flops_per_token, student_tokens_for_budget
from distillab.scaling.laws import (
    BUSBRIDGE2025,
    CoefficientSet,
    DistillationCoefficients,
    SupervisedCoefficients,
    distillation_loss,
    supervised_loss,
)
from distillab.scaling.plan import (
    PAPER_BOUNDS,
    Teacher,
    best_existing_teacher,
    cheapest_teacher,
    compute_optimal_plan,
    crossover_tokens,
    distillation_wins,
    optimal_teacher_loss,
)
from tests import textbook

COEFS = BUSBRIDGE2025
PAID_SCENARIOS = ["teacher-inference", "teacher-pretraining", "teacher-pretraining-inference"]


def brute_force_student_loss(student_params, compute, scenario):
    """min over a (N_T, D_T) grid of L_S with D_S spending the rest of the budget."""
    teacher_params, teacher_tokens = np.meshgrid(np.geomspace(1e6, 1e17, 221), np.geomspace(1e6, 1e17, 221))
    tokens = student_tokens_for_budget(compute, student_params, teacher_params, teacher_tokens, scenario)
    feasible = tokens >= 1e6
    teacher_loss = supervised_loss(teacher_params[feasible], teacher_tokens[feasible], COEFS.supervised)
    return distillation_loss(student_params, np.minimum(tokens[feasible], 1e17), teacher_loss, COEFS).min()


@pytest.mark.parametrize("scenario", PAID_SCENARIOS)
@pytest.mark.parametrize(("student_params", "compute"), [(1e9, 1e21), (3e9, 1e24)])
def test_plan_spends_the_budget_and_beats_brute_force(scenario, student_params, compute):
    plan = compute_optimal_plan(student_params, compute, scenario)
    spent = distillation_flops(
        student_params, plan.student_tokens, plan.teacher_params, plan.teacher_tokens, scenario
    )
    assert float(spent) == pytest.approx(compute, rel=1e-6)
    assert plan.teacher_loss == pytest.approx(
        float(supervised_loss(plan.teacher_params, plan.teacher_tokens, COEFS.supervised))
    )
    direct = float(distillation_loss(student_params, plan.student_tokens, plan.teacher_loss, COEFS))
    assert plan.student_loss == pytest.approx(direct, rel=1e-12)
    assert plan.student_loss <= brute_force_student_loss(student_params, compute, scenario) + 1e-6
    for value in (plan.student_tokens, plan.teacher_params, plan.teacher_tokens):
        assert 1e6 * (1 - 1e-9) <= value <= 1e17 * (1 + 1e-9)


def test_supervised_baseline_gets_the_whole_budget():
    plan = compute_optimal_plan(1e9, 1e22, "teacher-pretraining")
    tokens = 1e22 / (3 * float(forward_flops_per_token(1e9)))
    assert plan.supervised_student_tokens == pytest.approx(tokens)
    assert plan.supervised_student_loss == pytest.approx(
        float(supervised_loss(1e9, tokens, COEFS.supervised))
    )
    assert plan.to_dict()["distillation_gain"] == pytest.approx(
        plan.supervised_student_loss - plan.student_loss
    )


def test_paying_for_the_teacher_never_helps():
    losses = {s: compute_optimal_plan(1e9, 1e22, s).student_loss for s in ["best", *PAID_SCENARIOS]}
    assert losses["best"] <= min(losses.values()) + 1e-9
    assert losses["teacher-pretraining-inference"] >= max(losses.values()) - 1e-9


def test_best_case_uses_the_optimal_teacher_loss_and_the_cheapest_teacher():
    plan = compute_optimal_plan(1e9, 1e21, "best")
    assert plan.student_tokens == pytest.approx(1e21 / (3 * float(forward_flops_per_token(1e9))))
    losses = np.linspace(COEFS.supervised.E * 1.01, 4.0, 20001)
    grid_best = losses[np.argmin(distillation_loss(1e9, plan.student_tokens, losses, COEFS))]
    assert plan.teacher_loss == pytest.approx(grid_best, abs=2e-4)
    assert float(
        supervised_loss(plan.teacher_params, plan.teacher_tokens, COEFS.supervised)
    ) == pytest.approx(plan.teacher_loss, rel=1e-6)
    # No teacher on the iso-loss curve is cheaper to pretrain.
    cost = forward_flops_per_token(plan.teacher_params) * plan.teacher_tokens
    for factor in (0.5, 0.8, 1.25, 2.0):
        params = plan.teacher_params * factor
        tokens = _tokens_reaching(params, plan.teacher_loss)
        assert forward_flops_per_token(params) * tokens >= cost * (1 - 1e-6)


def _tokens_reaching(params, loss):
    from scipy.optimize import brentq

    log_tokens = brentq(lambda t: float(supervised_loss(params, math.exp(t), COEFS.supervised)) - loss, 0, 60)
    return math.exp(log_tokens)


def test_cheapest_teacher_of_an_unreachable_loss():
    with pytest.raises(ConfigError, match="no teacher within"):
        cheapest_teacher(COEFS.supervised.E * 0.99, COEFS, forward_flops_per_token)


def test_best_existing_teacher_ranks_by_student_loss():
    teachers = [Teacher(7e9, 2e12), Teacher(3e9, 1e11), Teacher(1e11, 1e12), Teacher(2e9, 5e10, loss=2.05)]
    plans = best_existing_teacher(1e9, 1e22, teachers, "teacher-inference")
    assert len(plans) == 4
    assert [p.student_loss for p in plans] == sorted(p.student_loss for p in plans)
    for plan in plans:
        tokens = student_tokens_for_budget(
            1e22, 1e9, plan.teacher_params, plan.teacher_tokens, "teacher-inference"
        )
        assert plan.student_tokens == pytest.approx(float(tokens))
        assert plan.student_loss == pytest.approx(
            float(distillation_loss(1e9, tokens, plan.teacher_loss, COEFS))
        )
    measured = next(p for p in plans if p.teacher_params == 2e9)
    assert measured.teacher_loss == 2.05


def test_existing_teachers_too_expensive_to_train():
    with pytest.raises(ConfigError, match="no teacher fits in a budget of 1e\\+20 FLOPs"):
        best_existing_teacher(1e9, 1e20, [Teacher(7e9, 2e12)], "teacher-pretraining")


@pytest.mark.parametrize("teacher_loss", [1.6, 1.9, 2.2, 2.6])
def test_crossover_is_where_supervised_catches_up(teacher_loss):
    tokens = crossover_tokens(1e9, teacher_loss)
    assert 1e6 < tokens < 1e17

    def gain(d):
        return float(
            supervised_loss(1e9, d, COEFS.supervised) - distillation_loss(1e9, d, teacher_loss, COEFS)
        )

    assert abs(gain(tokens)) < 1e-9
    assert gain(tokens / 2) > 0 > gain(tokens * 2)


def test_crossover_edge_cases():
    # A teacher far weaker than any student on a few tokens: distillation never wins.
    assert crossover_tokens(1e9, 20.0) == 0.0
    # With a very narrow token range inside the winning region, it wins throughout.
    inside = crossover_tokens(1e9, 1.9) / 10
    assert crossover_tokens(1e9, 1.9, token_range=(inside / 2, inside)) == math.inf


# The CPU study's soft_data fit of 2026-11-30 (report.md, rounded): distilling loses on few tokens, wins in a
# middle range, loses again past it — not the paper's one crossover.
STUDY_SUPERVISED = {"E": 1.08e-10, "A": 176.0, "B": 39.56, "alpha": 0.5875, "beta": 0.1895, "gamma": 1.051}
STUDY_SOFT_DATA = {
    **{"A": 2.76, "B": 28.81, "alpha": 0.1642, "beta": 0.2346, "gamma": 3.395},
    **{"c0": 2.118, "c1": 522.6, "f1": 0.09, "d1": 1.315},
}


def test_distillation_wins_finds_a_middle_range():
    """Before: crossover_tokens was the study's only answer, and it said "never" whenever distillation lost on
    the fewest tokens, although these laws have it win between two crossings."""
    from scipy.optimize import brentq

    coefficients = CoefficientSet(
        "study", SupervisedCoefficients(**STUDY_SUPERVISED), DistillationCoefficients(**STUDY_SOFT_DATA)
    )
    params, teacher_loss, token_range = 26_624, 3.1579, (9_600.0, 8e6)

    def advantage(log_d):  # float64, as printed: < 0 where distillation wins
        d = math.exp(log_d)
        return textbook.distillation_loss(
            params, d, teacher_loss, STUDY_SUPERVISED, STUDY_SOFT_DATA
        ) - textbook.supervised_loss(params, d, STUDY_SUPERVISED)

    assert advantage(math.log(1e4)) > 0 > advantage(math.log(2e5)) and advantage(math.log(8e6)) > 0
    enter = math.exp(brentq(advantage, math.log(1e4), math.log(2e5)))
    leave = math.exp(brentq(advantage, math.log(2e5), math.log(8e6)))

    ((start, end),) = distillation_wins(params, teacher_loss, coefficients, token_range)
    assert start == pytest.approx(enter, rel=1e-6) and end == pytest.approx(leave, rel=1e-6)
    assert crossover_tokens(params, teacher_loss, coefficients, token_range) == 0.0  # no win at the low end


def test_distillation_wins_at_the_ends_of_the_range():
    low_end = crossover_tokens(1e9, 1.9)
    assert distillation_wins(1e9, 1.9) == [(PAPER_BOUNDS[0], pytest.approx(low_end))]
    assert distillation_wins(1e9, 20.0) == []
    inside = (low_end / 20, low_end / 10)
    assert distillation_wins(1e9, 1.9, token_range=inside) == [inside]


def test_optimal_teacher_loss_is_above_the_irreducible_loss():
    for params in (1e8, 1e10):
        loss = optimal_teacher_loss(params, 20 * params, COEFS)
        assert COEFS.supervised.E < loss < float(supervised_loss(params, 20 * params, COEFS.supervised))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0.0, 1e21), "student params must be a finite number > 0, got 0.0"),
        ((1e9, float("nan")), "compute must be a finite number > 0, got nan"),
        ((1e9, 1e12), "compute 1e\\+12 FLOPs is below"),
    ],
)
def test_plan_rejects_bad_input(arguments, message):
    with pytest.raises(ConfigError, match=message):
        compute_optimal_plan(*arguments)


def test_plan_rejects_unknown_scenario_and_coefficients():
    with pytest.raises(ConfigError, match="unknown scenario 'free'"):
        compute_optimal_plan(1e9, 1e21, "free")
    with pytest.raises(ConfigError, match="unknown coefficient set 'kaplan'"):
        compute_optimal_plan(1e9, 1e21, "best", "kaplan")


def test_best_case_when_the_best_teacher_is_beyond_the_bounds():
    """A 1e11-parameter student wants a teacher stronger than any within [1e6, 1e17]: take the strongest."""
    plan = compute_optimal_plan(1e11, 1e22, "best")
    assert (plan.teacher_params, plan.teacher_tokens) == (1e17, 1e17)
    tokens = plan.student_tokens
    reachable = np.linspace(plan.teacher_loss, 4.0, 2000)
    assert plan.student_loss <= distillation_loss(1e11, tokens, reachable, COEFS).min() + 1e-12


@pytest.mark.parametrize("scenario", PAID_SCENARIOS)
def test_plan_for_a_small_budget_and_a_large_student(scenario):
    plan = compute_optimal_plan(1e10, 1e19, scenario)
    assert plan.student_loss <= brute_force_student_loss(1e10, 1e19, scenario) + 1e-6
