"""Fixtures for the evaluate tests: student run folders (hard, soft, supervised, LoRA, foreign tokenizer)."""

from __future__ import annotations

import pytest

from distillab import tiny
from tests.evaluate.students import write_lora_student, write_student

TRAIN_TOKENS = 5000


@pytest.fixture(scope="session")
def student_dirs(tmp_path_factory, tokenizer_dir, hard_label_dir):
    """{name: run folder}: hard-label (sft), soft-label (kd) and supervised students at matched tokens."""
    root = tmp_path_factory.mktemp("students")
    methods = {"hard": "sft", "soft": "kd", "supervised": "supervised"}
    return {
        name: write_student(root / name, tokenizer_dir, method, hard_label_dir, TRAIN_TOKENS, seed=index + 1)
        for index, (name, method) in enumerate(methods.items())
    }


@pytest.fixture(scope="session")
def lora_student_dir(tmp_path_factory, tokenizer_dir, hard_label_dir):
    """A LoRA adapter run folder over a tiny base model."""
    root = tmp_path_factory.mktemp("lora-student")
    base = tiny.build_llama(root / "base", tokenizer_dir, "tiny-1m", seed=7)
    return write_lora_student(root / "lora", base, hard_label_dir, TRAIN_TOKENS)


@pytest.fixture(scope="session")
def foreign_student_dir(tmp_path_factory, hard_label_dir):
    """A student whose tokenizer (another vocabulary) is not the teacher's."""
    root = tmp_path_factory.mktemp("foreign-student")
    tiny.build_tokenizer(root / "tokenizer", vocab_size=1024)
    return write_student(root / "foreign", root / "tokenizer", "sft", hard_label_dir, TRAIN_TOKENS, seed=11)
