"""The study's grid: which cells (method x student size x budget x teacher) and which teachers a config asks for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from distillab.study.config import StudyConfig

METHODS = ("supervised", "hard", "soft", "soft_data")


@dataclass(frozen=True)
class Cell:
    """One student: trained by `method` on `budget` supervised tokens (D), from `teacher` unless supervised."""

    method: str
    size: str
    budget: int
    teacher: str | None = None

    @property
    def name(self) -> str:
        name = f"{self.method}_{self.size}_{budget_label(self.budget)}"
        return f"{name}_from_{self.teacher}" if self.teacher else name


@dataclass(frozen=True)
class Teacher:
    """A teacher: a supervised cell of the study, or an HF model folder (`path`)."""

    name: str
    cell: Cell | None = None
    path: Path | None = None


@dataclass(frozen=True)
class Grid:
    cells: list[Cell]
    teachers: dict[str, Teacher]


def budget_label(tokens: int) -> str:
    """200000 -> '200k', 1500000 -> '1.5M', 900 -> '900'."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if tokens >= scale:
            return f"{tokens / scale:g}{unit}"
    return str(tokens)


SAME_BUDGET = 0.1  # measured D within this fraction of each other: one nominal budget


def same_budget(tokens: float, other: float) -> bool:
    """Whether two measured D come from one nominal budget: a budget is a number of examples, so D differs a
    little by teacher (its sequences end at different lengths) and between real and generated data."""
    return abs(tokens - other) <= SAME_BUDGET * max(tokens, other)


def rows_for_budget(budget: int, tokens_per_row: float) -> int:
    """Examples a budget of supervised tokens takes (each row supervises its continuation + end of turn)."""
    return max(1, math.ceil(budget / tokens_per_row))


def parse_teacher(spec: str) -> Teacher:
    """`size@budget` -> that supervised cell; anything else is an HF model folder."""
    if "@" in spec:
        size, budget = spec.split("@", 1)
        cell = Cell("supervised", size, int(budget))
        return Teacher(f"{size}_{budget_label(int(budget))}", cell=cell)
    path = Path(spec)
    return Teacher(path.name, path=path)


def build_grid(config: StudyConfig) -> Grid:
    """Cells in the order they should start: teacher cells first, then the rest of the supervised grid, then
    hard, soft and soft_data, each its sizes x budgets from the first teacher plus, when the method has a grid,
    the teacher-axis student from every teacher."""
    teachers = {t.name: t for t in map(parse_teacher, config.teachers)}
    supervised = [
        Cell("supervised", s, b) for s in config.supervised_sizes for b in config.supervised_budgets
    ]
    teacher_cells = [t.cell for t in teachers.values() if t.cell is not None]
    cells = _unique([*teacher_cells, *supervised])
    first = next(iter(teachers), None)
    axis = list(teachers) if config.teacher_axis_size else []
    grids = {
        "hard": (config.distill_sizes, config.distill_budgets),
        "soft": (config.distill_sizes, config.distill_budgets),
        "soft_data": (config.soft_data_sizes, config.soft_data_budgets),
    }
    for method, (sizes, budgets) in grids.items():
        main = [Cell(method, s, b, first) for s in sizes for b in budgets]
        if not main:
            continue
        along_axis = [Cell(method, config.teacher_axis_size, config.teacher_axis_budget, t) for t in axis]
        cells += _unique(main + along_axis, seen=cells)
    return Grid(cells, teachers)


def _unique(cells: list[Cell], seen: list[Cell] = ()) -> list[Cell]:
    known = set(seen)
    unique = []
    for cell in cells:
        if cell not in known:
            known.add(cell)
            unique.append(cell)
    return unique
