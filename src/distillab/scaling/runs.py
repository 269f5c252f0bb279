"""Measured training runs for fitting the laws: a CSV or JSON-lines file, one run per row.

Columns (extra columns are ignored):
  student_params   N, non-embedding parameters of the trained model       (required, > 0)
  student_tokens   D, tokens it was trained on                             (required, > 0)
  loss             its validation cross-entropy against data, nats/token  (required, > 0)
  teacher_loss     L_T, the teacher's loss for a distilled run            (optional; empty = supervised run)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillab.errors import DataError
from distillab.scaling.laws import BUSBRIDGE2025, CoefficientSet, distillation_loss, supervised_loss

REQUIRED_COLUMNS = ("student_params", "student_tokens", "loss")
TEACHER_COLUMN = "teacher_loss"


@dataclass(frozen=True)
class Runs:
    """Runs as arrays; `teacher_loss` is NaN for supervised runs."""

    student_params: np.ndarray
    student_tokens: np.ndarray
    loss: np.ndarray
    teacher_loss: np.ndarray

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def is_distilled(self) -> np.ndarray:
        return ~np.isnan(self.teacher_loss)

    def subset(self, mask: np.ndarray) -> Runs:
        """The runs where `mask` (booleans or indices) selects."""
        return Runs(
            self.student_params[mask], self.student_tokens[mask], self.loss[mask], self.teacher_loss[mask]
        )

    @classmethod
    def from_arrays(cls, student_params, student_tokens, loss, teacher_loss=None) -> Runs:
        arrays = [np.asarray(a, dtype=float).ravel() for a in (student_params, student_tokens, loss)]
        teacher = (
            np.full_like(arrays[2], np.nan)
            if teacher_loss is None
            else np.asarray(teacher_loss, float).ravel()
        )
        return cls(*arrays, teacher)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(column names, [(row label for errors, row)]) of a CSV or JSON-lines file."""
    text = path.read_text()
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        rows, columns = [], {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number}: each line must be a JSON object")
            rows.append((f"line {number}", row))
            columns.update(dict.fromkeys(row))
        return list(columns), rows
    reader = csv.DictReader(text.splitlines())
    return list(reader.fieldnames or []), [(f"line {i}", row) for i, row in enumerate(reader, start=2)]


def _positive(path: Path, label: str, column: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise DataError(f"{path} {label}: {column} must be a positive number, got {value!r}")
    return number


def load_runs(path: str | Path) -> Runs:
    """Read runs from a .csv or .jsonl file, checking columns and values (errors name the file and row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"runs file {path} does not exist")
    columns, rows = _read_rows(path)
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise DataError(
                f"{path}: missing column {column!r} "
                f"(expected {', '.join(REQUIRED_COLUMNS)}[, {TEACHER_COLUMN}])"
            )
    if not rows:
        raise DataError(f"{path}: no runs")
    values = {column: [] for column in (*REQUIRED_COLUMNS, TEACHER_COLUMN)}
    for label, row in rows:
        for column in REQUIRED_COLUMNS:
            values[column].append(_positive(path, label, column, row.get(column)))
        teacher = row.get(TEACHER_COLUMN)
        empty = teacher is None or (isinstance(teacher, str) and not teacher.strip())
        values[TEACHER_COLUMN].append(math.nan if empty else _positive(path, label, TEACHER_COLUMN, teacher))
    return Runs.from_arrays(*(values[c] for c in (*REQUIRED_COLUMNS, TEACHER_COLUMN)))


def save_runs(runs: Runs, path: str | Path) -> Path:
    """Write runs as CSV (or JSON lines for .jsonl), the layout `load_runs` reads."""
    path = Path(path)
    records = [
        {
            "student_params": float(n),
            "student_tokens": float(d),
            "loss": float(loss),
            TEACHER_COLUMN: None if math.isnan(t) else float(t),
        }
        for n, d, loss, t in zip(
            runs.student_params, runs.student_tokens, runs.loss, runs.teacher_loss, strict=True
        )
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*REQUIRED_COLUMNS, TEACHER_COLUMN])
            writer.writeheader()
            writer.writerows({k: ("" if v is None else repr(v)) for k, v in r.items()} for r in records)
    return path


def synthetic_runs(
    n: int,
    kind: str = "distillation",
    coefficients: CoefficientSet = BUSBRIDGE2025,
    noise: float = 0.0,
    seed: int = 0,
) -> Runs:
    """Runs drawn from known coefficients, for tests and benchmarks of the fitter.

    Supervised: N in [3e7, 3e10], D in [1e9, 3e12]. Distillation: students of 1e8..3e10 parameters on
    1e9..1e12 tokens, teachers of 1e8..3e11 parameters trained on 1e10..3e12 tokens (L_T from the supervised
    law), so both weak and strong teachers occur. Losses get multiplicative log-normal `noise`.
    """
    rng = np.random.default_rng(seed)
    if kind == "supervised":
        params, tokens = 10 ** rng.uniform(7.5, 10.5, n), 10 ** rng.uniform(9, 12.5, n)
        loss, teacher = supervised_loss(params, tokens, coefficients.supervised), None
    else:
        params, tokens = 10 ** rng.uniform(8, 10.5, n), 10 ** rng.uniform(9, 12, n)
        teacher_params, teacher_tokens = 10 ** rng.uniform(8, 11.5, n), 10 ** rng.uniform(10, 12.5, n)
        teacher = supervised_loss(teacher_params, teacher_tokens, coefficients.supervised)
        loss = distillation_loss(params, tokens, teacher, coefficients)
    return Runs.from_arrays(params, tokens, loss * np.exp(noise * rng.standard_normal(n)), teacher)
