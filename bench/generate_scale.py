"""Completion tokens/s of `distillab generate --ray` with 1 vs 2 teacher replicas on a local Ray cluster
(127.0.0.1), transformers teacher, same prompts and settings.

    python -m bench.generate_scale [--model DIR] [--num_prompts 64] [--max_new_tokens 64] [--repeats 1]

The default teacher is a ~10M-parameter tiny Llama built once under .cache/bench-scale. One Ray head serves
every run; each run is a fresh `distillab generate` process and its time includes pipeline and engine start-up,
as a user experiences them. Prints a table and the ratio 2 replicas / 1 replica (at best 2 with two free cores).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from bench.harness import alternate, bench_parser, hand_back, measure, print_table, tiny_teacher

SIDES = ("1-replica", "2-replicas")


def run_side(side: str, model: str, ray_address: str, n: int, max_new_tokens: int, batch_size: int) -> dict:
    from distillab.data.hardlabels import load_hard_labels

    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "distillab.cli",
            "generate",
            "--model",
            model,
            "--engine",
            "transformers",
            "--generator",
            "basic_arithmetic",
            "--num_prompts",
            str(n),
            "--max_new_tokens",
            str(max_new_tokens),
            "--batch_size",
            str(batch_size),
            "--ray",
            "--ray_address",
            ray_address,
            "--replicas",
            side.split("-")[0],
            "--output_dir",
            out,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        tokens = sum(load_hard_labels(out)["completion_tokens"])
    return {"tokens": tokens, "seconds": seconds}


@contextlib.contextmanager
def local_ray() -> Iterator[str]:
    """A one-node Ray cluster on this machine for the measured runs (both sides join it); yields its address."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def main() -> None:
    parser = bench_parser(__doc__, SIDES)
    parser.add_argument("--model", help="teacher folder (default: the tiny 10M Llama)")
    parser.add_argument("--ray_address", help="the Ray head of the measured runs (internal)")
    parser.add_argument("--num_prompts", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sizes = dict(num_prompts=args.num_prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    if args.side:
        hand_back(run_side(args.side, args.model, args.ray_address, *sizes.values()))
        return
    model = args.model or str(tiny_teacher())
    print(
        f"{args.num_prompts} prompts, max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
        f"model={model}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    with local_ray() as address:
        results = alternate(
            SIDES,
            args.repeats,
            lambda side: measure("bench.generate_scale", side, model=model, ray_address=address, **sizes),
            lambda _, __, r: f"{r['tokens']} tokens in {r['seconds']:.1f} s",
        )
    rates = {side: [r["tokens"] / r["seconds"] for r in runs] for side, runs in results.items()}
    best = {side: max(values) for side, values in rates.items()}
    rows = [[side, results[side][0]["tokens"], f"{best[side]:.1f}"] for side in SIDES]
    print_table(["replicas", "tokens", "best tok/s"], rows)
    print(f"ratio 2 replicas / 1 replica: {best['2-replicas'] / best['1-replica']:.2f}")


if __name__ == "__main__":
    main()
