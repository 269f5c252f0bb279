"""`distillab label`: add the teacher's top-k soft labels to a hard-label dataset, on the same tokens.

Also run by `distillab generate --soft_labels_k K` right after the hard labels are written.
"""

from __future__ import annotations

import json
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
    parquet_options,
    push_to_hub,
    read_metadata,
    write_card,
    write_dataset,
    write_metadata,
)
from distillab.data.softlabels import (
    ALIGNMENT,
    FORMAT_VERSION,
    LOGPROB_DTYPES,
    TAIL,
    TAIL_COLUMN,
    SoftLabelFormat,
    adaptive_slots,
    code_soft_labels,
    decode_soft_labels,
    log_tail_after,
)
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.errors import ConfigError, DataError, exit_on_user_error
from distillab.fileio import check_output_dir
from distillab.generate.config import ScaleOutConfig
from distillab.generate.registry import ENGINES, SCORERS
from distillab.generate.scorers import PROMPT_LOGPROBS_GIB
from distillab.generate.shards import Shard, run_or_merge, take_shard
from distillab.modelfiles import check_model_files

SOFT_SHARDS_DIR = ".soft_shards"
QUANTISATION_ERROR = "max_logprob_error"  # shard column: a row's max |decoded - exact| log-prob
FIDELITY_POSITIONS = 1024  # positions re-scored with the full vocabulary to estimate KL(full || stored)


@dataclass
class LabelConfig(ScaleOutConfig):
    dataset: str = field(
        default="", metadata={"help": "Hard-label dataset: a distillab output folder or Hub id."}
    )
    model: str | None = field(default=None, metadata={"help": "Teacher (default: the dataset's teacher)."})
    revision: str | None = field(default=None, metadata={"help": "Teacher revision."})
    engine: str = field(default="transformers", metadata={"help": "Scorer: transformers (exact) or vllm."})
    soft_labels_k: int = field(
        default=64,
        metadata={"help": "How many top log-probs to keep per position (at most, with --soft_labels_mass)."},
    )
    soft_labels_mass: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive k: keep per position the fewest top log-probs whose probability reaches this "
            "(e.g. 0.99), between --soft_labels_min_k and --soft_labels_k; the rest is stored as one tail mass."
        },
    )
    soft_labels_min_k: int = field(default=1, metadata={"help": "Adaptive k: keep at least this many."})
    logprob_dtype: str = field(
        default="q8",
        metadata={
            "help": "Stored log-probs: q8 (8-bit codes on a log scale, see distillab.json) | float16 | float32."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass; also the shard size."})
    dtype: str = field(default="auto", metadata={"help": "Teacher weights dtype (auto = fp32 on CPU)."})
    device: str = field(default="auto", metadata={"help": "transformers scorer device."})
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM context length."})
    kv_cache_gib: float | None = field(default=None, metadata={"help": "vLLM KV-cache GiB (CPU default 2)."})
    prompt_logprobs_gib: float = field(
        default=PROMPT_LOGPROBS_GIB,
        metadata={
            "help": "vLLM: memory for one engine step's full-vocabulary prompt log-probs; sets its tokens."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to write (default: in place for a local dataset folder)."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace soft labels (complete or not) made with other settings: teacher, revision, engine, "
            "k, mass, min_k, dtypes."
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
        if self.soft_labels_mass is not None and not 0 < self.soft_labels_mass <= 1:
            raise ConfigError(f"--soft_labels_mass must be in (0, 1], got {self.soft_labels_mass}")
        if not 1 <= self.soft_labels_min_k <= self.soft_labels_k:
            raise ConfigError(
                f"--soft_labels_min_k must be in [1, --soft_labels_k={self.soft_labels_k}], got {self.soft_labels_min_k}"
            )
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
    fmt = soft_label_format(config, vocab_size)
    store = soft_shard_store(output_dir, fmt)
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
    kl = None
    if todo and (config.ray or config.replicas > 1):
        from distillab.generate.pipeline import run_label_pipeline

        run_label_pipeline(
            config,
            teacher,
            output_dir,
            vocab_size,
            [rows[i]["id"] for i in todo],
            [sequences[i] for i in todo],
        )
    elif todo:
        scorer = ENGINES[config.engine].build_scorer(config, teacher)
        _score_all(scorer, store, rows, sequences, todo, config, fmt)
        soft = store.rows()
        kl = _kl_full_vs_stored(scorer, [soft[row["id"]] for row in rows], fmt)
        scorer.close()
    soft = store.rows()
    merged = [{**row, **{c: soft[row["id"]][c] for c in fmt.columns}} for row in rows]
    # one set of frequency tables for the whole dataset: a --shard run leaves the coding to --merge
    coded, written = code_soft_labels(merged, fmt) if fmt.quantiser and not shard else (merged, fmt)
    files = write_dataset(output_dir, coded, schema=full_schema(written))
    metadata = read_metadata(output_dir)
    metadata["soft_labels"] = {
        **_soft_metadata(config, teacher, written, teacher_tokenizer, coded, files),
        "fingerprint": fingerprint,
    }
    max_error = max(row[QUANTISATION_ERROR] for row in soft.values())
    metadata["soft_labels"]["fidelity"] = fidelity(
        merged, metadata["soft_labels"]["bytes_per_token"], max_error, kl
    )
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
        "dtype": config.dtype,
        **_format_settings(config),
    }


def _format_settings(config: LabelConfig) -> dict[str, Any]:
    """The settings the stored soft labels' format depends on, recorded in their metadata."""
    return {
        "k": config.soft_labels_k,
        "mass": config.soft_labels_mass,
        "min_k": config.soft_labels_min_k,
        "logprob_dtype": config.logprob_dtype,
        "format_version": FORMAT_VERSION,
    }


def soft_label_format(config: LabelConfig, vocab_size: int) -> SoftLabelFormat:
    """The format `distillab label` writes for this config and teacher vocabulary."""
    return SoftLabelFormat.compact(config.soft_labels_k, vocab_size, config.logprob_dtype)


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


def _score_all(
    scorer, store: ShardStore, rows, sequences, todo: list[int], config: LabelConfig, fmt: SoftLabelFormat
) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc="label", unit="seq", dynamic_ncols=True) as progress:
        for begin in range(0, len(todo), config.batch_size):
            batch = todo[begin : begin + config.batch_size]
            score_batch(
                scorer, store, [rows[i]["id"] for i in batch], [sequences[i] for i in batch], config, fmt
            )
            progress.update(len(batch))


def score_batch(
    scorer,
    store: ShardStore,
    row_ids: list[str],
    sequences: list[tuple[list[int], int]],
    config: LabelConfig,
    fmt: SoftLabelFormat,
) -> None:
    """Score one batch of (input_ids, completion_start) sequences and write it as one atomic soft shard."""
    scored = scorer.score(
        [ids for ids, _ in sequences], [start for _, start in sequences], config.soft_labels_k
    )
    store.write(
        [
            _soft_row(row_id, sequence, scores, config, fmt)
            for row_id, sequence, scores in zip(row_ids, sequences, scored, strict=True)
        ]
    )


def soft_shard_store(output_dir: str | Path, fmt: SoftLabelFormat) -> ShardStore:
    """The store of a label run's flushed soft-label rows (`output_dir/.soft_shards`)."""
    return ShardStore(output_dir, schema=_soft_schema(fmt), subdir=SOFT_SHARDS_DIR)


def _soft_row(
    row_id: str, sequence: tuple[list[int], int], scores, config: LabelConfig, fmt: SoftLabelFormat
) -> dict:
    """One row's encoded soft labels (adaptive slots, stored tail) and its quantisation error."""
    ids, logprobs, log_tail_k = scores
    if not np.isfinite(logprobs).all():
        raise DataError(f"row id {row_id}: the teacher returned non-finite log-probs")
    input_ids, start = sequence
    slots = adaptive_slots(logprobs, config.soft_labels_mass, config.soft_labels_min_k)
    row = {"id": row_id, "input_ids": input_ids, "completion_start": start}
    row |= fmt.encode(ids, logprobs, log_tail_after(logprobs, log_tail_k, slots), slots)
    _, decoded, _ = decode_soft_labels(row, fmt)
    kept = np.arange(decoded.shape[1]) < slots[:, None]
    row[QUANTISATION_ERROR] = float(
        np.abs(decoded[kept].astype(np.float64) - logprobs[:, : decoded.shape[1]][kept]).max()
    )
    return row


def _soft_schema(fmt: SoftLabelFormat) -> pa.Schema:
    return pa.schema([("id", pa.string()), *fmt.fields(), (QUANTISATION_ERROR, pa.float32())])


def full_schema(fmt: SoftLabelFormat) -> pa.Schema:
    """The hard-label schema plus the soft-label columns."""
    return pa.schema([*SCHEMA, *fmt.fields()])


def _soft_metadata(config, teacher, fmt: SoftLabelFormat, fingerprint, rows, files) -> dict[str, Any]:
    return {
        "complete": True,
        **_format_settings(config),
        "format": fmt.to_metadata(),
        "teacher": teacher,  # the model that scored (--model, else the dataset's teacher)
        "revision": config.revision,
        "engine": {"name": config.engine, "version": ENGINES[config.engine].version()},
        "vocab_size": fmt.vocab_size,
        "tokenizer_fingerprint": fingerprint,
        "logprob_mode": "raw log-softmax of the logits at temperature 1, before any sampling processing",
        "alignment": ALIGNMENT,
        "tail": TAIL[fmt.version],
        **soft_statistics(rows, files, fmt),
    }


def soft_statistics(rows: list[dict], files: list[Path], fmt: SoftLabelFormat) -> dict[str, Any]:
    """The soft-label metadata entries computed from the finished rows, their data files and their format:
    bytes/token counts the data files' soft-label bytes and the format's frequency tables (formats 3, 4)."""
    scored_tokens = sum(len(r["input_ids"]) - r["completion_start"] for r in rows)
    table_bytes = len(json.dumps(fmt.coder.to_metadata())) if fmt.coder else 0
    return {
        "scored_tokens": scored_tokens,
        "bytes_per_token": (_soft_bytes(rows, files) + table_bytes) / max(scored_tokens, 1),
        "table_bytes": table_bytes,
    }


def fidelity(
    rows: list[dict], bytes_per_token: float, max_abs_logprob_error: float, kl: dict | None
) -> dict[str, Any]:
    """What the stored soft labels of `rows` keep of the teacher: bytes, slots, tail mass, quantisation error,
    KL (`_kl_full_vs_stored`, None when not measured)."""
    slots = np.concatenate([[len(p) for p in r["topk_logprobs"]] for r in rows])
    tails = np.exp(np.concatenate([r[TAIL_COLUMN] for r in rows]).astype(np.float64))
    return {
        "bytes_per_token": bytes_per_token,
        "mean_slots_per_position": float(slots.mean()),
        "tail_mass_mean": float(tails.mean()),
        "tail_mass_p99": float(np.quantile(tails, 0.99)),
        "max_abs_logprob_error": max_abs_logprob_error,
        **(
            kl
            or {
                "kl_full_vs_stored": None,
                "kl_note": "not measured: needs the transformers scorer's full logits in the labelling process",
            }
        ),
    }


def _kl_full_vs_stored(scorer, soft_rows: list[dict], fmt: SoftLabelFormat) -> dict[str, Any] | None:
    """Mean KL(full || stored) over the first FIDELITY_POSITIONS positions, re-scored with the full vocabulary.

    The stored distribution is completed with the tail mass spread evenly over the ids not stored; the same
    with the exact log-probs of the stored ids isolates truncation from quantisation.
    """
    if not hasattr(scorer, "full_logprobs"):
        return None
    import torch

    sums, positions = np.zeros(2), 0
    for row in soft_rows:
        if positions >= FIDELITY_POSITIONS:
            break
        (full,) = scorer.full_logprobs([row["input_ids"]], [row["completion_start"]])
        full = full.double().cpu()
        ids, logprobs, log_tail = (torch.from_numpy(a) for a in decode_soft_labels(row, fmt))
        for j, stored in enumerate((logprobs.double(), full.gather(1, ids.clamp_min(0).long()))):
            sums[j] += _kl_completed(full, ids.long(), stored, log_tail.double()).sum().item()
        positions += len(full)
    return {
        "kl_full_vs_stored": sums[0] / positions,
        "kl_full_vs_exact_top_k": sums[1] / positions,
        "kl_positions": positions,
        "kl_note": "stored = the stored slots plus the tail mass spread evenly over the other ids",
    }


def _kl_completed(full, ids, logprobs, log_tail):
    """KL(full || stored completed with its tail spread evenly) per position, in nats."""
    import torch

    valid = ids >= 0
    others = full.shape[1] - valid.sum(1, keepdim=True)
    completed = (log_tail[:, None] - others.clamp_min(1).log()).expand_as(full).clone()
    # padding slots repeat the first slot, so that the scatter writes each id once
    completed.scatter_(1, torch.where(valid, ids, ids[:, :1]), torch.where(valid, logprobs, logprobs[:, :1]))
    completed -= completed.logsumexp(1, keepdim=True)
    return (full.exp() * (full - completed)).sum(1)


def _soft_bytes(rows: list[dict], files: list[Path]) -> int:
    """On-disk bytes the soft labels add: the data files minus the same rows written without them."""
    hard = pa.Table.from_pylist([{c: r[c] for c in SCHEMA.names} for r in rows], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(hard, sink, **parquet_options(SCHEMA))
    return sum(f.stat().st_size for f in files) - sink.getvalue().size


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_or_merge(sys.argv[1:] if argv is None else argv, LabelConfig, label)


if __name__ == "__main__":
    main()
