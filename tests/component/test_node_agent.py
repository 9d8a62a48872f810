"""The node agent against the real API server, scheduler and controllers: Node registration and Lease
heartbeats, pods run as emulator twins with status the API server accepts, graceful deletion, a crash."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as triton_http
from kubernetes import client

from controllers.nodeagent import AgentNode, NodeAgent, rbac_objects
from crds.models import ModelDeployment
from inference_pods.templates import render_children
from tests.support.controlplane import ControlPlane
from tests.support.operator import service_account_token
from tests.support.waiting import eventually

AGENT_NAMESPACE = "tokenworks-node-agent"


@pytest.fixture(scope="module")
def agent(full_control_plane: ControlPlane) -> Iterator[tuple[NodeAgent, str]]:
    """Two fake H100 nodes run by one agent, as its own ServiceAccount with the agent's RBAC."""
    plane = full_control_plane
    plane.kubectl("create", "namespace", AGENT_NAMESPACE, check=False)
    for obj in rbac_objects(AGENT_NAMESPACE):
        plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
    token = service_account_token(plane, "tokenworks-node-agent", AGENT_NAMESPACE)
    mark = os.urandom(3).hex()
    nodes = [AgentNode(f"agent-{mark}-{i}", "NVIDIA-H100-80GB-HBM3", octet=200 + i,
                       labels={"tokenworks.dev/test-agent": mark}) for i in range(2)]
    running = NodeAgent(plane.api_client(token), nodes, Path(tempfile.mkdtemp(prefix="tokenworks-agent-")),
                        emulator_args=["--load-seconds=0.5"], renew_seconds=1).start()
    try:
        yield running, mark
    finally:
        running.stop()


def deployment(namespace: str, mark: str, grace: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's own Deployment and ConfigMap for an 8B model, kept to the agent's nodes."""
    md = ModelDeployment.model_validate({
        "metadata": {"name": "llama", "namespace": namespace, "uid": "u"},
        "spec": {"model": {"name": "llama-3-1-8b", "profile": "Llama-3.1-8B", "huggingFace": "meta-llama/x"},
                 "gpu": {"product": "H100-SXM"}, "replicas": 1}})
    children = {c["kind"]: c for c in render_children(md, 1)}
    deploy, config = children["Deployment"], children["ConfigMap"]
    for obj in (deploy, config):
        obj["metadata"].pop("ownerReferences", None)
    pod = deploy["spec"]["template"]["spec"]
    pod.setdefault("nodeSelector", {})["tokenworks.dev/test-agent"] = mark
    pod["terminationGracePeriodSeconds"] = grace
    pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] = 1
    return deploy, config


def apply(plane: ControlPlane, *objects: dict[str, Any]) -> None:
    for obj in objects[::-1]:  # the ConfigMap before the Deployment whose pods mount it
        plane.kubectl("apply", "-f", "-", input=json.dumps(obj))


def pods(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    api = plane.api_client()
    listed = client.CoreV1Api(api).list_namespaced_pod(namespace)
    return list(api.sanitize_for_serialization(listed)["items"])


def test_nodes_register_ready_and_keep_their_leases(full_control_plane: ControlPlane,
                                                    agent: tuple[NodeAgent, str]) -> None:
    running, _ = agent
    api = full_control_plane.api_client()
    core, coordination = client.CoreV1Api(api), client.CoordinationV1Api(api)
    for node in running.nodes.values():
        live = api.sanitize_for_serialization(core.read_node(node.name))
        assert live["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert live["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert {c["type"]: c["status"] for c in live["status"]["conditions"]}["Ready"] == "True"
        first = coordination.read_namespaced_lease(node.name, "kube-node-lease").spec.renew_time
        eventually(lambda n=node.name, t=first: coordination.read_namespaced_lease(
            n, "kube-node-lease").spec.renew_time > t, timeout=20)


def test_a_bound_pod_serves_and_reports_ready_then_stops_within_its_grace(
        full_control_plane: ControlPlane, agent: tuple[NodeAgent, str], namespace: str) -> None:
    plane = full_control_plane
    running, mark = agent
    apply(plane, *deployment(namespace, mark))

    def ready_pod() -> dict[str, Any] | None:
        return next((p for p in pods(plane, namespace) if p["status"].get("phase") == "Running"
                     and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready") == "True"),
                    None)

    pod = eventually(ready_pod, timeout=90)
    assert pod["spec"]["nodeName"] in running.nodes
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and pod["status"]["podIPs"] == [{"ip": ip}]
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # The Deployment controller counts it: the status the agent wrote is the status Kubernetes reads.
    apps = client.AppsV1Api(plane.api_client())
    eventually(lambda: apps.read_namespaced_deployment("llama", namespace).status.ready_replicas == 1, timeout=30)
    http_port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "http")
    triton = triton_http.InferenceServerClient(f"{ip}:{http_port}")
    assert triton.is_server_ready()
    with httpx.stream("POST", f"http://{ip}:{http_port}/v2/models/tensorrt_llm/generate_stream", timeout=30,
                      json={"text_input": "hi", "sampling_param_max_tokens": 4, "streaming": True}) as response:
        tokens = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(tokens) == 4

    # Scaled to zero: the pod is stopped (preStop bounded by its 4 s grace) and deleted for good.
    pids = set(running.processes())
    assert pids
    plane.kubectl("scale", "deployment/llama", "--replicas=0", "-n", namespace)
    eventually(lambda: not pods(plane, namespace), timeout=30)
    eventually(lambda: not (pids & set(running.processes())), timeout=10)


def test_a_pod_whose_process_dies_goes_failed_and_is_replaced(
        full_control_plane: ControlPlane, agent: tuple[NodeAgent, str], namespace: str) -> None:
    plane = full_control_plane
    running, mark = agent
    apply(plane, *deployment(namespace, mark))
    first = eventually(lambda: next((p for p in pods(plane, namespace) if p["status"].get("podIP")
                                     and p["status"].get("phase") == "Running"), None), timeout=90)
    runtime = running.pods[first["metadata"]["uid"]]
    assert runtime.process is not None
    os.kill(runtime.process.pid, signal.SIGKILL)

    def failed_and_replaced() -> bool:
        phases = {p["metadata"]["name"]: p["status"].get("phase") for p in pods(plane, namespace)}
        return phases.get(first["metadata"]["name"]) == "Failed" and any(
            name != first["metadata"]["name"] and phase in ("Pending", "Running") for name, phase in phases.items())

    eventually(failed_and_replaced, timeout=60)


def test_stopping_the_agent_ends_every_process_and_removes_its_nodes(
        full_control_plane: ControlPlane, agent: tuple[NodeAgent, str], namespace: str) -> None:
    plane = full_control_plane
    mark = os.urandom(3).hex()
    token = service_account_token(plane, "tokenworks-node-agent", AGENT_NAMESPACE)
    own = NodeAgent(plane.api_client(token), [AgentNode(f"agent-{mark}", "NVIDIA-H100-80GB-HBM3", octet=210,
                                                        labels={"tokenworks.dev/test-agent": mark})],
                    Path(tempfile.mkdtemp(prefix="tokenworks-agent-")), emulator_args=["--load-seconds=0.5"]).start()
    apply(plane, *deployment(namespace, mark))
    pids = eventually(own.processes, timeout=60)
    own.stop()
    assert own.processes() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    core = client.CoreV1Api(plane.api_client())
    with pytest.raises(client.ApiException) as gone:
        core.read_node(f"agent-{mark}")
    assert gone.value.status == 404
