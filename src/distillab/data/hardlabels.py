"""The hard-label dataset contract (docs/architecture.md): schema, resumable shard store, metadata, card, load and push.

On disk a finished dataset looks exactly like its Hub repo, so `load_dataset(dir)` and `load_dataset(repo_id)`
read the same thing:

    output_dir/
      data/train-00000-of-00001.parquet   the rows, in prompt order
      README.md                           dataset card (YAML header + summary)
      distillab.json                      metadata; "complete": true only once every row is written
      distillab_config.yaml               the resolved config of the run
      .shards/part-*.parquet              rows flushed while a run goes (removed once complete)
      .shards/failed-*.json               rows the engine gave up on, {id: reason} (a rerun retries them)
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillab.errors import DataError, first_line
from distillab.fileio import atomic_write_json, atomic_write_text, read_json

METADATA_NAME = "distillab.json"
SHARDS_DIR = ".shards"
DATA_DIR = "data"
ROWS_PER_FILE = 50_000
TOKEN_ID_COLUMNS = ("input_ids",)  # the soft-label rows' token ids (`parquet_options`)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("generation_index", pa.int32()),
        ("reference", pa.string()),
    ]
)
REQUIRED_COLUMNS = (
    "id",
    "prompt",
    "messages",
    "completion",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
)


class ShardStore:
    """Append-only parquet shards under `output_dir/<subdir>`, each written atomically; rows keyed by `id`."""

    def __init__(self, output_dir: str | Path, schema: pa.Schema = SCHEMA, subdir: str = SHARDS_DIR):
        self.directory = Path(output_dir) / subdir
        self.schema = schema

    def write(self, rows: list[dict[str, Any]]) -> Path | None:
        if not rows:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"part-{uuid.uuid4().hex[:12]}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), tmp)
        tmp.rename(path)
        return path

    def shard_paths(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet")) if self.directory.is_dir() else []

    def done_ids(self) -> set[str]:
        return {
            i for path in self.shard_paths() for i in read_parquet(path, columns=["id"])["id"].to_pylist()
        }

    def rows(self) -> dict[str, dict[str, Any]]:
        """Every flushed row by id (a row written twice keeps one copy)."""
        return {row["id"]: row for path in self.shard_paths() for row in read_parquet(path).to_pylist()}

    def write_failures(self, reasons: dict[str, str]) -> None:
        """Record the rows of a batch that the engine gave up on, {id: reason}, in one atomic file."""
        if reasons:
            atomic_write_json(self.directory / f"failed-{uuid.uuid4().hex[:12]}.json", reasons)

    def failures(self) -> dict[str, str]:
        """Every recorded failure, {id: reason}."""
        paths = sorted(self.directory.glob("failed-*.json")) if self.directory.is_dir() else []
        return {row_id: reason for path in paths for row_id, reason in read_json(path).items()}

    def clear_failures(self) -> None:
        """Forget the recorded failures (a rerun retries those rows)."""
        for path in self.directory.glob("failed-*.json") if self.directory.is_dir() else []:
            path.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def write_dataset(
    output_dir: str | Path, rows: list[dict[str, Any]], schema: pa.Schema = SCHEMA
) -> list[Path]:
    """Write rows as `data/train-XXXXX-of-YYYYY.parquet`, replacing any previous data atomically."""
    output_dir = Path(output_dir)
    staging = output_dir / f".{DATA_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    n_files = max(1, -(-len(rows) // ROWS_PER_FILE))
    for index in range(n_files):
        part = table.slice(index * ROWS_PER_FILE, ROWS_PER_FILE)
        pq.write_table(
            part, staging / f"train-{index:05d}-of-{n_files:05d}.parquet", **parquet_options(schema)
        )
    final, previous = output_dir / DATA_DIR, output_dir / f".{DATA_DIR}.old"
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    return sorted(final.glob("*.parquet"))


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """`pq.write_table` options: dictionaries for every column but the binary ones (opaque blobs, e.g. coded soft
    labels), statistics for those but the token-id lists (min/max of token ids serve no query, and a blob's would
    copy two whole values into the file); zstd level 9 for the token-id lists (~30% smaller than snappy on the
    demo rows), snappy (pyarrow's default) for the rest."""
    compression, level, statistics, dictionary = {}, {}, [], []
    for field in schema:
        paths = _leaf_paths(field)
        token_ids = field.name in TOKEN_ID_COLUMNS
        compression |= dict.fromkeys(paths, "zstd" if token_ids else "snappy")
        level |= dict.fromkeys(paths, 9) if token_ids else {}
        if not pa.types.is_binary(field.type):
            dictionary += paths
            statistics += [] if token_ids else paths
    return {
        "compression": compression,
        "compression_level": level,
        "write_statistics": statistics,
        "use_dictionary": dictionary,
    }


def _leaf_paths(field: pa.Field, prefix: str = "") -> list[str]:
    """The parquet column paths of an arrow field (`messages.list.element.role`, ...: parquet names every list's
    values `element`, whatever arrow calls them)."""
    path = prefix + field.name
    if pa.types.is_list(field.type):
        return _leaf_paths(field.type.value_field.with_name("element"), f"{path}.list.")
    if pa.types.is_struct(field.type):
        return [leaf for child in field.type for leaf in _leaf_paths(child, f"{path}.")]
    return [path]


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet file's table; a file that is not one (truncated, garbage) is a `DataError` naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path} is corrupted: not a readable parquet file ({first_line(err)})") from None


def read_metadata(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / METADATA_NAME
    return read_json(path) if path.is_file() else None


def write_metadata(directory: str | Path, metadata: dict[str, Any]) -> None:
    atomic_write_json(Path(directory) / METADATA_NAME, metadata)


def write_card(directory: str | Path, card: str) -> None:
    atomic_write_text(Path(directory) / "README.md", card)


def load_hard_labels(source: str, split: str = "train", require_complete: bool = True):
    """Load a hard-label dataset from a distillab output folder or a Hub dataset id, checking its columns."""
    import datasets

    path = Path(source)
    if path.exists():
        metadata = read_metadata(path)
        if metadata is not None and require_complete and not metadata.get("complete"):
            raise DataError(
                f"{source} is an unfinished generate run (complete=false); re-run generate to finish it"
            )
        files = sorted((path / DATA_DIR).glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"no data files in {source} (expected {DATA_DIR}/*.parquet)")
        # Read the files themselves: the datasets cache can serve a stale copy of a regenerated folder.
        dataset = datasets.Dataset(pa.concat_tables([read_parquet(f) for f in files]))
    else:
        try:
            dataset = datasets.load_dataset(source, split=split)
        except Exception as err:  # not found, offline, bad split ...
            raise DataError(f"cannot load dataset {source!r}: {first_line(err)}") from None
    check_columns(dataset.column_names, REQUIRED_COLUMNS, source)
    return dataset


def check_columns(columns: Iterable[str], required: Iterable[str], where: str) -> None:
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {', '.join(missing)}; is it a distillab hard-label dataset?"
        )


def push_to_hub(directory: str | Path, repo_id: str, private: bool) -> str:
    """Upload the finished dataset folder (data, card, metadata, config) to a Hub dataset repo."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise DataError("--push_to_hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(directory),
        allow_patterns=[f"{DATA_DIR}/*.parquet", "README.md", METADATA_NAME, "*.yaml"],
        commit_message="distillab generate",
    )
    return str(getattr(commit, "commit_url", repo_id))
