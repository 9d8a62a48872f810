"""The Helm chart on a real API server with Helm 4: install, upgrade to a changed CRD and values, uninstall that
keeps the API and every ModelDeployment, reinstall; the namespaced scope's RBAC running the real operator."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import stop_keeping_logs_on_failure
from tests.support.chart import CHART, helm, install_monitoring_crds, values_file
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OperatorProcess, service_account_token
from tests.support.waiting import eventually

CRD = "modeldeployments.tokenworks.dev"
GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
# The field the older chart's CRD lacks: a string with no default and no CEL rule naming it.
NEW_FIELD = ("scheduling", "priorityClassName")


@pytest.fixture(scope="module")
def plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A plane of its own (etcd and kube-apiserver): these tests install, change and delete the cluster-scoped
    CRD, with Helm's ownership on it, which must not reach the plane the other suites share."""
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="tokenworks-chart-"))).start()
    try:
        install_monitoring_crds(plane)
        yield plane
    finally:
        stop_keeping_logs_on_failure(plane, request)


def run_helm(plane: ControlPlane, *args: str) -> str:
    return helm(*args, kubeconfig=plane.kubeconfig).stdout


def older_chart(directory: Path) -> Path:
    """The chart as an older release: version 0.0.9, its CRD without spec.scheduling.priorityClassName."""
    old = directory / "tokenworks"
    shutil.copytree(CHART, old)
    chart = yaml.safe_load((old / "Chart.yaml").read_text())
    (old / "Chart.yaml").write_text(yaml.safe_dump({**chart, "version": "0.0.9"}))
    template = old / "templates" / "crd-modeldeployments.yaml"
    lines = template.read_text().splitlines()
    crd = yaml.safe_load("\n".join(line for line in lines[1:-1] if "{{" not in line))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"][NEW_FIELD[0]]["properties"][NEW_FIELD[1]]
    template.write_text("{{- if .Values.crds.install }}\n" + yaml.safe_dump(crd, sort_keys=False) + "{{- end }}\n")
    return old


def crd_fields(plane: ControlPlane) -> set[str]:
    crd = json.loads(plane.kubectl("get", "crd", CRD, "-o", "json"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return set(spec["properties"][NEW_FIELD[0]].get("properties", {}))


def model_deployment(namespace: str, name: str, **scheduling: str) -> str:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    if scheduling:
        manifest["spec"]["scheduling"] = scheduling
    return yaml.safe_dump(manifest)


def get_md(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(plane.api_client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)
    return obj


def remove_tokenworks(plane: ControlPlane, *namespaces: str) -> None:
    """Everything the release leaves, as docs/install.md removes it: the ModelDeployments, then the CRD."""
    for namespace in namespaces:
        plane.kubectl("delete", PLURAL, "--all", "-n", namespace, "--ignore-not-found", check=False)
    plane.kubectl("delete", "crd", CRD, "--ignore-not-found", check=False)
    eventually(lambda: CRD not in plane.kubectl("get", "crd", "-o", "name"), timeout=30)


def managed_by_helm_apply(obj: dict[str, Any], field: str) -> bool:
    """Whether Helm's field manager owns ``field`` of ``spec`` through server-side apply."""
    return any(entry["manager"] == "helm" and entry["operation"] == "Apply"
               and f"f:{field}" in entry.get("fieldsV1", {}).get("f:spec", {})
               for entry in obj["metadata"]["managedFields"])


def test_install_upgrade_to_a_changed_crd_and_values_and_uninstall_keep_the_api_and_its_objects(
    plane: ControlPlane, tmp_path: Path
) -> None:
    release, namespace, models = "tokenworks", "tokenworks-system", "models"
    plane.kubectl("create", "namespace", models)
    try:
        run_helm(plane, "install", release, str(older_chart(tmp_path)), f"--namespace={namespace}",
                 "--create-namespace")
        assert NEW_FIELD[1] not in crd_fields(plane)
        plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=30s")
        plane.kubectl("apply", "-f", "-", input=model_deployment(models, "before"))
        before = get_md(plane, models, "before")
        with_field = model_deployment(models, "after", priorityClassName="inference-high")
        refused = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=with_field, check=False)
        assert 'unknown field "spec.scheduling.priorityClassName"' in refused, refused

        upgraded = values_file({"logLevel": "debug", "replicaCount": 3, "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
            "prometheusRules": {"enabled": True}, "dashboards": {"enabled": True}}, tmp_path)
        run_helm(plane, "upgrade", release, str(CHART), f"--namespace={namespace}", f"--values={upgraded}")
        assert NEW_FIELD[1] in crd_fields(plane)
        # The API server serves the new schema once it has rebuilt its validators: moments, not a restart.
        eventually(lambda: "created" in plane.kubectl("apply", "-f", "-", input=with_field, check=False), timeout=30)
        assert get_md(plane, models, "after")["spec"]["scheduling"] == {"priorityClassName": "inference-high"}
        assert get_md(plane, models, "before")["metadata"]["uid"] == before["metadata"]["uid"]

        apps = client.AppsV1Api(plane.api_client())
        deployment = apps.read_namespaced_deployment("tokenworks-operator", namespace).to_dict()
        assert deployment["spec"]["replicas"] == 3
        assert "--log-level=debug" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        # Helm 4 applied it server-side: the replica count is a field Helm owns, as the chart intends.
        raw = json.loads(plane.kubectl("get", "deployment", "tokenworks-operator", "-n", namespace, "-o", "json",
                                       "--show-managed-fields"))
        assert managed_by_helm_apply(raw, "replicas"), raw["metadata"]["managedFields"]
        monitor = json.loads(plane.kubectl("get", "servicemonitor", "tokenworks-operator", "-n", namespace,
                                           "-o", "json"))
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
        # The shipped rules pass the PrometheusRule schema; the dashboards are ConfigMaps for the sidecar.
        rules = json.loads(plane.kubectl("get", "prometheusrules", "-n", namespace, "-o", "json"))["items"]
        assert sorted(r["metadata"]["name"] for r in rules) == ["tokenworks-alerts", "tokenworks-recording"]
        maps = json.loads(plane.kubectl("get", "configmaps", "-n", namespace, "-l", "grafana_dashboard=1",
                                        "-o", "json"))["items"]
        assert len(maps) == 3
        history = json.loads(run_helm(plane, "history", release, f"--namespace={namespace}", "--output=json"))
        assert [h["chart"] for h in history] == ["tokenworks-0.0.9", "tokenworks-0.1.0"]

        uninstalled = run_helm(plane, "uninstall", release, f"--namespace={namespace}")
        assert "kept due to the resource policy" in uninstalled and CRD in uninstalled, uninstalled
        for kind, name in [("deployment", "tokenworks-operator"), ("serviceaccount", "tokenworks-operator"),
                           ("clusterrole", "tokenworks-operator"), ("clusterrolebinding", "tokenworks-operator"),
                           ("role", "tokenworks-leader-election"), ("service", "tokenworks-operator-metrics"),
                           ("servicemonitor", "tokenworks-operator")]:
            scope = [] if kind.startswith("cluster") else ["-n", namespace]
            assert plane.kubectl("get", kind, name, "--ignore-not-found", "-o", "name", *scope) == "", kind
        assert {get_md(plane, models, n)["metadata"]["uid"] for n in ("before", "after")} >= {before["metadata"]["uid"]}
        assert NEW_FIELD[1] in crd_fields(plane)

        # Installed again under the same name, the release adopts the CRD it kept.
        run_helm(plane, "install", release, str(CHART), f"--namespace={namespace}")
        assert json.loads(run_helm(plane, "status", release, f"--namespace={namespace}", "--output=json"))[
            "info"]["status"] == "deployed"
        assert get_md(plane, models, "before")["metadata"]["uid"] == before["metadata"]["uid"]
        run_helm(plane, "uninstall", release, f"--namespace={namespace}")
    finally:
        helm("uninstall", release, f"--namespace={namespace}", kubeconfig=plane.kubeconfig, check=False)
        remove_tokenworks(plane, models)


def test_the_namespaced_scope_runs_the_operator_in_its_namespaces_only(plane: ControlPlane, tmp_path: Path) -> None:
    release, namespace = "scoped", "scoped-system"
    account = "scoped-tokenworks-operator"
    watched, unwatched = ["team-a", "team-b"], "team-c"
    for name in [namespace, *watched, unwatched]:
        plane.kubectl("create", "namespace", name)
    operator: OperatorProcess | None = None
    try:
        values = values_file({"watchNamespaces": watched, "metrics": {"podMonitor": {"enabled": True}}}, tmp_path)
        run_helm(plane, "install", release, str(CHART), f"--namespace={namespace}", f"--values={values}")
        plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=30s")
        who = f"--as=system:serviceaccount:{namespace}:{account}"
        assert plane.kubectl("auth", "can-i", "list", "deployments", "-n", "team-a", who).strip() == "yes"
        assert plane.kubectl("auth", "can-i", "list", "deployments", "-n", unwatched, who, check=False).startswith("no")
        assert plane.kubectl("auth", "can-i", "list", PLURAL, "--all-namespaces", who, check=False).startswith("no")

        kubeconfig = plane.kubeconfig_for_token(service_account_token(plane, account, namespace),
                                                tmp_path / "operator.kubeconfig",
                                                user=f"system:serviceaccount:{namespace}:{account}")
        # The flags the chart's Deployment passes, with the test's own ports.
        args = next(d for d in yaml.safe_load_all(plane.kubectl("get", "deployment", f"{release}-tokenworks-operator",
                                                                "-n", namespace, "-o", "yaml")))
        chart_args = [a for a in args["spec"]["template"]["spec"]["containers"][0]["args"][2:]
                      if not a.startswith("--lease-duration")]
        operator = OperatorProcess(plane, kubeconfig, "scoped", extra_args=(
            *chart_args, f"--lease-namespace={namespace}")).start()
        eventually(operator.is_leader, timeout=30)
        for name in [*watched, unwatched]:
            plane.kubectl("apply", "-f", "-", input=model_deployment(name, "llama-8b"))

        def reconciled(name: str) -> bool:
            status = get_md(plane, name, "llama-8b").get("status") or {}
            return bool(status.get("observedGeneration"))

        for name in watched:
            eventually(lambda name=name: reconciled(name), timeout=60)
            children = client.AppsV1Api(plane.api_client()).list_namespaced_deployment(
                name, label_selector="app.kubernetes.io/managed-by=tokenworks").items
            assert [d.metadata.name for d in children] == ["llama-8b"]
        assert not reconciled(unwatched)
        assert client.AppsV1Api(plane.api_client()).list_namespaced_deployment(unwatched).items == []
        assert "forbidden" not in operator.log_path.read_text().lower(), operator.log_tail()
        monitor = json.loads(plane.kubectl("get", "podmonitor", f"{release}-tokenworks-operator", "-n", namespace,
                                           "-o", "json"))
        assert monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    finally:
        if operator:
            operator.stop()
        helm("uninstall", release, f"--namespace={namespace}", kubeconfig=plane.kubeconfig, check=False)
        remove_tokenworks(plane, *watched, unwatched)
