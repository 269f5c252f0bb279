"""Evaluate stage: held-out cross-entropy, teacher agreement, lm-eval runs and the comparison report.

`distillab evaluate --config recipes/X/evaluate.yaml`, also `python -m distillab.evaluate`.
"""

from __future__ import annotations

from distillab.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from distillab.configs import parse_config
    from distillab.evaluate.config import EvaluateConfig
    from distillab.evaluate.run import evaluate

    evaluate(parse_config(EvaluateConfig, argv))
