"""`distillab study`: the grid of a study config, run cell by cell through the stage commands, then analysed.

Every cell runs the commands a user would type, as subprocesses: `accelerate launch -m distillab.sft|kd` to
train a fresh student on its budget, then `distillab evaluate --lm_eval_tasks none` for its cross-entropy on the
held-out real data (several finished students per call). Each teacher's pass runs once and is shared by every
cell that uses it: `distillab generate` (greedy continuations of the train prompts: hard), `distillab label` on
those (soft) and on the real sequences (soft_data). Output, under `output_dir`:

    corpus/                 tokenizer, base model, real train data, prompts, held-out data (study.corpus)
    data/real-<rows>/       the first rows of the real data: one folder per budget
    teachers/<T>/           generated/ (hard), generated_soft/, real_soft/, their budget-sized copies, logs/
    cells/<cell>/           run/ (the student run folder), logs/, train.json, eval.json, cell.json
    evaluations/<group>/    the evaluate calls' outputs (results.json, report.md, evaluate.log)
    runs.csv                one row per finished cell (the contract with distillab.study.analysis)
    report/                 report.md + plots, from distillab.study.analysis.analyze

A cell is finished when its run record is complete and eval.json (its loss) and cell.json (its runs.csv row)
exist; a finished cell is reused, an unfinished one is redone (its training from scratch unless its run record
is complete), so a killed sweep continues where it stopped. Teacher passes resume inside their stages.
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab.configs import save_resolved_config
from distillab.errors import ConfigError, DistillabError
from distillab.fileio import atomic_write_json, read_json
from distillab.scaling.flops import non_embedding_params
from distillab.study.config import SIZE_KEYS, SIZE_TRAIN_KEYS, StudyConfig
from distillab.study.corpus import CorpusSpec, build_corpus
from distillab.study.datasets import dataset_complete, write_subset
from distillab.study.grid import METHODS, Cell, Grid, Teacher, build_grid, rows_for_budget

RUNS_COLUMNS = (
    "cell",
    "method",
    "student_size",
    "student_params",
    "student_tokens",
    "loss",
    "teacher",
    "teacher_params",
    "teacher_loss",
    "seed",
    "flops_student",
    "flops_teacher",
    "flops_total",
    "wall_s",
    "run_dir",
)
CELL_RECORD = "cell.json"  # the cell's runs.csv row, written last
EVAL_RECORD = "eval.json"  # its loss, from the evaluate call that measured it
TRAIN_RECORD = "train.json"  # the wall time of its training command
RUN_RECORD = "distillab_run.json"  # the run-folder contract (sft/kd write it; complete: true when finished)
TRAINERS = {
    "supervised": "distillab.sft",
    "hard": "distillab.sft",
    "soft": "distillab.kd",
    "soft_data": "distillab.kd",
}
PASSES = {"hard": "generate", "soft": "label_generated", "soft_data": "label_real"}  # what a method trains on
# Cells are short and redone whole when interrupted: no mid-run checkpoints.
FIXED_TRAIN_ARGS = ["--num_train_epochs", "1", "--save_strategy", "no", "--report_to", "none"]


class StageFailed(DistillabError):
    """A stage command exited with an error (its log is named in the message)."""


@dataclass
class Task:
    name: str
    run: Callable[[], list[dict[str, Any]] | None]  # returns the runs.csv rows it finished
    deps: list[str] = field(default_factory=list)


class Study:
    """The paths, commands and tasks of one study folder."""

    def __init__(self, config: StudyConfig):
        self.config = config
        self.out = Path(config.output_dir)
        self.grid: Grid = build_grid(config)
        self.tokens_per_row = config.continuation_tokens + 1  # the continuation + the end-of-turn token
        self.env = _stage_env(config.workers)
        self._subset_lock = threading.Lock()

    # --- layout ---------------------------------------------------------------------------------------------

    @property
    def corpus(self) -> Path:
        return self.out / "corpus"

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.name

    def teacher_dir(self, teacher: Teacher) -> Path:
        return self.out / "teachers" / teacher.name

    def teacher_model(self, teacher: Teacher) -> Path:
        return self.cell_dir(teacher.cell) / "run" if teacher.cell else teacher.path

    def rows(self, cells: list[Cell]) -> int:
        return max((rows_for_budget(c.budget, self.tokens_per_row) for c in cells), default=0)

    def cells_of(self, teacher: str, *methods: str) -> list[Cell]:
        return [c for c in self.grid.cells if c.teacher == teacher and c.method in methods]

    # --- the corpus and the per-budget data ---------------------------------------------------------------

    def corpus_spec(self) -> CorpusSpec:
        c = self.config
        return CorpusSpec(
            vocab_size=c.vocab_size,
            tokenizer_train_bytes=c.tokenizer_train_bytes,
            prompt_tokens=c.prompt_tokens,
            continuation_tokens=c.continuation_tokens,
            windows_per_document=c.windows_per_document,
            heldout_fraction=c.heldout_fraction,
            train_rows=self.rows(self.grid.cells),
            heldout_rows=c.eval_rows,
            max_position_embeddings=4 * (c.prompt_tokens + c.continuation_tokens) + 64,
        )

    def training_data(self, cell: Cell) -> Path:
        """The budget-sized dataset a cell trains on."""
        rows = rows_for_budget(cell.budget, self.tokens_per_row)
        if cell.method == "supervised":
            source, copy = self.corpus / "train", self.out / "data" / f"real-{rows}"
        else:
            kind = {"hard": "generated", "soft": "generated_soft", "soft_data": "real_soft"}[cell.method]
            source = self.teacher_dir(self.grid.teachers[cell.teacher]) / kind
            copy = source.parent / f"{kind}-{rows}"
        with self._subset_lock:
            return write_subset(source, rows, copy)

    # --- tasks ---------------------------------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        """What the unfinished cells need, in the order work should start: the teacher cells' training, each
        teacher's passes, the other cells' training, then evaluation in groups (supervised first: the teachers'
        losses). Finished cells and finished passes are not tasks."""
        todo = [c for c in self.grid.cells if self.finished_row(c) is None]
        teacher_cells = {t.cell for t in self.grid.teachers.values() if t.cell}
        untrained = [c for c in todo if not _complete_run(self.cell_dir(c) / "run")]
        tasks = [self.train_task(c) for c in untrained if c in teacher_cells]
        tasks += [task for t in self.grid.teachers.values() for task in self.teacher_tasks(t, todo)]
        tasks += [self.train_task(c) for c in untrained if c not in teacher_cells]
        tasks += self.evaluation_tasks(todo)
        names = {task.name for task in tasks}
        for task in tasks:  # a dependency that is not a task is finished already
            task.deps = [d for d in task.deps if d in names]
        return tasks

    def train_task(self, cell: Cell) -> Task:
        deps = []
        if cell.teacher:
            teacher = self.grid.teachers[cell.teacher]
            deps = [f"{PASSES[cell.method]}:{teacher.name}"]
        return Task(f"train:{cell.name}", lambda: self.train(cell), deps)

    def teacher_tasks(self, teacher: Teacher, todo: list[Cell]) -> list[Task]:
        """The passes of `teacher` that unfinished cells need (each sized for every cell that uses it)."""
        model = [f"train:{teacher.cell.name}"] if teacher.cell else []
        pending = {c.method for c in todo if c.teacher == teacher.name}
        tasks = []
        if teacher.path and pending:
            tasks.append(Task(f"evaluate:{teacher.name}", lambda: self.evaluate_teacher(teacher)))
        if pending & {"hard", "soft"}:
            generated = self.rows(self.cells_of(teacher.name, "hard", "soft"))
            tasks.append(Task(f"generate:{teacher.name}", lambda: self.generate(teacher, generated), model))
        if "soft" in pending:
            after = [f"generate:{teacher.name}"]
            tasks.append(
                Task(f"label_generated:{teacher.name}", lambda: self.label_generated(teacher), after)
            )
        if "soft_data" in pending:
            real = self.rows(self.cells_of(teacher.name, "soft_data"))
            tasks.append(Task(f"label_real:{teacher.name}", lambda: self.label_real(teacher, real), model))
        return tasks

    def evaluation_tasks(self, todo: list[Cell]) -> list[Task]:
        """One `evaluate` call per group of at most `eval_group_size` cells of one method; it records their
        rows, so it also waits for the evaluation of their teachers."""
        size = self.config.eval_group_size
        tasks, group_of = [], {}
        for method in METHODS:
            cells = [c for c in todo if c.method == method]
            for index in range(0, len(cells), size):
                group = cells[index : index + size]
                name = f"evaluate:{method}-{index // size + 1}"
                teachers = {self.grid.teachers[c.teacher] for c in group if c.teacher}
                deps = [f"train:{c.name}" for c in group]
                deps += [group_of.get(t.cell, "") if t.cell else f"evaluate:{t.name}" for t in teachers]
                tasks.append(
                    Task(name, lambda group=group, name=name: self.evaluate_cells(group, name), deps)
                )
                group_of.update(dict.fromkeys(group, name))
        return tasks

    # --- teacher passes ------------------------------------------------------------------------------------

    def generate(self, teacher: Teacher, rows: int) -> None:
        output = self.teacher_dir(teacher) / "generated"
        if dataset_complete(output):
            return
        max_new_tokens = self.config.generate_max_new_tokens or self.config.continuation_tokens
        command = [
            "generate", "--model", str(self.teacher_model(teacher)), "--engine", "transformers",
            "--dataset", str(self.corpus / "prompts.jsonl"), "--reference_column", "reference",
            "--num_prompts", str(rows), "--max_new_tokens", str(max_new_tokens),
            "--batch_size", str(self.config.generate_batch_size), "--output_dir", str(output),
        ]  # fmt: skip
        self.stage(command, self.teacher_dir(teacher) / "logs" / "generate.log")

    def label_generated(self, teacher: Teacher) -> None:
        directory = self.teacher_dir(teacher)
        self.label(
            directory / "generated",
            directory / "generated_soft",
            teacher,
            directory / "logs" / "label_generated.log",
        )

    def label_real(self, teacher: Teacher, rows: int) -> None:
        real = self.out / "data" / f"real-{rows}"
        with self._subset_lock:
            write_subset(self.corpus / "train", rows, real)
        directory = self.teacher_dir(teacher)
        self.label(real, directory / "real_soft", teacher, directory / "logs" / "label_real.log")

    def label(self, dataset: Path, output: Path, teacher: Teacher, log: Path) -> None:
        k = self.config.soft_labels_k
        if dataset_complete(output, soft_labels_k=k):
            return
        command = [
            "label", "--dataset", str(dataset), "--model", str(self.teacher_model(teacher)),
            "--soft_labels_k", str(k), "--batch_size", str(self.config.eval_batch_size), "--output_dir", str(output),
        ]  # fmt: skip
        self.stage(command, log)

    def evaluate_teacher(self, teacher: Teacher) -> None:
        eval_dir = self.teacher_dir(teacher) / "eval"
        if not (eval_dir / "results.json").is_file():
            self.evaluate(
                [(teacher.name, teacher.path)], eval_dir, self.teacher_dir(teacher) / "logs" / "evaluate.log"
            )

    # --- cells ---------------------------------------------------------------------------------------------

    def finished_row(self, cell: Cell) -> dict[str, Any] | None:
        """The runs.csv row of a finished cell (complete run, its evaluation, its record), else None."""
        directory = self.cell_dir(cell)
        if not (directory / EVAL_RECORD).is_file() or not (directory / CELL_RECORD).is_file():
            return None
        return read_json(directory / CELL_RECORD) if _complete_run(directory / "run") else None

    def train(self, cell: Cell) -> None:
        """Train the cell's student from scratch: whatever an interrupted run left is deleted first, and so are
        the passes of a teacher it is (they came from the model being replaced)."""
        directory = self.cell_dir(cell)
        shutil.rmtree(directory, ignore_errors=True)
        for teacher in self.grid.teachers.values():
            if teacher.cell == cell:
                shutil.rmtree(self.teacher_dir(teacher), ignore_errors=True)
        shape = self.config.sizes[cell.size]
        sizes = [a for key in SIZE_KEYS if key in shape for a in (f"--student_{key}", str(shape[key]))]
        per_size = [a for key in SIZE_TRAIN_KEYS if key in shape for a in (f"--{key}", str(shape[key]))]
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", self.config.accelerate_config,
            "-m", TRAINERS[cell.method],
            "--dataset_name", str(self.training_data(cell)),
            "--student_kind", "fresh", "--model_name_or_path", str(self.corpus / "base_model"), *sizes,
            "--seed", str(self.config.seed), "--output_dir", str(directory / "run"),
            *FIXED_TRAIN_ARGS, *self.config.train_args, *per_size,
        ]  # fmt: skip
        started = time.perf_counter()
        self.run_command(command, directory / "logs" / "train.log")
        atomic_write_json(directory / TRAIN_RECORD, {"wall_s": round(time.perf_counter() - started, 1)})

    def evaluate_cells(self, cells: list[Cell], group: str) -> list[dict[str, Any]]:
        """One evaluate call over `cells` (the first as evaluate's --teacher), then each cell's eval.json
        (its loss) and cell.json (its runs.csv row). Returns the rows."""
        eval_dir = self.out / "evaluations" / group.split(":", 1)[1]
        shutil.rmtree(eval_dir, ignore_errors=True)  # a group of an earlier, interrupted call
        started = time.perf_counter()
        models = [(c.name, self.cell_dir(c) / "run") for c in cells]
        self.evaluate(models, eval_dir, eval_dir / "evaluate.log")
        share = (time.perf_counter() - started) / len(cells)
        entries = {m["name"]: m for m in read_json(eval_dir / "results.json")["models"]}
        rows = []
        for cell in cells:
            directory = self.cell_dir(cell)
            entry = entries[cell.name]
            atomic_write_json(
                directory / EVAL_RECORD,
                {
                    "loss": entry["ce_reference"],
                    "tokens": entry["tokens"],
                    "results": str(eval_dir / "results.json"),
                },
            )
            wall_s = read_json(directory / TRAIN_RECORD)["wall_s"] + share
            rows.append(self.cell_row(cell, wall_s))
            atomic_write_json(directory / CELL_RECORD, rows[-1])
        return rows

    def evaluate(self, models: list[tuple[str, Path]], eval_dir: Path, log: Path) -> None:
        """`distillab evaluate`: cross-entropy of each model on the held-out real data, nothing else."""
        (first, first_path), *rest = models
        students = ["--students", *(f"{name}={path}" for name, path in rest)] if rest else []
        command = [
            "evaluate", "--teacher", f"{first}={first_path}", *students, "--lm_eval_tasks", "none",
            "--reference_data", str(self.corpus / "heldout.jsonl"), "--reference_num_rows", str(self.config.eval_rows),
            "--batch_size", str(self.config.eval_batch_size), "--output_dir", str(eval_dir),
        ]  # fmt: skip
        self.stage(command, log)

    def cell_row(self, cell: Cell, wall_s: float) -> dict[str, Any]:
        run_dir = self.cell_dir(cell) / "run"
        record = read_json(run_dir / RUN_RECORD)
        flops = record["flops"]
        teacher_flops = flops["teacher_generation"] + flops["teacher_scoring"]
        teacher = self.grid.teachers[cell.teacher] if cell.teacher else None
        return {
            "cell": cell.name,
            "method": cell.method,
            "student_size": cell.size,
            "student_params": record["params_non_embedding"],
            "student_tokens": record["train_tokens"],
            "loss": read_json(self.cell_dir(cell) / EVAL_RECORD)["loss"],
            "teacher": teacher.name if teacher else "",
            "teacher_params": self.teacher_params(teacher) if teacher else "",
            "teacher_loss": self.teacher_loss(teacher) if teacher else "",
            "seed": self.config.seed,
            "flops_student": flops["student_train"],
            "flops_teacher": teacher_flops,
            "flops_total": flops["student_train"] + teacher_flops,
            "wall_s": round(wall_s, 1),
            "run_dir": str(run_dir.relative_to(self.out)),
        }

    def teacher_loss(self, teacher: Teacher) -> float:
        if teacher.cell:
            return read_json(self.cell_dir(teacher.cell) / EVAL_RECORD)["loss"]
        return read_json(self.teacher_dir(teacher) / "eval" / "results.json")["models"][0]["ce_reference"]

    def teacher_params(self, teacher: Teacher) -> int:
        return non_embedding_params(read_json(self.teacher_model(teacher) / "config.json"))

    # --- subprocesses --------------------------------------------------------------------------------------

    def stage(self, args: list[str], log: Path) -> None:
        self.run_command([sys.executable, "-m", "distillab.cli", *args], log)

    def run_command(self, command: list[str], log: Path) -> None:
        """Run a stage command with its output in `log`; a failure names the log."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            handle.write(f"$ {shlex.join(command)}\n")
            handle.flush()
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=self.env).returncode
        if code:
            raise StageFailed(f"{shlex.join(command[2:5])} ... exited with {code}; see {log}")


def _complete_run(run_dir: Path) -> bool:
    path = run_dir / RUN_RECORD
    return path.is_file() and bool(read_json(path).get("complete"))


def _stage_env(workers: int) -> dict[str, str]:
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1"),
    }


# --- the sweep ---------------------------------------------------------------------------------------------


def run_study(config: StudyConfig) -> Path:
    """Build the corpus, run every unfinished task, write runs.csv, analyse. Returns report.md's path."""
    config.validate_grid()
    if not Path(config.accelerate_config).is_file():
        raise ConfigError(
            f"--accelerate_config {config.accelerate_config} not found (run from a distillab checkout)"
        )
    study = Study(config)
    study.out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(config, study.out)
    started = time.perf_counter()
    _say(f"corpus: {study.corpus}")
    manifest = build_corpus(study.corpus, study.corpus_spec())
    _say(
        f"corpus: {manifest['documents']['train']} train / {manifest['documents']['heldout']} held-out stdlib "
        f"documents -> {manifest['rows']['train']} train / {manifest['rows']['heldout']} held-out examples"
    )
    runs_csv = study.out / "runs.csv"
    rows = {c.name: row for c in study.grid.cells if (row := study.finished_row(c)) is not None}
    write_runs(runs_csv, list(rows.values()))
    tasks = study.tasks()
    _say(
        f"{len(study.grid.cells)} cells ({len(rows)} finished earlier), {len(tasks)} tasks, {config.workers} worker(s)"
    )
    failures = run_tasks(tasks, config.workers, lambda new: append_runs(runs_csv, new), started)
    if failures:
        listed = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        raise StageFailed(f"{len(failures)} task(s) failed, re-run to resume: {listed}")
    write_runs(runs_csv, [study.finished_row(c) for c in study.grid.cells])  # grid order
    from distillab.study.analysis import analyze

    report = analyze(
        runs_csv,
        study.out / "report",
        holdout_fraction=config.holdout_fraction,
        bootstrap=config.bootstrap,
        quick=config.quick,
    )
    _say(f"done in {time.perf_counter() - started:.0f} s: {runs_csv}, report {report}")
    return report


def run_tasks(
    tasks: list[Task], workers: int, on_rows: Callable[[list[dict[str, Any]]], None], started: float
) -> dict[str, str]:
    """Run `tasks` on `workers` threads (each runs subprocesses), a task once its deps are done, earlier
    tasks first. Returns {task: reason} of the failed ones and of those whose deps failed."""
    pending = {task.name: task for task in tasks}
    running: dict[Future, Task] = {}
    done: set[str] = set()
    failed: dict[str, str] = {}
    started_at: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending or running:
            for name, task in list(pending.items()):
                blocked = [d for d in task.deps if d in failed]
                if blocked:
                    failed[name] = f"needs {blocked[0]}, which failed"
                    del pending[name]
                    _say(f"[{len(done) + len(failed)}/{len(tasks)}] {name}: skipped ({failed[name]})")
                elif len(running) < workers and all(d in done for d in task.deps):
                    running[pool.submit(task.run)] = pending.pop(name)
                    started_at[name] = time.perf_counter()
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    rows = future.result()
                except DistillabError as err:
                    failed[task.name] = str(err)
                    _say(f"[{len(done) + len(failed)}/{len(tasks)}] {task.name}: FAILED ({err})")
                    continue
                done.add(task.name)
                on_rows(rows or [])
                took = time.perf_counter() - started_at.pop(task.name)
                _say(
                    f"[{len(done) + len(failed)}/{len(tasks)}] {task.name}: done in {took:.0f} s · {_elapsed(started)}"
                )
                for row in rows or []:
                    _say(
                        f"  {row['cell']}: loss {row['loss']:.4f}, N {row['student_params']:,}, D {row['student_tokens']:,}"
                    )
    return failed


def write_runs(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUNS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_runs(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=RUNS_COLUMNS).writerows(rows)


def _elapsed(started: float) -> str:
    seconds = int(time.perf_counter() - started)
    return f"{seconds // 60}:{seconds % 60:02d} elapsed"


def _say(message: str) -> None:
    print(f"study: {message}", flush=True)
