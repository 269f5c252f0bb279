"""`distillab demo [--quick] [--output_dir DIR] [--fresh] [--config recipe.yaml]`: the whole pipeline on a real
teacher, offline, on CPU.

SmolLM2-135M-Instruct (an offline asset) -> greedy hard labels + top-k soft labels on the same tokens
(distilabel + vLLM) for a task the teacher can do (number words -> digits) -> three students from one
initialisation (a layer-pruned copy of the teacher) at matched training tokens D, each with every seed of
`SEEDS`: supervised (the reference answers), hard (SFT on the teacher's turns), soft (KD on the teacher's top-k
over the same tokens) -> evaluation (retention of the teacher's task score, CE, KL, top-1, a verdict) ->
DIR/report.md and DIR/report.html.

The demo only chains the stage commands a user would type, with the recipes in recipes/demo/; every stage's
output stays under DIR. A finished stage is reused on the next run only when it was made with the same settings
(its config fingerprint; `--quick` and full differ): otherwise it is redone with --overwrite, and so is every
stage after one that ran. The stages that need only the hard + soft labels (the held-out generations and the
students) run `--jobs` at a time, each on cpu_count // jobs threads whatever runs beside it (a student's
numbers do not depend on the schedule), their output in DIR/logs/; the other stages run alone on every core.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distillab.assets import DEFAULT_DIR as TEACHER_DIR
from distillab.configs import parse_config
from distillab.errors import ConfigError, DistillabError, exit_on_user_error
from distillab.fileio import check_output_dir, read_json
from distillab.generate.config import GenerateConfig
from distillab.kd.config import DistillabKDConfig
from distillab.sft.config import DistillabSFTConfig

CONFIGS = {"distillab.sft": DistillabSFTConfig, "distillab.kd": DistillabKDConfig}

# The held-out teacher generations: the task's evaluation questions, which no student trains on
HELDOUT = ["--generator", "number_words_test", "--num_prompts", "30", "--seed", "7"]
SEEDS = (42, 43)  # every student is trained once per seed: the verdict compares methods with the seed spread
STUDENTS = (  # (name, recipe, training command): one initialisation, matched D (the recipes' train_tokens)
    ("supervised", "supervised", "distillab.sft"),
    ("hard", "sft", "distillab.sft"),
    ("soft", "kd", "distillab.kd"),
)
QUICK = {  # --quick: fewer prompts, one seed, fewer training tokens, a smaller lm-eval sample
    "generate": ["--num_prompts", "32"],
    "heldout": ["--num_prompts", "16"],  # last flag wins over HELDOUT
    "seeds": SEEDS[:1],
    "train": ["--train_tokens", "600"],
    "evaluate": ["--lm_eval_limit", "16", "--reference_num_rows", "16"],
}


@dataclass
class DemoConfig:
    quick: bool = field(default=False, metadata={"help": "A smaller run (about 5 minutes on 2 cores)."})
    jobs: int = field(
        default=2,
        metadata={
            "help": "Stages run at a time once the labels are made (the held-out generations, the students)."
        },
    )
    output_dir: Path = field(default=Path("outputs/demo"), metadata={"help": "Where every stage writes."})
    fresh: bool = field(default=False, metadata={"help": "Delete output_dir and start over."})
    recipes: Path = field(default=Path("recipes/demo"), metadata={"help": "The demo's recipe folder."})

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}")


@dataclass
class Stage:
    """A stage's command and what its output folder holds: `done` (finished with the settings of `command`),
    `other_settings` (a run of other settings, e.g. `--quick` vs full). `overwrite`: the flags that make the
    command start over rather than resume or reuse what is there. `parallel`: it may run beside the other
    parallel stages next to it in the plan (it reads nothing they write)."""

    name: str
    command: list[str]
    done: Callable[[], bool]
    other_settings: Callable[[], bool] = lambda: False
    overwrite: list[str] = field(default_factory=list)
    parallel: bool = False


def student_runs(quick: bool) -> list[tuple[str, str, str, int]]:
    """(run name, recipe, training module, seed) of every student, seed by seed."""
    seeds = QUICK["seeds"] if quick else SEEDS
    return [(f"{name}-s{seed}", recipe, module, seed) for seed in seeds for name, recipe, module in STUDENTS]


def stages(recipes: Path, out: Path, quick: bool) -> list[Stage]:
    """The pipeline, as the commands a user would run."""
    python = [sys.executable, "-m"]
    extra = QUICK if quick else {}
    runs = student_runs(quick)
    generate = out / "generate"
    heldout = out / "heldout"

    def generate_stage(name: str, path: Path, args: list[str], soft: bool) -> Stage:
        args = ["--config", str(recipes / "generate.yaml"), *args, "--output_dir", str(path)]
        made_with = _stored_fingerprint(path / "distillab.json", GenerateConfig, args)

        def done() -> bool:
            meta = _json(path / "distillab.json")
            soft_done = not soft or meta.get("soft_labels", {}).get("complete", False)
            return made_with() == "same" and meta.get("complete", False) and soft_done

        command = [*python, "distillab.cli", "generate", *args]
        return Stage(name, command, done, lambda: made_with() == "other", ["--overwrite"], parallel=not soft)

    def train_stage(run: str, recipe: str, module: str, seed: int) -> Stage:
        args = [
            "--config",
            str(recipes / f"{recipe}.yaml"),
            "--dataset_name",
            str(generate),
            "--seed",
            str(seed),
            "--output_dir",
            str(out / run),
            *extra.get("train", []),
        ]
        record = out / run / "distillab_run.json"
        made_with = _stored_fingerprint(record, CONFIGS[module], args)
        return Stage(  # one process: what `accelerate launch` of cpu.yaml runs, minus its launcher process
            f"student {run}",
            [*python, module, *args],
            lambda: made_with() == "same" and _json(record).get("complete", False),
            lambda: made_with() == "other",
            ["--overwrite"],
            parallel=True,
        )

    return [
        Stage(
            "teacher",
            [*python, "distillab.cli", "assets", "smollm2", "--dir", str(TEACHER_DIR)],
            lambda: (TEACHER_DIR / "distillab_asset.json").is_file(),
        ),
        generate_stage("hard + soft labels", generate, extra.get("generate", []), soft=True),
        generate_stage(
            "held-out teacher generations",
            heldout,
            [*HELDOUT, "--soft_labels_k", "0", *extra.get("heldout", [])],
            soft=False,
        ),
        *(train_stage(*run) for run in runs),
        Stage(
            "evaluation + report",
            [
                *python,
                "distillab.cli",
                "evaluate",
                "--config",
                str(recipes / "evaluate.yaml"),
                "--students",
                *(f"{run}={out / run}" for run, *_ in runs),
                "--heldout_data",
                str(heldout),
                "--output_dir",
                str(out),
                *extra.get("evaluate", []),
            ],
            lambda: all((out / name).is_file() for name in ("results.json", "report.md", "report.html")),
        ),
    ]


def _stored_fingerprint(path: Path, config_cls: type, args: list[str]) -> Callable[[], str | None]:
    """Whether the output at `path` (distillab.json or distillab_run.json) was made with the settings of
    `args`: "same", "other", or None when there is none yet."""

    def made_with() -> str | None:
        stored = _json(path).get("config_fingerprint")
        if stored is None:
            return None
        return "same" if stored == parse_config(config_cls, args).fingerprint() else "other"

    return made_with


def run_demo(config: DemoConfig) -> None:
    output_dir = config.output_dir
    if not (config.recipes / "generate.yaml").is_file():
        raise ConfigError(
            f"demo recipes not found in {config.recipes}: run from a distillab checkout or pass --recipes"
        )
    check_output_dir(output_dir)
    if config.fresh:
        shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    plan = stages(config.recipes, output_dir, config.quick)
    started = time.perf_counter()
    runs = []  # (number, stage, command) of the stages to run, in plan order
    redone = False  # once a stage runs, every later one is redone too: its inputs may have changed
    for number, stage in enumerate(plan, start=1):
        if not redone and stage.done():
            print(
                f"{_header(number, plan, stage)}: finished earlier, reusing it (--fresh starts over)",
                flush=True,
            )
            continue
        command = stage.command
        if redone or stage.other_settings():  # what is there came from other inputs or settings: start over
            command = [*command, *stage.overwrite]
        runs.append((number, stage, command))
        redone = True
    for group in _groups(runs):
        if group[0][1].parallel:
            _run_parallel(group, plan, config.jobs, output_dir / "logs")
        else:
            _run_alone(*group[0], plan)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s\n")
    results = _json(output_dir / "results.json")
    print(textwrap.fill(" ".join(results.get("verdict", [])), width=110) + "\n")
    print(summary_table(results))
    print(f"\nreport: {output_dir / 'report.html'}  (markdown: {output_dir / 'report.md'})")


def _groups(runs: list) -> list[list]:
    """The runs cut into groups: each parallel run with the parallel runs next to it, every other run alone."""
    groups: list[list] = []
    for run in runs:
        if groups and run[1].parallel and groups[-1][-1][1].parallel:
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def _run_alone(number: int, stage: Stage, command: list[str], plan: list[Stage]) -> None:
    """One stage on every core, its output on the terminal."""
    header = _header(number, plan, stage)
    print(f"{header}\n  $ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if subprocess.Popen(command, env=_stage_env(os.cpu_count() or 1)).wait() != 0:
        raise DistillabError(f"demo stage '{stage.name}' failed (its error is above); re-run to resume")
    print(f"{header}: done in {time.perf_counter() - start:.0f} s", flush=True)


def _run_parallel(runs: list, plan: list[Stage], jobs: int, logs: Path) -> None:
    """The runs, `jobs` at a time in plan order, each on cpu_count // jobs threads, output in `logs`/. A failed
    one stops the others (they resume on the next run) and its log's end is shown."""
    logs.mkdir(parents=True, exist_ok=True)
    env = _stage_env(max(1, (os.cpu_count() or 1) // jobs))
    pending, running = list(runs), {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                number, stage, command = pending.pop(0)
                log = logs / f"{_slug(stage.name)}.log"
                print(
                    f"{_header(number, plan, stage)}: started, log {log}\n  $ {shlex.join(command)}",
                    flush=True,
                )
                with log.open("w") as out:
                    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
                running[process] = (number, stage, log, time.perf_counter())
            finished = next((p for p in running if p.poll() is not None), None)
            if finished is None:
                time.sleep(0.2)
                continue
            number, stage, log, start = running.pop(finished)
            if finished.returncode != 0:
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
                raise DistillabError(
                    f"demo stage '{stage.name}' failed; the end of its log ({log}):\n{tail}re-run to resume"
                )
            print(f"{_header(number, plan, stage)}: done in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        for process in running:  # after a failure or Ctrl-C: the others stop too
            process.terminate()
            process.wait()


def _header(number: int, plan: list[Stage], stage: Stage) -> str:
    return f"[demo {number}/{len(plan)}] {stage.name}"


def _slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def summary_table(results: dict) -> str:
    """A terminal table of the evaluate stage's results (one line per model)."""
    columns = [
        ("model", "name", "{}"),
        ("method", "method", "{}"),
        ("CE ref", "ce_reference", "{:.3f}"),
        ("CE gen", "ce_teacher_generations", "{:.3f}"),
        ("KL(T||S)", "kl_teacher", "{:.3f}"),
        ("top-1", "top1_agreement", "{:.1%}"),
        ("law", "predicted_loss", "{:.3f}"),
        ("PFLOPs", "flops", "{:.3f}"),
    ]
    rows = [[title for title, _, _ in columns]]
    for model in results.get("models", []):
        rows.append([_cell(model.get(key), fmt, key) for _, key, fmt in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    )


def _cell(value, fmt: str, key: str) -> str:
    if isinstance(value, dict):  # flops: {"total": ...}
        value = value.get("total")
    if value is None:
        return "-"
    if key == "flops":
        value = value / 1e15
    return fmt.format(value)


def _stage_env(threads: int) -> dict[str, str]:
    """A stage's environment: its share of the cores (tests and benchmarks pin OMP_NUM_THREADS=1)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}


def _json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_demo(parse_config(DemoConfig, argv))


if __name__ == "__main__":
    main()
