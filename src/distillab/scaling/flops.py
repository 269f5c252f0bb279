"""FLOPs: forward FLOPs per token (App. H.1, exact from a config, 2N), Eq. 9, and a distillab run's total.

Conventions: a multiply-accumulate is 2 FLOPs; norms, activations, softmax and biases are ignored (well
under 1%); backward = 2 x forward, so training costs 3 x forward per token. `transformers` is never
imported: configs are plain objects or dicts with the usual Hugging Face attribute names.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from distillab.errors import ConfigError

FlopsMethod = Literal["exact", "approx_2n", "paper_fixed_aspect"]
FLOPS_METHODS: tuple[str, ...] = ("exact", "approx_2n", "paper_fixed_aspect")

# The paper's fixed-aspect-ratio models (App. H.1).
PAPER_RHO = 128.0  # d_model / n_layers
PAPER_N_CTX = 4096
PAPER_N_VOCAB = 32768


def aspect_omega(gqa_ratio: float = 1.0, n_ffn: int = 3, rho_ffn: float = 8 / 3) -> float:
    """omega = 2 + 2/g + n_ffn * rho_ffn: non-embedding parameters per layer in units of d_model^2."""
    return 2.0 + 2.0 / gqa_ratio + n_ffn * rho_ffn


PAPER_OMEGA = aspect_omega()  # MHA (g=1), gated MLP (n_ffn=3), rho_ffn=8/3 -> 12


def forward_flops_per_token(
    params: ArrayLike,
    *,
    rho: float = PAPER_RHO,
    omega: float = PAPER_OMEGA,
    n_ctx: float = PAPER_N_CTX,
    n_vocab: float = PAPER_N_VOCAB,
) -> np.ndarray:
    """F(N) = 2N (1 + sigma1 n_ctx N^(-1/3) + sigma2 n_vocab N^(-2/3)), fixed-aspect models (App. H.1)."""
    n = np.asarray(params, dtype=float)
    sigma1 = (rho * omega**2) ** (-1.0 / 3.0)
    sigma2 = (rho / omega) ** (1.0 / 3.0)
    return 2.0 * n * (1.0 + sigma1 * n_ctx * n ** (-1.0 / 3.0) + sigma2 * n_vocab * n ** (-2.0 / 3.0))


def approx_2n_flops_per_token(params: ArrayLike) -> np.ndarray:
    """The classic forward estimate 2N (no attention-over-context, no lm-head)."""
    return 2.0 * np.asarray(params, dtype=float)


# --- exact counts from a Hugging Face style config ----------------------------------------------------------

# Model families whose MLP is gated (gate, up and down projections).
GATED_MLP_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "cohere",
        "internlm2",
        "smollm3",
    }
)
# GPT-2 style names -> the usual names.
CONFIG_ALIASES = {
    "hidden_size": ("n_embd", "d_model"),
    "num_hidden_layers": ("n_layer", "num_layers"),
    "num_attention_heads": ("n_head", "num_heads"),
    "intermediate_size": ("n_inner", "ffn_dim"),
    "max_position_embeddings": ("n_positions",),
}


@dataclass(frozen=True)
class TransformerShape:
    """The shape numbers of a decoder-only transformer that its FLOPs and parameter count depend on."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int | None
    gated_mlp: bool


def _config_value(config: Mapping[str, Any] | Any, name: str) -> Any:
    for key in (name, *CONFIG_ALIASES.get(name, ())):
        value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
        if value is not None:
            return value
    return None


def _is_gated(config: Mapping[str, Any] | Any) -> bool:
    explicit = _config_value(config, "gated_mlp")
    if explicit is not None:
        return bool(explicit)
    if _config_value(config, "model_type") in GATED_MLP_MODEL_TYPES:
        return True
    return _config_value(config, "hidden_act") in {"silu", "swish"}


def transformer_shape(config: Mapping[str, Any] | Any) -> TransformerShape:
    """Read a plain dict / config object (transformers' `PretrainedConfig` works) into a TransformerShape."""

    def required(name: str) -> int:
        value = _config_value(config, name)
        if value is None:
            raise ConfigError(f"model config has no {name!r}: cannot count its FLOPs exactly")
        return int(value)

    hidden, heads = required("hidden_size"), required("num_attention_heads")
    intermediate = _config_value(config, "intermediate_size") or 4 * hidden
    return TransformerShape(
        hidden_size=hidden,
        num_layers=required("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=int(_config_value(config, "num_key_value_heads") or heads),
        head_dim=int(_config_value(config, "head_dim") or hidden // heads),
        intermediate_size=int(intermediate),
        vocab_size=required("vocab_size"),
        max_position_embeddings=_config_value(config, "max_position_embeddings"),
        gated_mlp=_is_gated(config),
    )


def _layer_matmul_params(shape: TransformerShape) -> int:
    attention = shape.hidden_size * shape.head_dim * (2 * shape.num_heads + 2 * shape.num_kv_heads)
    mlp = (3 if shape.gated_mlp else 2) * shape.hidden_size * shape.intermediate_size
    return attention + mlp


def non_embedding_params(config: Mapping[str, Any] | Any) -> int:
    """N: the weight-matrix parameters of the transformer blocks (embeddings, lm-head, norms excluded)."""
    shape = transformer_shape(config)
    return shape.num_layers * _layer_matmul_params(shape)


def exact_flops_per_token(config: Mapping[str, Any] | Any, n_ctx: int | None = None) -> float:
    """Forward FLOPs per token of a decoder-only transformer: projections + MLP, attention, lm-head.

    Attention over the context is averaged over the positions of a full causal sequence of `n_ctx` tokens
    (default: the config's max_position_embeddings): QK^T and AV cost 2 (n_ctx + 1) n_heads head_dim per
    layer and token, the term the paper's F(N) writes as 2 n_layers n_ctx d_model.
    """
    shape = transformer_shape(config)
    n_ctx = n_ctx or shape.max_position_embeddings
    if not n_ctx:
        raise ConfigError("model config has no 'max_position_embeddings': pass the context length n_ctx")
    projections = 2 * shape.num_layers * _layer_matmul_params(shape)
    attention = 2 * shape.num_layers * (n_ctx + 1) * shape.num_heads * shape.head_dim
    lm_head = 2 * shape.hidden_size * shape.vocab_size
    return float(projections + attention + lm_head)


@dataclass(frozen=True)
class ForwardFlops:
    """Forward FLOPs per token and how they were obtained (recorded in run folders)."""

    per_token: float
    method: str
    params: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_forward_flops(
    config: Mapping[str, Any] | Any | None = None,
    *,
    params: float | None = None,
    method: FlopsMethod = "exact",
    n_ctx: int | None = None,
    n_vocab: int | None = None,
    rho: float = PAPER_RHO,
    omega: float = PAPER_OMEGA,
) -> ForwardFlops:
    """Forward FLOPs per token of a model by `method`, recorded with it.

    "exact" needs a config; "approx_2n" and "paper_fixed_aspect" need N (`params`, else counted from the
    config). n_ctx and n_vocab default to the config's, else the paper's (4096, 32768).
    """
    if method not in FLOPS_METHODS:
        raise ConfigError(f"unknown FLOPs method {method!r}; choose from {', '.join(FLOPS_METHODS)}")
    if config is None and (method == "exact" or params is None):
        needs = "a model config" if method == "exact" else "a model config or params"
        raise ConfigError(f"FLOPs method {method!r} needs {needs}")
    n = float(params) if params is not None else float(non_embedding_params(config))
    if method == "exact":
        per_token = exact_flops_per_token(config, n_ctx)
    elif method == "approx_2n":
        per_token = float(approx_2n_flops_per_token(n))
    else:
        shape = transformer_shape(config) if config is not None else None
        n_ctx = n_ctx or (shape and shape.max_position_embeddings) or PAPER_N_CTX
        n_vocab = n_vocab or (shape and shape.vocab_size) or PAPER_N_VOCAB
        per_token = float(forward_flops_per_token(n, rho=rho, omega=omega, n_ctx=n_ctx, n_vocab=n_vocab))
    return ForwardFlops(per_token=per_token, method=method, params=n)


# --- Eq. 9 and its scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Which teacher costs count against the budget (paper Table 2)."""

    name: str
    delta_logits: int  # teacher forward on the student's tokens
    delta_pretraining: int  # training the teacher
    description: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("best", 0, 0, "teacher exists, its logits are free"),
        Scenario("teacher-inference", 1, 0, "teacher exists, its logits cost a forward pass"),
        Scenario("teacher-pretraining", 0, 1, "teacher is trained within the budget, logits free"),
        Scenario("teacher-pretraining-inference", 1, 1, "teacher is trained and run within the budget"),
    )
}


def get_scenario(name: str | Scenario) -> Scenario:
    """Look a scenario up by name (dashes or underscores)."""
    if isinstance(name, Scenario):
        return name
    key = str(name).replace("_", "-")
    if key not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return SCENARIOS[key]


def distillation_flops(
    student_params: ArrayLike,
    student_tokens: ArrayLike,
    teacher_params: ArrayLike,
    teacher_tokens: ArrayLike,
    scenario: str | Scenario = "teacher-pretraining-inference",
    flops_per_token=forward_flops_per_token,
) -> np.ndarray:
    """Eq. 9: 3 F(N_S) D_S + F(N_T) (delta_lgt D_S + delta_pre 3 D_T)."""
    s = get_scenario(scenario)
    teacher = flops_per_token(teacher_params) * (
        s.delta_logits * np.asarray(student_tokens, float)
        + s.delta_pretraining * 3.0 * np.asarray(teacher_tokens, float)
    )
    return 3.0 * flops_per_token(student_params) * np.asarray(student_tokens, float) + teacher


def student_tokens_for_budget(
    compute: ArrayLike,
    student_params: ArrayLike,
    teacher_params: ArrayLike,
    teacher_tokens: ArrayLike,
    scenario: str | Scenario,
    flops_per_token=forward_flops_per_token,
) -> np.ndarray:
    """D_S that spends exactly `compute` under Eq. 9 (NaN where the teacher's pretraining exceeds it)."""
    s = get_scenario(scenario)
    teacher_f = flops_per_token(teacher_params)
    left = np.asarray(compute, float) - s.delta_pretraining * 3.0 * teacher_f * np.asarray(
        teacher_tokens, float
    )
    tokens = left / (3.0 * flops_per_token(student_params) + s.delta_logits * teacher_f)
    return np.where(tokens > 0, tokens, np.nan)


# --- a distillab run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFlops:
    """FLOPs of a distillab run: student training plus what the teacher spent on its data."""

    student_train: float
    teacher_generation: float
    teacher_scoring: float

    @property
    def total(self) -> float:
        return self.student_train + self.teacher_generation + self.teacher_scoring

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "total": self.total}


def run_flops(
    student_forward_flops_per_token: float,
    student_tokens: float,
    generation_flops_per_token: float = 0.0,
    generated_tokens: float = 0.0,
    scoring_flops_per_token: float = 0.0,
    scored_tokens: float = 0.0,
) -> RunFlops:
    """FLOPs of a run from what its folder records; each pass counts every token it ran over.

    student_train = 3 F_S x the tokens the student processed (forward + backward run over prompt and
    completion alike, so more than D, the supervised tokens); teacher_generation = F_G x the tokens the model
    that generated the hard labels processed (prompt + completion; KV-cached decoding costs one forward per
    token); teacher_scoring = F_K x the tokens of the sequences the model that scored them (soft labels, or
    online KD) ran its forward over.
    """
    values = {
        "student_forward_flops_per_token": student_forward_flops_per_token,
        "student_tokens": student_tokens,
        "generation_flops_per_token": generation_flops_per_token,
        "generated_tokens": generated_tokens,
        "scoring_flops_per_token": scoring_flops_per_token,
        "scored_tokens": scored_tokens,
    }
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ConfigError(f"run_flops: {name} must be a finite number >= 0, got {value!r}")
    return RunFlops(
        student_train=3.0 * student_forward_flops_per_token * student_tokens,
        teacher_generation=generation_flops_per_token * generated_tokens,
        teacher_scoring=scoring_flops_per_token * scored_tokens,
    )
