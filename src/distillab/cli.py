"""`distillab <stage> [args]`: one entry point over the stages; each also runs as `python -m distillab.<stage>`.

A stage is imported only once chosen and parses its own arguments (distillab.configs), the way TRL's CLI
builds a script's parser at run time: one parser over every stage would import torch, transformers and vLLM
for every command.
"""

from __future__ import annotations

import importlib
import sys

# stage name -> (module exposing `main(argv)`, one-line description)
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("distillab.generate", "teacher -> greedy hard-label dataset (distilabel)"),
    "label": ("distillab.generate.label", "add the teacher's top-k soft labels to a hard-label dataset"),
    "sft": ("distillab.sft", "train a student on hard labels (TRL SFTTrainer)"),
    "kd": ("distillab.kd", "train a student on soft labels (knowledge distillation)"),
    "evaluate": ("distillab.evaluate", "cross-entropy, teacher agreement, lm-eval, report"),
    "study": ("distillab.study", "scaling-law study: a grid of real runs, fitted, predicting held-out runs"),
    "scaling": ("distillab.scaling.cli", "distillation scaling law: predict | flops | plan | fit | plot"),
    "assets": ("distillab.assets", "build offline assets (the SmolLM2 teacher)"),
    "demo": ("distillab.demo", "the whole pipeline on a real teacher, offline"),
}


def _usage() -> str:
    lines = ["usage: distillab <stage> [args]", "", "stages:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in STAGES.items()]
    lines += ["", "`distillab <stage> --help` shows a stage's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose from {', '.join(STAGES)}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(STAGES[stage][0])
    sys.argv = [f"distillab {stage}", *rest]
    module.main(rest)


if __name__ == "__main__":
    main()
