"""`distillab generate` end to end on the tiny teacher: contract, resume after a kill, bad input, Hub push."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import typing

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distillab import cli
from distillab.data.hardlabels import load_hard_labels, read_metadata
from distillab.data.tokenizers import tokenizer_fingerprint
from distillab.generate.config import GenerateConfig
from distillab.generate.prompts import build_prompt_set
from distillab.generate.run import generate
from tests.cli import assert_user_error, cli_env, in_process_user_error, run_distillab

FIXTURE_ARGS = ["--generator", "basic_arithmetic", "--num_prompts", "48", "--max_new_tokens", "24"]


def load_rows(directory) -> list[dict]:
    return load_hard_labels(str(directory)).to_list()


def reference_greedy(model_dir, messages: list[dict], max_new_tokens: int) -> list[int]:
    """Unbatched greedy decoding with plain transformers: the ground truth for the teacher's completion."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return out[0, ids.shape[1] :].tolist()


def test_dataset_follows_the_contract(hard_label_dir, tiny_teacher):
    rows = load_rows(hard_label_dir)
    config = GenerateConfig(
        model=str(tiny_teacher), generator="basic_arithmetic", num_prompts=48, max_new_tokens=24
    )
    requests = build_prompt_set(config).requests
    assert [r["id"] for r in rows] == [r["id"] for r in requests]  # prompt order, stable ids
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    for row, request in zip(rows, requests, strict=True):
        assert row["prompt"] == request["prompt"] and row["reference"] == request["reference"]
        assert row["messages"] == [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
        prompt_text = tokenizer.apply_chat_template(
            row["messages"][:1], tokenize=False, add_generation_prompt=True
        )
        assert row["prompt_tokens"] == len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        assert row["finish_reason"] in {"stop", "length"}
        assert row["completion_tokens"] == 24 or row["finish_reason"] == "stop"
    metadata = read_metadata(hard_label_dir)
    assert metadata["complete"] is True and metadata["rows"] == 48
    assert metadata["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert metadata["truncation_rate"] == sum(r["finish_reason"] == "length" for r in rows) / 48
    assert metadata["completion_tokens"]["max"] == max(r["completion_tokens"] for r in rows)
    assert metadata["engine"]["name"] == "transformers" and metadata["generation"]["temperature"] == 0.0
    card = (hard_label_dir / "README.md").read_text()
    assert card.startswith("---\n") and "path: data/train-*" in card and "truncation rate" in card
    assert (hard_label_dir / "distillab_config.yaml").is_file()
    assert not (hard_label_dir / ".shards").exists()


def test_batched_completions_equal_unbatched_greedy(hard_label_dir, tiny_teacher):
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    for row in load_rows(hard_label_dir)[:3]:
        tokens = reference_greedy(tiny_teacher, row["messages"][:1], max_new_tokens=24)
        assert row["completion"] == tokenizer.decode(tokens, skip_special_tokens=True)
        assert row["completion_tokens"] == len(tokens)


def test_second_run_is_a_no_op(hard_label_dir, tiny_teacher, capsys):
    data_file = next((hard_label_dir / "data").glob("*.parquet"))
    before = data_file.stat().st_mtime_ns
    cli.main(["generate", "--model", str(tiny_teacher), *FIXTURE_ARGS, "--output_dir", str(hard_label_dir)])
    assert "already complete (48 rows); nothing to do" in capsys.readouterr().out
    assert data_file.stat().st_mtime_ns == before


def live(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has exited: only its exit status waits to be collected)."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group", "exit_code"),
    [
        (signal.SIGINT, True, 130),
        (signal.SIGTERM, False, 143),
        (signal.SIGTERM, True, 143),
        (signal.SIGKILL, False, -signal.SIGKILL),
    ],
    ids=["ctrl-c", "kill", "kill-group", "kill-9"],
)
def test_stopped_run_leaves_no_worker_and_resumes(
    tmp_path, tiny_teacher, hard_label_dir, signum, to_group, exit_code, capsys
):
    """Ctrl-C (to the terminal's process group), `kill` and `kill -9` (to the parent only) and a SIGTERM to the
    whole process group (`timeout`, a batch scheduler: before, it killed distilabel's workers and manager, and
    generate hung for good) stop generate: no distilabel worker outlives it, the flushed shards stay, and a
    relaunch completes without regenerating them."""
    output_dir = tmp_path / "stopped"
    argv = [
        sys.executable,
        "-m",
        "distillab.cli",
        "generate",
        "--model",
        str(tiny_teacher),
        *FIXTURE_ARGS,
        "--batch_size",
        "2",
        "--output_dir",
        str(output_dir),
    ]
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as stderr:
        process = subprocess.Popen(
            argv, env=cli_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        shards = output_dir / ".shards"
        deadline = time.time() + 120
        while time.time() < deadline and len(list(shards.glob("part-*.parquet"))) < 2:
            time.sleep(0.05)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert workers, "distilabel started no worker process"
        (os.killpg if to_group else os.kill)(process.pid, signum)
        # each step finishes its batch before the stop: slow on a loaded machine
        assert process.wait(timeout=300) == exit_code
        deadline = time.time() + 30
        while live(workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not live(workers), f"workers outlived generate: {live(workers)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    if signum != signal.SIGKILL:
        err = stderr_file.read_text()
        assert "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            f"interrupted by {signal.Signals(signum).name}: finished work is kept; re-run the same command to resume"
        )
    flushed = len(list(shards.glob("part-*.parquet")))
    assert flushed >= 2 and read_metadata(output_dir)["complete"] is False
    assert not (output_dir / "data").exists()

    # Relaunched with larger batches and in this process (the same `distillab` command line through cli.main,
    # without a second interpreter start-up) only to be quicker: the batch size is no part of a row id or the
    # fingerprint, and the stopped process is gone either way.
    relaunch = [*argv[3 : argv.index("--batch_size") + 1], "16", *argv[argv.index("--batch_size") + 2 :]]
    capsys.readouterr()
    cli.main(relaunch)
    already = int(capsys.readouterr().out.split("generations, ")[1].split(" already")[0])
    assert 2 * flushed <= already < 48  # nothing flushed was generated again
    assert load_rows(output_dir) == load_rows(hard_label_dir)  # exactly the uninterrupted run's rows
    assert read_metadata(output_dir)["complete"] is True


def test_failed_pipeline_ends_with_one_error_line(tmp_path, tiny_teacher):
    """A teacher whose weights do not load: the error names the cause, and nothing prints after it (distilabel's
    log listener used to print a traceback at exit)."""
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    # Readable files that do not fit together (the weights are of another width): the engine fails to load
    # inside the pipeline, after the up-front file checks have passed.
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(
        json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]})
    )
    result = run_distillab(
        "generate",
        "--model",
        str(teacher),
        "--generator",
        "chain_sum",
        "--num_prompts",
        "2",
        "--max_new_tokens",
        "2",
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert_user_error(result, "the transformers teacher engine failed: ")
    assert read_metadata(tmp_path / "out")["complete"] is False


def test_skip_invalid_drops_and_counts_in_card(tmp_path, tiny_teacher):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "x = 1"}\n{"prompt": ""}\n{"prompt": "import os"}\n')
    output_dir = generate(
        GenerateConfig(
            model=str(tiny_teacher),
            dataset=str(prompts),
            max_new_tokens=4,
            skip_invalid=True,
            output_dir=str(tmp_path / "out"),
        )
    )
    assert [r["prompt"] for r in load_rows(output_dir)] == ["x = 1", "import os"]
    metadata = read_metadata(output_dir)
    assert metadata["prompts"]["invalid_dropped"] == 1
    assert metadata["prompts"]["invalid_examples"] == ["row 1: field 'prompt' is empty"]
    assert "1 invalid dropped" in (output_dir / "README.md").read_text()


def test_changed_config_needs_overwrite(hard_label_dir, tiny_teacher, capsys):
    argv = [
        "generate",
        "--model",
        str(tiny_teacher),
        "--generator",
        "basic_arithmetic",
        "--num_prompts",
        "48",
        "--max_new_tokens",
        "5",
        "--output_dir",
        str(hard_label_dir),
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "holds a run with a different config; pass --overwrite" in capsys.readouterr().err
    assert read_metadata(hard_label_dir)["rows"] == 48  # untouched


# --- bad input: exit 2, one line naming the row/field/file, nothing marked complete --------------------------


def user_error(capsys, argv) -> str:
    return in_process_user_error(cli.main, argv, capsys)


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"text": "a"}], [], "prompt column 'prompt' not found in {file}; columns: text"),
        ([{"prompt": "a"}, {"prompt": ""}], [], "row 1: field 'prompt' is empty in {file}"),
        ([{"prompt": "a"}, {"prompt": None}], [], "row 1: field 'prompt' is NoneType, not a string"),
        ([{"prompt": "x" * 3000}], [], "row 0: prompt is"),
        ([{"prompt": None}, {"prompt": 3}], [], "row 0: field 'prompt' is NoneType, not a string"),
        (
            [{"prompt": None}, {"prompt": 3}],
            ["--skip_invalid"],
            "no valid prompts left in {file} (2 invalid)",
        ),
        ([], [], "the prompt file {file} is empty"),
        ([{"prompt": "a"}], ["--engine", "tgi"], "unknown --engine 'tgi'"),
        (
            [{"prompt": "a"}],
            ["--engine", "openai", "--base_url", "http://127.0.0.1:9/v1"],
            "cannot reach server at http://127.0.0.1:9/v1",
        ),
    ],
)
def test_bad_input(tmp_path, tiny_teacher, capsys, rows, extra, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output_dir = tmp_path / "out"
    line = user_error(
        capsys,
        [
            "generate",
            "--model",
            str(tiny_teacher),
            "--dataset",
            str(prompts),
            "--output_dir",
            str(output_dir),
            *extra,
        ],
    )
    assert message.format(file=prompts) in line
    assert not output_dir.exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_prompt_file_that_is_not_utf8(tmp_path, tiny_teacher, capsys, suffix):
    prompts = tmp_path / f"p{suffix}"
    prompts.write_bytes(
        {".jsonl": b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n', ".csv": b"prompt\na\ncaf\xe9\n"}[suffix]
    )
    output_dir = tmp_path / "out"
    argv = [
        "generate",
        "--model",
        str(tiny_teacher),
        "--dataset",
        str(prompts),
        "--output_dir",
        str(output_dir),
    ]
    for extra in ([], ["--skip_invalid"]):
        line = user_error(capsys, [*argv, *extra])
        assert f"the prompt file {prompts} is not UTF-8 text (line {2 if suffix == '.jsonl' else 3}:" in line
    assert not output_dir.exists()


def test_unknown_dataset_and_missing_teacher(tmp_path, tiny_teacher, capsys):
    line = user_error(
        capsys,
        [
            "generate",
            "--model",
            str(tiny_teacher),
            "--dataset",
            "no-such-org/no-such-data",
            "--output_dir",
            str(tmp_path / "a"),
        ],
    )
    assert "cannot load dataset 'no-such-org/no-such-data'" in line
    line = user_error(
        capsys,
        [
            "generate",
            "--model",
            str(tmp_path / "missing"),
            "--generator",
            "chain_sum",
            "--output_dir",
            str(tmp_path / "b"),
        ],
    )
    assert f"cannot load the teacher tokenizer from '{tmp_path / 'missing'}'" in line


def test_unwritable_output_dir_in_a_real_process(tmp_path, tiny_teacher):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_distillab(
        "generate",
        "--model",
        str(tiny_teacher),
        "--generator",
        "chain_sum",
        "--num_prompts",
        "2",
        "--output_dir",
        str(blocker / "out"),
    )
    assert_user_error(result, f"output_dir {blocker / 'out'} is not writable")


def test_recipe_with_unknown_key_in_a_real_process(tmp_path):
    recipe = tmp_path / "generate.yaml"
    recipe.write_text("model: m\ngenerator: chain_sum\nmax_new_tokenz: 3\n")
    assert_user_error(run_distillab("generate", "--config", str(recipe)), "max_new_tokenz")


# --- Hub push (the real huggingface_hub calls, recorded instead of sent) --------------------------------------


class RecordingHfApi:
    calls: typing.ClassVar[list] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_uploads_the_dataset_folder(hard_label_dir, tiny_teacher, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    RecordingHfApi.calls = []
    cli.main(
        [
            "generate",
            "--model",
            str(tiny_teacher),
            *FIXTURE_ARGS,
            "--output_dir",
            str(hard_label_dir),
            "--push-to-hub",
            "me/hard-labels",
            "--private",
        ]
    )
    (_, repo, create), (_, upload) = RecordingHfApi.calls
    assert (repo, create) == ("me/hard-labels", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert upload["folder_path"] == str(hard_label_dir) and upload["repo_type"] == "dataset"
    assert "data/*.parquet" in upload["allow_patterns"] and "README.md" in upload["allow_patterns"]


def test_push_to_hub_without_token(hard_label_dir, tiny_teacher, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    line = user_error(
        capsys,
        [
            "generate",
            "--model",
            str(tiny_teacher),
            *FIXTURE_ARGS,
            "--output_dir",
            str(hard_label_dir),
            "--push_to_hub",
            "me/x",
        ],
    )
    assert "--push_to_hub needs a Hugging Face token" in line
