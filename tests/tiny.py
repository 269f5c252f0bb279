"""Offline tiny models for tests: a byte-level BPE tokenizer trained on CPython's stdlib with a ChatML template
(carrying `{% generation %}` markers), and small Llama teachers/students. Nothing is downloaded."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from distillab.data.tokenizer_build import build_chat_tokenizer

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
    """A byte-level BPE + ChatML tokenizer (`build_chat_tokenizer`) trained on stdlib sources, in `directory`."""
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


def generate_greedy(teacher: Path, generator: str, num_prompts: int, output_dir: Path) -> Path:
    """A finished hard-label dataset: the teacher's greedy completions (24 new tokens) on offline prompts."""
    from distillab.generate.config import GenerateConfig
    from distillab.generate.run import generate

    config = GenerateConfig(
        model=str(teacher),
        engine="transformers",
        generator=generator,
        num_prompts=num_prompts,
        max_new_tokens=24,
        batch_size=16,
        output_dir=str(output_dir),
    )
    return generate(config)
