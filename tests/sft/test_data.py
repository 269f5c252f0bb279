"""The shared SFT/KD data pipeline: sequences against hand-tokenised text, truncated rows, cutting, packing."""

from __future__ import annotations

import itertools
import math

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import load_hard_labels
from distillab.errors import DataError
from distillab.sft.data import DataOptions, build_training_data, with_reference_answers
from tests.data.test_chat import chat, encode, expected_sequence, prompt_text

ROWS = [  # prompt, completion, finish_reason
    ("What is 6 * 7?", "6 * 7 = 42.", "stop"),
    ("Add 12 and 30.", "12 + 30 = 42, so the answer is 42.", "stop"),
    ("Compute 100 - 58 and explain every step in detail.", "First, 100 - 50 = 50. Then 50 - 8", "length"),
    ("What is 2 ** 5?", "2 ** 5 = 32.", "stop"),
    ("Divide 84 by 2.", "84 / 2 = 42", "length"),
]


@pytest.fixture
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def dataset(rows=ROWS) -> Dataset:
    return Dataset.from_list(
        [
            {
                "id": f"row-{i}",
                "prompt": p,
                "messages": chat(p, c),
                "completion": c,
                "finish_reason": f,
                "prompt_tokens": 0,
                "completion_tokens": 0,
            }
            for i, (p, c, f) in enumerate(rows)
        ]
    )


def test_dataset_sequences_match_hand_tokenised_rows(tokenizer):
    data = build_training_data(dataset(), tokenizer, DataOptions(max_length=None))
    expected = [expected_sequence(tokenizer, *row) for row in ROWS]
    assert data.dataset["input_ids"] == [ids for ids, _ in expected]
    assert data.dataset["labels"] == [labels for _, labels in expected]
    report = data.report
    assert (report.rows, report.sequences, report.truncated_rows_kept) == (5, 5, 2)
    assert report.tokens == sum(len(ids) for ids, _ in expected)
    assert report.supervised_tokens == sum(sum(t != IGNORE_INDEX for t in labels) for _, labels in expected)


def test_truncated_rows_can_be_dropped(tokenizer):
    data = build_training_data(dataset(), tokenizer, DataOptions(max_length=None, truncated="drop"))
    assert data.dataset["input_ids"] == [
        expected_sequence(tokenizer, *row)[0] for row in ROWS if row[2] == "stop"
    ]
    assert data.report.dropped["truncated (finish_reason=length)"] == 2
    assert data.report.truncated_rows_kept == 0


def test_dropping_every_row_is_an_error(tokenizer):
    only_truncated = [row for row in ROWS if row[2] == "length"]
    with pytest.raises(DataError, match="every row is truncated"):
        build_training_data(dataset(only_truncated), tokenizer, DataOptions(truncated="drop"))


def test_empty_dataset_and_rows_without_an_assistant_turn(tokenizer):
    with pytest.raises(DataError, match="no rows"):
        build_training_data(dataset([]).select([]), tokenizer, DataOptions())
    bad = dataset().map(lambda row: {"messages": row["messages"][:1]} if row["id"] == "row-3" else {})
    with pytest.raises(
        DataError, match=r"1 row\(s\) cannot be trained on .* id row-3: the last message is not"
    ):
        build_training_data(bad, tokenizer, DataOptions())


def test_max_length_cuts_sequences_and_drops_prompt_only_rows(tokenizer):
    full = [expected_sequence(tokenizer, *row) for row in ROWS]
    prompt_lengths = [labels.count(IGNORE_INDEX) for _, labels in full]
    max_length = sorted(prompt_lengths)[2] + 1  # two prompts fill it: their rows have nothing left to learn
    kept = [(ids, labels) for ids, labels in full if labels[:max_length].count(IGNORE_INDEX) < max_length]
    assert len(kept) == 3

    data = build_training_data(dataset(), tokenizer, DataOptions(max_length=max_length))
    assert data.dataset["input_ids"] == [ids[:max_length] for ids, _ in kept]
    report = data.report
    assert report.dropped["prompt fills max_length"] == 2
    assert report.rows_cut_at_max_length == sum(len(ids) > max_length for ids, _ in kept)
    assert report.tokens_cut == sum(max(0, len(ids) - max_length) for ids, _ in kept)
    assert report.supervised_tokens_cut == sum(
        sum(t != IGNORE_INDEX for t in labels[max_length:]) for _, labels in kept
    )


def test_max_length_below_every_prompt_is_an_error(tokenizer):
    shortest = min(len(encode(tokenizer, prompt_text(p))) for p, _, _ in ROWS)
    with pytest.raises(
        DataError, match=f"max_length=8 leaves no completion token.*shortest prompt is {shortest}"
    ):
        build_training_data(dataset(), tokenizer, DataOptions(max_length=8))


def test_wrapped_packing_keeps_every_token_in_order(tokenizer):
    full = [expected_sequence(tokenizer, *row) for row in ROWS]
    stream = [t for ids, _ in full for t in ids]
    label_stream = [t for _, labels in full for t in labels]
    data = build_training_data(
        dataset(), tokenizer, DataOptions(max_length=32, packing=True, packing_strategy="wrapped")
    )
    sequences = data.dataset["input_ids"]
    assert len(sequences) == math.ceil(len(stream) / 32)
    assert all(len(s) == 32 for s in sequences[:-1])
    assert [t for s in sequences for t in s] == stream
    assert [t for s in data.dataset["labels"] for t in s] == label_stream
    assert data.report.tokens_cut == 0


def test_bfd_packing_keeps_documents_whole_up_to_max_length(tokenizer):
    max_length = 56  # the two shortest rows share a sequence
    full = [expected_sequence(tokenizer, *row)[0][:max_length] for row in ROWS]
    data = build_training_data(dataset(), tokenizer, DataOptions(max_length=max_length, packing=True))
    packed = data.dataset
    assert len(packed) < len(ROWS)
    documents = []
    for ids, seq_lengths in zip(packed["input_ids"], packed["seq_lengths"], strict=True):
        assert len(ids) <= max_length and sum(seq_lengths) == len(ids)
        offsets = [sum(seq_lengths[:i]) for i in range(len(seq_lengths) + 1)]
        documents += [ids[a:b] for a, b in itertools.pairwise(offsets)]
    assert sorted(documents) == sorted(full)
    assert data.report.tokens == sum(len(d) for d in full)


def test_session_dataset_is_all_truncated_and_deterministic(tokenizer, hard_label_dir):
    hard_labels = load_hard_labels(str(hard_label_dir))
    first = build_training_data(hard_labels, tokenizer, DataOptions())
    second = build_training_data(hard_labels, tokenizer, DataOptions())
    assert first.dataset["input_ids"] == second.dataset["input_ids"]
    assert first.report.truncated_rows_kept == first.report.rows == 48
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, labels in zip(first.dataset["input_ids"], first.dataset["labels"], strict=True):
        start = labels.count(IGNORE_INDEX)
        assert all(t == IGNORE_INDEX for t in labels[:start]) and labels[start:] == ids[start:]
        assert eot not in ids[start:]  # the teacher never finished: no end-of-turn is taught


def test_reference_answers_replace_the_teachers_turn(tokenizer):
    """`--train_on reference`: the same prompts, the reference as the (finished) assistant turn."""
    references = ["42", "42", "42", "32", "42"]
    rows = dataset().add_column("reference", references)
    supervised = with_reference_answers(rows)
    assert supervised["completion"] == references
    assert supervised["finish_reason"] == ["stop"] * 5
    assert [m[-1] for m in supervised["messages"]] == [
        {"role": "assistant", "content": r} for r in references
    ]
    assert [m[:-1] for m in supervised["messages"]] == [m[:-1] for m in rows["messages"]]
    sequences = build_training_data(supervised, tokenizer, DataOptions()).dataset
    expected = [
        expected_sequence(tokenizer, prompt, ref, "stop")
        for (prompt, _, _), ref in zip(ROWS, references, strict=True)
    ]
    assert sorted(sequences["input_ids"]) == sorted(ids for ids, _ in expected)


def test_reference_answers_must_exist(tokenizer):
    with pytest.raises(DataError, match="no `reference` column"):
        with_reference_answers(dataset())
    with pytest.raises(DataError, match=r"1 row\(s\) have no reference answer, e.g. row-3"):
        with_reference_answers(dataset().add_column("reference", ["1", "2", "3", "", "5"]))
