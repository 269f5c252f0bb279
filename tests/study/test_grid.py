"""The study grid from its config: cells, teachers, budgets and the config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillab.configs import parse_config
from distillab.errors import ConfigError
from distillab.study import cli_fields
from distillab.study.config import StudyConfig
from distillab.study.grid import Teacher, budget_label, build_grid, parse_teacher, rows_for_budget

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "study-cpu" / "study.yaml"


def test_the_full_recipe_meets_the_issue_s_grid():
    config = parse_config(StudyConfig, ["--config", str(RECIPE)])
    config.validate_grid()
    grid = build_grid(config)
    names = [c.name for c in grid.cells]
    assert len(names) == len(set(names)) == 49
    supervised = [c for c in grid.cells if c.method == "supervised"]
    assert len({c.size for c in supervised}) >= 4 and len({c.budget for c in supervised}) >= 4
    assert max(c.budget for c in supervised) >= 8 * min(c.budget for c in supervised)
    assert list(grid.teachers) == ["d_800k", "c_800k", "b_800k"]
    for method in ("hard", "soft", "soft_data"):
        cells = [c for c in grid.cells if c.method == method]
        from_first = [c for c in cells if c.teacher == "d_800k"]
        assert len({c.size for c in from_first}) == 3 and len({c.budget for c in from_first}) == 3
        assert {c.teacher for c in cells if (c.size, c.budget) == ("a", 400000)} == set(grid.teachers)
    # teacher cells first, in the order the recipe lists the teachers
    assert names[:3] == ["supervised_d_800k", "supervised_c_800k", "supervised_b_800k"]


def test_quick_preset_replaces_the_grid_but_not_command_line_flags():
    argv = ["--config", str(RECIPE), "--quick", "--output_dir", "elsewhere", "--workers=3"]
    config = parse_config(StudyConfig, argv).with_quick_preset(cli_fields(argv))
    assert config.quick and config.supervised_budgets == [2000, 4000, 8000] and config.teachers == ["c@8000"]
    assert (config.output_dir, config.workers) == ("elsewhere", 3)
    assert config.teacher_axis_size is None
    assert [c.name for c in build_grid(config).cells][-1] == "soft_data_a_4k_from_c_8k"


def test_a_teacher_is_a_supervised_cell_or_a_model_folder():
    cell_teacher = parse_teacher("d@200000")
    assert (cell_teacher.name, cell_teacher.cell.name) == ("d_200k", "supervised_d_200k")
    assert parse_teacher("models/my-teacher") == Teacher("my-teacher", path=Path("models/my-teacher"))


def test_budgets_become_rows_and_labels():
    assert rows_for_budget(4000, 49) == 82  # 81 * 49 = 3969 < 4000
    assert rows_for_budget(200000, 49) == 4082
    assert [budget_label(b) for b in (900, 25000, 1500000)] == ["900", "25k", "1.5M"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--supervised_sizes", "a", "zz"], "size 'zz' is not defined"),
        (["--teachers", "d@lots"], "expected `size@budget`"),
        (["--supervised_budgets", "0"], "token budgets must be >= 1"),
        (["--teacher_axis_budget", "0"], "give both teacher_axis_size and teacher_axis_budget"),
    ],
)
def test_grid_errors_name_the_field(flags, message):
    config = parse_config(StudyConfig, ["--config", str(RECIPE), *flags])
    with pytest.raises(ConfigError, match=message):
        config.validate_grid()
