"""Model specs: names, folder checks, LoRA adapters, run records."""

from __future__ import annotations

import json

import pytest

from distillab.errors import ConfigError, DistillabError
from distillab.evaluate.models import load_model, resolve_models, split_name, student_spec, teacher_spec


def test_names_come_from_name_equals_path_or_the_folder():
    assert split_name("hard=outputs/sft") == ("hard", "outputs/sft")
    assert split_name("outputs/sft") == (None, "outputs/sft")
    assert split_name("outputs/a=b") == (None, "outputs/a=b")  # a '=' inside a path is not a name


def test_students_carry_their_run_record(student_dirs):
    spec = student_spec(f"soft={student_dirs['soft']}")
    assert (spec.name, spec.method, spec.base) == ("soft", "kd", None)
    assert spec.run["train_tokens"] == 5000
    assert student_spec(str(student_dirs["supervised"])).name == "supervised"


def test_a_lora_adapter_folder_resolves_its_base(lora_student_dir):
    spec = student_spec(str(lora_student_dir))
    base = json.loads((lora_student_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert spec.is_adapter and spec.base == base
    assert spec.tokenizer_source == str(lora_student_dir)  # the adapter folder carries the tokenizer


def test_a_lora_student_loads_merged_and_differs_from_its_base(lora_student_dir):
    import torch

    spec = student_spec(str(lora_student_dir))
    merged = load_model(spec, "cpu", "float32")
    base = load_model(teacher_spec(spec.base), "cpu", "float32")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(merged(ids).logits, base(ids).logits)


def test_missing_and_empty_folders_are_errors(tmp_path):
    with pytest.raises(DistillabError, match="student model folder not found"):
        student_spec(str(tmp_path / "nope"))
    with pytest.raises(DistillabError, match="holds no model"):
        student_spec(str(tmp_path))
    with pytest.raises(DistillabError, match="teacher model folder not found"):
        teacher_spec("./no/such/teacher")


def test_an_unfinished_run_is_an_error(tmp_path, student_dirs):
    import shutil

    folder = tmp_path / "unfinished"
    shutil.copytree(student_dirs["hard"], folder)
    record = json.loads((folder / "distillab_run.json").read_text())
    (folder / "distillab_run.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(DistillabError, match="unfinished training run"):
        student_spec(str(folder))


def test_duplicate_names_are_a_config_error(tiny_teacher, student_dirs):
    with pytest.raises(ConfigError, match="two models are named 'hard'"):
        resolve_models(str(tiny_teacher), [str(student_dirs["hard"]), f"hard={student_dirs['soft']}"])
    specs = resolve_models(f"teacher={tiny_teacher}", [str(student_dirs["hard"])])
    assert [(s.name, s.method) for s in specs] == [("teacher", "teacher"), ("hard", "sft")]
