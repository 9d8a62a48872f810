"""The real test control plane: kubectl and CRDs, RBAC, GPU scheduling on KWOK nodes, GC, start failures."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from controllers.factory import plane as cp
from tests.support.controlplane import ControlPlane, ControlPlaneError
from tests.support.waiting import eventually

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.tokenworks.dev"},
    "spec": {
        "group": "test.tokenworks.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_apiserver_reports_the_pinned_release(control_plane: ControlPlane) -> None:
    version = client.VersionApi(control_plane.api_client()).get_code()
    assert version.git_version == cp.KUBE_VERSION
    kubectl_version = control_plane.kubectl("version", "--client", "-o", "yaml")
    assert yaml.safe_load(kubectl_version)["clientVersion"]["gitVersion"] == cp.KUBE_VERSION


def test_kubectl_applies_a_crd_and_a_custom_resource_read_back_by_the_client(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(WIDGET_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.tokenworks.dev", "--timeout=30s"
    )
    widget = {
        "apiVersion": "test.tokenworks.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": namespace},
        "spec": {"size": 3},
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget))

    custom = client.CustomObjectsApi(control_plane.api_client())
    stored = custom.get_namespaced_custom_object(
        "test.tokenworks.dev", "v1", namespace, "widgets", "w1"
    )
    assert stored["spec"] == {"size": 3}

    # The schema is enforced by the real apiserver, not by the client.
    widget["metadata"]["name"] = "w2"
    widget["spec"] = {"size": 0}
    output = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(widget), check=False)
    assert "spec.size: Invalid value: 0" in output


def test_rbac_denies_a_bare_service_account_until_a_role_is_bound(
    control_plane: ControlPlane, namespace: str
) -> None:
    admin = control_plane.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        )
    ).status.token
    as_reader = client.CoreV1Api(control_plane.api_client(token=token))

    with pytest.raises(ApiException) as denied:
        as_reader.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                   verbs=["get", "list"])],
    ))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="reader-reads-configmaps"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="configmap-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader",
                                       namespace=namespace)],
    ))
    listed = eventually(lambda: as_reader.list_namespaced_config_map(namespace), timeout=20)
    assert isinstance(listed.items, list)
    # The role grants configmaps only.
    with pytest.raises(ApiException) as still_denied:
        as_reader.list_namespaced_secret(namespace)
    assert still_denied.value.status == 403


def gpu_deployment(name: str, gpus: int, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="engine",
                    image="nvidia/tritonserver:25.10-trtllm-python-py3",
                    resources=client.V1ResourceRequirements(
                        limits={cp.GPU_RESOURCE: str(gpus)}, requests={cp.GPU_RESOURCE: str(gpus)}
                    ),
                )]),
            ),
        ),
    )


def test_gpu_pods_are_scheduled_on_kwok_gpu_nodes_and_run(
    full_control_plane: ControlPlane, namespace: str
) -> None:
    admin = full_control_plane.api_client()
    client.AppsV1Api(admin).create_namespaced_deployment(
        namespace, gpu_deployment("engine", gpus=4, replicas=2)
    )
    core = client.CoreV1Api(admin)

    def running_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=engine").items
        running = [p for p in pods if p.status.phase == "Running"]
        return running if len(running) == 2 else []

    pods = eventually(running_pods, timeout=90)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for pod in pods:
        node = nodes[pod.spec.node_name]
        assert int(node.status.allocatable[cp.GPU_RESOURCE]) >= 4
        assert cp.GPU_PRODUCT_LABEL in node.metadata.labels


def test_a_pod_wanting_more_gpus_than_any_node_stays_pending_unschedulable(
    full_control_plane: ControlPlane, namespace: str
) -> None:
    admin = full_control_plane.api_client()
    client.AppsV1Api(admin).create_namespaced_deployment(
        namespace, gpu_deployment("too-big", gpus=16, replicas=1)
    )
    core = client.CoreV1Api(admin)

    def unschedulable_condition() -> Any:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=too-big").items:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return pod, condition
        return None

    pod, condition = eventually(unschedulable_condition, timeout=90)
    assert pod.status.phase == "Pending"
    assert condition.status == "False"
    assert "Insufficient nvidia.com/gpu" in condition.message


def test_deleting_the_owner_garbage_collects_its_dependents(
    full_control_plane: ControlPlane, namespace: str
) -> None:
    admin = full_control_plane.api_client()
    core = client.CoreV1Api(admin)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    for i in range(3):
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"dependent-{i}", owner_references=[reference],
                                         labels={"owned": "yes"}),
        ))
    assert len(core.list_namespaced_secret(namespace, label_selector="owned=yes").items) == 3

    core.delete_namespaced_config_map("owner", namespace)
    eventually(
        lambda: not core.list_namespaced_secret(namespace, label_selector="owned=yes").items,
        timeout=60,
    )


@pytest.mark.timeout(60)
def test_a_taken_port_fails_the_start_naming_the_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(cp, "free_port", lambda: taken)
        plane = ControlPlane(tmp_path / "plane")
        with pytest.raises(ControlPlaneError, match=r"^etcd exited with code \d+ while starting"):
            plane.start()
    assert not plane.components, "a failed start must stop what it started"


@pytest.mark.timeout(30)
def test_a_missing_binary_fails_the_start_naming_the_component(tmp_path: Path) -> None:
    partial = tmp_path / "bin"
    partial.mkdir()
    (partial / "etcd").symlink_to(cp.binary("etcd"))
    with pytest.raises(ControlPlaneError, match=r"^kube-apiserver: binary not found"):
        ControlPlane(tmp_path / "plane", bin_dir=partial).start()
