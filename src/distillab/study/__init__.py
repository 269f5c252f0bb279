"""The scaling-law study: a grid of real students (supervised, hard, soft, soft_data) trained and evaluated
through the stage commands on CPython's stdlib sources, then fitted and reported.

`distillab study --config recipes/study-cpu/study.yaml [--quick] [--output_dir DIR] [--workers N]`, also
`python -m distillab.study`.
"""

from __future__ import annotations

import sys

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config
    from distillab.study.config import StudyConfig
    from distillab.study.run import run_study

    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_config(StudyConfig, argv)
    if config.quick:
        config = config.with_quick_preset(cli_fields(argv))
    run_study(config)


def cli_fields(argv: list[str]) -> set[str]:
    """Config fields given as flags (`--output_dir x`, `--output-dir=x`), which --quick's preset leaves alone."""
    return {
        arg[2:].split("=", 1)[0].replace("-", "_")
        for arg in argv
        if arg.startswith("--") and arg != "--config"
    }
