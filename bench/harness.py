"""What every benchmark shares: each measured side runs in a fresh interpreter and hands back one JSON line;
sides alternate and the results print as a table, ratio beside the baseline.

A bench re-runs its own module with `--side NAME` (and the options the side needs): the child measures, then
calls `hand_back(result)`; the parent reads that last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from distillab.assets import DEFAULT_DIR as SMOLLM2_DIR

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
SMOLLM2 = REPO / SMOLLM2_DIR


def bench_parser(doc: str, sides: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A bench's parser: its docstring as help, and the hidden `--side` its fresh processes get."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sides:
        parser.add_argument("--side", choices=sides, help=argparse.SUPPRESS)
    return parser


def measure(module: str, side: str, **options: object) -> dict:
    """Run `python -m module --side SIDE --option value ...` in a fresh interpreter from the repository root;
    return the JSON object it hands back."""
    argv = ["--side", side]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"{module} {shlex.join(argv)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def hand_back(result: dict) -> None:
    """A measured side's last stdout line: its result as JSON, read by `measure`."""
    print(json.dumps(result), flush=True)


def alternate(
    sides: Sequence[str], repeats: int, run: Callable[[str], dict], show: Callable[[int, str, dict], str]
) -> dict[str, list[dict]]:
    """Run every side `repeats` times, alternating (so drift in the machine's load hits both alike)."""
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for repeat in range(repeats):
        for side in sides:
            result = run(side)
            results[side].append(result)
            print(f"  run {repeat + 1} {side:<14} {show(repeat, side, result)}", flush=True)
    return results


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns right-aligned to their widest cell (the first left-aligned); format numbers before."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        first, *rest = zip(row, widths, strict=True)
        print("  ".join([first[0].ljust(first[1]), *(cell.rjust(width) for cell, width in rest)]))


def training_clock(warmup_steps: int = 0):
    """A TrainerCallback timing the training loop in wall and process CPU seconds, from the end of step
    `warmup_steps` (0: the first step's start; on a GPU the first steps also pay CUDA's start-up) to the last
    step's end; `steps` is how many steps it timed. On a GPU the clock waits for the queued work at both ends."""
    from transformers import TrainerCallback

    class TrainingClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not warmup_steps:
                self.start = _clock_reading()

        def on_step_end(self, args, state, control, **kwargs):
            if warmup_steps and state.global_step == warmup_steps:
                self.start = _clock_reading()

        def on_train_end(self, args, state, control, **kwargs):
            end = _clock_reading()
            self.wall, self.cpu = (end[i] - self.start[i] for i in range(2))
            self.steps = state.global_step - warmup_steps

    return TrainingClock()


def _clock_reading() -> tuple[float, float]:
    """(wall, process CPU) seconds, once the GPU (if in use) has finished its queued work."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def tiny_teacher() -> Path:
    """The tests' byte-level BPE tokenizer and a ~10M-parameter Llama (random weights), built once."""
    from distillab import tiny

    cache = CACHE / "bench-scale"
    teacher = cache / "teacher-10m"
    if not (teacher / "config.json").is_file():
        tiny.build_tokenizer(cache / "tokenizer")
        tiny.build_llama(teacher, cache / "tokenizer", "tiny-10m")
    return teacher


def tiny_training_assets() -> tuple[Path, Path]:
    """(hard-label dataset, student folder), built once under .cache/bench-sft: the tests' byte-level BPE
    tokenizer, a ~1M-parameter teacher's greedy hard labels on 256 arithmetic prompts (64 new tokens), and a
    ~10M-parameter student."""
    from distillab import tiny
    from distillab.generate.config import GenerateConfig
    from distillab.generate.run import generate

    cache = CACHE / "bench-sft"
    dataset, student = cache / "hard-labels", cache / "student-10m"
    if not (student / "config.json").is_file():
        tiny.build_tokenizer(cache / "tokenizer")
        tiny.build_llama(cache / "teacher", cache / "tokenizer", "tiny-1m")
        tiny.build_llama(student, cache / "tokenizer", "tiny-10m", seed=1)
    generate(
        GenerateConfig(
            model=str(cache / "teacher"), engine="transformers", generator="basic_arithmetic", num_prompts=256,
            max_new_tokens=64, batch_size=32, output_dir=str(dataset),
        )
    )  # fmt: skip
    return dataset, student
