"""Offline top-k KD vs SFT, side by side: training step time, soft-label storage, loss-only memory.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.kd [--steps 30] [--batch 8] [--repeats 3] [--k 64]
    python -m bench.kd --device cuda --dataset DIR --student DIR [--train_flags '--gradient_checkpointing false']

1. Step time. `distillab kd` (offline, top-k soft labels) and `distillab sft` train the same student on the same
   sequences with the same batch, each side in a fresh process, alternating, --repeats times. A callback clocks
   the training loop (data preparation, model loading and saving excluded; batch collation included) in wall
   time and process CPU time; the figure is seconds per step, median over runs. Target: KD / SFT <= 1.15.
   Setups: "tiny" (bench.sft's offline assets: ~10M student, 2,048-token vocabulary, 256 rows), and
   "smollm2" (a fresh "tiny" student with SmolLM2's 49,152-token vocabulary on the demo's hard labels) when
   outputs/demo/generate and assets/SmolLM2-135M-Instruct exist (`distillab demo` builds them). With
   --dataset DIR (a `distillab label` output) and --student DIR (a model folder): that setup alone.
   --device cuda trains on the GPU with distillab's GPU defaults (bf16, gradient checkpointing; --train_flags
   adds flags to both sides) and leaves the first --warmup_steps out of the clock; it also reports the tokens
   processed per second and the MFU: the run record's exact training FLOPs (3 x the student's forward FLOPs
   per token, LM head and attention included, x the tokens processed) per second over --peak_tflops.
2. Storage. Each setup's dataset is scored once with `distillab label --soft_labels_k K`; the label stage
   records the on-disk bytes its soft-label columns add per scored token (`bytes_per_token` in distillab.json).
   Target at k = 64: <= 300 bytes/token.
3. Loss-only memory and time: bench.kd_loss_memory, run as is.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path

import torch

from bench import kd_loss_memory
from bench.harness import (
    CACHE,
    REPO,
    SMOLLM2,
    alternate,
    bench_parser,
    hand_back,
    measure,
    tiny_training_assets,
    training_clock,
)
from distillab.devices import resolve_device

KD_CACHE = CACHE / "bench-kd"
SIDES = ("sft", "kd")
DEMO_HARD_LABELS = REPO / "outputs" / "demo" / "generate"


def setups(k: int, dataset: str | None, student: str | None) -> dict[str, dict[str, str]]:
    """name -> dataset with top-k soft labels, student arguments."""
    if dataset:
        return {
            "given": {
                "dataset": dataset,
                "student": f"--student_kind pretrained --model_name_or_path {student}",
            }
        }
    dataset, student = tiny_training_assets()
    found = {"tiny": {"dataset": str(soft_labels(dataset, "tiny", k)), "student": f"--student_kind pretrained "
                      f"--model_name_or_path {student}"}}  # fmt: skip
    if (DEMO_HARD_LABELS / "distillab.json").is_file() and (SMOLLM2 / "config.json").is_file():
        found["smollm2"] = {
            "dataset": str(soft_labels(DEMO_HARD_LABELS, "smollm2", k)),
            "student": f"--student_kind fresh --student_preset tiny --model_name_or_path {SMOLLM2}",
        }
    return found


def soft_labels(dataset: Path, name: str, k: int) -> Path:
    """`distillab label` on `dataset` at top-k, into the bench cache (once)."""
    from distillab.generate.label import LabelConfig, label

    return label(
        LabelConfig(dataset=str(dataset), soft_labels_k=k, output_dir=str(KD_CACHE / f"{name}-top{k}"))
    )


def run_training(args) -> dict:
    """One side, in this process: train and clock the loop."""
    from distillab.configs import parse_config

    argv = [
        "--dataset_name", args.dataset, "--output_dir", args.output_dir, *shlex.split(args.student_args),
        "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.steps),
        "--max_length", str(args.max_length), "--learning_rate", "1e-3", "--seed", "0",
        "--logging_steps", str(args.steps), "--save_strategy", "no", "--disable_tqdm", "true",
        *(["--use_cpu", "true"] if args.device == "cpu" else []), *shlex.split(args.train_flags),
    ]  # fmt: skip
    clock = training_clock(args.warmup_steps)
    if args.side == "kd":
        from distillab.kd.config import DistillabKDConfig
        from distillab.kd.train import train_kd

        output_dir = train_kd(parse_config(DistillabKDConfig, argv), [clock])
    else:
        from distillab.sft.config import DistillabSFTConfig
        from distillab.sft.train import train_student

        output_dir = train_student(parse_config(DistillabSFTConfig, argv), [clock])
    record = json.loads((output_dir / "distillab_run.json").read_text())
    processed_per_step = record["tokens_processed"] / record["training"]["global_step"]
    return {"steps": clock.steps, "tokens": record["train_tokens"], "wall": clock.wall, "cpu": clock.cpu,
            "processed_per_step": processed_per_step,
            "train_flops_per_step": 3 * record["flops"]["student_forward"]["per_token"] * processed_per_step}  # fmt: skip


def step_times(name: str, setup: dict[str, str], args) -> None:
    def run(side: str) -> dict:
        with tempfile.TemporaryDirectory() as output_dir:
            return measure(
                "bench.kd", side, output_dir=output_dir, dataset=setup["dataset"], student_args=setup["student"],
                steps=args.steps, batch=args.batch, max_length=args.max_length, device=args.device,
                warmup_steps=args.warmup_steps, train_flags=args.train_flags,
            )  # fmt: skip

    def show(repeat: int, side: str, result: dict) -> str:
        wall, cpu = (result[clock] / result["steps"] * 1e3 for clock in ("wall", "cpu"))
        return f"{name}: {wall:7.1f} ms/step wall, {cpu:7.1f} ms/step CPU"

    runs = alternate(SIDES, args.repeats, run, show)
    per_step = {
        side: {
            clock: statistics.median(r[clock] / r["steps"] for r in side_runs) for clock in ("wall", "cpu")
        }
        for side, side_runs in runs.items()
    }
    assert runs["sft"][0]["tokens"] == runs["kd"][0]["tokens"], "SFT and KD trained on different tokens"
    print(
        f"{name}: {args.steps} steps x batch {args.batch}, D = {runs['kd'][0]['tokens']:,} supervised tokens both; "
        f"median ms/step SFT {per_step['sft']['wall'] * 1e3:.1f} wall / {per_step['sft']['cpu'] * 1e3:.1f} CPU, "
        f"KD {per_step['kd']['wall'] * 1e3:.1f} wall / {per_step['kd']['cpu'] * 1e3:.1f} CPU"
    )
    print(
        f"{name}: KD / SFT step time {per_step['kd']['cpu'] / per_step['sft']['cpu']:.3f} (CPU), "
        f"{per_step['kd']['wall'] / per_step['sft']['wall']:.3f} (wall); target <= 1.15"
    )
    if args.device == "cuda":
        for side, side_runs in runs.items():
            first, wall = side_runs[0], per_step[side]["wall"]
            print(
                f"{name}: {side} on the GPU: {first['processed_per_step'] / wall:,.0f} tokens/s processed, "
                f"MFU {first['train_flops_per_step'] / wall / (args.peak_tflops * 1e12):.1%} "
                f"(exact training FLOPs over a {args.peak_tflops:g} TFLOP/s peak; "
                f"{args.warmup_steps} warm-up steps left out)"
            )


def storage(name: str, setup: dict[str, str], k: int) -> None:
    from distillab.data.hardlabels import read_metadata

    soft = read_metadata(setup["dataset"])["soft_labels"]
    verdict = "meets" if soft["bytes_per_token"] <= 300 else "ABOVE"
    print(
        f"{name}: top-{soft['k']} soft labels, vocab {soft['vocab_size']:,}, {soft['logprob_dtype']} log-probs, "
        f"{soft['scored_tokens']:,} scored tokens: {soft['bytes_per_token']:.1f} bytes/token on disk "
        f"({verdict} the <= 300 target at k = {k})"
    )


def main() -> None:
    parser = bench_parser(__doc__, SIDES)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=64, help="soft labels stored per position")
    parser.add_argument("--skip_memory", action="store_true", help="leave out bench.kd_loss_memory")
    parser.add_argument(
        "--dataset", help="a dataset with soft labels (`distillab label`): measure on it alone"
    )
    parser.add_argument("--student", help="with --dataset: the student model folder")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where students train"
    )
    parser.add_argument(
        "--warmup_steps", type=int, help="steps left out of the clock (default: 5 on cuda, 0 on cpu)"
    )
    parser.add_argument(
        "--peak_tflops", type=float, default=989.0,
        help="cuda: the GPU's peak for the MFU (default: H100/H200 SXM dense bf16, 989 TFLOP/s)",
    )  # fmt: skip
    parser.add_argument("--train_flags", default="", help="more `distillab sft`/`kd` flags for both sides")
    parser.add_argument("--output_dir", help=argparse.SUPPRESS)
    parser.add_argument("--student_args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        hand_back(run_training(args))
        return
    args.device = resolve_device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible")
    if args.warmup_steps is None:
        args.warmup_steps = 5 if args.device == "cuda" else 0
    if args.steps <= args.warmup_steps:
        parser.error(f"--steps must be more than the {args.warmup_steps} warm-up steps")
    if bool(args.dataset) != bool(args.student):
        parser.error("--dataset and --student go together")

    found = setups(args.k, args.dataset, args.student)
    print("\n== 1. training step: offline top-k KD vs SFT (same student, batch, sequences)")
    for name, setup in found.items():
        step_times(name, setup, args)
    print(f"\n== 2. soft-label storage at k = {args.k} (distillab label)")
    for name, setup in found.items():
        storage(name, setup, args.k)
    if not args.skip_memory:
        print("\n== 3. loss only: bench.kd_loss_memory")
        kd_loss_memory.main([])


if __name__ == "__main__":
    main()
