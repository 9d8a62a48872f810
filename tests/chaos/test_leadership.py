"""Two operators under faults: a killed, a hung and a cut-off leader; one leader at a time, no write by
an old leader after the standby took over (read from the API server's audit log)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from tests.support.waiting import eventually

LEASE_SECONDS = 6
LEASE = "tokenworks-operator"


@pytest.fixture
def pair(chaos_plane: ControlPlane, operator_kubeconfig: Path,
         request: pytest.FixtureRequest) -> Iterator[list[OperatorProcess]]:
    tag = request.node.name[-12:].replace("_", "-")
    first = OperatorProcess(chaos_plane, operator_kubeconfig, f"first-{tag}", lease_duration=LEASE_SECONDS).start()
    # An earlier test's killed leader may hold the Lease until it expires.
    eventually(first.is_leader, timeout=3 * LEASE_SECONDS + 10)
    second = OperatorProcess(chaos_plane, operator_kubeconfig, f"second-{tag}",
                             lease_duration=LEASE_SECONDS).start()
    yield [first, second]
    for process in (first, second):
        if process.exit_code() is None:
            process.pause(False)
        process.stop()


def lease(plane: ControlPlane) -> Any:
    return client.CoordinationV1Api(plane.api_client()).read_namespaced_lease(LEASE, OPERATOR_NAMESPACE)


def replicas(plane: ControlPlane, namespace: str) -> int:
    return int(client.AppsV1Api(plane.api_client()).read_namespaced_deployment(
        "llama-8b-fixed", namespace).spec.replicas)


def apply_fixed(plane: ControlPlane, namespace: str) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "fixed-replicas.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    eventually(lambda: replicas(plane, namespace) == 2, timeout=60)


def writes_after(plane: ControlPlane, process: OperatorProcess, since: dt.datetime) -> list[str]:
    """Persisted writes the process made after ``since`` (a wall time from the API server)."""
    found = []
    for event in plane.audit_writes():
        received = dt.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if event.get("userAgent", "").startswith(process.user_agent) and received > since:
            ref = event.get("objectRef") or {}
            found.append(f"{event['verb']} {ref.get('resource')}/{ref.get('name')} at {received}")
    return found


def test_a_killed_leader_is_replaced_within_the_lease(
    chaos_plane: ControlPlane, pair: list[OperatorProcess], chaos_namespace: str
) -> None:
    leader, standby = pair
    apply_fixed(chaos_plane, chaos_namespace)
    leader.kill()
    killed = time.monotonic()
    chaos_plane.kubectl("-n", chaos_namespace, "scale", "mdep", "llama-8b-fixed", "--replicas=3")
    eventually(lambda: replicas(chaos_plane, chaos_namespace) == 3, timeout=LEASE_SECONDS + 30)
    took = time.monotonic() - killed
    assert lease(chaos_plane).spec.holder_identity == standby.name
    # The lease, one retry period to notice (with jitter), the reconcile itself.
    assert took < LEASE_SECONDS + 3 + 5, f"takeover and reconcile took {took:.1f}s"


def test_a_hung_leader_is_replaced_and_writes_nothing_when_it_wakes(
    chaos_plane: ControlPlane, pair: list[OperatorProcess], chaos_namespace: str
) -> None:
    leader, standby = pair
    apply_fixed(chaos_plane, chaos_namespace)
    leader.pause(True)
    paused = time.monotonic()
    # The hung leader's watch connection buffers this change; it reads it when it wakes.
    chaos_plane.kubectl("-n", chaos_namespace, "scale", "mdep", "llama-8b-fixed", "--replicas=3")
    eventually(lambda: replicas(chaos_plane, chaos_namespace) == 3, timeout=LEASE_SECONDS + 30)
    took = time.monotonic() - paused
    held = lease(chaos_plane)
    assert held.spec.holder_identity == standby.name
    assert took < LEASE_SECONDS + 3 + 5, f"takeover and reconcile took {took:.1f}s"

    leader.pause(False)
    eventually(lambda: leader.exit_code() is not None, timeout=30)
    assert leader.exit_code() == 1, "an old leader ends its process once it sees it lost the lease"
    assert writes_after(chaos_plane, leader, held.spec.acquire_time) == []
    assert standby.is_leader()


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_leader_cut_off_from_the_api_server_steps_down_and_the_standby_takes_over_after(
    chaos_plane: ControlPlane, pair: list[OperatorProcess], chaos_namespace: str, fault: str
) -> None:
    leader, standby = pair
    apply_fixed(chaos_plane, chaos_namespace)
    # Killed: connections are refused. Hung (SIGSTOP): the kernel accepts them and nothing ever answers,
    # like a stuck load balancer; only request timeouts end the leader's attempts.
    if fault == "killed":
        chaos_plane.stop_apiserver()
    else:
        chaos_plane.pause_apiserver(True)
    cut = time.monotonic()
    try:
        # It cannot renew: it stops within its renew deadline (2/3 of the lease), plus one request timeout.
        eventually(lambda: leader.exit_code() is not None, timeout=LEASE_SECONDS + 15)
        stepped_down = time.monotonic() - cut
        assert standby.exit_code() is None and not standby.is_leader(), "nobody leads without an API server"
    finally:
        if fault == "killed":
            chaos_plane.start_apiserver()
        else:
            chaos_plane.pause_apiserver(False)
    assert leader.exit_code() == 1
    assert stepped_down < LEASE_SECONDS + 5, f"the cut-off leader acted for {stepped_down:.1f}s"
    eventually(standby.is_leader, timeout=LEASE_SECONDS + 30)
    took_over = lease(chaos_plane).spec.acquire_time
    chaos_plane.kubectl("-n", chaos_namespace, "scale", "mdep", "llama-8b-fixed", "--replicas=3")
    eventually(lambda: replicas(chaos_plane, chaos_namespace) == 3, timeout=30)
    # Measured from the takeover, not from the API server's return: a hung server still reads what the
    # leader sent while it led (the kernel buffered it), and stamps it when it wakes, before any takeover.
    assert writes_after(chaos_plane, leader, took_over) == []


def test_sigterm_releases_the_lease_for_a_fast_handover(
    chaos_plane: ControlPlane, pair: list[OperatorProcess], chaos_namespace: str
) -> None:
    leader, standby = pair
    stopped = time.monotonic()
    leader.stop()
    assert leader.exit_code() == 0
    eventually(standby.is_leader, timeout=LEASE_SECONDS)
    took = time.monotonic() - stopped
    assert took < LEASE_SECONDS - 2, f"handover took {took:.1f}s: the lease was waited out, not released"
