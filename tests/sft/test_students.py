"""Students: layer selection, pruning against the teacher's weights, fresh configs, tokenizer checks."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from distillab.errors import ConfigError
from distillab.sft.students import (
    fresh_student_config,
    layers_to_keep,
    load_student_tokenizer,
    materialize_student,
    prune_layers,
    student_source,
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(every=2), [0, 2, 4, 6, 8]),
        (dict(every=3), [0, 3, 6, 9]),
        (dict(first=3), [0, 1, 2]),
        (dict(last=2), [8, 9]),
        (dict(first=2, last=2), [0, 1, 8, 9]),
    ],
)
def test_layers_to_keep(kwargs, expected):
    assert layers_to_keep(10, **kwargs) == expected


@pytest.mark.parametrize("kwargs", [dict(every=1), dict(first=6, last=4), dict(first=12)])
def test_keeping_every_layer_is_refused(kwargs):
    with pytest.raises(ConfigError, match="would keep all 10 layers"):
        layers_to_keep(10, **kwargs)


def test_pruned_model_holds_the_kept_teacher_layers(tiny_teacher, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_teacher)
    pruned = prune_layers(AutoModelForCausalLM.from_pretrained(tiny_teacher), [0, 3])
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)

    assert reloaded.config.num_hidden_layers == 2
    for new, old in [(0, 0), (1, 3)]:
        new_layer, old_layer = reloaded.model.layers[new], teacher.model.layers[old]
        assert new_layer.self_attn.layer_idx == new
        for (name, a), (_, b) in zip(
            new_layer.state_dict().items(), old_layer.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
    assert torch.equal(reloaded.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert reloaded(ids).logits.shape == (1, 4, teacher.config.vocab_size)


def test_fresh_config_from_a_preset_with_overrides(tiny_teacher):
    base = AutoConfig.from_pretrained(tiny_teacher)  # hidden 128, MLP 384: ratio 3
    config = fresh_student_config(
        base, "tiny", num_layers=2, hidden_size=64, num_heads=2, num_kv_heads=None, intermediate_size=None
    )
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 2)
    assert config.num_key_value_heads == 2  # the preset's
    assert config.intermediate_size == 384  # the preset's, not recomputed
    assert config.head_dim == 32
    assert config.vocab_size == base.vocab_size and config.model_type == base.model_type

    sized = fresh_student_config(base, num_layers=3, hidden_size=96, num_heads=3)
    assert sized.num_key_value_heads == 3
    assert sized.intermediate_size == 288  # the teacher's ratio, a multiple of 8


@pytest.mark.parametrize(
    ("preset", "sizes", "message"),
    [
        (None, dict(num_layers=2), "needs --student_preset or --student_hidden_size, --student_num_heads"),
        ("huge", {}, "unknown --student_preset 'huge'"),
        (None, dict(num_layers=2, hidden_size=100, num_heads=3), "must be divisible by 3 heads"),
        (
            None,
            dict(num_layers=2, hidden_size=96, num_heads=4, num_kv_heads=3),
            "4 heads by 3 key/value heads",
        ),
    ],
)
def test_bad_fresh_sizes(tiny_teacher, preset, sizes, message):
    with pytest.raises(ConfigError, match=message):
        fresh_student_config(AutoConfig.from_pretrained(tiny_teacher), preset, **sizes)


def student_config(**overrides):
    fields = dict(
        student_kind="fresh",
        model_name_or_path=None,
        model_revision=None,
        trust_remote_code=False,
        seed=7,
        student_preset=None,
        student_num_layers=2,
        student_hidden_size=64,
        student_num_heads=2,
        student_num_kv_heads=1,
        student_intermediate_size=128,
        prune_keep_every=None,
        prune_keep_first=0,
        prune_keep_last=0,
    )
    return SimpleNamespace(**{**fields, **overrides})


def test_materialized_students_are_plain_hf_folders(tiny_teacher, tmp_path):
    tokenizer = load_student_tokenizer(str(tiny_teacher))
    first = materialize_student(student_config(), str(tiny_teacher), tokenizer, tmp_path / "a")
    again = materialize_student(student_config(), str(tiny_teacher), tokenizer, tmp_path / "b")
    a, b = AutoModelForCausalLM.from_pretrained(first), AutoModelForCausalLM.from_pretrained(again)
    assert a.config.num_hidden_layers == 2 and a.config.num_key_value_heads == 1
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))  # seeded
    assert load_student_tokenizer(str(first)).chat_template == tokenizer.chat_template

    pruned = materialize_student(
        student_config(student_kind="pruned", prune_keep_every=2),
        str(tiny_teacher),
        tokenizer,
        tmp_path / "c",
    )
    assert AutoModelForCausalLM.from_pretrained(pruned).config.num_hidden_layers == 2


def test_student_source_defaults_to_the_teacher():
    metadata = {"teacher": {"model": "org/teacher"}}
    assert student_source(student_config(), metadata) == "org/teacher"
    assert student_source(student_config(model_name_or_path="org/base"), metadata) == "org/base"
    with pytest.raises(ConfigError, match="does not name its teacher"):
        student_source(student_config(), None)


def test_tokenizer_errors_and_chat_template_path(tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="cannot load the student's tokenizer from '/no/such/model'"):
        load_student_tokenizer("/no/such/model")

    bare = tmp_path / "bare"
    shutil.copytree(tokenizer_dir, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ConfigError, match="has no chat template: pass --chat_template_path"):
        load_student_tokenizer(str(bare))

    template = tmp_path / "chatml.jinja"
    template.write_text((tokenizer_dir / "chat_template.jinja").read_text())
    assert (
        load_student_tokenizer(str(bare), chat_template_path=str(template)).chat_template
        == template.read_text()
    )
