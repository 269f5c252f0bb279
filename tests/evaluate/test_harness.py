"""The offline lm-eval tasks and the reading of lm-eval's results."""

from __future__ import annotations

import json

import pytest
import yaml

from distillab.errors import ConfigError
from distillab.evaluate.config import LOCAL_TASKS, EvaluateConfig
from distillab.evaluate.harness import (
    local_task_docs,
    model_args,
    task_manager,
    task_summary,
    write_local_tasks,
)
from distillab.evaluate.models import student_spec


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
