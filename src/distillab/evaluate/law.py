"""The scaling law's prediction for each student, beside its measured reference cross-entropy.

A student is predicted only from a coefficient set fitted for its training method (run record `supervised` ->
a set fitted with method `supervised`, `sft` -> `hard`, `kd` -> `soft`; see `CoefficientSet.method`): the
supervised law L(N, D) for a supervised student, the distillation law L_S(N_S, D_S, L_T) for a distilled one,
with L_T the teacher's measured cross-entropy on the same reference data. N is the non-embedding parameter
count, D the supervised tokens trained on (distillab_run.json). Without such a set the entry gets no number,
only the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillab.errors import ConfigError
from distillab.scaling import CoefficientSet, distillation_loss, supervised_loss

FIT_METHOD_OF_RUN = {"supervised": "supervised", "sft": "hard", "kd": "soft"}
FIT_METHOD_WORDS = {
    "supervised": "supervised training",
    "hard": "hard-label distillation (sft)",
    "soft": "soft-label distillation (kd)",
}

NOTE = (
    "A student is predicted only from coefficients fitted for its method on runs of this pipeline "
    "(`distillab study`, or `distillab scaling fit --method supervised|hard|soft`, passed as --coefficients); "
    "the paper's coefficients (busbridge2025) were fit on 0.1-12B models, web text and another tokenizer, and "
    "predict nothing at this scale."
)


def check_coefficient_sets(sets: Sequence[CoefficientSet]) -> None:
    """At most one set per method, so that each student's prediction has one source."""
    seen: dict[str | None, str] = {}
    for coefficients in sets:
        if coefficients.method is not None and coefficients.method in seen:
            raise ConfigError(
                f"--coefficients: {seen[coefficients.method]} and {coefficients.name} are both fitted for "
                f"method {coefficients.method}; give one set per method"
            )
        seen[coefficients.method] = coefficients.name


def describe_set(coefficients: CoefficientSet) -> str:
    """`name` (fitted for METHOD) or `name` (the paper's, not fitted for a method)."""
    fitted = (
        f"fitted for {coefficients.method}" if coefficients.method else "the paper's, fitted for no method"
    )
    return f"`{coefficients.name}` ({fitted})"


def _no_matching_set(fit_method: str, sets: Sequence[CoefficientSet]) -> str:
    words = FIT_METHOD_WORDS[fit_method]
    if not sets:
        return f"no coefficients fitted for {words} were given (--coefficients a `--method {fit_method}` fit)"
    given = ", ".join(describe_set(s) for s in sets)
    return f"none of the coefficient sets given ({given}) was fitted for {words}"


def predict(entry: dict[str, Any], teacher_loss: float, sets: Sequence[CoefficientSet]) -> dict[str, Any]:
    """{law, coefficients, predicted_loss[, teacher_loss]} for a student entry, or {reason} without one."""
    method = entry["method"]
    params, tokens = entry.get("params_non_embedding"), entry.get("train_tokens")
    if method == "teacher":
        return {"reason": "the teacher's training tokens are unknown"}
    if method not in FIT_METHOD_OF_RUN:
        return {"reason": f"no distillab_run.json method for {entry['name']} (got {method!r})"}
    fit_method = FIT_METHOD_OF_RUN[method]
    coefficients = next((s for s in sets if s.method == fit_method), None)
    if coefficients is None:
        return {"reason": _no_matching_set(fit_method, sets)}
    if not params or not tokens:
        return {"reason": "distillab_run.json lacks params_non_embedding or train_tokens"}
    if fit_method == "supervised":
        return {
            "law": "supervised",
            "coefficients": coefficients.name,
            "predicted_loss": float(supervised_loss(params, tokens, coefficients.supervised)),
        }
    return {
        "law": "distillation",
        "coefficients": coefficients.name,
        "teacher_loss": teacher_loss,
        "predicted_loss": float(distillation_loss(params, tokens, teacher_loss, coefficients)),
    }
