"""`distillab sft` config: CPU defaults, recipe + CLI overrides, validation, the shipped recipes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from distillab.configs import parse_config
from distillab.errors import ConfigError
from distillab.sft.config import DistillabSFTConfig, apply_cpu_defaults

REPO = Path(__file__).resolve().parents[2]
FRESH = ["--dataset_name", "data/x", "--student_kind", "fresh", "--student_preset", "tiny"]


def parse(argv):
    return parse_config(DistillabSFTConfig, argv)


@pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the defaults of a machine without a GPU")
def test_cpu_defaults_need_no_flags(tmp_path):
    config = parse([*FRESH, "--output_dir", str(tmp_path)])
    assert (config.bf16, config.gradient_checkpointing, config.use_cpu) == (False, False, True)
    assert config.dataset_kwargs == {"skip_prepare_dataset": True}  # distillab's sequences go in as they are
    assert (config.save_steps, config.save_total_limit, config.report_to) == (250, 2, [])


@pytest.mark.parametrize(
    ("deepspeed_env", "expected"),
    [("true", dict(ddp_backend="gloo", use_cpu=False)), ("false", dict(ddp_backend=None, use_cpu=True))],
)
def test_cpu_launch_mode(monkeypatch, deepspeed_env, expected):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", deepspeed_env)
    config = SimpleNamespace(
        use_cpu=False, fp16=False, bf16=None, gradient_checkpointing=None, deepspeed=None, ddp_backend=None
    )
    apply_cpu_defaults(config)
    assert (config.ddp_backend, config.use_cpu, config.bf16, config.gradient_checkpointing) == (
        expected["ddp_backend"],
        expected["use_cpu"],
        False,
        False,
    )


def test_gpu_keeps_trl_defaults(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    config = SimpleNamespace(
        use_cpu=False, fp16=False, bf16=None, gradient_checkpointing=None, deepspeed=None, ddp_backend=None
    )
    apply_cpu_defaults(config)
    assert (config.bf16, config.gradient_checkpointing, config.use_cpu) == (True, True, False)


def test_recipe_then_cli_overrides(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        "dataset_name: data/x\nstudent_kind: pruned\nprune_keep_every: 2\nlearning_rate: 1.0e-3\n"
        "use_peft: true\nlora_target_modules: [q_proj, v_proj]\nsave_merged: true\n"
    )
    config = parse(["--config", str(recipe), "--learning-rate", "5e-4", "--lora_r", "8", "--output_dir", "x"])
    assert config.learning_rate == 5e-4 and config.lora_r == 8
    assert config.student_kind == "pruned" and config.prune_keep_every == 2
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.save_merged


@pytest.mark.parametrize(
    "recipe",
    sorted([*REPO.glob("recipes/*/sft.yaml"), *REPO.glob("recipes/*/supervised.yaml")]),
    ids=lambda p: f"{p.parent.name}-{p.stem}",
)
def test_shipped_recipes_parse(recipe, tmp_path):
    config = parse(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert config.dataset_name and config.student_kind in {"pretrained", "fresh", "pruned"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--dataset_name is required"),
        (["--dataset_name", "d"], "--student_kind pretrained needs --model_name_or_path"),
        (["--dataset_name", "d", "--student_kind", "pruned"], "needs --prune_keep_every k"),
        (
            [*FRESH, "--student_kind", "pruned", "--prune_keep_every", "2", "--prune_keep_last", "1"],
            "not both",
        ),
        ([*FRESH, "--student_num_layers", "0"], "--student_num_layers must be >= 1"),
        ([*FRESH, "--completion_only_loss", "false"], "always trains on the teacher's completion only"),
        ([*FRESH, "--assistant_only_loss", "true"], "always trains on the teacher's completion only"),
        ([*FRESH, "--chat_template_path", "template.txt"], "must be a .jinja file"),
        ([*FRESH, "--max_length", "1"], "--max_length must be >= 2"),
        ([*FRESH, "--save_merged", "true"], "--save_merged only applies to LoRA runs"),
        ([*FRESH, "--train_on", "teacher"], "invalid choice: 'teacher'"),
        ([*FRESH, "--train_tokens", "0"], "--train_tokens must be >= 1"),
    ],
)
def test_invalid_configs(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(argv)


def test_unknown_recipe_key(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("dataset_name: d\nstudent_kind: fresh\nstudent_size: 3\n")
    with pytest.raises(ConfigError, match="student_size"):
        parse(["--config", str(recipe)])


def test_a_local_student_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "models" / "student").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = parse(["--dataset_name", "data/x", "--model_name_or_path", "models/student"])
    assert config.model_name_or_path == str(tmp_path / "models" / "student")  # usable from any directory
    hub = parse(["--dataset_name", "data/x", "--model_name_or_path", "HuggingFaceTB/SmolLM2-135M"])
    assert hub.model_name_or_path == "HuggingFaceTB/SmolLM2-135M"  # a Hub id stays as it is


def test_a_token_budget_sets_the_steps():
    """48 sequences at a global batch of 8 x 2 accumulation = 3 steps an epoch of 600 supervised tokens:
    2,000 tokens = 3.33 epochs = 10 steps."""
    from distillab.sft.train import steps_for_tokens

    config = SimpleNamespace(
        per_device_train_batch_size=8, gradient_accumulation_steps=2, world_size=1, train_tokens=2000
    )
    data = SimpleNamespace(report=SimpleNamespace(sequences=48, supervised_tokens=600))
    assert steps_for_tokens(config, data) == 10
    assert steps_for_tokens(SimpleNamespace(**{**vars(config), "train_tokens": 10}), data) == 1
