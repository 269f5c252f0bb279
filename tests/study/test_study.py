"""`distillab study --quick` end to end: every cell through the stage commands, runs.csv, resume, reuse, report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.cli import run_distillab

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "study-cpu" / "study.yaml"
# The quick grid of the recipe, by hand: supervised a/b/c x 2k/4k/8k; teacher c@8k; hard, soft and soft_data
# a@4k from it.
CELLS = {
    **{f"supervised_{size}_{budget}": ("supervised", "") for size in "abc" for budget in ("2k", "4k", "8k")},
    "hard_a_4k_from_c_8k": ("hard", "c_8k"),
    "soft_a_4k_from_c_8k": ("soft", "c_8k"),
    "soft_data_a_4k_from_c_8k": ("soft_data", "c_8k"),
}
LEARNING_RATES = {"a": 5e-3, "b": 3e-3, "c": 2e-3}  # the recipe's per-size learning rates (train_args: 3e-3)
# Non-embedding N of the recipe's sizes: layers x (4 d^2 attention, all heads full + 3 d f gated MLP).
PARAMS = {
    "a": 2 * (4 * 32 * 32 + 3 * 32 * 96),
    "b": 2 * (4 * 64 * 64 + 3 * 64 * 192),
    "c": 3 * (4 * 96 * 96 + 3 * 96 * 288),
}


def study(output_dir: Path):
    result = run_distillab(
        "study", "--config", str(RECIPE), "--quick", "--workers", "2", "--output_dir", str(output_dir),
        timeout=3600, cwd=RECIPE.parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def runs(output_dir: Path) -> dict[str, dict[str, str]]:
    with (output_dir / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len({row["cell"] for row in rows}), "a cell appears twice in runs.csv"
    return {row["cell"]: row for row in rows}


def mtimes(output_dir: Path) -> dict[str, float]:
    return {cell: (output_dir / "cells" / cell / "cell.json").stat().st_mtime for cell in CELLS}


def test_quick_study_runs_resumes_and_reuses(tmp_path):
    out = tmp_path / "study"
    study(out)
    rows = runs(out)
    assert set(rows) == set(CELLS)
    for cell, row in rows.items():
        method, teacher = CELLS[cell]
        assert (row["method"], row["teacher"], row["seed"]) == (method, teacher, "0")
        assert int(row["student_params"]) == PARAMS[row["student_size"]]
        assert 0 < float(row["loss"]) < 10
        flops = [float(row[k]) for k in ("flops_student", "flops_teacher", "flops_total")]
        assert flops[2] == pytest.approx(flops[0] + flops[1])
        record = json.loads((out / row["run_dir"] / "distillab_run.json").read_text())
        assert record["complete"] and record["train_tokens"] == int(row["student_tokens"])
        assert record["config"]["learning_rate"] == LEARNING_RATES[row["student_size"]]
        if method == "supervised":
            assert row["teacher_loss"] == row["teacher_params"] == "" and flops[1] == 0
            assert_budget_is_the_real_rows(out, row)
        else:
            teacher = rows["supervised_c_8k"]
            assert float(row["teacher_loss"]) == float(teacher["loss"])
            assert int(row["teacher_params"]) == int(teacher["student_params"])
            assert flops[1] > 0
    # soft = hard + the teacher scoring the same sequences
    assert float(rows["soft_a_4k_from_c_8k"]["flops_teacher"]) > float(
        rows["hard_a_4k_from_c_8k"]["flops_teacher"]
    )
    assert (out / "report" / "report.md").is_file()

    # A deleted cell and one killed mid-training are redone; the others are reused.
    before = mtimes(out)
    shutil.rmtree(out / "cells" / "hard_a_4k_from_c_8k")
    killed = out / "cells" / "supervised_a_4k"
    record = json.loads((killed / "run" / "distillab_run.json").read_text())
    (killed / "run" / "distillab_run.json").write_text(json.dumps({**record, "complete": False}))
    (killed / "cell.json").unlink()
    (killed / "eval.json").unlink()
    output = study(out)
    assert "12 cells (10 finished earlier)" in output
    after = mtimes(out)
    redone = {cell for cell in CELLS if after[cell] != before.get(cell)}
    assert redone == {"hard_a_4k_from_c_8k", "supervised_a_4k"}
    assert set(runs(out)) == set(CELLS)

    # A third call reuses every cell and only re-runs the analysis.
    output = study(out)
    assert "12 cells (12 finished earlier), 0 tasks" in output
    assert mtimes(out) == after
    assert set(runs(out)) == set(CELLS)
    assert (out / "report" / "report.md").is_file()


def assert_budget_is_the_real_rows(out: Path, row: dict[str, str]) -> None:
    """D of a supervised cell = its real examples' continuation tokens + one end-of-turn token each, over the
    first ceil(budget / 49) examples (49 = the recipe's 48 continuation tokens + end of turn)."""
    import pyarrow.parquet as pq

    budget = {"2k": 2000, "4k": 4000, "8k": 8000}[row["cell"].rsplit("_", 1)[1]]
    examples = -(-budget // 49)
    table = pq.read_table(out / "corpus" / "train" / "data").slice(0, examples)
    assert int(row["student_tokens"]) == sum(table.column("completion_tokens").to_pylist()) + examples
