"""The scaling-law prediction beside each measurement."""

from __future__ import annotations

import dataclasses

import pytest

from distillab.evaluate.law import predict
from distillab.scaling import (
    BUSBRIDGE2025,
    distillation_loss,
    load_coefficients,
    save_coefficients,
    supervised_loss,
)


def entry(method, params=1e6, tokens=2e7):
    return {"name": method, "method": method, "params_non_embedding": params, "train_tokens": tokens}


def test_supervised_students_get_the_supervised_law():
    prediction = predict(entry("supervised"), teacher_loss=2.5, coefficients=BUSBRIDGE2025)
    assert prediction["law"] == "supervised"
    assert prediction["predicted_loss"] == pytest.approx(
        float(supervised_loss(1e6, 2e7, BUSBRIDGE2025.supervised))
    )


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_distilled_students_get_the_distillation_law_with_the_measured_teacher_loss(method):
    prediction = predict(entry(method), teacher_loss=2.5, coefficients=BUSBRIDGE2025)
    assert prediction["law"] == "distillation" and prediction["teacher_loss"] == 2.5
    assert prediction["predicted_loss"] == pytest.approx(
        float(distillation_loss(1e6, 2e7, 2.5, BUSBRIDGE2025))
    )


def test_a_fitted_coefficient_file_changes_the_prediction(tmp_path):
    fitted = dataclasses.replace(
        BUSBRIDGE2025, name="fitted", supervised=dataclasses.replace(BUSBRIDGE2025.supervised, E=0.5)
    )
    path = save_coefficients(fitted, tmp_path / "fit.json")
    default = predict(entry("supervised"), 2.5, BUSBRIDGE2025)["predicted_loss"]
    assert predict(entry("supervised"), 2.5, load_coefficients(str(path)))["predicted_loss"] == pytest.approx(
        default - 0.72
    )


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (entry("teacher"), "the teacher's training tokens are unknown"),
        (entry("unknown"), "no distillab_run.json method"),
        (entry("sft", tokens=None), "lacks params_non_embedding or train_tokens"),
    ],
)
def test_no_prediction_says_why(model, reason):
    prediction = predict(model, 2.5, BUSBRIDGE2025)
    assert "predicted_loss" not in prediction and reason in prediction["reason"]
