"""`tokenworks factory down`: every process a factory recorded is stopped, a pid whose start time no longer
matches the record (reused after a crash) is left alone, and a second call finds none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from controllers.cli import app
from controllers.factory.run import _started


def record(path: Path, factory: int, children: list[int], started: dict[str, str | None]) -> None:
    (path / "factory.json").write_text(json.dumps({"pid": factory, "children": children, "started": started}))


def test_down_stops_the_recorded_processes(tmp_path: Path) -> None:
    factory = subprocess.Popen(["sleep", "60"])
    child = subprocess.Popen(["sleep", "60"])
    record(tmp_path, factory.pid, [child.pid], {str(p.pid): _started(p.pid) for p in (factory, child)})
    result = CliRunner().invoke(app, ["factory", "down", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "stopped 2 processes" in result.output
    assert factory.wait(10) == -15 and child.wait(10) == -15  # SIGTERM, as a factory stops on


def test_a_pid_taken_by_another_process_is_not_signalled(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record(tmp_path, stranger.pid, [], {str(stranger.pid): "1"})  # recorded at another start time
        result = CliRunner().invoke(app, ["factory", "down", "--workdir", str(tmp_path)])
        assert "no factory is running" in result.output
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_down_without_a_factory_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["factory", "down", "--workdir", str(tmp_path)])
    assert result.exit_code == 0 and "no factory is running" in result.output
