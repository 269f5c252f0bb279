"""Table 6 of Busbridge et al. 2025 pinned independently of the code: the coefficients as literals (from the
paper), the laws as printed (Eq. 1, Eq. 8) in float64 on those literals, and reference losses
rounded to 4 decimals. A typo in any constant of `BUSBRIDGE2025` or in the laws fails these tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distillab.scaling.laws import BUSBRIDGE2025, distillation_loss, supervised_loss
from tests import textbook

SUPERVISED = {"E": 1.220, "A": 3355.0, "B": 18186.0, "alpha": 0.408, "beta": 0.431, "gamma": 0.452}
DISTILLATION = {
    "A": 2243.0,
    "B": 24181.0,
    "alpha": 0.321,
    "beta": 0.637,
    "gamma": 0.764,
    "c0": 2.549,
    "c1": 522.6,
    "f1": 0.090,
    "d1": 1.315,
}
INTERVALS_90 = {
    "supervised.E": (1.190, 1.247),
    "supervised.A": (3346.0, 3360.0),
    "supervised.B": (18157.0, 18236.0),
    "supervised.alpha": (0.405, 0.411),
    "supervised.beta": (0.428, 0.433),
    "supervised.gamma": (0.442, 0.461),
    "distillation.A": (2227.0, 2255.0),
    "distillation.B": (24084.0, 24266.0),
    "distillation.alpha": (0.319, 0.324),
    "distillation.beta": (0.634, 0.640),
    "distillation.gamma": (0.732, 0.788),
    "distillation.c0": (2.425, 2.615),
    "distillation.c1": (522.6, 522.6),
    "distillation.f1": (0.088, 0.093),
    "distillation.d1": (1.302, 1.327),
}

# L(N = 1e9, D = 2e10) and L_S at that point for three teachers, in nats (issue 11, checked in float64).
REFERENCE_PARAMS, REFERENCE_TOKENS = 1e9, 2e10
SUPERVISED_REFERENCE = 2.3747
DISTILLATION_REFERENCES = [(1.5, 2.2922), (2.0, 2.2768), (2.5, 2.5048)]
FOURTH_DECIMAL = 5e-5


def textbook_supervised(n, d):
    return textbook.supervised_loss(n, d, SUPERVISED)


def textbook_distillation(n, d, teacher):
    return textbook.distillation_loss(n, d, teacher, SUPERVISED, DISTILLATION)


def test_the_named_set_holds_table_6():
    assert dataclasses.asdict(BUSBRIDGE2025.supervised) == SUPERVISED
    assert dataclasses.asdict(BUSBRIDGE2025.distillation) == DISTILLATION
    assert dict(BUSBRIDGE2025.intervals) == INTERVALS_90


def test_the_literal_formulas_give_the_reference_values():
    """The references themselves, from the literals alone (no code under test)."""
    assert textbook_supervised(REFERENCE_PARAMS, REFERENCE_TOKENS) == pytest.approx(
        SUPERVISED_REFERENCE, abs=FOURTH_DECIMAL
    )
    for teacher, expected in DISTILLATION_REFERENCES:
        value = textbook_distillation(REFERENCE_PARAMS, REFERENCE_TOKENS, teacher)
        assert value == pytest.approx(expected, abs=FOURTH_DECIMAL), teacher


def test_supervised_law_reference_value():
    value = float(supervised_loss(REFERENCE_PARAMS, REFERENCE_TOKENS, BUSBRIDGE2025.supervised))
    assert value == pytest.approx(SUPERVISED_REFERENCE, abs=FOURTH_DECIMAL)


@pytest.mark.parametrize(("teacher", "expected"), DISTILLATION_REFERENCES)
def test_distillation_law_reference_values(teacher, expected):
    value = float(distillation_loss(REFERENCE_PARAMS, REFERENCE_TOKENS, teacher, BUSBRIDGE2025))
    assert value == pytest.approx(expected, abs=FOURTH_DECIMAL)


def test_the_laws_match_the_textbook_formulas_on_the_literals():
    """Across scales and teachers, to 1e-12: catches a typo too small to move the 4th decimal at one point
    (c1 = 522.6 vs 522.7 shifts L_S by about 1e-6 nats)."""
    rng = np.random.default_rng(6)
    n, d, teacher = 10 ** rng.uniform(7, 11, 200), 10 ** rng.uniform(8, 13, 200), rng.uniform(1.3, 4.0, 200)
    np.testing.assert_allclose(
        supervised_loss(n, d, BUSBRIDGE2025.supervised), textbook_supervised(n, d), rtol=1e-12
    )
    np.testing.assert_allclose(
        distillation_loss(n, d, teacher, BUSBRIDGE2025), textbook_distillation(n, d, teacher), rtol=1e-12
    )
