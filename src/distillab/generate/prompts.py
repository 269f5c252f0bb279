"""Prompt sources (Hub dataset, local file, offline generator) -> validated, de-duplicated generation requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from distillab.data.chat import chat_messages
from distillab.data.sources import REASONING_GYM_PREFIX, is_local_file, load_table, reasoning_gym_records
from distillab.errors import DataError
from distillab.generate.config import GenerateConfig


@dataclass
class PromptSet:
    """Generation requests (one per prompt x generation index) plus what was dropped on the way."""

    requests: list[dict[str, Any]]
    source: str
    invalid: list[str] = field(default_factory=list)
    duplicates_dropped: int = 0


def load_records(config: GenerateConfig) -> tuple[list[dict[str, Any]], str]:
    """Raw records with `prompt` (and `reference` when known), and a description of their source."""
    if config.generator:
        items = reasoning_gym_records(
            config.generator, config.num_prompts or 64, config.seed, what="--generator"
        )
        records = [{"prompt": item["question"], "reference": item["answer"]} for item in items]
        return records, f"{REASONING_GYM_PREFIX}{config.generator}"
    table = load_table(
        config.dataset, what="prompt", config_name=config.dataset_config, split=config.dataset_split
    )
    where = config.dataset if is_local_file(config.dataset) else f"{config.dataset}[{config.dataset_split}]"
    if config.prompt_column not in table.column_names:
        raise DataError(
            f"prompt column {config.prompt_column!r} not found in {where}; "
            f"columns: {', '.join(table.column_names)} (set --prompt_column)"
        )
    if config.reference_column and config.reference_column not in table.column_names:
        raise DataError(f"reference column {config.reference_column!r} not found in {where}")
    if config.num_prompts is not None:
        table = table.select(range(min(config.num_prompts, len(table))))
    prompts = table[config.prompt_column]
    references = table[config.reference_column] if config.reference_column else [None] * len(prompts)
    return [
        {"prompt": p, "reference": None if r is None else str(r)}
        for p, r in zip(prompts, references, strict=True)
    ], where


def build_prompt_set(config: GenerateConfig, tokenizer=None, context_length: int | None = None) -> PromptSet:
    """Validate records, drop duplicates, expand num_generations, and give every request its stable id."""
    records, source = load_records(config)
    if not records:
        raise DataError(f"no prompts in {source}")
    valid, invalid = _validate(records, config, tokenizer, context_length)
    if invalid and not config.skip_invalid:
        raise DataError(
            f"{invalid[0]} in {source} ({len(invalid)} invalid row(s); --skip_invalid drops them)"
        )
    if not valid:
        raise DataError(f"no valid prompts left in {source} ({len(invalid)} invalid)")
    unique = _deduplicate(valid)
    requests = [
        {**record, "id": request_id(record["prompt"], config, index), "generation_index": index}
        for record in unique
        for index in range(config.num_generations)
    ]
    return PromptSet(requests, source, invalid, duplicates_dropped=len(valid) - len(unique))


def _validate(
    records: list[dict[str, Any]], config: GenerateConfig, tokenizer, context_length: int | None
) -> tuple[list[dict[str, Any]], list[str]]:
    valid, invalid = [], []
    for row, record in enumerate(records):
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            invalid.append(
                f"row {row}: field {config.prompt_column!r} is {type(prompt).__name__}, not a string"
            )
        elif not prompt.strip():
            invalid.append(f"row {row}: field {config.prompt_column!r} is empty")
        else:
            valid.append({**record, "row": row})
    if tokenizer is not None and context_length:
        lengths = prompt_token_counts(tokenizer, [r["prompt"] for r in valid], config.system_prompt)
        too_long = {i for i, n in enumerate(lengths) if n >= context_length}
        invalid += [
            f"row {valid[i]['row']}: prompt is {lengths[i]} tokens, longer than the teacher's context "
            f"({context_length})"
            for i in sorted(too_long)
        ]
        valid = [r for i, r in enumerate(valid) if i not in too_long]
    invalid.sort(key=lambda message: int(message.split(":")[0].split()[1]))
    return valid, invalid


def prompt_token_counts(tokenizer, prompts: Iterable[str], system_prompt: str | None) -> list[int]:
    """Token count of each prompt once the teacher's chat template (with generation prompt) is applied."""
    prompts = list(prompts)
    if not prompts:  # the tokenizer refuses an empty batch
        return []
    texts = [
        tokenizer.apply_chat_template(
            chat_messages(p, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _deduplicate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    unique = []
    for record in records:
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            unique.append(record)
    return unique


def request_id(prompt: str, config: GenerateConfig, generation_index: int) -> str:
    """Stable id of one generation: hash of the prompt, the teacher and the generation config (the resume key)."""
    key = {
        "prompt": prompt,
        "system_prompt": config.system_prompt,
        "model": config.model,
        "revision": config.revision,
        "sampling": config.sampling_params(),
        "generation_index": generation_index,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
