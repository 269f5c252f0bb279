"""`accelerate launch -m distillab.kd` with an online teacher under DeepSpeed ZeRO-3, two CPU processes over gloo:
the student and the teacher are both sharded; the losses match a one-process run on the same global batch and
the saved student loads with `from_pretrained`. TORCH_EXTENSIONS_DIR caches DeepSpeed's JIT build (as in
tests/sft/test_launch.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from distillab.data.run_record import read_run_record
from tests.cli import cli_env
from tests.kd.conftest import kd_argv, run_kd
from tests.sft.test_launch import REPO

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ONLINE = ["--teacher_mode", "online", "--max_steps", "3"]


def test_online_teacher_under_zero3_on_two_cpu_processes(soft_label_dir, tmp_path):
    env = cli_env(
        TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/zero3.yaml",
        "--num_processes", "2", "-m", "distillab.kd",
        *kd_argv(soft_label_dir, tmp_path / "zero3", *ONLINE, "--per_device_train_batch_size", "4"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    single = read_run_record(run_kd(kd_argv(soft_label_dir, tmp_path / "single", *ONLINE)))  # batch 8

    sharded = read_run_record(tmp_path / "zero3")
    assert sharded["complete"] and sharded["method"] == "kd"
    assert sharded["training"]["processes"] == 2 and sharded["training"]["train_batch_size"] == 8
    for key in ("loss", "kd", "ntp", "z"):
        assert [e[key] for e in sharded["loss_history"]] == pytest.approx(
            [e[key] for e in single["loss_history"]], rel=1e-4
        ), key
    assert sharded["train_tokens"] == single["train_tokens"]

    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "single")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3")  # the 16-bit gathered save
    for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), name
