"""report.md pieces that the end-to-end run does not reach: unmatched budgets, failed lm-eval tasks."""

from __future__ import annotations

from distillab.evaluate.report import lm_eval_columns, render_report, token_match
from distillab.evaluate.verdict import retention


def model(name, method, train_tokens=None, lm_eval=None, runs=None, **metrics):
    return {
        "name": name,
        "method": method,
        "params_non_embedding": 1000,
        "train_tokens": train_tokens,
        "flops": None,
        "ce_reference": metrics.get("ce_reference", 3.0),
        "predicted_loss": None,
        "prediction": {"reason": "n/a"},
        "lm_eval": lm_eval or {},
        "lm_eval_runs": runs or {},
        "skipped": {},
    }


def test_token_budgets_match_within_five_percent():
    teacher = model("t", "teacher")
    assert token_match([teacher, model("a", "sft", 1000), model("b", "kd", 1040)])["matched"] is True
    unmatched = token_match([teacher, model("a", "sft", 1000), model("b", "supervised", 1500)])
    assert unmatched["matched"] is False and unmatched["spread"] == 0.5
    assert token_match([teacher, model("a", "sft", 1000)])["matched"] is None


def test_lm_eval_columns_union_in_first_seen_order():
    models = [
        model("a", "sft", lm_eval={"x": {"acc": 1.0}}),
        model("b", "kd", lm_eval={"x": {"f1": 0.1}, "y": {"acc": 0.5}}),
    ]
    assert lm_eval_columns(models) == [("x", "acc"), ("x", "f1"), ("y", "acc")]


def test_report_flags_unmatched_budgets_and_failed_tasks():
    runs = {"hellaswag": {"error": "Couldn't reach 'Rowan/hellaswag' on the Hub"}}
    results = {
        "teacher": "t",
        "created_at": "now",
        "models": [model("t", "teacher", runs=runs), model("a", "sft", 1000), model("b", "supervised", 2000)],
        "matched_tokens": token_match([model("a", "sft", 1000), model("b", "supervised", 2000)]),
        "eval_sets": {"lm_eval": {"tasks": ["hellaswag"]}},
        "scaling_law": {"coefficient_sets": [], "note": "fitted sets only"},
        "decontamination": {
            "ngram": 8,
            "train_datasets": [],
            "unreadable": {},
            "sets": {},
            "not_checked": {},
        },
        "plots": [],
        "retention": retention([model("t", "teacher"), model("a", "sft", 1000)]),
        "verdict": ["No student has a score to compare."],
    }
    report = render_report(results)
    assert "spread 100.0%, **not matched**" in report
    assert "- lm-eval `hellaswag` failed on t: Couldn't reach 'Rowan/hellaswag' on the Hub" in report
    assert "- a: no prediction (n/a)" in report


def test_the_prediction_plot_draws_only_predicted_students(tmp_path):
    from distillab.evaluate.plots import predicted_vs_measured

    path = tmp_path / "predicted_vs_measured.png"
    assert predicted_vs_measured([model("a", "sft", 1000), model("b", "kd", 1000)], path) is None
    assert not path.exists()
    predicted = {**model("c", "supervised", 1000), "predicted_loss": 2.9}
    assert predicted_vs_measured([model("a", "sft", 1000), predicted], path) == path
