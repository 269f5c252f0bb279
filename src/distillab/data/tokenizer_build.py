"""A small byte-level BPE tokenizer with a ChatML chat template, trained offline on any texts.

The template marks the assistant turn with `{% generation %}` blocks, so TRL/distillab can mask everything but
the completion. Used by the study's corpus (`distillab.study.corpus`) and by the tests' tiny models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_chat_tokenizer(
    texts: Iterable[str],
    directory: str | Path,
    vocab_size: int = 2048,
    model_max_length: int = 512,
    isolate_newlines: bool = False,
):
    """Train a byte-level BPE on `texts` and save it to `directory` as a transformers tokenizer with ChatML
    (eos = `<|im_end|>`, pad = `<|endoftext|>`, no bos). Returns the tokenizer.

    `isolate_newlines`: every newline is a token of its own, so a text placed after the template's newline
    (the assistant turn) never merges with it: any completion then extends its prompt token for token, which
    soft labels need (`distillab label`), whatever whitespace the completion starts with."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"), byte_level])
        if isolate_newlines
        else byte_level
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer
