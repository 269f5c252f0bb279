"""Small file helpers: atomic writes (files and folders), so an interrupted run never leaves a half-written
file behind; reads that name the file when it is corrupted; the output-folder check every stage runs before it
writes; the UTC timestamps the files record."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillab.errors import ConfigError, DataError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temp file + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path` to fill; it becomes `path` (rename) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from `path`; a file that is not one (truncated, garbage) is a `DataError` naming it."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is corrupted: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is corrupted: a JSON {type(data).__name__}, not an object")
    return data


def check_output_dir(path: str | Path) -> None:
    """Raise a `ConfigError` unless `path` is a writable folder or can be created as one (creates nothing)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if existing == path and not path.is_dir():
        raise ConfigError(f"output_dir {path} is a regular file, not a folder: choose another --output_dir")
    if not existing.is_dir():
        raise ConfigError(f"output_dir {path} is not writable: {existing} is a regular file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"output_dir {path} is not writable: {err.strerror or err}") from None


def utc_timestamp() -> str:
    """The current UTC time to the second, ISO 8601 (`2026-01-31T12:00:00+00:00`)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
