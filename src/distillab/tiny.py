"""Tiny offline models: a byte-level BPE tokenizer with a ChatML chat template and small Llamas. Nothing is
downloaded: the tokenizer trains on any texts (CPython's stdlib sources by default), the Llamas start random.

The template marks the assistant turn with `{% generation %}` blocks, so TRL/distillab can mask everything but
the completion. Used by the study's corpus (`distillab.study.corpus`), the benchmarks and the tests.
"""

from __future__ import annotations

import sysconfig
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


# name -> LlamaConfig overrides. head_dim 32 is supported by every engine (vLLM's CPU attention included).
MODEL_SIZES = {
    "tiny-1m": dict(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
    ),
    "tiny-10m": dict(
        hidden_size=256,
        num_hidden_layers=10,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=768,
    ),
}


def stdlib_corpus(max_files: int = 400) -> list[str]:
    """Python source files of the running interpreter's standard library: a real, offline text corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[:max_files]
    return [p.read_text(encoding="utf-8", errors="ignore") for p in files]


def build_tokenizer(directory: Path, vocab_size: int = 2048):
    """A byte-level BPE + ChatML tokenizer trained on stdlib sources, in `directory`."""
    return build_chat_tokenizer(stdlib_corpus(), directory, vocab_size)


def build_llama(directory: Path, tokenizer_dir: Path, size: str, seed: int = 0):
    """A randomly initialised Llama of `size` (see MODEL_SIZES), saved with the tokenizer as an HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # A wide init gives peaked next-token distributions: greedy decoding is then free of near-ties,
        # so different engines (and fp32 kernels) pick the same tokens.
        initializer_range=0.1,
        **MODEL_SIZES[size],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
