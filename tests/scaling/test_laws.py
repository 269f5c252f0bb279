"""The laws against their direct (non-log) forms, their properties, and coefficient-set files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from distillab.errors import ConfigError
from distillab.scaling.laws import (
    BUSBRIDGE2025,
    compute_optimal_exponents,
    distillation_log_loss,
    distillation_loss,
    load_coefficients,
    save_coefficients,
    supervised_loss,
)
from distillab.scaling.plan import optimal_teacher_loss

COEFS = BUSBRIDGE2025
E = COEFS.supervised.E


def direct_supervised(params, tokens, c=COEFS.supervised):
    """Eq. 1 as printed."""
    return c.E + (c.A / params**c.alpha + c.B / tokens**c.beta) ** c.gamma


def direct_distillation(params, tokens, teacher, coefficients=COEFS):
    """Eq. 8 as printed (ratio L_T / (Ltilde_S d1), exponent 1/f1)."""
    d = coefficients.distillation
    ratio = teacher / (direct_supervised(params, tokens, coefficients.supervised) * d.d1)
    student = (d.A / params**d.alpha + d.B / tokens**d.beta) ** d.gamma
    return teacher + teacher ** (-d.c0) * (1 + ratio ** (1 / d.f1)) ** (-d.c1 * d.f1) * student


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    n = 5000
    return 10 ** rng.uniform(7, 12, n), 10 ** rng.uniform(8, 14, n), rng.uniform(1.25, 5.0, n)


def test_log_form_matches_direct_form(sample):
    params, tokens, teacher = sample
    np.testing.assert_allclose(
        supervised_loss(params, tokens, COEFS.supervised), direct_supervised(params, tokens), rtol=1e-12
    )
    np.testing.assert_allclose(
        distillation_loss(params, tokens, teacher, COEFS),
        direct_distillation(params, tokens, teacher),
        rtol=1e-12,
    )


def test_laws_broadcast_like_numpy():
    params = np.array([1e8, 1e9, 1e10])[:, None]
    tokens = np.array([1e10, 1e11])[None, :]
    out = distillation_loss(params, tokens, 2.0, COEFS)
    assert out.shape == (3, 2)
    assert out[1, 0] == pytest.approx(float(distillation_loss(1e9, 1e10, 2.0, COEFS)), rel=1e-14)


def test_student_is_never_better_than_its_teacher(sample):
    params, tokens, teacher = sample
    log_student = distillation_log_loss(params, tokens, teacher, COEFS)
    assert np.all(log_student >= np.log(teacher))  # in log space: exp() may round L_S to 1 ulp below L_T
    # Strictly, wherever the teacher is not far weaker than the student (else L_S - L_T underflows).
    student = np.exp(log_student)
    near = teacher <= COEFS.distillation.d1 * supervised_loss(params, tokens, COEFS.supervised)
    assert near.sum() > 1000 and np.all(student[near] > teacher[near])
    # ... and yet distillation beats supervised training on the same tokens somewhere.
    assert np.any(student < supervised_loss(params, tokens, COEFS.supervised))


@pytest.mark.parametrize(("params", "tokens"), [(1e8, 2e9), (1e9, 1e11), (1e10, 2e11), (3e10, 1e13)])
def test_weak_teacher_limit(params, tokens):
    """L_S -> L_T once the teacher is weaker than about d1 x the student's supervised loss."""
    supervised = float(supervised_loss(params, tokens, COEFS.supervised))
    teachers = COEFS.distillation.d1 * supervised * np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    gap = distillation_loss(params, tokens, teachers, COEFS) - teachers
    assert np.all(gap > 0) and np.all(np.diff(gap) < 0)
    assert gap[-1] / gap[0] < 1e-3
    weak = 1.5 * COEFS.distillation.d1 * supervised
    assert float(distillation_loss(params, tokens, weak, COEFS)) == pytest.approx(weak, rel=1e-12)


@pytest.mark.parametrize("params", [1e8, 1e9, 1e10, 1e11])
@pytest.mark.parametrize("tokens_per_param", [5.0, 20.0, 1000.0])
def test_single_interior_minimum_in_teacher_loss(params, tokens_per_param):
    """The capacity gap: L_S(L_T) falls, reaches one minimum above E, then rises."""
    teachers = np.linspace(E * 1.001, 8.0, 20000)
    student = distillation_loss(params, tokens_per_param * params, teachers, COEFS)
    slope_sign = np.sign(np.diff(student))
    assert slope_sign[0] < 0 and slope_sign[-1] > 0
    assert np.count_nonzero(np.diff(slope_sign)) == 1
    best = teachers[np.argmin(student)]
    assert optimal_teacher_loss(params, tokens_per_param * params, COEFS) == pytest.approx(best, abs=1e-3)


@pytest.mark.parametrize("params", np.geomspace(1e8, 1e11, 7))
def test_infinite_data_matches_supervised_lower_bound(params):
    """min over L_T of L_S(N_S, D_S -> inf, L_T) ~ E + (A N_S^-alpha)^gamma to about a hundredth of a nat."""
    s = COEFS.supervised
    best = minimize_scalar(
        lambda t: float(distillation_loss(params, np.inf, t, COEFS)), bounds=(E, 6.0), method="bounded"
    )
    lower_bound = s.E + (s.A * params ** (-s.alpha)) ** s.gamma
    assert float(supervised_loss(params, np.inf, s)) == pytest.approx(lower_bound, rel=1e-12)
    assert abs(best.fun - lower_bound) < 0.015


def test_compute_optimal_exponents_are_the_papers():
    exponents = compute_optimal_exponents(COEFS)
    expected = {"a": 0.513, "b": 0.486, "a_distillation": 0.664, "b_distillation": 0.335}
    assert exponents == pytest.approx(expected, abs=1.5e-3)
    assert exponents["a"] + exponents["b"] == pytest.approx(1.0)


def _optimal_params(loss_at, budgets):
    """argmin_N loss_at(N, D = C / (6N)) for each budget C (FLOPs = 6ND)."""
    out = []
    for budget in budgets:

        def loss(log_n, budget=budget):
            return float(loss_at(np.exp(log_n), budget / (6 * np.exp(log_n))))

        bounds = (np.log(1e5), np.log(budget / 6e5))
        out.append(minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-10}).x)
    return np.array(out)


def test_compute_optimal_exponents_match_numerical_optima():
    """N* ∝ C^a for the supervised law; N_S* ∝ C^a' for the distillation law's student term (c1 = 0, so the
    teacher-gap factor is exactly 1), at any fixed teacher loss."""
    budgets = np.geomspace(1e19, 1e25, 7)
    exponents = compute_optimal_exponents(COEFS)
    log_n = _optimal_params(lambda n, d: supervised_loss(n, d, COEFS.supervised), budgets)
    assert np.polyfit(np.log(budgets), log_n, 1)[0] == pytest.approx(exponents["a"], abs=1e-4)
    no_gap = dataclasses.replace(COEFS, distillation=dataclasses.replace(COEFS.distillation, c1=0.0))
    log_n = _optimal_params(lambda n, d: distillation_loss(n, d, 2.0, no_gap), budgets)
    assert np.polyfit(np.log(budgets), log_n, 1)[0] == pytest.approx(exponents["a_distillation"], abs=1e-4)


# --- coefficient sets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_coefficient_files_round_trip(tmp_path, suffix):
    custom = dataclasses.replace(
        COEFS,
        name="custom",
        supervised=dataclasses.replace(COEFS.supervised, E=1.5),
        intervals={"supervised.E": (1.4, 1.6)},
        metadata={"fitted": ["supervised"], "runs": {"supervised": 12}},
        method="supervised",
    )
    path = save_coefficients(custom, tmp_path / f"set{suffix}")
    loaded = load_coefficients(str(path))
    assert loaded == custom and loaded.method == "supervised"
    assert loaded.intervals == {"supervised.E": (1.4, 1.6)}
    assert loaded.metadata == custom.metadata
    assert float(supervised_loss(1e9, 1e10, loaded.supervised)) == pytest.approx(
        float(direct_supervised(1e9, 1e10, custom.supervised))
    )


def test_named_set_is_the_default():
    assert load_coefficients() is BUSBRIDGE2025
    assert load_coefficients("busbridge2025") is BUSBRIDGE2025
    assert BUSBRIDGE2025.method is None  # the paper's: not fitted for a method of this pipeline


def test_coefficient_file_with_an_unknown_method(tmp_path):
    path = tmp_path / "bad.json"
    save_coefficients(dataclasses.replace(COEFS, method="soft"), path)
    path.write_text(path.read_text().replace('"soft"', '"kd"'))
    with pytest.raises(ConfigError, match=r"bad.json: .*unknown method 'kd'; choose from supervised, hard"):
        load_coefficients(path)


def test_unknown_coefficient_set_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown coefficient set 'chinchilla'.*busbridge2025"):
        load_coefficients("chinchilla")


def test_coefficient_file_missing_a_coefficient(tmp_path):
    path = tmp_path / "bad.json"
    data = json.loads(json.dumps({"supervised": dataclasses.asdict(COEFS.supervised)}))
    data["distillation"] = {k: v for k, v in dataclasses.asdict(COEFS.distillation).items() if k != "d1"}
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"bad.json: distillation coefficients: missing \['d1'\]"):
        load_coefficients(path)


def test_coefficient_file_with_a_non_number(tmp_path):
    path = tmp_path / "bad.yaml"
    save_coefficients(COEFS, path)
    path.write_text(path.read_text().replace("E: 1.22", "E: lots"))
    with pytest.raises(ConfigError, match=r"supervised\.E must be a number, got 'lots'"):
        load_coefficients(path)


def test_coefficient_file_with_malformed_intervals(tmp_path):
    path = tmp_path / "bad.json"
    save_coefficients(COEFS, path)
    data = json.loads(path.read_text())
    data["intervals"]["supervised.E"] = [1.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="intervals must map names to"):
        load_coefficients(path)
