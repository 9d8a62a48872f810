"""The Helm chart rendered without a cluster: lint, scopes, monitors, rules and dashboards, values schema, image,
replica ownership, the CRD and RBAC against crds/ and operator/, the CLI flags it passes, the values README."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from controllers.cli import app
from crds import generate
from inference_pods.templates import CHILD_KINDS, MANAGED_BY
from tests.support.chart import CHART, MONITORING_CRDS, Manifest, helm, render, template
from tests.support.controlplane import REPO_ROOT, binary

# What Helm adds and kustomize does not: the release's labels.
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by"}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}},
    "pod-monitor": {"metrics": {"podMonitor": {"enabled": True}, "service": {"enabled": False}}},
    "everything": {
        "watchNamespaces": ["team-a"], "replicaCount": 1, "leaderElection": {"enabled": False},
        "image": {"digest": "sha256:" + "a" * 64}, "prometheus": {
            "bearerTokenSecret": {"name": "prom-token"}, "ca": {"configMapName": "prom-ca"}},
        "imageRegistry": "registry.example.internal/nvcr", "logLevel": "debug",
        "extraArgs": ["--resync-seconds=120", "--autoscaler-tick=10"], "podAntiAffinityPreset": "hard",
        "prometheusRules": {"enabled": True}, "dashboards": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}}, "crds": {"install": False},
        "serviceAccount": {"create": False, "name": "platform-operator"},
    },
}


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    (found,) = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    return found


def operator_deployment(objects: list[Manifest]) -> Manifest:
    return one(objects, "Deployment")


def container(objects: list[Manifest]) -> dict[str, Any]:
    pod = operator_deployment(objects)["spec"]["template"]["spec"]
    (manager,) = pod["containers"]
    assert isinstance(manager, dict)
    return manager


def refused(values: dict[str, Any], chart: Path = CHART) -> str:
    result = template(values, chart=chart, check=False)
    assert result.returncode != 0, f"rendered: {result.stdout[:400]}"
    return result.stderr


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


def test_lint_strict_passes_on_every_value_set(tmp_path: Path) -> None:
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        result = helm("lint", "--strict", str(CHART), f"--values={path}", check=False)
        assert result.returncode == 0, (name, result.stdout, result.stderr)


def test_the_default_installs_the_operator_and_nothing_optional(rendered: dict[str, list[Manifest]]) -> None:
    names = sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                   for o in rendered["default"])
    assert names == [
        ("ClusterRole", "", "tokenworks-operator"),
        ("ClusterRoleBinding", "", "tokenworks-operator"),
        ("CustomResourceDefinition", "", "modeldeployments.tokenworks.dev"),
        ("Deployment", "tokenworks-system", "tokenworks-operator"),
        ("Role", "tokenworks-system", "tokenworks-leader-election"),
        ("RoleBinding", "tokenworks-system", "tokenworks-leader-election"),
        ("Service", "tokenworks-system", "tokenworks-operator-metrics"),
        ("ServiceAccount", "tokenworks-system", "tokenworks-operator"),
    ]


def test_another_release_name_prefixes_every_cluster_scoped_name() -> None:
    objects = render(release="team-a", namespace="team-a-system")
    assert one(objects, "ClusterRole")["metadata"]["name"] == "team-a-tokenworks-operator"
    assert one(objects, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "team-a-tokenworks-operator", "namespace": "team-a-system"}]
    # Two releases in one namespace would otherwise elect one leader between them.
    assert "--lease-name=team-a-tokenworks-operator" in container(objects)["args"]


# -- kustomize and the chart: one set of objects ----------------------------------------------------


def normalised(obj: Any) -> Any:
    """Without Helm's release labels, wherever labels appear (metadata, selectors, pod templates)."""
    if isinstance(obj, dict):
        return {k: normalised(v) for k, v in obj.items() if k not in HELM_LABELS}
    if isinstance(obj, list):
        return [normalised(v) for v in obj]
    return obj


def keyed(objects: list[Manifest]) -> dict[tuple[str, str, str], Manifest]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


def test_kustomize_and_the_default_chart_render_the_same_objects(rendered: dict[str, list[Manifest]]) -> None:
    kustomized = keyed([d for d in yaml.safe_load_all(subprocess.run(
        [str(binary("kubectl")), "kustomize", str(REPO_ROOT / "operator")], capture_output=True, text=True,
        check=True, timeout=60).stdout) if d])
    charted = keyed(rendered["default"])
    # The chart does not create its release namespace (helm install --create-namespace, or the platform's).
    kustomized.pop(("Namespace", "", "tokenworks-system"))
    assert sorted(kustomized) == sorted(charted)
    crd = ("CustomResourceDefinition", "", "modeldeployments.tokenworks.dev")
    # The CRD: the same schema; only the chart's copy carries Helm's keep policy and labels.
    assert kustomized.pop(crd)["spec"] == charted.pop(crd)["spec"]
    for key, obj in kustomized.items():
        assert normalised(charted[key]) == obj, key


def test_the_rbac_has_no_wildcards_no_deletes_and_no_secrets(rendered: dict[str, list[Manifest]]) -> None:
    for name, objects in rendered.items():
        rules = [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
        assert rules, name
        for rule in rules:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (name, rule)
            assert not {"delete", "deletecollection"} & set(rule["verbs"]), (name, rule)
            assert "secrets" not in rule["resources"], (name, rule)


def verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_a_namespaced_scope_grants_roles_in_the_watched_namespaces_only(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["namespaced"]
    roles = {o["metadata"]["namespace"]: o for o in by_kind(objects, "Role")
             if o["metadata"]["name"] == "tokenworks-operator"}
    assert sorted(roles) == ["team-a", "team-b"]
    bindings = {o["metadata"]["namespace"]: o for o in by_kind(objects, "RoleBinding")
                if o["metadata"]["name"] == "tokenworks-operator"}
    assert sorted(bindings) == ["team-a", "team-b"]
    for binding in bindings.values():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tokenworks-operator",
                                        "namespace": "tokenworks-system"}]
    cluster_wide = one(rendered["default"], "ClusterRole")["rules"]
    for role in roles.values():
        for kind in CHILD_KINDS:
            assert {"get", "list", "watch", "create", "patch"} <= verbs(role["rules"], kind.group, kind.plural)
        # Everything the cluster-wide role grants on namespaced resources, in the namespace.
        for rule in cluster_wide:
            for resource in rule["resources"]:
                if resource != "nodes":
                    assert set(rule["verbs"]) <= verbs(role["rules"], rule["apiGroups"][0], resource), resource
    # Cluster-wide, only what is cluster-scoped: nodes, and the pods bound to them (GPUs in use).
    cluster = one(objects, "ClusterRole")["rules"]
    assert [(r["resources"], r["verbs"]) for r in cluster] == [(["nodes"], ["get", "list", "watch"]),
                                                              (["pods"], ["list"])]
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == "tokenworks-operator"
    # The Lease stays in the release namespace.
    (lease_role,) = [o for o in by_kind(objects, "Role") if o["metadata"]["name"] == "tokenworks-leader-election"]
    assert lease_role["metadata"]["namespace"] == "tokenworks-system"
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--namespace" not in " ".join(container(rendered["default"])["args"])


def test_only_the_operators_lease_may_be_read_or_renewed(rendered: dict[str, list[Manifest]]) -> None:
    lease_role = one(rendered["default"], "Role", "tokenworks-leader-election")
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["tokenworks-operator"],
         "verbs": ["get", "update"]}]
    assert "--lease-name=tokenworks-operator" in container(rendered["default"])["args"]
    # No Lease, no Lease role.
    assert not [o for o in rendered["everything"] if o["metadata"]["name"].endswith("leader-election")]


# -- monitoring ---------------------------------------------------------------------------------------


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_monitors_are_off_by_default(rendered: dict[str, list[Manifest]]) -> None:
    kinds = {o["kind"] for o in rendered["default"]}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_the_service_monitor_scrapes_the_operator_pods_through_the_service_honouring_labels(
    rendered: dict[str, list[Manifest]]
) -> None:
    objects = rendered["service-monitor"]
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert not by_kind(objects, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["tokenworks-system"]}
    pod = operator_deployment(objects)["spec"]["template"]
    assert matches(service["spec"]["selector"], pod["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True and endpoint["port"] == "metrics" == service["spec"]["ports"][0]["name"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container(objects)["ports"]}


def test_the_pod_monitor_scrapes_the_pods_directly_honouring_labels(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["pod-monitor"]
    monitor = one(objects, "PodMonitor")
    assert not by_kind(objects, "ServiceMonitor") and not by_kind(objects, "Service")
    pod = operator_deployment(objects)["spec"]["template"]
    assert matches(monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True and endpoint["port"] == "metrics"
    assert "metrics" in {p["name"] for p in container(objects)["ports"]}


def test_conflicting_monitoring_values_are_refused_with_the_reason() -> None:
    both = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    assert "enable serviceMonitor or podMonitor, not both" in refused(both)
    no_service = {"metrics": {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}}
    assert "metrics.serviceMonitor needs metrics.service.enabled" in refused(no_service)


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """The chart in a temporary directory, for files the real chart does not have."""
    copy = tmp_path / "tokenworks"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("files"))
    return copy


RULES_A = {"groups": [{"name": "tokenworks.operator", "rules": [
    {"alert": "TokenworksNoLeader", "expr": "max(tokenworks_leader) == 0", "for": "5m",
     "labels": {"severity": "critical"}}]}]}
RULES_B = {"groups": [{"name": "tokenworks.recording", "rules": [
    {"record": "tokenworks:reconcile_errors:rate5m",
     "expr": 'sum(rate(tokenworks_reconcile_total{result="error"}[5m]))'}]}]}


def test_one_prometheus_rule_per_rule_file_and_none_without_files_or_switch(chart_copy: Path) -> None:
    on = {"prometheusRules": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    assert not by_kind(render(on, chart=chart_copy), "PrometheusRule")  # no files/rules/
    rules = chart_copy / "files" / "rules"
    rules.mkdir(parents=True)
    (rules / "operator.yaml").write_text(yaml.safe_dump(RULES_A))
    (rules / "recording_rules.yaml").write_text(yaml.safe_dump(RULES_B))
    (rules / "README.md").write_text("not a rule file\n")
    made = {o["metadata"]["name"]: o for o in by_kind(render(on, chart=chart_copy), "PrometheusRule")}
    assert sorted(made) == ["tokenworks-operator", "tokenworks-recording-rules"]
    assert made["tokenworks-operator"]["spec"] == RULES_A and made["tokenworks-recording-rules"]["spec"] == RULES_B
    for rule in made.values():
        assert rule["metadata"]["namespace"] == "tokenworks-system"
        assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(render(chart=chart_copy), "PrometheusRule")  # switched off
    (rules / "broken.yaml").write_text("alerts: []\n")
    assert "files/rules/broken.yaml is not a Prometheus rule file" in refused(on, chart=chart_copy)


def test_one_labelled_configmap_per_dashboard_in_its_folder_and_none_without_files_or_switch(
    chart_copy: Path
) -> None:
    on = {"dashboards": {"enabled": True}}
    assert not by_kind(render(on, chart=chart_copy), "ConfigMap")
    boards = chart_copy / "files" / "dashboards"
    boards.mkdir(parents=True)
    fleet = json.dumps({"title": "Tokenworks fleet", "uid": "tokenworks-fleet", "panels": []}, indent=2)
    (boards / "fleet.json").write_text(fleet)
    (boards / "operator.json").write_text(json.dumps({"title": "Tokenworks operator", "panels": []}))
    maps = {o["metadata"]["name"]: o for o in by_kind(render(on, chart=chart_copy), "ConfigMap")}
    assert sorted(maps) == ["tokenworks-dashboard-fleet", "tokenworks-dashboard-operator"]
    fleet_map = maps["tokenworks-dashboard-fleet"]
    assert fleet_map["data"] == {"fleet.json": fleet}
    assert fleet_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert fleet_map["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "Tokenworks"}
    assert fleet_map["metadata"]["namespace"] == "tokenworks-system"
    elsewhere = {"dashboards": {"enabled": True, "namespace": "monitoring", "folder": "LLM serving",
                                "labels": {"grafana_dashboard": "tokenworks"}}}
    for board in by_kind(render(elsewhere, chart=chart_copy), "ConfigMap"):
        assert board["metadata"]["namespace"] == "monitoring"
        assert board["metadata"]["labels"]["grafana_dashboard"] == "tokenworks"
        assert board["metadata"]["annotations"]["k8s-sidecar-target-directory"] == "LLM serving"
    assert not by_kind(render(chart=chart_copy), "ConfigMap")  # switched off
    (boards / "broken.json").write_text("{not json")
    assert "files/dashboards/broken.json is not JSON" in refused(on, chart=chart_copy)


# -- values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "field"), [
    ({"replicaCont": 3}, "replicaCont"),
    ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
    ({"prometheus": {"bearerTokenSecret": {"nmae": "token"}}}, "nmae"),
    ({"dashboards": {"lables": {"grafana_dashboard": "1"}}}, "lables"),
])
def test_a_typo_in_values_is_an_error_naming_the_field(values: dict[str, Any], field: str) -> None:
    stderr = refused(values)
    assert f"additional properties '{field}' not allowed" in stderr, stderr


@pytest.mark.parametrize(("values", "where"), [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"logLevel": "loud"}, "/logLevel"),
    ({"leaderElection": {"leaseDuration": 3}}, "/leaderElection/leaseDuration"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"extraArgs": ["resync-seconds=5"]}, "/extraArgs/0"),
])
def test_a_wrong_value_is_an_error_naming_the_field(values: dict[str, Any], where: str) -> None:
    assert f"at '{where}'" in refused(values)


def test_values_that_cannot_work_together_are_refused_with_the_reason() -> None:
    assert "replicaCount > 1 needs leaderElection.enabled" in refused({"leaderElection": {"enabled": False}})
    both = {"prometheus": {"ca": {"configMapName": "a", "secretName": "b"}}}
    assert "prometheus.ca: set configMapName or secretName, not both" in refused(both)


def test_the_image_defaults_to_the_app_version_and_a_digest_pins_it(rendered: dict[str, list[Manifest]]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(rendered["default"])["image"] == f"tokenworks/operator:{chart['appVersion']}"
    assert container(rendered["everything"])["image"] == "tokenworks/operator@sha256:" + "a" * 64
    tagged = render({"image": {"tag": "0.2.0-rc.1", "repository": "mirror.internal/tokenworks/operator"}})
    assert container(tagged)["image"] == "mirror.internal/tokenworks/operator:0.2.0-rc.1"
    # The manifests pin the same version as the chart's appVersion.
    assert chart["appVersion"] in (REPO_ROOT / "operator" / "manager.yaml").read_text()


def test_the_prometheus_token_comes_from_the_secret_and_the_ca_is_mounted(rendered: dict[str, list[Manifest]]) -> None:
    manager = container(rendered["everything"])
    env = {e["name"]: e for e in manager["env"]}
    assert env["TOKENWORKS_PROMETHEUS_TOKEN"] == {"name": "TOKENWORKS_PROMETHEUS_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "prom-token", "key": "token"}}}
    assert env["TOKENWORKS_IMAGE_REGISTRY"]["value"] == "registry.example.internal/nvcr"
    (ca_arg,) = [a for a in manager["args"] if a.startswith("--prometheus-ca-file=")]
    (mount,) = [m for m in manager["volumeMounts"] if m["name"] == "prometheus-ca"]
    assert ca_arg == f"--prometheus-ca-file={mount['mountPath']}/ca.crt" and mount["readOnly"] is True
    volumes = operator_deployment(rendered["everything"])["spec"]["template"]["spec"]["volumes"]
    assert {"name": "prometheus-ca", "configMap": {"name": "prom-ca"}} in volumes
    assert "TOKENWORKS_PROMETHEUS_TOKEN" not in {e["name"] for e in container(rendered["default"])["env"]}


def test_scheduling_values_reach_the_pod(rendered: dict[str, list[Manifest]]) -> None:
    pod = operator_deployment(rendered["everything"])["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert matches(term["labelSelector"]["matchLabels"],
                   operator_deployment(rendered["everything"])["spec"]["template"]["metadata"]["labels"])
    assert pod["serviceAccountName"] == "platform-operator"
    assert not by_kind(rendered["everything"], "ServiceAccount")
    custom = render({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}], "priorityClassName": "platform",
        "nodeSelector": {"kubernetes.io/os": "linux"}, "podAntiAffinityPreset": "none"})
    pod = operator_deployment(custom)["spec"]["template"]["spec"]
    assert list(pod["affinity"]) == ["nodeAffinity"]
    assert pod["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    assert pod["priorityClassName"] == "platform" and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" not in operator_deployment(render({"podAntiAffinityPreset": "none"}))["spec"]["template"]["spec"]


def replicas_fields(obj: Any, path: str = "") -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "replicas":
                yield f"{path}.{key}"
            yield from replicas_fields(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from replicas_fields(value, f"{path}[{index}]")


def test_the_chart_owns_no_replica_count_the_autoscaler_writes(rendered: dict[str, list[Manifest]]) -> None:
    """Helm 4 applies server-side: a `replicas` the chart sets is a field it owns and re-applies on every
    upgrade. The only one is the operator's own Deployment, which nothing scales."""
    for name, objects in rendered.items():
        owned = [(o["kind"], o["metadata"]["name"], field) for o in objects if o["kind"] != "CustomResourceDefinition"
                 for field in replicas_fields(o)]
        assert owned == [("Deployment", "tokenworks-operator", ".spec.replicas")], name
        for obj in objects:
            # Nothing the autoscaler or the operator writes: no ModelDeployment, no child, no HPA, no status.
            assert obj["kind"] not in {"ModelDeployment", "HorizontalPodAutoscaler", "ScaledObject"}, name
            assert (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGED_BY, name
            assert "status" not in obj, (name, obj["kind"])
        labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "operator", name


def test_every_flag_and_variable_the_chart_passes_is_one_operator_run_takes(
    rendered: dict[str, list[Manifest]]
) -> None:
    root: Any = typer.main.get_command(app)  # typer's own (vendored) click Group
    run = root.commands["operator"].commands["run"]
    envvars = {p.envvar for p in run.params if isinstance(getattr(p, "envvar", None), str)}
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "controllers").rglob("*.py"))
    for name, objects in rendered.items():
        manager = container(objects)
        assert manager["args"][:2] == ["operator", "run"], name
        # Parsed as the CLI parses them: an unknown flag or a bad value (a log level) raises here.
        context = run.make_context("run", list(manager["args"][2:]))
        assert context.params["lease_duration"] == 15, name
        for env in manager["env"]:
            assert env["name"] in envvars or f'"{env["name"]}"' in source, (name, env["name"])
    everything = run.make_context("run", list(container(rendered["everything"])["args"][2:])).params
    assert everything["leader_elect"] is False and everything["log_level"].value == "debug"
    assert everything["resync_seconds"] == 120 and everything["namespace"] == ["team-a"]


def test_the_kube_version_is_pinned() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["version"] == "0.1.0" and chart["kubeVersion"] == ">=1.30.0-0"
    base = ["template", "tokenworks", str(CHART)]
    too_old = helm(*base, "--kube-version=v1.29.9", check=False)
    assert too_old.returncode != 0 and "kubeVersion" in too_old.stderr
    assert helm(*base, "--kube-version=v1.30.0-gke.1", check=False).returncode == 0


# -- the CRD, the vendored CRDs and the README ---------------------------------------------------------


def test_the_charts_crd_is_the_generated_crd_kept_on_uninstall(rendered: dict[str, list[Manifest]]) -> None:
    crd = one(rendered["default"], "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert {k: v for k, v in crd.items() if k != "metadata"} == {
        k: v for k, v in yaml.safe_load(generate.CRD_PATH.read_text()).items() if k != "metadata"}
    assert crd["metadata"]["name"] == generate.crd()["metadata"]["name"]
    assert not by_kind(rendered["everything"], "CustomResourceDefinition")  # crds.install: false


def test_the_vendored_monitoring_crds_are_the_cited_release() -> None:
    readme = (MONITORING_CRDS / "README.md").read_text()
    cited = dict(re.findall(r"\| `(monitoring\.coreos\.com_\w+\.yaml)` \| `([0-9a-f]{64})` \|", readme))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in MONITORING_CRDS.glob("*.yaml")}
    assert cited == files and len(files) == 3
    for path in MONITORING_CRDS.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["metadata"]["annotations"]["operator.prometheus.io/version"] == "0.85.0"
    licence = (MONITORING_CRDS / "LICENSE").read_text()
    assert "Apache License" in licence[:200] and "Version 2.0, January 2004" in licence[:200]


LWS_CRDS = REPO_ROOT / "tests" / "fixtures" / "crds" / "leaderworkerset.x-k8s.io"


def test_the_vendored_leader_worker_set_crd_is_the_cited_release() -> None:
    readme = (LWS_CRDS / "README.md").read_text()
    cited = dict(re.findall(r"\| `(leaderworkerset\.x-k8s\.io_\w+\.yaml)` \| `([0-9a-f]{64})` \|", readme))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in LWS_CRDS.glob("*.yaml")}
    assert cited == files and len(files) == 1
    assert "tag `v0.8.0`" in readme and "h1:DdhJ8QabwTfWgbgaHH2gdf8twliioHaoSfmDXRYEVU0=" in readme
    (crd,) = (yaml.safe_load(p.read_text()) for p in LWS_CRDS.glob("*.yaml"))
    (version,) = crd["spec"]["versions"]
    # What the operator relies on: the scale subresource's paths.
    assert version["subresources"]["scale"] == {"labelSelectorPath": ".status.hpaPodSelector",
                                                "specReplicasPath": ".spec.replicas",
                                                "statusReplicasPath": ".status.replicas"}
    licence = (LWS_CRDS / "LICENSE").read_text()
    assert "Apache License" in licence[:200] and "Version 2.0, January 2004" in licence[:200]


README_SCRIPT = REPO_ROOT / "scripts" / "chart_readme.py"


def test_the_values_table_in_the_chart_readme_is_current() -> None:
    result = subprocess.run([sys.executable, str(README_SCRIPT), "--check"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_readme_check_fails_on_a_stale_table_or_an_undocumented_value(chart_copy: Path) -> None:
    readme = chart_copy / "README.md"
    readme.write_text(readme.read_text().replace("| `replicaCount` | integer | `2` |",
                                                 "| `replicaCount` | integer | `3` |"))
    stale = subprocess.run([sys.executable, str(README_SCRIPT), "--check", f"--chart={chart_copy}"],
                           capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "is stale" in stale.stderr
    values = chart_copy / "values.yaml"
    values.write_text(values.read_text() + "undocumented: true\n")
    missing = subprocess.run([sys.executable, str(README_SCRIPT), "--check", f"--chart={chart_copy}"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "in values.yaml, not in the schema: ['undocumented']" in missing.stderr


def test_the_chart_ships_the_dashboards_and_rules_it_is_built_with() -> None:
    """charts/tokenworks/files/ holds copies of dashboards/json and dashboards/rules (Helm reads files only
    inside the chart): they are current, and each becomes its object."""
    from dashboards import NAMES, build

    for path, text in build.chart_files().items():
        assert path.read_text() == text, f"{path} is stale: run python -m dashboards.build"
    objects = render({"dashboards": {"enabled": True}, "prometheusRules": {"enabled": True}})
    maps = by_kind(objects, "ConfigMap")
    assert sorted(next(iter(m["data"])) for m in maps) == sorted(f"{n}.json" for n in NAMES)
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    assert {json.loads(next(iter(m["data"].values())))["uid"] for m in maps} == {f"tokenworks-{n}" for n in NAMES}
    rules = by_kind(objects, "PrometheusRule")
    files = sorted((REPO_ROOT / "dashboards" / "rules").glob("*.yaml"))
    assert len(rules) == len(files) == 2
    for rule, path in zip(sorted(rules, key=lambda r: r["metadata"]["name"]), files, strict=True):
        assert rule["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]
