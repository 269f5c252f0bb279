"""Config parsing shared by every command: dataclasses + YAML recipe (`--config`) + CLI overrides (TRL conventions).

A command's options are the fields of a config dataclass (`metadata={"help": ..., "choices": ...}`): each is a
YAML key of a recipe and a flag spelled `--a_b` or `--a-b`; flags override the recipe. Commands with
subcommands (`distillab scaling predict`) add one subparser per config dataclass, as TRL's `make_parser` does.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from trl import TrlParser

from distillab.errors import ConfigError

T = TypeVar("T")

RESOLVED_CONFIG_NAME = "distillab_config.yaml"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (docstrings), defaults after each option's help."""


class ConfigParser(TrlParser):
    """TrlParser whose usage errors are one-line `ConfigError`s (exit 2 through `exit_on_user_error`)."""

    def __init__(self, dataclass_types: Any = None, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(dataclass_types, **kwargs)
        # Read "-3e11" as a (bad) value rather than an unknown option, as Python >= 3.13's argparse does.
        self._negative_number_matcher = re.compile(r"^-\.?\d")
        for action in self._actions:  # help and errors name a flag `--a-b/--a_b`
            action.option_strings.sort(key=lambda option: "_" in option)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def parse_config(config_cls: type[T], argv: Sequence[str] | None = None) -> T:
    """Parse `--config recipe.yaml` then `--field value` overrides (both `--a_b` and `--a-b`) into `config_cls`.

    Unknown flags or recipe keys, bad values, a missing recipe file and invalid YAML are `ConfigError`s.
    """
    args = _arguments(argv)
    with _as_config_errors():
        (config,) = ConfigParser(dataclass_types=[config_cls]).parse_args_and_config(args=args)
    return config


def parse_command(parser: ConfigParser, argv: Sequence[str] | None = None) -> tuple[str, Any]:
    """Parse `COMMAND [--config recipe.yaml] [--field value ...]` with a parser whose subcommands each hold one
    config dataclass (`subparsers.add_parser(name, dataclass_types=[cls])`): the command and its config."""
    args = _arguments(argv)
    with _as_config_errors():
        (namespace,) = parser.parse_args_and_config(args=args)
        (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = getattr(namespace, commands.dest)
        (config_cls,) = commands.choices[command].dataclass_types
        names = [f.name for f in dataclasses.fields(config_cls) if f.init]
        return command, config_cls(**{name: getattr(namespace, name) for name in names})


def add_positional(parser: ConfigParser, name: str) -> None:
    """Let a command take its config field `name` as a positional argument too (`fit runs.csv`)."""
    flag = parser._option_string_actions[f"--{name}"]
    parser.add_argument(name, nargs="?", default=argparse.SUPPRESS, metavar=name.upper(), help=flag.help)


def check_choices(config: Any) -> None:
    """Recipe values skip argparse's `choices`: check every field that declares them (a `ConfigError`)."""
    for item in dataclasses.fields(config):
        choices, value = item.metadata.get("choices"), getattr(config, item.name)
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"{item.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def must_start_over(recorded: str | None, fingerprint: str, *, overwrite: bool, holder: str) -> bool:
    """Whether an existing output that `recorded` a settings fingerprint must be started over to be made with the
    settings of `fingerprint`: it is never resumed or reused with other settings, and replacing it needs
    `overwrite` (otherwise a `ConfigError` that starts with `holder`, e.g. "output_dir X holds a run")."""
    if recorded == fingerprint:
        return False
    if not overwrite:
        raise ConfigError(
            f"{holder} with a different config; pass --overwrite to replace it or choose another --output_dir"
        )
    return True


def model_reference(name_or_path: str) -> str:
    """A model as configs and outputs record it: a local folder by its absolute path (so a dataset or run that
    names it works from any directory), a Hub id unchanged."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path


def _arguments(argv: Sequence[str] | None) -> list[str]:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML recipe")
        if not Path(args[index + 1]).is_file():
            raise ConfigError(f"recipe file not found: {args[index + 1]}")
    return args


@contextlib.contextmanager
def _as_config_errors() -> Iterator[None]:
    try:
        yield
    except ValueError as err:  # unknown recipe keys, invalid field values raised in __post_init__
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe is not valid YAML: {err}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-safe dict of a config dataclass (TRL/transformers configs use their own `to_dict`)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.loads(json.dumps(raw, default=str))


def config_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of the settings that make an output (a dataset's rows, a student's weights): a run resumed
    or reused in the same folder must match it."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_resolved_config(config: Any, directory: str | Path) -> Path:
    """Write the fully resolved config beside an output, so every result says how it was made."""
    from distillab.fileio import atomic_write_text

    path = Path(directory) / RESOLVED_CONFIG_NAME
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
