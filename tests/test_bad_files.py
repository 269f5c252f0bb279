"""Corrupted files and unusable output folders, in every stage: one `error:` line naming the file and what is
wrong with it, exit 2, nothing marked complete. The files are really corrupted: truncated safetensors weights,
garbage in a parquet shard or a JSON file."""

from __future__ import annotations

import shutil

import pytest

from distillab import cli
from tests.cli import in_process_user_error
from tests.sft.test_train import FRESH

GARBAGE = b"\x00\xffthis is not what the file should hold\n"


def truncated_model(source, directory):
    """A copy of the model folder `source` whose model.safetensors lost its second half (a cut-off copy)."""
    shutil.copytree(source, directory)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory, weights


def garbled(source, directory, relative: str):
    """A copy of the folder `source` with `relative` overwritten by garbage."""
    shutil.copytree(source, directory)
    (directory / relative).write_bytes(GARBAGE)
    return directory, directory / relative


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


@pytest.fixture
def cases(tmp_path, tiny_teacher, hard_label_dir):
    """name -> (distillab argv, the file the error must name, what it must say, the output folder)."""
    broken_model, weights = truncated_model(tiny_teacher, tmp_path / "broken-model")
    shard = "data/train-00000-of-00001.parquet"
    bad_parquet, parquet = garbled(hard_label_dir, tmp_path / "bad-parquet", shard)
    bad_metadata, metadata = garbled(hard_label_dir, tmp_path / "bad-metadata", "distillab.json")
    student, student_weights = truncated_model(tiny_teacher, tmp_path / "broken-student")
    record_run, record = garbled(tiny_teacher, tmp_path / "bad-record-student", "config.json")
    record.write_text((tiny_teacher / "config.json").read_text())
    (record_run / "distillab_run.json").write_bytes(GARBAGE)
    record = record_run / "distillab_run.json"
    out = tmp_path / "out"
    weights_msg = "is corrupted: Error while deserializing header"
    return {
        "sft student weights": (
            train_argv("sft", hard_label_dir, out, "--model_name_or_path", str(broken_model)),
            weights,
            weights_msg,
            out,
        ),
        "sft dataset parquet": (
            train_argv("sft", bad_parquet, out, *FRESH),
            parquet,
            "is corrupted: not a readable parquet file",
            out,
        ),
        "sft dataset distillab.json": (
            train_argv("sft", bad_metadata, out, *FRESH),
            metadata,
            "is corrupted: not valid JSON",
            out,
        ),
        "kd dataset parquet": (
            train_argv("kd", bad_parquet, out, *FRESH),
            parquet,
            "is corrupted: not a readable parquet file",
            out,
        ),
        "generate teacher weights": (
            [
                "generate",
                "--model",
                str(broken_model),
                "--engine",
                "transformers",
                "--generator",
                "basic_arithmetic",
                "--num_prompts",
                "2",
                "--output_dir",
                str(out),
            ],
            weights,
            weights_msg,
            out,
        ),
        "label teacher weights": (
            [
                "label",
                "--dataset",
                str(hard_label_dir),
                "--model",
                str(broken_model),
                "--output_dir",
                str(out),
            ],
            weights,
            weights_msg,
            out,
        ),
        "evaluate student weights": (
            [
                "evaluate",
                "--teacher",
                str(tiny_teacher),
                "--students",
                str(student),
                "--output_dir",
                str(out),
            ],
            student_weights,
            weights_msg,
            out,
        ),
        "evaluate run record": (
            [
                "evaluate",
                "--teacher",
                str(tiny_teacher),
                "--students",
                str(record_run),
                "--output_dir",
                str(out),
            ],
            record,
            "is corrupted: not valid JSON",
            out,
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "sft student weights",
        "sft dataset parquet",
        "sft dataset distillab.json",
        "kd dataset parquet",
        "generate teacher weights",
        "label teacher weights",
        "evaluate student weights",
        "evaluate run record",
    ],
)
def test_a_corrupted_file_is_a_one_line_error_naming_it(cases, case, capsys):
    argv, path, message, output_dir = cases[case]
    line = in_process_user_error(cli.main, argv, capsys)
    assert f"{path} {message}" in line, line
    assert not output_dir.exists()  # checked before anything is written


def test_a_corrupted_run_record_in_the_run_folder_is_named(tmp_path, hard_label_dir, capsys):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "distillab_run.json").write_bytes(GARBAGE)
    line = in_process_user_error(cli.main, train_argv("sft", hard_label_dir, output_dir, *FRESH), capsys)
    assert f"{output_dir / 'distillab_run.json'} is corrupted: not valid JSON" in line, line
    assert (output_dir / "distillab_run.json").read_bytes() == GARBAGE  # left as it was


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
    assert f"output_dir {output_dir} is not writable: {tmp_path / 'a-file'} is a regular file" in line, line
