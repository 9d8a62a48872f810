"""The `tokenworks` CLI faces that need no cluster: version, crds generate --check, plan."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from controllers.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith("tokenworks ")


def test_crds_generate_check_passes_on_the_checked_in_yaml() -> None:
    result = runner.invoke(app, ["crds", "generate", "--check"])
    assert result.exit_code == 0, result.output


def test_crds_generate_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("# old\n")
    result = runner.invoke(app, ["crds", "generate", "--check", "--output", str(stale)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "out of date" in result.output


def test_plan_summarises_children_and_capacity() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "llama-70b-h200-tp4.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Llama-3.3-70B bf16 on 4 x H200-SXM", "weights per GPU 35.3 GB",
                 "start with the model cache empty about 210 s", "with the cache key complete 69 s",
                 "Deployment", "llama-70b-engine", "PodDisruptionBudget", "http 8000, grpc 8001, metrics 8002"):
        assert text in result.output, text


def test_plan_show_prints_the_pod_and_its_repository() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "llama-70b-h200-tp4.yaml"), "--show"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Init container prepare: bash /etc/tokenworks/prepare.sh", "ngc registry model download-version",
                 "Container triton: mpirun --allow-run-as-root -n 1 tritonserver", "tensorrt_llm/config.pbtxt",
                 "tensorrt_llm/1/model.yaml", "tensor_parallel_size: 4", "decoupled: true"):
        assert text in result.output, text


def test_plan_yaml_is_the_operator_rendering() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "fixed-replicas.yaml"), "-o", "yaml", "--replicas", "3"])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["kind"] for d in documents] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                              "PodMonitor"]
    assert documents[1]["spec"]["replicas"] == 3


def test_plan_reports_each_invalid_field(tmp_path: Path) -> None:
    manifest = yaml.safe_load((EXAMPLES / "llama-8b-h100.yaml").read_text())
    manifest["spec"]["engine"]["precision"] = "fp4"
    manifest["spec"]["parallelism"] = {"tensor": 3}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    result = runner.invoke(app, ["plan", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "spec.engine.precision" in result.output
    assert "spec.parallelism.tensor" in result.output
