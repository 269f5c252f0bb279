"""`distillab evaluate` end to end on tiny models: every metric for every student, real lm-eval runs, the
report and plots; bad input fails with one line or skips what it must and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillab.errors import DataError
from distillab.evaluate.config import EvaluateConfig
from distillab.evaluate.run import evaluate
from distillab.scaling import save_coefficients
from tests import textbook
from tests.cli import assert_user_error, run_distillab
from tests.evaluate.conftest import TRAIN_TOKENS
from tests.evaluate.fitted import SOFT, SUPERVISED, fitted_set
from tests.evaluate.test_html import check_tables_match, parse_html

LM_EVAL_LIMIT = 2
METRICS = ("ce_reference", "ce_teacher_generations", "kl_teacher", "top1_agreement")


def recipe(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_teacher, student_dirs, lora_student_dir, foreign_student_dir, hard_label_dir):
    """One CLI run over the teacher, hard/soft/supervised, a LoRA and a foreign-tokenizer student, with
    coefficients fitted for supervised and soft students only (none for hard)."""
    tmp_path = tmp_path_factory.mktemp("evaluate")
    output_dir = tmp_path / "out"
    fits = [save_coefficients(fitted_set(m), tmp_path / f"{m}.json") for m in ("supervised", "soft")]
    path = recipe(
        tmp_path,
        teacher=f"teacher={tiny_teacher}",
        students=[
            *(f"{name}={path}" for name, path in student_dirs.items()),
            str(lora_student_dir),
            str(foreign_student_dir),
        ],
        heldout_data=str(hard_label_dir),
        heldout_last_n=8,
        reference_num_rows=12,
        lm_eval_limit=LM_EVAL_LIMIT,
        lm_eval_num_docs=20,
        lm_eval_gen_kwargs="max_gen_toks=4",
        lm_eval_bootstrap_iters=0,
        output_dir=str(output_dir),
        coefficients=[str(fit) for fit in fits],
    )
    result = run_distillab("evaluate", "--config", str(path), "--batch-size", "4", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, json.loads((output_dir / "results.json").read_text()), result


@pytest.mark.slow
def test_every_model_gets_every_metric(run):
    _, results, _ = run
    models = {m["name"]: m for m in results["models"]}
    assert list(models) == ["teacher", "hard", "soft", "supervised", "lora", "foreign"]
    assert [models[n]["method"] for n in models] == ["teacher", "sft", "kd", "supervised", "sft", "sft"]
    for name in ("hard", "soft", "supervised", "lora"):
        for metric in METRICS:
            assert isinstance(models[name][metric], float), (name, metric)
        assert 0 <= models[name]["top1_agreement"] <= 1 and models[name]["kl_teacher"] > 0
        assert models[name]["skipped"] == {}
    for key in (
        "name",
        "path",
        "method",
        "params_non_embedding",
        "train_tokens",
        "flops",
        "lm_eval",
        "predicted_loss",
    ):
        assert all(key in m for m in results["models"]), key
    assert models["teacher"]["train_tokens"] is None and models["teacher"]["predicted_loss"] is None
    assert (
        models["hard"]["flops"]["teacher_generation"] > 0 and models["soft"]["flops"]["teacher_scoring"] > 0
    )
    assert models["lora"]["base_model"] is not None


@pytest.mark.slow
def test_predictions_come_only_from_the_fit_for_each_method(run):
    """soft (kd): Eq. 8 on the soft fit's literals with L_T = the teacher's measured reference CE; supervised:
    Eq. 1; the sft students (hard, lora, foreign) have no fit, hence no number and the reason."""
    output_dir, results, _ = run
    models = {m["name"]: m for m in results["models"]}
    teacher_loss = models["teacher"]["ce_reference"]
    soft, supervised = models["soft"], models["supervised"]
    assert soft["train_tokens"] == supervised["train_tokens"] == TRAIN_TOKENS
    expected = textbook.distillation_loss(
        soft["params_non_embedding"], TRAIN_TOKENS, teacher_loss, SUPERVISED, SOFT
    )
    assert soft["prediction"]["law"] == "distillation" and soft["prediction"]["coefficients"] == "soft-fit"
    assert soft["prediction"]["teacher_loss"] == teacher_loss
    assert soft["predicted_loss"] == pytest.approx(expected, rel=1e-9)
    expected = textbook.supervised_loss(supervised["params_non_embedding"], TRAIN_TOKENS, SUPERVISED)
    assert supervised["prediction"]["coefficients"] == "supervised-fit"
    assert supervised["predicted_loss"] == pytest.approx(expected, rel=1e-9)
    reason = "was fitted for hard-label distillation (sft)"
    for name in ("hard", "lora", "foreign"):
        assert models[name]["predicted_loss"] is None and reason in models[name]["prediction"]["reason"]
    assert [s["method"] for s in results["scaling_law"]["coefficient_sets"]] == ["supervised", "soft"]
    report = (output_dir / "report.md").read_text()
    assert "- hard: no prediction (none of the coefficient sets given (`supervised-fit`" in report


@pytest.mark.slow
def test_a_foreign_tokenizer_skips_kl_and_agreement_only(run):
    _, results, cli = run
    foreign = next(m for m in results["models"] if m["name"] == "foreign")
    assert isinstance(foreign["ce_reference"], float) and isinstance(foreign["ce_teacher_generations"], float)
    assert foreign["kl_teacher"] is None and foreign["top1_agreement"] is None
    assert set(foreign["skipped"]) == {"kl_teacher", "top1_agreement"}
    assert "tokenizer differs from the teacher's" in foreign["skipped"]["kl_teacher"]
    assert "foreign: KL and top-1 agreement skipped" in cli.stdout + cli.stderr
    assert foreign["lm_eval"]  # lm-eval does not need a shared vocabulary


@pytest.mark.slow
def test_lm_eval_results_come_from_real_runs(run):
    output_dir, results, _ = run
    for model in results["models"]:
        assert set(model["lm_eval"]) == {"distillab_arithmetic", "distillab_arithmetic_mc"}
        assert 0 <= model["lm_eval"]["distillab_arithmetic"]["exact_match,final-number"] <= 1
        assert set(model["lm_eval"]["distillab_arithmetic_mc"]) == {"acc", "acc_norm"}
        for task, run_info in model["lm_eval_runs"].items():
            assert run_info["version"] == 1.0
            assert run_info["n_samples"] == {"original": 20, "effective": LM_EVAL_LIMIT}
            files = [Path(f) for f in run_info["files"]]
            assert {f.name.split("_")[0] for f in files} == {"results", "samples"}
            lm_eval_output = json.loads(next(f for f in files if f.name.startswith("results")).read_text())
            assert lm_eval_output["results"][task]["alias"] == task
            assert lm_eval_output["chat_template"]  # applied
    lora = next(m for m in results["models"] if m["name"] == "lora")
    assert lora["lm_eval_runs"]["distillab_arithmetic"]["model_args"]["peft"] == lora["path"]
    assert (output_dir / "lm_eval" / "tasks" / "distillab_arithmetic.yaml").is_file()


@pytest.mark.slow
def test_eval_sets_decontamination_and_outputs(run):
    output_dir, results, _ = run
    sets = results["eval_sets"]
    assert sets["reference"]["rows"] == 12 and Path(sets["reference"]["path"]).is_file()
    assert (
        sets["teacher_generations"]["rows"] == 8 and sets["teacher_generations"]["selection"] == "last 8 rows"
    )
    assert all(Path(path).is_file() for path in sets["lm_eval"]["data_files"].values())
    decontamination = results["decontamination"]
    # The held-out rows are the training dataset's last rows: all of them overlap, and the report says so.
    assert decontamination["sets"]["teacher_generations"]["overlapping_rows"] == 8
    assert set(decontamination["sets"]) == {
        "reference",
        "teacher_generations",
        "lm_eval:distillab_arithmetic",
    }
    assert results["matched_tokens"]["matched"] is True
    assert (output_dir / "distillab_config.yaml").is_file()
    for plot in ("ce_reference", "kl_teacher", "top1_agreement", "ce_vs_flops", "predicted_vs_measured"):
        assert f"plots/{plot}.png" in results["plots"]
    assert all((output_dir / p).stat().st_size > 5000 for p in results["plots"])


@pytest.mark.slow
def test_report_shows_every_student_and_section(run):
    output_dir, results, _ = run
    report = (output_dir / "report.md").read_text()
    for model in results["models"]:
        assert f"| **{model['name']}** | {model['method']} |" in report
    for heading in (
        "## Hard vs soft vs supervised",
        "## lm-eval",
        "## Scaling law",
        "## Skipped metrics",
        "## Decontamination",
    ):
        assert heading in report
    assert "distillab_arithmetic: exact_match,final-number" in report
    assert "foreign: kl_teacher, top1_agreement skipped" in report
    assert "| teacher_generations | 8 | 8 | 100.0% |" in report
    assert report.index("## Verdict") < report.index("## Hard vs soft vs supervised")
    check_tables_match(parse_html((output_dir / "report.html").read_text()), results)


def test_a_missing_student_folder_is_a_one_line_error(tmp_path, tiny_teacher):
    result = run_distillab(
        "evaluate", "--teacher", str(tiny_teacher), "--students", str(tmp_path / "missing")
    )
    assert_user_error(result, f"student model folder not found: {tmp_path / 'missing'}")


def test_an_empty_heldout_set_fails_before_any_model_runs(tmp_path, tiny_teacher, hard_label_dir):
    ids = tmp_path / "ids.txt"
    ids.write_text("")
    config = EvaluateConfig(
        teacher=str(tiny_teacher),
        heldout_data=str(hard_label_dir),
        heldout_ids_file=str(ids),
        output_dir=str(tmp_path / "o"),
    )
    with pytest.raises(DataError, match="the teacher_generations set is empty"):
        evaluate(config)
    assert not (tmp_path / "o" / "results.json").exists()


def test_without_heldout_data_or_lm_eval_the_rest_is_still_measured(tmp_path, tiny_teacher, student_dirs):
    config = EvaluateConfig(
        teacher=str(tiny_teacher),
        students=[str(student_dirs["hard"])],
        reference_num_rows=4,
        lm_eval_tasks=[],
        output_dir=str(tmp_path),
    )
    results = json.loads((evaluate(config) / "results.json").read_text())
    hard = results["models"][1]
    assert isinstance(hard["ce_reference"], float) and hard["lm_eval"] == {}
    assert hard["ce_teacher_generations"] is None
    assert "no held-out teacher generations" in hard["skipped"]["kl_teacher"]
    assert "## Skipped metrics" in (tmp_path / "report.md").read_text()
