"""Fixtures for the sft tests: the session hard-label dataset split into train / held-out folders."""

from __future__ import annotations

import pytest

HELD_OUT_ROWS = 8


def write_hard_labels(directory, rows, metadata):
    """A finished hard-label folder holding `rows` (metadata copied, row count updated)."""
    from distillab.data.hardlabels import write_dataset, write_metadata

    write_dataset(directory, rows)
    write_metadata(directory, {**metadata, "rows": len(rows), "complete": True})
    return directory


@pytest.fixture(scope="session")
def hard_label_rows(hard_label_dir):
    import pyarrow.parquet as pq

    from distillab.data.hardlabels import read_metadata

    rows = [
        r
        for path in sorted((hard_label_dir / "data").glob("*.parquet"))
        for r in pq.read_table(path).to_pylist()
    ]
    return rows, read_metadata(hard_label_dir)


@pytest.fixture(scope="session")
def split_hard_labels(tmp_path_factory, hard_label_rows):
    """(train folder, held-out folder): the last HELD_OUT_ROWS rows of the session dataset are held out."""
    rows, metadata = hard_label_rows
    root = tmp_path_factory.mktemp("split-hard-labels")
    train = write_hard_labels(root / "train", rows[:-HELD_OUT_ROWS], metadata)
    held_out = write_hard_labels(root / "held-out", rows[-HELD_OUT_ROWS:], metadata)
    return train, held_out
