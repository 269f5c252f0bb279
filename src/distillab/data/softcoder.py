"""Soft labels format 3: each row's ids, log-prob codes and log tails as one rANS stream, static per-dataset models.

A row's stored top-k (positions j = 0 .. len(input_ids) - completion_start - 1) is split into streams, decoded
in this order:

    positions    1                      how many positions the row stores (uniform, POSITION_BITS: a check)
    slots        [positions]            slots stored per position (adaptive k; one symbol at a fixed k)
    first_ids    [positions]            slot 0's id, NEXT where it is the sequence's next token (a greedy position)
    ids          [slots - positions]    the other slots' ids, in rank order (NEXT as above)
    first_codes  [positions]            slot 0's log-prob code (`LogProbQuantiser`)
    deltas_R     slots of rank r in [R, next R): code(r) - code(r - 1), >= 0 when the slots are sorted
    tail_high    [positions]            the float32 log tail's bits above the low TAIL_LOW_BITS
    tail_low     [positions]            its low TAIL_LOW_BITS bits (uniform: no table)
    checksum     1                      CRC-32 of the decoded ids, codes and tails, low CHECKSUM_BITS (uniform)

Every stream but tail_low has a frequency table fitted to the whole dataset (`SoftLabelCoder.fit`), stored in
distillab.json, and is entropy-coded with it (constriction's rANS coder, a categorical model per table); a row
decodes with a few vectorised calls, independently of the others. The coding is lossless: a row decodes to exactly
the ids, codes and float32 tails it was encoded from. Measured on the SmolLM2 demo rows (README,
bench.soft_labels): ~10 bits per id (16 as uint16), ~1.2 bits per log-prob code (8 as q8 codes), ~23 bits per
tail (32 as float32).
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
STREAMS = ("slots", "first_ids", "ids", "first_codes", *DELTAS, "tail_high")  # the streams with a table
TAIL_LOW_BITS = 20
POSITION_BITS = 24
CHECKSUM_BITS = 16  # a row decoded with another dataset's tables (or corrupted) fails it, but for 1 in 65,536
LIBRARY = "constriction 0.5 AnsCoder (32-bit words), Categorical(perfect=False) from the counts"


def _pack(values: np.ndarray) -> str:
    """Non-negative integers < 2**32 as base85 of zlib of their four little-endian byte planes."""
    planes = np.asarray(values, dtype="<u4").view(np.uint8).reshape(-1, 4).T
    return base64.b85encode(zlib.compress(planes.tobytes(), 9)).decode()


def _unpack(text: str) -> np.ndarray:
    try:
        planes = np.frombuffer(zlib.decompress(base64.b85decode(text)), dtype=np.uint8)
    except (ValueError, zlib.error) as err:
        raise ValueError(f"a frequency table that does not decompress ({err})") from None
    return np.ascontiguousarray(planes.reshape(4, -1).T).view("<u4").ravel().astype(np.int64)


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

    def to_metadata(self) -> dict[str, Any]:
        """The first symbol; the gaps between symbols less one and the counts less one (`_pack`)."""
        return {
            "first": int(self.symbols[0]) if len(self.symbols) else 0,
            "gaps": _pack(np.diff(self.symbols) - 1),
            "counts": _pack(self.counts - 1),
        }

    @classmethod
    def from_metadata(cls, table: dict[str, Any]) -> FrequencyTable:
        counts = _unpack(table["counts"]) + 1
        symbols = int(table["first"]) + np.concatenate([[0], np.cumsum(_unpack(table["gaps"]) + 1)])
        if len(symbols) != max(len(counts), 1):
            raise ValueError("a frequency table whose gaps and counts differ in number")
        return cls(symbols[: len(counts)], counts)


def row_streams(
    ids: np.ndarray, codes: np.ndarray, slots: np.ndarray, next_tokens: np.ndarray, log_tail: np.ndarray
) -> dict[str, np.ndarray]:
    """One row's streams (module docstring) from its [positions, width] ids and codes, of which position j keeps
    its first `slots[j]`, the token each position predicts and the float32 log tails."""
    width = ids.shape[1]
    kept = np.arange(width) < slots[:, None]
    symbols = np.where(ids == np.asarray(next_tokens)[:, None], NEXT, ids).astype(np.int64)
    deltas = np.diff(codes.astype(np.int64), axis=1)
    streams = {
        "slots": np.asarray(slots, dtype=np.int64),
        "first_ids": symbols[:, 0],
        "ids": symbols[:, 1:][kept[:, 1:]],
        "first_codes": codes[:, 0].astype(np.int64),
    }
    for name, band in zip(DELTAS, _rank_bands(width), strict=True):
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


def _rank_bands(width: int) -> list[np.ndarray]:
    """Per DELTA_RANKS band, which of the ranks 1..width-1 it holds."""
    ranks, bounds = np.arange(1, width), (*DELTA_RANKS, np.inf)
    return [(ranks >= low) & (ranks < high) for low, high in pairwise(bounds)]


@dataclass(frozen=True, eq=False)
class SoftLabelCoder:
    """The frequency tables of a format-3 dataset, one per stream."""

    tables: dict[str, FrequencyTable]

    @classmethod
    def fit(cls, streams: list[dict[str, np.ndarray]]) -> SoftLabelCoder:
        """Tables fitted to every row's streams (`row_streams`)."""
        return cls(
            {name: FrequencyTable.fit(np.concatenate([s[name] for s in streams] or [[]])) for name in STREAMS}
        )

    def encode(self, streams: dict[str, np.ndarray]) -> bytes:
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        positions = len(streams["first_ids"])
        coder.encode_reverse(streams["checksum"].astype(np.int32), _uniform(CHECKSUM_BITS))
        if positions:
            coder.encode_reverse(streams["tail_low"].astype(np.int32), _uniform(TAIL_LOW_BITS))
        for name in reversed(STREAMS):
            self.tables[name].encode(coder, streams[name])
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
        others = kept.copy()
        others[:, 0] = False
        symbols[others] = self.tables["ids"].decode(coder, int(others.sum()))
        ids = np.where(symbols == NEXT, np.asarray(next_tokens, dtype=np.int64)[:, None], symbols)
        ids[~kept] = -1
        deltas = np.zeros((positions, width), dtype=np.int64)
        first = self.tables["first_codes"].decode(coder, positions)
        for name, band in zip(DELTAS, _rank_bands(width), strict=True):
            where = np.zeros_like(kept)
            where[:, 1:] = kept[:, 1:] & band
            deltas[where] = self.tables[name].decode(coder, int(where.sum()))
        high = self.tables["tail_high"].decode(coder, positions)
        low = coder.decode(_uniform(TAIL_LOW_BITS), positions) if positions else np.zeros(0, dtype=np.int64)
        log_tail = ((high << TAIL_LOW_BITS) | low).astype("<u4").view("<f4")
        codes = first[:, None] + np.cumsum(deltas, axis=1)
        (checksum,) = coder.decode(_uniform(CHECKSUM_BITS), 1)
        if not coder.is_empty() or checksum != _checksum(ids[kept], codes[kept], log_tail):
            raise ValueError("its checksum fails: corrupted, or coded with other frequency tables")
        return ids, codes, log_tail

    def to_metadata(self) -> dict[str, Any]:
        return {
            "name": "rans",
            "library": LIBRARY,
            "tail": f"float32 bits: the high {32 - TAIL_LOW_BITS} by their table, the low {TAIL_LOW_BITS} uniform",
            "tail_low_bits": TAIL_LOW_BITS,
            "position_bits": POSITION_BITS,
            "checksum": f"zlib.crc32 of ids (int64), codes (int64), log tails (float32) mod 2**{CHECKSUM_BITS}",
            "next_token_symbol": NEXT,
            "delta_ranks": list(DELTA_RANKS),
            "tables": {name: self.tables[name].to_metadata() for name in STREAMS},
        }

    @classmethod
    def from_metadata(cls, coder: dict[str, Any]) -> SoftLabelCoder:
        layout = (coder["name"], list(coder["delta_ranks"]), coder["tail_low_bits"], coder["position_bits"])
        if layout != ("rans", list(DELTA_RANKS), TAIL_LOW_BITS, POSITION_BITS):
            raise ValueError(
                f"unknown coder layout (name, delta_ranks, tail_low_bits, position_bits) {layout}"
            )
        return cls({name: FrequencyTable.from_metadata(coder["tables"][name]) for name in STREAMS})


def _uniform(bits: int):
    import constriction

    return constriction.stream.model.Uniform(2**bits)
