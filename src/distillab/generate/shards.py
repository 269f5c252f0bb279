"""Sharded runs without a cluster: `--shard I/N` gives a process a fixed 1/N of the rows, `--merge` joins them.

A row belongs to shard `hash(id) mod N`, so the split depends only on the row ids: the same under resume, and
whatever the order the rows come in. Shard I of N writes a complete dataset of its rows into
`<output_dir>/shard-I-of-N/`, recording where its rows sit in the full row order; `--merge` checks that the
shards come from one run and cover every row exactly once, and writes the rows back in that order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distillab.data.hardlabels import DATA_DIR, read_metadata
from distillab.errors import ConfigError, DataError

SHARD_FOLDER = re.compile(r"^shard-(\d+)-of-(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """`I/N` (0 <= I < N) -> Shard; anything else is a one-line ConfigError."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if match is None or not int(match[1]) < int(match[2]):
            raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
        return cls(int(match[1]), int(match[2]))

    def owns(self, row_id: str) -> bool:
        digest = hashlib.sha256(row_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def folder(self, output_dir: str | Path) -> Path:
        return Path(output_dir) / f"shard-{self.index}-of-{self.count}"


def take_shard(
    spec: str | None, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """With a `--shard I/N` spec: the rows shard I owns, and the `shard` entry of its metadata (where its rows sit
    in the full row order, for `--merge`). Without one: every row, and None."""
    if spec is None:
        return rows, None
    shard = Shard.parse(spec)
    positions = [position for position, row in enumerate(rows) if shard.owns(row["id"])]
    record = {"index": shard.index, "count": shard.count, "total": len(rows), "positions": positions}
    return [rows[position] for position in positions], record


@dataclass
class MergeConfig:
    merge: list[str] = field(
        default_factory=list,
        metadata={"help": "Shard folders, or folders holding shard-I-of-N folders, of one sharded run."},
    )
    output_dir: str = field(default="", metadata={"help": "Where the merged dataset goes."})

    def __post_init__(self) -> None:
        if not self.merge:
            raise ConfigError("--merge needs the shard folders (or the folder holding them)")
        if not self.output_dir:
            raise ConfigError("--merge needs --output_dir: where the merged dataset goes")


def shard_folders(paths: list[str]) -> list[Path]:
    """Each path is a shard folder or a folder whose `shard-I-of-N` children are shard folders."""
    folders = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"shard folder {path} does not exist")
        children = sorted(p for p in path.iterdir() if p.is_dir() and SHARD_FOLDER.match(p.name))
        found = [path] if "shard" in (read_metadata(path) or {}) else children
        if not found:
            raise DataError(f"{path} is neither a shard folder nor a folder of shard-I-of-N folders")
        folders += found
    return folders


def merge_shard_rows(folders: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of every shard in the full row order, and the first shard's metadata.

    Refuses (DataError) unfinished shards, shards of different runs, and shards that miss or repeat a row.
    """
    shards = [(folder, _shard_metadata(folder)) for folder in folders]
    first_folder, first = shards[0]
    count, total = first["shard"]["count"], first["shard"]["total"]
    for folder, metadata in shards:
        if _run_identity(metadata) != _run_identity(first) or metadata["shard"]["total"] != total:
            raise DataError(f"shard {folder} comes from another run than shard {first_folder}")
        if metadata["shard"]["count"] != count:
            raise DataError(f"shard {folder} is one of {metadata['shard']['count']}, not one of {count}")
    indices = sorted(metadata["shard"]["index"] for _, metadata in shards)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        what = f"shard(s) {', '.join(map(str, missing))} missing" if missing else "a shard given twice"
        raise DataError(f"cannot merge {count} shards: {what}")
    ordered: list[dict[str, Any] | None] = [None] * total
    for folder, metadata in shards:
        positions = metadata["shard"]["positions"]
        rows = _read_rows(folder)
        if len(rows) != len(positions):
            raise DataError(f"shard {folder} holds {len(rows)} rows but records {len(positions)}")
        for position, row in zip(positions, rows, strict=True):
            ordered[position] = row
    if any(row is None for row in ordered):
        raise DataError(f"the shards cover {sum(row is not None for row in ordered)} of {total} rows")
    return ordered, first  # type: ignore[return-value]


def _run_identity(metadata: dict[str, Any]) -> tuple:
    """What shards of one run share: the generate config, the labelled dataset, the soft-label settings."""
    soft = metadata.get("soft_labels") or {}
    settings = ("k", "teacher", "logprob_dtype", "tokenizer_fingerprint", "fingerprint")
    return (
        metadata.get("config_fingerprint"),
        metadata.get("source_dataset"),
        *(soft.get(key) for key in settings),
    )


def _shard_metadata(folder: Path) -> dict[str, Any]:
    metadata = read_metadata(folder)
    if metadata is None or "shard" not in metadata:
        raise DataError(f"{folder} is not a shard folder (no shard entry in its distillab.json)")
    if not metadata.get("complete") or not metadata.get("soft_labels", {"complete": True}).get("complete"):
        raise DataError(f"shard {folder} is unfinished; re-run its command to finish it before merging")
    return metadata


def _read_rows(folder: Path) -> list[dict[str, Any]]:
    return [
        row
        for path in sorted((folder / DATA_DIR).glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def run_or_merge(argv: list[str], config_cls: type, run: Callable[[Any], Any]) -> None:
    """`--merge DIR... --output_dir OUT` joins shard folders into one dataset; any other command line is parsed
    into `config_cls` and handed to `run` (the main of `distillab generate` and of `distillab label`)."""
    from distillab.configs import parse_config

    if "--merge" in argv:
        from distillab.generate.merge import merge

        merge(parse_config(MergeConfig, argv))
    else:
        run(parse_config(config_cls, argv))
