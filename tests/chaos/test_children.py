"""Children deleted by hand come back once, with one Event, and the operator then rests: no loop."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client

from tests.support.controlplane import ControlPlane
from tests.support.operator import OperatorProcess
from tests.support.waiting import eventually

NAME = "restored"


def test_deleted_children_are_restored_once_and_then_left_at_rest(
    chaos_plane: ControlPlane, operator_kubeconfig: Path, chaos_namespace: str
) -> None:
    process = OperatorProcess(chaos_plane, operator_kubeconfig, "children", resync_seconds=5).start()
    api = chaos_plane.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        eventually(process.is_leader, timeout=40)
        manifest = {"apiVersion": "tokenworks.dev/v1alpha1", "kind": "ModelDeployment",
                    "metadata": {"name": NAME, "namespace": chaos_namespace},
                    "spec": {"model": {"name": NAME, "profile": "Llama-3.1-8B",
                                       "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
                             "gpu": {"product": "H100-SXM"}, "replicas": 0}}
        chaos_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        service = eventually(lambda: core.read_namespaced_service(NAME, chaos_namespace), timeout=60)
        eventually(lambda: apps.read_namespaced_deployment(NAME, chaos_namespace), timeout=60)
        # The four children (no PodMonitor CRD here), counted once the first reconcile has returned.
        applies = eventually(lambda: process.metric("tokenworks_child_applies_total") >= 4 and
                             process.metric("tokenworks_child_applies_total"), timeout=30)
        assert applies == 4

        chaos_plane.kubectl("-n", chaos_namespace, "delete", f"service/{NAME}", f"deployment/{NAME}")
        restored = eventually(lambda: core.read_namespaced_service(NAME, chaos_namespace), timeout=30)
        assert restored.metadata.uid != service.metadata.uid
        eventually(lambda: apps.read_namespaced_deployment(NAME, chaos_namespace), timeout=30)

        # Two resync passes later: exactly the two deleted children were written again, nothing else.
        reconciles = process.metric("tokenworks_reconcile_total")
        eventually(lambda: process.metric("tokenworks_reconcile_total") >= reconciles + 2, timeout=30)
        assert process.metric("tokenworks_child_applies_total") == applies + 2
        events = core.list_namespaced_event(chaos_namespace, field_selector=f"involvedObject.name={NAME}").items
        updated = [e for e in events if e.reason == "Updated"]
        assert len(updated) <= 2 and all("Service" in e.message or "Deployment" in e.message for e in updated), \
            [e.message for e in updated]
        assert updated, "a person can see the children were put back"
    finally:
        process.stop()
