"""Teacher scorers: the exact top-k log-probs of a teacher on given token sequences (soft labels).

Each builds itself from the label config (`from_config`); generate/registry.py maps `--engine` names to them.
Both return, per sequence, `(topk_ids [n, k] int32, topk_logprobs [n, k] float32)` for the positions
`start - 1 .. len(ids) - 2` (each predicting the next token), sorted by decreasing log-prob.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distillab.devices import resolve_device, resolve_dtype
from distillab.generate.engines import require_vllm, vllm_resources
from distillab.modelfiles import check_model_files, load_causal_lm

if TYPE_CHECKING:
    from distillab.generate.label import LabelConfig


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

    def score(
        self, sequences: list[list[int]], starts: list[int], k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
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
        results = []
        for row, (ids, start) in enumerate(zip(sequences, starts, strict=True)):
            positions = logits[row, start - 1 : len(ids) - 1].float()
            values, indices = positions.topk(k, dim=-1)
            logprobs = values - positions.logsumexp(dim=-1, keepdim=True)
            results.append((indices.int().cpu().numpy(), logprobs.cpu().numpy()))
        return results

    def close(self) -> None:
        self.model = None


class VLLMScorer:
    """vLLM `prompt_logprobs`: raw log-probs (no sampling processing), prefix caching off so prompt log-probs
    are computed for every position, `max_logprobs` >= k."""

    def __init__(
        self,
        model: str,
        k: int,
        revision: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        enforce_eager: bool = True,
    ):
        from vllm import LLM

        kwargs = {"max_model_len": max_model_len} if max_model_len else {}
        self.llm = LLM(
            model,
            revision=revision,
            **vllm_resources(dtype, kv_cache_gib),
            max_logprobs=k,
            logprobs_mode="raw_logprobs",
            enable_prefix_caching=False,
            enforce_eager=enforce_eager,
            **kwargs,
        )
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()

    @classmethod
    def from_config(cls, config: LabelConfig, model: str) -> VLLMScorer:
        require_vllm()
        check_model_files(model)
        return cls(
            model,
            config.soft_labels_k,
            revision=config.revision,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            kv_cache_gib=config.kv_cache_gib,
        )

    def score(
        self, sequences: list[list[int]], starts: list[int], k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
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
    def _topk(prompt_logprobs, start: int, length: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        # prompt_logprobs[t] is the distribution at position t-1 over token t; it also lists the actual token
        # when that one is outside the top k (rank > k), which we drop.
        ids = np.empty((length - start, k), dtype=np.int32)
        logprobs = np.empty((length - start, k), dtype=np.float32)
        for j, entry in enumerate(prompt_logprobs[start:length]):
            ranked = sorted((lp.rank, token, lp.logprob) for token, lp in entry.items() if lp.rank <= k)[:k]
            ids[j] = [token for _, token, _ in ranked]
            logprobs[j] = [logprob for _, _, logprob in ranked]
        return ids, logprobs

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
