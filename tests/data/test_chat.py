"""The shared chat tokenisation: masks and soft-label sequences against hand-tokenised ChatML text, the
end-of-turn guard."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from distillab.data.chat import (
    IGNORE_INDEX,
    check_end_of_turn_supervised,
    end_of_turn_token_id,
    soft_label_sequence,
    tokenize_conversation,
)
from distillab.errors import ConfigError, DataError
from distillab.tiny import CHATML_TEMPLATE

PLAIN_CHATML = CHATML_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
END_OF_TURN_OUTSIDE_GENERATION = CHATML_TEMPLATE.replace(
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
    "{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}",
)
NO_END_OF_TURN = CHATML_TEMPLATE.replace(
    "{{ message['content'] + '<|im_end|>' }}", "{{ message['content'] }}"
)
THINKING_GENERATION_PROMPT = CHATML_TEMPLATE.replace(
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}",
)
PROMPT, COMPLETION = "Add 12 and 30.", "12 + 30 = 42, so the answer is 42."


@pytest.fixture
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def prompt_text(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


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
    out = tokenize_conversation(
        chat(PROMPT, COMPLETION), tokenizer, end_of_turn_token_id(tokenizer), finished=finish_reason == "stop"
    )
    input_ids, labels = expected_sequence(tokenizer, PROMPT, COMPLETION, finish_reason)
    assert out == {"input_ids": input_ids, "labels": labels, "problem": ""}
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (labels[-1] == eot) == (finish_reason == "stop")


@pytest.mark.parametrize(
    "template", [CHATML_TEMPLATE, PLAIN_CHATML], ids=["generation-markers", "no-markers"]
)
def test_soft_label_sequence_is_the_whole_conversation_from_the_students_first_label(tokenizer, template):
    tokenizer.chat_template = template
    input_ids, start = soft_label_sequence(chat(PROMPT, COMPLETION), tokenizer, "row 0")
    assert input_ids == encode(tokenizer, prompt_text(PROMPT) + COMPLETION + "<|im_end|>\n")
    assert start == len(encode(tokenizer, prompt_text(PROMPT)))
    # the student's sequence is a prefix of the scored one and is supervised from completion_start on
    student = tokenize_conversation(chat(PROMPT, COMPLETION), tokenizer, end_of_turn_token_id(tokenizer))
    assert input_ids[: len(student["input_ids"])] == student["input_ids"]
    assert student["labels"].count(IGNORE_INDEX) == start


def test_soft_label_sequence_names_rows_it_cannot_align(tokenizer):
    with pytest.raises(DataError, match=r"^row 3 \(id x\): field 'messages' does not end with the assistant"):
        soft_label_sequence(chat(PROMPT, COMPLETION)[:1], tokenizer, "row 3 (id x)")
    tokenizer.chat_template = THINKING_GENERATION_PROMPT
    with pytest.raises(DataError, match=r"^row 0: the chat template does not extend the prompt"):
        soft_label_sequence(chat(PROMPT, COMPLETION), tokenizer, "row 0")


def test_end_of_turn_outside_the_loss_mask_is_refused(tokenizer):
    tokenizer.chat_template = END_OF_TURN_OUTSIDE_GENERATION
    with pytest.raises(ConfigError, match=r"leaves the end-of-turn token '<\|im_end\|>' out of its"):
        check_end_of_turn_supervised(tokenizer, end_of_turn_token_id(tokenizer))


def test_template_without_end_of_turn_is_refused(tokenizer):
    tokenizer.chat_template = NO_END_OF_TURN
    with pytest.raises(ConfigError, match="does not end an assistant turn with the end-of-turn token"):
        check_end_of_turn_supervised(tokenizer, end_of_turn_token_id(tokenizer))


def test_end_of_turn_token_must_be_in_the_vocabulary(tokenizer):
    with pytest.raises(ConfigError, match="not in the student tokenizer's vocabulary"):
        end_of_turn_token_id(tokenizer, "<|eot_id|>")
