"""The distilabel pipeline is only built (no engine started, nothing written) until it runs."""

from __future__ import annotations

import pytest

from distillab.generate.config import GenerateConfig
from distillab.generate.engines import TransformersTeacher
from distillab.generate.pipeline import build_distilabel_pipeline


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
