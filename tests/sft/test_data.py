"""The shared SFT/KD data pipeline: masks against hand-tokenised text, the end-of-turn guard, cutting, packing."""

from __future__ import annotations

import itertools
import math

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from distillab.data.hardlabels import load_hard_labels
from distillab.data.tokenizer_build import CHATML_TEMPLATE
from distillab.errors import ConfigError, DataError
from distillab.sft.data import (
    IGNORE_INDEX,
    DataOptions,
    build_training_data,
    end_of_turn_token_id,
    tokenize_conversation,
)

PLAIN_CHATML = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
END_OF_TURN_OUTSIDE_GENERATION = CHATML_TEMPLATE.replace(
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
    "{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}",
)
NO_END_OF_TURN = CHATML_TEMPLATE.replace(
    "{{ message['content'] + '<|im_end|>' }}", "{{ message['content'] }}"
)

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


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def prompt_text(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


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


def expected_sequence(
    tokenizer, prompt: str, completion: str, finish_reason: str
) -> tuple[list[int], list[int]]:
    """input_ids and labels written out by hand: ChatML text, completion (+ <|im_end|> when finished)."""
    head = encode(tokenizer, prompt_text(prompt))
    tail = encode(tokenizer, completion + ("<|im_end|>" if finish_reason == "stop" else ""))
    return head + tail, [IGNORE_INDEX] * len(head) + tail


@pytest.mark.parametrize(
    "template", [CHATML_TEMPLATE, PLAIN_CHATML], ids=["generation-markers", "no-markers"]
)
@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_only_the_completion_and_its_end_of_turn_are_supervised(tokenizer, template, finish_reason):
    tokenizer.chat_template = template
    prompt, completion, _ = ROWS[1]
    out = tokenize_conversation(
        chat(prompt, completion), tokenizer, end_of_turn_token_id(tokenizer), finished=finish_reason == "stop"
    )
    input_ids, labels = expected_sequence(tokenizer, prompt, completion, finish_reason)
    assert out == {"input_ids": input_ids, "labels": labels, "problem": ""}
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (labels[-1] == eot) == (finish_reason == "stop")


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


def test_end_of_turn_outside_the_loss_mask_is_refused(tokenizer):
    tokenizer.chat_template = END_OF_TURN_OUTSIDE_GENERATION
    with pytest.raises(ConfigError, match=r"leaves the end-of-turn token '<\|im_end\|>' out of its"):
        build_training_data(dataset(), tokenizer, DataOptions())


def test_template_without_end_of_turn_is_refused(tokenizer):
    tokenizer.chat_template = NO_END_OF_TURN
    with pytest.raises(ConfigError, match="does not end an assistant turn with the end-of-turn token"):
        build_training_data(dataset(), tokenizer, DataOptions())


def test_end_of_turn_token_must_be_in_the_vocabulary(tokenizer):
    with pytest.raises(ConfigError, match="not in the student tokenizer's vocabulary"):
        end_of_turn_token_id(tokenizer, "<|eot_id|>")


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
