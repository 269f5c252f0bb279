"""Config parsing shared by every stage: dataclasses + YAML recipe (`--config`) + CLI overrides (TRL conventions)."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from distillab.errors import ConfigError

T = TypeVar("T")

RESOLVED_CONFIG_NAME = "distillab_config.yaml"


def parse_config(config_cls: type[T], argv: Sequence[str] | None = None) -> T:
    """Parse `--config recipe.yaml` then `--field value` overrides (both `--a_b` and `--a-b`) into `config_cls`.

    Unknown keys in the recipe, a missing recipe file and invalid values are `ConfigError`s (exit 2 in the CLI);
    argparse itself reports unknown flags and bad types with exit 2.
    """
    from trl import TrlParser

    args = list(sys.argv[1:] if argv is None else argv)
    _check_recipe_path(args)
    parser = TrlParser(dataclass_types=[config_cls])
    try:
        (config,) = parser.parse_args_and_config(args=args)
    except ValueError as err:  # unknown recipe keys, invalid field values raised in __post_init__
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe is not valid YAML: {err}") from None
    return config


def _check_recipe_path(args: list[str]) -> None:
    if "--config" not in args:
        return
    index = args.index("--config")
    if index + 1 >= len(args):
        raise ConfigError("--config needs a path to a YAML recipe")
    if not Path(args[index + 1]).is_file():
        raise ConfigError(f"recipe file not found: {args[index + 1]}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of a config dataclass (TRL/transformers configs use their own `to_dict`)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.loads(json.dumps(raw, default=str))


def save_resolved_config(config: Any, directory: str | Path) -> Path:
    """Write the fully resolved config beside an output, so every result says how it was made."""
    from distillab.fileio import atomic_write_text

    path = Path(directory) / RESOLVED_CONFIG_NAME
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
