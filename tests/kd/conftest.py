"""Fixtures for the kd tests: the session soft-label rows, a held-out teacher set on other prompts, and helpers
to run `distillab kd` in process and to write (corrupted) soft-label datasets."""

from __future__ import annotations

import pytest

from tests.sft.test_train import FRESH, sft_argv
from tests.tiny import generate_greedy


def kd_argv(dataset, output_dir, *extra: str) -> list[str]:
    """`distillab kd` arguments: the sft tests' settings (batch 8, seed 0) and 2-layer fresh student."""
    return sft_argv(dataset, output_dir, *FRESH, *extra)


def run_kd(argv: list[str], callbacks=()):
    from distillab.configs import parse_config
    from distillab.kd.config import DistillabKDConfig
    from distillab.kd.train import train_kd

    return train_kd(parse_config(DistillabKDConfig, argv), callbacks)


def write_soft_labels(directory, rows, metadata):
    """A finished soft-label folder holding `rows` (hard + soft columns in the format `metadata` declares;
    metadata copied, row count updated)."""
    import pyarrow as pa

    from distillab.data.hardlabels import SCHEMA, write_dataset, write_metadata
    from distillab.data.softlabels import SoftLabelFormat

    soft_format = SoftLabelFormat.from_metadata(metadata["soft_labels"], str(directory))
    write_dataset(directory, rows, schema=pa.schema([*SCHEMA, *soft_format.fields()]))
    write_metadata(directory, {**metadata, "rows": len(rows), "complete": True})
    return directory


@pytest.fixture(scope="session")
def soft_label_rows(soft_label_dir):
    """(rows as dicts, metadata) of the session soft-label dataset."""
    from distillab.data.hardlabels import load_hard_labels, read_metadata

    return load_hard_labels(str(soft_label_dir)).to_list(), read_metadata(soft_label_dir)


@pytest.fixture(scope="session")
def legacy_soft_label_rows(soft_label_rows, tiny_teacher):
    """(rows, metadata) as the previous format (1) stored them: the exact top-16 of the float64 teacher as int32
    ids and float16 log-probs, no tail, no `format` in distillab.json."""
    import torch
    from transformers import AutoModelForCausalLM

    rows, metadata = soft_label_rows
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    legacy = []
    for row in rows:
        ids, start = row["input_ids"], row["completion_start"]
        with torch.inference_mode():
            full = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        top = full[start - 1 : len(ids) - 1].topk(16, dim=-1)
        hard = {key: value for key, value in row.items() if not key.startswith("topk_")}
        legacy.append(hard | {"topk_ids": top.indices.tolist(), "topk_logprobs": top.values.half().tolist()})
    soft = {key: value for key, value in metadata["soft_labels"].items() if key not in ("format", "fidelity")}
    return legacy, {**metadata, "soft_labels": soft | {"logprob_dtype": "float16"}}


@pytest.fixture(scope="session")
def legacy_soft_label_dir(tmp_path_factory, legacy_soft_label_rows):
    """The legacy rows written as a dataset folder of format 1."""
    return write_soft_labels(tmp_path_factory.mktemp("legacy-soft-labels"), *legacy_soft_label_rows)


@pytest.fixture(scope="session")
def held_out_dir(tmp_path_factory, tiny_teacher):
    """The tiny teacher's greedy completions on 16 chain_sum prompts: sequences no student trains on."""
    return generate_greedy(tiny_teacher, "chain_sum", 16, tmp_path_factory.mktemp("held-out-chain-sum"))


@pytest.fixture(scope="session")
def finished_soft_label_dir(tmp_path_factory, hard_label_dir):
    """The session rows with every other answer cut short and finished (finish_reason "stop": its end-of-turn
    token is supervised), labelled with the tiny teacher's exact top-16 by `distillab label` (float16 log-probs).

    The random tiny teacher never ends a turn by itself (every session row is truncated at max_new_tokens), so
    the finished rows are written through the hard-label contract: 1 to 6 of its own completion tokens."""
    from transformers import AutoTokenizer

    from distillab.data.hardlabels import load_hard_labels, read_metadata, write_dataset, write_metadata
    from distillab.generate.label import LabelConfig, label

    metadata = read_metadata(hard_label_dir)
    tokenizer = AutoTokenizer.from_pretrained(metadata["teacher"]["model"])
    rows = load_hard_labels(str(hard_label_dir)).to_list()
    for index, row in enumerate(rows[::2]):
        answer = tokenizer.decode(tokenizer(row["completion"])["input_ids"][: 1 + index % 6])
        row["messages"] = [*row["messages"][:-1], {"role": "assistant", "content": answer}]
        row["completion"], row["finish_reason"] = answer, "stop"
        row["completion_tokens"] = len(tokenizer(answer)["input_ids"]) + 1  # and the end-of-turn token
    root = tmp_path_factory.mktemp("finished-soft-labels")
    write_dataset(root / "hard", rows)
    write_metadata(root / "hard", {**metadata, "rows": len(rows), "complete": True})
    return label(
        LabelConfig(
            dataset=str(root / "hard"),
            soft_labels_k=16,
            logprob_dtype="float16",
            output_dir=str(root / "soft"),
        )
    )
