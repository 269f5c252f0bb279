"""`distillab scaling ...`: answers in-process against the library; bad input through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillab.scaling.cli import main
from distillab.scaling.flops import exact_flops_per_token, forward_flops_per_token
from distillab.scaling.laws import BUSBRIDGE2025, distillation_loss, load_coefficients, supervised_loss
from distillab.scaling.plan import compute_optimal_plan, crossover_tokens
from distillab.scaling.runs import save_runs, synthetic_runs

SRC = Path(__file__).resolve().parents[2] / "src"


def run_json(capsys, *argv: str) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_predict_from_teacher_loss(capsys):
    out = run_json(
        capsys, "predict", "--student-params", "1e9", "--student-tokens", "2e10", "--teacher-loss", "2.0"
    )
    assert out["student_loss"] == pytest.approx(
        float(distillation_loss(1e9, 2e10, 2.0, BUSBRIDGE2025)), rel=1e-12
    )
    assert out["supervised_student_loss"] == pytest.approx(
        float(supervised_loss(1e9, 2e10, BUSBRIDGE2025.supervised))
    )
    assert out["teacher_loss"] == 2.0
    assert out["crossover_tokens"] == pytest.approx(crossover_tokens(1e9, 2.0))
    assert out["distillation_gain"] == pytest.approx(out["supervised_student_loss"] - out["student_loss"])


def test_predict_from_teacher_size_in_both_spellings(capsys):
    dashed = run_json(
        capsys,
        "predict",
        "--student-params",
        "1B",
        "--student-tokens",
        "20_000_000_000",
        "--teacher-params",
        "7e9",
        "--teacher-tokens",
        "2e12",
    )
    underscored = run_json(
        capsys,
        "predict",
        "--student_params",
        "1e9",
        "--student_tokens",
        "2e10",
        "--teacher_params",
        "7B",
        "--teacher_tokens",
        "2T",
    )
    assert dashed == underscored
    assert dashed["teacher_loss"] == pytest.approx(
        float(supervised_loss(7e9, 2e12, BUSBRIDGE2025.supervised))
    )


def test_predict_human_table(capsys):
    main(["predict", "--student-params", "3e8", "--student-tokens", "3e11", "--teacher-loss", "2.2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "scaling predict"
    rows = dict(line.split(None, 1) for line in out[1:])
    assert rows["student_loss"] == f"{float(distillation_loss(3e8, 3e11, 2.2, BUSBRIDGE2025)):.4f}"
    assert rows["student_tokens"] == "3e+11"


def test_flops(capsys):
    out = run_json(capsys, "flops", "--params", "1e9")
    assert out["forward_flops_per_token"] == pytest.approx(float(forward_flops_per_token(1e9)))
    assert out["method"] == "paper_fixed_aspect" and out["approx_2n_flops_per_token"] == 2e9
    out = run_json(
        capsys, "flops", "--params", "1e9", "--n_ctx", "2048", "--n-vocab", "5e4", "--tokens", "1e10"
    )
    expected = float(forward_flops_per_token(1e9, n_ctx=2048, n_vocab=5e4))
    assert out["forward_flops_per_token"] == pytest.approx(expected)
    assert out["train_flops"] == pytest.approx(3 * expected * 1e10)


def test_flops_exact_from_a_config_folder(capsys, tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "max_position_embeddings": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = run_json(capsys, "flops", "--config", str(tmp_path))
    assert (out["method"], out["forward_flops_per_token"]) == ("exact", exact_flops_per_token(config))


@pytest.mark.parametrize(
    "scenario", ["best", "teacher-inference", "teacher-pretraining", "teacher-pretraining-inference"]
)
def test_plan(capsys, scenario):
    out = run_json(capsys, "plan", "--student-params", "1e9", "--compute", "1e22", "--scenario", scenario)
    plan = compute_optimal_plan(1e9, 1e22, scenario)
    for key in (
        "student_tokens",
        "teacher_params",
        "teacher_tokens",
        "student_loss",
        "supervised_student_loss",
    ):
        assert out[key] == pytest.approx(getattr(plan, key), rel=1e-9), key


def test_plan_among_existing_teachers(capsys):
    out = run_json(
        capsys,
        "plan",
        "--student-params",
        "1e9",
        "--compute",
        "1e22",
        "--scenario",
        "teacher-inference",
        "--teacher",
        "7e9,2e12",
        "--teacher",
        "1e11,1e12",
    )
    assert len(out["candidates"]) == 2
    assert out["student_loss"] == min(c["student_loss"] for c in out["candidates"])


def test_fit_writes_a_loadable_coefficient_set(capsys, tmp_path):
    runs = synthetic_runs(30, "supervised", seed=20)
    save_runs(runs, tmp_path / "runs.csv")
    out = run_json(
        capsys, "fit", str(tmp_path / "runs.csv"), "--starts", "8", "--out", str(tmp_path / "fit.yaml")
    )
    assert out["metadata"]["fitted"] == ["supervised"] and out["supervised_relative_error"] < 1e-4
    fitted = load_coefficients(str(tmp_path / "fit.yaml"))
    assert fitted.name == "fit-runs" and fitted.method == "supervised"
    assert pytest.approx(out["supervised"]["E"]) == fitted.supervised.E
    predicted = run_json(
        capsys,
        "predict",
        "--student-params",
        "1e9",
        "--student-tokens",
        "2e10",
        "--teacher-loss",
        "2",
        "--coefficients",
        str(tmp_path / "fit.yaml"),
    )
    assert predicted["coefficients"] == "fit-runs"
    assert predicted["supervised_student_loss"] == pytest.approx(
        float(supervised_loss(1e9, 2e10, fitted.supervised))
    )


def test_fit_distillation_jsonl_human_output(capsys, tmp_path):
    save_runs(synthetic_runs(40, seed=21), tmp_path / "runs.jsonl")
    out_file = tmp_path / "hard.json"
    argv = ["fit", str(tmp_path / "runs.jsonl"), "--starts", "4", "--bootstrap", "3", "--out", str(out_file)]
    main([*argv, "--method", "hard"])
    out = capsys.readouterr().out
    assert "for method hard (fitted: distillation)" in out and "c0" in out
    assert "distillation_relative_error" in out
    assert "[" in out  # bootstrap intervals shown
    assert load_coefficients(out_file).method == "hard"


def test_fit_of_distilled_runs_must_say_their_method(tmp_path):
    save_runs(synthetic_runs(20, seed=21), tmp_path / "runs.csv")
    assert_user_error(
        run_cli("fit", "runs.csv", cwd=tmp_path),
        "fitting the distillation law needs the method its runs used: hard, soft, soft_data (got None)",
    )
    assert_user_error(
        run_cli("fit", "runs.csv", "--kind", "supervised", "--method", "soft", cwd=tmp_path),
        "method 'soft' needs the distillation law fitted",
    )


def test_plot_writes_readable_pngs(capsys, tmp_path):
    import matplotlib.image

    main(["plot", "--out-dir", str(tmp_path)])
    paths = capsys.readouterr().out.split()
    assert [Path(p).name for p in paths] == [
        "student_vs_teacher.png",
        "distill_minus_supervised.png",
        "isoflops.png",
    ]
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.shape[0] >= 600 and image.shape[1] >= 900
        assert image[..., :3].std() > 0.05  # not blank


def test_recipe_then_flags(capsys, tmp_path):
    recipe = tmp_path / "predict.yaml"
    recipe.write_text("student_params: 1B\nstudent_tokens: 2e10\nteacher_loss: 2.5\n")
    out = run_json(capsys, "predict", "--config", str(recipe), "--teacher-loss", "2")
    assert (out["student_params"], out["student_tokens"], out["teacher_loss"]) == (1e9, 2e10, 2.0)
    assert out["student_loss"] == pytest.approx(float(distillation_loss(1e9, 2e10, 2.0, BUSBRIDGE2025)))


def test_fit_runs_from_a_recipe(capsys, tmp_path):
    save_runs(synthetic_runs(30, "supervised", seed=20), tmp_path / "runs.csv")
    recipe = tmp_path / "fit.yaml"
    recipe.write_text(f"runs: {tmp_path / 'runs.csv'}\nstarts: 8\n")
    out = run_json(capsys, "fit", "--config", str(recipe))
    assert out["name"] == "fit-runs" and out["supervised_runs"] == 30


def test_flops_recipe_beside_model_config_folder(capsys, tmp_path):
    recipe = tmp_path / "flops.yaml"
    recipe.write_text("params: 1e9\nn_ctx: 2048\n")
    out = run_json(capsys, "flops", "--config", str(recipe))
    assert out["forward_flops_per_token"] == pytest.approx(float(forward_flops_per_token(1e9, n_ctx=2048)))


# --- bad input: a real process, exit code 2, one line, no traceback ---------------------------------------


def run_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "distillab.scaling", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def assert_user_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0], lines[0]


PREDICT = ["predict", "--student-params", "1e9", "--student-tokens", "2e10"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["predict", "--student-params", "0", "--student-tokens", "2e10", "--teacher-loss", "2"],
            "argument --student-params/--student_params: must be a finite number > 0, got '0'",
        ),
        (
            ["predict", "--student-params", "1e9", "--student_tokens", "-3e11", "--teacher-loss", "2"],
            "--student_tokens: must be a finite number > 0, got '-3e11'",
        ),
        ([*PREDICT, "--teacher-loss", "nan"], "--teacher_loss: must be a finite number > 0, got 'nan'"),
        (PREDICT, "give the teacher: --teacher-loss L, or --teacher-params N with --teacher-tokens D"),
        (
            [*PREDICT, "--teacher-loss", "2", "--coefficients", "chinchilla"],
            "unknown coefficient set 'chinchilla'",
        ),
        (
            ["plan", "--student-params", "1e9", "--compute", "1e22", "--scenario", "cheap"],
            "unknown scenario 'cheap'; choose from best, teacher-inference",
        ),
        (["plan", "--student-params", "1e9", "--compute", "1e12"], "compute 1e+12 FLOPs is below"),
        (["flops"], "give --params N or --config PATH"),
        (["predict-all"], "invalid choice: 'predict-all'"),
        (["fit", "runs.csv", "--workers", "0"], "argument --workers: must be an integer >= 1, got '0'"),
        (["fit", "--starts", "8"], "fit needs RUNS: a .csv or .jsonl file of runs"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, message):
    assert_user_error(run_cli(*argv), message)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            "student_params: 0\nstudent_tokens: 2e10\nteacher_loss: 2\n",
            "student_params: must be a finite number > 0, got 0",
        ),
        (
            "student_params: 1e9\nstudent_tokens: 2e10\nteacher_loss: 2\nstudent: 1\n",
            "Unknown arguments from config file",
        ),
    ],
)
def test_recipe_values_are_checked_like_flags(tmp_path, recipe, message):
    (tmp_path / "predict.yaml").write_text(recipe)
    assert_user_error(run_cli("predict", "--config", "predict.yaml", cwd=tmp_path), message)


def test_runs_file_missing_a_column(tmp_path):
    (tmp_path / "runs.csv").write_text("student_params,student_tokens,teacher_loss\n1e9,2e10,2.0\n")
    result = run_cli("fit", "runs.csv", cwd=tmp_path)
    assert_user_error(
        result, "runs.csv: missing column 'loss' (expected student_params, student_tokens, loss"
    )


def test_runs_file_with_a_bad_value(tmp_path):
    lines = [
        '{"student_params": 1e9, "student_tokens": 2e10, "loss": 2.4}',
        '{"student_params": 1e9, "student_tokens": 0, "loss": 2.4}',
    ]
    (tmp_path / "runs.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli("fit", "runs.jsonl", cwd=tmp_path)
    assert_user_error(result, "runs.jsonl line 2: student_tokens must be a positive number, got 0")


def test_module_entry_point_answers(tmp_path):
    result = run_cli(
        "predict", "--student-params", "1e9", "--student-tokens", "2e10", "--teacher-loss", "2", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["student_loss"] == pytest.approx(
        float(distillation_loss(1e9, 2e10, 2.0, BUSBRIDGE2025))
    )
