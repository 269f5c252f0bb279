"""`--replicas 2` without Ray (distilabel step replicas in local processes): the single-process rows."""

from __future__ import annotations

import pytest

from distillab import cli
from distillab.data.hardlabels import load_hard_labels, read_metadata
from tests.generate.test_generate import FIXTURE_ARGS

pytestmark = pytest.mark.slow


def rows_of(directory) -> list[dict]:
    return load_hard_labels(str(directory)).to_list()


def test_generate_with_two_replicas(tmp_path, tiny_teacher, hard_label_dir):
    output_dir = tmp_path / "replicas"
    argv = ["generate", "--model", str(tiny_teacher), *FIXTURE_ARGS, "--batch_size", "8", "--replicas", "2"]
    cli.main([*argv, "--output_dir", str(output_dir)])
    assert rows_of(output_dir) == rows_of(hard_label_dir)


def test_label_with_two_replicas(tmp_path, hard_label_dir, soft_label_dir):
    output_dir = tmp_path / "soft"
    argv = ["label", "--dataset", str(hard_label_dir), "--soft_labels_k", "16", "--replicas", "2"]
    cli.main([*argv, "--output_dir", str(output_dir)])
    assert rows_of(output_dir) == rows_of(soft_label_dir)
    assert read_metadata(output_dir)["soft_labels"]["complete"] is True
    assert not (output_dir / ".distilabel").exists() and not (output_dir / ".soft_shards").exists()
