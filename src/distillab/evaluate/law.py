"""The scaling law's prediction for each model, beside its measured reference cross-entropy.

A supervised student gets the supervised law L(N, D); a distilled one (sft: hard labels, kd: soft labels) the
distillation law L_S(N_S, D_S, L_T), with L_T the teacher's measured cross-entropy on the same reference data.
N is the non-embedding parameter count, D the supervised tokens trained on (distillab_run.json).
"""

from __future__ import annotations

from typing import Any

from distillab.scaling import CoefficientSet, distillation_loss, supervised_loss

DISTILLED_METHODS = ("sft", "kd")

CAVEAT = (
    "The default coefficients (Busbridge et al. 2025) were fit on large models trained on a web-text mixture "
    "with another tokenizer; at micro scale and on other data the prediction is a reference line, not an "
    "expected value. Fit coefficients on your own runs (`distillab scaling fit`) and pass the file as "
    "`--coefficients` for a prediction on this distribution."
)


def predict(entry: dict[str, Any], teacher_loss: float, coefficients: CoefficientSet) -> dict[str, Any]:
    """{law, predicted_loss, teacher_loss} for a student entry, or {reason} when there is no prediction."""
    method = entry["method"]
    params, tokens = entry.get("params_non_embedding"), entry.get("train_tokens")
    if method == "teacher":
        return {"reason": "the teacher's training tokens are unknown"}
    if method not in (*DISTILLED_METHODS, "supervised"):
        return {"reason": f"no distillab_run.json method for {entry['name']} (got {method!r})"}
    if not params or not tokens:
        return {"reason": "distillab_run.json lacks params_non_embedding or train_tokens"}
    if method == "supervised":
        return {
            "law": "supervised",
            "predicted_loss": float(supervised_loss(params, tokens, coefficients.supervised)),
        }
    return {
        "law": "distillation",
        "teacher_loss": teacher_loss,
        "predicted_loss": float(distillation_loss(params, tokens, teacher_loss, coefficients)),
    }
