"""Generate stage: a teacher writes greedy hard labels (and optionally top-k soft labels) for a prompt set."""

from __future__ import annotations

import sys

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.generate.config import GenerateConfig
    from distillab.generate.run import generate
    from distillab.generate.shards import run_or_merge

    run_or_merge(sys.argv[1:] if argv is None else argv, GenerateConfig, generate)
