"""End to end on tiny models, in process: teacher labels -> SFT -> run folder; resume; LoRA; bad input."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from distillab import tiny
from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import load_hard_labels, write_dataset, write_metadata
from distillab.data.run_record import RUN_RECORD_NAME, read_run_record
from distillab.sft import main
from distillab.sft.data import DataOptions, build_training_data
from distillab.sft.train import INIT_DIR
from tests import textbook
from tests.cli import assert_user_error, in_process_user_error, run_distillab

pytestmark = pytest.mark.slow

# A 2-layer student with the teacher's tokenizer: N = 2 x (attention 64*32*(2*2 + 2*1) + MLP 3*64*128) = 73,728
FRESH = shlex.split(
    "--student_kind fresh --student_num_layers 2 --student_hidden_size 64 --student_num_heads 2 "
    "--student_num_kv_heads 1 --student_intermediate_size 128"
)
FRESH_N = 73_728
FRESH_SHAPE = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128
)
VOCAB = 2048  # the tiny tokenizer's


def sft_argv(dataset, output_dir, *extra: str) -> list[str]:
    common = (
        "--per_device_train_batch_size 8 --learning_rate 3e-3 --logging_steps 1 --seed 0 --disable_tqdm true"
    )
    return ["--dataset_name", str(dataset), "--output_dir", str(output_dir), *shlex.split(common), *extra]


@torch.no_grad()
def cross_entropy(model, sequences) -> float:
    """Mean next-token cross-entropy (nats) over the supervised tokens, computed from the logits by hand."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ids, labels in zip(sequences["input_ids"], sequences["labels"], strict=True):
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        targets = torch.tensor(labels[1:])
        total += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / count


class HeldOutCrossEntropy(TrainerCallback):
    """The student's cross-entropy on held-out teacher completions, before and after training."""

    def __init__(self, sequences):
        self.sequences = sequences
        self.before = self.after = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = cross_entropy(model, self.sequences)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = cross_entropy(model, self.sequences)


def run_sft(argv: list[str], callbacks=()):
    from distillab.configs import parse_config
    from distillab.sft.config import DistillabSFTConfig
    from distillab.sft.train import train_student

    return train_student(parse_config(DistillabSFTConfig, argv), callbacks)


def test_teacher_labels_train_a_fresh_student(split_hard_labels, tiny_teacher, tmp_path, capsys):
    train_dir, held_out_dir = split_hard_labels
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    held_out = build_training_data(load_hard_labels(str(held_out_dir)), tokenizer, DataOptions()).dataset
    probe = HeldOutCrossEntropy(held_out)
    output_dir = tmp_path / "run"
    epochs = 4
    argv = sft_argv(train_dir, output_dir, *FRESH, "--num_train_epochs", str(epochs))
    run_sft(argv, [probe])

    record = read_run_record(output_dir)
    losses = [entry["loss"] for entry in record["loss_history"]]
    assert len(losses) == epochs * 5  # 40 rows, batch 8
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert probe.after < probe.before - 0.5, (probe.before, probe.after)

    # the run folder: a plain HF model (the trained one) + tokenizer + record + card
    student = AutoModelForCausalLM.from_pretrained(output_dir)
    assert cross_entropy(student, held_out) == pytest.approx(probe.after, abs=1e-4)
    assert AutoTokenizer.from_pretrained(output_dir).chat_template == tokenizer.chat_template
    assert "# distillab sft student" in (output_dir / "README.md").read_text()
    assert not (output_dir / INIT_DIR).exists()

    train_data = build_training_data(load_hard_labels(str(train_dir)), tokenizer, DataOptions())
    assert record["complete"] and record["method"] == "sft"
    assert record["student"]["kind"] == "fresh" and record["student"]["source"] == str(tiny_teacher)
    assert record["params_non_embedding"] == FRESH_N
    assert record["train_tokens"] == epochs * train_data.report.supervised_tokens
    assert record["tokens_processed"] == epochs * train_data.report.tokens
    # compute on every token through forward and backward (prompts too), not only on D
    mean_length = round(train_data.report.tokens / train_data.report.sequences)
    student_forward = textbook.llama_forward_flops(FRESH_SHAPE, VOCAB, mean_length)
    flops = record["flops"]
    assert flops["student_train"] == 3 * student_forward * epochs * train_data.report.tokens
    rows = load_hard_labels(str(train_dir))
    teacher_tokens = sum(rows["prompt_tokens"]) + sum(rows["completion_tokens"])
    teacher_forward = textbook.llama_forward_flops(
        tiny.MODEL_SIZES["tiny-1m"], VOCAB, round(teacher_tokens / len(rows))
    )
    assert flops["teacher_generation"] == teacher_forward * teacher_tokens
    assert record["teacher"]["model"] == str(tiny_teacher)
    assert record["details"]["data"]["truncated_rows_kept"] == 40

    # relaunching a finished run does nothing
    capsys.readouterr()
    before = (output_dir / RUN_RECORD_NAME).read_text()
    run_sft(argv)
    assert "already a complete run" in capsys.readouterr().out
    assert (output_dir / RUN_RECORD_NAME).read_text() == before

    # relaunching it with another config is refused (--overwrite starts over)
    line = in_process_user_error(main, [*argv, "--student_num_layers", "3"], capsys)
    assert f"output_dir {output_dir} holds a sft run with a different config" in line, line
    assert (output_dir / RUN_RECORD_NAME).read_text() == before


def test_a_supervised_baseline_on_the_reference_answers_at_a_token_budget(
    hard_label_dir, tiny_teacher, tmp_path
):
    """`--train_on reference --train_tokens D`: method supervised, no teacher FLOPs, D reached within 5%."""
    rows = load_hard_labels(str(hard_label_dir))
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    per_epoch = sum(
        len(tokenizer(reference + "<|im_end|>", add_special_tokens=False)["input_ids"])
        for reference in rows["reference"]
    )  # the reference answers and their end-of-turn tokens: the supervised tokens of one epoch
    budget = 6 * per_epoch
    output_dir = tmp_path / "supervised"
    run_sft(
        sft_argv(hard_label_dir, output_dir, *FRESH, "--train_on", "reference", "--train_tokens", str(budget))
    )
    record = read_run_record(output_dir)
    assert record["method"] == "supervised" and record["teacher"] is None
    assert record["flops"]["teacher_generation"] == 0
    assert abs(record["train_tokens"] - budget) <= 0.05 * budget
    assert record["training"]["global_step"] == 6 * 6  # 48 rows, batch 8: 6 steps an epoch
    assert "# distillab supervised student" in (output_dir / "README.md").read_text()


class Killed(Exception):
    pass


class KillAfterCheckpoint(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed


def test_an_interrupted_run_resumes_from_its_last_complete_checkpoint(hard_label_dir, tmp_path, capsys):
    argv = [
        *FRESH,
        *shlex.split(
            "--max_steps 6 --save_steps 2 --packing true --packing_strategy wrapped --max_length 64"
        ),
    ]
    run_sft(sft_argv(hard_label_dir, tmp_path / "reference", *argv))
    reference = read_run_record(tmp_path / "reference")

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Killed):
        run_sft(sft_argv(hard_label_dir, interrupted, *argv), [KillAfterCheckpoint(4)])
    assert read_run_record(interrupted)["complete"] is False
    assert (interrupted / "checkpoint-4").is_dir()
    # a later kill while checkpoint-6 was being written: weights on disk, trainer_state.json (written last) not
    shutil.copytree(interrupted / "checkpoint-4", interrupted / "checkpoint-6")
    (interrupted / "checkpoint-6" / "trainer_state.json").unlink()

    # the killed `small`-like run relaunched with another student: refused, the checkpoints kept
    other = sft_argv(hard_label_dir, interrupted, *argv, "--student_hidden_size", "128")
    line = in_process_user_error(main, other, capsys)
    assert "holds a sft run with a different config; pass --overwrite" in line, line
    assert read_run_record(interrupted)["complete"] is False

    run_sft(sft_argv(hard_label_dir, interrupted, *argv))
    resumed = read_run_record(interrupted)
    assert resumed["complete"] and resumed["training"]["resumed_from_step"] == 4
    assert resumed["training"]["global_step"] == 6
    assert [e["step"] for e in resumed["loss_history"]] == [1, 2, 3, 4, 5, 6]
    assert [e["loss"] for e in resumed["loss_history"]] == pytest.approx(
        [e["loss"] for e in reference["loss_history"]], rel=1e-5
    )
    assert resumed["train_tokens"] == reference["train_tokens"]


def test_a_kill_while_the_initial_student_is_written_does_not_block_relaunching(
    hard_label_dir, tmp_path, monkeypatch
):
    """The process dies while the fresh student's weights are half on disk: the relaunch builds it again."""
    from distillab.sft import students

    materialize = students.materialize_student

    def killed_mid_write(config, source, tokenizer, directory):
        materialize(config, source, tokenizer, directory)
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        raise Killed

    output_dir = tmp_path / "run"
    argv = sft_argv(hard_label_dir, output_dir, *FRESH, "--max_steps", "1")
    monkeypatch.setattr(students, "materialize_student", killed_mid_write)
    with pytest.raises(Killed):
        run_sft(argv)
    monkeypatch.undo()

    run_sft(argv)
    assert read_run_record(output_dir)["complete"]
    assert AutoModelForCausalLM.from_pretrained(output_dir).config.num_hidden_layers == 2


def test_lora_on_a_pruned_teacher_saves_merged_weights(hard_label_dir, tiny_teacher, tmp_path):
    output_dir = tmp_path / "lora"
    lora = (
        "--student_kind pruned --prune_keep_every 2 --use_peft true --lora_r 4 --lora_alpha 8 --save_merged true "
        "--lora_target_modules q_proj v_proj"
    )
    run_sft(
        sft_argv(
            hard_label_dir, output_dir, *shlex.split(lora), "--max_steps", "3", "--learning_rate", "1e-2"
        )
    )
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher)
    merged = AutoModelForCausalLM.from_pretrained(output_dir)
    assert merged.config.num_hidden_layers == 2 and not hasattr(merged, "peft_config")
    assert json.loads((output_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    # teacher layer 2 became layer 1: LoRA moved the targeted projections only
    new, old = merged.model.layers[1], teacher.model.layers[2]
    assert not torch.allclose(new.self_attn.q_proj.weight, old.self_attn.q_proj.weight)
    assert not torch.allclose(new.self_attn.v_proj.weight, old.self_attn.v_proj.weight)
    assert torch.equal(new.self_attn.k_proj.weight, old.self_attn.k_proj.weight)
    assert torch.equal(new.mlp.gate_proj.weight, old.mlp.gate_proj.weight)
    assert torch.equal(new.input_layernorm.weight, old.input_layernorm.weight)
    assert torch.equal(merged.model.embed_tokens.weight, teacher.model.embed_tokens.weight)

    record = read_run_record(output_dir)
    assert record["params_non_embedding"] == 2 * (128 * 32 * (2 * 4 + 2 * 2) + 3 * 128 * 384)
    assert record["student"]["peft"] == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert record["student"]["merged"] is True
    assert not (output_dir / INIT_DIR).exists()


def write_without_column(directory, rows, column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (directory / "data").mkdir(parents=True)
    table = pa.Table.from_pylist([{k: v for k, v in row.items() if k != column} for row in rows])
    pq.write_table(table, directory / "data" / "train-00000-of-00001.parquet")
    return directory


@pytest.fixture
def bad_inputs(tmp_path, hard_label_rows, hard_label_dir, tiny_teacher):
    """name -> (argv, expected error text)."""
    rows, metadata = hard_label_rows
    no_completion = write_without_column(tmp_path / "no-completion", rows, "completion")
    empty = tmp_path / "empty"
    write_dataset(empty, [])
    write_metadata(empty, {**metadata, "rows": 0})
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_teacher, no_template)
    (no_template / "chat_template.jinja").unlink()
    out = tmp_path / "out"
    return {
        "missing column": (sft_argv(no_completion, out, *FRESH), "lacks column(s) completion"),
        "empty dataset": (sft_argv(empty, out, *FRESH), "the hard-label dataset has no rows"),
        "max_length below every prompt": (
            sft_argv(hard_label_dir, out, *FRESH, "--max_length", "8"),
            "max_length=8 leaves no completion token",
        ),
        "no chat template": (
            sft_argv(hard_label_dir, out, "--model_name_or_path", str(no_template)),
            "has no chat template: pass --chat_template_path",
        ),
        "missing model": (
            sft_argv(hard_label_dir, out, "--model_name_or_path", str(tmp_path / "nowhere")),
            "cannot load the student's tokenizer from",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["missing column", "empty dataset", "max_length below every prompt", "no chat template", "missing model"],
)
def test_bad_input_is_a_one_line_error_before_anything_is_written(bad_inputs, case, tmp_path, capsys):
    argv, message = bad_inputs[case]
    line = in_process_user_error(main, argv, capsys)
    assert message in line, line
    assert not (tmp_path / "out").exists()


def test_cli_error_contract_in_a_subprocess(bad_inputs, tmp_path):
    argv, message = bad_inputs["missing model"]
    assert_user_error(run_distillab("sft", *argv), message)
    assert not (tmp_path / "out").exists()
