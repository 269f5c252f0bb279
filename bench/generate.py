"""Completion tokens/s of `distillab generate` vs the raw engine, same teacher, prompts and settings.

    python -m bench.generate [--model assets/SmolLM2-135M-Instruct] [--engines vllm transformers]

Each measurement runs in a fresh process (vLLM wants one engine per process); times include engine start-up
(model load, vLLM warm-up) for both sides, as a user experiences them. Prints a table and the ratio
distillab / raw (target >= 0.9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import SMOLLM2, bench_parser, hand_back, measure, print_table

SIDES = ("raw", "distillab")
SYSTEM = "You are a helpful assistant. Work the problem out step by step, then give the final answer."


def prompts(n: int) -> list[str]:
    import reasoning_gym

    return [item["question"] for item in reasoning_gym.create_dataset("basic_arithmetic", size=n, seed=42)]


def raw_transformers(model: str, texts: list[str], max_new_tokens: int, batch_size: int) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    tokens = 0
    for begin in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[begin : begin + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            out = lm.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new = out[:, batch["input_ids"].shape[1] :]
        eos = tokenizer.eos_token_id
        tokens += sum(
            int((row == eos).nonzero()[0, 0]) + 1 if (row == eos).any() else len(row) for row in new
        )
    return tokens


def raw_vllm(model: str, texts: list[str], max_new_tokens: int, batch_size: int) -> int:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    llm = LLM(model, dtype="float32", enforce_eager=True, max_model_len=2048, kv_cache_memory_bytes=2 * 2**30)
    ids = [TokensPrompt(prompt_token_ids=tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    outputs = llm.generate(ids, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
    llm.llm_engine.engine_core.shutdown()
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def run_raw(engine: str, model: str, n: int, max_new_tokens: int, batch_size: int) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts(n)
    ]
    start = time.perf_counter()
    tokens = {"transformers": raw_transformers, "vllm": raw_vllm}[engine](
        model, texts, max_new_tokens, batch_size
    )
    return {"tokens": tokens, "seconds": time.perf_counter() - start}


def run_distillab(engine: str, model: str, n: int, max_new_tokens: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "distillab.cli",
            "generate",
            "--model",
            model,
            "--engine",
            engine,
            "--generator",
            "basic_arithmetic",
            "--num_prompts",
            str(n),
            "--seed",
            "42",
            "--system_prompt",
            SYSTEM,
            "--max_new_tokens",
            str(max_new_tokens),
            "--batch_size",
            str(batch_size),
            "--max_model_len",
            "2048",
            "--enforce_eager",
            "--output_dir",
            out,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        stats = json.loads((Path(out) / "distillab.json").read_text())
        return {"tokens": round(stats["completion_tokens"]["mean"] * stats["rows"]), "seconds": seconds}


def main() -> None:
    parser = bench_parser(__doc__, SIDES)
    parser.add_argument("--model", default=str(SMOLLM2))
    parser.add_argument("--engines", nargs="+", default=["vllm", "transformers"])
    parser.add_argument("--engine", help="the engine of one measured side (internal)")
    parser.add_argument("--num_prompts", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    settings = (args.model, args.num_prompts, args.max_new_tokens, args.batch_size)
    if args.side:
        hand_back((run_raw if args.side == "raw" else run_distillab)(args.engine, *settings))
        return
    print(
        f"{args.num_prompts} prompts, max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
        f"model={args.model}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    sizes = dict(num_prompts=args.num_prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    rows = []
    for engine in args.engines:
        raw, ours = (
            measure("bench.generate", side, engine=engine, model=args.model, **sizes) for side in SIDES
        )
        raw_rate, our_rate = raw["tokens"] / raw["seconds"], ours["tokens"] / ours["seconds"]
        rows.append(
            [engine, raw["tokens"], f"{raw['seconds']:.1f}", f"{raw_rate:.1f}", ours["tokens"],
             f"{ours['seconds']:.1f}", f"{our_rate:.1f}", f"{our_rate / raw_rate:.2f}"]
        )  # fmt: skip
    print_table(["engine", "raw tok", "raw s", "raw tok/s", "distillab tok", "s", "tok/s", "ratio"], rows)


if __name__ == "__main__":
    main()
