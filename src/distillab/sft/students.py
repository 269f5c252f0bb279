"""Students: a pretrained model, a fresh model shaped like the teacher, or a layer-pruned copy of the teacher.

Fresh and pruned students are first written as normal HF folders (`materialize_student`, main process only),
then every student is loaded the same way (`load_student`, `from_pretrained`): under DeepSpeed ZeRO-3 that
partitions the weights as they load (transformers' HfDeepSpeedConfig hook), which building a model by hand
inside a distributed run would not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillab.errors import ConfigError, first_line
from distillab.modelfiles import load_causal_lm

# Size presets for fresh students (Llama-style; the vocabulary is the teacher's).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_layers=4, hidden_size=128, num_heads=4, num_kv_heads=2, intermediate_size=384),
    "small": dict(num_layers=8, hidden_size=256, num_heads=8, num_kv_heads=4, intermediate_size=768),
    "medium": dict(num_layers=12, hidden_size=384, num_heads=6, num_kv_heads=2, intermediate_size=1024),
    "large": dict(num_layers=16, hidden_size=576, num_heads=9, num_kv_heads=3, intermediate_size=1536),
}
SIZE_FIELDS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size")


def student_source(config: Any, dataset_metadata: dict | None) -> str:
    """The model a student comes from: --model_name_or_path, else (fresh/pruned) the dataset's teacher."""
    if config.model_name_or_path:
        return config.model_name_or_path
    teacher = (dataset_metadata or {}).get("teacher", {}).get("model")
    if not teacher:
        raise ConfigError(
            f"--student_kind {config.student_kind} needs --model_name_or_path: the dataset's metadata "
            "(distillab.json) does not name its teacher"
        )
    return teacher


def load_student_tokenizer(
    source: str,
    revision: str | None = None,
    chat_template_path: str | None = None,
    trust_remote_code: bool = False,
):
    """The student's tokenizer, with `chat_template_path` applied; a missing chat template is an error."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the student's tokenizer from {source!r}: {first_line(err)}") from None
    if chat_template_path:
        path = Path(chat_template_path)
        if not path.is_file():
            raise ConfigError(f"--chat_template_path {chat_template_path} does not exist")
        tokenizer.chat_template = path.read_text()
    if not tokenizer.chat_template:
        raise ConfigError(
            f"the student's tokenizer ({source}) has no chat template: pass --chat_template_path with a .jinja "
            "template (e.g. the teacher's) whose special tokens the tokenizer already has"
        )
    return tokenizer


def fresh_student_config(base_config, preset: str | None = None, **sizes: int | None):
    """`base_config` (the teacher's) resized: a preset, then any of SIZE_FIELDS given explicitly."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown --student_preset {preset!r}; choose from {', '.join(PRESETS)}")
    unknown = set(sizes) - set(SIZE_FIELDS)
    if unknown:
        raise TypeError(f"unknown student sizes: {sorted(unknown)}")
    resolved = {**PRESETS.get(preset, {}), **{k: v for k, v in sizes.items() if v is not None}}
    missing = [
        f"--student_{name}" for name in ("num_layers", "hidden_size", "num_heads") if name not in resolved
    ]
    if missing:
        raise ConfigError(f"a fresh student needs --student_preset or {', '.join(missing)}")
    layers, hidden, heads = resolved["num_layers"], resolved["hidden_size"], resolved["num_heads"]
    kv_heads = resolved.get("num_kv_heads", heads)
    if hidden % heads or heads % kv_heads:
        raise ConfigError(
            f"fresh student: hidden size {hidden} must be divisible by {heads} heads, "
            f"and {heads} heads by {kv_heads} key/value heads"
        )
    ratio = base_config.intermediate_size / base_config.hidden_size
    fields = base_config.to_dict()
    fields.update(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=resolved.get("intermediate_size") or 8 * round(hidden * ratio / 8),
    )
    if "head_dim" in fields:
        fields["head_dim"] = hidden // heads
    if fields.get("layer_types"):
        pattern = fields["layer_types"]
        fields["layer_types"] = [pattern[i % len(pattern)] for i in range(layers)]
    return type(base_config).from_dict(fields)


def layers_to_keep(num_layers: int, every: int | None = None, first: int = 0, last: int = 0) -> list[int]:
    """Layer indices a pruned student keeps: 0, k, 2k, ... (`every`), or the first and/or last n."""
    if every:
        keep = list(range(0, num_layers, every))
    else:
        keep = sorted(set(range(min(first, num_layers))) | set(range(max(num_layers - last, 0), num_layers)))
    if len(keep) == num_layers:
        raise ConfigError(f"the pruned student would keep all {num_layers} layers of the teacher: prune more")
    return keep


def prune_layers(model, keep: list[int]):
    """Keep only the decoder layers `keep` (in order), renumbering them; the config follows."""
    import torch

    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(f"cannot prune a {model.config.model_type} model: no list of decoder layers found")
    decoder.layers = torch.nn.ModuleList(layers[i] for i in keep)
    for new_index, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return model


def materialize_student(config: Any, source: str, tokenizer, directory: Path) -> Path:
    """Write a fresh or pruned student (weights + `tokenizer`) as an HF folder; returns `directory`."""
    import torch
    from transformers import AutoModelForCausalLM

    with _zero3_disabled():
        if config.student_kind == "fresh":
            base = _base_config(source, config)
            student_config = fresh_student_config(
                base,
                config.student_preset,
                **{name: getattr(config, f"student_{name}") for name in SIZE_FIELDS},
            )
            torch.manual_seed(config.seed)
            model = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)
        else:
            model = load_causal_lm(
                source,
                "the pruned student's teacher",
                revision=config.model_revision,
                trust_remote_code=config.trust_remote_code,
                dtype=torch.float32,
            )
            keep = layers_to_keep(
                model.config.num_hidden_layers,
                config.prune_keep_every,
                config.prune_keep_first,
                config.prune_keep_last,
            )
            prune_layers(model, keep)
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_student(path: str | Path, config: Any, revision: str | None = None):
    """Load a student for training (float32 unless `model_init_kwargs` says otherwise)."""
    import torch

    kwargs = {"dtype": torch.float32, **(config.model_init_kwargs or {})}
    return load_causal_lm(
        path, "the student", revision=revision, trust_remote_code=config.trust_remote_code, **kwargs
    )


def lora_config(config: Any):
    """peft's LoraConfig from the config's LoRA fields, or None without --use_peft."""
    if not config.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def merge_lora_adapter(
    base: str | Path, adapter_dir: Path, output_dir: Path, config: Any, revision: str | None = None
):
    """Merge a trained LoRA adapter into its base model and save the result as a plain HF model."""
    from peft import PeftModel

    with _zero3_disabled():
        model = load_student(base, config, revision=revision)
        PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().save_pretrained(output_dir)


def _base_config(source: str, config: Any):
    """The config a fresh student is resized from."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            source, revision=config.model_revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the student model from {source!r}: {first_line(err)}") from None


@contextlib.contextmanager
def _zero3_disabled() -> Iterator[None]:
    """Build a model on one process while a ZeRO-3 run is set up: no zero.Init partitioning (which would
    wait for the other processes). transformers keeps the active DeepSpeed config in a module-level weakref."""
    from transformers.integrations import deepspeed

    saved = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = saved
