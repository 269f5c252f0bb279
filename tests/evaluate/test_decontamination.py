"""n-gram overlap between training data and eval sets, and the filtered copy of a hard-label dataset."""

from __future__ import annotations

import pytest
import yaml

from distillab.evaluate.decontamination import (
    DecontaminateConfig,
    NgramIndex,
    contaminated,
    overlap_report,
    words,
    write_filtered_copy,
)

TRAIN = [
    "the quick brown fox jumps over the lazy dog and runs far away",
    "Calculate 2 - -1.",
    "an unrelated sentence about parsing python modules",
]


def test_words_are_lower_cased_words_and_punctuation():
    assert words("Calculate ( 56 + -33 )!") == ["calculate", "(", "56", "+", "-", "33", ")", "!"]


def test_long_texts_overlap_through_a_shared_ngram():
    index = NgramIndex(TRAIN, n=5)
    assert index.overlaps("Yesterday THE QUICK BROWN FOX JUMPS happily")
    assert not index.overlaps("the quick brown cat jumps over a lazy dog")  # no 5 consecutive shared words


def test_short_texts_overlap_when_contained_whole():
    index = NgramIndex(TRAIN, n=8)
    assert index.overlaps("calculate 2 - -1.")
    assert index.overlaps("over the lazy dog")
    assert not index.overlaps("Calculate 2 - -7.")
    assert not index.overlaps("")


def test_bare_answers_are_too_short_to_overlap():
    assert not NgramIndex(TRAIN, n=8).overlaps("lazy dog")
    # A training set of bare answers does not contaminate every question that mentions the number.
    assert not NgramIndex(["42", "-7"], n=8).overlaps("Calculate 42 + -7.")


def test_overlap_report_counts_rows_and_keeps_examples():
    report = overlap_report(
        NgramIndex(TRAIN, n=8), ["Calculate 2 - -1.", "Calculate 9 * 9.", "lazy dog and runs"]
    )
    assert report == {
        "ngram": 8,
        "rows": 3,
        "overlapping_rows": 2,
        "fraction": pytest.approx(2 / 3),
        "examples": ["Calculate 2 - -1.", "lazy dog and runs"],
    }


def test_contaminated_flags_rows_with_any_overlapping_text():
    eval_index = NgramIndex(["Calculate 2 - -1."], n=8)
    rows = [
        ("Calculate 2 - -1.", "The answer is 3"),
        ("Calculate 4 + 4.", "8"),
        ("hi", "Calculate 2 - -1. is 3"),
    ]
    assert contaminated(rows, eval_index) == [True, False, True]


def test_filtered_copy_drops_the_held_out_rows(tmp_path, tiny_teacher, hard_label_dir):
    from distillab.data.hardlabels import load_hard_labels, read_metadata

    recipe = tmp_path / "evaluate.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "teacher": str(tiny_teacher),
                "heldout_data": str(hard_label_dir),
                "heldout_last_n": 8,
                "reference_num_rows": 8,
                "lm_eval_num_docs": 16,
            }
        )
    )
    output_dir = tmp_path / "filtered"
    record = write_filtered_copy(
        DecontaminateConfig(dataset=str(hard_label_dir), eval_config=str(recipe), output_dir=str(output_dir))
    )
    source, filtered = load_hard_labels(str(hard_label_dir)), load_hard_labels(str(output_dir))
    held_out = set(source["prompt"][-8:])
    assert record["rows_removed"] >= 8
    assert len(filtered) == len(source) - record["rows_removed"]
    assert not held_out & set(filtered["prompt"])
    assert set(filtered["id"]) <= set(source["id"])
    metadata = read_metadata(output_dir)
    assert metadata["rows"] == len(filtered) and metadata["complete"]
    assert metadata["decontamination"]["eval_sets"] == {
        "reference": 8,
        "teacher_generations": 8,
        "lm_eval:distillab_arithmetic": 16,
    }


def test_filter_refuses_to_overwrite_its_input(hard_label_dir):
    from distillab.errors import ConfigError

    with pytest.raises(ConfigError, match="must differ"):
        DecontaminateConfig(dataset=str(hard_label_dir), eval_config="x.yaml", output_dir=str(hard_label_dir))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_overlap_is_symmetric(n):
    texts = [*TRAIN, "Calculate 2 - -1. is 3", "fox jumps", "over the lazy dog and runs", "Calculate 2 -"]
    for a in texts:
        for b in texts:
            assert NgramIndex([a], n).overlaps(b) == NgramIndex([b], n).overlaps(a), (a, b)
