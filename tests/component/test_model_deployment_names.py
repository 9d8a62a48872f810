"""The apiserver refuses ModelDeployment names its children cannot carry, and the longest one it takes works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from crds.models import NAME_MAX_LENGTH, NAME_MESSAGE
from inference_pods.templates import INSTANCE_LABEL
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import eventually

LONGEST = ("llama-8b-" + "0123456789" * 6)[:63]  # the most a Service name holds


def manifest(namespace: str, name: str) -> str:
    document = yaml.safe_load((REPO_ROOT / "examples" / "fixed-replicas.yaml").read_text())
    document["metadata"] = {"name": name, "namespace": namespace}
    document["spec"]["replicas"] = 1
    return yaml.safe_dump(document)


@pytest.fixture(scope="module")
def operator(full_control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    install_api_and_rbac(full_control_plane)
    kubeconfig = service_account_kubeconfig(full_control_plane, full_control_plane.workdir / "names.kubeconfig")
    process = OperatorProcess(full_control_plane, kubeconfig, "names").start()
    eventually(process.is_leader, timeout=30)  # a dead leader of an earlier test may hold the Lease
    yield process
    process.stop()


@pytest.mark.parametrize("name", [
    "llama.8b",  # a Service name has no dots: the operator used to make a Deployment and no Service
    LONGEST + "x",
    "8b-llama",  # a Service name starts with a letter
], ids=["dots", "64-characters", "leading-digit"])
def test_a_name_the_children_cannot_carry_is_refused_with_the_reason(
    control_plane: ControlPlane, namespace: str, name: str
) -> None:
    install_api_and_rbac(control_plane)
    output = control_plane.kubectl("apply", "-f", "-", input=manifest(namespace, name), check=False)
    assert f'metadata.name: Invalid value: "{name}": {NAME_MESSAGE}' in " ".join(output.split()), output
    assert "not found" in control_plane.kubectl("-n", namespace, "get", "mdep", name, check=False)


def test_the_longest_name_gets_every_child_and_pods(
    full_control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    assert len(LONGEST) == NAME_MAX_LENGTH
    full_control_plane.kubectl("apply", "-f", "-", input=manifest(namespace, LONGEST))
    api = full_control_plane.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    eventually(lambda: core.read_namespaced_service(LONGEST, namespace), timeout=30)
    core.read_namespaced_config_map(f"{LONGEST}-engine", namespace)
    client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(LONGEST, namespace)
    assert apps.read_namespaced_deployment(LONGEST, namespace).spec.replicas == 1
    # The controller manager names the ReplicaSet NAME-HASH and cuts the pod's generated name to 63.
    pods = eventually(lambda: core.list_namespaced_pod(namespace, label_selector=f"{INSTANCE_LABEL}={LONGEST}")
                      .items, timeout=30)
    assert all(len(pod.metadata.name) <= 63 for pod in pods)
