"""`distillab demo` chains the stage commands; finished stages are recognised by their own completion markers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from distillab import demo
from distillab.configs import parse_config
from distillab.errors import ConfigError, DistillabError
from distillab.generate.config import GenerateConfig
from distillab.kd.config import DistillabKDConfig
from distillab.sft.config import DistillabSFTConfig
from distillab.sft.train import steps_for_tokens

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


STUDENTS = ["supervised-s42", "hard-s42", "soft-s42", "supervised-s43", "hard-s43", "soft-s43"]


def module(stage: demo.Stage) -> str:
    return stage.command[stage.command.index("-m") + 1]


def test_stages_are_the_users_commands_in_order(tmp_path):
    plan = demo.stages(RECIPES, tmp_path, quick=False)
    assert [s.name for s in plan] == [
        "teacher",
        "hard + soft labels",
        "held-out teacher generations",
        *(f"student {name}" for name in STUDENTS),
        "evaluation + report",
    ]
    students = plan[3:9]
    assert [module(s) for s in students] == ["distillab.sft", "distillab.sft", "distillab.kd"] * 2
    recipes = [s.command[s.command.index("--config") + 1] for s in students]
    assert recipes == [str(RECIPES / f"{r}.yaml") for r in ("supervised", "sft", "kd")] * 2
    for stage, name in zip(students, STUDENTS, strict=True):
        flags = dict(zip(stage.command[-6::2], stage.command[-5::2], strict=True))
        assert flags == {
            "--dataset_name": str(tmp_path / "generate"),
            "--seed": name[-2:],
            "--output_dir": str(tmp_path / name),
        }
    evaluate = plan[-1].command
    given = evaluate[evaluate.index("--students") + 1 : evaluate.index("--heldout_data")]
    assert given == [f"{name}={tmp_path / name}" for name in STUDENTS]
    quick = demo.stages(RECIPES, tmp_path, quick=True)
    assert [s.name for s in quick[3:-1]] == [f"student {name}" for name in STUDENTS[:3]]  # one seed
    assert "--train_tokens" in quick[3].command
    for recipe in ("generate", "supervised", "sft", "kd", "evaluate"):
        assert (RECIPES / f"{recipe}.yaml").is_file()


def test_the_three_students_share_one_initialisation_and_one_token_budget():
    """Same student (kind, pruning, preset) and the same D in the three training recipes; only the labels differ."""
    shared = (
        "student_kind",
        "prune_keep_first",
        "prune_keep_last",
        "train_tokens",
        "learning_rate",
        "optim",
        "lr_scheduler_type",
        "warmup_steps",
        "max_length",
    )
    supervised, hard, soft = (
        yaml.safe_load((RECIPES / f"{name}.yaml").read_text()) for name in ("supervised", "sft", "kd")
    )
    assert all(supervised[key] == hard[key] == soft[key] for key in shared)
    assert supervised["train_on"] == "reference" and "train_on" not in hard and "train_on" not in soft


def test_the_three_students_take_the_same_steps_at_the_same_d():
    """On the demo's data (64 prompts, measured: 64 reference rows with 187 supervised tokens; 54 finished teacher
    replies with 623), the recipes' batch sizes give each step ~11.5 supervised tokens, so the same D takes the
    same steps: supervised ceil(64/4) = 16 steps an epoch, 1200/187 * 16 = 102.7 -> 103; hard and soft 54 steps
    an epoch, 1200/623 * 54 = 104.0 -> 104."""
    recipes = {
        name: yaml.safe_load((RECIPES / f"{name}.yaml").read_text()) for name in ("supervised", "sft", "kd")
    }
    epochs = {"supervised": (64, 187), "sft": (54, 623), "kd": (54, 623)}
    steps = {}
    for name, recipe in recipes.items():
        sequences, supervised_tokens = epochs[name]
        config = SimpleNamespace(
            per_device_train_batch_size=recipe["per_device_train_batch_size"],
            gradient_accumulation_steps=1,
            world_size=1,
            train_tokens=recipe["train_tokens"],
        )
        data = SimpleNamespace(
            report=SimpleNamespace(sequences=sequences, supervised_tokens=supervised_tokens)
        )
        steps[name] = steps_for_tokens(config, data)
    assert steps == {"supervised": 103, "sft": 104, "kd": 104}


def test_config_from_a_recipe_and_flags(tmp_path):
    (tmp_path / "demo.yaml").write_text("quick: true\noutput_dir: out/demo\n")
    config = parse_config(
        demo.DemoConfig, ["--config", str(tmp_path / "demo.yaml"), "--output-dir", "elsewhere"]
    )
    assert (config.quick, config.fresh, config.output_dir, config.recipes) == (
        True,
        False,
        Path("elsewhere"),
        Path("recipes/demo"),
    )


def test_jobs_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        parse_config(demo.DemoConfig, ["--jobs", "0"])


STAGE_CONFIGS = {
    "generate": GenerateConfig,
    "distillab.sft": DistillabSFTConfig,
    "distillab.kd": DistillabKDConfig,
}


def fingerprint(stage: demo.Stage) -> str:
    """The config fingerprint of a stage's command, as the stage itself computes it when it runs."""
    ((index, config_cls),) = [
        (i, STAGE_CONFIGS[a]) for i, a in enumerate(stage.command) if a in STAGE_CONFIGS
    ]
    return parse_config(config_cls, stage.command[index + 1 :]).fingerprint()


def write_finished(out: Path, plan: list[demo.Stage]) -> None:
    """The outputs of the plan's generate, held-out and first two student stages, finished, and of an
    unfinished third student (the others not started)."""
    generate, heldout, first, second, third = plan[1:6]
    write_json(
        out / "generate" / "distillab.json",
        {"complete": True, "config_fingerprint": fingerprint(generate), "soft_labels": {"complete": True}},
    )
    write_json(
        out / "heldout" / "distillab.json", {"complete": True, "config_fingerprint": fingerprint(heldout)}
    )
    for stage, complete in ((first, True), (second, True), (third, False)):
        run = stage.command[stage.command.index("--output_dir") + 1]
        write_json(
            Path(run) / "distillab_run.json", {"complete": complete, "config_fingerprint": fingerprint(stage)}
        )


def test_finished_stages_are_recognised(tmp_path):
    plan = demo.stages(RECIPES, tmp_path, quick=False)
    assert not any(stage.done() for stage in plan[1:])
    write_finished(tmp_path, plan)
    assert [stage.done() for stage in plan[1:7]] == [True, True, True, True, False, False]
    assert not any(stage.other_settings() for stage in plan)
    metadata = json.loads((tmp_path / "generate" / "distillab.json").read_text())
    write_json(tmp_path / "generate" / "distillab.json", {**metadata, "soft_labels": {}})
    assert not plan[1].done()  # hard labels alone: the soft labels are still missing


def test_stages_made_with_other_settings_are_not_reused(tmp_path):
    """A `--quick` demo's outputs are not a full demo's, and the other way round: each is redone."""
    write_finished(tmp_path, demo.stages(RECIPES, tmp_path, quick=True))
    full = demo.stages(RECIPES, tmp_path, quick=False)
    assert not any(stage.done() for stage in full[1:6])
    assert [stage.other_settings() for stage in full[1:6]] == [True, True, True, True, True]


def output_dir(command: list[str]) -> str:
    return command[command.index("--output_dir") + 1]


class FakeStages:
    """`subprocess.Popen` for the demo: records each command in start order, its OMP threads, and the most
    stages running at once; a stage ends when polled (or waited for). The command holding `fail` exits 1."""

    def __init__(self, fail: str | None = None):
        self.commands, self.threads, self.running, self.most, self.terminated = [], [], 0, 0, []
        self.fail = fail

    def __call__(self, command, env, stdout=None, stderr=None):
        self.commands.append(command)
        self.threads.append(int(env["OMP_NUM_THREADS"]))
        self.running += 1
        self.most = max(self.most, self.running)
        if stdout is not None:
            stdout.write(f"output of {output_dir(command)}\n")
        return FakeProcess(self, 1 if self.fail and self.fail in command else 0)


class FakeProcess:
    def __init__(self, stages: FakeStages, code: int):
        self.stages, self.code, self.returncode = stages, code, None

    def poll(self):
        if self.returncode is None:
            self.returncode = self.code
            self.stages.running -= 1
        return self.returncode

    def wait(self):
        return self.poll()

    def terminate(self):
        self.stages.terminated.append(self)


def finished_teacher(tmp_path, monkeypatch) -> None:
    teacher = tmp_path / "teacher"
    write_json(teacher / "distillab_asset.json", {})
    monkeypatch.setattr(demo, "TEACHER_DIR", teacher)


def test_the_held_out_generations_and_students_run_two_at_a_time_on_their_share_of_the_cores(
    tmp_path, monkeypatch
):
    """After the labels (alone, every core): the held-out generations and the six students, two at a time, one
    core each on 2 cores, in plan order; then the evaluation alone. Their output goes to DIR/logs/."""
    finished_teacher(tmp_path, monkeypatch)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    stages = FakeStages()
    monkeypatch.setattr(demo.subprocess, "Popen", stages)
    out = tmp_path / "demo"
    demo.run_demo(demo.DemoConfig(output_dir=out, recipes=RECIPES))
    plan = demo.stages(RECIPES, out, quick=False)
    labels, *parallel, evaluation = plan[1:]
    redone = [[*stage.command, *stage.overwrite] for stage in parallel]  # after the labels ran
    assert stages.commands == [labels.command, *redone, evaluation.command]
    assert stages.threads == [2, *[1] * 7, 2]
    assert stages.most == 2
    assert (out / "logs" / "student-soft-s43.log").read_text() == f"output of {out / 'soft-s43'}\n"


def test_a_failed_parallel_stage_stops_the_others_and_shows_its_log(tmp_path, monkeypatch, capsys):
    finished_teacher(tmp_path, monkeypatch)
    out = tmp_path / "demo"
    stages = FakeStages(fail=str(out / "hard-s42"))
    monkeypatch.setattr(demo.subprocess, "Popen", stages)
    with pytest.raises(
        DistillabError, match="demo stage 'student hard-s42' failed; the end of its log"
    ) as error:
        demo.run_demo(demo.DemoConfig(output_dir=out, recipes=RECIPES))
    assert f"output of {out / 'hard-s42'}" in str(error.value)
    assert [output_dir(command) for command in stages.commands[-2:]] == [
        str(out / "hard-s42"),
        str(out / "soft-s42"),
    ]
    assert len(stages.terminated) == 1  # soft-s42, started beside it; nothing after it started


def test_a_demo_redoes_the_stages_made_with_other_settings_and_those_after(tmp_path, monkeypatch):
    """A full demo over a finished one whose hard labels came from --quick: labels redone with --overwrite,
    and every later stage too (their inputs may have changed); the teacher asset is reused."""
    finished_teacher(tmp_path, monkeypatch)
    out = tmp_path / "demo"
    write_finished(out, demo.stages(RECIPES, out, quick=False))
    write_json(out / "results.json", {"models": [], "verdict": ["One sentence."]})
    (out / "report.md").write_text("")
    (out / "report.html").write_text("")
    quick_generate = demo.stages(RECIPES, out, quick=True)[1]
    write_json(
        out / "generate" / "distillab.json",
        {
            "complete": True,
            "config_fingerprint": fingerprint(quick_generate),
            "soft_labels": {"complete": True},
        },
    )
    stages = FakeStages()
    monkeypatch.setattr(demo.subprocess, "Popen", stages)
    demo.run_demo(demo.DemoConfig(output_dir=out, recipes=RECIPES))
    plan = demo.stages(RECIPES, out, quick=False)
    assert (
        stages.commands
        == [
            [*plan[1].command, "--overwrite"],  # other settings
            [*plan[2].command, "--overwrite"],  # finished, but after a stage that ran
            [*plan[3].command, "--overwrite"],
            [*plan[4].command, "--overwrite"],
            [*plan[5].command, "--overwrite"],  # unfinished, but from the old labels
            *(
                [*stage.command, "--overwrite"] for stage in plan[6:-1]
            ),  # not started: --overwrite is harmless
            plan[-1].command,
        ]
    )


def test_summary_table():
    results = {
        "models": [
            {
                "name": "teacher",
                "method": "teacher",
                "ce_reference": 1.23456,
                "ce_teacher_generations": 0.5,
                "kl_teacher": None,
                "top1_agreement": None,
                "predicted_loss": None,
                "flops": None,
            },
            {
                "name": "soft",
                "method": "kd",
                "ce_reference": 3.0,
                "ce_teacher_generations": 2.0,
                "kl_teacher": 0.75,
                "top1_agreement": 0.4321,
                "predicted_loss": 2.9,
                "flops": {"total": 2.5e15},
            },
        ]
    }
    lines = demo.summary_table(results).splitlines()
    assert lines[0].split() == [
        "model",
        "method",
        "CE",
        "ref",
        "CE",
        "gen",
        "KL(T||S)",
        "top-1",
        "law",
        "PFLOPs",
    ]
    assert lines[1].split() == ["teacher", "teacher", "1.235", "0.500", "-", "-", "-", "-"]
    assert lines[2].split() == ["soft", "kd", "3.000", "2.000", "0.750", "43.2%", "2.900", "2.500"]
