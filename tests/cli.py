"""Run distillab commands in a real subprocess, and check the one-line user-error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


# A test's Ray head and its drivers agree on no token auth: with RAY_AUTH_MODE unset, Ray turns token auth on for
# any process that finds ~/.ray/auth_token (left by any earlier local ray.init), and a head started before the
# file existed then refuses the driver ("Failed to connect to Ray cluster").
RAY_AUTH = {"RAY_AUTH_MODE": "disabled"}


def cli_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **RAY_AUTH,
        **extra,
    }


def run_distillab(*argv: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`distillab ARGV...` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "distillab.cli", *argv],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
        **kwargs,
    )


def in_process_user_error(main, argv: list[str], capsys) -> str:
    """Run a CLI `main(argv)` in this process; it must exit 2 with an `error: ...` last line (returned)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-3000:]
    return last


def assert_user_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit code 2, no traceback, and the last stderr line is a single `error: ...` line containing `message`."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    assert message in last, last
