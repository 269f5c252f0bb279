"""Completion tokens/s of `distillab generate` vs the raw engine: same teacher, prompts and sampling (greedy), at
several prompt counts, side by side in one run.

    python -m bench.generate [--model assets/SmolLM2-135M-Instruct|tiny] [--engines vllm] [--num_prompts 64 512]

Each side is one fresh process, timed by this parent from its start to its exit (interpreter, imports, engine
start-up and shutdown included, as a user experiences them): raw is a script that gives the engine every prompt
at once (vLLM) or in --batch_size batches (transformers); distillab is `distillab generate` with the engine's
default --batch_size unless one is given. Prints one row per engine and prompt count with the ratio
distillab / raw (targets with vLLM: >= 0.9 at 64 prompts, >= 0.97 at 512).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import SMOLLM2, alternate, bench_parser, hand_back, measure, print_table, tiny_teacher

SIDES = ("raw", "distillab")
SYSTEM = "You are a helpful assistant. Work the problem out step by step, then give the final answer."
MAX_MODEL_LEN = 2048  # or the model's context when shorter


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


def max_model_len(model: str) -> int:
    from transformers import AutoConfig

    return min(MAX_MODEL_LEN, AutoConfig.from_pretrained(model).max_position_embeddings)


def raw_vllm(model: str, texts: list[str], max_new_tokens: int, batch_size: int) -> int:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    llm = LLM(
        model,
        dtype="float32",
        enforce_eager=True,
        max_model_len=max_model_len(model),
        kv_cache_memory_bytes=2 * 2**30,  # distillab's default on CPU (devices.CPU_KV_CACHE_GIB)
    )
    ids = [TokensPrompt(prompt_token_ids=tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    outputs = llm.generate(ids, SamplingParams(temperature=0.0, max_tokens=max_new_tokens), use_tqdm=False)
    llm.llm_engine.engine_core.shutdown()
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def raw_side(engine: str, model: str, n: int, max_new_tokens: int, batch_size: int) -> dict:
    """The measured raw script: chat-formatted prompts through the bare engine; hands back its token count."""
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
    run = {"transformers": raw_transformers, "vllm": raw_vllm}[engine]
    return {"tokens": run(model, texts, max_new_tokens, batch_size)}


def distillab_command(engine: str, model: str, n: int, max_new_tokens: int, batch_size: int | None, out: str):
    command = [
        sys.executable, "-m", "distillab.cli", "generate", "--model", model, "--engine", engine,
        "--generator", "basic_arithmetic", "--num_prompts", str(n), "--seed", "42", "--system_prompt", SYSTEM,
        "--max_new_tokens", str(max_new_tokens), "--max_model_len", str(max_model_len(model)), "--enforce_eager",
        "--output_dir", out,
    ]  # fmt: skip
    return command + (["--batch_size", str(batch_size)] if batch_size else [])


def run(side: str, engine: str, model: str, n: int, max_new_tokens: int, batch_size: int | None) -> dict:
    """One measured side in a fresh process: {tokens, seconds} from its start to its exit."""
    start = time.perf_counter()
    if side == "raw":
        raw_batch = batch_size or 16  # transformers only: the distillab engine's default
        options = dict(engine=engine, model=model, num_prompts=n, max_new_tokens=max_new_tokens)
        tokens = measure("bench.generate", "raw", batch_size=raw_batch, **options)["tokens"]
        return {"tokens": tokens, "seconds": time.perf_counter() - start}
    with tempfile.TemporaryDirectory() as out:
        command = distillab_command(engine, model, n, max_new_tokens, batch_size, out)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        seconds = time.perf_counter() - start
        stats = json.loads((Path(out) / "distillab.json").read_text())
    return {"tokens": round(stats["completion_tokens"]["mean"] * stats["rows"]), "seconds": seconds}


def main() -> None:
    parser = bench_parser(__doc__, SIDES)
    parser.add_argument(
        "--model",
        default=str(SMOLLM2),
        help="teacher folder (default: `distillab assets smollm2`), or `tiny`: a ~10M-parameter random Llama",
    )
    parser.add_argument("--engines", nargs="+", default=["vllm"], choices=["vllm", "transformers"])
    parser.add_argument("--engine", help="the engine of one measured side (internal)")
    parser.add_argument("--num_prompts", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, help="distillab --batch_size (default: the engine's)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.side:
        (n,) = args.num_prompts
        hand_back(raw_side(args.engine, args.model, n, args.max_new_tokens, args.batch_size))
        return
    if args.model == "tiny":
        args.model = str(tiny_teacher())
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"no model at {args.model}: run `distillab assets smollm2` or pass --model DIR")
    print(
        f"prompts {args.num_prompts}, max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}, "
        f"model={args.model}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    rows = []
    for engine in args.engines:
        for n in args.num_prompts:
            print(f"{engine}, {n} prompts:", flush=True)
            results = alternate(
                SIDES,
                args.repeats,
                lambda side: run(side, engine, args.model, n, args.max_new_tokens, args.batch_size),  # noqa: B023
                lambda _, __, r: f"{r['tokens']} tokens in {r['seconds']:.1f} s",
            )
            raw, ours = (min(results[side], key=lambda r: r["seconds"]) for side in SIDES)
            raw_rate, our_rate = raw["tokens"] / raw["seconds"], ours["tokens"] / ours["seconds"]
            rows.append(
                [engine, n, raw["tokens"], f"{raw['seconds']:.1f}", f"{raw_rate:.1f}", ours["tokens"],
                 f"{ours['seconds']:.1f}", f"{our_rate:.1f}", f"{our_rate / raw_rate:.2f}"]
            )  # fmt: skip
    print_table(
        ["engine", "prompts", "raw tok", "raw s", "raw tok/s", "distillab tok", "s", "tok/s", "ratio"], rows
    )


if __name__ == "__main__":
    main()
