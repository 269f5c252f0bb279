"""Tiny student run folders for the evaluate tests: an HF folder (or a LoRA adapter folder) plus a
`distillab_run.json` written through the run-folder API, as `distillab sft`/`kd` leave them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillab import tiny


@dataclass
class FakeTrainingConfig:
    """Stands in for the resolved training config a run folder records."""

    learning_rate: float = 1e-3


def write_run_record(
    directory: Path, method: str, hard_label_dir: Path, train_tokens: int, model_dir: Path | None = None
) -> None:
    """A finished `method` run record in `directory` for the model in `model_dir` (default: `directory`),
    trained on `hard_label_dir`."""
    from transformers import AutoConfig, AutoTokenizer

    from distillab.data.hardlabels import read_metadata
    from distillab.data.run_record import RUN_RECORD_NAME, StudentRun, TeacherPass, run_record
    from distillab.data.tokenizers import tokenizer_fingerprint
    from distillab.fileio import atomic_write_json

    distilled = method != "supervised"
    metadata = read_metadata(hard_label_dir) if distilled else None
    teacher = metadata["teacher"]["model"] if distilled else None
    run = StudentRun(
        method=method,
        student={"kind": "fresh", "source": str(directory)},
        model_config=AutoConfig.from_pretrained(model_dir or directory),
        train_tokens=train_tokens,
        tokens_processed=2 * train_tokens,
        mean_sequence_length=64.0,
        loss_history=[{"step": 1, "epoch": 1.0, "loss": 5.0}],
        config=FakeTrainingConfig(),
        dataset=str(hard_label_dir),
        dataset_metadata=metadata,
        tokenizer_fingerprint=tokenizer_fingerprint(AutoTokenizer.from_pretrained(directory)),
        generation=TeacherPass(teacher, None, 3 * train_tokens, 64.0) if distilled else None,
        scoring=TeacherPass(teacher, None, train_tokens, 64.0) if method == "kd" else None,
    )
    atomic_write_json(directory / RUN_RECORD_NAME, run_record(run))


def write_student(
    directory: Path, tokenizer_dir: Path, method: str, hard_label_dir: Path, train_tokens: int, seed: int
) -> Path:
    """A random tiny Llama saved as a finished `method` run."""
    tiny.build_llama(directory, tokenizer_dir, "tiny-1m", seed=seed)
    write_run_record(directory, method, hard_label_dir, train_tokens)
    return directory


def write_lora_student(directory: Path, base_dir: Path, hard_label_dir: Path, train_tokens: int) -> Path:
    """A LoRA adapter folder (adapter + tokenizer, no full weights) over `base_dir`, as an sft run with
    --use_peft saves it; its adapter weights are non-zero so that it differs from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    peft_model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(directory)
    write_run_record(directory, "sft", hard_label_dir, train_tokens, model_dir=base_dir)
    return directory
