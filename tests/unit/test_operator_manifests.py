"""The operator's deployable manifests: least-privilege RBAC without wildcards, a complete kustomization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inference_pods.templates import CHILD_KINDS

OPERATOR = Path(__file__).resolve().parents[2] / "operator"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((OPERATOR / name).read_text()) if d]


def test_no_rbac_rule_uses_a_wildcard() -> None:
    rules = [rule for doc in documents("rbac.yaml") if doc["kind"] in ("ClusterRole", "Role")
             for rule in doc["rules"]]
    assert rules, "rbac.yaml defines no rules"
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"


def test_operator_cannot_delete_or_touch_secrets() -> None:
    rules = [rule for doc in documents("rbac.yaml") if doc["kind"] in ("ClusterRole", "Role")
             for rule in doc["rules"]]
    assert all("delete" not in r["verbs"] and "deletecollection" not in r["verbs"] for r in rules)
    assert all("secrets" not in r["resources"] for r in rules)


def test_the_operator_may_block_its_owners_deletion() -> None:
    """Its children set blockOwnerDeletion: OwnerReferencesPermissionEnforcement checks for this."""
    (role,) = [d for d in documents("rbac.yaml") if d["kind"] == "ClusterRole"]
    assert any(r["apiGroups"] == ["tokenworks.dev"] and "modeldeployments/finalizers" in r["resources"]
               and "update" in r["verbs"] for r in role["rules"])


def test_leases_are_granted_only_in_the_operator_namespace() -> None:
    for doc in documents("rbac.yaml"):
        for rule in doc.get("rules", []):
            if "leases" in rule["resources"]:
                assert doc["kind"] == "Role" and doc["metadata"]["namespace"] == "tokenworks-system"


def test_kustomization_lists_files_that_exist() -> None:
    kustomization = yaml.safe_load((OPERATOR / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (OPERATOR / resource).exists(), resource


def test_manager_runs_two_replicas_as_the_operator_service_account() -> None:
    (deployment,) = documents("manager.yaml")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tokenworks-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not (OPERATOR / "__init__.py").exists()


def test_a_read_only_root_comes_with_a_writable_tmp() -> None:
    (deployment,) = documents("manager.yaml")
    pod = deployment["spec"]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and tmp[0]["name"] in empty_dirs and not tmp[0].get("readOnly"), container["name"]


def test_every_child_kind_may_be_read_watched_and_applied() -> None:
    (role,) = [d for d in documents("rbac.yaml") if d["kind"] == "ClusterRole"]
    for kind in CHILD_KINDS:
        verbs = {verb for rule in role["rules"] if kind.group in rule["apiGroups"] and kind.plural in rule["resources"]
                 for verb in rule["verbs"]}
        assert {"get", "list", "watch", "create", "patch"} <= verbs, kind.kind
