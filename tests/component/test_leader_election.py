"""Two operator processes share one Lease: one acts, and the standby takes over when the leader dies."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    install_api_and_rbac,
    service_account_kubeconfig,
)
from tests.support.waiting import eventually

LEASE_SECONDS = 6


@pytest.fixture
def two_operators(full_control_plane: ControlPlane) -> Iterator[list[OperatorProcess]]:
    install_api_and_rbac(full_control_plane)
    kubeconfig = service_account_kubeconfig(full_control_plane, full_control_plane.workdir / "ha.kubeconfig")
    first = OperatorProcess(full_control_plane, kubeconfig, "ha-first", lease_duration=LEASE_SECONDS).start()
    eventually(first.is_leader, timeout=3 * LEASE_SECONDS)  # a dead earlier leader's lease may linger
    second = OperatorProcess(full_control_plane, kubeconfig, "ha-second", lease_duration=LEASE_SECONDS).start()
    yield [first, second]
    for process in (first, second):
        process.stop()


def test_the_standby_takes_over_within_the_lease_duration(
    full_control_plane: ControlPlane, two_operators: list[OperatorProcess], namespace: str
) -> None:
    leader, standby = two_operators
    coordination = client.CoordinationV1Api(full_control_plane.api_client())

    def renewed() -> object:
        return coordination.read_namespaced_lease("tokenworks-operator", OPERATOR_NAMESPACE).spec.renew_time

    # Two renewals by the leader (one retry period each): the standby, on the same period, has
    # certainly tried and failed to acquire meanwhile.
    for _ in range(2):
        last = renewed()
        eventually(lambda last=last: renewed() != last, timeout=30, interval=0.2)
    assert leader.is_leader() and not standby.is_leader(), "exactly one leader"
    lease = coordination.read_namespaced_lease("tokenworks-operator", OPERATOR_NAMESPACE)
    assert lease.spec.holder_identity == "ha-first"

    manifest = yaml.safe_load((REPO_ROOT / "examples" / "fixed-replicas.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    full_control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    apps = client.AppsV1Api(full_control_plane.api_client())
    eventually(lambda: apps.read_namespaced_deployment("llama-8b-fixed", namespace).spec.replicas == 2,
               timeout=30)
    assert standby.metric("tokenworks_reconcile_total") == 0, "a standby must not reconcile"

    leader.kill()
    killed_at = time.monotonic()
    full_control_plane.kubectl("-n", namespace, "scale", "mdep", "llama-8b-fixed", "--replicas=4")
    eventually(lambda: apps.read_namespaced_deployment("llama-8b-fixed", namespace).spec.replicas == 4,
               timeout=LEASE_SECONDS + 20)
    took = time.monotonic() - killed_at
    assert standby.is_leader()
    # Lease duration, plus one retry period to notice, plus the reconcile itself.
    assert took < LEASE_SECONDS + 2 + 5, f"takeover and reconcile took {took:.1f}s"
