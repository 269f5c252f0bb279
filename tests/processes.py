"""Processes a test (or a bench) starts on 127.0.0.1 and must end: servers, a Ray head."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.cli import cli_env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll `ready()` until it is true; fail if `process` exits first or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"{what} exited with code {process.returncode}"
        assert time.time() < deadline, f"{what} not ready after {timeout:.0f} s"
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen, timeout: float = 60) -> None:
    """End a process started with `start_new_session=True` and everything in its process group: SIGTERM, then
    SIGKILL for whatever is left after `timeout` seconds (or once the leader has exited)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def ray_head(num_cpus: int = 4, timeout: float = 180) -> Iterator[str]:
    """A one-node Ray cluster (`ray start --head --block`) on 127.0.0.1; yields its address HOST:PORT and ends
    it (the head takes its raylet, GCS and workers down with it) on exit. Its env sets
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM the head otherwise first drains the node for up to 30 s
    (for Serve traffic; a test cluster has none), which made the teardown after a driver had used it ~35 s."""
    port = free_port()
    temp_dir = f"/tmp/distillab-ray-{port}"  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=cli_env(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: accepts(port), head, timeout, what="the Ray head")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
