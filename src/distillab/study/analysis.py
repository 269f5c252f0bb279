"""A study's runs, analysed: the laws fitted per method, held-out prediction, iso-FLOP comparison, verdict.

runs.csv (written by the study runner), one row per run:
  cell, method (supervised | hard | soft | soft_data), student_size, student_params (non-embedding N),
  student_tokens (D, supervised tokens), loss (held-out real-data CE, nats/token), teacher, teacher_params,
  teacher_loss (empty for supervised), seed, flops_student, flops_teacher, flops_total, wall_s, run_dir

`analyze` fits the supervised law (Eq. 1) on the supervised runs, then the distillation law (Eq. 8) on the
runs of each distillation method separately (Ltilde_S from the supervised fit). Every fit leaves out the runs
of largest N·D, which it then predicts. It writes one coefficient file per fit (`fit_<method>.json`, usable as
`--coefficients` anywhere), report.md and PNGs into the output folder.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillab.errors import DataError
from distillab.fileio import atomic_write_text
from distillab.markdown import markdown_table
from distillab.scaling import (
    BUSBRIDGE2025,
    SCENARIOS,
    CoefficientSet,
    FitData,
    LawFit,
    Runs,
    Scenario,
    distillation_loss,
    distillation_wins,
    fit_coefficients,
    save_coefficients,
    supervised_loss,
)
from distillab.scaling.fit import largest
from distillab.scaling.laws import FIT_METHODS
from distillab.study import plots
from distillab.study.grid import same_budget
from distillab.study.run import RUNS_COLUMNS

DISTILLATION_METHODS = FIT_METHODS[1:]
HOLDOUT_BY = "params_tokens"
GAP_COEFFICIENTS = ("c1", "f1", "d1")  # the capacity-gap transition in L_T
ENOUGH_TEACHERS = 5  # distinct teacher losses needed before c1, f1, d1 are fitted too
NO_GAP = "c1"  # held at 0: no capacity gap (the factor (1 + (L_T / (Ltilde_S d1))^(1/f1))^(-c1 f1) is 1)
TRUSTED_ERROR = 0.05  # a held-out median relative error above this: the law does not follow the runs
STARTS = {True: (16, 2), False: (128, 8)}  # quick -> (L-BFGS-B starts, polished starts)


@dataclass(frozen=True)
class StudyRun:
    """One row of runs.csv (teacher_params, teacher_loss: NaN for a supervised run)."""

    cell: str
    method: str
    student_size: str
    student_params: float
    student_tokens: float
    loss: float
    teacher: str
    teacher_params: float
    teacher_loss: float
    seed: str
    flops_student: float
    flops_teacher: float
    flops_total: float
    wall_s: float
    run_dir: str

    @property
    def params_tokens(self) -> float:
        """N·D, what decides which runs are held out."""
        return self.student_params * self.student_tokens


# --- runs.csv ---------------------------------------------------------------------------------------------


def _number(path: Path, line: int, row: dict, column: str, positive: bool, optional: bool = False) -> float:
    text = (row.get(column) or "").strip()
    if optional and not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "a number > 0" if positive else "a number >= 0"
        raise DataError(f"{path} line {line}: {column} must be {kind}, got {text!r}")
    return value


def _parse_row(path: Path, line: int, row: dict) -> StudyRun:
    method = (row.get("method") or "").strip()
    if method not in FIT_METHODS:
        raise DataError(f"{path} line {line}: method must be one of {', '.join(FIT_METHODS)}, got {method!r}")
    distilled = method != "supervised"
    return StudyRun(
        cell=row["cell"],
        method=method,
        student_size=row["student_size"],
        student_params=_number(path, line, row, "student_params", True),
        student_tokens=_number(path, line, row, "student_tokens", True),
        loss=_number(path, line, row, "loss", True),
        teacher=row["teacher"] if distilled else "",
        teacher_params=_number(path, line, row, "teacher_params", True, optional=True)
        if distilled
        else math.nan,
        teacher_loss=_number(path, line, row, "teacher_loss", True) if distilled else math.nan,
        seed=row["seed"],
        flops_student=_number(path, line, row, "flops_student", False),
        flops_teacher=_number(path, line, row, "flops_teacher", False, optional=not distilled) or 0.0,
        flops_total=_number(path, line, row, "flops_total", False),
        wall_s=_number(path, line, row, "wall_s", False),
        run_dir=row["run_dir"],
    )


def load_study_runs(path: Path) -> list[StudyRun]:
    """The rows of runs.csv, checked (a bad value names the file, line and column)."""
    if not path.is_file():
        raise DataError(f"runs file {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in RUNS_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        runs = [_parse_row(path, line, row) for line, row in enumerate(reader, start=2)]
    if not runs:
        raise DataError(f"{path}: no runs")
    return runs


def law_runs(runs: list[StudyRun]) -> Runs:
    """The arrays the fitter takes."""
    return Runs.from_arrays(
        [r.student_params for r in runs],
        [r.student_tokens for r in runs],
        [r.loss for r in runs],
        [r.teacher_loss for r in runs],
    )


# --- fits -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MethodFit:
    """One method's law: fitted on `train`, predicting `held_out` (the runs of largest N·D)."""

    method: str
    coefficients: CoefficientSet
    law: LawFit
    train: list[StudyRun]
    held_out: list[StudyRun]
    fixed_reason: str
    path: Path

    @property
    def runs(self) -> list[StudyRun]:
        return self.train + self.held_out

    def loss_at(self, params, tokens, teacher_loss=None) -> np.ndarray:
        """The fitted law: Eq. 1 for the supervised fit, else Eq. 8 at teacher loss L_T."""
        if self.method == "supervised":
            return supervised_loss(params, tokens, self.coefficients.supervised)
        return distillation_loss(params, tokens, teacher_loss, self.coefficients)

    def main_setting(self) -> tuple[str, float, float]:
        """(teacher, its mean L_T, student N) with the most runs: where the curves and the crossover are drawn."""
        teacher = main_teacher(self.runs)
        mine = [r for r in self.runs if r.teacher == teacher]
        sizes = [r.student_params for r in mine]
        params = max(sorted(set(sizes)), key=sizes.count)
        return teacher, float(np.mean([r.teacher_loss for r in mine])), params

    @property
    def predicted(self) -> np.ndarray:
        """The law's loss for each held-out run."""
        data = law_runs(self.held_out)
        return self.loss_at(data.student_params, data.student_tokens, data.teacher_loss)

    @property
    def errors(self) -> np.ndarray:
        """|predicted / measured - 1| per held-out run."""
        return np.abs(self.predicted / np.array([r.loss for r in self.held_out]) - 1.0)

    @property
    def median_error(self) -> float:
        return float(np.median(self.errors)) if self.held_out else math.nan

    def prediction_interval(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Bootstrap interval of each held-out prediction (None without bootstrap)."""
        if self.law.bootstrap_thetas is None or not self.held_out:
            return None
        supervised = None if self.method == "supervised" else self.coefficients.supervised
        return self.law.prediction_interval(FitData.from_runs(law_runs(self.held_out), supervised))


def main_teacher(runs: list[StudyRun]) -> str:
    """The teacher of the most runs (the first seen on a tie)."""
    teachers = [r.teacher for r in runs]
    return max(dict.fromkeys(teachers), key=teachers.count)


def held_fixed(train: list[StudyRun]) -> list[tuple[dict[str, float], str]]:
    """The ways to hold the distillation coefficients a grid cannot identify, each with why: (no choice) when
    enough teacher losses identify all of them, else the capacity gap at the paper's c1, f1, d1 or none at all
    (c1 = 0: the gap factor is 1; f1, d1 then have no effect)."""
    teachers = len({round(r.teacher_loss, 6) for r in train})
    if teachers >= ENOUGH_TEACHERS:
        return [({}, f"none: {teachers} teacher losses identify every coefficient")]
    paper = BUSBRIDGE2025.distillation
    if teachers < 2:
        held = ("c0", *GAP_COEFFICIENTS)
        why = (
            "the fitted runs have a single teacher loss, so the law's teacher terms (the power c0 of L_T and "
            "the capacity-gap c1, f1, d1) cannot be told apart from the student term"
        )
    else:
        held = GAP_COEFFICIENTS
        why = (
            f"{teachers} teacher losses cannot place the capacity-gap transition (c1, f1, d1, which the paper "
            "itself finds weakly identified: c1 at a bound); c0, the power of L_T, is fitted"
        )
    at_paper = {f"distillation.{name}": getattr(paper, name) for name in held}
    return [
        (at_paper, f"{why}; the capacity gap at the paper's c1, f1, d1"),
        ({**at_paper, f"distillation.{NO_GAP}": 0.0}, f"{why}; no capacity gap ({NO_GAP} = 0)"),
    ]


def split_held_out(runs: list[StudyRun], fraction: float) -> tuple[list[StudyRun], list[StudyRun]]:
    """(runs to fit, runs held out): the fitter's own choice of the largest N·D."""
    held = set(largest(law_runs(runs), fraction, HOLDOUT_BY).tolist())
    return [r for i, r in enumerate(runs) if i not in held], [r for i, r in enumerate(runs) if i in held]


def fit_method(
    method: str,
    runs: list[StudyRun],
    supervised: CoefficientSet | None,
    output_dir: Path,
    *,
    holdout_fraction: float,
    bootstrap: int,
    quick: bool,
    source: str,
) -> MethodFit:
    """Fit one method's law (supervised: Eq. 1; else Eq. 8 with Ltilde_S from `supervised`), hold out the
    runs of largest N·D, and save the set as output_dir/fit_<method>.json."""
    train, held_out = split_held_out(runs, holdout_fraction)
    holdings = held_fixed(train) if method != "supervised" else [({}, "none")]
    n_starts, n_polish = STARTS[quick]

    def fit(fixed: dict[str, float], resamples: int):
        return fit_coefficients(
            law_runs(runs),
            "supervised" if method == "supervised" else "distillation",
            base=supervised or BUSBRIDGE2025,
            name=f"study-{method}",
            holdout=holdout_fraction,
            source=source,
            method=method,
            holdout_by=HOLDOUT_BY,
            fixed=fixed,
            n_starts=n_starts,
            n_polish=n_polish,
            bootstrap=resamples,
        )

    if len(holdings) == 1:
        ((fixed, why),) = holdings
        report = fit(fixed, bootstrap)
    else:  # choose without the bootstrap, then resample only the chosen holding (the fit is deterministic)
        trials = [fit(fixed, 0) for fixed, _ in holdings]
        objectives = [trial.fits[0].objective for trial in trials]
        best = objectives.index(min(objectives))
        (fixed, why), other = holdings[best], min(objectives[:best] + objectives[best + 1 :])
        report = fit(fixed, bootstrap) if bootstrap else trials[best]
        why += (
            f" — chosen for its lower fit objective on the fitted runs ({objectives[best]:.3g}; "
            f"the other holding {other:.3g})"
        )
    path = save_coefficients(report.coefficients, output_dir / f"fit_{method}.json")
    return MethodFit(method, report.coefficients, report.fits[0], train, held_out, why, path)


def fit_all(
    runs: list[StudyRun], output_dir: Path, source: str, **options
) -> tuple[dict[str, MethodFit], dict[str, str]]:
    """({method: fit}, {method: why it was not fitted}); the supervised fit is required."""
    by_method = {m: [r for r in runs if r.method == m] for m in FIT_METHODS}
    if not by_method["supervised"]:
        raise DataError(f"{source}: no supervised runs; every law needs the supervised law (Ltilde_S)")
    fits = {
        "supervised": fit_method(
            "supervised", by_method["supervised"], None, output_dir, source=source, **options
        )
    }
    skipped = {}
    for method in DISTILLATION_METHODS:
        if not by_method[method]:
            continue
        try:
            fits[method] = fit_method(
                method,
                by_method[method],
                fits["supervised"].coefficients,
                output_dir,
                source=source,
                **options,
            )
        except DataError as err:  # too few runs for the coefficients left free
            skipped[method] = str(err)
    return fits, skipped


# --- comparisons ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matched:
    """Two methods at matched student N and tokens D, distilled from one teacher, seeds averaged."""

    first: str
    second: str
    teacher: str  # the teacher of most `first` runs (`first` distils)
    tokens: float  # `first`'s D at the largest budget both methods share
    sizes: int  # matched student sizes N at that D
    gap: float  # mean loss(second) - loss(first) there: > 0 means `first` is better


def _mean_losses(runs: list[StudyRun], method: str, teacher: str) -> dict[tuple[float, float], float]:
    """{(N, D): mean loss} of a method's runs (a distillation method's: from `teacher` only)."""
    groups: dict[tuple[float, float], list[float]] = {}
    for r in runs:
        if r.method == method and (method == "supervised" or r.teacher == teacher):
            groups.setdefault((r.student_params, r.student_tokens), []).append(r.loss)
    return {key: float(np.mean(losses)) for key, losses in groups.items()}


def matched(runs: list[StudyRun], first: str, second: str) -> Matched | None:
    """Distillation method `first` against `second` at the largest budget where they share a student size,
    both from `first`'s main teacher (None when they share no cell). One nominal budget gives a slightly
    different D per method (generated sequences end early): `tokens` is `first`'s."""
    mine = [r for r in runs if r.method == first]
    if not mine:
        return None
    teacher = main_teacher(mine)
    a, b = (_mean_losses(runs, m, teacher) for m in (first, second))
    shared = [
        (key, other) for key in a for other in b if key[0] == other[0] and same_budget(key[1], other[1])
    ]
    if not shared:
        return None
    tokens = max(key[1] for key, _ in shared)
    at = [(key, other) for key, other in shared if key[1] == tokens]
    gap = float(np.mean([b[other] - a[key] for key, other in at]))
    return Matched(first, second, teacher, tokens, len(at), gap)


@dataclass(frozen=True)
class Crossover:
    """Where, by the fitted laws, a distilled student beats the same student trained on data."""

    method: str
    teacher: str
    teacher_loss: float
    params: float
    wins: list[tuple[float, float]]  # the token ranges where distillation wins, within token_range
    token_range: tuple[float, float]


def crossover(fit: MethodFit, runs: list[StudyRun]) -> Crossover:
    teacher, teacher_loss, params = fit.main_setting()
    tokens = [r.student_tokens for r in runs]
    token_range = (min(tokens) / 10, max(tokens) * 10)
    wins = distillation_wins(params, teacher_loss, fit.coefficients, token_range=token_range)
    return Crossover(fit.method, teacher, teacher_loss, params, wins, token_range)


@dataclass(frozen=True)
class IsoFlop:
    """The best loss per method within the largest budget every method reaches, under one scenario."""

    scenario: Scenario
    budget: float
    best: dict[str, StudyRun]  # method -> its lowest-loss run costing <= budget (none: absent)
    costs: dict[str, np.ndarray]  # method -> each run's cost under the scenario (NaN: unknown)
    losses: dict[str, np.ndarray]
    unknown_teachers: list[str]  # teachers whose training FLOPs runs.csv does not hold


def _own_run(teacher: StudyRun, supervised: list[StudyRun]) -> StudyRun | None:
    """The supervised run that is `teacher`'s teacher: named by its cell or folder, or the one of the same N and
    loss (a study's teacher is one of its supervised runs, evaluated once)."""
    for run in supervised:
        named = teacher.teacher in (run.cell, run.run_dir)
        same = run.student_params == teacher.teacher_params and math.isclose(run.loss, teacher.teacher_loss)
        if named or same:
            return run
    return None


def teacher_training_flops(runs: list[StudyRun]) -> dict[str, float]:
    """{teacher: its own training FLOPs} for the teachers that are supervised runs of runs.csv."""
    supervised = [r for r in runs if r.method == "supervised"]
    flops = {}
    for r in runs:
        if r.method != "supervised" and r.teacher not in flops:
            own = _own_run(r, supervised)
            if own is not None:
                flops[r.teacher] = own.flops_student
    return flops


def scenario_cost(run: StudyRun, scenario: Scenario, teacher_training: dict[str, float]) -> float:
    """Paper Eq. 9 on measured FLOPs: student training + delta_lgt x the teacher's generation/scoring +
    delta_pre x the teacher's training (NaN when that is unknown)."""
    if run.method == "supervised":
        return run.flops_student
    pretraining = teacher_training.get(run.teacher, math.nan) if scenario.delta_pretraining else 0.0
    return run.flops_student + scenario.delta_logits * run.flops_teacher + pretraining


def iso_flop(runs: list[StudyRun], scenario: Scenario) -> IsoFlop | None:
    training = teacher_training_flops(runs)
    methods = [m for m in FIT_METHODS if any(r.method == m for r in runs)]
    costs = {
        m: np.array([scenario_cost(r, scenario, training) for r in runs if r.method == m]) for m in methods
    }
    losses = {m: np.array([r.loss for r in runs if r.method == m]) for m in methods}
    reachable = [m for m in methods if np.isfinite(costs[m]).any()]
    unknown = sorted({r.teacher for r in runs if r.method != "supervised" and r.teacher not in training})
    if len(reachable) < 2:
        return None
    budget = min(np.nanmax(costs[m]) for m in reachable)
    best = {}
    for m in reachable:
        mine = [r for r, c in zip((r for r in runs if r.method == m), costs[m], strict=True) if c <= budget]
        if mine:
            best[m] = min(mine, key=lambda r: r.loss)
    return IsoFlop(
        scenario, float(budget), best, costs, losses, unknown if scenario.delta_pretraining else []
    )


# --- verdict and report -----------------------------------------------------------------------------------


def _tokens(value: float) -> str:
    return f"{value:,.0f}" if value < 1e7 else f"{value:.3g}"


def matched_sentence(m: Matched) -> str:
    winner, loser = (m.first, m.second) if m.gap >= 0 else (m.second, m.first)
    return (
        f"At D = {_tokens(m.tokens)} tokens (measured, mean over {m.sizes} student size(s), teacher {m.teacher}), "
        f"{winner} beats {loser} by {abs(m.gap):.3f} nats/token."
    )


def crossover_sentence(c: Crossover) -> str:
    who = f"{c.method} distillation of the N = {c.params:.3g} student from {c.teacher} (L_T = {c.teacher_loss:.3f})"
    low, high = c.token_range
    searched = f"[{_tokens(low)}, {_tokens(high)}]"
    if not c.wins:
        return f"By the fitted laws, {who} does not beat supervised training at any D in {searched}."
    if c.wins == [(low, high)]:
        return f"By the fitted laws, {who} beats supervised training at every D in {searched}."
    if len(c.wins) == 1 and c.wins[0][0] == low:
        return (
            f"By the fitted laws, {who} beats supervised training up to D ≈ {_tokens(c.wins[0][1])} tokens."
        )
    ranges = " and ".join(f"{_tokens(a)}–{_tokens(b)}" for a, b in c.wins)
    return f"By the fitted laws, {who} beats supervised training for D ≈ {ranges} tokens (searched in {searched})."


def iso_flop_sentence(iso: IsoFlop) -> str:
    reached = ", ".join(f"{m} {r.loss:.3f}" for m, r in iso.best.items())
    winner = min(iso.best, key=lambda m: iso.best[m].loss)
    over = [m for m in iso.costs if m not in iso.best and np.isfinite(iso.costs[m]).any()]
    beyond = f"; no {' or '.join(over)} run costs that little" if over else ""
    return (
        f"Under `{iso.scenario.name}` ({iso.scenario.description}), within {iso.budget:.3g} FLOPs the best runs "
        f"reach {reached} nats/token: {winner} is lowest{beyond}."
    )


def held_out_sentence(fits: dict[str, MethodFit]) -> str:
    errors = ", ".join(f"{m} {fit.median_error:.2%}" for m, fit in fits.items())
    return f"Held-out runs (largest N·D, left out of every fit), median relative error of the prediction: {errors}."


def crossover_caution(fits: dict[str, MethodFit]) -> list[str]:
    """A warning when the supervised law, which every crossover compares against, misses its held-out runs."""
    supervised = fits.get("supervised")
    if supervised is None or not supervised.median_error > TRUSTED_ERROR:
        return []
    return [
        f"Caution: the supervised law misses its held-out runs by {supervised.median_error:.2%} (median), so the "
        "crossovers above extrapolate a law that does not follow these runs; the measured comparisons at "
        "matched D are the ones to trust."
    ]


def verdict(runs: list[StudyRun], fits: dict[str, MethodFit], isos: list[IsoFlop]) -> list[str]:
    """The study's conclusions in plain words, every number computed from runs.csv and the fits."""
    pairs = [
        ("soft", "hard"),
        ("soft", "supervised"),
        ("hard", "supervised"),
        ("soft_data", "supervised"),
        ("soft_data", "soft"),
    ]
    sentences = [matched_sentence(m) for m in (matched(runs, a, b) for a, b in pairs) if m is not None]
    crossovers = [crossover_sentence(crossover(fit, runs)) for m, fit in fits.items() if m != "supervised"]
    sentences += crossovers + (crossover_caution(fits) if crossovers else [])
    sentences += [iso_flop_sentence(iso) for iso in isos]
    sentences.append(held_out_sentence(fits))
    return sentences


def _held_label(name: str, fixed: dict[str, float]) -> str:
    if fixed.get(f"distillation.{NO_GAP}") == 0.0:
        return "held at 0: no capacity gap" if name == NO_GAP else f"no effect ({NO_GAP} = 0)"
    return "held at the paper's value"


def _coefficients_table(fit: MethodFit) -> str:
    law = fit.law.kind
    fixed = fit.coefficients.metadata.get("fixed", {})
    rows = []
    for name, value in vars(getattr(fit.coefficients, law)).items():
        key = f"{law}.{name}"
        low_high = fit.coefficients.intervals.get(key)
        if key in fixed:
            interval = _held_label(name, fixed)
        else:
            interval = f"[{low_high[0]:.4g}, {low_high[1]:.4g}]" if low_high else "—"
        rows.append([name, f"{value:.4g}", interval])
    return markdown_table(["coefficient", "value", f"{fit.law.confidence:.0%} bootstrap interval"], rows)


def _fits_section(fits: dict[str, MethodFit], skipped: dict[str, str]) -> str:
    parts = ["## Fits"]
    for method, fit in fits.items():
        law = "Eq. 1" if method == "supervised" else "Eq. 8, Ltilde_S from the supervised fit"
        parts.append(
            f"### {method} ({law})\n\n{len(fit.train)} runs fitted, {len(fit.held_out)} held out; relative "
            f"error on the fitted runs {fit.law.relative_error:.2%} (mean). Held fixed: {fit.fixed_reason}. "
            f"File: `{fit.path.name}` (method `{fit.coefficients.method}`, usable as `--coefficients`)."
        )
        parts.append(_coefficients_table(fit))
    parts += [f"- {method}: not fitted ({why})" for method, why in skipped.items()]
    return "\n\n".join(parts)


def _held_out_section(fits: dict[str, MethodFit]) -> str:
    rows = []
    for method, fit in fits.items():
        interval = fit.prediction_interval()
        for i, (run, predicted, error) in enumerate(
            zip(fit.held_out, fit.predicted, fit.errors, strict=True)
        ):
            band = f"[{interval[0][i]:.4f}, {interval[1][i]:.4f}]" if interval else "—"
            teacher = "—" if method == "supervised" else f"{run.teacher_loss:.4f}"
            rows.append(
                [
                    method,
                    run.cell,
                    f"{run.student_params:.3g}",
                    _tokens(run.student_tokens),
                    teacher,
                    f"{run.loss:.4f}",
                    f"{predicted:.4f}",
                    band,
                    f"{error:.2%}",
                ]
            )
    medians = "\n".join(f"- {m}: median relative error {fit.median_error:.2%}" for m, fit in fits.items())
    header = ["law", "cell", "N", "D", "L_T", "measured", "predicted", "interval", "error"]
    return "## Held-out prediction\n\n" + markdown_table(header, rows) + "\n\n" + medians


def _iso_flop_section(isos: list[IsoFlop]) -> str:
    if not isos:
        return "## Iso-FLOP comparison\n\nFewer than two methods have runs: nothing to compare."
    rows = [
        [
            f"`{iso.scenario.name}`",
            f"{iso.budget:.3g}",
            *(f"{iso.best[m].loss:.4f}" if m in iso.best else "—" for m in FIT_METHODS),
        ]
        for iso in isos
    ]
    unknown = sorted({t for iso in isos for t in iso.unknown_teachers})
    note = (
        f"\n\nTeachers whose training FLOPs runs.csv lacks (left out of the pretraining scenarios): {', '.join(unknown)}."
        if unknown
        else ""
    )
    return (
        "## Iso-FLOP comparison\n\nEach run's cost under the paper's scenarios (Eq. 9 on measured FLOPs: student "
        "training, plus the teacher's generation/scoring when delta_lgt = 1, plus the teacher's own training "
        "when delta_pre = 1); the best loss each method reaches within the largest budget all of them reach.\n\n"
        + markdown_table(["scenario", "budget (FLOPs)", *FIT_METHODS], rows)
        + note
    )


def render_report(
    runs: list[StudyRun],
    fits: dict[str, MethodFit],
    skipped: dict[str, str],
    isos: list[IsoFlop],
    figures: dict[str, Path | str],
    source: str,
) -> str:
    counts = ", ".join(f"{m} {sum(r.method == m for r in runs)}" for m in FIT_METHODS)
    sections = [
        f"# Study analysis\n\n{len(runs)} runs from `{source}` ({counts}).",
        "## Verdict\n\n" + "\n".join(f"- {s}" for s in verdict(runs, fits, isos)),
        _fits_section(fits, skipped),
        _held_out_section(fits),
        _iso_flop_section(isos),
        "## Figures\n\n"
        + "\n\n".join(
            f"![{title}]({figure.name})" if isinstance(figure, Path) else f"- {title}: not drawn ({figure})"
            for title, figure in figures.items()
        ),
    ]
    return "\n\n".join(sections) + "\n"


def analyze(
    runs_csv: Path, output_dir: Path, *, holdout_fraction: float, bootstrap: int, quick: bool
) -> Path:
    """Fit, predict the held-out runs, compare; write fit_<method>.json, PNGs and report.md (its path)."""
    if not 0.0 < holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    runs_csv, output_dir = Path(runs_csv), Path(output_dir)
    runs = load_study_runs(runs_csv)
    output_dir.mkdir(parents=True, exist_ok=True)
    for method in FIT_METHODS:  # a method no longer fitted leaves no stale file
        (output_dir / f"fit_{method}.json").unlink(missing_ok=True)
    options = {"holdout_fraction": holdout_fraction, "bootstrap": bootstrap, "quick": quick}
    fits, skipped = fit_all(runs, output_dir, str(runs_csv), **options)
    isos = [iso for iso in (iso_flop(runs, s) for s in SCENARIOS.values()) if iso is not None]
    figures = plots.write_figures(fits, isos, output_dir)
    path = output_dir / "report.md"
    atomic_write_text(path, render_report(runs, fits, skipped, isos, figures, str(runs_csv)))
    return path
