"""What `auto` means for a device or a weights dtype, for every stage that loads a model; vLLM's resources on
the CPU or a GPU (generate, label and evaluate's lm-eval backend)."""

from __future__ import annotations

from typing import Any

from distillab.errors import EngineError

# vLLM on CPU: gpu_memory_utilization would mean "fraction of host RAM", so the KV cache gets a fixed size.
CPU_KV_CACHE_GIB = 2.0


def resolve_device(device: str = "auto") -> str:
    """`auto` -> "cuda" when a CUDA GPU is visible, else "cpu"; any other device as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` on CPU -> "float32"; otherwise as given (`auto` elsewhere: the checkpoint's own dtype).

    bf16 is much slower than fp32 on CPUs without AVX512-BF16, and vLLM's CPU backend is only exact in fp32.
    """
    return "float32" if dtype == "auto" and device == "cpu" else dtype


def vllm_resources(
    dtype: str, kv_cache_gib: float | None, gpu_memory_utilization: float | None = None
) -> dict[str, Any]:
    """vLLM's dtype and memory arguments. With no GPU visible (vLLM's CPU backend): `auto` dtype is fp32 and the
    KV cache is `CPU_KV_CACHE_GIB` unless `kv_cache_gib` says otherwise."""
    device = resolve_device()
    kv_cache_gib = kv_cache_gib or (CPU_KV_CACHE_GIB if device == "cpu" else None)
    resources: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
    if kv_cache_gib:
        resources["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
    elif gpu_memory_utilization is not None:
        resources["gpu_memory_utilization"] = gpu_memory_utilization
    return resources


def require_vllm(flag: str) -> None:
    """A one-line EngineError naming `flag` (e.g. `--engine vllm`) when vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EngineError(f"{flag} needs vLLM: pip install 'distillab[gpu]' (GPU) or 'distillab[cpu]' (CPU)")
