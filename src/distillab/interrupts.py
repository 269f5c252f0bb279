"""How a stage stops: Ctrl-C (SIGINT) and `kill` (SIGTERM) end any stage alike, and the processes it starts end
with it.

`exit_on_user_error` (errors.py) runs every CLI entry point inside `stopping_on_signals`: SIGTERM then raises
`Interrupted` where Ctrl-C raises `KeyboardInterrupt`, so both unwind the stage (each stage writes its outputs
atomically and marks them complete last: what is done is kept for a relaunch) and end it with one line and exit
code 128 + the signal (130, 143). Every multiprocessing child started meanwhile (distilabel's workers, the vLLM
engine they start, data loader workers) is killed by the kernel when its parent dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal: Ctrl-C (SIGINT) or `kill` (SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_signal(err: KeyboardInterrupt) -> signal.Signals:
    """The signal that stopped a run (a plain KeyboardInterrupt is Ctrl-C)."""
    return signal.Signals(getattr(err, "signum", signal.SIGINT))


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in this process (handlers restored on exit); multiprocessing
    children started meanwhile die with their parent."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    children_die_with_parent()
    owner = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked child that kept this handler: the signal's default action
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@functools.cache
def children_die_with_parent() -> None:
    """Every multiprocessing child of this process (and, forked, of its children) asks the kernel for SIGKILL
    when its parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere nothing changes). Once per process."""
    if sys.platform.startswith("linux"):
        multiprocessing.util.register_after_fork(_AFTER_FORK_KEY, _die_with_parent)


class _AfterForkKey:
    """`register_after_fork` keeps its callbacks while a (weak-referenced) key object lives."""


_AFTER_FORK_KEY = _AfterForkKey()


def _die_with_parent(_: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)
