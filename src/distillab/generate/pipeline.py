"""The distilabel pipeline: requests -> TextGeneration (teacher engine) -> ShardWriter (flush rows to disk).

`build_distilabel_pipeline` only builds it (the way open-r1's generate.py does); `run_pipeline` runs it.

No `from __future__ import annotations` here: distilabel inspects the `StepInput` hint at run time.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distilabel.models.llms.base import LLM
from distilabel.pipeline import Pipeline
from distilabel.steps import Step, StepInput
from distilabel.steps.tasks import TextGeneration
from distilabel.utils.logging import stop_logging
from pydantic import PrivateAttr

from distillab.data.hardlabels import ShardStore
from distillab.errors import EngineError, first_line
from distillab.generate.config import GenerateConfig
from distillab.generate.registry import ENGINES
from distillab.interrupts import Interrupted

TEACHER_STEP = "teacher"


def contract_row(item: dict[str, Any]) -> dict[str, Any] | None:
    """A TextGeneration output row -> a hard-label row; None when the engine failed on it."""
    if item.get("generation") is None:
        return None
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


class ShardWriter(Step):
    """Writes each finished batch as one atomic parquet shard, so a killed run loses at most a batch."""

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
        rows = [row for row in map(contract_row, inputs) if row is not None]
        ShardStore(self.output_dir).write(rows)
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


class StoppablePipeline(Pipeline):
    """distilabel's local Pipeline, stopped alike by Ctrl-C and SIGTERM the way distilabel stops on Ctrl-C (each
    step finishes its batch, so the shard writer flushes it; a second signal forces the stop), remembering the
    signal so that the run ends as interrupted."""

    stopped_by: int | None = None

    def _handle_keyboard_interrupt(self) -> Any:  # distilabel's hook, called once the workers are up
        def stop(signum: int, frame: Any) -> None:
            self.stopped_by = self.stopped_by or signum
            self._stop()

        signal.signal(signal.SIGTERM, stop)
        return signal.signal(signal.SIGINT, stop)


def build_distilabel_pipeline(config: GenerateConfig, llm: LLM, total: int) -> StoppablePipeline:
    """The generate pipeline, built but not run: TextGeneration (`llm`, the teacher) -> ShardWriter.

    Pure: builds step objects only; the engine loads when the pipeline runs. Its inputs come with `run`.
    """
    with StoppablePipeline(
        name="distillab-generate", cache_dir=str(Path(config.output_dir) / ".distilabel")
    ) as pipeline:
        teacher = TextGeneration(
            name=TEACHER_STEP,
            llm=llm,
            input_batch_size=config.batch_size,
            add_raw_input=True,
            add_raw_output=False,
        )
        writer = ShardWriter(
            name="shard_writer",
            output_dir=config.output_dir,
            total=total,
            input_batch_size=config.batch_size,
        )
        teacher >> writer
    return pipeline


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
    """Generate every request through distilabel; rows land in the shard store as batches finish.

    Ctrl-C or SIGTERM stops the pipeline (the flushed shards stay) and raises `Interrupted`.
    """
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    inputs = _pipeline_inputs(config, requests)
    llm = ENGINES[config.engine].build_teacher(config)
    pipeline = build_distilabel_pipeline(config, llm, total=len(inputs))
    with _distilabel_process_state():
        try:
            pipeline.run(dataset=inputs, dataset_batch_size=config.batch_size, use_cache=False)
        except RuntimeError as err:  # a step failed to load: distilabel logged it above
            cause = f": {first_line(err.__cause__)}" if err.__cause__ else f" ({err})"
            raise EngineError(f"the {config.engine} teacher engine failed{cause}") from None
        except SystemExit:  # distilabel exits on a second stop signal
            if not pipeline.stopped_by:
                raise
    if pipeline.stopped_by:
        raise Interrupted(pipeline.stopped_by)


@contextlib.contextmanager
def _distilabel_process_state() -> Iterator[None]:
    """Give back what a distilabel run takes over and, when it fails or is stopped, leaves behind: the root
    logger's handlers (routed into its log queue), the SIGINT / SIGTERM handlers, and the log listener thread
    (left running, it prints a traceback once the queue is gone at exit)."""
    root_handlers = list(logging.getLogger().handlers)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        stop_logging()
        logging.getLogger().handlers = root_handlers
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
