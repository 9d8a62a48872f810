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
    result, need, requests, feasible = bench.timeline.simulate("constant", 1, 3, "tokenworks", "warm", 9)
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]
    # One row a minute, the arrivals of each minute (from the trace) summing to every request.
    assert [int(r[0]) for r in rows] == list(range(len(rows))) and len(rows) >= 3
    assert [int(r[1]) for r in rows[:3]] == [sum(1 for q in requests if int(q.arrival // 60) == m) for m in range(3)]
    assert sum(int(r[1]) for r in rows) == len(requests)
    assert f"{len(requests) - len(result.completed)} never served" in out
    assert [r[2] for r in rows[:len(need)]] == [str(n) for n in need]
    met = oracle.met(bench.timeline.model_for("constant"), result)
    assert f"met {met} of {feasible} feasible" in out
    # A static count never changes: a minute without a decision carries it too.
    assert {(r[3], r[4]) for r in rows} == {("9", "9")}
