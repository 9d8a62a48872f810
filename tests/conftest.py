"""Shared fixtures: the real Kubernetes control plane (minimal and full) for component tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with RBAC, started once per session."""
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="tokenworks-cp-"))).start()
    try:
        yield plane
    finally:
        stop_keeping_logs_on_failure(plane, request)


def stop_keeping_logs_on_failure(plane: ControlPlane, request: pytest.FixtureRequest) -> None:
    plane.stop()
    failed = request.session.testsfailed > 0 or os.environ.get("TOKENWORKS_KEEP_LOGS")
    if failed:
        print(f"\ncontrol-plane logs kept in {plane.logs}")
    plane.keep_or_remove(keep=bool(failed))


@pytest.fixture(scope="session")
def full_control_plane(control_plane: ControlPlane) -> ControlPlane:
    """The same plane plus kube-controller-manager, kube-scheduler and KWOK GPU nodes
    (2 x 8 H100, 1 x 8 H200)."""
    control_plane.start_full()
    return control_plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + os.urandom(
        3
    ).hex()
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
