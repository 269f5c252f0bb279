"""report.html: the report as one self-contained page for people who would rather look than read: the verdict,
the retention and comparison tables (the same cells as report.md) and every plot embedded as a base64 PNG."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from distillab.evaluate.report import main_table, retention_table, token_match_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.verdict { background: #f4f8fb; border-left: 4px solid #1f77b4; padding: 0.8em 1em; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; text-align: right; }
th { background: #eef2f5; } td:first-child, td:nth-child(2), th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
.note { color: #666; font-size: 0.9em; }
"""


def render_html(results: dict[str, Any], output_dir: Path) -> str:
    """The page for `results`; plots are read from `output_dir` (their paths in results are relative to it)."""
    students = len(results["models"]) - 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>distillab evaluation</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>distillab evaluation</h1>",
        f'<p class="note">Teacher <code>{escape(results["teacher"])}</code> and {students} student(s), '
        f"{escape(results['created_at'])}.</p>",
        "<h2>Verdict</h2>",
        f'<p class="verdict" id="verdict">{escape(" ".join(results["verdict"]))}</p>',
    ]
    if results["retention"]["tasks"]:
        parts += [
            "<h2>What the students kept of the teacher</h2>",
            _table("retention", *retention_table(results["retention"])),
        ]
    parts += ["<h2>Hard vs soft vs supervised</h2>", _table("models", *main_table(results["models"]))]
    note = token_match_text(results["matched_tokens"]).replace("**", "")
    parts += [f'<p class="note">{escape(note)}</p>'] if note else []
    if results["plots"]:
        parts.append("<h2>Plots</h2>")
        parts += [_image(output_dir / path, path) for path in results["plots"]]
    parts.append(
        '<p class="note">The full tables (law, lm-eval details, decontamination) are in report.md.</p>'
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _image(path: Path, name: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(name)}" src="data:image/png;base64,{data}">'
