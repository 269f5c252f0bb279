"""The soft-label contract's row check: padding accepted, each violation a one-line error naming row and field."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillab.data.hardlabels import write_dataset
from distillab.data.softcoder import NEXT, BitReader, BitWriter, FrequencyTable, SoftLabelCoder, row_streams
from distillab.data.softlabels import (
    BASE_COLUMNS,
    PAD_ID,
    SEQUENCE_COLUMNS,
    SoftLabelFormat,
    adaptive_slots,
    code_soft_labels,
    decode_soft_labels,
    keep_first_slots,
    log_tail_after,
    pack_bits,
    unpack_bits,
    validate_soft_labels,
)
from distillab.errors import DataError


def _soft_row():
    ids = [[3, 1, PAD_ID], [0, 9, 2], [4, PAD_ID, PAD_ID]]
    logprobs = [
        [math.log(0.5), math.log(0.25), -math.inf],
        [math.log(0.9), math.log(0.05), math.log(0.01)],
        [0.0, 7.0, 0.0],
    ]
    return ids, logprobs


def test_validate_soft_labels_accepts_a_valid_row_with_padding():
    ids, logprobs = _soft_row()
    validate_soft_labels(ids, logprobs, vocab_size=10, n_positions=3, soft_labels_k=3, row=0)


@pytest.mark.parametrize(
    "edit, kwargs, message",
    [
        (
            lambda ids, lps: lps[1].__setitem__(2, math.nan),
            {},
            "soft labels row 7: topk_logprobs is nan at position 1, slot 2",
        ),
        (
            lambda ids, lps: ids[1].__setitem__(1, 10),
            {},
            "soft labels row 7: topk_ids has id 10 at position 1, slot 1, outside the vocabulary [0, 10)",
        ),
        (
            lambda ids, lps: ids[0].__setitem__(0, -2),
            {},
            "soft labels row 7: topk_ids has id -2 at position 0, slot 0",
        ),
        (
            lambda ids, lps: None,
            {"n_positions": 4},
            "soft labels row 7: topk_ids covers 3 positions, fewer than the 4 to train on",
        ),
        (
            lambda ids, lps: None,
            {"soft_labels_k": 5},
            "soft labels row 7: topk_ids stores 3 slots per position, fewer than the soft_labels_k=5 requested",
        ),
        (
            lambda ids, lps: lps[2].__setitem__(0, 1.0),
            {},
            "soft labels row 7: topk_logprobs at position 2 sum to probability 2.72 > 1",
        ),
        (
            lambda ids, lps: ids.pop(),
            {},
            "soft labels row 7: topk_ids (2, 3) and topk_logprobs (3, 3) must both be [positions, k]",
        ),
    ],
)
def test_validate_soft_labels_names_row_and_field(edit, kwargs, message):
    ids, logprobs = _soft_row()
    edit(ids, logprobs)
    arguments = {"vocab_size": 10, "n_positions": 3, "row": 7} | kwargs
    with pytest.raises(DataError, match=re.escape(message)):
        validate_soft_labels(ids, logprobs, **arguments)


def _sorted_top_k(n: int, k: int, vocab: int, seed: int = 0):
    """float64 log-probs of n random distributions over `vocab`: their top-k ids and log-probs (sorted), and
    the log of the mass outside them."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, vocab)) * rng.uniform(0.5, 12, (n, 1))  # flat to very peaked
    full = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    ids = np.argsort(-full, axis=1)[:, :k]
    logprobs = np.take_along_axis(full, ids, axis=1)
    rest = full.copy()
    np.put_along_axis(rest, ids, -np.inf, axis=1)
    return ids, logprobs, np.logaddexp.reduce(rest, axis=1)


def _through_parquet(row: dict, fmt: SoftLabelFormat) -> dict:
    """Write one encoded row to parquet and read it back as python values, as `datasets` hands it over."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([row], schema=pa.schema(fmt.fields())), sink)
    return pq.read_table(pa.BufferReader(sink.getvalue())).to_pylist()[0]


@pytest.mark.parametrize("vocab_size, id_bits", [(3000, 16), (100_000, 17), (200_000, 18)])
@pytest.mark.parametrize("mass", [None, 0.9])
def test_round_trip_is_within_the_declared_quantisation_error(vocab_size, id_bits, mass):
    k, min_k = 32, 2
    ids, logprobs, log_tail = _sorted_top_k(40, k, 3000)
    ids = ids * (vocab_size // 3000) + (
        vocab_size - 3000 * (vocab_size // 3000)
    )  # spread over the vocabulary
    fmt = SoftLabelFormat.compact(k, vocab_size)
    assert fmt.id_bits == id_bits and fmt.to_metadata()["version"] == 2
    slots = adaptive_slots(logprobs, mass, min_k)
    row = {"input_ids": [1, 2], "completion_start": 1}
    row |= fmt.encode(ids, logprobs.astype(np.float32), log_tail_after(logprobs, log_tail, slots), slots)
    decoded_ids, decoded, decoded_tail = decode_soft_labels(_through_parquet(row, fmt), fmt)

    kept = np.arange(k) < slots[:, None]
    np.testing.assert_array_equal(decoded_ids[kept], ids[kept])
    assert (decoded_ids[~kept] == PAD_ID).all() and (decoded[~kept] == -np.inf).all()
    declared = fmt.to_metadata()["logprobs"]
    in_range = logprobs >= -np.exp(declared["offset"] + 255 * declared["step"])
    error = np.abs(decoded.astype(np.float64) - logprobs)[kept & in_range]
    bound = (declared["max_relative_error"] * np.abs(logprobs) + declared["max_abs_error_near_zero"])[
        kept & in_range
    ]
    assert (error <= bound).all()
    assert error.max() > 0  # the codes do round
    exact_tail = np.log1p(-np.where(kept, np.exp(logprobs), 0).sum(1))  # float64, by hand
    np.testing.assert_allclose(decoded_tail, exact_tail, rtol=1e-6)
    if mass is not None:
        covered = np.where(kept, np.exp(logprobs), 0).sum(1)
        assert ((covered >= mass) | (slots == k)).all() and (slots >= min_k).all()
        assert slots.min() < slots.max()


def test_adaptive_slots_by_hand():
    logprobs = np.log([[0.5, 0.3, 0.1, 0.05], [0.97, 0.01, 0.01, 0.005], [0.3, 0.2, 0.1, 0.1]])
    assert adaptive_slots(logprobs, 0.8, 1).tolist() == [2, 1, 4]
    assert adaptive_slots(logprobs, 0.8, 3).tolist() == [3, 3, 4]
    assert adaptive_slots(logprobs, None, 1).tolist() == [4, 4, 4]
    assert adaptive_slots(logprobs, 0.95, 1).tolist() == [4, 1, 4]


def test_keeping_fewer_slots_moves_their_mass_into_the_tail():
    ids = np.array([[4, 2, 7]], dtype=np.int32)
    logprobs = np.log([[0.5, 0.2, 0.1]]).astype(np.float32)
    kept_ids, kept_logprobs, log_tail = keep_first_slots(ids, logprobs, np.log([0.2]), 1)
    assert kept_ids.tolist() == [[4]] and kept_logprobs[0].tolist() == pytest.approx([math.log(0.5)])
    assert log_tail.tolist() == pytest.approx([math.log(0.5)], rel=1e-6)
    assert keep_first_slots(ids, logprobs, None, 2)[2] is None


def test_bits_pack_and_unpack():
    values = np.array([0, 1, 2**17 - 1, 65_536, 99_999])
    blob = pack_bits(values, 17)
    assert len(blob) == math.ceil(5 * 17 / 8)
    assert unpack_bits(blob, 17, 5).tolist() == values.tolist()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda soft: soft["format"].update(version=7),
            "format version 7 is not one this distillab reads (1, 2, 3, 4)",
        ),
        (lambda soft: soft["format"]["logprobs"].pop("step"), "missing 'step'"),
        (lambda soft: soft.update(vocab_size=70_000), "do not fit vocab_size 70000"),
        (lambda soft: soft["format"].update(logprobs={"name": "int4"}), "unknown log-prob encoding"),
    ],
)
def test_corrupt_format_metadata_is_one_line_naming_the_file(edit, message):
    soft = {"k": 8, "vocab_size": 3000, "format": SoftLabelFormat.compact(8, 3000).to_metadata()}
    edit(soft)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        SoftLabelFormat.from_metadata(soft, "data/x/distillab.json")
    assert str(error.value).startswith("data/x/distillab.json: corrupt soft_labels format (")
    assert "\n" not in str(error.value)


def test_previous_format_is_read_from_metadata_without_a_format():
    fmt = SoftLabelFormat.from_metadata({"k": 16, "vocab_size": 2048, "logprob_dtype": "float16"}, "x")
    assert (fmt.version, fmt.id_bits, fmt.columns) == (1, 32, BASE_COLUMNS)
    row = {"topk_ids": [[3, 1], [0, 2]], "topk_logprobs": [[-0.5, -1.5], [-0.25, -2.0]]}
    ids, logprobs, tail = decode_soft_labels(row, fmt)
    assert ids.shape == (2, 16) and ids[:, :2].tolist() == [[3, 1], [0, 2]] and tail is None
    assert logprobs[:, :2].tolist() == [[-0.5, -1.5], [-0.25, -2.0]] and (ids[:, 2:] == PAD_ID).all()


def _greedy_rows(n_rows: int, k: int, vocab_size: int, mass: float | None, seed: int = 0):
    """Format-2 rows of random sorted top-k whose next token is the top-1 id (a greedy sequence) at all but a
    few positions, and their float64 references (ids, log-probs, log mass outside the top-k, slots)."""
    fmt, rows, references = SoftLabelFormat.compact(k, vocab_size), [], []
    for index in range(n_rows):
        positions = 20 + index
        ids, logprobs, log_tail = _sorted_top_k(positions, k, 3000, seed=seed + index)
        ids = ids * (vocab_size // 3000)  # spread over the vocabulary
        next_tokens = ids[:, 0].copy()
        next_tokens[::7] = ids[::7, 3]  # not greedy there: the next token is the 4th most likely
        start = 5
        slots = adaptive_slots(logprobs, mass, 1)
        tail = log_tail_after(logprobs, log_tail, slots)
        row = {
            "id": f"row-{index}",
            "input_ids": [1] * start + next_tokens.tolist(),
            "completion_start": start,
        }
        row |= fmt.encode(ids, logprobs.astype(np.float32), tail, slots)
        rows.append(row)
        references.append((ids, logprobs, log_tail, slots))
    return fmt, rows, references


@pytest.mark.parametrize("vocab_size", [3000, 200_000])
@pytest.mark.parametrize("mass", [None, 0.9])
def test_format_4_round_trip_is_lossless_and_within_the_declared_error(vocab_size, mass):
    """Coded rows decode to exactly what format 2 stores (ids, q8 log-probs, float32 tail bit for bit), hence
    within the declared quantisation error of the float64 log-probs; adaptive rows keep mass >= P or k slots."""
    k = 32
    fmt, rows, references = _greedy_rows(6, k, vocab_size, mass)
    coded_rows, coded = code_soft_labels(rows, fmt)
    assert coded.to_metadata()["version"] == 4 and set(coded.columns) == {
        "input_ids",
        "completion_start",
        "topk_coded",
    }
    declared = coded.to_metadata()["logprobs"]
    for row, coded_row, (ids, logprobs, outside, slots) in zip(rows, coded_rows, references, strict=True):
        assert coded_row["id"] == row["id"] and "topk_ids" not in coded_row
        expected = decode_soft_labels(row, fmt)
        found = decode_soft_labels(_through_parquet(coded_row, coded), coded)
        for exact, decoded in zip(expected, found, strict=True):
            assert decoded.dtype == exact.dtype and np.array_equal(decoded, exact)
        decoded_ids, decoded, decoded_tail = found
        kept = np.arange(k) < slots[:, None]
        np.testing.assert_array_equal(decoded_ids[kept], ids[kept])
        in_range = logprobs >= -np.exp(declared["offset"] + 255 * declared["step"])
        bound = declared["max_relative_error"] * np.abs(logprobs) + declared["max_abs_error_near_zero"]
        assert (
            np.abs(decoded.astype(np.float64) - logprobs)[kept & in_range] <= bound[kept & in_range]
        ).all()
        dropped = np.where(
            kept, -np.inf, logprobs
        )  # float64, by hand: outside the top-k plus the dropped slots
        exact_tail = np.log(np.exp(outside) + np.exp(dropped).sum(1))
        np.testing.assert_allclose(decoded_tail, exact_tail, rtol=1e-6)
        covered = np.where(kept, np.exp(logprobs), 0).sum(1)
        assert ((covered >= (mass or 1)) | (slots == k)).all()


def test_format_4_stores_nothing_for_a_greedy_top_1():
    """The top-1 id is the sequence's next token at most positions: one symbol (NEXT) costs almost nothing."""
    fmt, rows, _ = _greedy_rows(4, 8, 3000, None)
    _, coded = code_soft_labels(rows, fmt)
    first_ids = coded.coder.tables["first_ids"]
    assert NEXT in first_ids.symbols.tolist()
    positions = sum(len(row["input_ids"]) - row["completion_start"] for row in rows)
    not_greedy = sum(len(range(0, len(row["input_ids"]) - row["completion_start"], 7)) for row in rows)
    assert first_ids.counts[first_ids.symbols.tolist().index(NEXT)] == positions - not_greedy


def test_format_4_metadata_round_trips_and_a_bad_row_is_one_line():
    fmt, rows, _ = _greedy_rows(3, 8, 3000, 0.9)
    coded_rows, coded = code_soft_labels(rows, fmt)
    soft = {"k": 8, "vocab_size": 3000, "format": coded.to_metadata()}
    again = SoftLabelFormat.from_metadata(soft, "x")
    for name, table in coded.coder.tables.items():
        assert table.symbols.tolist() == again.coder.tables[name].symbols.tolist(), name
        assert table.counts.tolist() == again.coder.tables[name].counts.tolist(), name
    shorter = {**coded_rows[1], "input_ids": coded_rows[1]["input_ids"][:-1]}
    with pytest.raises(
        DataError, match=re.escape("soft labels row row-1: topk_coded does not decode (it stores")
    ):
        decode_soft_labels(shorter, again)
    other_tables = code_soft_labels(_greedy_rows(3, 8, 3000, None, seed=9)[1], fmt)[1]
    with pytest.raises(DataError, match="soft labels row row-0: topk_coded does"):
        decode_soft_labels(coded_rows[0], other_tables)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda coder: coder.update(tables=coder["tables"][:-5]), "frequency tables cut short"),
        (lambda coder: coder.update(tables=coder["tables"] + "0000"), "frequency tables with bits left over"),
        (lambda coder: coder.update(tables="~~~~~"), "frequency tables that are not base85"),
        (lambda coder: coder.update(id_ranks=[1, 3]), "unknown id_ranks [1, 3]"),
        (lambda coder: coder.pop("id_ranks"), "missing 'id_ranks'"),
        (lambda coder: coder.update(delta_ranks=[1, 8]), "unknown coder layout"),
        (lambda coder: coder.pop("tables"), "missing 'tables'"),
    ],
)
def test_corrupt_format_4_metadata_is_one_line_naming_the_file(edit, message):
    fmt, rows, _ = _greedy_rows(2, 8, 3000, None)
    soft = {"k": 8, "vocab_size": 3000, "format": code_soft_labels(rows, fmt)[1].to_metadata()}
    edit(soft["format"]["coder"])
    with pytest.raises(DataError, match=re.escape(message)) as error:
        SoftLabelFormat.from_metadata(soft, "data/x/distillab.json")
    assert str(error.value).startswith("data/x/distillab.json: corrupt soft_labels format (")
    assert "\n" not in str(error.value)


def test_coded_rows_cost_little_more_than_their_streams_on_disk(tmp_path):
    """No parquet statistics or dictionary for the opaque topk_coded blobs (their min/max would be two more
    whole blobs per file), no statistics for the token ids, which are zstd-compressed; completion_start keeps its
    statistics and snappy."""
    fmt, rows, _ = _greedy_rows(8, 16, 3000, None)
    coded_rows, coded = code_soft_labels(rows, fmt)
    schema = pa.schema(coded.fields())
    (path,) = write_dataset(
        tmp_path, [{c: row[c] for c in schema.names} for row in coded_rows], schema=schema
    )
    (without,) = write_dataset(tmp_path / "without", [{c: row[c] for c in SEQUENCE_COLUMNS} for row in coded_rows],
                               schema=pa.schema(coded.fields()[:2]))  # fmt: skip
    streams = sum(len(row["topk_coded"]) for row in coded_rows)
    assert path.stat().st_size - without.stat().st_size < streams * 1.02 + 256
    columns = pq.read_metadata(path).row_group(0)
    stats = {
        columns.column(i).path_in_schema: (columns.column(i).is_stats_set, columns.column(i).compression)
        for i in range(columns.num_columns)
    }
    assert stats == {
        "input_ids.list.element": (False, "ZSTD"),
        "completion_start": (True, "SNAPPY"),
        "topk_coded": (False, "SNAPPY"),
    }


def test_exp_golomb_codes_by_hand():
    """Order 0: 0 -> 1, 1 -> 010, 2 -> 011, 6 -> 00111; order 2: 0 -> 100, 5 -> 01001 (5 + 4 = 9 = 1001)."""
    writer = BitWriter()
    writer.write(np.array([0, 1, 2, 6]))
    writer.write(np.array([0, 5]), order=2)
    assert "".join(writer.codes) == "1" + "010" + "011" + "00111" + "100" + "01001"
    reader = BitReader(writer.to_text())
    assert reader.read(4).tolist() == [0, 1, 2, 6] and reader.read(2, order=2).tolist() == [0, 5]
    with pytest.raises(ValueError, match="cut short"):
        reader.read(1)


def test_format_3_rows_written_by_the_previous_release_decode():
    """Rows and tables format 3 wrote (distillab af93cc8, `_greedy_rows(2, 8, 3000, 0.9)`) decode to what the
    same rows store uncoded."""
    stored = json.loads((Path(__file__).parent / "fixtures" / "format3_rows.json").read_text())
    fmt3 = SoftLabelFormat.from_metadata({"k": 8, "vocab_size": 3000, "format": stored["format"]}, "x")
    fmt, rows, _ = _greedy_rows(2, 8, 3000, 0.9)
    for row, blob in zip(rows, stored["rows"], strict=True):
        coded = {c: row[c] for c in SEQUENCE_COLUMNS} | {"topk_coded": base64.b85decode(blob)}
        for exact, decoded in zip(decode_soft_labels(row, fmt), decode_soft_labels(coded, fmt3), strict=True):
            assert decoded.dtype == exact.dtype and np.array_equal(decoded, exact)


def _coded_bytes(coder: SoftLabelCoder, streams: list[dict]) -> int:
    return sum(len(coder.encode(s)) for s in streams) + len(coder.pack_tables())


def test_id_bands_are_chosen_only_where_they_code_the_dataset_shorter():
    """Ranks 1-3 and 4-15 hold ids from two disjoint sets: a table per band codes them shorter than one table,
    tables included; from one set, the extra tables cost more than they save."""
    rng = np.random.default_rng(0)

    def streams(disjoint: bool) -> list[dict]:
        rows = []
        for _ in range(40):
            ids = rng.choice(np.arange(1000, 3000), (30, 16))
            if disjoint:
                ids[:, 1:4] = rng.choice(50, (30, 3)) + 100  # ranks 1-3 in [100, 150)
            codes = np.sort(rng.integers(0, 256, (30, 16)), axis=1)
            slots = np.full(30, 16)
            rows.append(row_streams(ids, codes, slots, ids[:, 0], rng.standard_normal(30).astype(np.float32)))
        return rows

    for disjoint in (False, True):
        rows = streams(disjoint)
        chosen = SoftLabelCoder.fit(rows)
        assert (chosen.id_ranks != (1,)) == disjoint
        all_ids = np.concatenate([r["ids"] for r in rows])
        one_band = SoftLabelCoder(chosen.tables | {"ids_1": FrequencyTable.fit_shared([all_ids])[0]})
        assert _coded_bytes(chosen, rows) <= _coded_bytes(one_band, rows), disjoint


def test_id_tables_keep_two_significant_bits_of_each_count():
    """Counts by hand: 0-4 exact, then the nearest (by ratio) of 4, 6, 8, 12, 16, 24, ...: 5 -> 6, 7 -> 8,
    9 -> 8, 10 -> 12, 20 -> 24, 1000 -> 1024; the bands share the symbols of both."""
    counts = [1, 2, 3, 4, 5, 7, 9, 10, 20, 1000]
    first = np.repeat(np.arange(len(counts)), counts)
    first_table, second_table = FrequencyTable.fit_shared([first, np.array([42, 42])])
    assert first_table.symbols.tolist() == second_table.symbols.tolist() == [*range(len(counts)), 42]
    assert first_table.counts.tolist() == [1, 2, 3, 4, 6, 8, 8, 12, 24, 1024, 0]
    assert second_table.counts.tolist() == [0] * len(counts) + [2]
