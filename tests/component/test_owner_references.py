"""With OwnerReferencesPermissionEnforcement on (as on OpenShift) the operator still creates its children."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from controllers.kube import Kube
from crds.models import ModelDeployment
from inference_pods.templates import owner_reference, render_children
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import install_api_and_rbac, service_account_token

GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"


def create_model_deployment(plane: ControlPlane, namespace: str) -> ModelDeployment:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "fixed-replicas.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    live: dict[str, Any] = client.CustomObjectsApi(plane.api_client()).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest)
    return ModelDeployment.model_validate(live)


def test_the_operator_account_creates_children_that_block_their_owners_deletion(
    control_plane: ControlPlane, namespace: str
) -> None:
    install_api_and_rbac(control_plane)
    md = create_model_deployment(control_plane, namespace)
    as_operator = Kube(control_plane.api_client(token=service_account_token(control_plane)))
    # The operator's own rendering and write path; every child sets blockOwnerDeletion.
    for child in render_children(md, 1, pod_monitor_api=False):
        assert child["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
        applied = as_operator.apply(child)
        assert applied["metadata"]["ownerReferences"][0]["uid"] == md.metadata["uid"]


def test_the_plugin_is_on_an_account_without_finalizers_permission_is_refused(
    control_plane: ControlPlane, namespace: str
) -> None:
    """Without this the test above would pass on a server that enforces nothing."""
    install_api_and_rbac(control_plane)
    md = create_model_deployment(control_plane, namespace)
    admin = control_plane.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="configmap-writer")))
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="configmap-writer"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["create"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="configmap-writer"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-writer"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="configmap-writer", namespace=namespace)]))
    writer = client.CoreV1Api(control_plane.api_client(
        token=service_account_token(control_plane, "configmap-writer", namespace)))
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "owned", "ownerReferences": [owner_reference(md)]}}

    with pytest.raises(ApiException) as refused:
        writer.create_namespaced_config_map(namespace, body)
    assert refused.value.status == 403
    assert "cannot set blockOwnerDeletion" in refused.value.body
    # The same object without the block is the writer's to create.
    body["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = False
    writer.create_namespaced_config_map(namespace, body)
