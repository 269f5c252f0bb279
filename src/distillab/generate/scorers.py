"""Teacher scorers: the exact top-k log-probs of a teacher on given token sequences (soft labels).

Each builds itself from the label config (`from_config`); generate/registry.py maps `--engine` names to them.
Both return, per sequence, `(topk_ids [n, k] int32, topk_logprobs [n, k] float32, log_tail [n] float64)` for
the positions `start - 1 .. len(ids) - 2` (each predicting the next token), sorted by decreasing log-prob;
`log_tail` is the log of the mass outside the k ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distillab.devices import require_vllm, resolve_device, resolve_dtype, vllm_resources
from distillab.errors import ConfigError
from distillab.interrupts import new_children_die_with_this_process
from distillab.modelfiles import check_model_files, load_causal_lm

if TYPE_CHECKING:
    from distillab.generate.label import LabelConfig

Scored = tuple[np.ndarray, np.ndarray, np.ndarray]  # topk_ids, topk_logprobs, log_tail
PROMPT_LOGPROBS_GIB = 2.0
# Per prompt token and vocabulary entry, vLLM holds the float32 logits, their log-softmax and the top-k sort's
# copy at once: 3 x 4 bytes.
PROMPT_LOGPROBS_BYTES = 12
MIN_STEP_TOKENS = 16


class TransformersScorer:
    """A forward pass per batch; log-probs = logits - logsumexp(logits), top-k taken on the logits."""

    def __init__(self, model: str, revision: str | None = None, dtype: str = "auto", device: str = "auto"):
        self.device = resolve_device(device)
        self.model = (
            load_causal_lm(model, "the teacher", revision=revision, dtype=resolve_dtype(dtype, self.device))
            .to(self.device)
            .eval()
        )
        self.vocab_size = self.model.config.vocab_size

    @classmethod
    def from_config(cls, config: LabelConfig, model: str) -> TransformersScorer:
        return cls(model, revision=config.revision, dtype=config.dtype, device=config.device)

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[Scored]:
        """The top-k and, exactly from the logits outside it, the tail."""
        results = []
        for logprobs in self.full_logprobs(sequences, starts):
            values, indices = logprobs.topk(k, dim=-1)
            log_tail = logprobs.double().scatter(-1, indices, -float("inf")).logsumexp(dim=-1)
            results.append((indices.int().cpu().numpy(), values.cpu().numpy(), log_tail.cpu().numpy()))
        return results

    def full_logprobs(self, sequences: list[list[int]], starts: list[int]) -> list:
        """Per sequence, the float32 log-softmax [n, vocab] at the positions `score` covers."""
        import torch

        width = max(map(len, sequences))
        input_ids = torch.zeros(len(sequences), width, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits
        return [
            torch.log_softmax(logits[row, start - 1 : len(ids) - 1].float(), dim=-1)
            for row, (ids, start) in enumerate(zip(sequences, starts, strict=True))
        ]

    def close(self) -> None:
        self.model = None


class VLLMScorer:
    """vLLM `prompt_logprobs`: raw log-probs (no sampling processing), prefix caching off so prompt log-probs
    are computed for every position, `max_logprobs` >= k; an engine step's tokens capped so that their
    full-vocabulary log-probs fit `prompt_logprobs_gib` (`prompt_logprobs_tokens`)."""

    def __init__(
        self,
        model: str,
        k: int,
        revision: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        enforce_eager: bool = True,
        prompt_logprobs_gib: float = PROMPT_LOGPROBS_GIB,
    ):
        from transformers import AutoConfig
        from vllm import LLM

        vocab_size = AutoConfig.from_pretrained(model, revision=revision).vocab_size
        kwargs = {"max_model_len": max_model_len} if max_model_len else {}
        with new_children_die_with_this_process():  # vLLM's engine core and workers
            self.llm = LLM(
                model,
                revision=revision,
                **vllm_resources(dtype, kv_cache_gib),
                max_logprobs=k,
                logprobs_mode="raw_logprobs",
                enable_prefix_caching=False,
                enforce_eager=enforce_eager,
                max_num_batched_tokens=prompt_logprobs_tokens(vocab_size, prompt_logprobs_gib),
                **kwargs,
            )
        check_prompt_logprobs_engine(self.llm.llm_engine, k)
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()

    @classmethod
    def from_config(cls, config: LabelConfig, model: str) -> VLLMScorer:
        require_vllm("--engine vllm")
        check_model_files(model)
        return cls(
            model,
            config.soft_labels_k,
            revision=config.revision,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            kv_cache_gib=config.kv_cache_gib,
            prompt_logprobs_gib=config.prompt_logprobs_gib,
        )

    def score(self, sequences: list[list[int]], starts: list[int], k: int) -> list[Scored]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False
        )
        return [
            self._topk(o.prompt_logprobs, start, len(ids), k)
            for o, ids, start in zip(outputs, sequences, starts, strict=True)
        ]

    @staticmethod
    def _topk(prompt_logprobs, start: int, length: int, k: int) -> Scored:
        # prompt_logprobs[t] is the distribution at position t-1 over token t; it also lists the actual token
        # when that one is outside the top k (rank > k), which we drop.
        ids = np.empty((length - start, k), dtype=np.int32)
        logprobs = np.empty((length - start, k), dtype=np.float32)
        for j, entry in enumerate(prompt_logprobs[start:length]):
            ranked = sorted((lp.rank, token, lp.logprob) for token, lp in entry.items() if lp.rank <= k)[:k]
            ids[j] = [token for _, token, _ in ranked]
            logprobs[j] = [logprob for _, _, logprob in ranked]
        return ids, logprobs, log_tail_of_top_k(logprobs)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None


def prompt_logprobs_tokens(vocab_size: int, budget_gib: float) -> int:
    """Tokens per vLLM engine step whose full-vocabulary prompt log-probs peak within `budget_gib`
    (tokens x vocab x PROMPT_LOGPROBS_BYTES); longer prompts are prefilled in chunks of that size."""
    tokens = int(budget_gib * 2**30) // (vocab_size * PROMPT_LOGPROBS_BYTES)
    if tokens < MIN_STEP_TOKENS:
        raise ConfigError(
            f"--prompt_logprobs_gib {budget_gib} holds prompt log-probs for only {tokens} tokens of a "
            f"{vocab_size:,}-token vocabulary ({PROMPT_LOGPROBS_BYTES} bytes each); give at least "
            f"{MIN_STEP_TOKENS * vocab_size * PROMPT_LOGPROBS_BYTES / 2**30:.2f}"
        )
    return tokens


def check_prompt_logprobs_engine(engine, k: int) -> None:
    """The started engine must return k prompt log-probs and compute them for every position."""
    max_logprobs = engine.model_config.max_logprobs  # -1: no limit
    if 0 <= max_logprobs < k:
        raise ConfigError(
            f"vLLM's max_logprobs is {max_logprobs}, fewer than the {k} soft labels per position"
        )
    if engine.vllm_config.cache_config.enable_prefix_caching:
        raise ConfigError(
            "vLLM has prefix caching on: cached prompt positions get no prompt log-probs; turn it off"
        )


def log_tail_of_top_k(logprobs: np.ndarray) -> np.ndarray:
    """log(1 - sum exp(top-k)) per position, in float64: all an engine returning only the top-k allows."""
    covered = np.logaddexp.reduce(logprobs.astype(np.float64), axis=1)
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(np.minimum(covered, 0.0)))
