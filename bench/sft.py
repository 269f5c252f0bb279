"""Training tokens/s of `distillab sft` vs a bare TRL SFTTrainer script: same student, data, batch and steps.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.sft [--dataset DIR --student DIR] [--steps 40] [--batch 8]

Each run is a fresh process; the two sides alternate, --repeats times. The distillab side is `distillab sft`'s
own entry (`train_student` on the parsed CLI config); the bare side hands TRL the hard labels as
conversational prompt/completion pairs and lets it tokenise, CPU settings spelled out. A callback on both
sides clocks the training loop (first to last step: data preparation, model loading and saving excluded) in
wall time and in process CPU time; tokens are the non-padding tokens trained on (distillab's
`tokens_processed`, TRL's `num_tokens` metric: both the attention-mask sum).

Throughput is reported per wall second and per CPU second. On a shared machine the CPU-time figure is the
stable one (with OMP_NUM_THREADS=1 a run's CPU time is its work; wall time also counts waiting for the
cores). Target: distillab / TRL >= 0.95 (overhead <= 5%).

Without --dataset/--student, offline assets are built once (`bench.harness.tiny_training_assets`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.harness import (
    alternate,
    bench_parser,
    hand_back,
    measure,
    print_table,
    tiny_training_assets,
    training_clock,
)

SIDES = ("bare TRL", "distillab sft")


def run_distillab_side(args) -> dict:
    from distillab.configs import parse_config
    from distillab.sft.config import DistillabSFTConfig
    from distillab.sft.train import train_student

    argv = [
        "--dataset_name", str(args.dataset), "--student_kind", "pretrained", "--model_name_or_path",
        str(args.student), "--output_dir", args.output_dir, *common_config(args),
    ]  # fmt: skip
    clock = training_clock()
    output_dir = train_student(parse_config(DistillabSFTConfig, argv), [clock])
    tokens = json.loads((output_dir / "distillab_run.json").read_text())["tokens_processed"]
    return {"tokens": tokens, "wall": clock.wall, "cpu": clock.cpu}


def run_bare_trl_side(args) -> dict:
    """TRL's SFTTrainer as its docs show it, with the CPU settings distillab picks by itself."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    files = sorted(str(p) for p in Path(args.dataset, "data").glob("*.parquet"))
    rows = datasets.load_dataset("parquet", data_files=files, split="train")
    pairs = rows.map(
        lambda messages: {"prompt": messages[:-1], "completion": messages[-1:]},
        input_columns="messages",
        remove_columns=rows.column_names,
    )
    config = SFTConfig(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch, max_steps=args.steps,
        max_length=args.max_length, learning_rate=1e-3, seed=0, logging_steps=args.steps, save_strategy="no",
        disable_tqdm=True, bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
    )  # fmt: skip
    clock = training_clock()
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.student),
        args=config,
        train_dataset=pairs,
        processing_class=AutoTokenizer.from_pretrained(args.student),
        callbacks=[clock],
    )
    trainer.train()
    trainer.save_model()
    tokens = next(log["num_tokens"] for log in reversed(trainer.state.log_history) if "num_tokens" in log)
    return {"tokens": int(tokens), "wall": clock.wall, "cpu": clock.cpu}


def common_config(args) -> list[str]:
    return [
        "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.steps),
        "--max_length", str(args.max_length), "--learning_rate", "1e-3", "--seed", "0",
        "--logging_steps", str(args.steps), "--save_strategy", "no", "--disable_tqdm", "true",
    ]  # fmt: skip


def report(args, results: dict[str, list[dict]]) -> None:
    print(
        f"\nstudent {args.student}\ndata {args.dataset}\n{args.steps} steps x batch {args.batch}, "
        f"max_length {args.max_length}, {args.repeats} runs per side (median; best in brackets)"
    )
    rates, rows = {}, []
    for side, runs in results.items():
        wall = [r["tokens"] / r["wall"] for r in runs]
        cpu = [r["tokens"] / r["cpu"] for r in runs]
        rates[side] = (statistics.median(wall), max(wall), statistics.median(cpu), max(cpu))
        median_wall, best_wall, median_cpu, best_cpu = rates[side]
        rows.append(
            [
                side,
                runs[0]["tokens"],
                f"{median_wall:.0f} [{best_wall:.0f}]",
                f"{median_cpu:.0f} [{best_cpu:.0f}]",
            ]
        )
    print_table(["", "tokens", "tok/s (wall)", "tok/s (CPU)"], rows)
    ours, theirs = rates["distillab sft"], rates["bare TRL"]
    print(
        f"\ndistillab / TRL tokens/s: CPU time {ours[2] / theirs[2]:.3f} (best {ours[3] / theirs[3]:.3f}), "
        f"wall {ours[0] / theirs[0]:.3f} (best {ours[1] / theirs[1]:.3f}); target >= 0.95"
    )


def main() -> None:
    parser = bench_parser(__doc__, SIDES)
    parser.add_argument("--dataset", type=Path, help="a hard-label dataset folder (default: built offline)")
    parser.add_argument("--student", type=Path, help="a student model folder with a chat template")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        hand_back((run_distillab_side if args.side == "distillab sft" else run_bare_trl_side)(args))
        return
    if args.dataset is None or args.student is None:
        args.dataset, args.student = tiny_training_assets()

    def run(side: str) -> dict:
        with tempfile.TemporaryDirectory() as output_dir:
            return measure(
                "bench.sft", side, output_dir=output_dir, dataset=args.dataset, student=args.student,
                steps=args.steps, batch=args.batch, max_length=args.max_length,
            )  # fmt: skip

    results = alternate(
        SIDES,
        args.repeats,
        run,
        lambda repeat, side, r: (
            f"{r['tokens'] / r['wall']:>6.0f} tok/s wall, {r['tokens'] / r['cpu']:>6.0f} tok/s CPU"
        ),
    )
    report(args, results)


if __name__ == "__main__":
    main()
