"""The operator's own series: per-ModelDeployment replicas, GPUs, conditions and SLO from a reconcile (a
multi-node replica's whole group), the cluster's GPUs by product, and the autoscaler's series ending with the
deployment."""

from __future__ import annotations

import copy
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controllers.autoscaling.loop import AutoscalerLoop
from controllers.metrics import FakeMetricSource, Target
from controllers.reconcile import Reconciler
from controllers.telemetry import FleetTelemetry, gpu_capacity, replica_states
from crds.models import KIND
from inference_pods.repository import first_response_buckets
from inference_pods.templates import GROUP_LABEL, INSTANCE_LABEL, LWS_GROUP_KEY_LABEL
from tests.support.fake_kube import GPU_NODE, FakeKube
from tests.unit.test_autoscaler_status import Clock, load, model, running
from tests.unit.test_multinode import raw
from tests.unit.test_reconcile_requests import model_deployment

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(telemetry: FleetTelemetry) -> Samples:
    registry = CollectorRegistry()
    registry.register(telemetry)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted({"namespace": "ns", "name": "m", **labels}.items())))]


def pod(name: str, node: str | None, ready: bool, deleting: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {INSTANCE_LABEL: "m"},
                         **({"deletionTimestamp": "2026-12-01T00:00:00Z"} if deleting else {})},
            "spec": {"nodeName": node} if node else {},
            "status": {"phase": "Running" if node else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_reconcile_exports_replicas_gpus_conditions_and_the_slo() -> None:
    spec = model_deployment(replicas=3, autoscaling={"slo": {"ttftMilliseconds": 1500, "percentile": 0.9}})
    spec["spec"]["parallelism"] = {"tensor": 2}
    spec["spec"]["engine"] = {"backend": "tensorrt-engine"}
    kube = FakeKube(spec, copy.deepcopy(GPU_NODE))
    telemetry = FleetTelemetry()
    Reconciler(kube, image_registry="", telemetry=telemetry).reconcile("ns", "m")
    found = samples(telemetry)
    assert value(found, "tokenworks_modeldeployment_replicas", state="desired") == 3
    assert value(found, "tokenworks_modeldeployment_replicas", state="ready") == 0
    assert value(found, "tokenworks_modeldeployment_gpus", gpu_product="H100-SXM", state="requested") == 0

    # The Deployment reports 3 pods, 2 ready: TP2 holds 6 GPUs, 4 of them in ready pods.
    deployment = kube.objects[("Deployment", "ns", "m")]
    deployment["status"] = {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3}
    kube.store(deployment)
    Reconciler(kube, image_registry="", telemetry=telemetry).reconcile("ns", "m")
    found = samples(telemetry)
    assert value(found, "tokenworks_modeldeployment_gpus", gpu_product="H100-SXM", state="requested") == 6
    assert value(found, "tokenworks_modeldeployment_gpus", gpu_product="H100-SXM", state="ready") == 4
    assert value(found, "tokenworks_modeldeployment_replicas", state="ready") == 2
    assert value(found, "tokenworks_modeldeployment_condition", type="Ready", status="False",
                 reason="ReplicasNotReady") == 1
    assert value(found, "tokenworks_modeldeployment_slo_target_seconds", objective="ttft", percentile="0.9") == 1.5
    assert value(found, "tokenworks_modeldeployment_slo_target_seconds", objective="itl", percentile="0.9") == 0.1
    assert value(found, "tokenworks_modeldeployment_info", model="m", profile="Llama-3.1-8B",
                 gpu_product="H100-SXM", backend="tensorrt-engine", autoscaling="false") == 1
    # The bucket the alert joins on is one the pod's histogram really has.
    assert value(found, "tokenworks_modeldeployment_ttft_slo_bucket_info", le="1500") == 1
    assert 1500.0 in first_response_buckets(1500)
    assert found[("tokenworks_gpu_allocatable", (("gpu_product", "H100-SXM"),))] == 8

    # Gone: its series end with it.
    del kube.objects[(KIND, "ns", "m")]
    Reconciler(kube, image_registry="", telemetry=telemetry).reconcile("ns", "m")
    assert not [k for k in samples(telemetry) if ("name", "m") in k[1]]



def test_a_multi_node_replica_counts_every_gpu_and_every_pod_of_its_group() -> None:
    # Llama-3.1-405B FP8 TP16 on H100: 2 groups of a leader and a worker, 8 GPUs each: 16 GPUs per replica.
    kube = FakeKube(raw(), copy.deepcopy(GPU_NODE), served=("LeaderWorkerSet",))
    telemetry = FleetTelemetry()
    reconciler = Reconciler(kube, image_registry="", telemetry=telemetry)
    reconciler.reconcile("ns", "m")
    lws = kube.objects[("LeaderWorkerSet", "ns", "m")]
    lws["status"] = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}
    kube.store(lws)

    def group_pod(name: str, group: str, leader: bool, node: str | None, ready: bool) -> dict[str, Any]:
        body = pod(name, node, ready)
        labels = {GROUP_LABEL: "m", LWS_GROUP_KEY_LABEL: group, **({INSTANCE_LABEL: "m"} if leader else {})}
        body["metadata"] = {"name": name, "namespace": "ns", "labels": labels}
        return body

    # Group 0 serves; group 1's leader is placed and loading, its worker waits for a node.
    for body in (group_pod("m-0", "g0", True, "gpu-1", True), group_pod("m-0-1", "g0", False, "gpu-2", True),
                 group_pod("m-1", "g1", True, "gpu-3", False), group_pod("m-1-1", "g1", False, None, False)):
        kube.store({"apiVersion": "v1", "kind": "Pod", **body})
    reconciler.reconcile("ns", "m")
    found = samples(telemetry)
    assert value(found, "tokenworks_modeldeployment_gpus", gpu_product="H100-SXM", state="requested") == 32
    assert value(found, "tokenworks_modeldeployment_gpus", gpu_product="H100-SXM", state="ready") == 16
    # The half-placed group is one pending replica (it cannot serve without its worker), not a loading one.
    assert value(found, "tokenworks_modeldeployment_replicas", state="pending") == 1
    assert value(found, "tokenworks_modeldeployment_replicas", state="loading") == 0


def test_replicas_by_state_from_the_pods() -> None:
    status = {"desiredReplicas": 4, "replicas": 4, "readyReplicas": 1, "updatedReplicas": 4}
    pods = [pod("a", "n1", ready=True), pod("b", "n1", ready=False), pod("c", None, ready=False),
            pod("d", "n2", ready=False, deleting=True)]
    assert replica_states(status, pods) == {"desired": 4, "current": 4, "updated": 4, "ready": 1,
                                            "loading": 1, "pending": 1}


def test_gpu_capacity_counts_ready_schedulable_nodes_by_product() -> None:
    h100 = copy.deepcopy(GPU_NODE)
    cordoned = copy.deepcopy(GPU_NODE)
    cordoned["spec"] = {"unschedulable": True}
    not_ready = copy.deepcopy(GPU_NODE)
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    h200 = copy.deepcopy(GPU_NODE)
    h200["metadata"]["labels"] = {"nvidia.com/gpu.product": "NVIDIA-H200"}
    unknown = copy.deepcopy(GPU_NODE)
    unknown["metadata"]["labels"] = {"nvidia.com/gpu.product": "Some-Other-GPU"}
    cpu = {"metadata": {"name": "cpu"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert gpu_capacity([h100, h100, cordoned, not_ready, h200, unknown, cpu]) == {
        "H100-SXM": (2, 16), "H200-SXM": (1, 8), "Some-Other-GPU": (1, 8)}


def test_the_autoscaler_stops_exporting_a_deployment_it_no_longer_scales() -> None:
    from prometheus_client import REGISTRY

    namespace = "telemetry-test"  # the registry is the process's: no other test's series in this one

    def exported() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
            for s in family.samples:
                if s.name.startswith("tokenworks_autoscaler") and s.labels.get("namespace") == namespace:
                    found.setdefault(s.name, set()).add(s.labels.get("direction", ""))
        return found

    obj = model()
    obj["metadata"]["namespace"] = namespace
    kube, source, clock = FakeKube(obj), FakeMetricSource(), Clock()
    running(kube, 1)
    for key in [k for k in kube.objects if k[0] != KIND]:
        moved = kube.objects.pop(key)
        moved["metadata"]["namespace"] = namespace
        kube.store(moved)
    loop = AutoscalerLoop(kube, source, clock=clock, namespaces=[namespace])
    load(source, 3500)
    source.values = {Target(namespace, "m", 0.95): v for v in source.values.values()}
    assert loop.tick()[(namespace, "m")].replicas == 4
    series = exported()
    assert {"tokenworks_autoscaler_desired_replicas", "tokenworks_autoscaler_signal_ok",
            "tokenworks_autoscaler_latency_infeasible"} <= set(series)
    assert series["tokenworks_autoscaler_decisions_total"] == {"up"}
    del kube.objects[(KIND, namespace, "m")]
    clock.now += 15
    assert loop.tick() == {}
    assert exported() == {}
