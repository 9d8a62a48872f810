"""Traces for tests, written in the Azure 2023 format the shared traces use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def synthetic_trace(path: Path, seconds: float, rate: float) -> Path:
    """An Azure-format trace (TIMESTAMP, ContextTokens, GeneratedTokens) at a steady ``rate``."""
    start = dt.datetime(2023, 11, 16, 18, 0, 0)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(int(seconds * rate)):
        at = start + dt.timedelta(seconds=i / rate)
        lines.append(f"{at:%Y-%m-%d %H:%M:%S.%f}0,{600 + (i * 37) % 800},{120 + (i * 53) % 160}")
    path.write_text("\n".join(lines) + "\n")
    return path
