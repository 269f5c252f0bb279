"""Fitting: the objective, its gradient and grid scoring against direct evaluation; recovery of known
coefficients from synthetic runs; bootstrap intervals; the runs-file orchestration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distillab.errors import ConfigError, DataError
from distillab.scaling.fit import (
    DISTILLATION,
    SUPERVISED,
    FitData,
    fit_coefficients,
    fit_distillation,
    fit_law,
    fit_supervised,
    huber,
    objective_and_gradient,
    resolve_kind,
)
from distillab.scaling.laws import (
    BUSBRIDGE2025,
    distillation_log_loss,
    distillation_loss,
    supervised_log_loss,
    supervised_loss,
)
from distillab.scaling.runs import Runs, synthetic_runs

COEFS = BUSBRIDGE2025
TRUE_SUPERVISED_THETA = np.array([np.log(1.22), np.log(3355.0), np.log(18186.0), 0.408, 0.431, 0.452])
TRUE_DISTILLATION_THETA = np.array(
    [np.log(2243.0), np.log(24181.0), 0.321, 0.637, 0.764, 2.549, 522.6, 0.090, np.log(1.315)]
)


@pytest.fixture(scope="module")
def supervised_data():
    return FitData.from_runs(synthetic_runs(50, "supervised", seed=1, noise=0.02))


@pytest.fixture(scope="module")
def distillation_data():
    return FitData.from_runs(synthetic_runs(50, seed=2, noise=0.02), COEFS.supervised)


def test_huber_is_the_textbook_piecewise_function():
    r = np.array([-3e-4, -1e-4, -5e-5, 0.0, 2e-5, 1e-4, 0.2])
    delta = 1e-4
    textbook = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    np.testing.assert_allclose(huber(r, delta), textbook, rtol=1e-12, atol=1e-24)


def test_predictions_are_the_laws(supervised_data, distillation_data):
    sup_theta = TRUE_SUPERVISED_THETA * 1.1
    expected = supervised_log_loss(
        np.exp(supervised_data.log_n), np.exp(supervised_data.log_d), SUPERVISED.to_coefficients(sup_theta)
    )
    np.testing.assert_allclose(SUPERVISED.predict(sup_theta, supervised_data)[0], expected, rtol=1e-13)
    theta = TRUE_DISTILLATION_THETA * 0.9
    coefficients = dataclasses.replace(COEFS, distillation=DISTILLATION.to_coefficients(theta))
    data = distillation_data
    expected = distillation_log_loss(
        np.exp(data.log_n), np.exp(data.log_d), np.exp(data.log_teacher), coefficients
    )
    np.testing.assert_allclose(DISTILLATION.predict(theta, data)[0], expected, rtol=1e-13)


@pytest.mark.parametrize("spec_name", ["supervised", "distillation"])
def test_jacobian_matches_finite_differences(spec_name, supervised_data, distillation_data):
    spec, data, theta = {
        "supervised": (SUPERVISED, supervised_data, TRUE_SUPERVISED_THETA * 1.05),
        "distillation": (DISTILLATION, distillation_data, TRUE_DISTILLATION_THETA * 0.97),
    }[spec_name]
    _, jacobian = spec.predict(theta, data)
    step = 1e-6
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += step
        down[i] -= step
        numeric = (spec.predict(up, data)[0] - spec.predict(down, data)[0]) / (2 * step)
        np.testing.assert_allclose(jacobian[i], numeric, rtol=1e-5, atol=1e-8, err_msg=spec.names[i])


def test_objective_gradient_is_jacobian_times_clipped_residual(distillation_data):
    theta = TRUE_DISTILLATION_THETA * 0.97
    value, gradient = objective_and_gradient(theta, DISTILLATION, distillation_data)
    prediction, jacobian = DISTILLATION.predict(theta, distillation_data)
    residual = prediction - distillation_data.log_loss
    scale = residual.size * 1e-4
    assert value == pytest.approx(huber(residual).sum() / scale, rel=1e-12)
    np.testing.assert_allclose(gradient, jacobian @ np.clip(residual, -1e-4, 1e-4) / scale, rtol=1e-12)


@pytest.mark.parametrize(("spec", "size"), [(SUPERVISED, 9600), (DISTILLATION, 216_000)])
def test_grid_scores_are_the_objective(spec, size, supervised_data, distillation_data):
    """The factored, vectorised grid scoring gives the paper's full grid and the same objective values."""
    data = supervised_data if spec is SUPERVISED else distillation_data
    scores, thetas = spec.score_grid(data, spec.grid)
    assert scores.shape == (size,) and thetas.shape == (size, len(spec.names)) == (
        spec.grid_size,
        len(spec.grid),
    )
    for column, values in zip(thetas.T, spec.grid, strict=True):
        assert set(column) == set(values)
    assert len(np.unique(thetas, axis=0)) == size
    rows = np.random.default_rng(0).choice(size, 40, replace=False)
    direct = [objective_and_gradient(thetas[row], spec, data)[0] for row in rows]
    np.testing.assert_allclose(scores[rows], direct, rtol=1e-4)


def _relative_errors(predicted, truth):
    return np.abs(predicted / truth - 1)


def test_noise_free_supervised_runs_are_recovered():
    fit = fit_supervised(synthetic_runs(40, "supervised", seed=3), n_starts=32)
    probe = synthetic_runs(500, "supervised", seed=4)
    errors = _relative_errors(
        supervised_loss(probe.student_params, probe.student_tokens, fit.coefficients), probe.loss
    )
    assert fit.relative_error < 1e-4 and errors.max() < 1e-3
    assert fit.grid_starts == 9600 and fit.optimized_starts == 32


def test_noise_free_distillation_runs_are_recovered():
    fit = fit_distillation(synthetic_runs(80, seed=5), COEFS.supervised, n_starts=32)
    recovered = dataclasses.replace(COEFS, distillation=fit.coefficients)
    probe = synthetic_runs(1000, seed=6)
    predicted = distillation_loss(probe.student_params, probe.student_tokens, probe.teacher_loss, recovered)
    assert fit.relative_error < 1e-4
    assert _relative_errors(predicted, probe.loss).max() < 1e-3
    assert fit.grid_starts == 216_000


def test_noisy_supervised_intervals_cover_the_truth():
    fit = fit_supervised(
        synthetic_runs(80, "supervised", seed=0, noise=0.005), n_starts=32, bootstrap=100, confidence=0.95
    )
    truth = dataclasses.asdict(COEFS.supervised)
    assert set(fit.intervals) == {f"supervised.{name}" for name in truth}
    for name, value in truth.items():
        low, high = fit.intervals[f"supervised.{name}"]
        assert low <= value <= high, name
    assert fit.relative_error == pytest.approx(0.005 * np.sqrt(2 / np.pi), rel=0.3)  # E|noise| of a N(0, s)


@pytest.mark.slow
def test_noisy_distillation_prediction_intervals_cover_the_truth():
    """The distillation coefficients are weakly identified (paper: c1 at a bound), so check the predictions:
    their bootstrap intervals hold the noise-free law at most held-out points and miss it by little."""
    fit = fit_distillation(
        synthetic_runs(150, seed=0, noise=0.005),
        COEFS.supervised,
        n_starts=32,
        bootstrap=50,
        confidence=0.95,
    )
    probe = synthetic_runs(200, seed=7)
    low, high = fit.prediction_interval(FitData.from_runs(probe, COEFS.supervised))
    covered = (low <= probe.loss) & (probe.loss <= high)
    assert covered.mean() > 0.75
    assert np.max(np.maximum(low / probe.loss - 1, probe.loss / high - 1)) < 1e-3


def test_workers_give_the_same_fit():
    runs = synthetic_runs(30, "supervised", seed=8, noise=0.01)
    one = fit_supervised(runs, n_starts=8)
    two = fit_supervised(runs, n_starts=8, workers=2)
    np.testing.assert_allclose(one.theta, two.theta, rtol=1e-10)


def test_too_few_runs():
    with pytest.raises(DataError, match="supervised law needs more than 6 runs, got 5"):
        fit_supervised(synthetic_runs(5, "supervised", seed=0))


def _mixed_runs() -> Runs:
    supervised, distilled = synthetic_runs(40, "supervised", seed=9), synthetic_runs(60, seed=10)
    return Runs(
        *(
            np.concatenate([getattr(supervised, f), getattr(distilled, f)])
            for f in ("student_params", "student_tokens", "loss", "teacher_loss")
        )
    )


def test_kind_is_resolved_from_the_teacher_column():
    assert resolve_kind("auto", synthetic_runs(10, "supervised", seed=0)) == "supervised"
    assert resolve_kind("auto", synthetic_runs(10, seed=0)) == "distillation"
    assert resolve_kind("auto", _mixed_runs()) == "both"
    with pytest.raises(DataError, match="unknown fit kind 'teacher'"):
        resolve_kind("teacher", _mixed_runs())


def test_fit_both_laws_from_mixed_runs():
    report = fit_coefficients(_mixed_runs(), "auto", name="mixed", n_starts=16, holdout=0.2, method="soft")
    assert [fit.kind for fit in report.fits] == ["supervised", "distillation"]
    coefficients = report.coefficients
    assert coefficients.name == "mixed" and coefficients.metadata["fitted"] == ["supervised", "distillation"]
    assert coefficients.method == "soft"
    assert coefficients.metadata["runs"] == {"supervised": 32, "distillation": 48}  # 20% held out
    # Held out: the largest students, predicted by extrapolation.
    assert set(report.held_out_relative_error) == {"supervised", "distillation"}
    assert max(report.held_out_relative_error.values()) < 1e-3
    probe = synthetic_runs(300, seed=11)
    predicted = distillation_loss(
        probe.student_params, probe.student_tokens, probe.teacher_loss, coefficients
    )
    assert _relative_errors(predicted, probe.loss).max() < 2e-3


def test_supervised_only_fit_keeps_the_base_distillation_law():
    report = fit_coefficients(synthetic_runs(30, "supervised", seed=12), "supervised", n_starts=8)
    assert report.coefficients.distillation == COEFS.distillation
    assert report.coefficients.metadata["base"] == "busbridge2025"
    assert report.coefficients.method == "supervised"
    with pytest.raises(DataError, match="runs: no distilled runs"):
        fit_coefficients(synthetic_runs(30, "supervised", seed=12), "distillation", method="hard")


def test_method_supervised_fits_only_the_supervised_rows():
    report = fit_coefficients(_mixed_runs(), method="supervised", n_starts=4)
    assert [fit.kind for fit in report.fits] == ["supervised"] and report.coefficients.method == "supervised"


def test_holdout_by_params_tokens_holds_out_the_largest_n_times_d():
    runs = synthetic_runs(30, "supervised", seed=14)
    report = fit_coefficients(runs, n_starts=4, holdout=0.2, holdout_by="params_tokens")
    held = report.held_out["supervised"]
    assert len(held) == 6 and report.coefficients.metadata["runs"] == {"supervised": 24}
    compute = runs.student_params * runs.student_tokens
    assert sorted(held.student_params * held.student_tokens) == sorted(np.sort(compute)[-6:])
    by_params = fit_coefficients(runs, n_starts=4, holdout=0.2).held_out["supervised"]
    assert sorted(by_params.student_params) == sorted(np.sort(runs.student_params)[-6:])


def test_fixed_coefficients_stay_at_their_values_and_need_fewer_runs():
    """With c1, f1, d1 held at 522.6, 0.090, 1.315 the distillation law has 6 free coefficients: 7 runs fit."""
    fixed = {"distillation.c1": 522.6, "distillation.f1": 0.090, "distillation.d1": 1.315}
    report = fit_coefficients(
        synthetic_runs(7, seed=15), "distillation", method="soft", fixed=fixed, n_starts=8, bootstrap=3
    )
    fitted = report.coefficients.distillation
    assert (fitted.c1, fitted.f1) == (522.6, 0.090) and fitted.d1 == pytest.approx(1.315, rel=1e-12)
    assert report.coefficients.metadata["fixed"] == pytest.approx(fixed, rel=1e-12)
    assert report.coefficients.intervals["distillation.c1"] == (522.6, 522.6)
    assert report.fits[0].grid_starts == 5 * 5 * 3 * 3 * 3 * 4  # log A', log B', alpha', beta', gamma', c0
    with pytest.raises(DataError, match="distillation law needs more than 6 runs, got 6"):
        fit_coefficients(synthetic_runs(6, seed=15), "distillation", method="soft", fixed=fixed)
    with pytest.raises(ConfigError, match="the distillation law has no coefficient 'E'"):
        fit_coefficients(
            synthetic_runs(8, seed=15), "distillation", method="soft", fixed={"distillation.E": 1}
        )


def test_fit_law_rejects_nothing_silently():
    data = FitData.from_runs(synthetic_runs(20, "supervised", seed=13))
    fit = fit_law(SUPERVISED, data, n_starts=4, n_polish=2)
    assert fit.optimized_starts == 4 and fit.bootstrap_thetas is None and fit.intervals == {}
    with pytest.raises(ValueError, match="bootstrap > 0"):
        fit.prediction_interval(data)
