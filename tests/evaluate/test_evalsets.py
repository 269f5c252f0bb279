"""Eval sets: reference data in its three forms, held-out selection, and completion-only tokenization."""

from __future__ import annotations

import json

import pytest

from distillab.data.chat import IGNORE_INDEX
from distillab.errors import DataError
from distillab.evaluate.config import EvaluateConfig
from distillab.evaluate.evalsets import (
    encode_set,
    heldout_system_prompt,
    load_heldout_set,
    load_reference_set,
    save_eval_set,
)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def config(**fields) -> EvaluateConfig:
    return EvaluateConfig(teacher="unused", **fields)


def scored_text(tokenizer, input_ids, labels) -> str:
    return tokenizer.decode([t for t in labels if t != IGNORE_INDEX])


def test_generator_reference_is_deterministic_chat_with_reference_answers():
    first = load_reference_set(config(reference_num_rows=5, reference_seed=3), system_prompt="Be brief.")
    again = load_reference_set(config(reference_num_rows=5, reference_seed=3), system_prompt="Be brief.")
    other = load_reference_set(config(reference_num_rows=5, reference_seed=4), system_prompt=None)
    assert first.rows == again.rows and first.rows != other.rows
    assert first.kind == "chat" and len(first.rows) == 5
    roles = [[m["role"] for m in row] for row in first.rows]
    assert roles == [["system", "user", "assistant"]] * 5
    assert [m["role"] for m in other.rows[0]] == ["user", "assistant"]
    assert all(row[-1]["content"].lstrip("-").isdigit() for row in first.rows)
    assert first.queries == [row[1]["content"] for row in first.rows]


def test_chat_rows_score_the_assistant_turn_and_end_of_turn_only(tokenizer):
    reference = load_reference_set(config(reference_num_rows=4), system_prompt="Be brief.")
    encoded = encode_set(reference, tokenizer, max_length=512)
    for row, ids, labels in zip(reference.rows, encoded.input_ids, encoded.labels, strict=True):
        assert scored_text(tokenizer, ids, labels) == row[-1]["content"] + "<|im_end|>"
        prompt = tokenizer.apply_chat_template(
            row[:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        assert ids[: len(prompt["input_ids"])] == list(prompt["input_ids"])
        assert all(t == IGNORE_INDEX for t in labels[: len(prompt["input_ids"])])
    assert encoded.scored_tokens == sum(sum(t != IGNORE_INDEX for t in labels) for labels in encoded.labels)


def test_truncated_teacher_rows_do_not_score_an_end_of_turn(tokenizer, hard_label_dir):
    heldout = load_heldout_set(config(heldout_data=str(hard_label_dir)))
    encoded = encode_set(heldout, tokenizer, max_length=512)
    for row, finished, ids, labels in zip(
        heldout.rows, heldout.finished, encoded.input_ids, encoded.labels, strict=True
    ):
        expected = row[-1]["content"] + ("<|im_end|>" if finished else "")
        assert scored_text(tokenizer, ids, labels) == expected


def test_heldout_selection_by_last_rows_and_by_ids(tmp_path, hard_label_dir):
    from distillab.data.hardlabels import load_hard_labels

    rows = load_hard_labels(str(hard_label_dir))
    last = load_heldout_set(config(heldout_data=str(hard_label_dir), heldout_last_n=5))
    assert last.queries == rows["prompt"][-5:]
    assert last.selection == "last 5 rows"
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join([rows["id"][2], rows["id"][7]]) + "\n")
    chosen = load_heldout_set(config(heldout_data=str(hard_label_dir), heldout_ids_file=str(ids_file)))
    assert chosen.queries == [rows["prompt"][2], rows["prompt"][7]]


def test_heldout_system_prompt_comes_from_the_dataset_metadata(tmp_path, hard_label_dir):
    from distillab.data.hardlabels import load_hard_labels, read_metadata, write_dataset, write_metadata

    assert heldout_system_prompt(config(heldout_data=str(hard_label_dir))) is None
    copy = tmp_path / "copy"
    write_dataset(copy, load_hard_labels(str(hard_label_dir)).to_list())
    metadata = read_metadata(hard_label_dir)
    write_metadata(copy, {**metadata, "generation": {**metadata["generation"], "system_prompt": "Think."}})
    assert heldout_system_prompt(config(heldout_data=str(copy))) == "Think."


def test_local_files_in_text_chat_and_prompt_answer_form(tmp_path, tokenizer):
    text_file = tmp_path / "text.jsonl"
    text_file.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["def f(x):\n    return x", " ", "import os"])
    )
    texts = load_reference_set(config(reference_data=str(text_file)), system_prompt=None)
    assert texts.kind == "text" and texts.rows == [
        "def f(x):\n    return x",
        "import os",
    ]  # blank row dropped
    encoded = encode_set(texts, tokenizer, max_length=512)
    assert encoded.labels == encoded.input_ids  # every token scored (the first is context by the shift)

    chat_file = tmp_path / "chat.jsonl"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chat_file.write_text(json.dumps({"messages": chat}) + "\n")
    chats = load_reference_set(config(reference_data=str(chat_file)), system_prompt="ignored for given chats")
    assert chats.kind == "chat" and chats.rows == [chat]

    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("question,answer\nWhat is 1 + 1?,2\n")
    pairs = load_reference_set(
        config(
            reference_data=str(pairs_file),
            reference_prompt_column="question",
            reference_answer_column="answer",
        ),
        system_prompt=None,
    )
    assert pairs.rows == [
        [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"}]
    ]


def test_max_length_cuts_rows(tokenizer):
    reference = load_reference_set(config(reference_num_rows=6), system_prompt=None)
    full = encode_set(reference, tokenizer, max_length=512)
    lengths = [len(ids) for ids in full.input_ids]
    cut = encode_set(reference, tokenizer, max_length=max(lengths) - 1)
    assert [len(ids) for ids in cut.input_ids] == [min(n, max(lengths) - 1) for n in lengths]
    assert cut.rows_cut == lengths.count(max(lengths))
    assert cut.scored_tokens == full.scored_tokens - cut.rows_cut


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the reference data file {path} is empty"),
        ("\n", "the reference data file {path} is empty"),
        (
            json.dumps({"other": "x"}) + "\n",
            "has no 'messages' (chat) or 'text' (text) column; columns: other",
        ),
        (json.dumps({"text": " "}) + "\n", "the reference set is empty"),
    ],
)
def test_bad_reference_files(tmp_path, content, message):
    path = tmp_path / "reference.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_reference_set(config(reference_data=str(path)), system_prompt=None)
    assert message.format(path=path) in str(err.value)


def test_missing_reference_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="reference data file not found"):
        load_reference_set(config(reference_data=str(tmp_path / "nope.jsonl")), system_prompt=None)


def test_empty_heldout_selection_is_an_error(tmp_path, hard_label_dir):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("no-such-id\n")
    with pytest.raises(DataError, match="the teacher_generations set is empty"):
        load_heldout_set(config(heldout_data=str(hard_label_dir), heldout_ids_file=str(ids_file)))


def test_a_set_with_nothing_to_score_is_an_error(tokenizer):
    reference = load_reference_set(config(reference_num_rows=2), system_prompt=None)
    with pytest.raises(DataError, match="no token to score"):
        encode_set(reference, tokenizer, max_length=3)


def test_saved_eval_set_round_trips(tmp_path):
    reference = load_reference_set(config(reference_num_rows=3), system_prompt=None)
    save_eval_set(reference, tmp_path)
    lines = (tmp_path / "reference.jsonl").read_text().splitlines()
    assert [json.loads(line)["messages"] for line in lines] == reference.rows
    assert reference.to_dict()["path"] == str(tmp_path / "reference.jsonl")
