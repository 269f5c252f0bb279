"""Literal coefficient sets "fitted" for each method, for the evaluate tests (values chosen by hand, of the
order a micro-scale fit gives)."""

from __future__ import annotations

from distillab.scaling import CoefficientSet, DistillationCoefficients, SupervisedCoefficients

SUPERVISED = {"E": 1.9, "A": 60.0, "B": 350.0, "alpha": 0.3, "beta": 0.35, "gamma": 0.7}
HARD = {
    "A": 90.0,
    "B": 700.0,
    "alpha": 0.25,
    "beta": 0.45,
    "gamma": 0.8,
    "c0": 1.5,
    "c1": 522.6,
    "f1": 0.09,
    "d1": 1.315,
}
SOFT = {
    "A": 80.0,
    "B": 500.0,
    "alpha": 0.28,
    "beta": 0.4,
    "gamma": 0.9,
    "c0": 2.0,
    "c1": 522.6,
    "f1": 0.09,
    "d1": 1.315,
}


def fitted_set(method: str, distillation: dict = SOFT) -> CoefficientSet:
    """A set fitted for `method`, named `<method>-fit`."""
    return CoefficientSet(
        name=f"{method}-fit",
        supervised=SupervisedCoefficients(**SUPERVISED),
        distillation=DistillationCoefficients(**distillation),
        method=method,
    )
