"""`accelerate launch -m distillab.sft` in real subprocesses: one CPU process (cpu.yaml), and DeepSpeed ZeRO-3
over gloo with two CPU processes (zero3.yaml), whose losses must match the one-process run on the same global
batch and whose saved model must load with `from_pretrained`.

DeepSpeed JIT-compiles an op on first use; TORCH_EXTENSIONS_DIR (the Makefile's .cache/torch_extensions by
default) keeps the build across tests and CI runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from distillab.data.run_record import read_run_record
from tests.cli import cli_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 8


def launch(config: str, dataset: Path, output_dir: Path, *launch_args: str, batch: int) -> Path:
    env = cli_env(
        TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}.yaml",
        *launch_args, "-m", "distillab.sft",
        "--dataset_name", str(dataset), "--output_dir", str(output_dir),
        "--student_kind", "fresh", "--student_num_layers", "2", "--student_hidden_size", "64",
        "--student_num_heads", "2", "--student_intermediate_size", "128",
        "--per_device_train_batch_size", str(batch), "--max_steps", "4", "--learning_rate", "3e-3",
        "--logging_steps", "1", "--seed", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return output_dir


@pytest.fixture(scope="module")
def one_process_run(hard_label_dir, tmp_path_factory):
    return launch("cpu", hard_label_dir, tmp_path_factory.mktemp("cpu") / "run", batch=GLOBAL_BATCH)


def test_one_cpu_process(one_process_run):
    record = read_run_record(one_process_run)
    assert record["complete"] and record["training"]["processes"] == 1
    assert record["training"]["train_batch_size"] == GLOBAL_BATCH
    losses = [entry["loss"] for entry in record["loss_history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]


@pytest.mark.distributed
def test_deepspeed_zero3_on_two_cpu_processes_matches_one_process(one_process_run, hard_label_dir, tmp_path):
    zero3 = launch(
        "zero3", hard_label_dir, tmp_path / "zero3", "--num_processes", "2", batch=GLOBAL_BATCH // 2
    )
    single, sharded = read_run_record(one_process_run), read_run_record(zero3)
    assert sharded["complete"] and sharded["training"]["processes"] == 2
    assert sharded["training"]["train_batch_size"] == GLOBAL_BATCH
    assert [e["loss"] for e in sharded["loss_history"]] == pytest.approx(
        [e["loss"] for e in single["loss_history"]], rel=1e-4
    )
    assert sharded["train_tokens"] == single["train_tokens"]  # both processes' tokens counted once

    reference = AutoModelForCausalLM.from_pretrained(one_process_run)
    model = AutoModelForCausalLM.from_pretrained(zero3)  # the 16-bit gathered save: full weights, one file
    for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), name
