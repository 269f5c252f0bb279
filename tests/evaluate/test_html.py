"""report.html and the verdict: parsed with the stdlib's html.parser, its tables hold the numbers of results.json;
retention and the verdict's sentences are checked against hand-computed values."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distillab.evaluate.html import render_html
from distillab.evaluate.report import render_report, token_match
from distillab.evaluate.verdict import retention, verdict

TASK, METRIC = "distillab_number_words", "exact_match,final-number"
# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Tables(HTMLParser):
    """Every <table id=...> as a list of rows of cell texts (header row first), the verdict's text, the images."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.verdict = ""
        self._table = self._cell = None
        self._in_verdict = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif attrs.get("id") == "verdict":
            self._in_verdict = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "p":
            self._in_verdict = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._in_verdict:
            self.verdict += data


def parse_html(text: str) -> Tables:
    parser = Tables()
    parser.feed(text)
    return parser


def model(name, method, score=None, kl=None, flops=None, soft_bytes=None, tokens=1000):
    return {
        "name": name,
        "method": method,
        "params_non_embedding": 28_000_000 if method != "teacher" else 106_000_000,
        "train_tokens": None if method == "teacher" else tokens,
        "flops": flops,
        "ce_reference": 2.5,
        "ce_teacher_generations": 1.25,
        "kl_teacher": kl,
        "top1_agreement": None if kl is None else 0.75,
        "predicted_loss": None,
        "prediction": {"reason": "no coefficient set fitted for this method"},
        "lm_eval": {} if score is None else {TASK: {METRIC: score, "exact_match,none": 0.0}},
        "lm_eval_runs": {}
        if score is None
        else {TASK: {"version": 1.0, "n_samples": {"effective": 30, "original": 30}}},
        "soft_label_bytes": soft_bytes,
        "skipped": {},
    }


def results_of(models: list[dict]) -> dict:
    results = {
        "teacher": "teacher",
        "created_at": "2026-11-30T12:00:00Z",
        "models": models,
        "matched_tokens": token_match(models),
        "eval_sets": {
            "lm_eval": {
                "tasks": [TASK],
                "apply_chat_template": True,
                "limit": 30,
                "include_path": "t",
                "output_dir": "o",
            }
        },
        "scaling_law": {"coefficient_sets": [], "note": "fitted sets only"},
        "decontamination": {
            "ngram": 8,
            "train_datasets": [],
            "unreadable": {},
            "sets": {},
            "not_checked": {},
        },
        "plots": [],
        "retention": retention(models),
    }
    results["verdict"] = verdict(results)
    return results


HARD_FLOPS = {"total": 2.0e15, "student_train": 1.5e15, "teacher_generation": 5e14, "teacher_scoring": 0}
SOFT_FLOPS = {"total": 3.0e15, "student_train": 1.5e15, "teacher_generation": 5e14, "teacher_scoring": 1e15}


def two_seed_models() -> list[dict]:
    """Teacher 0.8; supervised 0.2 / 0.3, hard 0.4 / 0.6, soft 0.6 / 0.64 (two seeds each)."""
    return [
        model("teacher", "teacher", 0.8),
        model("supervised-s1", "supervised", 0.2, kl=3.0),
        model("hard-s1", "sft", 0.4, kl=2.0, flops=HARD_FLOPS),
        model("soft-s1", "kd", 0.6, kl=1.0, flops=SOFT_FLOPS, soft_bytes=2_500_000),
        model("supervised-s2", "supervised", 0.3, kl=3.0),
        model("hard-s2", "sft", 0.6, kl=2.0, flops=HARD_FLOPS),
        model("soft-s2", "kd", 0.64, kl=1.0, flops=SOFT_FLOPS, soft_bytes=2_500_000, tokens=1040),
    ]


def test_retention_is_each_score_as_a_percentage_of_the_teachers():
    kept = retention(two_seed_models())
    assert kept["tasks"] == {TASK: {"metric": METRIC, "teacher": 0.8}}
    percent = {row["name"]: row["retained_percent"][TASK] for row in kept["students"]}
    assert percent == pytest.approx(
        {
            "supervised-s1": 25.0,
            "hard-s1": 50.0,
            "soft-s1": 75.0,
            "supervised-s2": 37.5,
            "hard-s2": 75.0,
            "soft-s2": 80.0,
        }
    )


def test_the_verdict_names_the_closest_method_its_cost_and_the_seed_spread():
    sentences = results_of(two_seed_models())["verdict"]
    assert 3 <= len(sentences) <= 5
    assert sentences[0] == f"The teacher scores 80.0% on {TASK} ({METRIC})."
    # soft: mean of 75 and 80 = 77.5%; hard: mean of 50 and 75 = 62.5%; gap 15.0 points
    assert sentences[1] == (
        f"Closest to the teacher: the soft student, 77.5% of the teacher's {TASK} score (mean of 2 seeds), "
        "15.0 points ahead of hard (62.5%)."
    )
    # soft labels: 1e15 FLOPs of scoring, 3e15 / 2e15 - 1 = +50% total, 2.5 MB
    assert (
        sentences[2]
        == "Soft labels cost 1e+15 FLOPs of teacher scoring (+50% total FLOPs over the hard student) and 2.50 MB on disk."
    )
    # spreads: soft 80 - 75 = 5, hard 75 - 50 = 25 points: a 15-point gap is within the seed spread
    assert sentences[3].startswith(
        "That gap (15.0 points) is not larger than the seed-to-seed spread (25.0 points"
    )


def test_one_seed_says_so():
    models = [m for m in two_seed_models() if not m["name"].endswith("s2")]
    sentences = results_of(models)["verdict"]
    assert "one seed" in sentences[-1] and "noise" in sentences[-1]


def test_a_tie_is_called_a_tie():
    # supervised and hard both keep 0.05 / 0.8 = 6.25% of the teacher's score, soft 0
    models = [
        model("teacher", "teacher", 0.8),
        model("supervised-s1", "supervised", 0.05, kl=3.0),
        model("hard-s1", "sft", 0.05, kl=2.0, flops=HARD_FLOPS),
        model("soft-s1", "kd", 0.0, kl=1.0, flops=SOFT_FLOPS, soft_bytes=2_500_000),
    ]
    sentences = results_of(models)["verdict"]
    assert sentences[1] == (
        f"Closest to the teacher, tied: the supervised and hard students, 6.2% of the teacher's {TASK} score."
    )


def test_without_lm_eval_the_verdict_ranks_by_kl():
    models = [{**m, "lm_eval": {}} for m in two_seed_models()]
    sentences = results_of(models)["verdict"]
    assert sentences[0].startswith("Closest to the teacher: the soft student, -1.000 nats")
    assert "ahead of hard (-2.000 nats)" in sentences[0]


def test_report_html_tables_match_results_json(tmp_path: Path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "kl_teacher.png").write_bytes(PNG)
    results = {**results_of(two_seed_models()), "plots": ["plots/kl_teacher.png"]}
    page = parse_html(render_html(results, tmp_path))
    check_tables_match(page, results)
    assert page.images == [
        "data:image/png;base64," + base64.b64encode(PNG).decode()
    ]  # embedded, no file link
    assert "## Verdict\n\n" + " ".join(results["verdict"]) in render_report(results)


def check_tables_match(page: Tables, results: dict) -> None:
    """The html's retention and models tables hold results.json's numbers (parsed back, to 4 digits)."""
    assert page.verdict == " ".join(results["verdict"])
    models = results["models"]
    retention_rows = page.tables["retention"]
    tasks = results["retention"]["tasks"]
    assert retention_rows[0][:2] == ["model", "method"] and len(retention_rows) == len(models) + 1
    for row, entry in zip(retention_rows[1:], models, strict=True):
        assert row[0] == ("teacher" if entry["method"] == "teacher" else entry["name"])
        for index, (task, info) in enumerate(tasks.items()):
            score, percent = row[2 + index], row[2 + len(tasks) + index]
            expected = entry["lm_eval"].get(task, {}).get(info["metric"])
            if expected is None:
                assert score == "—"
                continue
            assert float(score) == pytest.approx(expected, rel=1e-3)
            if info["teacher"] == 0:  # nothing to retain
                assert percent == "—"
            else:
                assert float(percent.rstrip("%")) == pytest.approx(100 * expected / info["teacher"], abs=0.05)
    table = page.tables["models"]
    header = table[0]
    columns = {
        "CE reference": "ce_reference",
        "CE teacher gen.": "ce_teacher_generations",
        "KL(T‖S)": "kl_teacher",
        "top-1 agree": "top1_agreement",
    }
    assert [row[0] for row in table[1:]] == [m["name"] for m in models]
    for row, entry in zip(table[1:], models, strict=True):
        assert row[header.index("method")] == entry["method"]
        for title, key in columns.items():
            cell = row[header.index(title)]
            if entry[key] is None:
                assert cell == "—"
            else:
                assert float(cell) == pytest.approx(entry[key], rel=1e-3)
        if entry["train_tokens"] is not None:
            assert int(row[header.index("D (train tokens)")].replace(",", "")) == entry["train_tokens"]
