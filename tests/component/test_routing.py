"""The InferencePool on the real API server, the operator as its own ServiceAccount: the CEL rules of the
OpenAI frontend and routing, RoutingReady without the Inference Extension's CRD (everything else applied)
and the pool once it is installed, the pool accepted by the vendored v1 schema, a Gateway's verdict passed
on, and routing switched off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.controlplane import ControlPlane
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import event_seen, eventually

CRD = (Path(__file__).resolve().parents[1] / "fixtures" / "crds" / "inference.networking.k8s.io"
       / "inference.networking.k8s.io_inferencepools.yaml")
CRD_NAME = "inferencepools.inference.networking.k8s.io"
GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
POOL = ("inference.networking.k8s.io", "v1", "inferencepools")
IMAGE = "registry.example/team/tritonserver-openai:25.12"


def manifest(namespace: str, name: str = "llama", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "llama", "profile": "Llama-3.1-8B", "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
        "gpu": {"product": "H100-SXM"}, "engine": {"backend": "tensorrt-engine", "image": IMAGE},
        "serving": {"frontend": "openai"}, "routing": {"inferencePool": {"endpointPicker": {"name": "llama-epp"}}},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def install_crd(plane: ControlPlane) -> None:
    plane.kubectl("apply", "-f", str(CRD))
    plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")


def remove_crd(plane: ControlPlane) -> None:
    plane.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    remove_crd(control_plane)  # the module starts where the Inference Extension is not installed
    install_api_and_rbac(control_plane)
    kubeconfig = service_account_kubeconfig(control_plane, control_plane.workdir / "routing-operator.kubeconfig")
    process = OperatorProcess(control_plane, kubeconfig, "op-routing", resync_seconds=30).start()
    eventually(process.is_leader, timeout=30)
    yield process
    process.stop()
    remove_crd(control_plane)
    log = process.log_path.read_text().lower()
    assert "forbidden" not in log, "the operator's RBAC was insufficient"


def apply(plane: ControlPlane, body: dict[str, Any]) -> str:
    return plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)


def custom(plane: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(plane.api_client())


def routing(plane: ControlPlane, namespace: str, name: str = "llama") -> dict[str, Any]:
    obj = custom(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "RoutingReady"), {})


def pool(plane: ControlPlane, namespace: str, name: str = "llama") -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom(plane).get_namespaced_custom_object(*POOL[:2], namespace, POOL[2], name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


@pytest.mark.parametrize(("spec", "message"), [
    ({"engine": {"backend": "llmapi", "image": IMAGE}}, "serving.frontend openai needs engine.backend tensorrt-engine"),
    ({"engine": {"backend": "tensorrt-engine"}}, "serving.frontend openai needs engine.image"),
    ({"serving": {"frontend": "triton"}}, "routing.inferencePool needs serving.frontend openai"),
    ({"ports": {"openai": 8000}}, "ports.http, ports.grpc, ports.metrics and ports.openai must differ"),
])
def test_what_cannot_be_served_is_refused_by_the_api_server(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], message: str
) -> None:
    install_api_and_rbac(control_plane)
    out = apply(control_plane, manifest(namespace, **spec))
    assert message in out, out


def test_without_the_api_routing_says_so_and_the_pool_appears_once_the_crd_is_installed(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    plane = control_plane
    assert "created" in apply(plane, manifest(namespace))
    missing = eventually(lambda: (c := routing(plane, namespace)).get("reason") == "InferencePoolAPINotServed" and c,
                         timeout=60)
    assert missing["status"] == "False"
    # Nothing else waits on it: the Deployment and the Service are there, and nothing is Degraded.
    api = plane.api_client()
    assert client.AppsV1Api(api).read_namespaced_deployment("llama", namespace).metadata.name == "llama"
    service = client.CoreV1Api(api).read_namespaced_service("llama", namespace)
    assert [(p.name, p.port) for p in service.spec.ports] == [("http", 8000), ("grpc", 8001), ("openai", 9000)]
    obj = custom(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama")
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"
    event_seen(client.CoreV1Api(api), namespace, "llama",
               lambda e: e.reason == "InferencePoolAPINotServed" and e.type == "Warning")

    install_crd(plane)
    # The kind's watch notices the CRD (it retries every 20 s) and re-queues every ModelDeployment.
    created = eventually(lambda: pool(plane, namespace), timeout=90)
    assert created["spec"]["targetPorts"] == [{"number": 9000}]
    ready = eventually(lambda: (c := routing(plane, namespace)).get("status") == "True" and c, timeout=60)
    assert ready["reason"] == "InferencePoolApplied"


def test_the_pool_is_accepted_by_the_v1_schema_and_a_gateways_verdict_is_passed_on(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    plane = control_plane
    install_crd(plane)
    apply(plane, manifest(namespace, routing={"inferencePool": {"endpointPicker": {
        "name": "llama-epp", "port": 9102, "failureMode": "FailClose"}}}))
    stored = eventually(lambda: pool(plane, namespace), timeout=60)
    # As stored by the API server under the vendored schema (its defaults change nothing we set).
    assert stored["spec"] == {
        "selector": {"matchLabels": {"tokenworks.dev/model-deployment": "llama"}},
        "targetPorts": [{"number": 9000}],
        "endpointPickerRef": {"group": "", "kind": "Service", "name": "llama-epp", "port": {"number": 9102},
                              "failureMode": "FailClose"}}
    owner = stored["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", "llama", True)
    eventually(lambda: routing(plane, namespace).get("status") == "True", timeout=60)

    # A Gateway's controller writes the pool's status, as the schema's status.parents has it.
    verdict = {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference", "namespace": "gw"},
        "controllerName": "example.net/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2026-12-01T00:00:00Z"},
                       {"type": "ResolvedRefs", "status": "False", "reason": "InvalidExtensionRef",
                        "message": "Service llama-epp not found", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}]}
    custom(plane).patch_namespaced_custom_object_status(*POOL[:2], namespace, POOL[2], "llama", {"status": verdict})
    refused = eventually(lambda: (c := routing(plane, namespace)).get("reason") == "ParentRefsNotResolved" and c,
                         timeout=60)
    assert refused["status"] == "False"
    assert refused["message"] == (f"InferencePool {namespace}/llama: Gateway gw/inference reports "
                                  "ResolvedRefs=False (InvalidExtensionRef): Service llama-epp not found")


def test_routing_switched_off_leaves_the_pool_and_says_so(
    operator: OperatorProcess, control_plane: ControlPlane, namespace: str
) -> None:
    plane = control_plane
    install_crd(plane)
    apply(plane, manifest(namespace))
    eventually(lambda: routing(plane, namespace).get("status") == "True", timeout=60)
    plane.kubectl("patch", "mdep", "llama", "-n", namespace, "--type=json",
                  "-p", '[{"op": "remove", "path": "/spec/routing/inferencePool"}]')
    left = eventually(lambda: (c := routing(plane, namespace)).get("reason") == "RoutingNotRequested" and c,
                      timeout=60)
    assert left["status"] == "False" and f"kubectl delete inferencepool llama -n {namespace}" in left["message"]
    assert pool(plane, namespace) is not None, "the operator deletes nothing"
    # Deleted by a person: the watch on the pool re-queues its owner, and the condition goes.
    custom(plane).delete_namespaced_custom_object(*POOL[:2], namespace, POOL[2], "llama")
    eventually(lambda: routing(plane, namespace) == {}, timeout=60)
