"""The scaling-law prediction beside each measurement: only from a set fitted for the student's method,
checked against Eq. 1 / Eq. 8 as printed on the literal coefficients."""

from __future__ import annotations

import pytest

from distillab.errors import ConfigError
from distillab.evaluate.law import check_coefficient_sets, predict
from distillab.scaling import BUSBRIDGE2025, load_coefficients, save_coefficients
from tests import textbook
from tests.evaluate.fitted import HARD, SOFT, SUPERVISED, fitted_set

N, D, TEACHER_LOSS = 1e6, 2e7, 2.5
ALL_FITS = [fitted_set("supervised"), fitted_set("hard", HARD), fitted_set("soft", SOFT)]


def entry(method, params=N, tokens=D):
    return {"name": method, "method": method, "params_non_embedding": params, "train_tokens": tokens}


def test_supervised_students_get_the_supervised_fit():
    prediction = predict(entry("supervised"), TEACHER_LOSS, ALL_FITS)
    assert prediction["law"] == "supervised" and prediction["coefficients"] == "supervised-fit"
    assert prediction["predicted_loss"] == pytest.approx(
        textbook.supervised_loss(N, D, SUPERVISED), rel=1e-12
    )


@pytest.mark.parametrize(("method", "fit", "distillation"), [("sft", "hard", HARD), ("kd", "soft", SOFT)])
def test_distilled_students_get_the_fit_for_their_method(method, fit, distillation):
    prediction = predict(entry(method), TEACHER_LOSS, ALL_FITS)
    assert prediction["law"] == "distillation" and prediction["teacher_loss"] == TEACHER_LOSS
    assert prediction["coefficients"] == f"{fit}-fit"
    expected = textbook.distillation_loss(N, D, TEACHER_LOSS, SUPERVISED, distillation)
    assert prediction["predicted_loss"] == pytest.approx(expected, rel=1e-12)


def test_a_fitted_file_predicts_like_its_literals(tmp_path):
    path = save_coefficients(fitted_set("hard", HARD), tmp_path / "hard.yaml")
    prediction = predict(entry("sft"), TEACHER_LOSS, [load_coefficients(str(path))])
    expected = textbook.distillation_loss(N, D, TEACHER_LOSS, SUPERVISED, HARD)
    assert prediction["predicted_loss"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["supervised", "sft", "kd"])
def test_the_papers_coefficients_predict_nothing(method):
    prediction = predict(entry(method), TEACHER_LOSS, [BUSBRIDGE2025])
    assert "predicted_loss" not in prediction
    assert prediction["reason"].startswith(
        "none of the coefficient sets given (`busbridge2025` (the paper's, fitted for no method)) was fitted for"
    )


def test_no_number_when_no_set_matches_the_method():
    sets = [fitted_set("supervised"), fitted_set("soft")]
    prediction = predict(entry("sft"), TEACHER_LOSS, sets)
    assert prediction == {
        "reason": "none of the coefficient sets given (`supervised-fit` (fitted for supervised), `soft-fit` "
        "(fitted for soft)) was fitted for hard-label distillation (sft)"
    }
    assert predict(entry("kd"), TEACHER_LOSS, []) == {
        "reason": "no coefficients fitted for soft-label distillation (kd) were given "
        "(--coefficients a `--method soft` fit)"
    }


def test_two_sets_for_one_method_are_refused():
    with pytest.raises(ConfigError, match="soft-fit and soft-fit are both fitted for method soft"):
        check_coefficient_sets([fitted_set("soft"), fitted_set("supervised"), fitted_set("soft")])
    check_coefficient_sets([BUSBRIDGE2025, *ALL_FITS])


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (entry("teacher"), "the teacher's training tokens are unknown"),
        (entry("unknown"), "no distillab_run.json method"),
        (entry("sft", tokens=None), "lacks params_non_embedding or train_tokens"),
    ],
)
def test_no_prediction_says_why(model, reason):
    prediction = predict(model, TEACHER_LOSS, ALL_FITS)
    assert "predicted_loss" not in prediction and reason in prediction["reason"]
