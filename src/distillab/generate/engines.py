"""Teacher engines as distilabel LLMs. Every engine returns, per generation, the text plus `input_tokens`,
`output_tokens` and `finish_reason` (stop|length) in distilabel's statistics.

- `TransformersTeacher`: batched greedy/sampled `generate` (distilabel's TransformersLLM neither batches nor
  defaults to greedy).
- `VLLMTeacher`: the small adapter distilabel's `vLLM` needs for current vLLM (no `logits_processors` in
  SamplingParams, token-id prompts, finish reasons, a clean engine shutdown).
- `ServerTeacher`: running vLLM/OpenAI-compatible servers (one or many), through generate/servers.py's pool.

Each builds itself from the generate config (`from_config`); generate/registry.py maps `--engine` names to them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from distilabel.models.llms import vLLM
from distilabel.models.llms.base import LLM, AsyncLLM
from distilabel.models.llms.utils import prepare_output
from pydantic import PrivateAttr

from distillab.devices import require_vllm, resolve_device, resolve_dtype, vllm_resources
from distillab.errors import first_line
from distillab.generate.servers import ServerFailure, ServerPool
from distillab.interrupts import new_children_die_with_this_process

if TYPE_CHECKING:
    from distilabel.typing import FormattedInput, GenerateOutput

    from distillab.generate.config import GenerateConfig


def _output(text: str | None, input_tokens: int, output_tokens: int, finish_reason: str) -> GenerateOutput:
    out = prepare_output([text], input_tokens=[input_tokens], output_tokens=[output_tokens])
    out["statistics"]["finish_reason"] = [finish_reason]
    return out


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generation_kwargs(config: GenerateConfig) -> dict[str, Any]:
    """The sampling arguments every teacher's `generate` takes (a seed only when sampling)."""
    kwargs = {
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,
        "stop": config.stop or None,
    }
    if not config.greedy:
        kwargs["seed"] = config.seed
    return kwargs


class TransformersTeacher(LLM):
    """A transformers causal LM generating a whole batch at once (left padding)."""

    model: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"

    _model: Any = PrivateAttr(None)
    _tokenizer: Any = PrivateAttr(None)

    @classmethod
    def from_config(cls, config: GenerateConfig) -> TransformersTeacher:
        return cls(
            model=config.model,
            revision=config.revision,
            dtype=config.dtype,
            device=config.device,
            generation_kwargs=generation_kwargs(config),
        )

    def load(self) -> None:
        super().load()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.model, revision=self.revision, padding_side="left"
        )
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(self.model, revision=self.revision, dtype=dtype)
        self._model.to(device).eval()

    @property
    def model_name(self) -> str:
        return self.model

    def generate(
        self,
        inputs: list[FormattedInput],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> list[GenerateOutput]:
        import torch

        texts = [render_chat(self._tokenizer, messages) for messages in inputs]
        batch = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self._model.device)
        sampling = (
            {"do_sample": False}
            if temperature == 0
            else {
                "do_sample": True,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k or None,
            }
        )
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            sequences = self._model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_generations,
                pad_token_id=self._tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = sequences[:, batch["input_ids"].shape[1] :].tolist()
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        outputs = []
        for index, tokens in enumerate(new_tokens):
            prompt_length = prompt_lengths[index // num_generations]
            outputs.append(self._finish(tokens, prompt_length, max_new_tokens, stop or []))
        return outputs

    def _finish(
        self, tokens: list[int], prompt_length: int, max_new_tokens: int, stop: list[str]
    ) -> GenerateOutput:
        """Cut one generated sequence at the first end-of-sequence token or stop string."""
        eos_ids = set(self._eos_token_ids())
        end = next((i + 1 for i, token in enumerate(tokens) if token in eos_ids), None)
        reason = "stop" if end is not None else "length"
        tokens = tokens[:end] if end is not None else tokens[:max_new_tokens]
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        for stop_string in stop:
            if stop_string in text:
                text, reason = text[: text.index(stop_string)], "stop"
        return _output(text, prompt_length, len(tokens), reason)

    def _eos_token_ids(self) -> list[int]:
        eos = self._model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        return [*eos, self._tokenizer.eos_token_id]


class VLLMTeacher(vLLM):
    """distilabel's vLLM with the fixes current vLLM needs; prompts go in as token ids (no second BOS)."""

    disable_cuda_device_placement: bool = True

    @classmethod
    def from_config(cls, config: GenerateConfig) -> VLLMTeacher:
        require_vllm("--engine vllm")
        resources = vllm_resources(config.dtype, config.kv_cache_gib, config.gpu_memory_utilization)
        extra = {
            "tensor_parallel_size": config.tensor_parallel_size,
            "pipeline_parallel_size": config.pipeline_parallel_size,
            "enforce_eager": config.enforce_eager,
        }
        if config.max_model_len:
            extra["max_model_len"] = config.max_model_len
        return cls(
            model=config.model,
            revision=config.revision,
            tokenizer=config.tokenizer,
            seed=config.seed,
            dtype=resources.pop("dtype"),
            extra_kwargs={**extra, **resources},
            generation_kwargs=generation_kwargs(config),
        )

    def load(self) -> None:
        with new_children_die_with_this_process():  # vLLM's engine core and workers
            super().load()

    def generate(  # type: ignore[override]
        self,
        inputs: list[FormattedInput],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> list[GenerateOutput]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(
            n=num_generations,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_new_tokens,
            stop=stop or None,
            seed=seed,
        )
        prompts = [
            TokensPrompt(
                prompt_token_ids=self._tokenizer.encode(self.prepare_input(m), add_special_tokens=False)
            )
            for m in inputs
        ]
        results = self._model.generate(prompts, sampling_params=params, use_tqdm=False)
        return [
            _output(self._text(o), len(r.prompt_token_ids), len(o.token_ids), o.finish_reason or "length")
            for r in results
            for o in r.outputs
        ]

    def _text(self, output) -> str:
        """Decode the tokens as transformers does (vLLM's incremental detokenizer holds back a trailing
        partial UTF-8 character); keep vLLM's text when it was cut at a stop string."""
        if isinstance(output.stop_reason, str):
            return output.text
        return self._tokenizer.decode(output.token_ids, skip_special_tokens=True)

    def _cleanup_vllm_model(self) -> None:
        # distilabel's version deletes engine internals that no longer exist and then hangs the pipeline.
        if self._model is not None:
            self._model.llm_engine.engine_core.shutdown()
            self._model = None


class ServerTeacher(AsyncLLM):
    """vLLM/OpenAI-compatible chat servers (one or many, see generate/servers.py); a row whose request fails on
    every try gets no generation and the failure as its `error` statistic, so the run records it as failed,
    stays incomplete, and a rerun retries it."""

    model: str
    base_urls: list[str]
    api_key_env: str = "OPENAI_API_KEY"
    max_in_flight: int = 32
    retries: int = 5
    retry_backoff_s: float = 1.0
    request_timeout_s: float = 600.0

    _clients: list[Any] = PrivateAttr(default_factory=list)
    _pool: Any = PrivateAttr(None)

    @classmethod
    def from_config(cls, config: GenerateConfig) -> ServerTeacher:
        kwargs = {k: v for k, v in generation_kwargs(config).items() if k not in {"top_k", "seed"}}
        return cls(
            model=config.model,
            base_urls=config.base_url,
            api_key_env=config.api_key_env,
            max_in_flight=config.max_in_flight,
            retries=config.retries,
            retry_backoff_s=config.retry_backoff_s,
            request_timeout_s=config.request_timeout_s,
            generation_kwargs=kwargs,
        )

    def load(self) -> None:
        super().load()
        from openai import AsyncOpenAI

        # Local vLLM servers accept any key; hosted ones read it from the environment.
        api_key = os.environ.get(self.api_key_env) or "EMPTY"
        self._clients = [
            AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=self.request_timeout_s)
            for url in self.base_urls
        ]
        self._pool = ServerPool(self.base_urls, self.max_in_flight, self.retries, self.retry_backoff_s)

    @property
    def model_name(self) -> str:
        return self.model

    async def agenerate(  # type: ignore[override]
        self,
        input: FormattedInput,
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> GenerateOutput:
        """One chat request through the server pool (distilabel runs a batch of them concurrently)."""

        def send(server: int):
            return self._clients[server].chat.completions.create(
                model=self.model,
                messages=input,
                n=num_generations,
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
            )

        try:
            completion = await self._pool.run(send)
        except ServerFailure as err:
            self._logger.warning(f"a request failed, its row is left for a rerun: {err}")  # type: ignore[attr-defined]
            failed = prepare_output([None] * num_generations, input_tokens=[0], output_tokens=[0])
            failed["statistics"]["error"] = [first_line(err)]  # recorded with the row (pipeline.ShardWriter)
            return failed
        usage = completion.usage
        out = prepare_output(
            [choice.message.content for choice in completion.choices],
            input_tokens=[usage.prompt_tokens if usage else 0],
            output_tokens=[usage.completion_tokens if usage else 0],
        )
        out["statistics"]["finish_reason"] = [
            "length" if choice.finish_reason == "length" else "stop" for choice in completion.choices
        ]
        return out
