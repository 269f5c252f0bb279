"""The soft-label contract (docs/architecture.md): extra columns on the hard-label rows, same tokens.

Format 4, written by `distillab label` with q8 log-probs (the default) and declared in distillab.json
(`soft_labels.format`):

    input_ids         list<int32>          the teacher's tokens of the full chat-formatted sequence
    completion_start  int32                index in input_ids of the first completion token
    topk_coded        binary               the row's top-k ids, log-prob codes (`LogProbQuantiser`) and float32
                                           log tails, entropy-coded losslessly (`distillab.data.softcoder`: one rANS
                                           stream; the frequency tables of the whole dataset are in distillab.json)

Format 3 (read, never written) has the same column; its tables are stored less compactly (`softcoder`).

Format 2, the same soft labels uncoded, one row at a time: written with float log-probs, by a `--shard` run (its
`--merge` codes the whole dataset as format 4) and to a label run's own shards:

    input_ids         list<int32>          the teacher's tokens of the full chat-formatted sequence
    completion_start  int32                index in input_ids of the first completion token
    topk_ids          list<list<uint16>>   [positions, slots] token ids, most likely first (vocabulary <= 65,536)
                      binary               above: every id of the row bit-packed at ceil(log2 vocab) bits
    topk_logprobs     list<list<uint8>>    [positions, slots] log-prob codes of `LogProbQuantiser`
                      (or list<list<float16|float32>>: the log-probs themselves, `--logprob_dtype`)
    topk_log_tail     list<float32>        [positions] log of the teacher's mass outside the stored slots

A position stores from 1 to k slots in both (adaptive k: the fewest whose mass reaches `mass`, at least `min_k`).
Format 1 (no `format` key; read, never written): int32 ids and float16/float32 log-probs, k slots at every
position, no tail.

Alignment: row j of topk_* is the teacher's distribution at position t = completion_start - 1 + j, i.e. over the
token input_ids[completion_start + j] (position t holds the distribution over token t+1). Only the completion
(the teacher's assistant turn and the chat template's tokens after it) is covered: prompts are never trained on.

`SoftLabelFormat.encode` writes one row's format-2 columns, `code_soft_labels` codes finished rows as format 4;
`decode_soft_labels` is the one reader, for every format:
padded arrays where a slot with id PAD_ID (-1) and log-prob -inf is padding. `validate_soft_labels` checks
decoded arrays against the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from distillab.data.softcoder import SoftLabelCoder, row_streams
from distillab.errors import DataError

FORMAT_VERSION = 4  # written with q8 log-probs; ROW_FORMAT otherwise
CODED_FORMATS = (3, FORMAT_VERSION)  # the formats of one coded column (3: read only)
ROW_FORMAT = 2
SEQUENCE_COLUMNS = ("input_ids", "completion_start")
BASE_COLUMNS = (*SEQUENCE_COLUMNS, "topk_ids", "topk_logprobs")
CODED_COLUMN = "topk_coded"
TAIL_COLUMN = "topk_log_tail"
ALIGNMENT = "topk_*[j] is the teacher distribution at position completion_start-1+j, over token input_ids[completion_start+j]"
TAIL = {
    1: "not stored: the missing mass 1 - sum(exp(topk_logprobs)) is left to the KD loss (renormalize | tail_bucket)",
    2: "stored exactly per position (topk_log_tail, from the teacher's full distribution); the KD loss's tail_bucket "
    "uses it, renormalize ignores it",
    **dict.fromkeys(
        CODED_FORMATS,
        "stored exactly per position (float32, in topk_coded, from the teacher's full distribution); the KD loss's "
        "tail_bucket uses it, renormalize ignores it",
    ),
}
FLOAT_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
QUANTISED = "q8"
LOGPROB_DTYPES = (QUANTISED, *FLOAT_DTYPES)
PAD_ID = -1
UINT16_VOCAB = 2**16
MASS_TOLERANCE = 1e-2  # stored top-k probabilities may exceed 1 by float16 rounding, not more


@dataclass(frozen=True)
class LogProbQuantiser:
    """8-bit codes on a log scale: code c stands for log p = -exp(offset + c * step).

    Rounding log(-log p) to the grid bounds the error relative to the log-prob: |decoded - exact| <=
    `max_relative_error` * |exact| for log-probs in [-exp(offset + 255 step), -exp(offset)]; log-probs nearer 0
    decode to -exp(offset) (error < exp(offset)), lower ones to the floor (mass < exp(-47) per slot).
    """

    offset: float = math.log(1e-6)
    step: float = (math.log(50.0) - math.log(1e-6)) / 255
    bits: int = 8

    @property
    def max_relative_error(self) -> float:
        return math.expm1(self.step / 2)

    @cached_property
    def table(self) -> np.ndarray:
        return (-np.exp(self.offset + np.arange(2**self.bits) * self.step)).astype(np.float32)

    def encode(self, logprobs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            scaled = (
                np.log(-np.minimum(np.asarray(logprobs, dtype=np.float64), 0.0)) - self.offset
            ) / self.step
        return np.rint(np.clip(scaled, 0, 2**self.bits - 1)).astype(np.uint8)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "name": "log_neg_logprob",
            "bits": self.bits,
            "offset": self.offset,
            "step": self.step,
            "decoded": "log p = -exp(offset + code * step)",
            "max_relative_error": self.max_relative_error,
            "max_abs_error_near_zero": math.exp(self.offset),
        }


@dataclass(frozen=True)
class SoftLabelFormat:
    """How a dataset stores its soft labels (module docstring), read from and written to distillab.json."""

    version: int
    k: int
    vocab_size: int
    logprob_dtype: str  # QUANTISED or a float dtype
    quantiser: LogProbQuantiser | None = None
    coder: SoftLabelCoder | None = None  # CODED_FORMATS

    @classmethod
    def compact(cls, k: int, vocab_size: int, logprob_dtype: str = QUANTISED) -> SoftLabelFormat:
        """The row format (2): what a label run's shards hold before `code_soft_labels`."""
        quantiser = LogProbQuantiser() if logprob_dtype == QUANTISED else None
        return cls(ROW_FORMAT, k, vocab_size, logprob_dtype, quantiser)

    @property
    def id_bits(self) -> int:
        """Bits per stored id: 32 (format 1), 16 up to 65,536 ids, else the fewest that hold the vocabulary."""
        if self.version == 1:
            return 32
        return 16 if self.vocab_size <= UINT16_VOCAB else math.ceil(math.log2(self.vocab_size))

    @property
    def columns(self) -> tuple[str, ...]:
        if self.version in CODED_FORMATS:
            return (*SEQUENCE_COLUMNS, CODED_COLUMN)
        return BASE_COLUMNS if self.version == 1 else (*BASE_COLUMNS, TAIL_COLUMN)

    def fields(self) -> list[tuple[str, pa.DataType]]:
        if self.version in CODED_FORMATS:
            return [
                ("input_ids", pa.list_(pa.int32())),
                ("completion_start", pa.int32()),
                (CODED_COLUMN, pa.binary()),
            ]
        if self.version == 1:
            ids: pa.DataType = pa.list_(pa.list_(pa.int32()))
        else:
            ids = pa.list_(pa.list_(pa.uint16())) if self.id_bits == 16 else pa.binary()
        logprobs = pa.uint8() if self.quantiser else FLOAT_DTYPES[self.logprob_dtype]
        fields = [
            ("input_ids", pa.list_(pa.int32())),
            ("completion_start", pa.int32()),
            ("topk_ids", ids),
            ("topk_logprobs", pa.list_(pa.list_(logprobs))),
        ]
        return fields if self.version == 1 else [*fields, (TAIL_COLUMN, pa.list_(pa.float32()))]

    def to_metadata(self) -> dict[str, Any]:
        logprobs = self.quantiser.to_metadata() if self.quantiser else {"name": self.logprob_dtype}
        declared = {
            "version": self.version,
            "ids": self._ids_metadata(),
            "logprobs": logprobs,
            "tail": CODED_COLUMN if self.coder else TAIL_COLUMN,
        }
        return declared | ({"coder": self.coder.to_metadata()} if self.coder else {})

    def _ids_metadata(self) -> dict[str, Any]:
        if self.version in CODED_FORMATS:
            return {"encoding": "rans", "bits": self.id_bits}
        return (
            {"encoding": "uint16"} if self.id_bits == 16 else {"encoding": "bitpacked", "bits": self.id_bits}
        )

    @classmethod
    def from_metadata(cls, soft: dict[str, Any], where: str) -> SoftLabelFormat:
        """The format a dataset's `soft_labels` metadata declares; a one-line `DataError` naming `where` if the
        declaration is missing, corrupt or inconsistent."""
        try:
            k, vocab_size = int(soft["k"]), int(soft["vocab_size"])
            declared = soft.get("format")
            if declared is None:
                return cls(1, k, vocab_size, str(soft.get("logprob_dtype", "float32")))
            version, logprobs = declared["version"], declared["logprobs"]
            if version not in (ROW_FORMAT, *CODED_FORMATS):
                raise ValueError(
                    f"format version {version!r} is not one this distillab reads (1, {ROW_FORMAT}, "
                    f"{', '.join(map(str, CODED_FORMATS))})"
                )
            if logprobs["name"] == "log_neg_logprob":
                quantiser = LogProbQuantiser(
                    float(logprobs["offset"]), float(logprobs["step"]), int(logprobs["bits"])
                )
                found = cls(version, k, vocab_size, QUANTISED, quantiser)
            else:
                found = cls(version, k, vocab_size, logprobs["name"])
            if version in CODED_FORMATS:
                if found.quantiser is None:
                    raise ValueError(f"format {version} codes q8 log-probs, not {logprobs['name']!r}")
                found = replace(found, coder=SoftLabelCoder.from_metadata(declared["coder"], version))
            if declared["ids"] != found._ids_metadata():
                raise ValueError(
                    f"ids {declared['ids']} do not fit vocab_size {vocab_size} (expected {found._ids_metadata()})"
                )
        except (KeyError, TypeError, ValueError) as err:
            detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise DataError(f"{where}: corrupt soft_labels format ({detail})") from None
        if found.logprob_dtype not in LOGPROB_DTYPES or (found.quantiser and found.quantiser.bits != 8):
            raise DataError(f"{where}: corrupt soft_labels format (unknown log-prob encoding {logprobs})")
        return found

    def check_schema(self, schema: pa.Schema, where: str) -> None:
        """The data columns must have the types the metadata declares."""
        for name, expected in self.fields():
            found = schema.field(name).type if name in schema.names else None
            if found != expected:
                raise DataError(
                    f"{where}: column {name} is {found}, but distillab.json declares format {self.version} "
                    f"({expected})"
                )

    def mass_tolerance(self) -> float:
        """How far above 1 the decoded slots may sum: log-probs within a relative error r of the exact ones
        sum to at most k**r (the worst case is k equal slots)."""
        if self.quantiser is None:
            return MASS_TOLERANCE
        return max(MASS_TOLERANCE, self.k**self.quantiser.max_relative_error - 1 + 1e-6)

    def encode(self, ids: np.ndarray, logprobs: np.ndarray, log_tail: np.ndarray, slots: np.ndarray) -> dict:
        """One row's topk columns (format 2): position j keeps its first `slots[j]` of the sorted top-k."""
        kept = np.arange(ids.shape[1]) < np.asarray(slots)[:, None]
        split = np.cumsum(slots)[:-1]
        flat_ids = np.asarray(ids)[kept]
        if self.id_bits == 16:
            topk_ids: Any = np.split(flat_ids.astype(np.uint16), split)
        else:
            topk_ids = pack_bits(flat_ids, self.id_bits)
        flat_logprobs = np.asarray(logprobs)[kept]
        if self.quantiser:
            flat_logprobs = self.quantiser.encode(flat_logprobs)
        else:
            flat_logprobs = flat_logprobs.astype(self.logprob_dtype)
        return {
            "topk_ids": topk_ids,
            "topk_logprobs": np.split(flat_logprobs, split),
            TAIL_COLUMN: np.asarray(log_tail, dtype=np.float32),
        }


def decode_soft_labels(
    row: dict[str, Any], fmt: SoftLabelFormat
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(ids int32, log-probs float32, log tail float32 or None for format 1) of one row's stored soft labels,
    as [positions, fmt.k] arrays padded with PAD_ID / -inf: the one reader of every format."""
    if fmt.coder:
        return _decode_coded(row, fmt)
    logprobs = row["topk_logprobs"]
    slots = np.fromiter(map(len, logprobs), dtype=np.int64, count=len(logprobs))
    flat_logprobs = np.concatenate(logprobs) if len(logprobs) else np.zeros(0)
    if fmt.version == 2 and fmt.id_bits != 16:
        flat_ids = unpack_bits(row["topk_ids"], fmt.id_bits, int(slots.sum()))
    else:
        flat_ids = np.concatenate(row["topk_ids"]) if len(logprobs) else np.zeros(0)
    if fmt.quantiser:
        flat_logprobs = fmt.quantiser.table[np.asarray(flat_logprobs, dtype=np.intp)]
    width = max(fmt.k, int(slots.max(initial=0)))
    kept = np.arange(width) < slots[:, None]
    ids = np.full((len(slots), width), PAD_ID, dtype=np.int32)
    values = np.full((len(slots), width), -np.inf, dtype=np.float32)
    ids[kept], values[kept] = flat_ids, flat_logprobs
    log_tail = np.asarray(row[TAIL_COLUMN], dtype=np.float32) if fmt.version == 2 else None
    return ids, values, log_tail


def _decode_coded(row: dict[str, Any], fmt: SoftLabelFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    next_tokens = _next_tokens(row)
    try:
        ids, codes, log_tail = fmt.coder.decode(row[CODED_COLUMN], next_tokens, fmt.k)
    except ValueError as err:
        raise DataError(
            f"soft labels row {row.get('id', '?')}: {CODED_COLUMN} does not decode ({err})"
        ) from None
    kept = ids != PAD_ID
    if (codes[kept] < 0).any() or (codes[kept] >= len(fmt.quantiser.table)).any():
        raise DataError(
            f"soft labels row {row.get('id', '?')}: {CODED_COLUMN} decodes to log-prob codes outside the quantiser's"
        )
    logprobs = np.full(ids.shape, -np.inf, dtype=np.float32)
    logprobs[kept] = fmt.quantiser.table[codes[kept]]
    return ids.astype(np.int32), logprobs, log_tail


def _next_tokens(row: dict[str, Any]) -> np.ndarray:
    """The tokens the row's soft-label positions predict: input_ids after completion_start."""
    return np.asarray(row["input_ids"][row["completion_start"] :], dtype=np.int64)


def code_soft_labels(
    rows: list[dict[str, Any]], fmt: SoftLabelFormat
) -> tuple[list[dict[str, Any]], SoftLabelFormat]:
    """Format 4 of `rows` stored in `fmt` (q8 log-probs): frequency tables fitted to all of them, and each row with
    its soft labels coded by them (its other columns kept). Format 4 stores one position per token after
    completion_start: a row with another count is a `DataError`."""
    streams = []
    for row in rows:
        ids, logprobs, log_tail = decode_soft_labels(row, fmt)
        next_tokens = _next_tokens(row)
        if len(next_tokens) != len(ids):
            raise DataError(
                f"soft labels row {row.get('id', '?')}: {len(ids)} stored positions, but input_ids has "
                f"{len(next_tokens)} tokens after completion_start={row['completion_start']}"
            )
        slots = (ids != PAD_ID).sum(axis=1)
        streams.append(row_streams(ids, fmt.quantiser.encode(logprobs), slots, next_tokens, log_tail))
    coded = replace(fmt, version=FORMAT_VERSION, coder=SoftLabelCoder.fit(streams))
    replaced = set(fmt.columns) - set(SEQUENCE_COLUMNS)
    return [
        {c: v for c, v in row.items() if c not in replaced} | {CODED_COLUMN: coded.coder.encode(row_stream)}
        for row, row_stream in zip(rows, streams, strict=True)
    ], coded


def keep_first_slots(
    ids: np.ndarray, logprobs: np.ndarray, log_tail: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The first `k` slots of decoded soft labels; the dropped slots' mass joins the stored tail."""
    if log_tail is not None and ids.shape[1] > k:
        log_tail = np.logaddexp(log_tail, np.logaddexp.reduce(logprobs[:, k:].astype(np.float64), axis=1))
        log_tail = log_tail.astype(np.float32)
    return ids[:, :k], logprobs[:, :k], log_tail


def adaptive_slots(logprobs: np.ndarray, mass: float | None, min_k: int) -> np.ndarray:
    """Per position, the fewest of the sorted top-k whose probability reaches `mass` (all k if it never does),
    at least `min_k`; with `mass` None, all k."""
    n, k = logprobs.shape
    if mass is None:
        return np.full(n, k, dtype=np.int64)
    cumulative = np.cumsum(np.exp(np.asarray(logprobs, dtype=np.float64)), axis=1)
    reached = cumulative >= mass
    slots = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, k)
    return np.clip(slots, min(min_k, k), k)


def log_tail_after(logprobs: np.ndarray, log_tail_k: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """log of the mass outside the first `slots` of the sorted top-k: the tail outside all k plus the dropped
    slots, summed in float64 (no cancellation against 1)."""
    dropped = np.where(np.arange(logprobs.shape[1]) >= slots[:, None], logprobs.astype(np.float64), -np.inf)
    return np.logaddexp(np.asarray(log_tail_k, dtype=np.float64), np.logaddexp.reduce(dropped, axis=1))


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Non-negative integers < 2**bits, `bits` each, little-endian bit order."""
    planes = (np.asarray(values, dtype=np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_bits(blob: bytes, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(np.frombuffer(blob, dtype=np.uint8), bitorder="little")[: count * bits]
    return planes.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))


def validate_soft_labels(
    topk_ids: Any,
    topk_logprobs: Any,
    *,
    vocab_size: int,
    n_positions: int,
    soft_labels_k: int | None = None,
    row: int | str = "?",
    mass_tolerance: float = MASS_TOLERANCE,
) -> None:
    """Check one row's decoded top-k against the contract; raise a one-line `DataError` naming row and field.

    `n_positions` is how many positions must be covered (the positions that predict a next token, usually
    ``len(input_ids) - 1``); `soft_labels_k` is how many slots the trainer will use (default: all stored).
    Only those positions and slots are checked. Padding slots (id PAD_ID) may hold any log-prob. The slots may
    sum above 1 by `mass_tolerance` (rounding; quantised formats: `SoftLabelFormat.mass_tolerance`).
    """
    where = f"soft labels row {row}:"
    try:
        ids, logprobs = np.asarray(topk_ids), np.asarray(topk_logprobs)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where} topk_ids/topk_logprobs are not rectangular arrays ({err})") from None
    if ids.ndim != 2 or ids.shape != logprobs.shape:
        raise DataError(
            f"{where} topk_ids {ids.shape} and topk_logprobs {logprobs.shape} must both be [positions, k]"
        )
    if ids.dtype.kind not in "iu":
        raise DataError(f"{where} topk_ids must hold integer token ids, got {ids.dtype}")
    stored_positions, stored_k = ids.shape
    if soft_labels_k is not None and soft_labels_k > stored_k:
        raise DataError(
            f"{where} topk_ids stores {stored_k} slots per position, fewer than the soft_labels_k="
            f"{soft_labels_k} requested"
        )
    if stored_positions < n_positions:
        raise DataError(
            f"{where} topk_ids covers {stored_positions} positions, fewer than the {n_positions} to train on"
        )
    ids, logprobs = (
        ids[:n_positions, :soft_labels_k].astype(np.int64),
        logprobs[:n_positions, :soft_labels_k].astype(np.float64),
    )
    padding = ids == PAD_ID
    bad = ((ids < 0) & ~padding) | (ids >= vocab_size)
    if bad.any():
        position, slot = np.argwhere(bad)[0]
        raise DataError(
            f"{where} topk_ids has id {ids[position, slot]} at position {position}, slot {slot}, "
            f"outside the vocabulary [0, {vocab_size}) (padding is {PAD_ID})"
        )
    bad = ~padding & (np.isnan(logprobs) | (logprobs == math.inf))
    if bad.any():
        position, slot = np.argwhere(bad)[0]
        raise DataError(
            f"{where} topk_logprobs is {logprobs[position, slot]} at position {position}, slot {slot}; "
            "log-probs must be finite, or -inf for padding"
        )
    with np.errstate(over="ignore"):
        mass = np.exp(np.where(padding, -math.inf, logprobs)).sum(-1)
    if (mass > 1 + mass_tolerance).any():
        position = np.argmax(mass > 1 + mass_tolerance)
        raise DataError(
            f"{where} topk_logprobs at position {position} sum to probability {mass[position]:.3g} > 1; "
            "store log-probabilities at temperature 1, not logits"
        )
