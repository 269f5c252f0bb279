"""`distillab generate --merge` / `distillab label --merge`: the shards of a `--shard I/N` run -> one dataset.

The merged dataset holds the rows a single process would have written, in the same order, with its metadata
statistics recomputed over all of them; `merged_from` names the shard folders.
"""

from __future__ import annotations

from pathlib import Path

from distillab.data.cards import render_hard_label_card
from distillab.data.hardlabels import SCHEMA, read_metadata, write_card, write_dataset, write_metadata
from distillab.data.softlabels import ROW_FORMAT, SoftLabelFormat, code_soft_labels
from distillab.errors import ConfigError
from distillab.fileio import utc_timestamp
from distillab.generate.label import fidelity, full_schema, soft_statistics
from distillab.generate.run import row_statistics
from distillab.generate.shards import MergeConfig, merge_shard_rows, shard_folders


def merge(config: MergeConfig) -> Path:
    """Join the shard folders named by `config.merge` into one dataset in `config.output_dir`."""
    folders = shard_folders(config.merge)
    rows, metadata = merge_shard_rows(folders)
    output_dir = Path(config.output_dir)
    existing = read_metadata(output_dir)
    if existing is not None and "merged_from" not in existing:
        raise ConfigError(f"output_dir {output_dir} holds another dataset; choose another --output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    soft = metadata.get("soft_labels")
    fmt = SoftLabelFormat.from_metadata(soft, f"{folders[0]}/distillab.json") if soft else None
    coded = rows
    if fmt and fmt.quantiser and fmt.version == ROW_FORMAT:  # the shards' q8 rows: one set of tables for all
        coded, fmt = code_soft_labels(rows, fmt)
    files = write_dataset(output_dir, coded, schema=full_schema(fmt) if fmt else SCHEMA)
    merged = {key: value for key, value in metadata.items() if key != "shard"}
    merged.update(rows=len(rows), created_at=utc_timestamp(), merged_from=[str(f) for f in folders])
    if "truncation_rate" in metadata:  # a generate run's statistics (a Hub dataset's label shards lack them)
        merged.update(row_statistics(rows))
        merged["prompts"] = {
            **metadata["prompts"],
            "used": len(rows) // metadata["generation"]["num_generations"],
        }
    if soft:
        merged["soft_labels"] = {**soft, "format": fmt.to_metadata(), **soft_statistics(coded, files, fmt)}
        merged["soft_labels"]["fidelity"] = _merged_fidelity(folders, rows, merged["soft_labels"])
    write_card(output_dir, render_hard_label_card(merged))
    write_metadata(output_dir, merged)
    print(f"merge: wrote {len(rows)} rows from {len(folders)} shards to {output_dir}")
    return output_dir


def _merged_fidelity(folders: list[Path], rows: list[dict], soft: dict) -> dict:
    """The fidelity of all the rows: recomputed from them, with the shards' largest quantisation error and their
    KL estimates pooled over their positions (not measured if a shard's is not)."""
    shards = [read_metadata(folder)["soft_labels"]["fidelity"] for folder in folders]
    kl = None
    if all(shard["kl_full_vs_stored"] is not None for shard in shards):
        positions = sum(shard["kl_positions"] for shard in shards)
        kl = {
            key: sum(shard[key] * shard["kl_positions"] for shard in shards) / positions
            for key in ("kl_full_vs_stored", "kl_full_vs_exact_top_k")
        }
        kl |= {"kl_positions": positions, "kl_note": shards[0]["kl_note"]}
    max_error = max(shard["max_abs_logprob_error"] for shard in shards)
    return fidelity(rows, soft["bytes_per_token"], max_error, kl)
