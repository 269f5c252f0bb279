"""The models under evaluation: names, folders (LoRA adapters included), run records, loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab.data.run_record import read_run_record
from distillab.errors import ConfigError, DistillabError, first_line
from distillab.fileio import read_json
from distillab.modelfiles import check_model_files, load_causal_lm

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class ModelSpec:
    """One model to evaluate. `base` is set for a LoRA adapter folder (its base model)."""

    name: str
    path: str
    method: str  # teacher | sft | kd | supervised | unknown
    base: str | None = None
    run: dict[str, Any] = field(default_factory=dict)  # the student's distillab_run.json

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def adapter_rank(self) -> int:
        """A LoRA adapter's rank `r` (its adapter_config.json)."""
        return read_json(Path(self.path) / ADAPTER_CONFIG)["r"]

    @property
    def tokenizer_source(self) -> str:
        """The adapter folder when it carries a tokenizer (trainers save one there), else the base model."""
        if self.base is None or any((Path(self.path) / name).is_file() for name in TOKENIZER_FILES):
            return self.path
        return self.base


def split_name(entry: str) -> tuple[str | None, str]:
    """`name=path` -> (name, path); a plain path -> (None, path)."""
    name, sep, path = entry.partition("=")
    if sep and name and "/" not in name:
        return name, path
    return None, entry


def teacher_spec(entry: str) -> ModelSpec:
    """The teacher: a local folder (checked) or a Hub id (loaded later)."""
    name, path = split_name(entry)
    local = Path(path)
    if local.exists() or path.startswith((".", "/", "~")):
        _check_model_folder(local, "teacher")
    return ModelSpec(name or local.name, path, "teacher", base=_adapter_base(local))


def student_spec(entry: str) -> ModelSpec:
    """A student run folder: must exist, hold a model or an adapter, and be a finished run if it has a record."""
    name, path = split_name(entry)
    folder = Path(path)
    _check_model_folder(folder, "student")
    run = read_run_record(folder) or {}
    if run and not run.get("complete"):
        raise DistillabError(
            f"student {path} is an unfinished training run (complete=false in distillab_run.json)"
        )
    return ModelSpec(
        name or folder.name, path, run.get("method", "unknown"), base=_adapter_base(folder), run=run
    )


def resolve_models(teacher: str, students: list[str]) -> list[ModelSpec]:
    """Teacher first, then the students, with unique names; every folder checked before any compute."""
    specs = [teacher_spec(teacher), *(student_spec(entry) for entry in students)]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"two models are named {duplicates[0]!r}: name them with `name=path` (e.g. hard={duplicates[0]})"
        )
    return specs


def _check_model_folder(folder: Path, role: str) -> None:
    if not folder.is_dir():
        raise DistillabError(f"{role} model folder not found: {folder}")
    if not (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file():
        raise DistillabError(f"{role} folder {folder} holds no model (no config.json or {ADAPTER_CONFIG})")
    check_model_files(folder)


def _adapter_base(folder: Path) -> str | None:
    """The base model of a LoRA adapter folder (None for a full model)."""
    if (folder / "config.json").is_file() or not (folder / ADAPTER_CONFIG).is_file():
        return None
    base = read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not base:
        raise DistillabError(
            f"{folder}/{ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)"
        )
    return base


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec.tokenizer_source)
    except (OSError, ValueError) as err:
        raise DistillabError(
            f"cannot load the tokenizer of {spec.name} ({spec.tokenizer_source}): {first_line(err)}"
        ) from None


def load_model(spec: ModelSpec, device: str, dtype: str):
    """The model in eval mode on `device`; a LoRA adapter is merged into its base for fast scoring."""
    import torch

    model = load_causal_lm(spec.base or spec.path, f"model {spec.name}", dtype=getattr(torch, dtype))
    try:
        if spec.is_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.path).merge_and_unload()
    except (OSError, ValueError) as err:
        raise DistillabError(f"cannot load model {spec.name} ({spec.path}): {first_line(err)}") from None
    return model.to(device).eval()
