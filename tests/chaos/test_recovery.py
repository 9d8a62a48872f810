"""The operator recovers from its own death and from an API server outage: nothing lost, nothing
duplicated, watches resumed in the same process, and no writes at rest afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from crds.models import GROUP, PLURAL, VERSION
from inference_pods.templates import CHILD_KINDS
from tests.support.controlplane import ControlPlane
from tests.support.operator import OperatorProcess
from tests.support.waiting import eventually

COUNT = 50
SELECTOR = "app.kubernetes.io/managed-by=tokenworks"


def model_deployment(name: str, namespace: str, replicas: int = 0) -> dict[str, Any]:
    # Zero replicas: no pods, so the status settles as soon as the children exist and "at rest" is
    # well defined on a busy machine.
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"name": name, "profile": "Llama-3.1-8B",
                               "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
                     "gpu": {"product": "H100-SXM"}, "replicas": replicas}}


def converged(plane: ControlPlane, namespace: str) -> bool:
    items = client.CustomObjectsApi(plane.api_client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL)["items"]
    def settled(item: dict[str, Any]) -> bool:
        status = item.get("status") or {}
        progressing = next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), {})
        return bool(status.get("observedGeneration") == item["metadata"]["generation"]
                    and progressing.get("reason") == "Complete")

    return len(items) == COUNT and all(settled(i) for i in items)


def child_owners(plane: ControlPlane, namespace: str) -> dict[str, list[str]]:
    api = plane.api_client()
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    lists = {
        "Deployment": apps.list_namespaced_deployment(namespace, label_selector=SELECTOR).items,
        "Service": core.list_namespaced_service(namespace, label_selector=SELECTOR).items,
        "ConfigMap": core.list_namespaced_config_map(namespace, label_selector=SELECTOR).items,
        "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget(namespace, label_selector=SELECTOR).items,
    }
    return {kind: sorted(ref.name for item in items for ref in item.metadata.owner_references or [])
            for kind, items in lists.items()}


def operator_writes(plane: ControlPlane, process: OperatorProcess) -> int:
    """Writes other than the Lease renewals (the leader's heartbeat)."""
    return sum(1 for e in plane.audit_writes() if e.get("userAgent", "").startswith(process.user_agent)
               and (e.get("objectRef") or {}).get("resource") != "leases")


def test_an_operator_killed_while_applying_50_deployments_converges_once_and_rests(
    chaos_plane: ControlPlane, operator_kubeconfig: Path, chaos_namespace: str
) -> None:
    first = OperatorProcess(chaos_plane, operator_kubeconfig, "apply-first", resync_seconds=5).start()
    eventually(first.is_leader, timeout=40)
    manifests = [model_deployment(f"m{i:02d}", chaos_namespace) for i in range(COUNT)]
    chaos_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    apps = client.AppsV1Api(chaos_plane.api_client())
    eventually(lambda: len(apps.list_namespaced_deployment(chaos_namespace).items) >= 5, timeout=60, interval=0.1)
    first.kill()  # mid-way: some children exist, most do not

    second = OperatorProcess(chaos_plane, operator_kubeconfig, "apply-second", resync_seconds=5).start()
    try:
        eventually(lambda: converged(chaos_plane, chaos_namespace), timeout=240, interval=1)
        names = sorted(m["metadata"]["name"] for m in manifests)
        assert child_owners(chaos_plane, chaos_namespace) == {kind: names for kind in (
            "Deployment", "Service", "ConfigMap", "PodDisruptionBudget")}, "every child exactly once"

        # At rest: two full resync passes (every key reconciled twice) make no write at all.
        writes = operator_writes(chaos_plane, second)
        passes = second.metric("tokenworks_reconcile_total")
        eventually(lambda: second.metric("tokenworks_reconcile_total") >= passes + 2 * COUNT, timeout=120)
        assert operator_writes(chaos_plane, second) == writes, "a converged operator writes nothing"
    finally:
        second.stop()


def test_watches_resume_in_the_same_process_after_a_60_second_api_server_outage(
    chaos_plane: ControlPlane, operator_kubeconfig: Path, chaos_namespace: str
) -> None:
    # No leader election: a leader would rightly give up a lease it cannot renew for 60 s. A long
    # resync, so only a live watch can deliver the change below in time.
    process = OperatorProcess(chaos_plane, operator_kubeconfig, "outage", resync_seconds=3600,
                              extra_args=("--no-leader-elect",)).start()
    try:
        chaos_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            model_deployment("survivor", chaos_namespace, replicas=1)))
        apps = client.AppsV1Api(chaos_plane.api_client())
        eventually(lambda: apps.read_namespaced_deployment("survivor", chaos_namespace).spec.replicas == 1, timeout=60)
        pid = process.process.pid if process.process else None

        chaos_plane.outage(60)
        restored = time.monotonic()
        chaos_plane.kubectl("-n", chaos_namespace, "scale", "mdep", "survivor", "--replicas=2")
        eventually(lambda: apps.read_namespaced_deployment("survivor", chaos_namespace).spec.replicas == 2,
                   timeout=60)
        took = time.monotonic() - restored
        assert process.exit_code() is None and process.process and process.process.pid == pid, \
            "the same process, not a restart"
        # Every required kind's watch is back; an optional kind this plane does not serve keeps retrying.
        optional = {k.kind for k in CHILD_KINDS if k.optional}
        code, _ = eventually(lambda: (lambda h: h if h[0] == 200 and all(
            v == "watching" for k, v in h[1]["watches"].items() if k.split("/")[0] not in optional) else None)(
            process.health()), timeout=30)
        assert code == 200
        assert took < 30, f"the change after the outage took {took:.1f}s to apply"
    finally:
        process.stop()
