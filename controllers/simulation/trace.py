"""Request traces for the simulator: the Azure 2023 CSV format, JSONL and a documented generic CSV.

Formats (chosen by extension and header):

- Azure 2023 CSV: ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps like
  ``2023-11-16 18:15:46.6826518`` (7 fractional digits; the 7th is dropped).
- JSONL: one object per line, ``{"timestamp": <ms>, "input_length": n, "output_length": m}``. Other
  fields (Mooncake's ``hash_ids`` prefix-block hashes, a user or session id) are ignored; a missing
  one of the three is an error. Timestamps are milliseconds: when more than 100 requests arrive, read
  that way, faster than 1,000 per second on average (a mean gap under 1 ms, what a trace in seconds
  looks like), a ``TraceWarning`` says so and how to convert; the trace is still read as milliseconds.
- Generic CSV: ``arrival_seconds,input_tokens,output_tokens``.

Every problem is a ``TraceError`` naming the file and line; nothing is returned from a bad file.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
GENERIC_COLUMNS = ("arrival_seconds", "input_tokens", "output_tokens")
JSONL_FIELDS = ("timestamp", "input_length", "output_length")
# A JSONL trace of more than this many requests whose mean gap, read as milliseconds, is under 1 ms is
# most likely in seconds (a thousand requests a second on average is far beyond one deployment).
SECONDS_CHECK_MIN_REQUESTS = 100


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


class TraceWarning(UserWarning):
    """A trace that loads but probably not as its author meant (JSONL timestamps that look like seconds)."""


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
                # Fields beyond the three (prefix hashes, ids) describe what the simulator does not model.
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
    if path.suffix == ".jsonl":
        _warn_if_seconds(path, raw[-1][0] - first, len(raw))
    return [TraceRequest(stamp - first, i, o) for stamp, i, o, _ in raw]


def _warn_if_seconds(path: Path, span: float, count: int) -> None:
    """``span`` is in seconds as read (the file's milliseconds / 1000)."""
    if count > SECONDS_CHECK_MIN_REQUESTS and span < count / 1000:
        warnings.warn(TraceWarning(
            f"{path}: {count:,} requests span {span:.3f} s with timestamps read as milliseconds (the JSONL "
            f"unit), over 1,000 requests per second on average: the timestamps look like seconds. They were "
            f"read as milliseconds; if they are seconds, multiply them by 1000 (e.g. "
            f"jq -c '.timestamp *= 1000' {path.name})"), stacklevel=3)


def span_text(requests: list[TraceRequest]) -> str:
    """The arrivals a trace covers, for messages: '0 to 3,501.7 s (19,366 requests)'."""
    if not requests:
        return "no requests"
    return f"{requests[0].arrival:,.1f} to {requests[-1].arrival:,.1f} s ({len(requests):,} requests)"


def window(requests: list[TraceRequest], start: float = 0.0, duration: float | None = None) -> list[TraceRequest]:
    """The requests arriving in [start, start + duration), shifted to start at zero."""
    end = float("inf") if duration is None else start + duration
    return [TraceRequest(r.arrival - start, r.input_tokens, r.output_tokens)
            for r in requests if start <= r.arrival < end]


def require_window(requests: list[TraceRequest], start: float, duration: float | None,
                   source: str) -> list[TraceRequest]:
    """``window``, or a ``TraceError`` naming the window and the trace's span when it holds no request."""
    if duration is not None and duration <= 0:
        raise TraceError(f"{source}: the window duration must be positive, got {duration:g} s; the trace "
                         f"spans {span_text(requests)}")
    chosen = window(requests, start, duration)
    if not chosen:
        end = "the end" if duration is None else f"{start + duration:,.1f} s"
        raise TraceError(f"{source}: no requests in the window from {start:,.1f} s to {end}; the trace spans "
                         f"{span_text(requests)}")
    return chosen


def multiply(requests: list[TraceRequest], factor: float) -> list[TraceRequest]:
    """Raise the rate ``factor`` times (any factor > 0) while keeping the hour-long shape.

    Request ``i`` is replayed ``floor((i + 1) x factor) - floor(i x factor)`` times, so the total is
    ``floor(N x factor)`` and is deterministic: x2 replays each request twice, x1.5 alternates once and
    twice, x0.5 keeps every other request (thinning the trace evenly). Requests sharing a timestamp form
    a group: its originals stay at that time and its extra copies (taken round-robin over the group's
    requests) are spaced evenly across the gap to the next distinct timestamp, at ``gap x k / (copies +
    1)``; the last group uses the trace's mean gap between distinct timestamps. A trace at 5.5 req/s
    multiplied by 4 arrives at 22 req/s, with the same minute-by-minute ups and downs."""
    if not (factor > 0 and math.isfinite(factor)):
        raise TraceError(f"the rate multiplier must be a positive number, got {factor}")
    groups = [list(group) for _, group in itertools.groupby(enumerate(requests), key=lambda item: item[1].arrival)]
    span = requests[-1].arrival - requests[0].arrival if requests else 0.0
    mean_gap = span / (len(groups) - 1) if len(groups) > 1 else 0.0
    out: list[TraceRequest] = []
    for number, group in enumerate(groups):
        arrival = group[0][1].arrival
        gap = groups[number + 1][0][1].arrival - arrival if number + 1 < len(groups) else mean_gap
        counts = [math.floor((i + 1) * factor) - math.floor(i * factor) for i, _ in group]
        out.extend(request for (_, request), count in zip(group, counts, strict=True) if count)
        # Round-robin, so the copies of one long prompt are spread over the gap rather than adjacent.
        extras = [request for round_ in range(1, max(counts, default=0))
                  for (_, request), count in zip(group, counts, strict=True) if count > round_]
        for k, request in enumerate(extras, start=1):
            out.append(TraceRequest(arrival + gap * k / (len(extras) + 1), request.input_tokens,
                                    request.output_tokens))
    return out


def admissible(requests: list[TraceRequest], max_input_tokens: int,
               max_sequence_tokens: int | None = None) -> tuple[list[TraceRequest], int]:
    """(the requests the server accepts, how many it rejects). TensorRT-LLM answers 400 to a prompt over
    the engine's max input length, and to a prompt plus its requested output over its max sequence
    length (the engine's context); the trace's output length stands for the request's max_tokens, the
    least the client can have asked for. Rejected requests never reach a replica."""
    kept = [r for r in requests if r.input_tokens <= max_input_tokens
            and (max_sequence_tokens is None or r.input_tokens + r.output_tokens <= max_sequence_tokens)]
    return kept, len(requests) - len(kept)


def compress(requests: list[TraceRequest], factor: float) -> list[TraceRequest]:
    """Time-compress: arrivals ``factor`` times closer together (swings become ``factor`` times faster)."""
    if factor <= 0:
        raise TraceError(f"the time-scale factor must be positive, got {factor}")
    return [TraceRequest(r.arrival / factor, r.input_tokens, r.output_tokens) for r in requests]
