"""Small helpers shared by the evaluate modules."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (one-line user errors)."""
    return (str(err).strip() or type(err).__name__).splitlines()[0]
