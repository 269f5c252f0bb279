"""An unusable output folder, in every stage: one `error:` line naming it, exit 2, nothing written."""

from __future__ import annotations

import pytest

from distillab import cli
from tests.cli import in_process_user_error
from tests.sft.test_train import FRESH


def train_argv(stage, dataset, output_dir, *extra):
    return [
        stage,
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "1",
        *extra,
    ]


def stage_argv(stage: str, output_dir, tiny_teacher, hard_label_dir) -> list[str]:
    out = str(output_dir)
    return {
        "generate": ["generate", "--model", str(tiny_teacher), "--engine", "transformers", "--generator",
                     "basic_arithmetic", "--num_prompts", "2", "--output_dir", out],
        "label": ["label", "--dataset", str(hard_label_dir), "--output_dir", out],
        "sft": train_argv("sft", hard_label_dir, out, *FRESH),
        "kd": train_argv("kd", hard_label_dir, out, *FRESH),
        "evaluate": ["evaluate", "--teacher", str(tiny_teacher), "--output_dir", out],
        "scaling plot": ["scaling", "plot", "--out_dir", out],
        "assets": ["assets", "smollm2", "--dir", out],
        "demo": ["demo", "--output_dir", out],
    }[stage]  # fmt: skip


STAGES = ["generate", "label", "sft", "kd", "evaluate", "scaling plot", "assets", "demo"]


@pytest.mark.parametrize("stage", STAGES)
def test_an_output_dir_that_is_a_regular_file_is_refused(
    stage, tmp_path, tiny_teacher, hard_label_dir, capsys
):
    output_dir = tmp_path / "a-file"
    output_dir.write_text("not a folder\n")
    line = in_process_user_error(
        cli.main, stage_argv(stage, output_dir, tiny_teacher, hard_label_dir), capsys
    )
    assert f"output_dir {output_dir} is a regular file, not a folder" in line, line
    assert output_dir.read_text() == "not a folder\n"


@pytest.mark.parametrize("stage", ["sft", "evaluate"])
def test_an_output_dir_that_cannot_be_created_is_refused(
    stage, tmp_path, tiny_teacher, hard_label_dir, capsys
):
    (tmp_path / "a-file").write_text("")
    output_dir = tmp_path / "a-file" / "run"
    line = in_process_user_error(
        cli.main, stage_argv(stage, output_dir, tiny_teacher, hard_label_dir), capsys
    )
    assert f"output_dir {output_dir} is under the regular file {tmp_path / 'a-file'}" in line, line
