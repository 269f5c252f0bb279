"""Ctrl-C and SIGTERM end every stage alike (one line, exit 130 / 143, no traceback); children die with their
parent. The generate and label runs that are really stopped and resumed are in tests/generate."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import subprocess
import sys

import psutil
import pytest

from distillab import cli
from distillab.errors import exit_on_user_error
from distillab.interrupts import GUARD_GRACE_S
from tests.cli import cli_env
from tests.processes import wait_until

PR_GET_PDEATHSIG = 2  # <linux/prctl.h>


def stopped(main, capsys) -> tuple[int, str]:
    """Run a CLI main that gets stopped: its exit code and its stderr."""
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt went through the CLI entry point (a traceback for the user)")
    return exit_info.value.code, capsys.readouterr().err


# stage -> (the function its main hands the parsed config to, the arguments of a valid config)
STAGE_WORK = {
    "label": ("distillab.generate.label.label", ["--dataset", "."]),
    "sft": ("distillab.sft.train_student", ["--dataset_name", "d", "--student_kind", "fresh"]),
    "kd": ("distillab.kd.train.train_kd", ["--dataset_name", "d", "--student_kind", "fresh"]),
    "evaluate": ("distillab.evaluate.run.evaluate", ["--teacher", "t"]),
}


@pytest.mark.parametrize("stage", STAGE_WORK)
def test_ctrl_c_in_a_stage_is_one_line_and_exit_130(stage, tmp_path, monkeypatch, capsys):
    target, argv = STAGE_WORK[stage]
    module, name = target.rsplit(".", 1)

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, interrupted)
    monkeypatch.chdir(tmp_path)
    handlers = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    code, err = stopped(lambda: cli.main([stage, *argv, "--output_dir", str(tmp_path / "out")]), capsys)
    assert code == 130
    assert err.strip().splitlines() == [
        "interrupted by SIGINT: finished work is kept; re-run the same command to resume"
    ]
    assert [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)] == handlers  # given back


SIGTERM_PROGRAM = """
import os, signal
from distillab.errors import exit_on_user_error
from tests.cli import cli_env

@exit_on_user_error
def main():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # not reached: the handler raises at once
    finally:
        print("cleaned up")  # the stage's own cleanup runs

main()
"""


def test_sigterm_unwinds_the_stage_and_exits_143():
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_PROGRAM], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout) == (143, "cleaned up\n")
    assert result.stderr.strip() == (
        "interrupted by SIGTERM: finished work is kept; re-run the same command to resume"
    )


def _report_parent_death_signal(queue) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int()
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(value))
    queue.put(value.value)


def test_children_of_a_stage_die_with_it():
    """A multiprocessing child started by a stage is killed by the kernel when the stage dies (even by SIGKILL)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    @exit_on_user_error
    def main():
        child = context.Process(target=_report_parent_death_signal, args=(queue,))
        child.start()
        child.join()

    main()
    assert queue.get(timeout=30) == signal.SIGKILL


GUARDED_PROGRAM = """
import multiprocessing, subprocess, sys, time
from distillab.interrupts import new_children_die_with_this_process

if __name__ == "__main__":
    grandchild = [sys.executable, "-c", "import time; time.sleep(600)"]
    with new_children_die_with_this_process():  # a spawned child (as vLLM starts its engine) with a child
        child = multiprocessing.get_context("spawn").Process(target=subprocess.call, args=(grandchild,))
        child.start()
    print(child.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_spawned_children_started_in_the_guard_die_with_their_parent(signum):
    """`spawn` children keep no PR_SET_PDEATHSIG (vLLM's engine core outlived a killed `generate` for 33
    minutes): those started inside `new_children_die_with_this_process`, and their children, end when the
    process that started them dies, even by SIGKILL."""
    program = subprocess.Popen(
        [sys.executable, "-c", GUARDED_PROGRAM], env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    family: list[psutil.Process] = []
    try:
        child = psutil.Process(int(program.stdout.readline()))
        wait_until(lambda: child.children(), program, timeout=60, what="the guarded program")
        family = [child, *child.children(recursive=True)]
        program.send_signal(signum)
        program.wait(timeout=30)
        _, alive = psutil.wait_procs(family, timeout=GUARD_GRACE_S + 20)
        assert not alive, f"left running after the parent died: {alive}"
    finally:
        program.kill()
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()
