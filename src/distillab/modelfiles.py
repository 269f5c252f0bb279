"""Model folders every stage loads (teachers, students): checked file by file, loaded with one-line errors.

A local model folder whose weights are truncated or overwritten, or whose config.json is not JSON, is a
`DataError` naming the file and what is wrong with it, before anything is computed; a model that cannot be
loaded at all (missing, offline Hub id, unknown architecture) is one naming the model. Hub ids are not checked
here: the Hub client verifies what it downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillab.errors import DataError, first_line
from distillab.fileio import read_json


def check_model_files(source: str | Path) -> None:
    """Raise a `DataError` naming the first corrupted file of a local model folder (config, safetensors)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(source)
    if not folder.is_dir():
        return
    for name in ("config.json", "adapter_config.json"):
        if (folder / name).is_file():
            read_json(folder / name)
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise DataError(f"{weights} is corrupted: {first_line(err)}") from None


def load_causal_lm(source: str | Path, what: str, **kwargs: Any):
    """`AutoModelForCausalLM.from_pretrained(source, **kwargs)` for `what` ("the teacher", "the student"),
    after `check_model_files`; a failure is a `DataError` naming `what` and `source`."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    check_model_files(source)
    try:
        return AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise DataError(f"cannot load {what} from {str(source)!r}: {first_line(err)}") from None
