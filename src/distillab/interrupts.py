"""How a stage stops: Ctrl-C (SIGINT) and `kill` (SIGTERM) end any stage alike, and the processes it starts end
with it.

`exit_on_user_error` (errors.py) runs every CLI entry point inside `stopping_on_signals`: SIGTERM then raises
`Interrupted` where Ctrl-C raises `KeyboardInterrupt`, so both unwind the stage (each stage writes its outputs
atomically and marks them complete last: what is done is kept for a relaunch) and end it with one line and exit
code 128 + the signal (130, 143). Every multiprocessing child started meanwhile (distilabel's workers, data loader
workers) is killed by the kernel when its parent dies, even by SIGKILL. Children started with `spawn` are out of
that reach (a fresh interpreter keeps none of its parent's settings): the code that starts them (a vLLM engine: its
engine core and workers) does so inside `new_children_die_with_this_process`, whose guard process ends them when
the process that started them dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.util
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GUARD_POLL_S = 0.2  # how often a guard looks for new children while its block runs
GUARD_GRACE_S = 10.0  # a guarded child's time between SIGTERM and SIGKILL (vLLM's engine shuts down in it)


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


@contextlib.contextmanager
def new_children_die_with_this_process() -> Iterator[None]:
    """The children this process starts inside the block end when it dies, however it dies (SIGKILL included)
    and whenever (while they start, too), with their own children. A guard process, in a session of its own,
    notes this process's new children every GUARD_POLL_S until the block ends and waits on a pipe for this
    process's death; then it sends them SIGTERM and, after GUARD_GRACE_S, SIGKILL to whatever is left."""
    me = psutil.Process()
    before = [str(child.pid) for child in me.children()]
    code = "from distillab.interrupts import _guard; _guard()"
    guard = subprocess.Popen(
        [sys.executable, "-c", code, str(me.pid), *before], stdin=subprocess.PIPE, start_new_session=True
    )
    _GUARDS.append(guard)  # its pipe stays open until this process dies
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # a guard that was killed guards nothing, and says nothing
            guard.stdin.write(b"block ended\n")
            guard.stdin.flush()


_GUARDS: list[subprocess.Popen] = []


def _guard() -> None:
    """The guard process. Arguments: its parent's pid, then the pids of the parent's children to leave alone."""
    parent_pid, *before = map(int, sys.argv[1:])
    if os.getppid() != parent_pid:  # the parent died before the guard started: its children are unknown
        return
    parent = psutil.Process(parent_pid)
    known = {*before, os.getpid()}
    started: list[psutil.Process] = []

    def note_new_children() -> None:
        with contextlib.suppress(psutil.Error):  # the parent is gone: it starts nothing more
            new = [child for child in parent.children() if child.pid not in known]
            started.extend(new)
            known.update(child.pid for child in new)

    while not select.select([sys.stdin], [], [], GUARD_POLL_S)[0]:  # a line (the block ended) or end of file
        note_new_children()
    note_new_children()
    sys.stdin.buffer.read()  # returns when the parent dies
    _end(started)


def _end(processes: list[psutil.Process]) -> None:
    """SIGTERM to `processes` and their children, SIGKILL to those alive GUARD_GRACE_S later; multiprocessing's
    resource tracker is spared (it removes the shared memory of the processes it outlives)."""
    everyone = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running():  # the same process, not a new one under its pid
                everyone += [process, *process.children(recursive=True)]
    everyone = [p for p in everyone if not _is_resource_tracker(p)]
    for process in everyone:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(everyone, timeout=GUARD_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _is_resource_tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in process.cmdline())
    return False
