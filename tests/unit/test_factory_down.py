"""`tokenworks factory down`: every process a factory recorded is stopped, and a second call finds none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from controllers.cli import app


def test_down_stops_the_recorded_processes(tmp_path: Path) -> None:
    factory = subprocess.Popen(["sleep", "60"])
    child = subprocess.Popen(["sleep", "60"])
    (tmp_path / "factory.json").write_text(json.dumps({"pid": factory.pid, "children": [child.pid]}))
    result = CliRunner().invoke(app, ["factory", "down", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "stopped 2 processes" in result.output
    assert factory.wait(10) == -15 and child.wait(10) == -15  # SIGTERM, as a factory stops on


def test_down_without_a_factory_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["factory", "down", "--workdir", str(tmp_path)])
    assert result.exit_code == 0 and "no factory is running" in result.output
