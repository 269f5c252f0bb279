"""The evaluate config: the demo recipe, CLI overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillab.configs import parse_config
from distillab.errors import ConfigError
from distillab.evaluate.config import EvaluateConfig

DEMO_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "evaluate.yaml"


def test_demo_recipe_parses_and_cli_overrides_win():
    config = parse_config(
        EvaluateConfig, ["--config", str(DEMO_RECIPE), "--lm-eval-limit", "4", "--students", "a=x"]
    )
    assert config.teacher == "teacher=assets/SmolLM2-135M-Instruct"
    assert config.students == ["a=x"]
    assert config.lm_eval_limit_value == 4 and isinstance(config.lm_eval_limit_value, int)
    assert parse_config(EvaluateConfig, ["--config", str(DEMO_RECIPE)]).students == [
        "supervised=outputs/demo/supervised",
        "hard=outputs/demo/sft",
        "soft=outputs/demo/kd",
    ]


def test_lm_eval_none_skips_lm_eval():
    assert parse_config(EvaluateConfig, ["--teacher", "t", "--lm_eval_tasks", "none"]).lm_eval_tasks == []


def test_a_fractional_limit_stays_a_fraction():
    assert EvaluateConfig(teacher="t", lm_eval_limit=0.25).lm_eval_limit_value == 0.25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"teacher": ""}, "--teacher is required"),
        ({"batch_size": 0}, "--batch_size must be >= 1"),
        ({"heldout_last_n": 0}, "--heldout_last_n must be >= 1"),
        ({"lm_eval_limit": 0}, "--lm_eval_limit must be > 0"),
        (
            {"reference_prompt_column": "q"},
            "give both --reference_prompt_column and --reference_answer_column",
        ),
        ({"dtype": "int8"}, "--dtype must be one of"),
        ({"lm_eval_backend": "tgi"}, "--lm_eval_backend must be one of hf, vllm, got 'tgi'"),
        ({"data_parallel_size": 0}, "--data_parallel_size must be >= 1"),
    ],
)
def test_invalid_values_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        EvaluateConfig(**{"teacher": "t", **fields})


def test_the_vllm_backend_needs_vllm_only_when_lm_eval_runs(monkeypatch):
    import importlib.util

    from distillab.errors import EngineError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "vllm" else find_spec(name))
    with pytest.raises(
        EngineError, match=r"--lm_eval_backend vllm needs vLLM: pip install 'distillab\[gpu\]'"
    ):
        EvaluateConfig(teacher="t", lm_eval_backend="vllm")
    assert EvaluateConfig(teacher="t", lm_eval_backend="vllm", lm_eval_tasks=[]).lm_eval_tasks == []
