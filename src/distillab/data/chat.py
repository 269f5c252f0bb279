"""Conversations through a chat template: the one tokenisation that teacher and student share.

A conversation is a row's `messages` (an optional system turn, the user's prompt, the teacher's assistant turn).
`tokenize_chat` renders and tokenises it with a tokenizer's chat template; everything else builds on it, so the
teacher's soft labels and the student's training sequences are cut from the same tokens:

- teacher side (`soft_label_sequence`, used by `distillab label`): the whole conversation and
  `completion_start`, the first token after the rendered prompt (`messages[:-1]` + generation prompt); the soft
  labels are stored on these tokens from `completion_start` (see `distillab.data.softlabels`).
- student side (`tokenize_conversation`, used by sft, kd and evaluate): `input_ids` ending with the assistant's
  end-of-turn token (whatever the template renders after it, e.g. ChatML's newline, is not part of the
  sequence), and `labels`: the token ids where the student is supervised, IGNORE_INDEX elsewhere (unshifted, as in
  transformers: the model predicts `labels[t]` from tokens `< t`). Supervised = the teacher's completion and the
  end-of-turn token: every token from `completion_start`, restricted to the template's `{% generation %}` block
  when it has one. A truncated turn (finish_reason=length) never ended, so its sequence stops before the
  end-of-turn token.

The classic silent failure is guarded (`check_end_of_turn_supervised`): if the end-of-turn token is not
supervised (a template whose `{% generation %}` block excludes it, or that does not emit it), the student never
learns to stop; that is a `ConfigError` before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillab.errors import ConfigError, DataError

IGNORE_INDEX = -100

# Problems `tokenize_conversation` can find in a conversation.
NO_ASSISTANT_TURN = "the last message is not the assistant's"
NO_END_OF_TURN = "no end-of-turn token after the completion"
END_OF_TURN_NOT_SUPERVISED = "end-of-turn token outside the loss mask"

PROBE_CONVERSATION = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
]


def chat_messages(
    prompt: str, system_prompt: str | None = None, answer: str | None = None
) -> list[dict[str, str]]:
    """The conversation of a prompt: the system turn when there is one, the user's prompt, the answer if given."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    assistant = [{"role": "assistant", "content": answer}] if answer is not None else []
    return [*system, {"role": "user", "content": prompt}, *assistant]


@dataclass(frozen=True)
class ChatTokens:
    """A conversation through a chat template."""

    input_ids: list[int]  # the whole conversation
    completion_start: int  # the first completion token: where input_ids stop following the rendered prompt
    prompt_length: int  # tokens of the rendered prompt alone (messages[:-1] + the generation prompt)
    assistant_mask: list[int]  # 1 inside the template's {% generation %} block (everywhere without one)

    @property
    def extends_prompt(self) -> bool:
        """The conversation is the rendered prompt token for token, then at least one more token."""
        return self.completion_start == self.prompt_length < len(self.input_ids)


def tokenize_chat(messages: list[dict[str, str]], tokenizer) -> ChatTokens:
    """Render and tokenise a conversation that ends with the assistant turn through `tokenizer`'s chat template."""
    from trl.chat_template_utils import has_generation_markers
    from trl.data_utils import common_prefix_length

    markers = has_generation_markers(tokenizer.chat_template)
    prompt_ids = tokenizer.apply_chat_template(
        messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=markers
    )
    input_ids = list(rendered["input_ids"])
    mask = list(rendered["assistant_masks"]) if markers else [1] * len(input_ids)
    return ChatTokens(input_ids, common_prefix_length(prompt_ids, input_ids), len(prompt_ids), mask)


def soft_label_sequence(messages: list[dict[str, str]], tokenizer, row: str) -> tuple[list[int], int]:
    """(input_ids of the whole conversation, completion_start): the tokens the teacher's soft labels are stored on.

    `row` names the row in the `DataError` raised when the soft labels could not be aligned to the completion.
    """
    if not _ends_with_assistant_turn(messages):
        raise DataError(f"{row}: field 'messages' does not end with the assistant turn")
    chat = tokenize_chat(messages, tokenizer)
    if not chat.extends_prompt:
        raise DataError(
            f"{row}: the chat template does not extend the prompt with the completion token-for-token; "
            "cannot align soft labels"
        )
    return chat.input_ids, chat.completion_start


def tokenize_conversation(
    messages: list[dict[str, str]], tokenizer, end_of_turn_id: int, finished: bool = True
) -> dict:
    """One conversation -> input_ids, labels and `problem` ("" when fine); see the module docstring."""
    if not _ends_with_assistant_turn(messages):
        return {"input_ids": [], "labels": [], "problem": NO_ASSISTANT_TURN}
    chat = tokenize_chat(messages, tokenizer)
    input_ids, start = chat.input_ids, chat.completion_start
    labels = [
        token if position >= start and chat.assistant_mask[position] else IGNORE_INDEX
        for position, token in enumerate(input_ids)
    ]
    end = _find(input_ids, end_of_turn_id, start)
    if end is None:
        return {"input_ids": input_ids, "labels": labels, "problem": NO_END_OF_TURN}
    stop = end + 1 if finished else end
    problem = END_OF_TURN_NOT_SUPERVISED if finished and labels[end] == IGNORE_INDEX else ""
    return {"input_ids": input_ids[:stop], "labels": labels[:stop], "problem": problem}


def end_of_turn_token_id(tokenizer, token: str | None = None) -> int:
    """Id of the token that ends an assistant turn: `token`, else the tokenizer's eos token."""
    token = token or tokenizer.eos_token
    if token is None:
        raise ConfigError(
            "the student tokenizer has no eos token: set --eos_token to the token ending an assistant turn"
        )
    if token not in tokenizer.get_vocab():
        raise ConfigError(
            f"end-of-turn token {token!r} (--eos_token) is not in the student tokenizer's vocabulary"
        )
    return tokenizer.convert_tokens_to_ids(token)


def check_end_of_turn_supervised(tokenizer, end_of_turn_id: int) -> None:
    """Refuse a chat template that would never teach the student to stop (tested on a probe conversation)."""
    problem = tokenize_conversation(PROBE_CONVERSATION, tokenizer, end_of_turn_id)["problem"]
    token = tokenizer.convert_ids_to_tokens(end_of_turn_id)
    if problem == NO_END_OF_TURN:
        raise ConfigError(
            f"the student's chat template does not end an assistant turn with the end-of-turn token {token!r}; "
            "set --eos_token to the token that does (e.g. <|im_end|>, <|eot_id|>, <end_of_turn>)"
        )
    if problem == END_OF_TURN_NOT_SUPERVISED:
        raise ConfigError(
            f"the student's chat template leaves the end-of-turn token {token!r} out of its "
            "{% generation %} block, so it is not in the loss mask and the student would never learn to stop; "
            "move it inside {% generation %}...{% endgeneration %} (--chat_template_path)"
        )


def _find(ids: list[int], token: int, start: int) -> int | None:
    return next((i for i in range(start, len(ids)) if ids[i] == token), None)


def _ends_with_assistant_turn(messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1]["role"] == "assistant"
