"""The import rules of docs/architecture.md, checked on the source: stages meet only through data/ and scaling/.

A stage (one folder under src/distillab) imports its own modules, the shared contracts (data/), the law
(scaling/) and the top-level shared modules. The one sanctioned edge between stages is kd -> the `distillab.sft`
package's public API (kd is SFT with another trainer). bench/ never imports tests/.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "distillab"
STAGES = ("generate", "sft", "kd", "evaluate", "study")
SHARED = (
    "distillab",
    "data",
    "scaling",
    "errors",
    "fileio",
    "configs",
    "devices",
    "markdown",
    "modelfiles",
    "lmhead",
    "interrupts",
    "tiny",
    "assets",
)
PUBLIC_APIS = {"kd": {"distillab.sft"}}


def imported_modules(path: Path) -> set[str]:
    """Every `distillab...` module a file imports (absolute imports; the package uses no relative ones)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return {module for module in modules if module.split(".")[0] in ("distillab", "tests")}


def top_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def violations(folder: str, allowed: tuple[str, ...], public: set[str]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in sorted(imported_modules(path)):
            if module in public or top_part(module) in (folder, *allowed):
                continue
            found.append(f"{path.relative_to(REPO)} imports {module}")
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_itself_the_contracts_and_shared_modules(stage):
    assert violations(stage, SHARED, PUBLIC_APIS.get(stage, set())) == []


def test_the_contracts_and_the_law_import_no_stage():
    assert (
        violations("data", ("distillab", "errors", "fileio", "configs", "markdown", "scaling"), set()) == []
    )
    assert violations("scaling", ("errors", "fileio", "configs"), set()) == []


def test_bench_never_imports_tests():
    imports = {path.name: imported_modules(path) for path in (REPO / "bench").glob("*.py")}
    assert {name: mods for name, mods in imports.items() if any(m.startswith("tests") for m in mods)} == {}


def test_the_rule_catches_a_cross_stage_import(tmp_path, monkeypatch):
    stage = tmp_path / "distillab" / "evaluate"
    stage.mkdir(parents=True)
    (stage / "bad.py").write_text("from distillab.sft.data import tokenize_hard_labels\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "distillab")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations("evaluate", SHARED, set()) == ["distillab/evaluate/bad.py imports distillab.sft.data"]
