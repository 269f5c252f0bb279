"""The small shared helpers every stage uses: `auto` device/dtype, vLLM resources, markdown tables, UTC
timestamps."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from distillab import devices
from distillab.fileio import utc_timestamp
from distillab.markdown import markdown_table

GIB = 1024**3


@pytest.mark.parametrize("cuda, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_device_is_the_gpu_when_one_is_visible(monkeypatch, cuda, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert devices.resolve_device("auto") == expected
    assert devices.resolve_device() == expected
    assert devices.resolve_device("cuda:1") == "cuda:1"  # an explicit device is never second-guessed


@pytest.mark.parametrize(
    "dtype, device, expected",
    [
        ("auto", "cpu", "float32"),  # bf16 is slow on CPUs without AVX512-BF16
        ("auto", "cuda", "auto"),  # the checkpoint's own dtype
        ("bfloat16", "cpu", "bfloat16"),
        ("float16", "cuda", "float16"),
    ],
)
def test_auto_dtype_is_float32_on_cpu_only(dtype, device, expected):
    assert devices.resolve_dtype(dtype, device) == expected


@pytest.mark.parametrize(
    "device, dtype, kv_cache_gib, gpu_memory_utilization, expected",
    [
        ("cpu", "auto", None, 0.9, {"dtype": "float32", "kv_cache_memory_bytes": 2 * GIB}),
        ("cpu", "bfloat16", 0.5, None, {"dtype": "bfloat16", "kv_cache_memory_bytes": GIB // 2}),
        ("cuda", "auto", None, 0.9, {"dtype": "auto", "gpu_memory_utilization": 0.9}),
        ("cuda", "auto", None, None, {"dtype": "auto"}),  # the scorer leaves vLLM's own default
        ("cuda", "float16", 4.0, 0.9, {"dtype": "float16", "kv_cache_memory_bytes": 4 * GIB}),
    ],
)
def test_vllm_resources(monkeypatch, device, dtype, kv_cache_gib, gpu_memory_utilization, expected):
    monkeypatch.setattr(devices, "resolve_device", lambda: device)
    assert devices.vllm_resources(dtype, kv_cache_gib, gpu_memory_utilization) == expected


def test_markdown_table():
    table = markdown_table(["field", "value"], [("rows", 48), ("rate", "2.08%")])
    assert table == "| field | value |\n|---|---|\n| rows | 48 |\n| rate | 2.08% |"


def test_markdown_table_without_rows():
    assert markdown_table(["a", "b", "c"], []) == "| a | b | c |\n|---|---|---|"


def test_utc_timestamp_is_iso_seconds_in_utc():
    stamp = utc_timestamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp)
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(stamp)
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
