"""n-gram decontamination: how much of each eval set the training data already contains, and a filter that
drops contaminated training rows.

Texts are compared as lower-cased word n-grams (words and punctuation marks are tokens). Two texts overlap
when they share a run of n tokens or, when one has fewer than n tokens, when it occurs whole inside the other
(short prompts such as "Calculate 2 - -1." are then still caught). Texts of fewer than MIN_TOKENS tokens (a
bare answer such as "42") are too generic to tell anything and never overlap. The relation is symmetric, so
the report (eval rows against the training corpus) and the filter (training rows against the eval corpus) agree.

With procedural data, check the seeds too: reasoning-gym draws item i of seed s from the same generator state
as item i - 1 of seed s + 1, so two runs whose seeds differ by less than their sizes share most prompts.

Standalone: `python -m distillab.evaluate.decontamination --dataset HARD_LABELS --eval_config
recipes/X/evaluate.yaml --output_dir OUT` writes a copy of a hard-label dataset without the rows whose prompt
or completion overlaps any eval set of that evaluate recipe (reference data, held-out teacher generations,
the offline lm-eval tasks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab.errors import exit_on_user_error

TOKEN = re.compile(r"\w+|[^\w\s]")
MIN_TOKENS = 4
EXAMPLES_KEPT = 3


def words(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]


class NgramIndex:
    """The word n-grams of a corpus, built per size on demand (sizes below n serve short texts)."""

    def __init__(self, texts: Iterable[str], n: int):
        self.n = n
        self._documents = [tokens for tokens in map(words, texts) if len(tokens) >= MIN_TOKENS]
        self._grams: dict[int, set[tuple[str, ...]]] = {}
        self._short: dict[int, set[tuple[str, ...]]] = {}  # corpus texts shorter than n, by length
        for tokens in self._documents:
            if len(tokens) < n:
                self._short.setdefault(len(tokens), set()).add(tuple(tokens))

    def overlaps(self, text: str) -> bool:
        """Does `text` share a run of min(n, its length, a corpus text's length) tokens with a corpus text?"""
        tokens = words(text)
        if len(tokens) < MIN_TOKENS:
            return False
        size = min(self.n, len(tokens))
        grams = self._grams_of_size(size)
        if any(gram in grams for gram in ngrams(tokens, size)):
            return True
        return any(
            gram in short
            for length, short in self._short.items()
            if length < size
            for gram in ngrams(tokens, length)
        )

    def _grams_of_size(self, size: int) -> set[tuple[str, ...]]:
        if size not in self._grams:
            self._grams[size] = {gram for tokens in self._documents for gram in ngrams(tokens, size)}
        return self._grams[size]


def overlap_report(train: NgramIndex, eval_texts: Sequence[str]) -> dict[str, Any]:
    """How many eval rows share an n-gram with the training corpus (with a few examples)."""
    overlapping = [text for text in eval_texts if train.overlaps(text)]
    return {
        "ngram": train.n,
        "rows": len(eval_texts),
        "overlapping_rows": len(overlapping),
        "fraction": len(overlapping) / len(eval_texts) if eval_texts else 0.0,
        "examples": overlapping[:EXAMPLES_KEPT],
    }


def contaminated(rows: Iterable[Sequence[str]], eval_index: NgramIndex) -> list[bool]:
    """For each training row (its texts, e.g. prompt and completion): does any text overlap the eval sets?

    The filter for `distillab generate`: pass each prompt as a one-text row before generating, keep the rows
    marked False."""
    return [any(eval_index.overlaps(text) for text in texts) for texts in rows]


def training_texts(sources: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Prompts and completions of hard-label datasets, and {source: reason} for those that cannot be read."""
    from distillab.data.hardlabels import load_hard_labels
    from distillab.errors import DistillabError

    texts: list[str] = []
    unreadable: dict[str, str] = {}
    for source in sources:
        try:
            dataset = load_hard_labels(source, require_complete=False)
        except DistillabError as err:
            unreadable[source] = str(err)
            continue
        texts += list(dataset["prompt"]) + list(dataset["completion"])
    return texts, unreadable


# --- the standalone filter ------------------------------------------------------------------------------


@dataclass
class DecontaminateConfig:
    dataset: str = field(
        default="", metadata={"help": "The hard-label dataset to filter (folder or Hub id)."}
    )
    eval_config: str = field(
        default="", metadata={"help": "An evaluate recipe: its eval sets are what the data must not contain."}
    )
    output_dir: str = field(default="", metadata={"help": "Where the filtered copy is written."})
    ngram: int | None = field(
        default=None, metadata={"help": "n of the n-grams (default: the recipe's decontamination_ngram)."}
    )

    def __post_init__(self) -> None:
        from distillab.errors import ConfigError

        for name in ("dataset", "eval_config", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        if Path(self.output_dir).resolve() == Path(self.dataset).resolve():
            raise ConfigError("--output_dir must differ from --dataset (the filter writes a copy)")


def eval_set_texts(config) -> dict[str, list[str]]:
    """{eval set name: its texts} for an EvaluateConfig: reference data, held-out generations, local tasks."""
    from distillab.evaluate.config import LOCAL_TASKS
    from distillab.evaluate.evalsets import heldout_system_prompt, load_heldout_set, load_reference_set
    from distillab.evaluate.harness import local_task_docs

    system_prompt = config.system_prompt or heldout_system_prompt(config)
    texts = {"reference": load_reference_set(config, system_prompt).queries}
    heldout = load_heldout_set(config)
    if heldout is not None:
        texts["teacher_generations"] = heldout.queries
    sources = {}  # one entry per data file, named after its first task
    for task in config.lm_eval_tasks:
        if task in LOCAL_TASKS:
            sources.setdefault(LOCAL_TASKS[task], task)
    for source, task in sources.items():
        docs = local_task_docs(config.lm_eval_num_docs, config.lm_eval_seed, source)
        texts[f"lm_eval:{task}"] = [doc["question"] for doc in docs]
    return texts


def write_filtered_copy(config: DecontaminateConfig) -> dict[str, Any]:
    """Write `dataset` without its contaminated rows to `output_dir`; returns the decontamination record."""
    from distillab.configs import parse_config, save_resolved_config
    from distillab.data.cards import render_hard_label_card
    from distillab.data.hardlabels import (
        load_hard_labels,
        read_metadata,
        write_card,
        write_dataset,
        write_metadata,
    )
    from distillab.evaluate.config import EvaluateConfig

    eval_config = parse_config(EvaluateConfig, ["--config", config.eval_config])
    n = config.ngram or eval_config.decontamination_ngram
    eval_texts = eval_set_texts(eval_config)
    eval_index = NgramIndex([text for texts in eval_texts.values() for text in texts], n)
    dataset = load_hard_labels(config.dataset)
    flags = contaminated(zip(dataset["prompt"], dataset["completion"], strict=True), eval_index)
    kept = dataset.select([i for i, flag in enumerate(flags) if not flag])
    record = {
        "ngram": n,
        "eval_config": config.eval_config,
        "eval_sets": {name: len(texts) for name, texts in eval_texts.items()},
        "rows_removed": sum(flags),
        "source": config.dataset,
    }
    output_dir = Path(config.output_dir)
    write_dataset(output_dir, kept.to_list())
    metadata = {**(read_metadata(config.dataset) or {}), "rows": len(kept), "decontamination": record}
    write_metadata(output_dir, metadata)
    if "teacher" in metadata:
        write_card(output_dir, render_hard_label_card(metadata))
    save_resolved_config(config, output_dir)
    print(f"decontamination: removed {sum(flags)} of {len(flags)} rows ({n}-grams); wrote {output_dir}")
    return record


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config

    write_filtered_copy(parse_config(DecontaminateConfig, argv))


if __name__ == "__main__":
    main()
