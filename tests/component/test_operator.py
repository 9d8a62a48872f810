"""The operator against the real control plane, acting as its own ServiceAccount: children, validation,
Degraded, GPU capacity, optional APIs, edits, hand edits of children (reverted or kept), garbage
collection, kubectl scale, quiet at rest, restarts, CLI views."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from crds.models import ModelDeployment
from inference_pods import templates
from tests.support.chart import install_monitoring_crds
from tests.support.controlplane import REPO_ROOT, ControlPlane, GpuNodeSpec
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import assert_subset, event_seen, eventually

EXAMPLES = REPO_ROOT / "examples"
GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
RESYNC_SECONDS = 5


class Operator:
    """The module's operator; a test may replace the process (restart)."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path) -> None:
        self.plane = plane
        self.kubeconfig = kubeconfig
        self.process = OperatorProcess(plane, kubeconfig, "op-main", resync_seconds=RESYNC_SECONDS).start()
        eventually(self.process.is_leader, timeout=30)

    def restart(self) -> None:
        self.process.kill()
        self.process = OperatorProcess(self.plane, self.kubeconfig, "op-restarted",
                                       resync_seconds=RESYNC_SECONDS).start()


@pytest.fixture(scope="module")
def operator(full_control_plane: ControlPlane) -> Iterator[Operator]:
    install_pod_monitor_crd(full_control_plane)
    install_api_and_rbac(full_control_plane)
    kubeconfig = service_account_kubeconfig(full_control_plane,
                                            full_control_plane.workdir / "operator.kubeconfig")
    op = Operator(full_control_plane, kubeconfig)
    yield op
    op.process.stop()
    log = op.process.log_path.read_text().lower()
    assert "forbidden" not in log, "the operator's RBAC was insufficient"
    assert "failed with an exception" not in log


def apply_example(plane: ControlPlane, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(spec)
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return dict(manifest)


def custom(plane: ControlPlane) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(plane.api_client())


def get_md(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return obj


def reconciled(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    obj = get_md(plane, namespace, name)
    status = obj.get("status") or {}
    return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def children(plane: ControlPlane, namespace: str) -> dict[str, list[str]]:
    selector = "app.kubernetes.io/managed-by=tokenworks"
    api = plane.api_client()
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    monitors = custom(plane).list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "podmonitors", label_selector=selector)["items"]
    return {
        "Deployment": [d.metadata.name for d in apps.list_namespaced_deployment(
            namespace, label_selector=selector).items],
        "Service": [s.metadata.name for s in core.list_namespaced_service(
            namespace, label_selector=selector).items],
        "ConfigMap": [c.metadata.name for c in core.list_namespaced_config_map(
            namespace, label_selector=selector).items],
        "PodDisruptionBudget": [p.metadata.name for p in policy.list_namespaced_pod_disruption_budget(
            namespace, label_selector=selector).items],
        "PodMonitor": [m["metadata"]["name"] for m in monitors],
    }


def live_deployment(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    api = plane.api_client()
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    result: dict[str, Any] = api.sanitize_for_serialization(deployment)
    return result


@pytest.mark.parametrize(("example", "replicas", "gpus"), [
    ("llama-8b-h100.yaml", 1, 1), ("llama-70b-h200-tp4.yaml", 1, 4), ("fixed-replicas.yaml", 2, 1)])
def test_each_example_creates_exactly_the_expected_children(
    operator: Operator, namespace: str, example: str, replicas: int, gpus: int
) -> None:
    plane = operator.plane
    manifest = apply_example(plane, namespace, example)
    name = manifest["metadata"]["name"]
    obj = eventually(lambda: reconciled(plane, namespace, name), timeout=60)
    assert children(plane, namespace) == {
        "Deployment": [name], "Service": [name], "ConfigMap": [f"{name}-engine"],
        "PodDisruptionBudget": [name], "PodMonitor": [name]}

    md = ModelDeployment.model_validate(obj)
    rendered = templates.deployment(md, replicas, "ignored")
    live = live_deployment(plane, namespace, name)
    assert live["spec"]["replicas"] == replicas
    live_pod, rendered_pod = live["spec"]["template"]["spec"], rendered["spec"]["template"]["spec"]
    for field in ("volumes", "affinity", "tolerations", "securityContext", "terminationGracePeriodSeconds"):
        assert_subset(rendered_pod[field], live_pod[field], field)
    container = live_pod["containers"][0]
    assert_subset(rendered_pod["containers"][0], container, "container")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert live["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert obj["status"]["desiredReplicas"] == replicas
    assert obj["status"]["endpoint"] == f"http://{name}.{namespace}.svc:8000"


def test_a_schedulable_example_becomes_ready_on_kwok_gpu_nodes(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-70b-h200-tp4.yaml")

    def ready() -> dict[str, Any] | None:
        obj = get_md(plane, namespace, "llama-70b")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = eventually(ready, timeout=90)
    assert obj["status"]["readyReplicas"] == 1 and obj["status"]["gpus"] == 4
    core = client.CoreV1Api(plane.api_client())
    event_seen(core, namespace, "llama-70b", lambda e: e.reason == "Created")
    event_seen(core, namespace, "llama-70b", lambda e: e.reason == "Ready")


@pytest.mark.parametrize(("change", "message"), [
    ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    ({"autoscaling": {"tokensPerSecondPerReplica": -5}},
     "spec.autoscaling.tokensPerSecondPerReplica in body should be greater than 0"),
    ({"engine": {"precision": "fp6"}},
     'spec.engine.precision: Unsupported value: "fp6": supported values: "fp4", "fp8", "bf16", "fp16"'),
    ({"engine": {"precision": "fp4"}},
     "engine.precision fp4 (NVFP4) needs a GPU with FP4 tensor cores: one of B200, GB200, B300, GB300"),
    ({"parallelism": {"tensor": 64}},
     "parallelism.tensor must divide the model's attention heads"),
    ({"parallelism": {"tensor": 4, "expert": 8}}, "parallelism.expert must divide parallelism.tensor"),
    ({"model": {"name": "m", "huggingFace": "a/b"}},
     "exactly one of model.profile (a catalogue name) or model.architecture"),
    ({"model": {"name": "m", "profile": "Llama-9-1T", "huggingFace": "a/b"}},
     'spec.model.profile: Unsupported value: "Llama-9-1T"'),
    ({"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "a/b", "ngc": "c"}},
     "exactly one of model.huggingFace, model.ngc or model.pvc must be set"),
])
def test_invalid_resources_are_rejected_by_the_apiserver_with_clear_messages(
    operator: Operator, namespace: str, change: dict[str, Any], message: str
) -> None:
    manifest = yaml.safe_load((EXAMPLES / "llama-8b-h100.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(change)
    output = operator.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert message in output
    assert "is invalid" in output


def pod_list(plane: ControlPlane, namespace: str, name: str) -> list[Any]:
    core = client.CoreV1Api(plane.api_client())
    return list(core.list_namespaced_pod(namespace, label_selector=f"{templates.INSTANCE_LABEL}={name}").items)


def gpu_capacity(plane: ControlPlane, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    obj = reconciled(plane, namespace, name)
    return obj if obj and condition(obj, "GPUCapacity").get("reason") == reason else None


def test_a_gpu_product_without_nodes_is_applied_and_old_replicas_keep_serving(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-70b-h200-tp4.yaml")
    eventually(lambda: (o := reconciled(plane, namespace, "llama-70b")) and condition(o, "Ready")["status"] == "True",
               timeout=90)

    custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-70b",
                                                 {"spec": {"gpu": {"product": "A100-80GB"}}})

    obj = eventually(lambda: gpu_capacity(plane, namespace, "llama-70b", "NoMatchingGPUNodes"), timeout=60)
    message = condition(obj, "GPUCapacity")["message"]
    assert message.startswith("1 of 1 replicas pending: no node labelled nvidia.com/gpu.product in "
                              "[NVIDIA-A100-SXM4-80GB, NVIDIA-A100-80GB-PCIe] is Ready with 4 allocatable")
    assert condition(obj, "Degraded")["status"] == "False", "missing nodes never block the apply"
    # Applied: the new pod waits for a node; with maxUnavailable 0 the H200 replica keeps serving.
    affinity = live_deployment(plane, namespace, "llama-70b")["spec"]["template"]["spec"]["affinity"]
    assert "NVIDIA-A100-SXM4-80GB" in json.dumps(affinity)
    assert condition(obj, "Ready")["status"] == "True" and obj["status"]["readyReplicas"] == 1
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-70b",
               lambda e: e.reason == "NoMatchingGPUNodes" and e.type == "Warning")

    custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-70b",
                                                 {"spec": {"gpu": {"product": "H200-SXM"}}})
    eventually(lambda: (o := reconciled(plane, namespace, "llama-70b"))
               and condition(o, "GPUCapacity")["status"] == "True", timeout=60)


def test_a_node_pool_at_zero_gets_pending_pods_and_the_condition_clears_when_a_node_arrives(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    pool = {"tokenworks.dev/test-pool": namespace}  # matches no node until this test adds one
    apply_example(plane, namespace, "fixed-replicas.yaml", scheduling={"nodeSelector": pool})

    obj = eventually(lambda: gpu_capacity(plane, namespace, "llama-8b-fixed", "NoMatchingGPUNodes"), timeout=60)
    assert condition(obj, "Degraded")["status"] == "False"
    assert condition(obj, "GPUCapacity")["message"].startswith(
        "2 of 2 replicas pending: no node labelled nvidia.com/gpu.product in [NVIDIA-H100-80GB-HBM3, "
        f"NVIDIA-H100-SXM5-80GB] and tokenworks.dev/test-pool={namespace} is Ready with 1 allocatable nvidia.com/gpu")
    assert live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["replicas"] == 2

    def unschedulable() -> bool:
        pods = pod_list(plane, namespace, "llama-8b-fixed")
        return len(pods) == 2 and all(any(c.type == "PodScheduled" and c.reason == "Unschedulable"
                                          for c in p.status.conditions or []) for p in pods)

    eventually(unschedulable, timeout=60)  # what a cluster autoscaler or Karpenter acts on
    # The scheduler's own words reach the condition once it has judged the pods.
    eventually(lambda: "scheduler: 0/" in condition(get_md(plane, namespace, "llama-8b-fixed"), "GPUCapacity").get(
        "message", ""), timeout=60)

    node = GpuNodeSpec(f"pool-{namespace}"[:63], labels=pool)
    try:
        plane.add_nodes([node])
        eventually(lambda: (pods := pod_list(plane, namespace, "llama-8b-fixed")) and len(pods) == 2
                   and all(p.spec.node_name == node.name for p in pods), timeout=60)
        obj = eventually(lambda: gpu_capacity(plane, namespace, "llama-8b-fixed", "Sufficient"), timeout=60)
        assert condition(obj, "GPUCapacity")["status"] == "True"
        eventually(lambda: condition(get_md(plane, namespace, "llama-8b-fixed"), "Ready").get("status") == "True",
                   timeout=60)
        event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
                   lambda e: e.reason == "GPUCapacityAvailable")
    finally:
        plane.kubectl("delete", "node", node.name, "--wait=false", check=False)


def test_a_fixed_deployment_larger_than_the_cluster_says_the_gpus_are_exhausted(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    # 20 x TP2 = 40 H100 GPUs; the cluster has two 8-GPU H100 nodes.
    apply_example(plane, namespace, "fixed-replicas.yaml", replicas=20, parallelism={"tensor": 2})
    shortfall = re.compile(r"^(\d+) of 20 replicas pending: need (\d+) more nvidia.com/gpu on nodes labelled "
                           r"nvidia.com/gpu.product in \[NVIDIA-H100-80GB-HBM3, NVIDIA-H100-SXM5-80GB\]; "
                           r"2 matching nodes have 0 free")

    def exhausted() -> tuple[dict[str, Any], re.Match[str]] | None:
        obj = gpu_capacity(plane, namespace, "llama-8b-fixed", "GPUCapacityExhausted")
        found = obj and shortfall.match(condition(obj, "GPUCapacity")["message"])
        return (obj, found) if obj and found else None

    obj, found = eventually(exhausted, timeout=90)
    pending, need = int(found.group(1)), int(found.group(2))
    assert pending >= 12 and need == 2 * pending, found.group(0)
    assert condition(obj, "Degraded")["status"] == "False"
    assert condition(obj, "Ready")["reason"] == "GPUCapacityExhausted"
    assert "more nvidia.com/gpu" in condition(obj, "Progressing")["message"]
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
               lambda e: e.reason == "GPUCapacityExhausted" and e.type == "Warning")


def install_pod_monitor_crd(plane: ControlPlane) -> None:
    """The Prometheus Operator's own PodMonitor CRD (vendored): the operator's PodMonitors meet its schema."""
    install_monitoring_crds(plane, ["podmonitors"])


def test_a_deleted_optional_api_skips_its_child_and_its_return_is_noticed_within_a_minute(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    first = eventually(lambda: (o := reconciled(plane, namespace, "llama-8b"))
                       and condition(o, "OptionalAPIs").get("status") == "True" and o, timeout=60)
    assert children(plane, namespace)["PodMonitor"] == ["llama-8b"]
    try:
        plane.kubectl("delete", "crd", "podmonitors.monitoring.coreos.com")
        custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b",
                                                     {"spec": {"engine": {"maxBatchSize": 64}}})

        def reconciled_without_monitoring() -> dict[str, Any] | None:
            obj = reconciled(plane, namespace, "llama-8b")
            return obj if obj and obj["metadata"]["generation"] > first["metadata"]["generation"] \
                and condition(obj, "OptionalAPIs").get("status") == "False" else None

        obj = eventually(reconciled_without_monitoring, timeout=60)
        assert condition(obj, "OptionalAPIs")["message"] == (
            "monitoring.coreos.com/v1 PodMonitor is not served; metrics are not scraped by the Prometheus Operator")
        # The required children still follow the spec, and no reconcile failed on the missing kind.
        config = client.CoreV1Api(plane.api_client()).read_namespaced_config_map("llama-8b-engine", namespace)
        assert json.loads(config.data["engine.json"])["maxBatchSize"] == 64
        assert condition(obj, "Degraded")["status"] == "False"
        # This object's own failures (the global counter also counts other tests' namespaces).
        assert f"reconcile failed object={namespace}/llama-8b " not in operator.process.log_path.read_text()
        event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b",
                   lambda e: e.reason == "APINotServed" and e.type == "Warning")

        install_pod_monitor_crd(plane)
        eventually(lambda: condition(get_md(plane, namespace, "llama-8b"), "OptionalAPIs").get("status") == "True"
                   and children(plane, namespace)["PodMonitor"] == ["llama-8b"], timeout=60)
    finally:
        install_pod_monitor_crd(plane)  # the other tests expect the Prometheus Operator's API


def test_editing_the_spec_updates_children_and_observed_generation(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    first = eventually(lambda: reconciled(plane, namespace, "llama-8b"), timeout=60)
    hash_before = live_deployment(plane, namespace, "llama-8b")["spec"]["template"]["metadata"][
        "annotations"][templates.CONFIG_HASH_ANNOTATION]

    custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b",
                                                 {"spec": {"engine": {"maxBatchSize": 64}}})
    second = eventually(lambda: (o := reconciled(plane, namespace, "llama-8b"))
                        and o["metadata"]["generation"] > first["metadata"]["generation"] and o, timeout=60)
    assert second["status"]["observedGeneration"] == second["metadata"]["generation"]
    config = client.CoreV1Api(plane.api_client()).read_namespaced_config_map("llama-8b-engine", namespace)
    assert json.loads(config.data["engine.json"])["maxBatchSize"] == 64
    hash_after = live_deployment(plane, namespace, "llama-8b")["spec"]["template"]["metadata"][
        "annotations"][templates.CONFIG_HASH_ANNOTATION]
    assert hash_after != hash_before, "a new engine configuration must roll the pods"


def events(plane: ControlPlane, namespace: str, name: str, reason: str) -> list[Any]:
    core = client.CoreV1Api(plane.api_client())
    return [e for e in core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
            if e.reason == reason]


def operator_writes(operator: Operator) -> tuple[float, float, float]:
    """Child applies, status writes and drift-check dry runs so far."""
    process = operator.process
    return (process.metric("tokenworks_child_applies_total"), process.metric("tokenworks_status_writes_total"),
            process.metric("tokenworks_child_dry_runs_total"))


def resync_rounds(operator: Operator, rounds: int) -> None:
    """Wait until the operator has reconciled every ModelDeployment ``rounds`` more times (a resync
    round reconciles each once) and ``rounds`` resync periods have passed: reconciles that watch
    events caused (a namespace of an earlier test going) must not stand in for the resyncs."""
    process = operator.process
    every = len(custom(operator.plane).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
    count = process.metric("tokenworks_reconcile_total")
    until = time.monotonic() + rounds * RESYNC_SECONDS
    eventually(lambda: process.metric("tokenworks_reconcile_total") >= count + rounds * every
               and time.monotonic() >= until, timeout=30 * rounds)


def at_rest(operator: Operator) -> tuple[float, float, float]:
    """The write counters once two resync rounds pass without a write."""
    def settled() -> tuple[float, float, float] | None:
        # Objects of earlier tests may still be finishing (pods turning ready, namespaces going).
        before = operator_writes(operator)
        resync_rounds(operator, 2)
        return before if operator_writes(operator) == before else None

    quiet: tuple[float, float, float] = eventually(settled, timeout=90, interval=0)
    return quiet


def kubectl_edit(plane: ControlPlane, namespace: str, resource: str, editor: Path) -> None:
    """`kubectl edit` with ``editor`` (a Python script given the file) in place of a person."""
    result = subprocess.run(
        [str(plane.bin("kubectl")), f"--kubeconfig={plane.kubeconfig}", "-n", namespace, "edit", resource],
        capture_output=True, text=True, timeout=60, env={**os.environ, "KUBE_EDITOR": f"{sys.executable} {editor}"})
    assert result.returncode == 0, result.stderr


ADD_ENV = """import sys, yaml
path = sys.argv[-1]
obj = yaml.safe_load(open(path))
obj["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append({"name": "EXTRA", "value": "1"})
open(path, "w").write(yaml.safe_dump(obj))
"""


def test_a_replica_count_written_by_another_writer_is_reverted_with_one_warning(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "fixed-replicas.yaml")
    eventually(lambda: reconciled(plane, namespace, "llama-8b-fixed"), timeout=60)
    plane.kubectl("-n", namespace, "scale", "deployment/llama-8b-fixed", "--replicas=5")
    eventually(lambda: live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["replicas"] == 2,
               timeout=30)
    reverted = event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
                          lambda e: e.reason == "ForeignWriteReverted")
    assert reverted.type == "Warning"
    assert "Deployment/llama-8b-fixed: spec.replicas changed by kubectl" in reverted.message

    # An HPA writes the Deployment's /scale as the controller manager: no writer is trusted.
    client.AppsV1Api(plane.api_client()).patch_namespaced_deployment_scale(
        "llama-8b-fixed", namespace, {"spec": {"replicas": 6}}, field_manager="kube-controller-manager")
    eventually(lambda: live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["replicas"] == 2,
               timeout=30)
    hpa = event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
                     lambda e: e.reason == "ForeignWriteReverted" and "kube-controller-manager" in e.message)
    assert "spec.replicas changed by kube-controller-manager (through /scale)" in hpa.message
    at_rest(operator)
    assert len(events(plane, namespace, "llama-8b-fixed", "ForeignWriteReverted")) == 2, "one per write"


def test_fields_another_writer_adds_are_kept_reported_once_and_not_fought_over(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "fixed-replicas.yaml")
    eventually(lambda: reconciled(plane, namespace, "llama-8b-fixed"), timeout=60)

    # `kubectl rollout restart`: the documented way to restart; kept, and nothing to say.
    plane.kubectl("-n", namespace, "rollout", "restart", "deployment/llama-8b-fixed")
    resync_rounds(operator, 2)
    template = live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    assert [e for e in client.CoreV1Api(plane.api_client()).list_namespaced_event(namespace).items
            if e.type == "Warning"] == []

    # `kubectl edit` adding an env var: server-side apply cannot take it back; said once, then quiet.
    editor = tmp_path / "add_env.py"
    editor.write_text(ADD_ENV)
    kubectl_edit(plane, namespace, "deployment/llama-8b-fixed", editor)
    kept = event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
                      lambda e: e.reason == "ForeignFieldsKept")
    assert kept.type == "Warning"
    assert ("Deployment/llama-8b-fixed: kubectl-edit added spec.template.spec.containers[name=triton]"
            ".env[name=EXTRA]") in kept.message
    quiet = at_rest(operator)
    resync_rounds(operator, 3)
    assert operator_writes(operator) == quiet, "no re-apply loop"
    assert len(events(plane, namespace, "llama-8b-fixed", "ForeignFieldsKept")) == 1
    assert events(plane, namespace, "llama-8b-fixed", "ForeignWriteReverted") == []
    live = live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["template"]
    assert {"name": "EXTRA", "value": "1"} in live["spec"]["containers"][0]["env"]
    assert "kubectl.kubernetes.io/restartedAt" in live["metadata"]["annotations"]


def test_a_spec_that_does_not_parse_keeps_the_rest_of_the_status(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "fixed-replicas.yaml")
    before = eventually(lambda: reconciled(plane, namespace, "llama-8b-fixed"), timeout=60)["status"]
    # What an older schema let in: precision without its enum.
    crd = "crd/modeldeployments.tokenworks.dev"
    enum = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/engine/properties/precision/enum"
    plane.kubectl("patch", crd, "--type=json", "-p", json.dumps([{"op": "remove", "path": enum}]))
    try:
        eventually(lambda: custom(plane).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "llama-8b-fixed", {"spec": {"engine": {"precision": "fp6"}}}),
            timeout=30)

        def invalid() -> dict[str, Any] | None:
            obj = reconciled(plane, namespace, "llama-8b-fixed")
            return obj if obj and condition(obj, "Degraded").get("reason") == "InvalidSpec" else None

        status = eventually(invalid, timeout=60)["status"]
        for field in ("endpoint", "selector", "desiredReplicas", "replicaSource"):
            assert status[field] == before[field], field
        assert {c["type"] for c in status["conditions"]} >= {"Ready", "Progressing", "Degraded", "ModelPrepared"}
        event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b-fixed",
                   lambda e: e.reason == "InvalidSpec" and e.type == "Warning")
        custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b-fixed",
                                                     {"spec": {"engine": {"precision": "bf16"}}})
    finally:
        plane.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "modeldeployment.yaml"))


def test_a_drain_cannot_evict_the_only_pod_of_a_one_replica_model(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    eventually(lambda: (o := get_md(plane, namespace, "llama-8b"))
               and condition(o, "Ready").get("status") == "True", timeout=90)
    api = plane.api_client()
    policy, core = client.PolicyV1Api(api), client.CoreV1Api(api)

    def budget_observed() -> bool:
        pdb = policy.read_namespaced_pod_disruption_budget("llama-8b", namespace)
        return bool(pdb.status and pdb.status.observed_generation == pdb.metadata.generation
                    and pdb.status.current_healthy == 1)

    eventually(budget_observed, timeout=60)
    (pod,) = core.list_namespaced_pod(namespace, label_selector=f"{templates.INSTANCE_LABEL}=llama-8b").items
    # What `kubectl drain` asks for: an eviction, refused while the budget allows no disruption.
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(pod.metadata.name, namespace, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=namespace)))
    assert refused.value.status == 429


def test_deleting_the_model_deployment_garbage_collects_its_children(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    eventually(lambda: reconciled(plane, namespace, "llama-8b"), timeout=60)
    plane.kubectl("-n", namespace, "delete", "mdep", "llama-8b")
    empty = {"Deployment": [], "Service": [], "ConfigMap": [], "PodDisruptionBudget": [], "PodMonitor": []}
    eventually(lambda: children(plane, namespace) == empty, timeout=60)


def test_kubectl_scale_works_without_autoscaling_and_is_refused_with_it(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "fixed-replicas.yaml")
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    eventually(lambda: reconciled(plane, namespace, "llama-8b-fixed"), timeout=60)

    plane.kubectl("-n", namespace, "scale", "mdep", "llama-8b-fixed", "--replicas=3")
    eventually(lambda: live_deployment(plane, namespace, "llama-8b-fixed")["spec"]["replicas"] == 3,
               timeout=30)
    obj = eventually(lambda: (o := reconciled(plane, namespace, "llama-8b-fixed"))
                     and o["status"]["desiredReplicas"] == 3 and o, timeout=30)
    assert obj["spec"]["replicas"] == 3

    refused = plane.kubectl("-n", namespace, "scale", "mdep", "llama-8b", "--replicas=3", check=False)
    assert "spec.replicas cannot be changed while spec.autoscaling.enabled is true" in refused
    assert get_md(plane, namespace, "llama-8b")["spec"]["replicas"] == 1


def test_no_writes_at_rest(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-70b-h200-tp4.yaml")
    eventually(lambda: (o := get_md(plane, namespace, "llama-70b"))
               and condition(o, "Ready").get("status") == "True", timeout=90)
    quiet = at_rest(operator)
    resync_rounds(operator, 3)  # resync keeps reconciling (each wait fails its deadline otherwise)
    # No apply, no status write, and no dry run either: nothing changed since each child was verified.
    assert operator_writes(operator) == quiet


def test_tokenworks_get_and_describe(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-70b-h200-tp4.yaml")
    eventually(lambda: (o := get_md(plane, namespace, "llama-70b"))
               and condition(o, "Ready").get("status") == "True", timeout=90)

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "controllers.cli", *args, f"--kubeconfig={plane.kubeconfig}",
             "-n", namespace], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    table = cli("get")
    assert "NAME" in table and "llama-70b" in table and "H200-SXM x4" in table
    (line,) = [ln for ln in table.splitlines() if ln.startswith("llama-70b")]
    assert line.split()[1:3] == ["True", "1/1"]

    described = cli("describe", "llama-70b")
    for text in ("Llama-3.3-70B", "TP4", "Conditions", "AllReplicasReady", "Children",
                 "Deployment", "PodDisruptionBudget", "Events", "Created"):
        assert text in described, text


def test_the_kustomization_renders_the_whole_operator(operator: Operator) -> None:
    rendered = [d for d in yaml.safe_load_all(operator.plane.kubectl("kustomize", str(REPO_ROOT / "operator")))
                if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in rendered)
    assert "CustomResourceDefinition/modeldeployments.tokenworks.dev" in kinds
    assert "Deployment/tokenworks-operator" in kinds
    assert "ClusterRole/tokenworks-operator" in kinds
    # And the API server accepts every object as it is (server-side dry run).
    operator.plane.kubectl("apply", "--dry-run=server", "-k", str(REPO_ROOT / "operator"))


def test_kubectl_explain_shows_field_documentation(operator: Operator) -> None:
    explained = operator.plane.kubectl("explain", "modeldeployment.spec.engine")
    assert "TensorRT-LLM engine settings" in explained
    assert "maxBatchSize" in explained and "kvCacheFreeGpuMemFraction" in explained


def test_an_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: Operator, namespace: str
) -> None:
    plane = operator.plane
    applied = operator.process.metric("tokenworks_child_applies_total")
    for example in ("llama-8b-h100.yaml", "llama-70b-h200-tp4.yaml", "fixed-replicas.yaml"):
        apply_example(plane, namespace, example)
    # Kill it once it has started applying children: mid-reconcile.
    eventually(lambda: operator.process.metric("tokenworks_child_applies_total") > applied, timeout=30,
               interval=0.02)
    operator.restart()  # SIGKILL: the Lease is held by a dead process until it expires
    for name in ("llama-8b", "llama-70b", "llama-8b-fixed"):
        eventually(lambda n=name: reconciled(plane, namespace, n), timeout=60)
    found = children(plane, namespace)
    assert {kind: sorted(names) for kind, names in found.items()} == {
        kind: sorted(names) for kind, names in {
            "Deployment": ["llama-8b", "llama-70b", "llama-8b-fixed"],
            "Service": ["llama-8b", "llama-70b", "llama-8b-fixed"],
            "ConfigMap": ["llama-8b-engine", "llama-70b-engine", "llama-8b-fixed-engine"],
            "PodDisruptionBudget": ["llama-8b", "llama-70b", "llama-8b-fixed"],
            "PodMonitor": ["llama-8b", "llama-70b", "llama-8b-fixed"],
        }.items()}


@pytest.mark.parametrize(("change", "reason", "fragment"), [
    ({"modelCache": {"claimName": "nowhere"}}, "ModelCacheClaimMissing", "names no PersistentVolumeClaim"),
    ({"modelCache": {"claimName": "small-cache"}}, "ModelCacheTooSmall", "holds 10Gi"),
    ({"modelCache": {"sizeLimit": "50Gi"}}, "ModelCacheTooSmall", "below the about 155 GB"),
    ({"engine": {"maxInputLength": 120000, "maxOutputLength": 8000, "kvCacheFreeGpuMemFraction": 0.06}},
     "EngineLimitTooLarge", "needs 41.9 GB of KV cache"),
])
def test_bad_model_inputs_degrade_and_leave_running_pods_alone(
    operator: Operator, namespace: str, change: dict[str, Any], reason: str, fragment: str
) -> None:
    plane = operator.plane
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "small-cache", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}}}))
    apply_example(plane, namespace, "llama-70b-h200-tp4.yaml")
    eventually(lambda: reconciled(plane, namespace, "llama-70b"), timeout=60)
    before = live_deployment(plane, namespace, "llama-70b")
    custom(plane).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-70b", {"spec": change})

    def degraded() -> dict[str, Any] | None:
        obj = reconciled(plane, namespace, "llama-70b")
        return obj if obj and condition(obj, "Degraded").get("reason") == reason else None

    obj = eventually(degraded, timeout=60)
    assert fragment in condition(obj, "Degraded")["message"]
    after = live_deployment(plane, namespace, "llama-70b")
    assert after["spec"]["template"] == before["spec"]["template"], "running pods are left alone"
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-70b",
               lambda e: e.reason == reason and e.type == "Warning")


def test_a_failed_prepare_step_becomes_a_condition_and_an_event(operator: Operator, namespace: str) -> None:
    plane = operator.plane
    apply_example(plane, namespace, "llama-8b-h100.yaml")
    core = client.CoreV1Api(plane.api_client())
    selector = f"{templates.INSTANCE_LABEL}=llama-8b"
    pod = eventually(lambda: next(iter(core.list_namespaced_pod(namespace, label_selector=selector).items), None),
                     timeout=60)
    message = "RevisionNotFound: revision v9 does not exist for meta-llama/Llama-3.1-8B-Instruct\n"
    # What the kubelet reports when the prepare script exits 1 after writing its termination log.
    status = {"status": {"phase": "Pending", "initContainerStatuses": [{
        "name": "prepare", "image": "img", "imageID": "", "ready": False, "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}}],
        "containerStatuses": [{"name": "triton", "image": "img", "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}}

    def failed() -> dict[str, Any] | None:
        # KWOK may write its own status over ours; write it again until the operator has seen it.
        core.patch_namespaced_pod_status(pod.metadata.name, namespace, status)
        obj = get_md(plane, namespace, "llama-8b")
        return obj if condition(obj, "ModelPrepared").get("status") == "False" else None

    obj = eventually(failed, timeout=60, interval=1)
    prepared = condition(obj, "ModelPrepared")
    assert prepared["reason"] == "RevisionNotFound"
    assert prepared["message"] == "revision v9 does not exist for meta-llama/Llama-3.1-8B-Instruct"
    event_seen(core, namespace, "llama-8b", lambda e: e.reason == "RevisionNotFound" and e.type == "Warning")
