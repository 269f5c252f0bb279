"""FLOPs: App. H.1 against an explicit fixed-aspect model, exact counts, Eq. 9 and a run's breakdown."""

from __future__ import annotations

import numpy as np
import pytest

from distillab.errors import ConfigError
from distillab.scaling.flops import (
    SCENARIOS,
    aspect_omega,
    distillation_flops,
    exact_flops_per_token,
    forward_flops_per_token,
    get_scenario,
    model_forward_flops,
    non_embedding_params,
    run_flops,
    student_tokens_for_budget,
)


def paper_shaped_config(
    n_layers: int, rho: int = 128, head_dim: int = 128, vocab: int = 32768, n_ctx: int = 4096
):
    """A model of the paper's family: d_model = rho n_layers, MHA, gated MLP with d_ffn = 8/3 d_model."""
    d_model = rho * n_layers
    return {
        "model_type": "llama",
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": d_model // head_dim,
        "intermediate_size": d_model * 8 // 3,
        "vocab_size": vocab,
        "max_position_embeddings": n_ctx,
    }


def test_paper_omega_is_twelve():
    assert aspect_omega() == pytest.approx(12.0)
    assert aspect_omega(gqa_ratio=4) == pytest.approx(2 + 0.5 + 8)


@pytest.mark.parametrize("n_layers", [12, 24, 48])
def test_fixed_aspect_formula_matches_an_explicit_model(n_layers):
    """F(N) of App. H.1 is the exact count of a model with d_model = 128 n_layers and omega = 12."""
    config = paper_shaped_config(n_layers)
    n = non_embedding_params(config)
    assert n == pytest.approx(12 * n_layers * config["hidden_size"] ** 2, rel=1e-3)  # 8/3 d rounds down
    exact = exact_flops_per_token(config, n_ctx=4096)
    assert float(forward_flops_per_token(n)) == pytest.approx(exact, rel=2e-3)


def test_fixed_aspect_formula_terms():
    """The three terms of F(N): 2N, attention 2 n_layers n_ctx d_model, lm-head 2 n_vocab d_model."""
    rho, omega, n_layers = 128.0, 12.0, 20
    d_model = rho * n_layers
    n = omega * n_layers * d_model**2
    expected = 2 * n + 2 * n_layers * 4096 * d_model + 2 * 32768 * d_model
    assert float(forward_flops_per_token(n, rho=rho, omega=omega)) == pytest.approx(expected, rel=1e-12)
    assert float(forward_flops_per_token(n, n_ctx=0, n_vocab=0)) == pytest.approx(2 * n, rel=1e-12)


def test_exact_count_of_a_gqa_llama_config_by_hand():
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 96,
        "vocab_size": 100,
        "max_position_embeddings": 32,
    }
    attention = 64 * 16 * (4 + 4 + 2 + 2)  # q, o: 4 heads; k, v: 2 heads
    mlp = 3 * 64 * 96
    assert non_embedding_params(config) == 2 * (attention + mlp)
    context = 2 * 2 * (32 + 1) * 4 * 16  # 2 flops x layers x (n_ctx + 1) x heads x head_dim
    assert exact_flops_per_token(config) == 2 * 2 * (attention + mlp) + context + 2 * 64 * 100
    assert (
        exact_flops_per_token(config, n_ctx=8)
        == 2 * 2 * (attention + mlp) + 2 * 2 * 9 * 4 * 16 + 2 * 64 * 100
    )


def test_gpt2_style_names_and_ungated_mlp():
    config = {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 100,
        "n_positions": 16,
    }
    assert non_embedding_params(config) == 2 * (4 * 64 * 64 + 2 * 64 * 256)  # n_inner defaults to 4 d


def test_config_object_with_attributes():
    class Config:
        model_type = "qwen2"
        hidden_size, num_hidden_layers, num_attention_heads = 32, 1, 2
        num_key_value_heads, intermediate_size, vocab_size, max_position_embeddings = 1, 64, 50, 8

    assert non_embedding_params(Config()) == 32 * 16 * (2 + 2 + 1 + 1) + 3 * 32 * 64


def test_exact_count_needs_the_shape():
    with pytest.raises(ConfigError, match="no 'num_hidden_layers'"):
        exact_flops_per_token({"hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10})


def test_model_forward_flops_methods():
    config = paper_shaped_config(8)
    n = non_embedding_params(config)
    exact = model_forward_flops(config)
    assert (exact.method, exact.params, exact.per_token) == ("exact", n, exact_flops_per_token(config))
    assert model_forward_flops(config, method="approx_2n").per_token == 2 * n
    assert model_forward_flops(params=1e9, method="approx_2n").to_dict() == {
        "per_token": 2e9,
        "method": "approx_2n",
        "params": 1e9,
    }
    paper = model_forward_flops(config, method="paper_fixed_aspect")
    assert paper.per_token == pytest.approx(float(forward_flops_per_token(n, n_ctx=4096, n_vocab=32768)))
    with pytest.raises(ConfigError, match="needs a model config"):
        model_forward_flops(params=1e9, method="exact")
    with pytest.raises(ConfigError, match="unknown FLOPs method 'fast'"):
        model_forward_flops(config, method="fast")


@pytest.mark.parametrize(
    ("scenario", "delta_logits", "delta_pretraining"),
    [
        ("best", 0, 0),
        ("teacher-inference", 1, 0),
        ("teacher-pretraining", 0, 1),
        ("teacher_pretraining_inference", 1, 1),
    ],
)
def test_eq9_scenarios(scenario, delta_logits, delta_pretraining):
    n_s, d_s, n_t, d_t = 1e9, 2e10, 7e9, 1e12
    f_s, f_t = float(forward_flops_per_token(n_s)), float(forward_flops_per_token(n_t))
    expected = 3 * f_s * d_s + f_t * (delta_logits * d_s + delta_pretraining * 3 * d_t)
    assert float(distillation_flops(n_s, d_s, n_t, d_t, scenario)) == pytest.approx(expected, rel=1e-12)
    budget = expected
    if delta_pretraining:
        budget = expected + 1e21  # some budget left for the student after training the teacher
    tokens = float(student_tokens_for_budget(budget, n_s, n_t, d_t, scenario))
    assert float(distillation_flops(n_s, tokens, n_t, d_t, scenario)) == pytest.approx(budget, rel=1e-12)


def test_budget_smaller_than_the_teacher_pretraining_gives_nan():
    assert np.isnan(student_tokens_for_budget(1e20, 1e9, 7e9, 1e12, "teacher-pretraining"))


def test_unknown_scenario():
    assert set(SCENARIOS) == {
        "best",
        "teacher-inference",
        "teacher-pretraining",
        "teacher-pretraining-inference",
    }
    with pytest.raises(ConfigError, match="unknown scenario 'cheap'; choose from best, teacher-inference"):
        get_scenario("cheap")


def test_run_flops_breakdown():
    flops = run_flops(
        2e9,
        1e10,
        generation_flops_per_token=1.4e10,
        generated_tokens=3e9,
        scoring_flops_per_token=2.8e10,
        scored_tokens=1.2e10,
    )
    assert flops.student_train == 3 * 2e9 * 1e10
    assert flops.teacher_generation == 1.4e10 * 3e9
    assert flops.teacher_scoring == 2.8e10 * 1.2e10
    assert flops.to_dict()["total"] == flops.student_train + flops.teacher_generation + flops.teacher_scoring
    assert run_flops(2e9, 1e10).total == 6e19  # a supervised run: no teacher


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1e9"])
def test_run_flops_rejects_bad_numbers(bad):
    with pytest.raises(ConfigError, match="student_tokens must be a finite number >= 0"):
        run_flops(2e9, bad)


@pytest.mark.slow
def test_exact_count_matches_torch_flop_counter():
    """Against torch's FlopCounterMode on a real (tiny) Llama with eager attention, which computes the full,
    non-causal score matrix (4 T^2 heads head_dim per layer); ours averages the causal cost instead
    (2 (T + 1) heads head_dim per token and layer)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    config = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 160,
        "vocab_size": 300,
        "max_position_embeddings": 64,
    }
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**config, attn_implementation="eager")
    ).eval()
    layer_weights = sum(
        p.numel() for name, p in model.model.layers.named_parameters() if p.ndim == 2 and "norm" not in name
    )
    assert non_embedding_params({**config, "model_type": "llama"}) == layer_weights
    tokens = 48
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, tokens, dtype=torch.long))
    full_attention = 4 * tokens**2 * 4 * 16 * 2
    causal_attention = 2 * tokens * (tokens + 1) * 4 * 16 * 2
    ours = exact_flops_per_token({**config, "model_type": "llama"}, n_ctx=tokens) * tokens
    assert ours == counter.get_total_flops() - full_attention + causal_attention
