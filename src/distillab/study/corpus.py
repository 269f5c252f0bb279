"""The study's corpus: CPython's own standard-library sources (a real corpus that ships with every Python), its
tokenizer, and the on-disk data every cell trains and is evaluated on.

Documents are the `.py` files under the running interpreter's stdlib (site-packages excluded), listed in a
fixed order; each goes to train or held-out by a hash of its relative path, so no document is in both. A
document gives examples by cutting its tokens into windows: prompt = the first `prompt_tokens` tokens of a
window, reference = the `continuation_tokens` tokens that really follow. Written under `<dir>/`:

    tokenizer/        byte-level BPE (newlines isolated) + ChatML with `{% generation %}` markers, trained on
                      the train split only
    base_model/       a Llama config + that tokenizer: what `sft --student_kind fresh` resizes into students
    train/            the train examples as a hard-label dataset (completion = the real continuation, stop)
    prompts.jsonl     the train prompts (+ reference), for `distillab generate --dataset`
    heldout.jsonl     held-out examples as chats, for `distillab evaluate --reference_data`
    corpus.json       what was built (Python version, documents, rows, tokens); written last
"""

from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillab.data.cards import render_hard_label_card
from distillab.data.hardlabels import write_card, write_dataset, write_metadata
from distillab.data.stats import duplicate_count, length_stats
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.fileio import atomic_write_json, atomic_write_text, read_json
from distillab.tiny import SPECIAL_TOKENS, build_chat_tokenizer

MANIFEST_NAME = "corpus.json"
SOURCE = "cpython-stdlib"
MAX_CHARS_PER_TOKEN = 16  # only a document's head is tokenised: enough text for its windows, and more


@dataclass(frozen=True)
class CorpusSpec:
    """How the corpus is cut (the study config's fields of the same names)."""

    vocab_size: int
    tokenizer_train_bytes: int
    prompt_tokens: int
    continuation_tokens: int
    windows_per_document: int
    heldout_fraction: float
    train_rows: int
    heldout_rows: int
    max_position_embeddings: int


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def document_paths(root: Path | None = None) -> list[str]:
    """Every stdlib `.py` file (relative POSIX paths, sorted); third-party site-packages excluded."""
    root = root or stdlib_root()
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if "site-packages" not in path.relative_to(root).parts
    )


def path_fraction(relative_path: str) -> float:
    """A number in [0, 1) fixed by the path alone: the split key and the document order."""
    return int(hashlib.sha256(relative_path.encode()).hexdigest()[:15], 16) / 16**15


def split_documents(paths: list[str], heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out) paths, each in hash order (a deterministic shuffle)."""
    ordered = sorted(paths, key=path_fraction)
    heldout = [p for p in ordered if path_fraction(p) < heldout_fraction]
    train = [p for p in ordered if path_fraction(p) >= heldout_fraction]
    return train, heldout


def read_document(relative_path: str, root: Path | None = None) -> str:
    return ((root or stdlib_root()) / relative_path).read_text(encoding="utf-8", errors="ignore")


def examples(
    tokenizer, paths: list[str], spec: CorpusSpec, limit: int, seen: set[str]
) -> Iterator[dict[str, str]]:
    """Up to `limit` (prompt, continuation) pairs: consecutive windows of each document, in `paths` order.

    A window is skipped when its prompt or continuation is blank or its cut splits a character, or when its
    prompt or continuation is already in `seen` (licence headers, copied files); `seen` grows: every prompt
    is unique (generate de-duplicates prompts) and the held-out split repeats no train text."""
    window = spec.prompt_tokens + spec.continuation_tokens
    head_chars = MAX_CHARS_PER_TOKEN * window * spec.windows_per_document  # only the windows used
    produced = 0
    for path in paths:
        text = read_document(path)[:head_chars]
        ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
        taken = 0
        for start in range(0, len(ids) - window + 1, window):
            if taken == spec.windows_per_document or produced == limit:
                break
            prompt = tokenizer.decode(ids[start : start + spec.prompt_tokens])
            continuation = tokenizer.decode(ids[start + spec.prompt_tokens : start + window])
            fresh = prompt not in seen and continuation not in seen
            if fresh and _usable(prompt) and _usable(continuation):
                seen.update((prompt, continuation))
                yield {"id": f"{path}#{start}", "prompt": prompt, "continuation": continuation}
                taken += 1
                produced += 1
        if produced == limit:
            return


def _first_bytes(paths: list[str], budget: int) -> Iterator[str]:
    """Documents in `paths` order until about `budget` bytes of text (what the BPE is trained on)."""
    for path in paths:
        text = read_document(path)
        yield text
        budget -= len(text.encode())
        if budget <= 0:
            return


def _usable(text: str) -> bool:
    return bool(text.strip()) and "\ufffd" not in text and not any(t in text for t in SPECIAL_TOKENS)


def build_corpus(directory: Path, spec: CorpusSpec) -> dict[str, Any]:
    """Build (or reuse, when `corpus.json` says it was built with `spec`) the corpus under `directory`."""
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.is_file() and read_json(manifest_path).get("spec") == spec.__dict__:
        return read_json(manifest_path)
    paths = document_paths()
    train_paths, heldout_paths = split_documents(paths, spec.heldout_fraction)
    tokenizer = build_chat_tokenizer(
        _first_bytes(train_paths, spec.tokenizer_train_bytes),
        directory / "tokenizer",
        spec.vocab_size,
        isolate_newlines=True,  # soft labels on any teacher continuation (see build_chat_tokenizer)
    )
    write_base_model(directory / "base_model", tokenizer, spec.max_position_embeddings)
    seen: set[str] = set()
    train = list(examples(tokenizer, train_paths, spec, spec.train_rows, seen))
    heldout = list(examples(tokenizer, heldout_paths, spec, spec.heldout_rows, seen))
    for name, rows, wanted in (("train", train, spec.train_rows), ("held-out", heldout, spec.heldout_rows)):
        if len(rows) < wanted:
            raise ValueError(f"the stdlib {name} split gives {len(rows)} examples, fewer than {wanted}")
    hard_labels = write_real_dataset(directory / "train", train, tokenizer)
    _write_jsonl(
        directory / "prompts.jsonl", [{"prompt": r["prompt"], "reference": r["continuation"]} for r in train]
    )
    _write_jsonl(directory / "heldout.jsonl", [{"messages": _chat(r)} for r in heldout])
    manifest = {
        "source": SOURCE,
        "stdlib": str(stdlib_root()),
        "python": platform.python_version(),
        "documents": {"train": len(train_paths), "heldout": len(heldout_paths)},
        "rows": {"train": len(train), "heldout": len(heldout)},
        "completion_tokens": hard_labels["completion_tokens"],
        "prompt_tokens": hard_labels["prompt_tokens"],
        "tokenizer_fingerprint": hard_labels["tokenizer_fingerprint"],
        "spec": spec.__dict__,
    }
    atomic_write_json(manifest_path, manifest)
    return manifest


def write_base_model(directory: Path, tokenizer, max_position_embeddings: int) -> Path:
    """A Llama config (no weights) + the tokenizer: the architecture and vocabulary fresh students copy."""
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_real_dataset(directory: Path, examples: list[dict[str, str]], tokenizer) -> dict[str, Any]:
    """The real examples in the hard-label layout: completion = the real continuation, finish_reason stop,
    no teacher (`teacher.model` null). Returns its metadata."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": e["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        for e in examples
    ]
    prompt_tokens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    completions = [e["continuation"] for e in examples]
    completion_tokens = [len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"]]
    rows = [
        {
            "id": e["id"],
            "prompt": e["prompt"],
            "messages": _chat(e),
            "completion": e["continuation"],
            "finish_reason": "stop",
            "prompt_tokens": p,
            "completion_tokens": c,
            "generation_index": 0,
            "reference": e["continuation"],
        }
        for e, p, c in zip(examples, prompt_tokens, completion_tokens, strict=True)
    ]
    write_dataset(directory, rows)
    # generate's metadata keys (the label stage renders its card from them), saying there is no teacher
    metadata = {
        "kind": "hard_labels",
        "complete": True,
        "teacher": {"model": None, "revision": None},
        "engine": {"name": None, "version": "none: real data"},
        "generation": {"completion": "the real continuation of the prompt in its document"},
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "prompts": {
            "source": f"{SOURCE} ({platform.python_version()}): document prefixes",
            "used": len(rows),
            "invalid_dropped": 0,
            "invalid_examples": [],
            "duplicates_dropped": 0,
        },
        "rows": len(rows),
        "truncation_rate": 0.0,
        "finish_reasons": {"stop": len(rows), "length": 0},
        "prompt_tokens": length_stats(prompt_tokens),
        "completion_tokens": length_stats(completion_tokens),
        "duplicate_completions": duplicate_count(completions),
    }
    write_card(directory, render_hard_label_card(metadata))
    write_metadata(directory, metadata)
    return metadata


def _chat(example: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": example["prompt"]},
        {"role": "assistant", "content": example["continuation"]},
    ]


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
