"""What `auto` means for a device or a weights dtype, for every stage that loads a model."""

from __future__ import annotations


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
