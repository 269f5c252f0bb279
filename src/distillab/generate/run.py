"""`distillab generate`: prompts -> teacher (distilabel) -> hard-label dataset on disk (and the Hub)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from distillab import __version__
from distillab.configs import must_start_over, save_resolved_config
from distillab.data.cards import render_hard_label_card
from distillab.data.hardlabels import (
    METADATA_NAME,
    ShardStore,
    push_to_hub,
    read_metadata,
    write_card,
    write_dataset,
    write_metadata,
)
from distillab.data.stats import duplicate_count, length_stats
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.errors import DataError, EngineError, first_line
from distillab.fileio import check_output_dir, utc_timestamp
from distillab.generate.config import GenerateConfig
from distillab.generate.prompts import PromptSet, build_prompt_set
from distillab.generate.registry import ENGINES
from distillab.generate.servers import check_servers
from distillab.generate.shards import take_shard
from distillab.modelfiles import check_model_files


def generate(config: GenerateConfig) -> Path:
    """Run (or resume) a generate job; returns the output folder of the finished dataset."""
    output_dir = config.run_dir
    check_output_dir(output_dir)
    previous = read_metadata(output_dir)
    stale = previous is not None and must_start_over(
        previous.get("config_fingerprint"),
        config.fingerprint(),
        overwrite=config.overwrite,
        holder=f"output_dir {output_dir} holds a run",
    )
    if previous and not stale and previous.get("complete"):
        print(f"generate: {output_dir} is already complete ({previous['rows']} rows); nothing to do")
        return _finish(config, output_dir)

    # Validate everything before the first byte is written.
    tokenizer, context_length = load_teacher_tokenizer(config)
    check_model_files(config.model)
    prompts = build_prompt_set(config, tokenizer, context_length)
    requests, shard = take_shard(config.shard, prompts.requests)
    prompts = dataclasses.replace(prompts, requests=requests)
    if ENGINES[config.engine].server:
        check_servers(config.base_url)
    if stale:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    write_metadata(output_dir, _metadata(config, prompts, tokenizer, rows=None, shard=shard))
    save_resolved_config(config, output_dir)
    store = ShardStore(output_dir)
    store.clear_failures()  # this run retries them
    done = store.done_ids()
    todo = [r for r in prompts.requests if r["id"] not in done]
    print(
        f"generate: {len(prompts.requests)} generations, {len(prompts.requests) - len(todo)} already on disk"
    )
    if todo:
        from distillab.generate.pipeline import run_pipeline

        run_pipeline(config, todo)

    by_id = store.rows()
    missing = [r for r in prompts.requests if r["id"] not in by_id]
    if missing:
        _record_failed(config, output_dir, prompts, tokenizer, shard, missing, store.failures())
    rows = [by_id[r["id"]] for r in prompts.requests]
    write_dataset(output_dir, rows)
    metadata = _metadata(config, prompts, tokenizer, rows=rows, shard=shard)
    write_card(output_dir, render_hard_label_card(metadata))
    write_metadata(output_dir, metadata)
    store.clear()
    shutil.rmtree(output_dir / ".distilabel", ignore_errors=True)
    print(
        f"generate: wrote {len(rows)} rows to {output_dir} (truncation rate {metadata['truncation_rate']:.1%})"
    )
    return _finish(config, output_dir)


def load_teacher_tokenizer(config: GenerateConfig):
    """The teacher's tokenizer and context length (None, None for a server whose tokenizer is not loadable)."""
    from transformers import AutoConfig, AutoTokenizer

    source = config.tokenizer or config.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=config.revision)
    except (OSError, ValueError) as err:
        if ENGINES[config.engine].server:
            print(f"generate: warning: no local tokenizer for {source!r}; prompt lengths are not checked")
            return None, None
        raise EngineError(f"cannot load the teacher tokenizer from {source!r}: {first_line(err)}") from None
    if tokenizer.chat_template is None:
        raise EngineError(f"teacher tokenizer {source!r} has no chat template; use an instruct/chat model")
    try:
        context = getattr(
            AutoConfig.from_pretrained(source, revision=config.revision), "max_position_embeddings", None
        )
    except (OSError, ValueError):
        context = None
    context = context or tokenizer.model_max_length
    if config.max_model_len:
        context = min(context, config.max_model_len)
    return tokenizer, context


def _record_failed(
    config: GenerateConfig,
    output_dir: Path,
    prompts: PromptSet,
    tokenizer,
    shard: dict[str, Any] | None,
    missing: list[dict[str, Any]],
    reasons: dict[str, str],
) -> None:
    """List the requests that got no generation under `failed` in distillab.json (still incomplete), then
    stop with a one-line DataError."""
    failed = [
        {
            "id": r["id"],
            "prompt_row": r["row"],
            "generation_index": r["generation_index"],
            "reason": reasons.get(r["id"], "no generation returned"),
        }
        for r in missing
    ]
    write_metadata(output_dir, {**_metadata(config, prompts, tokenizer, None, shard), "failed": failed})
    raise DataError(
        f"the engine returned no generation for {len(failed)} request(s) (first: prompt row "
        f'{failed[0]["prompt_row"]}: {failed[0]["reason"]}); they are listed under "failed" in '
        f"{output_dir / METADATA_NAME}; re-run the same command to retry only those"
    )


def _metadata(
    config: GenerateConfig,
    prompts: PromptSet,
    tokenizer,
    rows: list[dict[str, Any]] | None,
    shard: dict[str, Any] | None = None,
) -> dict:
    metadata: dict[str, Any] = {
        "kind": "hard_labels",
        "complete": rows is not None,
        "distillab_version": __version__,
        "created_at": utc_timestamp(),
        "config_fingerprint": config.fingerprint(),
        "teacher": {"model": config.model, "revision": config.revision},
        "engine": {"name": config.engine, "version": ENGINES[config.engine].version()},
        "generation": {
            **config.sampling_params(),
            "num_generations": config.num_generations,
            "system_prompt": config.system_prompt,
        },
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        "prompts": {
            "source": prompts.source,
            "used": len(prompts.requests) // config.num_generations,
            "invalid_dropped": len(prompts.invalid),
            "invalid_examples": prompts.invalid[:5],
            "duplicates_dropped": prompts.duplicates_dropped,
        },
        "rows": len(rows) if rows is not None else 0,
    }
    if shard is not None:
        metadata["shard"] = shard
    if rows is not None:
        metadata.update(row_statistics(rows))
    return metadata


def row_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metadata entries computed from the finished rows (truncation, finish reasons, lengths, duplicates)."""
    return {
        "truncation_rate": sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1),
        "finish_reasons": {
            reason: sum(r["finish_reason"] == reason for r in rows) for reason in ("stop", "length")
        },
        "prompt_tokens": length_stats([r["prompt_tokens"] for r in rows]),
        "completion_tokens": length_stats([r["completion_tokens"] for r in rows]),
        "duplicate_completions": duplicate_count([r["completion"] for r in rows]),
    }


def _finish(config: GenerateConfig, output_dir: Path) -> Path:
    """Optional soft labels on the same rows, then the optional Hub push."""
    if config.soft_labels_k:
        from distillab.generate.label import LabelConfig, label

        label(
            LabelConfig(
                dataset=str(output_dir),
                model=config.model,
                revision=config.revision,
                engine=config.soft_labels_engine,
                soft_labels_k=config.soft_labels_k,
                batch_size=config.batch_size,
                dtype=config.dtype,
                device=config.device,
                max_model_len=config.max_model_len,
                kv_cache_gib=config.kv_cache_gib,
                replicas=config.replicas,
                ray=config.ray,
                ray_address=config.ray_address,
                overwrite=config.overwrite,
            )
        )
    if config.push_to_hub:
        url = push_to_hub(output_dir, config.push_to_hub, private=config.private)
        print(f"generate: pushed to {url}")
    return output_dir
