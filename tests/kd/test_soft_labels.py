"""Stored soft labels on the SFT sequences: alignment, cutting, packing, batching, bad rows, vocabulary checks."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import SCHEMA
from distillab.data.softlabels import SoftLabelFormat
from distillab.errors import DataError
from distillab.kd.soft_labels import (
    TOPK_IDS,
    TOPK_LOG_TAIL,
    TOPK_LOGPROBS,
    SoftLabelAttacher,
    SoftLabelCollator,
    check_same_vocabulary,
)
from distillab.sft.data import DataOptions, build_training_data

VOCAB = 2048  # tests/tiny.py tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_teacher):
    return AutoTokenizer.from_pretrained(tiny_teacher)


def kd_sequences(soft_rows, tokenizer, options: DataOptions | None = None, soft_labels_k: int = 16):
    """The SFT sequences of `soft_rows` (rows, metadata) with their soft labels attached."""
    rows, metadata = soft_rows
    options = options or DataOptions()
    schema = pa.schema([*SCHEMA, *SoftLabelFormat.from_metadata(metadata["soft_labels"], "test").fields()])
    hard_labels = datasets.Dataset(pa.Table.from_pylist(rows, schema=schema))
    soft_format = SoftLabelFormat.from_metadata(metadata["soft_labels"], "test")
    attacher = SoftLabelAttacher(
        hard_labels, vocab_size=VOCAB, soft_labels_k=soft_labels_k, soft_format=soft_format
    )
    return build_training_data(hard_labels, tokenizer, options, attach=attacher).dataset


@pytest.mark.parametrize("soft_labels_k", [16, 4])
def test_position_t_holds_the_stored_top_k_over_token_t_plus_1(
    legacy_soft_label_rows, tokenizer, soft_labels_k
):
    rows, _ = legacy_soft_label_rows
    sequences = kd_sequences(legacy_soft_label_rows, tokenizer, soft_labels_k=soft_labels_k)
    assert len(sequences) == len(rows)  # no row dropped: the order is the rows' order
    for row, sequence in zip(rows, sequences, strict=True):
        ids, length, start = sequence["input_ids"], len(sequence["input_ids"]), row["completion_start"]
        assert ids == row["input_ids"][:length]
        stored = np.asarray(row["topk_ids"])[: length - start + 1, :soft_labels_k]
        topk_ids = np.asarray(sequence[TOPK_IDS])
        assert topk_ids.shape == (length, soft_labels_k)
        np.testing.assert_array_equal(topk_ids[start - 1 :], stored)
        assert (topk_ids[: start - 1] == -1).all()
        stored_logprobs = np.asarray(row["topk_logprobs"], dtype=np.float16)[
            : length - start + 1, :soft_labels_k
        ]
        np.testing.assert_array_equal(np.asarray(sequence[TOPK_LOGPROBS])[start - 1 :], stored_logprobs)
        # every supervised token t + 1 has a stored distribution at t
        supervised = np.asarray(sequence["labels"][1:]) != IGNORE_INDEX
        assert (topk_ids[:-1][supervised] >= 0).all()
        assert TOPK_LOG_TAIL not in sequence  # format 1 stores no tail


@pytest.mark.parametrize("soft_labels_k", [16, 4])
def test_compact_soft_labels_decode_to_the_teachers_log_probs_and_tail(
    soft_label_rows, tokenizer, tiny_teacher, soft_labels_k
):
    """Format 2 through the attacher: the float64 teacher's top-k within the declared quantisation error, and
    the exact tail; keeping fewer slots moves their mass into the tail."""
    rows, metadata = soft_label_rows
    relative = metadata["soft_labels"]["format"]["logprobs"]["max_relative_error"]
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    sequences = kd_sequences(soft_label_rows, tokenizer, soft_labels_k=soft_labels_k)
    for row, sequence in list(zip(rows, sequences, strict=True))[:6]:
        ids, start = sequence["input_ids"], row["completion_start"]
        with torch.inference_mode():
            full = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)[start - 1 : -1]
        top = full.topk(16, dim=-1)
        exact, kept = top.values.numpy(), slice(start - 1, len(ids) - 1)
        np.testing.assert_array_equal(np.asarray(sequence[TOPK_IDS])[kept], top.indices[:, :soft_labels_k])
        decoded = np.asarray(sequence[TOPK_LOGPROBS], dtype=np.float64)[kept]
        bound = relative * np.abs(exact) + 1e-6
        assert (np.abs(decoded - exact[:, :soft_labels_k]) <= bound[:, :soft_labels_k]).all()
        tail = np.exp(np.asarray(sequence[TOPK_LOG_TAIL], dtype=np.float64)[kept])
        exact_tail = 1 - np.exp(exact[:, :soft_labels_k]).sum(1)
        dropped_error = (np.exp(exact) * np.expm1(bound))[:, soft_labels_k:].sum(1)
        assert (np.abs(tail - exact_tail) <= dropped_error + 1e-5 * exact_tail).all()


def supervised_pairs(sequences) -> Counter:
    """(next token, its stored top-k) at every supervised position: the KD training signal, order aside."""
    pairs = Counter()
    for labels, topk in zip(sequences["labels"], sequences[TOPK_IDS], strict=True):
        pairs.update(
            (labels[t + 1], tuple(topk[t])) for t in range(len(labels) - 1) if labels[t + 1] != IGNORE_INDEX
        )
    return pairs


@pytest.mark.parametrize(
    "options",
    [
        DataOptions(max_length=40),
        DataOptions(max_length=128, packing=True, packing_strategy="bfd"),
        DataOptions(max_length=64, packing=True, packing_strategy="wrapped"),
    ],
    ids=["cut", "bfd", "wrapped"],
)
def test_cutting_and_packing_carry_the_soft_labels_with_their_tokens(soft_label_rows, tokenizer, options):
    whole = supervised_pairs(kd_sequences(soft_label_rows, tokenizer))
    sequences = kd_sequences(soft_label_rows, tokenizer, options)
    fitted = supervised_pairs(sequences)
    for column in (TOPK_IDS, TOPK_LOG_TAIL):
        assert all(len(t) == len(i) for t, i in zip(sequences[column], sequences["input_ids"], strict=True))
    if options.packing_strategy == "bfd" and options.packing:
        assert fitted == whole  # nothing cut: every supervised token keeps its own top-k
    else:
        assert fitted <= whole and len(fitted) > 300  # cut or split: fewer, each with its own top-k


def test_collator_pads_or_concatenates_the_top_k_like_the_tokens():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], TOPK_IDS: [[1, 2], [3, 4], [5, 6]],
         TOPK_LOGPROBS: [[-0.1, -2.0]] * 3},
        {"input_ids": [8, 9], "labels": [-100, 9], TOPK_IDS: [[7, 8], [-1, -1]], TOPK_LOGPROBS: [[-0.5, -1.0]] * 2},
    ]  # fmt: skip
    padded = SoftLabelCollator(DataCollatorForLanguageModeling(pad_token_id=0))(examples)
    assert padded[TOPK_IDS].shape == (2, 3, 2) and padded[TOPK_IDS].dtype == torch.int32
    assert padded[TOPK_IDS][1].tolist() == [[7, 8], [-1, -1], [-1, -1]]
    assert padded[TOPK_LOGPROBS][1, 2].tolist() == [-math.inf, -math.inf]
    assert padded[TOPK_LOGPROBS][0, 0].tolist() == pytest.approx([-0.1, -2.0])

    flat = SoftLabelCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))(examples)
    assert flat["input_ids"].shape == (1, 5) and flat[TOPK_IDS].shape == (1, 5, 2)
    assert flat[TOPK_IDS][0].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [-1, -1]]


def test_collator_pads_a_stored_tail_with_minus_infinity():
    examples = [
        {"input_ids": [5, 6], "labels": [-100, 6], TOPK_IDS: [[1], [2]], TOPK_LOGPROBS: [[-0.1]] * 2,
         TOPK_LOG_TAIL: [-2.4, -3.0]},
        {"input_ids": [8], "labels": [8], TOPK_IDS: [[7]], TOPK_LOGPROBS: [[-0.5]], TOPK_LOG_TAIL: [-0.9]},
    ]  # fmt: skip
    padded = SoftLabelCollator(DataCollatorForLanguageModeling(pad_token_id=0))(examples)
    assert padded[TOPK_LOG_TAIL].dtype == torch.float32
    expected = torch.tensor([[-2.4, -3.0], [-0.9, -math.inf]])
    assert torch.equal(padded[TOPK_LOG_TAIL], expected)


def corrupt(row: dict, case: str) -> dict:
    row = {
        **row,
        "topk_ids": [list(r) for r in row["topk_ids"]],
        "topk_logprobs": [list(r) for r in row["topk_logprobs"]],
    }
    if case == "nan log-prob":
        row["topk_logprobs"][3][2] = float("nan")
    elif case == "id outside the vocabulary":
        row["topk_ids"][2][0] = VOCAB
    elif case == "too few positions":
        row["topk_ids"], row["topk_logprobs"] = row["topk_ids"][:5], row["topk_logprobs"][:5]
    elif case == "completion_start too late":
        row["completion_start"] += 3
    elif case == "other tokens":
        row["input_ids"] = [*row["input_ids"][:4], (row["input_ids"][4] + 1) % VOCAB, *row["input_ids"][5:]]
    return row


BAD_ROWS = {
    "nan log-prob": "topk_logprobs is nan at position 3, slot 2",
    "id outside the vocabulary": f"topk_ids has id {VOCAB} at position 2, slot 0",
    "too few positions": "topk_ids covers 5 positions, fewer than",
    "completion_start too late": "but the soft labels only cover tokens from completion_start=",
    "other tokens": "the student's token 4 differs from the soft labels' input_ids",
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_a_data_error_naming_it(legacy_soft_label_rows, tokenizer, case):
    rows, metadata = legacy_soft_label_rows
    bad = [*rows[:5], corrupt(rows[5], case), *rows[6:8]]
    with pytest.raises(DataError, match=f"soft labels row {rows[5]['id']}: ") as error:
        kd_sequences((bad, metadata), tokenizer)
    assert BAD_ROWS[case] in str(error.value)


def test_more_slots_than_stored_is_a_data_error(soft_label_rows, tokenizer):
    rows, metadata = soft_label_rows
    with pytest.raises(
        DataError, match="stores 16 slots per position, fewer than the soft_labels_k=17 requested"
    ):
        kd_sequences((rows[:2], metadata), tokenizer, soft_labels_k=17)


def test_the_student_must_share_the_teachers_vocabulary(tokenizer):
    from distillab.data.tokenizers import tokenizer_fingerprint

    fingerprint = tokenizer_fingerprint(tokenizer)
    check_same_vocabulary(tokenizer, VOCAB, fingerprint, VOCAB, "the teacher")
    with pytest.raises(
        DataError, match=r"the student's tokenizer \(fingerprint \w+\) differs from the teacher"
    ):
        check_same_vocabulary(tokenizer, VOCAB, "0123456789abcdef", VOCAB, "the teacher")
    with pytest.raises(DataError, match="the student's vocabulary has 2048 entries, the teacher 2056"):
        check_same_vocabulary(tokenizer, VOCAB, fingerprint, VOCAB + 8, "the teacher")
