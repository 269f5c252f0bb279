"""User-facing errors: one line, actionable, exit code 2 (no traceback)."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from distillab.interrupts import stop_signal, stopping_on_signals

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable[..., object])


class DistillabError(Exception):
    """Base class for errors caused by user input (configs, data, paths, models)."""

    def __init__(self, message: str):
        # One line: newlines would break the "one-line error" contract of the CLI.
        super().__init__(" ".join(str(message).split()))


class ConfigError(DistillabError):
    """A config field or CLI flag has an invalid value."""


class DataError(DistillabError):
    """A dataset row, column or file does not satisfy a data contract."""


class EngineError(DistillabError):
    """A teacher engine cannot be created or reached."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line errors about a library's failure."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def interrupted_line(signum: int) -> str:
    return f"interrupted by {signal.Signals(signum).name}: finished work is kept; re-run the same command to resume"


def exit_on_user_error(main: F) -> F:
    """Decorate a CLI entry point: DistillabError -> `error: ...` on stderr and exit 2; Ctrl-C or SIGTERM ->
    `interrupted ...` on stderr and exit 130 / 143, with what is done kept (distillab.interrupts)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            with stopping_on_signals():
                return main(*args, **kwargs)
        except DistillabError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as err:
            signum = stop_signal(err)
            print(interrupted_line(signum), file=sys.stderr)
            raise SystemExit(128 + signum) from None

    return wrapper  # type: ignore[return-value]
