"""Multi-node replicas on the real API server, the operator as its own ServiceAccount: Degraded with nothing
applied without the LeaderWorkerSet CRD, the group applied once the vendored v0.8.0 CRD is installed, the
rendered LeaderWorkerSets accepted by its schema (strict field validation), and the group count moved through
its scale subresource. No LeaderWorkerSet controller runs here, so no pod ever appears from a group: what is
tested is what the API server stores and serves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from crds.models import ModelDeployment
from inference_pods import templates
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import event_seen, eventually

CRD = (Path(__file__).resolve().parents[1] / "fixtures" / "crds" / "leaderworkerset.x-k8s.io"
       / "leaderworkerset.x-k8s.io_leaderworkersets.yaml")
CRD_NAME = "leaderworkersets.leaderworkerset.x-k8s.io"
GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
LWS = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
EXAMPLE = REPO_ROOT / "examples" / "deepseek-r1-h100-multinode.yaml"
MANAGED = "app.kubernetes.io/managed-by=tokenworks"


def install_crd(plane: ControlPlane) -> None:
    # Server-side: the CRD (1.3 MB) is too large for client-side apply's last-applied annotation.
    plane.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tokenworks-tests", "-f", str(CRD))
    # Right after the create the CRD has no status yet, which `kubectl wait` takes for an error.
    eventually(lambda: "condition met" in plane.kubectl(
        "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s", check=False), timeout=60)


def remove_crd(plane: ControlPlane) -> None:
    plane.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    remove_crd(control_plane)  # the module starts where the LeaderWorkerSet controller is not installed
    install_api_and_rbac(control_plane)
    kubeconfig = service_account_kubeconfig(control_plane, control_plane.workdir / "multinode-operator.kubeconfig")
    process = OperatorProcess(control_plane, kubeconfig, "op-multinode", resync_seconds=5).start()
    eventually(process.is_leader, timeout=30)
    yield process
    process.stop()
    remove_crd(control_plane)
    log = process.log_path.read_text().lower()
    assert "forbidden" not in log, "the operator's RBAC was insufficient"
    assert "failed with an exception" not in log


def example(namespace: str, **spec: Any) -> dict[str, Any]:
    """The DeepSeek-R1 example at a fixed count (no autoscaler decides here)."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"]["autoscaling"] = {"enabled": False}
    body["spec"].update(spec)
    return body


def custom(plane: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(plane.api_client())


def condition(plane: ControlPlane, namespace: str, type_: str, name: str = "deepseek-r1") -> dict[str, Any]:
    obj = custom(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def lws(plane: ControlPlane, namespace: str, name: str = "deepseek-r1") -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom(plane).get_namespaced_custom_object(*LWS[:2], namespace, LWS[2], name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def managed_children(plane: ControlPlane, namespace: str) -> list[str]:
    api = plane.api_client()
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    return [f"{kind}/{item.metadata.name}" for kind, items in (
        ("ConfigMap", core.list_namespaced_config_map(namespace, label_selector=MANAGED).items),
        ("Service", core.list_namespaced_service(namespace, label_selector=MANAGED).items),
        ("Deployment", apps.list_namespaced_deployment(namespace, label_selector=MANAGED).items),
        ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget(
            namespace, label_selector=MANAGED).items)) for item in items]


def test_without_the_api_nothing_is_applied_and_the_group_appears_once_the_crd_is_installed(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(example(namespace)))
    degraded = eventually(lambda: (c := condition(plane, namespace, "Degraded")).get("reason")
                          == "LeaderWorkerSetAPINotServed" and c, timeout=60)
    assert degraded["status"] == "True"
    assert "kubernetes-sigs/lws" in degraded["message"] and templates.LWS_VERSION in degraded["message"]
    assert "group of 2 pods" in degraded["message"]
    # Nothing at all: no ConfigMap, no Service, no Deployment standing in for the group.
    assert managed_children(plane, namespace) == []
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "deepseek-r1",
               lambda e: e.reason == "LeaderWorkerSetAPINotServed" and e.type == "Warning")

    install_crd(plane)
    # The kind's watch notices the CRD and re-queues every ModelDeployment.
    group = eventually(lambda: lws(plane, namespace), timeout=90)
    assert group["spec"]["replicas"] == 1
    assert group["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert group["metadata"]["ownerReferences"][0]["name"] == "deepseek-r1"
    eventually(lambda: condition(plane, namespace, "Degraded").get("status") == "False", timeout=60)
    assert sorted(managed_children(plane, namespace)) == [
        "ConfigMap/deepseek-r1-engine", "PodDisruptionBudget/deepseek-r1", "Service/deepseek-r1"]


@pytest.mark.parametrize(("product", "tensor", "pipeline", "precision"), [
    ("H100-SXM", 8, 2, "fp8"), ("H100-SXM", 16, 1, "fp8"), ("GB200", 8, 1, "fp4"), ("B200", 8, 4, "fp4")])
def test_rendered_groups_are_accepted_by_the_vendored_schema(
    control_plane: ControlPlane, namespace: str, product: str, tensor: int, pipeline: int, precision: str
) -> None:
    plane = control_plane
    install_api_and_rbac(plane)
    install_crd(plane)
    body = example(namespace, gpu={"product": product}, parallelism={"tensor": tensor, "pipeline": pipeline},
                   engine={"precision": precision})
    body["metadata"].update(uid="00000000-0000-0000-0000-000000000001", generation=1)
    md = ModelDeployment.model_validate(body)
    rendered = templates.leader_worker_set(md, 2, "0123456789abcdef")
    rendered["metadata"].pop("ownerReferences")  # no such owner exists here
    # Strict field validation: a field the v0.8.0 schema does not have is an error, not silently pruned.
    plane.kubectl("apply", "--server-side", "--validate=strict", "--field-manager=tokenworks-tests",
                  "-f", "-", input=json.dumps(rendered))
    stored = lws(plane, namespace)
    assert stored is not None
    template = rendered["spec"]["leaderWorkerTemplate"]
    live = stored["spec"]["leaderWorkerTemplate"]
    assert live["size"] == template["size"] and live["restartPolicy"] == "RecreateGroupOnPodRestart"
    for role in ("leaderTemplate", "workerTemplate"):
        assert live[role]["spec"]["containers"][0]["command"] == template[role]["spec"]["containers"][0]["command"]
        assert live[role]["spec"]["affinity"] == template[role]["spec"]["affinity"]
    assert stored["spec"]["startupPolicy"] == "LeaderCreated"
    assert stored["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["maxSurge"] == 0


def test_the_group_count_moves_through_the_scale_subresource(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    plane = control_plane
    install_crd(plane)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(example(namespace)))
    eventually(lambda: lws(plane, namespace), timeout=60)

    # The operator's own count: a new spec.replicas reaches the group through /scale, field manager tokenworks.
    plane.kubectl("patch", "mdep", "deepseek-r1", "-n", namespace, "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    scaled = eventually(lambda: (g := lws(plane, namespace)) and g["spec"]["replicas"] == 2 and g, timeout=60)
    managers = {(e["manager"], e.get("subresource", "")) for e in scaled["metadata"]["managedFields"]
                if "f:replicas" in json.dumps(e.get("fieldsV1", {}).get("f:spec", {}))}
    assert ("tokenworks", "scale") in managers
    scale = custom(plane).get_namespaced_custom_object_scale(*LWS[:2], namespace, LWS[2], "deepseek-r1")
    assert scale["spec"]["replicas"] == 2

    # Another writer through /scale (kubectl scale, as an HPA would): the API server moves spec.replicas, and
    # the operator, the count's one owner, puts it back and says so.
    plane.kubectl("scale", "leaderworkerset/deepseek-r1", "-n", namespace, "--replicas=5")
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "deepseek-r1",
               lambda e: e.reason == "ForeignWriteReverted" and "spec.replicas changed by" in (e.message or "")
               and "(5, not 2)" in (e.message or ""))
    eventually(lambda: (g := lws(plane, namespace)) is not None and g["spec"]["replicas"] == 2, timeout=60)
