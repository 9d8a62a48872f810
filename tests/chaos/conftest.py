"""The chaos suite's own control plane: its faults (a killed or paused API server) must not reach the
plane the other suites share."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_keeping_logs_on_failure
from tests.support.controlplane import ControlPlane
from tests.support.operator import install_api_and_rbac, service_account_kubeconfig


@pytest.fixture(scope="package")
def chaos_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    workdir = Path(tempfile.mkdtemp(prefix="tokenworks-chaos-"))
    plane = ControlPlane(workdir).start()
    try:
        plane.start_full()
        install_api_and_rbac(plane)
        yield plane
    finally:
        stop_keeping_logs_on_failure(plane, request)


@pytest.fixture(scope="package")
def operator_kubeconfig(chaos_plane: ControlPlane) -> Path:
    """The operator's ServiceAccount, as it runs in the cluster."""
    return service_account_kubeconfig(chaos_plane, chaos_plane.workdir / "operator.kubeconfig")


@pytest.fixture
def chaos_namespace(chaos_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "c-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + os.urandom(3).hex()
    chaos_plane.kubectl("create", "namespace", name)
    yield name
    chaos_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
