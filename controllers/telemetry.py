"""The operator's own series about what it manages: one set per ModelDeployment (replicas by state, GPUs,
conditions, the SLO) and the cluster's GPUs by product. Dashboards and alerts read these beside the pods'
Triton series (docs/monitoring.md).

The reconciler records a snapshot at every reconcile and forgets a ModelDeployment when it is gone, so a
scrape costs no API request and a deleted deployment's series end. Only the leader reconciles, so only the
leader exports them; a standby's scrape has none (sum over pods, never count them twice).

Labels are ``namespace`` and ``name`` of the ModelDeployment, as the autoscaler's series have. The pods'
series name it ``tokenworks_dev_model_deployment`` (the PodMonitor copies the pod label); the recording rules
join the two with ``label_replace``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controllers.capacity import GPU_PRODUCT_LABEL, allocatable_gpus, ready_condition
from crds.models import GPU_PRODUCT_NODE_LABELS, ModelDeployment
from inference_pods.templates import LWS_GROUP_KEY_LABEL

Manifest = dict[str, Any]
REPLICA_STATES = ("desired", "current", "updated", "ready", "loading", "pending")
# Node label value -> the API's product name, so the cluster's GPUs and the deployments' GPUs join.
PRODUCT_OF_LABEL = {label: product for product, labels in GPU_PRODUCT_NODE_LABELS.items() for label in labels}


def bucket_label(milliseconds: float) -> str:
    """``le`` as Triton prints it: integer bounds without a decimal point."""
    return str(int(milliseconds)) if float(milliseconds).is_integer() else repr(float(milliseconds))


@dataclass(frozen=True)
class ModelSnapshot:
    info: dict[str, str]
    replicas: dict[str, int]
    gpus_per_replica: int
    gpu_product: str
    conditions: tuple[tuple[str, str, str], ...]  # (type, status, reason)
    ttft_seconds: float
    itl_seconds: float
    percentile: float
    attainment: float
    ttft_bucket: str  # the first-response bucket bound at the TTFT target, in ms


def _pod_ready(pod: Manifest) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _replica_key(pod: Manifest) -> str:
    """The replica a pod belongs to: its LeaderWorkerSet group (leader and workers share the group key), or
    the pod itself."""
    metadata = pod.get("metadata") or {}
    return str((metadata.get("labels") or {}).get(LWS_GROUP_KEY_LABEL) or metadata.get("name") or "")


def replica_states(status: dict[str, Any], pods: Iterable[Manifest]) -> dict[str, int]:
    """Replicas by state: ``loading`` is scheduled and not ready (weights loading, engine starting),
    ``pending`` has no node yet; pods being deleted or finished count in neither. ``pods`` are every pod of
    the replicas: a LeaderWorkerSet group is one replica, pending while any of its pods has no node (it
    cannot serve without all of them), loading while all are placed and one is not ready."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    replicas: dict[str, list[Manifest]] = {}
    for pod in live:
        replicas.setdefault(_replica_key(pod), []).append(pod)
    pending = [r for r in replicas.values() if any(not (p.get("spec") or {}).get("nodeName") for p in r)]
    loading = [r for r in replicas.values() if r not in pending and not all(_pod_ready(p) for p in r)]
    return {
        "desired": int(status.get("desiredReplicas") or 0),
        "current": int(status.get("replicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "loading": len(loading),
        "pending": len(pending),
    }


def snapshot(md: ModelDeployment, status: dict[str, Any], pods: Iterable[Manifest]) -> ModelSnapshot:
    spec = md.spec
    slo = spec.autoscaling.slo
    return ModelSnapshot(
        info={"model": spec.model.name, "profile": spec.model.shape_name, "gpu_product": spec.gpu.product,
              "backend": spec.engine.backend, "autoscaling": str(spec.autoscaling.enabled).lower()},
        replicas=replica_states(status, pods),
        gpus_per_replica=spec.gpus_per_replica,
        gpu_product=spec.gpu.product,
        conditions=tuple((c["type"], c["status"], c.get("reason", "")) for c in status.get("conditions") or []),
        ttft_seconds=slo.ttft_milliseconds / 1e3,
        itl_seconds=slo.inter_token_latency_milliseconds / 1e3,
        percentile=slo.percentile,
        attainment=slo.attainment,
        # first_response_buckets renders the target itself as a bound.
        ttft_bucket=bucket_label(slo.ttft_milliseconds),
    )


def gpu_capacity(nodes: Iterable[Manifest]) -> dict[str, tuple[int, int]]:
    """(nodes, allocatable GPUs) per product over Ready, schedulable nodes with a GPU product label."""
    node_count: Counter[str] = Counter()
    gpus: Counter[str] = Counter()
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        label = labels.get(GPU_PRODUCT_LABEL)
        if not label:
            continue
        if ready_condition(node).get("status") != "True" or (node.get("spec") or {}).get("unschedulable"):
            continue
        product = PRODUCT_OF_LABEL.get(label, label)
        node_count[product] += 1
        gpus[product] += allocatable_gpus(node)
    return {p: (node_count[p], gpus[p]) for p in node_count}


class FleetTelemetry(Collector):
    """Thread-safe: reconcile workers record, the metrics server's thread collects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ModelSnapshot] = {}
        self._gpus: dict[str, tuple[int, int]] = {}

    def record(self, md: ModelDeployment, status: dict[str, Any], pods: Iterable[Manifest]) -> None:
        snap = snapshot(md, status, pods)
        with self._lock:
            self._models[(md.namespace, md.name)] = snap

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._models.pop((namespace, name), None)

    def record_nodes(self, nodes: Iterable[Manifest]) -> None:
        capacity = gpu_capacity(nodes)
        with self._lock:
            self._gpus = capacity

    def models(self) -> dict[tuple[str, str], ModelSnapshot]:
        with self._lock:
            return dict(self._models)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            models = sorted(self._models.items())
            gpus = sorted(self._gpus.items())
        key = ["namespace", "name"]
        info = GaugeMetricFamily("tokenworks_modeldeployment_info", "1 per ModelDeployment, with what it serves "
                                 "and on which GPU.", labels=[*key, "model", "profile", "gpu_product", "backend",
                                                               "autoscaling"])
        replicas = GaugeMetricFamily("tokenworks_modeldeployment_replicas", "Replicas by state: desired (the "
                                     "operator's target), current (pods that exist), updated, ready, loading "
                                     "(scheduled, not ready), pending (no node).", labels=[*key, "state"])
        gpus_used = GaugeMetricFamily("tokenworks_modeldeployment_gpus", "GPUs held by the deployment's pods "
                                      "(state=requested: every pod that exists; ready: ready pods).",
                                      labels=[*key, "gpu_product", "state"])
        conditions = GaugeMetricFamily("tokenworks_modeldeployment_condition", "1 for each status condition, "
                                       "with its status and reason.", labels=[*key, "type", "status", "reason"])
        slo = GaugeMetricFamily("tokenworks_modeldeployment_slo_target_seconds", "The SLO's latency targets "
                                "(objective ttft or itl) at the SLO's percentile.",
                                labels=[*key, "objective", "percentile"])
        attainment = GaugeMetricFamily("tokenworks_modeldeployment_slo_attainment_target", "The share of "
                                       "requests that should meet the targets (spec.autoscaling.slo.attainment).",
                                       labels=key)
        bucket = GaugeMetricFamily("tokenworks_modeldeployment_ttft_slo_bucket_info", "1, with le the bound of "
                                   "nv_inference_first_response_histogram_ms at the TTFT target (the operator "
                                   "renders the target as a bucket): joined on le, it selects the share of "
                                   "requests within the SLO.", labels=[*key, "le"])
        for (namespace, name), snap in models:
            info.add_metric([namespace, name, snap.info["model"], snap.info["profile"], snap.info["gpu_product"],
                             snap.info["backend"], snap.info["autoscaling"]], 1)
            for state in REPLICA_STATES:
                replicas.add_metric([namespace, name, state], snap.replicas[state])
            gpus_used.add_metric([namespace, name, snap.gpu_product, "requested"],
                                 snap.replicas["current"] * snap.gpus_per_replica)
            gpus_used.add_metric([namespace, name, snap.gpu_product, "ready"],
                                 snap.replicas["ready"] * snap.gpus_per_replica)
            for type_, status, reason in snap.conditions:
                conditions.add_metric([namespace, name, type_, status, reason], 1)
            percentile = f"{snap.percentile:g}"
            slo.add_metric([namespace, name, "ttft", percentile], snap.ttft_seconds)
            slo.add_metric([namespace, name, "itl", percentile], snap.itl_seconds)
            attainment.add_metric([namespace, name], snap.attainment)
            bucket.add_metric([namespace, name, snap.ttft_bucket], 1)
        nodes = GaugeMetricFamily("tokenworks_gpu_nodes", "Ready, schedulable nodes per GPU product.",
                                  labels=["gpu_product"])
        capacity = GaugeMetricFamily("tokenworks_gpu_allocatable", "Allocatable nvidia.com/gpu on those nodes, "
                                     "per GPU product.", labels=["gpu_product"])
        for product, (count, allocatable) in gpus:
            nodes.add_metric([product], count)
            capacity.add_metric([product], allocatable)
        yield from (info, replicas, gpus_used, conditions, slo, attainment, bucket, nodes, capacity)
