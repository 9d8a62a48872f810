"""Every example manifest is accepted by a real API server's validation (schema and CEL rules), and the
FP4 DeepSeek-R1 example is refused once moved off Blackwell."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import install_api_and_rbac

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> ControlPlane:
    install_api_and_rbac(control_plane)
    return control_plane


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_api_server_accepts_each_example(plane: ControlPlane, namespace: str, path: Path) -> None:
    output = plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert "(server dry run)" in output


def test_fp4_on_a_hopper_gpu_is_refused(plane: ControlPlane, namespace: str) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "deepseek-r1-b200-fp4.yaml").read_text())
    manifest["spec"]["gpu"]["product"] = "H200-SXM"
    output = plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                           input=yaml.safe_dump(manifest), check=False)
    assert "is invalid" in output and "fp4" in output
