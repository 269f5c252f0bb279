"""Budget-sized copies of a dataset: the first `rows` rows of a hard-label (optionally soft-labelled) dataset
folder, with its metadata recounted, so a cell trains one epoch on exactly its budget and its run record counts
the teacher tokens of those rows only (the teacher pass itself runs once, over the largest budget)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillab.data.hardlabels import DATA_DIR, read_metadata, write_metadata
from distillab.data.stats import length_stats
from distillab.errors import DataError


def dataset_complete(directory: Path, soft_labels_k: int | None = None) -> bool:
    """A finished `generate`/`label` output (with top-`soft_labels_k` soft labels when given)."""
    metadata = read_metadata(directory) or {}
    if soft_labels_k is None:
        return bool(metadata.get("complete"))
    soft = metadata.get("soft_labels") or {}
    return bool(soft.get("complete")) and soft.get("k") == soft_labels_k


def write_subset(source: Path, rows: int, directory: Path) -> Path:
    """`directory` = the first `rows` rows of the dataset folder `source` (reused when already written)."""
    metadata = read_metadata(directory) or {}
    if metadata.get("subset_of") == str(source) and metadata.get("rows") == rows:
        return directory
    table = pa.concat_tables(pq.read_table(f) for f in sorted((source / DATA_DIR).glob("*.parquet")))
    if table.num_rows < rows:
        raise DataError(f"{source} has {table.num_rows} rows; a budget needs {rows}")
    table = table.slice(0, rows)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / DATA_DIR).mkdir(parents=True)
    pq.write_table(table, directory / DATA_DIR / "train-00000-of-00001.parquet")
    write_metadata(directory, _subset_metadata(read_metadata(source) or {}, table, source))
    return directory


def _subset_metadata(parent: dict[str, Any], table: pa.Table, source: Path) -> dict[str, Any]:
    """The parent's metadata with every count redone over the kept rows; `subset_of` and `rows` written last
    mark the copy as finished."""
    reasons = table.column("finish_reason").to_pylist()
    metadata = {
        **parent,
        "finish_reasons": {reason: reasons.count(reason) for reason in ("stop", "length")},
        "truncation_rate": reasons.count("length") / len(reasons),
        "prompt_tokens": length_stats(table.column("prompt_tokens").to_pylist()),
        "completion_tokens": length_stats(table.column("completion_tokens").to_pylist()),
    }
    if parent.get("soft_labels"):
        starts = table.column("completion_start").to_pylist()
        lengths = [len(ids) for ids in table.column("input_ids").to_pylist()]
        scored = sum(length - start for length, start in zip(lengths, starts, strict=True))
        metadata["soft_labels"] = {**parent["soft_labels"], "scored_tokens": scored}
    return {**metadata, "subset_of": str(source), "rows": table.num_rows}
