"""Dataset cards (README.md with the Hub's YAML header) rendered from a dataset's distillab.json."""

from __future__ import annotations

import json
from typing import Any

from distillab.markdown import markdown_table

CARD_HEADER = """---
tags:
- distillab
- distillation
- synthetic
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
"""


def render_hard_label_card(metadata: dict[str, Any]) -> str:
    """A short human summary of a hard-label dataset; the full metadata is embedded as JSON."""
    teacher = metadata["teacher"]
    prompts = metadata["prompts"]
    rows = [
        (
            "teacher",
            f"`{teacher['model']}`" + (f" @ {teacher['revision']}" if teacher.get("revision") else ""),
        ),
        ("engine", metadata["engine"]["version"]),
        ("generation", ", ".join(f"{k}={v}" for k, v in metadata["generation"].items())),
        (
            "prompts",
            f"{prompts['source']} ({prompts['used']} used, {prompts['invalid_dropped']} invalid dropped, "
            f"{prompts['duplicates_dropped']} duplicates dropped)",
        ),
        ("rows", metadata["rows"]),
        ("truncation rate (finish_reason=length)", f"{metadata['truncation_rate']:.2%}"),
        ("prompt tokens (mean / p50 / p95 / max)", _stats(metadata["prompt_tokens"])),
        ("completion tokens (mean / p50 / p95 / max)", _stats(metadata["completion_tokens"])),
        ("duplicate completions", metadata["duplicate_completions"]),
        ("tokenizer fingerprint", metadata["tokenizer_fingerprint"]),
    ]
    soft = metadata.get("soft_labels")
    if soft and soft.get("complete"):
        rows += _soft_label_rows(soft)
    return (
        CARD_HEADER
        + f"\n# Hard labels from `{teacher['model']}`\n\n"
        + "Greedy teacher completions made with [distillab](https://pypi.org/project/distillab/) `generate`: "
        + "one row per prompt x generation, with columns `id`, `prompt`, `messages`, `completion`, "
        + "`finish_reason`, `prompt_tokens`, `completion_tokens`.\n\n"
        + markdown_table(["field", "value"], rows)
        + "\n\n<details><summary>distillab.json</summary>\n\n```json\n"
        + json.dumps(metadata, indent=2)
        + "\n```\n</details>\n"
    )


def _soft_label_rows(soft: dict[str, Any]) -> list[tuple[str, Any]]:
    adaptive = f", adaptive: mass {soft['mass']}, at least {soft['min_k']}" if soft.get("mass") else ""
    rows = [
        (
            "soft labels",
            f"top-{soft['k']}{adaptive}, {soft['logprob_dtype']} log-probs ({soft['logprob_mode']}), "
            f"{soft['engine']['version']}, format {soft.get('format', {}).get('version', 1)}, "
            f"{soft['bytes_per_token']:.0f} bytes/token on disk",
        ),
        ("soft-label alignment", soft["alignment"]),
        ("soft-label tail", soft["tail"]),
    ]
    fidelity = soft.get("fidelity")
    if fidelity:
        kl = fidelity["kl_full_vs_stored"]
        rows.append(
            (
                "soft-label fidelity",
                f"{fidelity['mean_slots_per_position']:.1f} slots/position, tail mass mean "
                f"{fidelity['tail_mass_mean']:.2e} / p99 {fidelity['tail_mass_p99']:.2e}, max abs Δ log-prob "
                f"{fidelity['max_abs_logprob_error']:.3g}, KL(full‖stored) "
                + ("not measured" if kl is None else f"{kl:.2e} nats ({fidelity['kl_positions']} positions)"),
            )
        )
    return rows


def _stats(stats: dict[str, float]) -> str:
    return f"{stats['mean']} / {stats['p50']} / {stats['p95']} / {stats['max']}"
