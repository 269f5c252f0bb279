"""The study analysis on synthetic runs drawn (in float64, from the printed laws) from known coefficients:
recovery, the held-out set, files, report sections and a verdict whose numbers are the data's."""

from __future__ import annotations

import csv
import itertools
import re

import numpy as np
import pytest

from distillab.errors import DataError
from distillab.scaling import load_coefficients
from distillab.study.analysis import analyze
from distillab.study.run import RUNS_COLUMNS
from tests import textbook

SUPERVISED = {"E": 1.8, "A": 120.0, "B": 400.0, "alpha": 0.35, "beta": 0.38, "gamma": 0.8}
PAPER_GAP = {"c1": 522.6, "f1": 0.090, "d1": 1.315}  # held at the paper's values with < 5 teachers
SOFT = {"A": 100.0, "B": 500.0, "alpha": 0.3, "beta": 0.42, "gamma": 0.9, "c0": 1.2, **PAPER_GAP}
HARD = {"A": 150.0, "B": 600.0, "alpha": 0.3, "beta": 0.38, "gamma": 0.9, "c0": 1.0, **PAPER_GAP}
TRUTH = {"hard": HARD, "soft": SOFT, "soft_data": SOFT}

SIZES = [1e5, 2.5e5, 6e5, 1.6e6]  # 16x in N
BUDGETS = [2e5, 4e5, 8e5, 1.6e6]  # 8x in D
TEACHERS = {"T1": (1.6e6, 1.6e6), "T2": (6e5, 1.6e6), "T3": (2.5e5, 1.6e6)}  # supervised (N, D), by name


def cell_name(n, d):
    return f"n{n:g}-d{d:g}"


def row(method, n, d, loss, teacher="", teacher_params="", teacher_loss=""):
    flops_student = 6 * n * d
    flops_teacher = 4 * teacher_params * d if teacher else 0.0
    cell = cell_name(n, d) if method == "supervised" else f"{method}-{teacher}-{cell_name(n, d)}"
    return {
        "cell": cell,
        "method": method,
        "student_size": f"{n:g}",
        "student_params": n,
        "student_tokens": d,
        "loss": loss,
        "teacher": teacher,
        "teacher_params": teacher_params,
        "teacher_loss": teacher_loss,
        "seed": 0,
        "flops_student": flops_student,
        "flops_teacher": flops_teacher,
        "flops_total": flops_student + flops_teacher,
        "wall_s": 1.0,
        "run_dir": f"runs/{cell}",
    }


def synthetic_rows(truth=TRUTH):
    rows = [
        row("supervised", n, d, textbook.supervised_loss(n, d, SUPERVISED)) for n in SIZES for d in BUDGETS
    ]
    teacher_loss = {name: textbook.supervised_loss(n, d, SUPERVISED) for name, (n, d) in TEACHERS.items()}
    grids = {
        "hard": [(n, d, "T1") for n in SIZES[:3] for d in BUDGETS[:3]]
        + [(2.5e5, 4e5, t) for t in ("T2", "T3")],
        "soft": [(n, d, "T1") for n in SIZES[:3] for d in BUDGETS[:3]]
        + [(2.5e5, 4e5, t) for t in ("T2", "T3")],
        "soft_data": [(n, d, "T1") for n in SIZES[:2] for d in BUDGETS[:2]],  # too few runs to fit
    }
    for method, grid in grids.items():
        for n, d, teacher in grid:
            lt = teacher_loss[teacher]
            loss = textbook.distillation_loss(n, d, lt, SUPERVISED, truth[method])
            rows.append(row(method, n, d, loss, teacher, TEACHERS[teacher][0], lt))
    return rows


def write_runs(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUNS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rows = synthetic_rows()
    runs_csv = write_runs(root / "runs.csv", rows)
    report = analyze(runs_csv, root / "analysis", holdout_fraction=0.2, bootstrap=4, quick=True)
    return rows, report


def test_files_and_sections(study):
    _, report = study
    directory = report.parent
    text = report.read_text()
    for section in (
        "## Verdict",
        "## Fits",
        "## Held-out prediction",
        "## Iso-FLOP comparison",
        "## Figures",
    ):
        assert section in text
    for png in ("loss_vs_tokens", "predicted_vs_measured", "student_vs_teacher", "iso_flop"):
        assert (directory / f"{png}.png").stat().st_size > 5000 and f"({png}.png)" in text
    assert sorted(p.name for p in directory.glob("fit_*.json")) == [
        "fit_hard.json",
        "fit_soft.json",
        "fit_supervised.json",
    ]
    assert "- soft_data: not fitted (fitting the distillation law needs more than 5 runs, got 3)" in text


def test_each_fit_says_its_method_and_what_it_held_fixed(study):
    _, report = study
    for method in ("supervised", "hard", "soft"):
        assert load_coefficients(str(report.parent / f"fit_{method}.json")).method == method
    soft = load_coefficients(str(report.parent / "fit_soft.json"))
    assert soft.metadata["fixed"] == pytest.approx({f"distillation.{k}": v for k, v in PAPER_GAP.items()})
    assert soft.supervised == load_coefficients(str(report.parent / "fit_supervised.json")).supervised
    assert "3 teacher losses cannot place the capacity-gap transition" in report.read_text()


def test_the_known_coefficients_are_recovered(study):
    _, report = study
    supervised = load_coefficients(str(report.parent / "fit_supervised.json")).supervised
    assert vars(supervised) == pytest.approx(SUPERVISED, rel=0.02)
    probe_n, probe_d = np.geomspace(1e5, 3e6, 7), np.geomspace(2e5, 3e6, 7)
    for method in ("hard", "soft"):
        fitted = load_coefficients(str(report.parent / f"fit_{method}.json"))
        fitted_dict = {k: v for k, v in vars(fitted.distillation).items()}
        for n, d, lt in itertools.product(probe_n, probe_d, (3.9, 4.3)):
            expected = textbook.distillation_loss(n, d, lt, SUPERVISED, TRUTH[method])
            got = textbook.distillation_loss(n, d, lt, vars(supervised), fitted_dict)
            assert got == pytest.approx(expected, rel=2e-3), (method, n, d, lt)


def test_runs_without_a_capacity_gap_are_fitted_without_one(tmp_path):
    """Soft runs drawn with c1 = 0 (no gap): of the two holdings the fit keeps c1 = 0, says why, recovers them."""
    truth = {**TRUTH, "soft": {**SOFT, "c1": 0.0}}
    report = analyze(
        write_runs(tmp_path / "runs.csv", synthetic_rows(truth)),
        tmp_path / "analysis",
        holdout_fraction=0.2,
        bootstrap=0,
        quick=True,
    )
    soft = load_coefficients(str(report.parent / "fit_soft.json"))
    assert soft.metadata["fixed"]["distillation.c1"] == 0.0
    assert "no capacity gap (c1 = 0) — chosen for its lower fit objective" in report.read_text()
    assert "| c1 | 0 | held at 0: no capacity gap |" in report.read_text()
    supervised = vars(load_coefficients(str(report.parent / "fit_supervised.json")).supervised)
    for n, d, lt in itertools.product(np.geomspace(1e5, 3e6, 5), np.geomspace(2e5, 3e6, 5), (3.9, 4.3)):
        expected = textbook.distillation_loss(n, d, lt, SUPERVISED, truth["soft"])
        got = textbook.distillation_loss(n, d, lt, supervised, vars(soft.distillation))
        assert got == pytest.approx(expected, rel=2e-3), (n, d, lt)


def _held_out_cells(text):
    table = text.split("## Held-out prediction")[1].split("\n\n")[1]
    cells = {}
    for line in table.splitlines()[2:]:
        law, cell = [part.strip() for part in line.strip("|").split("|")][:2]
        cells.setdefault(law, set()).add(cell)
    return cells


def test_the_runs_of_largest_n_times_d_are_held_out_and_predicted(study):
    rows, report = study
    expected = {}
    for method, count in (("supervised", 3), ("hard", 2), ("soft", 2)):  # round(0.2 x 16), round(0.2 x 11)
        mine = sorted(
            (r for r in rows if r["method"] == method),
            key=lambda r: r["student_params"] * r["student_tokens"],
        )
        expected[method] = {r["cell"] for r in mine[-count:]}
    assert _held_out_cells(report.read_text()) == expected
    assert load_coefficients(str(report.parent / "fit_supervised.json")).metadata["runs"] == {
        "supervised": 13
    }
    medians = re.search(r"median relative error of the prediction: (.*)\.", report.read_text()).group(1)
    for part in medians.split(", "):
        assert float(part.split()[1].rstrip("%")) < 0.2, part  # noise-free runs: extrapolation within 0.2%


def test_the_verdict_numbers_are_the_datas(study):
    rows, report = study
    text = report.read_text()
    at = {
        (r["student_params"], r["method"]): r["loss"]
        for r in rows
        if r["student_tokens"] == 8e5 and r["teacher"] in ("", "T1")
    }
    gap = np.mean([at[(n, "hard")] - at[(n, "soft")] for n in SIZES[:3]])
    winner = "soft beats hard" if gap > 0 else "hard beats soft"
    teacher = "T1"
    expected = (
        f"At D = 800,000 tokens (measured, mean over 3 student size(s), teacher {teacher}), {winner} by"
    )
    assert f"{expected} {abs(gap):.3f} nats/token." in text
    # best-case scenario: student training FLOPs only; the budget is the smallest of the methods' largest costs
    cost = {
        m: [(6 * r["student_params"] * r["student_tokens"], r["loss"]) for r in rows if r["method"] == m]
        for m in ("supervised", "hard", "soft", "soft_data")
    }
    budget = min(max(c for c, _ in pairs) for pairs in cost.values())
    best = {m: min(loss for c, loss in pairs if c <= budget) for m, pairs in cost.items()}
    reached = ", ".join(f"{m} {best[m]:.3f}" for m in best)
    assert (
        f"Under `best` (teacher exists, its logits are free), within {budget:.3g} FLOPs the best runs reach {reached}"
        in text
    )
    # teacher-pretraining: + the teacher's own training, 6 N_T D_T (its supervised run, found by N and loss)
    pretraining = {name: 6 * n * d for name, (n, d) in TEACHERS.items()}
    cost = {
        m: [
            (6 * r["student_params"] * r["student_tokens"] + pretraining.get(r["teacher"], 0.0), r["loss"])
            for r in rows
            if r["method"] == m
        ]
        for m in ("supervised", "hard", "soft", "soft_data")
    }
    budget = min(max(c for c, _ in pairs) for pairs in cost.values())
    best = {m: min((loss for c, loss in pairs if c <= budget), default=None) for m, pairs in cost.items()}
    reached = ", ".join(f"{m} {loss:.3f}" for m, loss in best.items() if loss is not None)
    assert (
        f"(teacher is trained within the budget, logits free), within {budget:.3g} FLOPs the best runs reach {reached}"
        in text
    )


def test_bad_runs_files_are_one_line_errors(tmp_path):
    rows = synthetic_rows()
    bad = write_runs(tmp_path / "bad.csv", [rows[0], {**rows[1], "method": "kd"}])
    with pytest.raises(
        DataError, match=r"bad.csv line 3: method must be one of supervised, hard, soft, soft_data, got 'kd'"
    ):
        analyze(bad, tmp_path / "o", holdout_fraction=0.2, bootstrap=0, quick=True)
    (tmp_path / "short.csv").write_text("cell,method,loss\n")
    with pytest.raises(DataError, match=r"short.csv: missing column\(s\) student_size, student_params"):
        analyze(tmp_path / "short.csv", tmp_path / "o", holdout_fraction=0.2, bootstrap=0, quick=True)
    no_teacher = write_runs(tmp_path / "t.csv", [{**rows[-1], "teacher_loss": ""}])
    with pytest.raises(DataError, match=r"t.csv line 2: teacher_loss must be a number > 0, got ''"):
        analyze(no_teacher, tmp_path / "o", holdout_fraction=0.2, bootstrap=0, quick=True)


def test_the_crossover_is_where_the_true_laws_cross(study):
    """hard from T1 at N = 1e5 (the setting with most runs): distilling wins below the D where Eq. 8 on the
    true coefficients meets Eq. 1; soft wins throughout the range."""
    from scipy.optimize import brentq

    _, report = study
    text = report.read_text()
    teacher = "T1"
    lt = textbook.supervised_loss(*TEACHERS["T1"], SUPERVISED)

    def advantage(log_d):
        d = np.exp(log_d)
        return textbook.distillation_loss(1e5, d, lt, SUPERVISED, HARD) - textbook.supervised_loss(
            1e5, d, SUPERVISED
        )

    truth = np.exp(brentq(advantage, np.log(2e4), np.log(1.6e7)))
    prefix = f"By the fitted laws, hard distillation of the N = 1e+05 student from {teacher} (L_T = {lt:.3f})"
    found = re.search(re.escape(prefix) + r" beats supervised training up to D ≈ ([\d,]+) tokens\.", text)
    assert found and float(found.group(1).replace(",", "")) == pytest.approx(truth, rel=1e-2)
    assert "soft distillation of the N = 1e+05 student" in text
    assert "beats supervised training at every D in [20,000, 1.6e+07]" in text


def test_teacher_axis_groups_one_budget_whose_d_differs_by_teacher():
    """One nominal budget gives a slightly different D per teacher (their sequences end at different lengths):
    the L_S-vs-L_T plot still sees one (N, budget) with three teachers (the full CPU study's D values)."""
    from types import SimpleNamespace

    from distillab.study.plots import _teacher_groups

    def run(n, d, teacher_loss):
        return SimpleNamespace(student_params=n, student_tokens=d, teacher_loss=teacher_loss)

    axis = [run(26624, 195479, 4.135), run(26624, 188048, 4.272), run(26624, 182352, 4.351)]
    other = [run(26624, 97724, 4.135), run(106496, 195479, 4.135)]
    groups = _teacher_groups(SimpleNamespace(runs=axis + other))
    assert list(groups) == [(26624, 188048.0)]
    assert sorted(r.teacher_loss for r in groups[(26624, 188048.0)]) == [4.135, 4.272, 4.351]


def test_methods_are_matched_at_one_budget_though_their_d_differ(tmp_path):
    """A budget is a number of examples: generated sequences end early, so a distilled run's D sits a few %
    below the supervised run's of the same budget (the full CPU study: 195,644 vs 200,012). The verdict still
    compares them there, and not with the run of the next budget down."""
    from distillab.study.analysis import load_study_runs, matched, matched_sentence

    rows = [
        row("supervised", 1e5, 200_012, 4.75),
        row("supervised", 2e5, 200_012, 4.44),
        row("supervised", 1e5, 100_005, 5.36),
        row("soft", 1e5, 195_644, 5.36, "T1", 8e5, 3.46),
        row("soft", 2e5, 195_644, 5.21, "T1", 8e5, 3.46),
        row("soft", 1e5, 97_784, 5.49, "T1", 8e5, 3.46),
    ]
    runs = load_study_runs(write_runs(tmp_path / "runs.csv", rows))
    found = matched(runs, "soft", "supervised")
    assert (found.tokens, found.sizes) == (195_644, 2)
    assert found.gap == pytest.approx(((4.75 - 5.36) + (4.44 - 5.21)) / 2)
    assert matched_sentence(found) == (
        "At D = 195,644 tokens (measured, mean over 2 student size(s), teacher T1), supervised beats soft by "
        "0.690 nats/token."
    )


def test_crossovers_carry_a_caution_when_the_supervised_law_misses_its_held_out_runs():
    from types import SimpleNamespace

    from distillab.study.analysis import crossover_caution

    (caution,) = crossover_caution({"supervised": SimpleNamespace(median_error=0.1063)})
    assert caution.startswith("Caution: the supervised law misses its held-out runs by 10.63% (median)")
    assert crossover_caution({"supervised": SimpleNamespace(median_error=0.012)}) == []
    assert crossover_caution({}) == []


def test_a_crossover_inside_the_range_is_said_as_a_range():
    """Fitted laws can have distillation lose on few tokens and win later (the CPU study's soft_data): the
    verdict said "does not beat supervised training at any D" before, against its own measured runs."""
    from distillab.study.analysis import Crossover, crossover_sentence

    def sentence(wins):
        return crossover_sentence(Crossover("soft_data", "T1", 3.158, 26_624, wins, (9_600.0, 8e6)))

    who = "By the fitted laws, soft_data distillation of the N = 2.66e+04 student from T1 (L_T = 3.158)"
    assert sentence([(48_000.0, 1.4e6)]) == (
        f"{who} beats supervised training for D ≈ 48,000–1,400,000 tokens (searched in [9,600, 8,000,000])."
    )
    assert sentence([(9_600.0, 8e6)]) == f"{who} beats supervised training at every D in [9,600, 8,000,000]."
    assert sentence([(9_600.0, 20_000.0)]) == f"{who} beats supervised training up to D ≈ 20,000 tokens."
    assert sentence([]) == f"{who} does not beat supervised training at any D in [9,600, 8,000,000]."
