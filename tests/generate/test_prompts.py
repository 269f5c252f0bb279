"""Prompt sources, validation and stable request ids (no teacher needed)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from distillab.errors import ConfigError, DataError
from distillab.generate.config import GenerateConfig
from distillab.generate.prompts import build_prompt_set, prompt_token_counts, request_id


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def config(**kwargs) -> GenerateConfig:
    return GenerateConfig(**{"model": "teacher", **kwargs})


def test_generator_prompts_carry_references_and_are_seeded():
    first = build_prompt_set(config(generator="basic_arithmetic", num_prompts=20, seed=3))
    again = build_prompt_set(config(generator="basic_arithmetic", num_prompts=20, seed=3))
    other = build_prompt_set(config(generator="basic_arithmetic", num_prompts=20, seed=4))
    assert [r["prompt"] for r in first.requests] == [r["prompt"] for r in again.requests]
    assert [r["prompt"] for r in first.requests] != [r["prompt"] for r in other.requests]
    assert all(r["prompt"].startswith("Calculate") and r["reference"] for r in first.requests)
    assert first.source == "reasoning-gym:basic_arithmetic"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_files_of_every_kind(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"question": ["What is 2+2?", "Name a prime."], "answer": ["4", "7"]})
    path = tmp_path / f"prompts{suffix}"
    {
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    prompts = build_prompt_set(config(dataset=str(path), prompt_column="question", reference_column="answer"))
    assert [(r["prompt"], r["reference"]) for r in prompts.requests] == [
        ("What is 2+2?", "4"),
        ("Name a prime.", "7"),
    ]


def test_num_generations_expands_with_distinct_stable_ids(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    cfg = config(dataset=path, num_generations=3, temperature=0.7)
    requests = build_prompt_set(cfg).requests
    assert [(r["prompt"], r["generation_index"]) for r in requests] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
        ("b", 2),
    ]
    assert len({r["id"] for r in requests}) == 6
    assert requests[0]["id"] == request_id("a", cfg, 0)


def test_request_id_depends_on_generation_config_not_on_engine():
    base = config(generator="chain_sum")
    assert request_id("p", base, 0) == request_id("p", config(generator="chain_sum", engine="vllm"), 0)
    assert request_id("p", base, 0) != request_id("p", config(generator="chain_sum", max_new_tokens=7), 0)
    assert request_id("p", base, 0) != request_id(
        "p", config(generator="chain_sum", system_prompt="Be brief."), 0
    )


def test_duplicate_prompts_are_generated_once(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}])
    prompts = build_prompt_set(config(dataset=path))
    assert [r["prompt"] for r in prompts.requests] == ["a", "b"]
    assert prompts.duplicates_dropped == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": None}, "row 1: field 'prompt' is NoneType, not a string"),
        ({"prompt": "   "}, "row 1: field 'prompt' is empty"),
        ({"prompt": 17}, "row 1: field 'prompt' is int, not a string"),
    ],
)
def test_invalid_prompts_refused_with_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, row, {"prompt": "fine"}])
    with pytest.raises(DataError) as err:
        build_prompt_set(config(dataset=path))
    assert message in str(err.value) and path in str(err.value)


def test_skip_invalid_drops_and_counts(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": ""}, {"prompt": None}, {"prompt": "x"}]
    )
    prompts = build_prompt_set(config(dataset=path, skip_invalid=True))
    assert [r["prompt"] for r in prompts.requests] == ["ok", "x"]
    assert prompts.invalid == [
        "row 1: field 'prompt' is empty",
        "row 2: field 'prompt' is NoneType, not a string",
    ]


def test_prompt_longer_than_context_is_refused(tmp_path, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    long_prompt = "def f(x): return x\n" * 200
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "short"}, {"prompt": long_prompt}])
    n_tokens = prompt_token_counts(tokenizer, [long_prompt], None)[0]
    with pytest.raises(
        DataError, match=rf"row 1: prompt is {n_tokens} tokens, longer than the teacher's context \(512\)"
    ):
        build_prompt_set(config(dataset=path), tokenizer, context_length=512)


def test_prompt_token_counts_include_chat_template(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    expected = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert prompt_token_counts(tokenizer, ["hello"], "S") == [expected]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "tgi", "generator": "chain_sum"}, "unknown --engine 'tgi'"),
        ({"engine": "openai", "generator": "chain_sum"}, "--engine openai needs --base_url"),
        ({}, "give exactly one prompt source"),
        ({"generator": "chain_sum", "dataset": "x.jsonl"}, "give exactly one prompt source"),
        ({"generator": "chain_sum", "max_new_tokens": 0}, "--max_new_tokens must be >= 1"),
        ({"generator": "chain_sum", "pipeline_parallel_size": 0}, "--pipeline_parallel_size must be >= 1"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        config(**kwargs)


def test_missing_file_and_unknown_generator():
    with pytest.raises(DataError, match=r"prompt file not found: nope\.jsonl"):
        build_prompt_set(config(dataset="nope.jsonl"))
    with pytest.raises(DataError, match="unknown --generator 'no_such_task'"):
        build_prompt_set(config(generator="no_such_task"))
