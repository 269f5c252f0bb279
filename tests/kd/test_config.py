"""`distillab kd` config: the paper's defaults, invalid KD settings, and the shipped recipes (each the KD twin of
the sft.yaml beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillab.errors import ConfigError
from distillab.kd.config import DistillabKDConfig

REPO = Path(__file__).resolve().parents[2]


def kd_config(*argv: str) -> DistillabKDConfig:
    from distillab.configs import parse_config

    return parse_config(DistillabKDConfig, ["--dataset_name", "x", "--student_kind", "fresh", *argv])


def test_config_defaults_follow_the_papers_practice():
    loss = kd_config().loss_config()
    assert (loss.divergence, loss.temperature, loss.lam, loss.z_loss) == ("forward_kl", 1.0, 1.0, 1e-4)
    assert kd_config().teacher_mode == "offline" and kd_config().output_dir == "outputs/kd"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lam", "1.5"], "--lam must be in [0, 1], got 1.5"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (
            ["--divergence", "reverse_kl"],
            "--divergence reverse_kl with offline top-k soft labels needs --tail",
        ),
        (["--teacher", "t"], "--teacher/--teacher_revision apply to --teacher_mode online"),
        (
            ["--teacher_mode", "online", "--soft_labels_k", "8"],
            "--soft_labels_k applies to --teacher_mode offline",
        ),
        (["--soft_labels_k", "0"], "--soft_labels_k must be >= 1"),
        (["--train_on", "reference"], "--train_on reference is sft's supervised baseline"),
    ],
)
def test_bad_kd_settings_are_config_errors(argv, message):
    with pytest.raises(ConfigError) as error:
        kd_config(*argv)
    assert message in str(error.value)


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/*/kd.yaml")), ids=lambda p: p.parent.name)
def test_shipped_recipes_are_the_kd_twins_of_the_sft_recipes(recipe, tmp_path):
    """Same data, student and schedule as sft.yaml (a matched pair), another output folder."""
    from distillab.configs import parse_config

    config = parse_config(DistillabKDConfig, ["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert config.teacher_mode == "offline"
    kd, sft = (yaml.safe_load(path.read_text()) for path in (recipe, recipe.with_name("sft.yaml")))
    assert {key: kd.get(key) for key in sft if key != "output_dir"} == {
        k: v for k, v in sft.items() if k != "output_dir"
    }
    assert kd["output_dir"] != sft["output_dir"]


def test_a_local_online_teacher_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "teacher").mkdir()
    monkeypatch.chdir(tmp_path)
    config = kd_config("--teacher_mode", "online", "--teacher", "teacher")
    assert config.teacher == str(tmp_path / "teacher")
