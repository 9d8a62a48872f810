"""Where a ModelDeployment's replicas find their GPUs: pending replicas against the nodes that could hold
them, and replicas lost with their nodes. Pure: the reconciler passes in the (cached) lists.

A shortfall never blocks an apply. The Deployment is applied and its Pending pods are what a cluster
autoscaler or Karpenter adds nodes for; this module only names the shortfall for the ``GPUCapacity``
condition (docs/operator.md, "GPU capacity").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crds.models import ModelDeployment
from inference_pods.groups import gpus_per_pod, group_size, whole_nodes
from inference_pods.performance import profiles_for
from inference_pods.templates import pod_tolerations

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
TERMINAL_PHASES = ("Succeeded", "Failed")
# What the reconciler asks for the GPU requests per node: pods bound to a node that still hold resources.
BOUND_PODS_FIELD_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    reason: str
    message: str


@dataclass(frozen=True)
class LostReplica:
    pod: str
    node: str
    why: str  # "deleted", or "NotReady" with the node's own message


@dataclass(frozen=True)
class Placement:
    """What one replica needs of a node: its GPUs, the product labels, the spec's selector and
    tolerations (the same ones the pod template carries)."""

    gpus: int  # of one pod: the whole replica, or one node's share of a multi-node replica
    products: tuple[str, ...]
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    pods_per_replica: int = 1  # a LeaderWorkerSet group's size: that many pods with ``gpus`` free each
    whole_nodes: bool = True  # each pod of a group takes a whole node; smaller pods (TP4 x PP3: 4 GPUs) may share one

    @classmethod
    def of(cls, md: ModelDeployment) -> Placement:
        _, gpu = profiles_for(md.spec.model, md.spec.gpu.product)
        return cls(gpus_per_pod(md.spec), tuple(gpu.node_labels),
                   dict(md.spec.scheduling.node_selector), tuple(pod_tolerations(md.spec)),
                   group_size(md.spec), whole_nodes(md.spec))

    def where(self) -> str:
        selector = "".join(f" and {k}={v}" for k, v in sorted(self.node_selector.items()))
        return f"labelled {GPU_PRODUCT_LABEL} in [{', '.join(self.products)}]{selector}"

    def labelled(self, node: Manifest) -> bool:
        labels = (node.get("metadata") or {}).get("labels") or {}
        return labels.get(GPU_PRODUCT_LABEL) in self.products and all(
            labels.get(k) == v for k, v in self.node_selector.items())

    def unusable(self, node: Manifest) -> str | None:
        """Why a labelled node can take no replica at all, or None."""
        if ready_condition(node).get("status") != "True":
            return "not Ready"
        if (node.get("spec") or {}).get("unschedulable"):
            return "cordoned"
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(self.tolerations, taint):
                return f"tainted {taint.get('key')}:{taint.get('effect')}"
        if allocatable_gpus(node) < self.gpus:
            return f"with fewer than {self.gpus} allocatable {GPU_RESOURCE}"
        return None


def gpu_count(value: Any) -> int:
    """An extended resource's quantity: a whole number."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def allocatable_gpus(node: Manifest) -> int:
    return gpu_count(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0))


def pod_gpus(pod: Manifest) -> int:
    """A pod's effective GPU request as the scheduler counts it: the larger of its containers' sum and
    its largest init container's (a request defaults to the limit for extended resources)."""
    spec = pod.get("spec") or {}

    def request(container: Manifest) -> int:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(GPU_RESOURCE) or \
            (resources.get("limits") or {}).get(GPU_RESOURCE)
        return gpu_count(value or 0)

    main = sum(request(c) for c in spec.get("containers") or [])
    init = max((request(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def ready_condition(node: Manifest) -> Manifest:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return {}


def tolerates(tolerations: Iterable[Manifest], taint: Manifest) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator", "Equal") == "Exists":
            if not toleration.get("key") or toleration["key"] == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and \
                (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _live(pods: Iterable[Manifest]) -> list[Manifest]:
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in TERMINAL_PHASES]


def _node_of(pod: Manifest) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def pending_replicas(pods: list[Manifest], replicas: int, size: int = 1) -> int:
    """Pods without a node: pods not yet scheduled, and pods the Deployment (or LeaderWorkerSet, ``size``
    pods per replica) has not created yet (right after an apply or a scale-up). Pods on lost nodes count
    as placed: ``lost_replicas``."""
    live = _live(pods)
    unscheduled = sum(1 for p in live if not _node_of(p))
    return max(unscheduled, replicas * size - (len(live) - unscheduled))


def scheduler_message(pods: list[Manifest]) -> str | None:
    """What the scheduler said about an unschedulable pod (PodScheduled=False, Unschedulable): its
    first sentence, the node filters ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."). The
    rest (claims, preemption) varies from one scheduling attempt to the next with nothing changed, and
    would rewrite the status at rest."""
    for pod in _live(pods):
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                    and condition.get("reason") == "Unschedulable":
                text = str(condition.get("message") or "Unschedulable").strip()
                head, dot, _ = text.partition(". ")
                return head + dot.strip() if dot else text
    return None


def lost_replicas(pods: list[Manifest], nodes: list[Manifest]) -> list[LostReplica]:
    """Pods (Terminating ones included: they are stuck on an unreachable node) bound to a node that
    is gone from the node list or not Ready."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    lost = []
    for pod in pods:
        node = _node_of(pod)
        if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        name = str(pod["metadata"]["name"])
        if node not in by_name:
            lost.append(LostReplica(name, node, "deleted"))
            continue
        ready = ready_condition(by_name[node])
        if ready.get("status") != "True":
            detail = ready.get("message") or f"Ready={ready.get('status', 'missing')}"
            lost.append(LostReplica(name, node, f"NotReady: {detail}"))
    return sorted(lost, key=lambda r: (r.node, r.pod))


def node_phrase(node: str) -> str:
    """How a message names a node: quoted, so ``gpu-1`` is never found inside ``gpu-10``."""
    return f'node "{node}"'


def lost_message(lost: list[LostReplica]) -> str:
    pods = ", ".join(f"pod {r.pod} on {node_phrase(r.node)} ({r.why})" for r in lost)
    if len(lost) == 1:
        return f"1 replica lost with its node: {pods}; the Deployment replaces it once the pod is evicted or deleted"
    return (f"{len(lost)} replicas lost with their nodes: {pods}; the Deployment replaces them once the pods are "
            "evicted or deleted")


def free_gpus(nodes: list[Manifest], bound_pods: list[Manifest]) -> dict[str, int]:
    """Allocatable minus what the pods bound to each node request (Terminating pods still hold theirs)."""
    used: Counter[str] = Counter()
    for pod in bound_pods:
        if (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES and _node_of(pod):
            used[_node_of(pod)] += pod_gpus(pod)
    return {n["metadata"]["name"]: max(0, allocatable_gpus(n) - used[n["metadata"]["name"]]) for n in nodes}


def _nodes(count: int) -> str:
    return f"{count} matching node" + ("" if count == 1 else "s")


def shortfall(placement: Placement, replicas: int, pods: list[Manifest], nodes: list[Manifest],
              bound_pods: list[Manifest] | None) -> Finding | None:
    """Why pending replicas have no node, or None when none is pending or the scheduler only has not
    placed them yet. ``bound_pods``: every pod bound to a node, cluster-wide (None: unknown, so only the
    scheduler's word counts)."""
    size = placement.pods_per_replica
    pending = pending_replicas(pods, replicas, size)
    if pending <= 0:
        return None
    # A group is served only with all its pods placed: pods are counted, and named as pods of groups.
    each = "one per node" if placement.whole_nodes else f"{placement.gpus} GPUs each"
    head = f"{pending} of {replicas} replicas pending" if size == 1 else \
        f"{pending} of {replicas * size} pods pending ({replicas} replicas of {size} pods, {each})"
    said = scheduler_message(pods)
    scheduler = f"; scheduler: {said}" if said else ""
    labelled = [n for n in nodes if placement.labelled(n)]
    unusable = Counter(why for n in labelled if (why := placement.unusable(n)) is not None)
    usable = [n for n in labelled if placement.unusable(n) is None]
    if not usable:
        detail = (f" ({len(labelled)} labelled: "
                  + ", ".join(f"{count} {why}" for why, count in sorted(unusable.items())) + ")") if labelled else ""
        return Finding("NoMatchingGPUNodes", (
            f"{head}: no node {placement.where()} is Ready with {placement.gpus} allocatable {GPU_RESOURCE}"
            f"{detail}; the pods stay Pending until a node pool provides one{scheduler}"))
    if bound_pods is not None:
        free = free_gpus(usable, bound_pods)
        room = sum(f // placement.gpus for f in free.values())
        if room < pending:
            total = sum(free.values())
            # Free GPUs split across nodes may hold no replica: a replica's (or pod's) GPUs are on one node.
            unit = "replica" if size == 1 else "pod"
            fits = f", room for {room} {unit}{'' if room == 1 else 's'}" if room else \
                f", none with {placement.gpus} on one node" if total else ""
            return Finding("GPUCapacityExhausted", (
                f"{head}: need {(pending - room) * placement.gpus} more {GPU_RESOURCE} on nodes "
                f"{placement.where()}; {_nodes(len(usable))} {'has' if len(usable) == 1 else 'have'} {total} "
                f"free{fits}{scheduler}"))
    if said:
        reason = "GPUCapacityExhausted" if f"Insufficient {GPU_RESOURCE}" in said else "Unschedulable"
        return Finding(reason, f"{head} with {_nodes(len(usable))} ({placement.where()}){scheduler}")
    return None


def gpu_findings(placement: Placement, replicas: int, pods: list[Manifest], nodes: list[Manifest],
                 bound_pods: list[Manifest] | None) -> list[Finding]:
    """Everything ``GPUCapacity`` reports, the cause first: replicas lost with their nodes, then pending
    replicas without one."""
    findings = []
    lost = lost_replicas(pods, nodes)
    if lost:
        findings.append(Finding("NodeLost", lost_message(lost)))
    short = shortfall(placement, replicas, pods, nodes, bound_pods)
    if short:
        findings.append(short)
    return findings
