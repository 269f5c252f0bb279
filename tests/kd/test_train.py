"""End to end on tiny models, in process: one teacher pass -> a matched hard (SFT) and soft (KD) student pair;
online KD against the dense formula; the run folder."""

from __future__ import annotations

import base64
import copy
import shutil
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from distillab.data.chat import IGNORE_INDEX
from distillab.data.hardlabels import load_hard_labels, read_metadata, write_metadata
from distillab.data.run_record import read_run_record
from distillab.data.softcoder import FrequencyTable, SoftLabelCoder, row_streams
from distillab.data.softlabels import PAD_ID, SoftLabelFormat, decode_soft_labels
from distillab.kd import main
from distillab.sft.data import DataOptions, build_training_data
from distillab.tiny import MODEL_SIZES
from tests import textbook
from tests.cli import assert_user_error, in_process_user_error, run_distillab
from tests.kd.conftest import kd_argv, run_kd, write_soft_labels
from tests.kd.test_soft_labels import BAD_ROWS, corrupt
from tests.sft.test_train import FRESH, VOCAB, run_sft, sft_argv

pytestmark = pytest.mark.slow

TINY_1M, TINY_10M = MODEL_SIZES["tiny-1m"], MODEL_SIZES["tiny-10m"]


@torch.no_grad()
def teacher_student_kl(teacher, student, sequences) -> float:
    """Mean KL(teacher || student) in nats over the supervised next-token positions, computed densely."""
    total, count = 0.0, 0
    for ids, labels in zip(sequences["input_ids"], sequences["labels"], strict=True):
        positions = torch.tensor(labels[1:]) != IGNORE_INDEX
        inputs = torch.tensor([ids])
        log_q = F.log_softmax(teacher(input_ids=inputs).logits[0, :-1][positions], dim=-1)
        log_p = F.log_softmax(student(input_ids=inputs).logits[0, :-1][positions], dim=-1)
        total += (log_q.exp() * (log_q - log_p)).sum().item()
        count += int(positions.sum())
    return total / count


def test_soft_student_matches_the_teacher_better_than_its_hard_twin(
    soft_label_dir, held_out_dir, tiny_teacher, tmp_path, capsys
):
    """Done-when (issue 4): one teacher pass, two students from the same init on the same tokens, same steps.

    The tiny random teacher is flat (mean entropy ~7.0 nats of log 2048 = 7.6; its top 16 hold ~10% of the
    mass), so the stored top-16 say little about the tail: `tail_bucket` keeps the tail's mass right.
    Measured held-out KL (hard - soft) with seeds 0/1/2: 0.158/0.115/0.160 nats with tail_bucket (hard ~1.07);
    0.114/0.059/0.111 with the default renormalize. Seed 0 here; asserted margin 0.08.
    """
    schedule = ["--num_train_epochs", "4"]  # 48 rows, batch 8: 24 steps
    hard = run_sft(sft_argv(soft_label_dir, tmp_path / "hard", *FRESH, *schedule))
    soft = run_kd(kd_argv(soft_label_dir, tmp_path / "soft", *schedule, "--tail", "tail_bucket"))

    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    held_out = build_training_data(load_hard_labels(str(held_out_dir)), tokenizer, DataOptions()).dataset
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    kl = {
        name: teacher_student_kl(teacher, AutoModelForCausalLM.from_pretrained(folder).eval(), held_out)
        for name, folder in (("hard", hard), ("soft", soft))
    }
    print(f"held-out KL(teacher || student): {kl}")
    assert kl["soft"] < kl["hard"] - 0.08, kl

    hard_record, soft_record = read_run_record(hard), read_run_record(soft)
    assert soft_record["train_tokens"] == hard_record["train_tokens"] > 0  # same D
    assert soft_record["tokens_processed"] == hard_record["tokens_processed"]
    assert soft_record["training"]["global_step"] == hard_record["training"]["global_step"] == 24
    assert hard_record["method"] == "sft" and soft_record["method"] == "kd"
    settings = soft_record["details"]["kd"]
    assert (
        settings["teacher_mode"] == "offline"
        and settings["tail"] == "tail_bucket"
        and settings["soft_labels_k"] == 16
    )
    assert (settings["divergence"], settings["temperature"], settings["lam"]) == ("forward_kl", 1.0, 1.0)
    # the teacher's scoring pass (distillab label) is part of the soft student's cost: its forward ran over
    # every row's whole sequence, prompt included
    sequences = load_hard_labels(str(soft_label_dir))["input_ids"]
    scored = sum(map(len, sequences))
    teacher_forward = textbook.llama_forward_flops(TINY_1M, VOCAB, round(scored / len(sequences)))
    assert soft_record["flops"]["teacher_scoring"] == teacher_forward * scored
    assert hard_record["flops"]["teacher_scoring"] == 0
    assert {"kd", "ntp", "z"} <= set(soft_record["loss_history"][0])

    # KD relaunched into the SFT twin's folder: another config, refused without --overwrite
    line = in_process_user_error(main, kd_argv(soft_label_dir, hard, *schedule), capsys)
    assert f"output_dir {hard} holds a sft run with a different config" in line, line


class InitialStudent(TrainerCallback):
    """A copy of the student as training starts (a new model: the trainer's one has a patched forward)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = AutoModelForCausalLM.from_config(model.config).eval()
        self.model.load_state_dict(copy.deepcopy(model.state_dict()))


def test_online_kd_loss_is_the_dense_formula(soft_label_dir, tiny_teacher, small_teacher, tmp_path):
    """lam=1, tau=1: loss = mean over supervised tokens of KL(teacher || student) + 1e-4 logsumexp(student)^2.

    The teacher (--teacher, the 10M model) is not the one that generated the dataset (the 1M model)."""
    initial = InitialStudent()
    output_dir = run_kd(
        kd_argv(soft_label_dir, tmp_path / "online", "--teacher_mode", "online", "--max_steps", "1",
                "--per_device_train_batch_size", "48", "--teacher", str(small_teacher)),  # one batch: all rows
        [initial],
    )  # fmt: skip
    record = read_run_record(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    data = build_training_data(load_hard_labels(str(soft_label_dir)), tokenizer, DataOptions())
    sequences = data.dataset
    teacher = AutoModelForCausalLM.from_pretrained(small_teacher).eval()
    kl = teacher_student_kl(teacher, initial.model, sequences)
    z = mean_squared_logsumexp(initial.model, sequences)
    (logged,) = record["loss_history"]
    assert logged["kd"] == pytest.approx(kl, rel=1e-4)
    assert logged["z"] == pytest.approx(z, rel=1e-4)
    assert logged["loss"] == pytest.approx(kl + 1e-4 * z, rel=1e-4)

    assert record["method"] == "kd" and record["details"]["kd"]["teacher_mode"] == "online"
    assert record["details"]["kd"]["teacher"] == str(small_teacher)
    assert record["teacher"]["model"] == str(small_teacher)
    # the 10M teacher ran forward on every token the student processed; the 1M one generated the rows
    flops = record["flops"]
    mean_length = round(data.report.tokens / data.report.sequences)
    assert (
        flops["teacher_scoring"]
        == textbook.llama_forward_flops(TINY_10M, VOCAB, mean_length) * data.report.tokens
    )
    rows = load_hard_labels(str(soft_label_dir))
    generated = sum(rows["prompt_tokens"]) + sum(rows["completion_tokens"])
    generator_forward = textbook.llama_forward_flops(TINY_1M, VOCAB, round(generated / len(rows)))
    assert flops["teacher_generation"] == generator_forward * generated


def test_offline_kd_counts_the_model_that_scored_the_soft_labels(
    hard_label_dir, tiny_teacher, small_teacher, tmp_path
):
    """`label --model` with another model than the dataset's teacher: the record names the scorer and
    counts its forward over every scored sequence; the generation stays the dataset teacher's."""
    from distillab.generate.label import LabelConfig, label

    scored_dir = label(LabelConfig(dataset=str(hard_label_dir), model=str(small_teacher), soft_labels_k=4,
                                   output_dir=str(tmp_path / "scored-by-10m")))  # fmt: skip
    assert read_metadata(scored_dir)["soft_labels"]["teacher"] == str(small_teacher)
    record = read_run_record(run_kd(kd_argv(scored_dir, tmp_path / "kd", "--max_steps", "1")))
    assert record["teacher"]["model"] == record["details"]["kd"]["teacher"] == str(small_teacher)
    sequences = load_hard_labels(str(scored_dir))["input_ids"]
    scored = sum(map(len, sequences))
    scorer_forward = textbook.llama_forward_flops(TINY_10M, VOCAB, round(scored / len(sequences)))
    assert record["flops"]["teacher_scoring"] == scorer_forward * scored
    assert record["flops"]["generation"]["model"] == str(tiny_teacher)


@torch.no_grad()
def mean_squared_logsumexp(model, sequences) -> float:
    values = []
    for ids, labels in zip(sequences["input_ids"], sequences["labels"], strict=True):
        positions = torch.tensor(labels[1:]) != IGNORE_INDEX
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1][positions]
        values.append(torch.logsumexp(logits, dim=-1).square())
    return torch.cat(values).mean().item()


def test_a_dataset_of_the_previous_format_still_trains(legacy_soft_label_dir, tmp_path):
    """int32 ids and float16 log-probs, no stored tail, no `format` in distillab.json (format 1)."""
    output_dir = run_kd(kd_argv(legacy_soft_label_dir, tmp_path / "legacy", "--max_steps", "2"))
    record = read_run_record(output_dir)
    assert record["training"]["global_step"] == 2 and record["loss_history"][0]["kd"] > 0
    assert record["details"]["kd"]["soft_labels"]["format_version"] == 1


def _format_3_table(table: FrequencyTable) -> dict:
    """A table as format 3 stored it: the first symbol; the gaps less one and the counts less one, each as base85
    of zlib of their four little-endian byte planes."""

    def planes(values) -> str:
        data = np.asarray(values, dtype="<u4").view(np.uint8).reshape(-1, 4).T.tobytes()
        return base64.b85encode(zlib.compress(data, 9)).decode()

    return {
        "first": int(table.symbols[0]) if len(table.symbols) else 0,
        "gaps": planes(np.diff(table.symbols) - 1),
        "counts": planes(table.counts - 1),
    }


def test_a_dataset_of_the_previous_coded_format_3_still_trains(soft_label_rows, tmp_path):
    """Format 3: the rows coded with one id table, the tables in distillab.json as format 3 stored them."""
    rows, metadata = soft_label_rows
    soft = metadata["soft_labels"]
    stored = SoftLabelFormat.from_metadata(soft, "test")
    streams = []
    for row in rows:
        ids, logprobs, log_tail = decode_soft_labels(row, stored)
        next_tokens = np.asarray(row["input_ids"][row["completion_start"] :])
        slots = (ids != PAD_ID).sum(axis=1)
        streams.append(row_streams(ids, stored.quantiser.encode(logprobs), slots, next_tokens, log_tail))
    names = ("slots", "first_ids", "ids", "first_codes", "deltas_1", "deltas_4", "deltas_16", "tail_high")
    tables = {name: FrequencyTable.fit(np.concatenate([s[name] for s in streams])) for name in names}
    coder = SoftLabelCoder({("ids_1" if name == "ids" else name): table for name, table in tables.items()})
    coded = [row | {"topk_coded": coder.encode(s)} for row, s in zip(rows, streams, strict=True)]
    declared = coder.to_metadata() | {
        "tables": {name: _format_3_table(table) for name, table in tables.items()}
    }
    declared.pop("id_ranks")
    fmt3 = soft["format"] | {"version": 3, "coder": declared}
    dataset = write_soft_labels(
        tmp_path / "format-3", coded, {**metadata, "soft_labels": {**soft, "format": fmt3}}
    )
    output_dir = run_kd(kd_argv(dataset, tmp_path / "run", "--max_steps", "2", "--tail", "tail_bucket"))
    record = read_run_record(output_dir)
    assert record["training"]["global_step"] == 2 and record["loss_history"][0]["kd"] > 0
    assert record["details"]["kd"]["soft_labels"]["format_version"] == 3


def test_a_dataset_of_the_merged_format_2_still_trains(soft_label_rows, tmp_path):
    """q8 codes uncoded: uint16 ids, 8-bit codes, float32 tail columns (format 2, before formats 3 and 4 coded them)."""
    rows, metadata = soft_label_rows
    soft = metadata["soft_labels"]
    row_format = SoftLabelFormat.compact(soft["k"], soft["vocab_size"])
    stored = SoftLabelFormat.from_metadata(soft, "test")
    uncoded = []
    for row in rows:
        ids, logprobs, log_tail = decode_soft_labels(row, stored)
        slots = (ids != PAD_ID).sum(axis=1)
        hard = {c: v for c, v in row.items() if c not in stored.columns[2:]}
        uncoded.append(hard | row_format.encode(ids, logprobs, log_tail, slots))
    metadata = {**metadata, "soft_labels": {**soft, "format": row_format.to_metadata()}}
    dataset = write_soft_labels(tmp_path / "format-2", uncoded, metadata)
    output_dir = run_kd(kd_argv(dataset, tmp_path / "run", "--max_steps", "2", "--tail", "tail_bucket"))
    record = read_run_record(output_dir)
    assert record["training"]["global_step"] == 2 and record["loss_history"][0]["kd"] > 0
    assert record["details"]["kd"]["soft_labels"]["format_version"] == 2


def with_metadata(source, directory, edit):
    """A copy of the dataset folder `source` whose soft_labels metadata went through `edit`."""
    shutil.copytree(source, directory)
    metadata = read_metadata(directory)
    edit(metadata["soft_labels"])
    write_metadata(directory, metadata)
    return directory


METADATA_EDITS = {
    "format from the future": (
        lambda soft: soft["format"].update(version=5),
        "corrupt soft_labels format (format version 5 is not one this distillab reads (1, 2, 3, 4))",
    ),
    "ids wider than declared": (
        lambda soft: soft["format"].update(ids={"encoding": "bitpacked", "bits": 17}),
        "corrupt soft_labels format (ids {'encoding': 'bitpacked', 'bits': 17} do not fit vocab_size 2048",
    ),
    "no k": (lambda soft: soft.pop("k"), "corrupt soft_labels format (missing 'k')"),
    "log-probs declared float16": (
        lambda soft: soft["format"].update(logprobs={"name": "float16"}),
        "corrupt soft_labels format (format 4 codes q8 log-probs, not 'float16')",
    ),
    "frequency tables cut short": (
        lambda soft: soft["format"]["coder"].update(tables=soft["format"]["coder"]["tables"][:-5]),
        "corrupt soft_labels format (frequency tables cut short)",
    ),
    "frequency tables garbled": (
        lambda soft: soft["format"]["coder"].update(tables="~~~~~"),
        "corrupt soft_labels format (frequency tables that are not base85",
    ),
    "format 2 declared for coded rows": (
        lambda soft: soft.update(format={**soft["format"], "version": 2, "ids": {"encoding": "uint16"}}),
        "column topk_ids is None, but distillab.json declares format 2",
    ),
}


@pytest.fixture
def bad_inputs(tmp_path, legacy_soft_label_rows, hard_label_dir, soft_label_dir, tiny_teacher):
    """name -> (argv, expected error text)."""
    rows, metadata = legacy_soft_label_rows
    datasets = {
        case: write_soft_labels(
            tmp_path / case.replace(" ", "-"), [*rows[:7], corrupt(rows[7], case)], metadata
        )
        for case in ("nan log-prob", "id outside the vocabulary", "too few positions")
    }
    other_tokenizer = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_teacher, other_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(other_tokenizer)
    tokenizer.add_tokens(["<|tool|>"])
    tokenizer.save_pretrained(other_tokenizer)
    out = tmp_path / "out"
    edited = {
        case: with_metadata(soft_label_dir, tmp_path / case.replace(" ", "-"), edit)
        for case, (edit, _) in METADATA_EDITS.items()
    }
    return {
        **{
            case: (kd_argv(edited[case], out), f"{edited[case] / 'distillab.json'}: {message}")
            for case, (_, message) in METADATA_EDITS.items()
        },
        **{
            case: (kd_argv(dataset, out), f"soft labels row {rows[7]['id']}: {BAD_ROWS[case]}")
            for case, dataset in datasets.items()
        },
        "soft_labels_k above stored": (
            kd_argv(soft_label_dir, out, "--soft_labels_k", "32"),
            "--soft_labels_k 32 is more than the 16 soft labels stored per position",
        ),
        "no soft labels": (kd_argv(hard_label_dir, out), "has no complete soft labels"),
        "student with another tokenizer": (
            kd_argv(
                soft_label_dir,
                out,
                "--student_kind",
                "pretrained",
                "--model_name_or_path",
                str(other_tokenizer),
            ),
            "differs from the soft labels' teacher",
        ),
        "online teacher with another tokenizer": (
            kd_argv(soft_label_dir, out, "--teacher_mode", "online", "--teacher", str(other_tokenizer)),
            f"differs from the teacher's ({other_tokenizer})",
        ),
    }


BAD_INPUTS = [
    "nan log-prob",
    "id outside the vocabulary",
    "too few positions",
    "soft_labels_k above stored",
    "no soft labels",
    "student with another tokenizer",
    "online teacher with another tokenizer",
    *METADATA_EDITS,
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_one_line_error_before_anything_is_written(bad_inputs, case, tmp_path, capsys):
    argv, message = bad_inputs[case]
    line = in_process_user_error(main, argv, capsys)
    assert message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["nan log-prob", "student with another tokenizer"])
def test_cli_error_contract_in_a_subprocess(bad_inputs, case, tmp_path):
    argv, message = bad_inputs[case]
    assert_user_error(run_distillab("kd", *argv), message)
    assert not (tmp_path / "out").exists()
