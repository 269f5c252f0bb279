"""Session fixtures: offline tokenizer + tiny Llama models, built once per test session in a tmp dir."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A private datasets cache: a shared one can serve stale copies of folders that tests regenerate.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="distillab-tests-datasets-")

import pytest

from distillab import tiny
from tests.tiny import generate_greedy


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tiny.build_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tokenizer_dir):
    """~1M-parameter Llama teacher (HF folder path)."""
    return tiny.build_llama(tmp_path_factory.mktemp("tiny-1m"), tokenizer_dir, "tiny-1m")


@pytest.fixture(scope="session")
def small_teacher(tmp_path_factory, tokenizer_dir):
    """~10M-parameter Llama teacher (HF folder path)."""
    return tiny.build_llama(tmp_path_factory.mktemp("tiny-10m"), tokenizer_dir, "tiny-10m")


@pytest.fixture(scope="session")
def hard_label_dir(tmp_path_factory, tiny_teacher):
    """A finished hard-label dataset: the tiny teacher's greedy completions on 48 offline arithmetic prompts."""
    return generate_greedy(tiny_teacher, "basic_arithmetic", 48, tmp_path_factory.mktemp("hard-labels"))


@pytest.fixture(scope="session")
def soft_label_dir(tmp_path_factory, hard_label_dir):
    """The hard-label fixture plus the tiny teacher's exact top-16 soft labels (transformers scorer)."""
    from distillab.generate.label import LabelConfig, label

    output_dir = tmp_path_factory.mktemp("soft-labels")
    return label(LabelConfig(dataset=str(hard_label_dir), soft_labels_k=16, output_dir=str(output_dir)))
