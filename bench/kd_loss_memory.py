"""Benchmark: peak memory and time of one KD loss step (forward + backward), loss only, on synthetic logits.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.kd_loss_memory [--vocab 32768] [--length 2048] [--device cuda]

Variants, each on the same float32 student logits [batch, length, vocab] (requires_grad), all tokens but the
last supervised:

    naive_dense     forward KL the textbook way (TRL GKD style): full log_softmax of student and teacher,
                    F.kl_div(log_target=True) over [B, T, V], masked mean; no chunking
    chunked_dense   distillab kd_loss with dense teacher logits, same maths (lam=1, tau=1, z_loss=0)
    sparse_topk     distillab kd_loss with stored top-k targets (k=64, default config)
    cross_entropy   F.cross_entropy on the labels: the plain SFT loss, for reference

Memory method: every variant runs in a fresh subprocess. After the inputs are allocated and written, the
baseline is the process's peak resident set size so far (getrusage ru_maxrss, checked to equal the current RSS
from /proc/self/statm); after one forward + backward the peak is read again. The difference is the step's peak
memory above its inputs, including the gradient w.r.t. the student logits that every variant must produce.
ru_maxrss is the kernel's high-water mark, so short-lived temporaries count. With --device cuda the tensors live
on the GPU and the same difference is read from PyTorch's allocator: its peak allocated bytes during the step
(reset after the inputs) minus the bytes allocated before it. Then the step is timed again (best of --repeats,
gradients reset in between; on the GPU after its queued work has finished).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
import torch.nn.functional as F

from bench.harness import bench_parser, hand_back, measure, print_table
from distillab.data.chat import IGNORE_INDEX
from distillab.kd.losses import KDLossConfig, kd_loss

VARIANTS = ("naive_dense", "chunked_dense", "sparse_topk", "cross_entropy")
MIB = 2**20


def _current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _inputs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """The variant's inputs, made on the CPU (the same numbers on every device) and moved to --device."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.length, args.vocab)
    student = torch.randn(shape, generator=generator).mul_(2)
    labels = torch.randint(0, args.vocab, shape[:2], generator=generator)
    labels[:, -1] = IGNORE_INDEX
    inputs = {"student": student, "labels": labels}
    if args.side in ("naive_dense", "chunked_dense"):
        inputs["teacher"] = torch.randn(shape, generator=generator).mul_(2)
    if args.side == "sparse_topk":
        inputs["topk_ids"] = torch.randint(
            0, args.vocab, (*shape[:2], args.k), generator=generator, dtype=torch.int32
        )
        raw = torch.randn((*shape[:2], args.k), generator=generator)
        inputs["topk_logprobs"] = torch.log_softmax(raw, dim=-1) + torch.log(torch.tensor(0.9))  # 10% tail
    inputs = {name: tensor.to(args.device) for name, tensor in inputs.items()}
    inputs["student"].requires_grad_()
    return inputs


def _memory_reading(device: str) -> tuple[int, int]:
    """(peak, current) bytes: the process's resident set on the CPU, PyTorch's allocated bytes on a GPU."""
    if device == "cpu":
        return _peak_rss(), _current_rss()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()


def _timed_step(variant: str, inputs: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(loss, seconds) of one step; `_step`'s `loss.item()` waits for the GPU's work."""
    if inputs["student"].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = _step(variant, inputs)
    return loss, time.perf_counter() - start


def _step(variant: str, inputs: dict[str, torch.Tensor]) -> float:
    student, labels = inputs["student"], inputs["labels"]
    if variant == "naive_dense":
        student_log_probs = F.log_softmax(student, dim=-1)
        teacher_log_probs = F.log_softmax(inputs["teacher"], dim=-1)
        per_token = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
        mask = labels != IGNORE_INDEX
        loss = (per_token * mask).sum() / mask.sum()
    elif variant == "chunked_dense":
        config = KDLossConfig(lam=1.0, temperature=1.0, z_loss=0.0)
        loss = kd_loss(student, labels, teacher_logits=inputs["teacher"], config=config).loss
    elif variant == "sparse_topk":
        loss = kd_loss(
            student,
            labels,
            teacher_topk_ids=inputs["topk_ids"],
            teacher_topk_logprobs=inputs["topk_logprobs"],
        ).loss
    else:
        loss = F.cross_entropy(student.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    return loss.item()


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    inputs = _inputs(args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline, current = _memory_reading(args.device)
    loss, first = _timed_step(args.side, inputs)
    peak = _memory_reading(args.device)[0] - baseline
    seconds = []
    for _ in range(args.repeats):
        inputs["student"].grad = None
        seconds.append(_timed_step(args.side, inputs)[1])
    result = {"variant": args.side, "loss": loss, "peak": peak, "slack": baseline - current}
    hand_back(result | {"first_s": first, "best_s": min(seconds, default=first)})


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__, VARIANTS)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--k", type=int, default=64, help="top-k slots of the sparse variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after the measured one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tensors live")
    args = parser.parse_args(argv)
    if args.side:
        _child(args)
        return

    names = ("vocab", "length", "batch", "k", "repeats", "threads", "device")
    options = {name: getattr(args, name) for name in names}
    logits_mib = args.batch * args.length * args.vocab * 4 / MIB
    where = "CUDA GPU" if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(
        f"loss-only step, batch {args.batch} x length {args.length} x vocab {args.vocab}, float32, "
        f"{where}; one student logits tensor = {logits_mib:.0f} MiB"
    )
    results = {variant: measure("bench.kd_loss_memory", variant, **options) for variant in VARIANTS}
    print_table(
        ["variant", "loss", "peak MiB", "x logits", "first s", "best s"],
        [
            [variant, f"{r['loss']:.4f}", f"{r['peak'] / MIB:.0f}", f"{r['peak'] / MIB / logits_mib:.2f}",
             f"{r['first_s']:.3f}", f"{r['best_s']:.3f}"]
            for variant, r in results.items()
        ],
    )  # fmt: skip
    for variant, result in results.items():
        if result["slack"] > 16 * MIB:
            print(
                f"  warning: {variant}: the RSS high-water mark was {result['slack'] / MIB:.0f} MiB above the baseline"
            )
    memory = results["chunked_dense"]["peak"] / results["naive_dense"]["peak"]
    dense_time = results["chunked_dense"]["best_s"] / results["naive_dense"]["best_s"]
    sparse_time = results["sparse_topk"]["best_s"] / results["cross_entropy"]["best_s"]
    print(f"chunked / naive dense: peak memory {memory:.3f}x (target <= 0.25), time {dense_time:.2f}x")
    print(f"sparse top-{args.k} / cross-entropy: time {sparse_time:.2f}x (target <= 1.15)")


if __name__ == "__main__":
    main()
