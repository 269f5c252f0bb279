"""Generate stage: a teacher writes greedy hard labels (and optionally top-k soft labels) for a prompt set."""

from __future__ import annotations

import sys

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config
    from distillab.generate.shards import MergeConfig

    argv = sys.argv[1:] if argv is None else argv
    if "--merge" in argv:
        from distillab.generate.merge import merge

        merge(parse_config(MergeConfig, argv))
        return
    from distillab.generate.config import GenerateConfig
    from distillab.generate.run import generate

    generate(parse_config(GenerateConfig, argv))
