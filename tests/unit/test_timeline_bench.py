"""bench/timeline.py: one generalisation run minute by minute adds up to the run's own totals."""

from __future__ import annotations

import re
import sys

import pytest

import bench.timeline
from controllers.simulation import oracle


def test_the_minutes_add_up_to_the_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENWORKS_BENCH_BACKEND", "llmapi")
    monkeypatch.setattr(sys, "argv", ["timeline", "--family", "constant", "--minutes", "3", "--static", "9",
                                      "--decisions"])
    bench.timeline.main()
    out = capsys.readouterr().out
    result, need, total, feasible = bench.timeline.simulate("constant", 1, 3, "tokenworks", "warm", 9)
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]
    # One row a minute, the arrivals of each minute summing to every completed request.
    assert [int(r[0]) for r in rows] == list(range(len(rows))) and len(rows) >= 3
    assert sum(int(r[1]) for r in rows) == len(result.completed) == total
    assert [r[2] for r in rows[:len(need)]] == [str(n) for n in need]
    met = oracle.met(bench.timeline.model_for("constant"), result)
    assert f"met {met} of {feasible} feasible" in out
    # A static count never changes: a minute with a tick shows it, one without shows 0 (no decision).
    assert {r[3] for r in rows} <= {"9", "0"} and "9" in {r[3] for r in rows}
