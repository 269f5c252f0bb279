"""Summary statistics written into dataset cards and metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def length_stats(values: Sequence[int]) -> dict[str, float]:
    """mean, p50, p95 and max of a list of token counts (zeros when empty)."""
    if len(values) == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(array.mean()), 2),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "max": int(array.max()),
    }


def duplicate_count(texts: Sequence[str]) -> int:
    """How many texts repeat an earlier one."""
    return sum(count - 1 for count in Counter(texts).values())
