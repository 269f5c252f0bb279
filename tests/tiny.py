"""A finished greedy hard-label dataset from a tiny teacher (`distillab.tiny`), for the tests' fixtures."""

from __future__ import annotations

from pathlib import Path


def generate_greedy(teacher: Path, generator: str, num_prompts: int, output_dir: Path) -> Path:
    """A finished hard-label dataset: the teacher's greedy completions (24 new tokens) on offline prompts."""
    from distillab.generate.config import GenerateConfig
    from distillab.generate.run import generate

    config = GenerateConfig(
        model=str(teacher),
        engine="transformers",
        generator=generator,
        num_prompts=num_prompts,
        max_new_tokens=24,
        batch_size=16,
        output_dir=str(output_dir),
    )
    return generate(config)
