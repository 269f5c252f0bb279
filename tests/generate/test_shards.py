"""Sharded runs: `--shard I/N` takes a fixed 1/N of the rows by id; `--merge` gives the single-process dataset."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from distillab import cli
from distillab.data.hardlabels import load_hard_labels, read_metadata
from distillab.data.softlabels import TAIL_COLUMN
from distillab.generate.config import GenerateConfig
from distillab.generate.prompts import build_prompt_set
from distillab.generate.shards import Shard, take_shard
from tests.cli import in_process_user_error
from tests.generate.test_generate import FIXTURE_ARGS
from tests.softrows import decoded_rows


def hash_bucket(row_id: str, count: int) -> int:
    """The shard of a row, written out: the first 8 bytes of sha256(id), big-endian, mod N."""
    return int(hashlib.sha256(row_id.encode()).hexdigest()[:16], 16) % count


def rows_of(directory) -> list[dict]:
    return load_hard_labels(str(directory)).to_list()


def test_every_row_belongs_to_exactly_the_shard_of_its_id_hash():
    ids = [f"row-{i}" for i in range(200)]
    for count in (1, 2, 3, 7):
        for row_id in ids:
            owners = [i for i in range(count) if Shard(i, count).owns(row_id)]
            assert owners == [hash_bucket(row_id, count)]
    rows = [{"id": row_id} for row_id in ids]
    mine, record = take_shard("1/3", rows)
    assert mine == [row for row in rows if hash_bucket(row["id"], 3) == 1]  # in the rows' order
    assert record == {"index": 1, "count": 3, "total": 200, "positions": [rows.index(row) for row in mine]}
    assert take_shard(None, rows) == (rows, None)


def test_shard_membership_does_not_depend_on_position_or_prompt_count(tiny_teacher):
    def shard0_ids(num_prompts: int) -> set[str]:
        config = GenerateConfig(
            model=str(tiny_teacher), generator="basic_arithmetic", num_prompts=num_prompts
        )
        mine, _ = take_shard("0/2", build_prompt_set(config).requests)
        return {request["id"] for request in mine}

    small, large = shard0_ids(24), shard0_ids(48)
    assert small and small < large  # the first 24 prompts keep their shard when more prompts follow


@pytest.mark.parametrize("spec", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_bad_shard_spec(capsys, tiny_teacher, spec):
    line = in_process_user_error(
        cli.main, ["generate", "--model", str(tiny_teacher), *FIXTURE_ARGS, "--shard", spec], capsys
    )
    assert f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {spec!r}" in line


@pytest.fixture(scope="module")
def generate_shards(tmp_path_factory, tiny_teacher):
    """`generate --shard 0/2` and `--shard 1/2` of the session fixture's command, both into one folder."""
    output_dir = tmp_path_factory.mktemp("sharded")
    for index in (0, 1):
        cli.main(
            [
                "generate",
                "--model",
                str(tiny_teacher),
                *FIXTURE_ARGS,
                "--batch_size",
                "16",
                "--output_dir",
                str(output_dir),
                "--shard",
                f"{index}/2",
            ]
        )
    return output_dir


def test_each_shard_holds_the_rows_of_its_hash_bucket(generate_shards, hard_label_dir):
    full = rows_of(hard_label_dir)
    for index in (0, 1):
        shard_dir = generate_shards / f"shard-{index}-of-2"
        expected = [row for row in full if hash_bucket(row["id"], 2) == index]
        assert rows_of(shard_dir) == expected
        metadata = read_metadata(shard_dir)
        assert metadata["complete"] and metadata["rows"] == len(expected)
        assert metadata["shard"]["positions"] == [i for i, row in enumerate(full) if row in expected]
    assert 0 < len(rows_of(generate_shards / "shard-0-of-2")) < 48


def test_merged_shards_equal_the_single_process_run(generate_shards, hard_label_dir, tmp_path, capsys):
    cli.main(["generate", "--merge", str(generate_shards), "--output_dir", str(generate_shards)])
    assert "merge: wrote 48 rows from 2 shards" in capsys.readouterr().out
    assert rows_of(generate_shards) == rows_of(hard_label_dir)  # same rows, prompt order
    merged, single = read_metadata(generate_shards), read_metadata(hard_label_dir)
    for key in ("complete", "rows", "prompts", "truncation_rate", "finish_reasons", "completion_tokens"):
        assert merged[key] == single[key], key
    assert "shard" not in merged and len(merged["merged_from"]) == 2

    # Shard folders given one by one, in any order, merge the same.
    cli.main(
        [
            "generate",
            "--merge",
            str(generate_shards / "shard-1-of-2"),
            str(generate_shards / "shard-0-of-2"),
            "--output_dir",
            str(tmp_path / "again"),
        ]
    )
    assert rows_of(tmp_path / "again") == rows_of(hard_label_dir)


def test_merge_refuses_a_missing_shard_and_another_run(generate_shards, tmp_path, tiny_teacher, capsys):
    only_one = [
        "generate",
        "--merge",
        str(generate_shards / "shard-0-of-2"),
        "--output_dir",
        str(tmp_path / "m"),
    ]
    assert "cannot merge 2 shards: shard(s) 1 missing" in in_process_user_error(cli.main, only_one, capsys)
    assert not (tmp_path / "m").exists()

    other = tmp_path / "other"
    cli.main(
        [
            "generate",
            "--model",
            str(tiny_teacher),
            *FIXTURE_ARGS[:-1],
            "8",
            "--output_dir",
            str(other),
            "--shard",
            "1/2",
        ]
    )
    mixed = ["generate", "--merge", str(generate_shards / "shard-0-of-2"), str(other / "shard-1-of-2")]
    line = in_process_user_error(cli.main, [*mixed, "--output_dir", str(tmp_path / "m")], capsys)
    assert "comes from another run than shard" in line


def test_merge_refuses_an_unfinished_shard(generate_shards, tmp_path, capsys):
    import shutil

    unfinished = tmp_path / "shard-1-of-2"
    shutil.copytree(generate_shards / "shard-1-of-2", unfinished)
    metadata_path = unfinished / "distillab.json"
    metadata_path.write_text(metadata_path.read_text().replace('"complete": true', '"complete": false', 1))
    argv = ["generate", "--merge", str(generate_shards / "shard-0-of-2"), str(unfinished)]
    line = in_process_user_error(cli.main, [*argv, "--output_dir", str(tmp_path / "m")], capsys)
    assert f"shard {unfinished} is unfinished" in line


def test_label_shards_merge_to_the_single_process_soft_labels(hard_label_dir, soft_label_dir, tmp_path):
    output_dir = tmp_path / "soft"
    for index in (0, 1):
        cli.main(
            [
                "label",
                "--dataset",
                str(hard_label_dir),
                "--soft_labels_k",
                "16",
                "--output_dir",
                str(output_dir),
                "--shard",
                f"{index}/2",
            ]
        )
    shard_format = read_metadata(output_dir / "shard-0-of-2")["soft_labels"]["format"]
    assert shard_format["version"] == 2  # uncoded: --merge fits one set of tables to all the rows
    cli.main(["label", "--merge", str(output_dir), "--output_dir", str(output_dir)])
    # the stored float32 tail moves in its last bits with the batch a row was scored in (padding); the rows
    # compare decoded: each dataset codes them with frequency tables of its own
    merged_rows, single_rows = decoded_rows(output_dir), decoded_rows(soft_label_dir)
    merged_tails, single_tails = (
        [row.pop(TAIL_COLUMN) for row in rows] for rows in (merged_rows, single_rows)
    )
    assert merged_rows == single_rows
    for merged_tail, single_tail in zip(merged_tails, single_tails, strict=True):
        np.testing.assert_allclose(merged_tail, single_tail, rtol=0, atol=1e-6)
    merged, single = read_metadata(output_dir)["soft_labels"], read_metadata(soft_label_dir)["soft_labels"]
    assert merged["complete"] and merged["scored_tokens"] == single["scored_tokens"]
    assert merged["format"]["version"] == single["format"]["version"] == 4
    for key in ("mean_slots_per_position", "tail_mass_mean", "max_abs_logprob_error"):
        assert merged["fidelity"][key] == pytest.approx(single["fidelity"][key], abs=1e-6)
    assert merged["k"] == 16
