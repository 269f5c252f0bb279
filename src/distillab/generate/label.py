"""`distillab label`: add the teacher's top-k soft labels to a hard-label dataset, on the same tokens.

Also run by `distillab generate --soft_labels_k K` right after the hard labels are written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillab.configs import config_fingerprint, model_reference, must_start_over
from distillab.data.cards import render_hard_label_card
from distillab.data.chat import soft_label_sequence
from distillab.data.hardlabels import (
    SCHEMA,
    ShardStore,
    load_hard_labels,
    push_to_hub,
    read_metadata,
    write_card,
    write_dataset,
    write_metadata,
)
from distillab.data.softlabels import ALIGNMENT, LOGPROB_DTYPES, SOFT_COLUMNS, TAIL, soft_label_fields
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.errors import ConfigError, DataError, exit_on_user_error
from distillab.fileio import check_output_dir
from distillab.generate.config import ScaleOutConfig
from distillab.generate.registry import ENGINES, SCORERS
from distillab.generate.shards import Shard, run_or_merge, take_shard
from distillab.modelfiles import check_model_files

SOFT_SHARDS_DIR = ".soft_shards"


@dataclass
class LabelConfig(ScaleOutConfig):
    dataset: str = field(
        default="", metadata={"help": "Hard-label dataset: a distillab output folder or Hub id."}
    )
    model: str | None = field(default=None, metadata={"help": "Teacher (default: the dataset's teacher)."})
    revision: str | None = field(default=None, metadata={"help": "Teacher revision."})
    engine: str = field(default="transformers", metadata={"help": "Scorer: transformers (exact) or vllm."})
    soft_labels_k: int = field(default=64, metadata={"help": "How many top log-probs to keep per position."})
    logprob_dtype: str = field(
        default="float16", metadata={"help": "Stored log-prob dtype: float16|float32."}
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass; also the shard size."})
    dtype: str = field(default="auto", metadata={"help": "Teacher weights dtype (auto = fp32 on CPU)."})
    device: str = field(default="auto", metadata={"help": "transformers scorer device."})
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM context length."})
    kv_cache_gib: float | None = field(default=None, metadata={"help": "vLLM KV-cache GiB (CPU default 2)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to write (default: in place for a local dataset folder)."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace soft labels (complete or not) made with other settings: teacher, revision, engine, "
            "k, dtypes."
        },
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo id to push to."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dataset:
            raise ConfigError("--dataset is required: a hard-label dataset folder or Hub id")
        self.model = self.model and model_reference(self.model)
        if self.engine not in SCORERS:
            raise ConfigError(
                f"unknown --engine {self.engine!r} for soft labels; choose from {', '.join(SCORERS)}"
            )
        if self.soft_labels_k < 1:
            raise ConfigError(f"--soft_labels_k must be >= 1, got {self.soft_labels_k}")
        if self.logprob_dtype not in LOGPROB_DTYPES:
            raise ConfigError(f"--logprob_dtype must be one of {', '.join(LOGPROB_DTYPES)}")
        if self.output_dir is None and not Path(self.dataset).is_dir():
            raise ConfigError("--output_dir is required when --dataset is not a local folder")

    @property
    def run_dir(self) -> Path:
        """The folder this process writes: the output folder, or its shard-I-of-N folder with --shard."""
        output_dir = Path(self.output_dir or self.dataset)
        return Shard.parse(self.shard).folder(output_dir) if self.shard else output_dir


def label(config: LabelConfig) -> Path:
    """Score every row's full chat sequence with the teacher and store top-k soft labels beside the hard labels."""
    from transformers import AutoConfig, AutoTokenizer

    output_dir = config.run_dir
    check_output_dir(output_dir)
    dataset = load_hard_labels(config.dataset)
    metadata = read_metadata(config.dataset) if Path(config.dataset).is_dir() else None
    teacher = config.model or (metadata or {}).get("teacher", {}).get("model")
    if not teacher:
        raise ConfigError("--model is required: the dataset does not name its teacher")
    check_model_files(teacher)
    fingerprint = config_fingerprint(soft_label_settings(config, teacher))
    previous = (read_metadata(output_dir) or {}).get("soft_labels") or {}
    relabel = bool(previous) and must_start_over(
        previous.get("fingerprint"),
        fingerprint,
        overwrite=config.overwrite,
        holder=f"output_dir {output_dir} holds soft labels",
    )
    if previous.get("complete") and not relabel:
        print(f"label: {output_dir} already has top-{config.soft_labels_k} soft labels; nothing to do")
        return output_dir
    tokenizer = AutoTokenizer.from_pretrained(teacher, revision=config.revision)
    vocab_size = AutoConfig.from_pretrained(teacher, revision=config.revision).vocab_size
    if config.soft_labels_k > vocab_size:
        raise ConfigError(
            f"--soft_labels_k {config.soft_labels_k} is larger than the teacher's vocabulary ({vocab_size})"
        )
    teacher_tokenizer = tokenizer_fingerprint(tokenizer)
    if metadata and metadata.get("tokenizer_fingerprint") not in (None, teacher_tokenizer):
        raise DataError(
            f"teacher {teacher!r} has a different tokenizer than the one that wrote {config.dataset}"
        )

    rows, shard = take_shard(config.shard, dataset.to_list())
    sequences = [
        soft_label_sequence(row["messages"], tokenizer, f"row {index} (id {row['id']})")
        for index, row in enumerate(rows)
    ]
    _prepare_output(output_dir, config, rows, metadata)
    if shard is not None:
        write_metadata(output_dir, {**read_metadata(output_dir), "shard": shard})
    store = soft_shard_store(output_dir, config.logprob_dtype)
    if relabel:
        store.clear()
    # The shards about to be written belong to these settings: a relaunch with others never reuses them.
    in_progress = read_metadata(output_dir) or {}
    write_metadata(
        output_dir, {**in_progress, "soft_labels": {"complete": False, "fingerprint": fingerprint}}
    )
    done = store.done_ids()
    todo = [i for i, row in enumerate(rows) if row["id"] not in done]
    print(f"label: {len(rows)} sequences, {len(rows) - len(todo)} already scored")
    if todo and (config.ray or config.replicas > 1):
        from distillab.generate.pipeline import run_label_pipeline

        run_label_pipeline(
            config, teacher, output_dir, [rows[i]["id"] for i in todo], [sequences[i] for i in todo]
        )
    elif todo:
        scorer = ENGINES[config.engine].build_scorer(config, teacher)
        _score_all(scorer, store, rows, sequences, todo, config)
    soft = store.rows()
    merged = [{**row, **{c: soft[row["id"]][c] for c in SOFT_COLUMNS}} for row in rows]
    files = write_dataset(output_dir, merged, schema=full_schema(config.logprob_dtype))
    metadata = read_metadata(output_dir)
    metadata["soft_labels"] = {
        **_soft_metadata(config, teacher, vocab_size, teacher_tokenizer, merged, files),
        "fingerprint": fingerprint,
    }
    write_card(output_dir, render_hard_label_card(metadata))
    write_metadata(output_dir, metadata)
    store.clear()
    print(
        f"label: wrote top-{config.soft_labels_k} soft labels for {len(rows)} rows "
        f"({metadata['soft_labels']['bytes_per_token']:.0f} bytes/token on disk)"
    )
    if config.push_to_hub:
        print(f"label: pushed to {push_to_hub(output_dir, config.push_to_hub, private=config.private)}")
    return output_dir


def soft_label_settings(config: LabelConfig, teacher: str) -> dict[str, Any]:
    """What makes the soft labels: one dataset never mixes labels made with different settings."""
    return {
        "teacher": teacher,
        "revision": config.revision,
        "engine": config.engine,
        "k": config.soft_labels_k,
        "logprob_dtype": config.logprob_dtype,
        "dtype": config.dtype,
    }


def _prepare_output(output_dir: Path, config: LabelConfig, rows: list[dict], metadata: dict | None) -> None:
    """A separate output folder starts as a copy of the hard-label dataset (data + metadata)."""
    if output_dir == Path(config.dataset) or (output_dir / "data").is_dir():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(output_dir, rows, schema=SCHEMA)
    write_metadata(
        output_dir,
        {
            **(metadata or {"kind": "hard_labels", "complete": True, "rows": len(rows)}),
            "source_dataset": config.dataset,
        },
    )


def _score_all(scorer, store: ShardStore, rows, sequences, todo: list[int], config: LabelConfig) -> None:
    from tqdm.auto import tqdm

    k = config.soft_labels_k
    with tqdm(total=len(todo), desc="label", unit="seq", dynamic_ncols=True) as progress:
        for begin in range(0, len(todo), config.batch_size):
            batch = todo[begin : begin + config.batch_size]
            score_batch(scorer, store, [rows[i]["id"] for i in batch], [sequences[i] for i in batch], k)
            progress.update(len(batch))
    scorer.close()


def score_batch(
    scorer, store: ShardStore, row_ids: list[str], sequences: list[tuple[list[int], int]], k: int
):
    """Score one batch of (input_ids, completion_start) sequences and write it as one atomic soft shard."""
    scored = scorer.score([ids for ids, _ in sequences], [start for _, start in sequences], k)
    store.write(
        [
            _soft_row(row_id, sequence, ids, lps)
            for row_id, sequence, (ids, lps) in zip(row_ids, sequences, scored, strict=True)
        ]
    )


def soft_shard_store(output_dir: str | Path, logprob_dtype: str) -> ShardStore:
    """The store of a label run's flushed soft-label rows (`output_dir/.soft_shards`)."""
    return ShardStore(output_dir, schema=_soft_schema(logprob_dtype), subdir=SOFT_SHARDS_DIR)


def _soft_row(row_id: str, sequence: tuple[list[int], int], ids: np.ndarray, logprobs: np.ndarray) -> dict:
    if not np.isfinite(logprobs).all():
        raise DataError(f"row id {row_id}: the teacher returned non-finite log-probs")
    input_ids, start = sequence
    return {
        "id": row_id,
        "input_ids": input_ids,
        "completion_start": start,
        "topk_ids": ids.tolist(),
        "topk_logprobs": logprobs.tolist(),
    }


def _soft_schema(logprob_dtype: str) -> pa.Schema:
    return pa.schema([("id", pa.string()), *soft_label_fields(logprob_dtype)])


def full_schema(logprob_dtype: str) -> pa.Schema:
    """The hard-label schema plus the soft-label columns."""
    return pa.schema([*SCHEMA, *soft_label_fields(logprob_dtype)])


def _soft_metadata(config, teacher, vocab_size, fingerprint, rows, files) -> dict[str, Any]:
    return {
        "complete": True,
        "k": config.soft_labels_k,
        "teacher": teacher,  # the model that scored (--model, else the dataset's teacher)
        "revision": config.revision,
        "engine": {"name": config.engine, "version": ENGINES[config.engine].version()},
        "vocab_size": vocab_size,
        "tokenizer_fingerprint": fingerprint,
        "logprob_mode": "raw log-softmax of the logits at temperature 1, before any sampling processing",
        "logprob_dtype": config.logprob_dtype,
        "alignment": ALIGNMENT,
        "tail": TAIL,
        **soft_statistics(rows, files),
    }


def soft_statistics(rows: list[dict], files: list[Path]) -> dict[str, Any]:
    """The soft-label metadata entries computed from the finished rows and their data files."""
    scored_tokens = sum(len(r["input_ids"]) - r["completion_start"] for r in rows)
    return {
        "scored_tokens": scored_tokens,
        "bytes_per_token": _soft_bytes(rows, files) / max(scored_tokens, 1),
    }


def _soft_bytes(rows: list[dict], files: list[Path]) -> int:
    """On-disk bytes the soft labels add: the data files minus the same rows written without them."""
    hard = pa.Table.from_pylist([{c: r[c] for c in SCHEMA.names} for r in rows], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(hard, sink)
    return sum(f.stat().st_size for f in files) - sink.getvalue().size


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_or_merge(sys.argv[1:] if argv is None else argv, LabelConfig, label)


if __name__ == "__main__":
    main()
