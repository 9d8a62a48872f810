"""Request traces for the simulator: the Azure 2023 CSV format, JSONL and a documented generic CSV.

Formats (chosen by extension and header):

- Azure 2023 CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps like
  ``2023-11-16 18:15:46.6826518`` (7 fractional digits; the 7th is dropped).
- JSONL: one object per line, ``{"timestamp": <ms>, "input_length": n, "output_length": m}``.
- Generic CSV: ``arrival_seconds,input_tokens,output_tokens``.

Every problem is a ``TraceError`` naming the file and line; nothing is returned from a bad file.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
GENERIC_COLUMNS = ("arrival_seconds", "input_tokens", "output_tokens")
JSONL_FIELDS = ("timestamp", "input_length", "output_length")


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class TraceRequest:
    arrival: float  # seconds from the first request
    input_tokens: int
    output_tokens: int


def _tokens(value: object, what: str, where: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise TraceError(f"{where}: {what} must be a whole number, got {value!r}") from None
    if number < 0 or (what == "output tokens" and number == 0):
        raise TraceError(f"{where}: {what} must be positive, got {number}")
    return number


def _azure_time(value: str, where: str) -> float:
    text = value.strip()
    if "." in text:
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6]}"  # strptime's %f takes at most 6 digits
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    raise TraceError(f"{where}: TIMESTAMP {value!r} is not 'YYYY-MM-DD HH:MM:SS[.fffffff]'")


def load(path: Path) -> list[TraceRequest]:
    """Read a whole trace; arrivals are relative to the first request and must not go backwards."""
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    raw: list[tuple[float, int, int, str]] = []
    if path.suffix == ".jsonl":
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                where = f"{path}:{number}"
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TraceError(f"{where}: not JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise TraceError(f"{where}: expected an object")
                unknown = sorted(set(record) - set(JSONL_FIELDS))
                if unknown:
                    raise TraceError(f"{where}: unknown field(s) {unknown}; expected {list(JSONL_FIELDS)}")
                missing = [f for f in JSONL_FIELDS if f not in record]
                if missing:
                    raise TraceError(f"{where}: missing field(s) {missing}")
                try:
                    stamp = float(record["timestamp"]) / 1000
                except (TypeError, ValueError):
                    raise TraceError(f"{where}: timestamp must be milliseconds, got {record['timestamp']!r}") from None
                raw.append((stamp, _tokens(record["input_length"], "input tokens", where),
                            _tokens(record["output_length"], "output tokens", where), where))
    else:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"{path}: empty file")
            columns = tuple(c.strip() for c in header)
            if columns not in (AZURE_COLUMNS, GENERIC_COLUMNS):
                unknown = [c for c in columns if c not in AZURE_COLUMNS + GENERIC_COLUMNS]
                raise TraceError(f"{path}:1: unknown column(s) {unknown or list(columns)}; expected "
                                 f"{','.join(AZURE_COLUMNS)} or {','.join(GENERIC_COLUMNS)}")
            azure = columns == AZURE_COLUMNS
            for number, row in enumerate(reader, start=2):
                where = f"{path}:{number}"
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 3:
                    raise TraceError(f"{where}: expected 3 fields, got {len(row)}: {','.join(row)!r}")
                if azure:
                    stamp = _azure_time(row[0], where)
                else:
                    try:
                        stamp = float(row[0])
                    except ValueError:
                        raise TraceError(f"{where}: arrival_seconds must be a number, got {row[0]!r}") from None
                raw.append((stamp, _tokens(row[1], "input tokens", where), _tokens(row[2], "output tokens", where),
                            where))
    if not raw:
        raise TraceError(f"{path}: no requests")
    for (before, *_), (after, _, _, where) in itertools.pairwise(raw):
        if after < before:
            raise TraceError(f"{where}: timestamps go backwards ({after - before:+.3f} s); traces must be sorted")
    first = raw[0][0]
    return [TraceRequest(stamp - first, i, o) for stamp, i, o, _ in raw]


def window(requests: list[TraceRequest], start: float = 0.0, duration: float | None = None) -> list[TraceRequest]:
    """The requests arriving in [start, start + duration), shifted to start at zero."""
    end = float("inf") if duration is None else start + duration
    return [TraceRequest(r.arrival - start, r.input_tokens, r.output_tokens)
            for r in requests if start <= r.arrival < end]


def multiply(requests: list[TraceRequest], factor: int) -> list[TraceRequest]:
    """Raise the rate ``factor`` times while keeping the hour-long shape: each request is followed by
    ``factor - 1`` copies spaced evenly across the gap to the next request. A trace at 5.5 req/s
    multiplied by 4 arrives at 22 req/s, with the same minute-by-minute ups and downs."""
    if factor < 1:
        raise TraceError(f"the rate multiplier must be a whole number >= 1, got {factor}")
    out: list[TraceRequest] = []
    for current, following in zip(requests, [*requests[1:], None], strict=True):
        gap = (following.arrival - current.arrival) if following else 0.0
        for copy in range(factor):
            out.append(TraceRequest(current.arrival + gap * copy / factor, current.input_tokens,
                                    current.output_tokens))
    return out


def compress(requests: list[TraceRequest], factor: float) -> list[TraceRequest]:
    """Time-compress: arrivals ``factor`` times closer together (swings become ``factor`` times faster)."""
    if factor <= 0:
        raise TraceError(f"the time-scale factor must be positive, got {factor}")
    return [TraceRequest(r.arrival / factor, r.input_tokens, r.output_tokens) for r in requests]
