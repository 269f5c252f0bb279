"""Soft labels formats 3 and 4: each row's ids, log-prob codes and log tails as one rANS stream, static
per-dataset models.

A row's stored top-k (positions j = 0 .. len(input_ids) - completion_start - 1) is split into streams, decoded
in this order:

    positions    1                      how many positions the row stores (uniform, POSITION_BITS: a check)
    slots        [positions]            slots stored per position (adaptive k; one symbol at a fixed k)
    first_ids    [positions]            slot 0's id, NEXT where it is the sequence's next token (a greedy position)
    ids_R        slots of rank r in [R, next R) (`id_ranks`): their ids, in rank order (NEXT as above)
    first_codes  [positions]            slot 0's log-prob code (`LogProbQuantiser`)
    deltas_R     slots of rank r in [R, next R): code(r) - code(r - 1), >= 0 when the slots are sorted
    tail_high    [positions]            the float32 log tail's bits above the low TAIL_LOW_BITS
    tail_low     [positions]            its low TAIL_LOW_BITS bits (uniform: no table)
    checksum     1                      CRC-32 of the decoded ids, codes and tails, low CHECKSUM_BITS (uniform)

Every stream but tail_low has a frequency table fitted to the whole dataset (`SoftLabelCoder.fit`), stored in
distillab.json, and is entropy-coded with it (constriction's rANS coder, a categorical model per table); a row
decodes with a few vectorised calls, independently of the others. The coding is lossless: a row decodes to exactly
the ids, codes and float32 tails it was encoded from.

The tables are part of every dataset's bytes. Format 4 stores them as one exp-Golomb bit string (`pack_tables`):
per table its symbols (how many, the first, the gaps between them) and its counts; the ids_R tables share one
alphabet (the symbols once, then each band's counts, mostly 0, as runs) and keep ID_COUNT_BITS significant bits
of each count. `fit` picks the id rank bands from ID_RANK_CHOICES that code the dataset in the fewest bits, tables
included: one band for a small dataset, where more tables cost more than they save, more on a large one.
Format 3 (read only): one ids table, exact counts, each table as base85 of zlib.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np

NEXT = -1  # stands for the sequence's next token input_ids[completion_start + j] at position j
DELTA_RANKS = (1, 4, 16)  # the code deltas of ranks [1, 4), [4, 16), [16, k) have a table each
DELTAS = tuple(f"deltas_{rank}" for rank in DELTA_RANKS)
OTHER_STREAMS = (
    "slots",
    "first_ids",
    "first_codes",
    *DELTAS,
    "tail_high",
)  # the streams with a table but ids_R
ID_COUNT_BITS = 2  # significant bits an id table's counts keep
_MANTISSAS = np.arange(2 ** (ID_COUNT_BITS - 1), 2**ID_COUNT_BITS)
ID_COUNTS = np.unique(
    np.concatenate(
        [np.arange(2**ID_COUNT_BITS), (_MANTISSAS[:, None] << np.arange(1, 32 - ID_COUNT_BITS)).ravel()]
    )
)  # the counts an id table holds: 0 .. 3, then 4, 6, 8, 12, 16, 24, ...
ID_RANK_CHOICES = (
    (1,),
    (1, 4),
    (1, 4, 16),
    (1, 2, 8, 32),
    (1, 4, 16, 64),
)  # id rank bands `fit` chooses from
TAIL_LOW_BITS = 20
POSITION_BITS = 24
CHECKSUM_BITS = 16  # a row decoded with another dataset's tables (or corrupted) fails it, but for 1 in 65,536
MAX_ORDER = 24  # the largest exp-Golomb order a table uses
LIBRARY = "constriction 0.5 AnsCoder (32-bit words), Categorical(perfect=False) from the counts"


def _unpack(text: str) -> np.ndarray:
    """Format 3's table columns: non-negative integers as base85 of zlib of their four little-endian byte planes."""
    try:
        planes = np.frombuffer(zlib.decompress(base64.b85decode(text)), dtype=np.uint8)
    except (ValueError, zlib.error) as err:
        raise ValueError(f"a frequency table that does not decompress ({err})") from None
    return np.ascontiguousarray(planes.reshape(4, -1).T).view("<u4").ravel().astype(np.int64)


def _exp_golomb_widths(values: np.ndarray, order: int) -> np.ndarray:
    """Bits of each non-negative value's exp-Golomb code of `order`: value + 2**order in 2 L + 1 - order bits,
    L the index of its highest set bit."""
    shifted = np.asarray(values, dtype=np.int64) + (1 << order)
    return 2 * (np.frexp(shifted.astype(np.float64))[1] - 1) + 1 - order


def _best_order(values: np.ndarray) -> tuple[int, int]:
    """The exp-Golomb order that codes `values` in the fewest bits, and those bits."""
    bits = [int(_exp_golomb_widths(values, order).sum()) for order in range(MAX_ORDER + 1)]
    return int(np.argmin(bits)), min(bits)


class BitWriter:
    """Exp-Golomb codes of non-negative integers, most significant bit first, packed into bytes."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def write(self, values: np.ndarray, order: int = 0) -> None:
        shifted = np.asarray(values, dtype=np.int64) + (1 << order)
        widths = _exp_golomb_widths(values, order)
        self.codes += [
            format(value, f"0{width}b")
            for value, width in zip(shifted.tolist(), widths.tolist(), strict=True)
        ]

    def write_best(self, values: np.ndarray) -> None:
        """The order that codes `values` in the fewest bits (`_best_order`), then `values` in it."""
        order, _ = _best_order(values)
        self.write(np.array([order]))
        self.write(values, order)

    def to_text(self) -> str:
        bits = "".join(self.codes)
        return base64.b85encode(int("1" + bits, 2).to_bytes((len(bits) + 8) // 8, "big")).decode()


class BitReader:
    """Reads what `BitWriter` wrote; running out of bits is a ValueError."""

    def __init__(self, text: str) -> None:
        try:
            value = int.from_bytes(base64.b85decode(text), "big")
        except ValueError as err:
            raise ValueError(f"frequency tables that are not base85 ({err})") from None
        self.bits, self.position = bin(value)[3:], 0  # [3:]: past "0b" and BitWriter's leading 1

    def read(self, count: int, order: int = 0) -> np.ndarray:
        values = np.zeros(count, dtype=np.int64)
        for index in range(count):
            first_one = self.bits.find("1", self.position)
            end = 2 * first_one - self.position + 1 + order
            if first_one < 0 or end > len(self.bits):
                raise ValueError("frequency tables cut short")
            values[index] = int(self.bits[first_one:end], 2) - (1 << order)
            self.position = end
        return values

    def read_best(self, count: int) -> np.ndarray:
        (order,) = self.read(1)
        if order > MAX_ORDER:
            raise ValueError(f"an exp-Golomb order {order} above {MAX_ORDER}")
        return self.read(count, int(order))


@dataclass(frozen=True, eq=False)
class FrequencyTable:
    """A static entropy model: the symbols a stream uses (sorted) and how often each occurs."""

    symbols: np.ndarray
    counts: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> FrequencyTable:
        symbols, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
        return cls(symbols, counts)

    @cached_property
    def model(self):
        import constriction

        # constriction's categorical needs two symbols; a zero count gets its smallest probability
        counts = self.counts if len(self.counts) > 1 else np.append(self.counts, 0)
        return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)

    def encode(self, coder, values: np.ndarray) -> None:
        """Push `values` onto `coder` (a stack: streams are pushed in the reverse of their decoding order)."""
        if len(values):
            indices = np.searchsorted(self.symbols, values)
            if (indices >= len(self.symbols)).any() or (self.symbols[indices] != values).any():
                raise ValueError("a value outside the stream's frequency table")
            coder.encode_reverse(indices.astype(np.int32), self.model)

    def decode(self, coder, count: int) -> np.ndarray:
        if not count:
            return np.zeros(0, dtype=np.int64)
        return self.symbols[coder.decode(self.model, count)]

    @classmethod
    def fit_shared(cls, bands: list[np.ndarray]) -> list[FrequencyTable]:
        """One table per band of values, all over the symbols of every band (a symbol a band lacks counts 0), the
        counts rounded to ID_COUNTS (the id tables are most of the tables' bytes; the rounding costs the coded ids
        ~1% of what it saves the tables on the demo rows)."""
        symbols = np.unique(np.concatenate([np.asarray(band, dtype=np.int64) for band in bands]))
        counts = [np.bincount(np.searchsorted(symbols, band), minlength=len(symbols)) for band in bands]
        return [cls(symbols, ID_COUNTS[_id_count_levels(band_counts)]) for band_counts in counts]

    @classmethod
    def from_format_3(cls, table: dict[str, Any]) -> FrequencyTable:
        """A table as format 3 stored it: the first symbol, the gaps and counts less one (`_unpack`)."""
        counts = _unpack(table["counts"]) + 1
        symbols = int(table["first"]) + np.concatenate([[0], np.cumsum(_unpack(table["gaps"]) + 1)])
        if len(symbols) != max(len(counts), 1):
            raise ValueError("a frequency table whose gaps and counts differ in number")
        return cls(symbols[: len(counts)], counts)


def row_streams(
    ids: np.ndarray, codes: np.ndarray, slots: np.ndarray, next_tokens: np.ndarray, log_tail: np.ndarray
) -> dict[str, np.ndarray]:
    """One row's streams (module docstring) from its [positions, width] ids and codes, of which position j keeps
    its first `slots[j]`, the token each position predicts and the float32 log tails; the ids of ranks >= 1 as
    one stream `ids`, with their ranks in `ranks` (the coder splits them into its id bands)."""
    width = ids.shape[1]
    kept = np.arange(width) < slots[:, None]
    symbols = np.where(ids == np.asarray(next_tokens)[:, None], NEXT, ids).astype(np.int64)
    deltas = np.diff(codes.astype(np.int64), axis=1)
    streams = {
        "slots": np.asarray(slots, dtype=np.int64),
        "first_ids": symbols[:, 0],
        "ids": symbols[:, 1:][kept[:, 1:]],
        "ranks": np.broadcast_to(np.arange(1, width), (len(ids), width - 1))[kept[:, 1:]],
        "first_codes": codes[:, 0].astype(np.int64),
    }
    for name, band in zip(DELTAS, _rank_bands(width, DELTA_RANKS), strict=True):
        streams[name] = deltas[kept[:, 1:] & band]
    bits = np.asarray(log_tail, dtype="<f4").view("<u4").astype(np.int64)
    streams["tail_high"] = bits >> TAIL_LOW_BITS
    streams["tail_low"] = bits & (2**TAIL_LOW_BITS - 1)
    streams["checksum"] = np.array([_checksum(ids[kept], codes[kept], log_tail)])
    return streams


def _checksum(ids: np.ndarray, codes: np.ndarray, log_tail: np.ndarray) -> int:
    crc = 0
    for values in (
        np.asarray(ids, dtype="<i8"),
        np.asarray(codes, dtype="<i8"),
        np.asarray(log_tail, dtype="<f4"),
    ):
        crc = zlib.crc32(values.tobytes(), crc)
    return crc % 2**CHECKSUM_BITS


def _rank_bands(width: int, bounds: tuple[int, ...]) -> list[np.ndarray]:
    """Per band [bounds[i], bounds[i + 1]), which of the ranks 1..width-1 it holds."""
    ranks = np.arange(1, width)
    return [(ranks >= low) & (ranks < high) for low, high in pairwise((*bounds, np.inf))]


def _id_bands(streams: dict[str, np.ndarray], id_ranks: tuple[int, ...]) -> list[np.ndarray]:
    """The `ids` stream split by rank into the bands of `id_ranks`, each in the stream's order."""
    band = np.searchsorted(np.asarray(id_ranks), streams["ranks"], side="right") - 1
    return [streams["ids"][band == index] for index in range(len(id_ranks))]


def _coded_bits(values: np.ndarray, table: FrequencyTable) -> float:
    """The bits `table` codes `values` in, near enough (rANS adds a few bits per row)."""
    found = np.bincount(np.searchsorted(table.symbols, values), minlength=len(table.symbols))
    used = found > 0
    return float(-(found[used] * np.log2(table.counts[used] / table.counts.sum())).sum())


@dataclass(frozen=True, eq=False)
class SoftLabelCoder:
    """The frequency tables of a coded dataset, one per stream, and the id rank bands they were fitted for."""

    tables: dict[str, FrequencyTable]
    id_ranks: tuple[int, ...] = (1,)

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams with a table, in decoding order."""
        return ("slots", "first_ids", *self.id_streams, "first_codes", *DELTAS, "tail_high")

    @property
    def id_streams(self) -> tuple[str, ...]:
        return tuple(f"ids_{rank}" for rank in self.id_ranks)

    @classmethod
    def fit(cls, streams: list[dict[str, np.ndarray]]) -> SoftLabelCoder:
        """Tables fitted to every row's streams (`row_streams`), for the id bands of ID_RANK_CHOICES that code
        them in the fewest bits, tables included."""
        joined = {
            name: np.concatenate([s[name] for s in streams] or [[]]).astype(np.int64)
            for name in (*OTHER_STREAMS, "ids", "ranks")
        }
        tables = {name: FrequencyTable.fit(joined[name]) for name in OTHER_STREAMS}
        candidates = []
        for id_ranks in ID_RANK_CHOICES:
            bands = _id_bands(joined, id_ranks)
            if id_ranks == (1,) or all(len(band) for band in bands):
                band_tables = FrequencyTable.fit_shared(bands)
                names = [f"ids_{rank}" for rank in id_ranks]
                coder = cls(tables | dict(zip(names, band_tables, strict=True)), id_ranks)
                bits = sum(map(_coded_bits, bands, band_tables)) + 8 * len(coder.pack_tables())
                candidates.append((bits, len(candidates), coder))
        return min(candidates)[2]

    def encode(self, streams: dict[str, np.ndarray]) -> bytes:
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        positions = len(streams["first_ids"])
        coder.encode_reverse(streams["checksum"].astype(np.int32), _uniform(CHECKSUM_BITS))
        if positions:
            coder.encode_reverse(streams["tail_low"].astype(np.int32), _uniform(TAIL_LOW_BITS))
        values = streams | dict(zip(self.id_streams, _id_bands(streams, self.id_ranks), strict=True))
        for name in reversed(self.streams):
            self.tables[name].encode(coder, values[name])
        coder.encode_reverse(np.array([positions], dtype=np.int32), _uniform(POSITION_BITS))
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(
        self, blob: bytes, next_tokens: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int64, -1 past each position's slots; codes int64) as [positions, width'] arrays (width' =
        max(width, the most slots stored)), and the float32 log tails, of one row whose positions predict
        `next_tokens`. A stream of another length, with data left or a wrong checksum is a ValueError."""
        import constriction

        coder = constriction.stream.stack.AnsCoder(np.frombuffer(blob, dtype="<u4").astype(np.uint32))
        positions = len(next_tokens)
        (stored,) = coder.decode(_uniform(POSITION_BITS), 1)
        if stored != positions:
            raise ValueError(
                f"it stores {stored} positions, but input_ids has {positions} tokens after completion_start"
            )
        slots = self.tables["slots"].decode(coder, positions)
        width = max(width, int(slots.max(initial=1)))
        kept = np.arange(width) < slots[:, None]
        symbols = np.zeros((positions, width), dtype=np.int64)
        symbols[:, 0] = self.tables["first_ids"].decode(coder, positions)
        for name, band in zip(self.id_streams, self._band_masks(kept, self.id_ranks), strict=True):
            symbols[band] = self.tables[name].decode(coder, int(band.sum()))
        ids = np.where(symbols == NEXT, np.asarray(next_tokens, dtype=np.int64)[:, None], symbols)
        ids[~kept] = -1
        deltas = np.zeros((positions, width), dtype=np.int64)
        first = self.tables["first_codes"].decode(coder, positions)
        for name, band in zip(DELTAS, self._band_masks(kept, DELTA_RANKS), strict=True):
            deltas[band] = self.tables[name].decode(coder, int(band.sum()))
        high = self.tables["tail_high"].decode(coder, positions)
        low = coder.decode(_uniform(TAIL_LOW_BITS), positions) if positions else np.zeros(0, dtype=np.int64)
        log_tail = ((high << TAIL_LOW_BITS) | low).astype("<u4").view("<f4")
        codes = first[:, None] + np.cumsum(deltas, axis=1)
        (checksum,) = coder.decode(_uniform(CHECKSUM_BITS), 1)
        if not coder.is_empty() or checksum != _checksum(ids[kept], codes[kept], log_tail):
            raise ValueError("its checksum fails: corrupted, or coded with other frequency tables")
        return ids, codes, log_tail

    @staticmethod
    def _band_masks(kept: np.ndarray, bounds: tuple[int, ...]) -> list[np.ndarray]:
        """Per rank band, the [positions, width] mask of the stored slots of rank >= 1 in it."""
        masks = []
        for band in _rank_bands(kept.shape[1], bounds):
            mask = np.zeros_like(kept)
            mask[:, 1:] = kept[:, 1:] & band
            masks.append(mask)
        return masks

    def pack_tables(self) -> str:
        """Every table as one exp-Golomb bit string in base85: per stream (the id bands sharing their symbols)
        the symbols (`_write_symbols`), then each table's counts (`_write_counts`)."""
        writer = BitWriter()
        for group in self._table_groups():
            _write_symbols(writer, self.tables[group[0]].symbols)
            for name in group:
                counts = self.tables[name].counts
                _write_counts(writer, _id_count_levels(counts) if name in self.id_streams else counts)
        return writer.to_text()

    def _table_groups(self) -> list[tuple[str, ...]]:
        return [self.id_streams if name == self.id_streams[0] else (name,) for name in self.streams
                if name not in self.id_streams[1:]]  # fmt: skip

    @classmethod
    def unpack_tables(cls, text: str, id_ranks: tuple[int, ...]) -> SoftLabelCoder:
        reader, tables, id_streams = BitReader(text), {}, cls({}, id_ranks).id_streams
        for group in cls({}, id_ranks)._table_groups():
            symbols = _read_symbols(reader)
            for name in group:
                counts = _read_counts(reader, len(symbols))
                if name in id_streams:
                    if counts.max(initial=0) >= len(ID_COUNTS):
                        raise ValueError("frequency tables with an id count level out of range")
                    counts = ID_COUNTS[counts]
                tables[name] = FrequencyTable(symbols, counts)
        if reader.position != len(reader.bits):
            raise ValueError("frequency tables with bits left over")
        return cls(tables, id_ranks)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "name": "rans",
            "library": LIBRARY,
            "tail": f"float32 bits: the high {32 - TAIL_LOW_BITS} by their table, the low {TAIL_LOW_BITS} uniform",
            "tail_low_bits": TAIL_LOW_BITS,
            "position_bits": POSITION_BITS,
            "checksum": f"zlib.crc32 of ids (int64), codes (int64), log tails (float32) mod 2**{CHECKSUM_BITS}",
            "next_token_symbol": NEXT,
            "id_ranks": list(self.id_ranks),
            "id_count_bits": ID_COUNT_BITS,
            "delta_ranks": list(DELTA_RANKS),
            "tables": self.pack_tables(),
        }

    @classmethod
    def from_metadata(cls, coder: dict[str, Any], version: int) -> SoftLabelCoder:
        """The coder a format-`version` dataset declares (3: its base85-of-zlib tables, one id band)."""
        layout = (coder["name"], list(coder["delta_ranks"]), coder["tail_low_bits"], coder["position_bits"])
        if layout != ("rans", list(DELTA_RANKS), TAIL_LOW_BITS, POSITION_BITS):
            raise ValueError(
                f"unknown coder layout (name, delta_ranks, tail_low_bits, position_bits) {layout}"
            )
        tables = coder["tables"]
        if version == 3:
            streams = cls({}).streams
            return cls(
                {
                    name: FrequencyTable.from_format_3(tables["ids" if name == "ids_1" else name])
                    for name in streams
                }
            )
        if coder["id_count_bits"] != ID_COUNT_BITS:
            raise ValueError(f"unknown id_count_bits {coder['id_count_bits']!r}")
        id_ranks = tuple(int(rank) for rank in coder["id_ranks"])
        if id_ranks not in ID_RANK_CHOICES:
            raise ValueError(f"unknown id_ranks {list(id_ranks)}")
        return cls.unpack_tables(tables, id_ranks)


def _write_symbols(writer: BitWriter, symbols: np.ndarray) -> None:
    """How many; the first (zigzag: NEXT is negative); the gaps between them less one, in the best order."""
    writer.write(np.array([len(symbols)]))
    if len(symbols):
        first = int(symbols[0])
        writer.write(np.array([2 * first if first >= 0 else -2 * first - 1]))
        writer.write_best(np.diff(symbols) - 1)


def _read_symbols(reader: BitReader) -> np.ndarray:
    (size,) = reader.read(1)
    if not size:
        return np.zeros(0, dtype=np.int64)
    (zigzag,) = reader.read(1)
    first = zigzag // 2 if zigzag % 2 == 0 else -(zigzag + 1) // 2
    return first + np.concatenate([[0], np.cumsum(reader.read_best(int(size) - 1) + 1)])


def _id_count_levels(counts: np.ndarray) -> np.ndarray:
    """Each count's index in ID_COUNTS: the nearest by ratio (0 stays 0)."""
    counts = np.asarray(counts, dtype=np.int64)
    above = np.minimum(np.searchsorted(ID_COUNTS, counts), len(ID_COUNTS) - 1)
    below = np.maximum(above - 1, 0)
    nearer_below = counts.astype(np.float64) ** 2 < ID_COUNTS[below] * ID_COUNTS[above].astype(np.float64)
    return np.where((ID_COUNTS[above] != counts) & nearer_below & (counts > 0), below, above)


def _write_counts(writer: BitWriter, counts: np.ndarray) -> None:
    """The counts in the shorter of two layouts, after its number: 0, the least count and the counts less it;
    1 (for counts mostly 0: a band's over a shared alphabet), how many are not 0, the runs of 0 before each and
    after the last, and those counts less one."""
    places = np.flatnonzero(counts)
    least = int(counts.min(initial=0))
    layouts = [
        [(np.array([0, least]), 0), (counts - least, None)],
        [(np.array([1, len(places)]), 0), (np.diff(np.concatenate([[-1], places, [len(counts)]])) - 1, None),
         (counts[places] - 1, None)],
    ]  # fmt: skip
    sizes = [sum(_bits(values, order) for values, order in layout) for layout in layouts]
    for values, order in layouts[int(np.argmin(sizes))]:
        if order is None:
            writer.write_best(values)
        else:
            writer.write(values, order)


def _bits(values: np.ndarray, order: int | None) -> int:
    """Bits `BitWriter.write` (an order) or `write_best` (None: its order's code too) writes `values` in."""
    if order is None:
        order, bits = _best_order(values)
        return bits + int(_exp_golomb_widths(np.array([order]), 0).sum())
    return int(_exp_golomb_widths(values, order).sum())


def _read_counts(reader: BitReader, size: int) -> np.ndarray:
    (layout, value) = reader.read(2)
    if layout == 0:
        return reader.read_best(size) + value
    if layout != 1 or value > size:
        raise ValueError(f"frequency tables with an unknown counts layout ({layout}, {value})")
    places = np.cumsum(reader.read_best(int(value) + 1) + 1)[:-1] - 1
    if len(places) and places[-1] >= size:
        raise ValueError("frequency tables with counts past their symbols")
    counts = np.zeros(size, dtype=np.int64)
    counts[places] = reader.read_best(int(value)) + 1
    return counts


def _uniform(bits: int):
    import constriction

    return constriction.stream.model.Uniform(2**bits)
