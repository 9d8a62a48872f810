"""The factory's bad inputs: a trace that does not parse and a spec that is not a ModelDeployment stop it before
anything starts; a ModelDeployment the API server rejects stops everything already started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.factory.run import FactoryError, up
from controllers.simulation.trace import TraceError
from tests.support.controlplane import REPO_ROOT
from tests.support.traces import synthetic_trace


def scenario(tmp_path: Path, manifest: dict[str, Any], trace: Path) -> Path:
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(manifest))
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump({
        "compression": 10, "duration": 30,
        "nodes": [{"name": "gpu-h200-0", "product": "H200-SXM"}],
        "deployments": [{"manifest": "model.yaml", "traffic": {"trace": str(trace), "shape": [{"at": 0, "rate": 1}]}}],
    }))
    return path


def model() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "factory" / "llama-8b-chat.yaml").read_text())
    return loaded


def processes_under(path: Path) -> list[int]:
    """Processes whose command line names ``path``: everything the factory starts does (data, config, roots)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def test_a_trace_that_does_not_parse_is_named_and_nothing_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,ten,5\n")
    with pytest.raises(TraceError, match=r"bad\.csv"):
        up(scenario(tmp_path, model(), bad), tmp_path / "out", keep=False, headless=True, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_spec_that_is_not_a_model_deployment_is_named_and_nothing_starts(tmp_path: Path) -> None:
    broken = model()
    broken["spec"]["autoscaling"]["maxReplicas"] = 0
    trace = synthetic_trace(tmp_path / "trace.csv", seconds=60, rate=1)
    with pytest.raises(FactoryError, match=r"model\.yaml: not a ModelDeployment: spec\.autoscaling\.maxReplicas: "):
        up(scenario(tmp_path, broken, trace), tmp_path / "out", keep=False, headless=True, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_model_deployment_the_api_rejects_stops_everything_started(tmp_path: Path) -> None:
    rejected = model()
    # A ModelDeployment the API model accepts (it checks no labels) and the API server refuses.
    rejected["metadata"]["labels"] = {"not a label!": "x"}
    trace = synthetic_trace(tmp_path / "trace.csv", seconds=60, rate=1)
    with pytest.raises(FactoryError, match=r"model\.yaml: the API server rejected it: .*not a label!"):
        up(scenario(tmp_path, rejected, trace), tmp_path / "out", keep=False, headless=True,
           workdir=tmp_path / "work")
    assert processes_under(tmp_path / "work") == []
    assert not (tmp_path / "work" / "factory.json").exists()


def test_a_name_kubernetes_refuses_is_named_before_anything_starts(tmp_path: Path) -> None:
    bad = model()
    bad["metadata"]["name"] = "Llama_8B"
    trace = synthetic_trace(tmp_path / "trace.csv", seconds=60, rate=1)
    with pytest.raises(FactoryError, match=r"model\.yaml: not a ModelDeployment: metadata: the name must be a DNS"):
        up(scenario(tmp_path, bad, trace), tmp_path / "out", keep=False, headless=True, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()
