"""GPU capacity, pure: pending replicas against matching nodes, the shortfall named, replicas lost with nodes."""

from __future__ import annotations

from typing import Any

import pytest

from controllers.capacity import (
    Finding,
    Placement,
    gpu_findings,
    lost_replicas,
    pending_replicas,
    pod_gpus,
    scheduler_message,
    shortfall,
)
from crds.models import ModelDeployment

H100 = "NVIDIA-H100-80GB-HBM3"
WHERE = "nodes labelled nvidia.com/gpu.product in [NVIDIA-H100-80GB-HBM3, NVIDIA-H100-SXM5-80GB]"
SCHEDULER = ("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient "
             "nvidia.com/gpu.")


def md(tensor: int = 2, **scheduling: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                 "gpu": {"product": "H100-SXM"}, "parallelism": {"tensor": tensor}, "scheduling": scheduling},
    })


def node(name: str, product: str = H100, gpus: int = 8, ready: str = "True", message: str = "",
         taints: list[dict[str, str]] | None = None, cordoned: bool = False,
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": cordoned},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": ready, "message": message}]}}


def pod(name: str, on: str | None = None, gpus: int = 2, phase: str | None = None,
        unschedulable: str | None = None, deleting: bool = False) -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                   "message": unschedulable}] if unschedulable else []
    return {"metadata": {"name": name, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
            "spec": {"nodeName": on, "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase or ("Running" if on else "Pending"), "conditions": conditions}}


def test_no_labelled_node_waits_for_a_node_pool_and_does_not_need_the_pod_list() -> None:
    found = shortfall(Placement.of(md()), 3, [], [node("h200", product="NVIDIA-H200")], bound_pods=None)
    assert found == Finding("NoMatchingGPUNodes", (
        f"3 of 3 replicas pending: no node {WHERE.removeprefix('nodes ')} is Ready with 2 allocatable "
        "nvidia.com/gpu; the pods stay Pending until a node pool provides one"))


@pytest.mark.parametrize(("nodes", "detail"), [
    ([node("a", gpus=0), node("b", gpus=0)], "2 labelled: 2 with fewer than 2 allocatable nvidia.com/gpu"),
    ([node("a", ready="False")], "1 labelled: 1 not Ready"),
    ([node("a", cordoned=True), node("b", taints=[{"key": "pool", "value": "x", "effect": "NoSchedule"}])],
     "2 labelled: 1 cordoned, 1 tainted pool:NoSchedule"),
])
def test_labelled_nodes_that_can_take_no_replica_are_said_why(nodes: list[dict[str, Any]], detail: str) -> None:
    # A device plugin restarting reports 0 allocatable; a pool's new node is not Ready yet.
    found = shortfall(Placement.of(md()), 1, [pod("p", unschedulable=SCHEDULER)], nodes, bound_pods=[])
    assert found is not None and found.reason == "NoMatchingGPUNodes"
    assert f"({detail})" in found.message
    assert found.message.endswith(f"until a node pool provides one; scheduler: {SCHEDULER}")


def test_the_gpu_taint_and_the_specs_tolerations_are_tolerated() -> None:
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    pool = {"key": "pool", "value": "batch", "effect": "NoSchedule"}
    placement = Placement.of(md(tolerations=[{"key": "pool", "operator": "Equal", "value": "batch"}]))
    assert placement.unusable(node("a", taints=[gpu_taint, pool])) is None
    assert placement.unusable(node("a", taints=[{**pool, "value": "other"}])) == "tainted pool:NoSchedule"
    assert placement.unusable(node("a", taints=[{**pool, "effect": "PreferNoSchedule"}])) is None


def test_exhausted_names_the_shortfall_in_gpus() -> None:
    # 20 x TP2 on two 8-GPU nodes: 8 replicas fit, 12 wait for 24 more GPUs.
    nodes = [node("h100-0"), node("h100-1"), node("h200", product="NVIDIA-H200")]
    placed = [pod(f"r{i}", on=f"h100-{i % 2}") for i in range(8)]
    waiting = [pod(f"w{i}", unschedulable=SCHEDULER) for i in range(12)]
    found = shortfall(Placement.of(md()), 20, placed + waiting, nodes, bound_pods=placed)
    assert found == Finding("GPUCapacityExhausted", (
        f"12 of 20 replicas pending: need 24 more nvidia.com/gpu on {WHERE}; 2 matching nodes have 0 free; "
        f"scheduler: {SCHEDULER}"))


def test_free_gpus_count_every_pod_on_the_node_and_replicas_need_theirs_on_one_node() -> None:
    others = [pod("o1", on="a", gpus=7), pod("o2", on="b", gpus=7), pod("done", on="a", gpus=8, phase="Succeeded")]
    found = shortfall(Placement.of(md()), 1, [], [node("a"), node("b")], bound_pods=others)
    assert found is not None
    assert found.message == (f"1 of 1 replicas pending: need 2 more nvidia.com/gpu on {WHERE}; 2 matching nodes "
                             "have 2 free, none with 2 on one node")
    partial = shortfall(Placement.of(md()), 3, [], [node("a")], bound_pods=[pod("o", on="a", gpus=4)])
    assert partial is not None and partial.message.endswith("1 matching node has 4 free, room for 2 replicas")


def test_room_without_a_placement_is_the_schedulers_word() -> None:
    placement, nodes = Placement.of(md()), [node("a")]
    assert shortfall(placement, 1, [pod("p")], nodes, bound_pods=[]) is None, "not scheduled yet is no shortfall"
    cpu = "0/1 nodes are available: 1 Insufficient cpu."
    found = shortfall(placement, 1, [pod("p", unschedulable=cpu)], nodes, bound_pods=[])
    assert found == Finding("Unschedulable", f"1 of 1 replicas pending with 1 matching node ({WHERE[6:]}); "
                                             f"scheduler: {cpu}")
    # Without the cluster's pod list (it failed) only the scheduler's word counts.
    unknown = shortfall(placement, 1, [pod("p", unschedulable=SCHEDULER)], nodes, bound_pods=None)
    assert unknown is not None and unknown.reason == "GPUCapacityExhausted"


def test_the_spec_node_selector_narrows_the_matching_nodes() -> None:
    placement = Placement.of(md(nodeSelector={"pool": "batch"}))
    found = shortfall(placement, 1, [], [node("a")], bound_pods=[])
    assert found is not None and found.reason == "NoMatchingGPUNodes"
    assert "nvidia.com/gpu.product in [NVIDIA-H100-80GB-HBM3, NVIDIA-H100-SXM5-80GB] and pool=batch" in found.message
    assert shortfall(placement, 1, [], [node("a", labels={"pool": "batch"})], bound_pods=[]) is None


@pytest.mark.parametrize(("pods", "replicas", "expected"), [
    ([], 3, 3),  # just applied: the Deployment has not created the pods yet
    ([pod("a", on="n"), pod("b", on="n")], 5, 3),  # scaled up
    ([pod("a", on="n"), pod("b", on="n"), pod("surge")], 2, 1),  # a rollout's surge pod waits for GPUs
    ([pod("a", on="n"), pod("old", deleting=True)], 1, 0),  # a Terminating pod is no replica
    ([pod("a", on="n", phase="Failed"), pod("b", on="n")], 2, 1),
])
def test_pending_replicas(pods: list[dict[str, Any]], replicas: int, expected: int) -> None:
    assert pending_replicas(pods, replicas) == expected


def test_a_pods_gpus_are_its_containers_or_its_largest_init_container() -> None:
    engine_build = {"spec": {"initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}],
                             "containers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}},
                                            {"resources": {}}]}}
    assert pod_gpus(engine_build) == 4
    assert pod_gpus(pod("p", gpus=8)) == 8
    assert pod_gpus({"spec": {"containers": [{}]}}) == 0


def test_scheduler_message_is_the_unschedulable_pods() -> None:
    assert scheduler_message([pod("a", on="n"), pod("b", unschedulable=SCHEDULER)]) == SCHEDULER
    assert scheduler_message([pod("b")]) is None


def test_replicas_on_nodes_gone_or_not_ready_are_lost() -> None:
    nodes = [node("ok"), node("sick", ready="Unknown", message="Kubelet stopped posting node status.")]
    pods = [pod("fine", on="ok"), pod("a", on="sick"), pod("b", on="sick", deleting=True), pod("c", on="gone"),
            pod("finished", on="gone", phase="Succeeded"), pod("waiting")]
    lost = lost_replicas(pods, nodes)
    assert [(r.pod, r.node, r.why) for r in lost] == [
        ("c", "gone", "deleted"),
        ("a", "sick", "NotReady: Kubelet stopped posting node status."),
        ("b", "sick", "NotReady: Kubelet stopped posting node status."),  # Terminating, stuck on the node
    ]


def test_findings_put_the_lost_node_first() -> None:
    pods = [pod("a", on="sick"), pod("b", unschedulable=SCHEDULER)]
    nodes = [node("sick", ready="False", message="network down")]
    findings = gpu_findings(Placement.of(md()), 2, pods, nodes, bound_pods=[])
    assert [f.reason for f in findings] == ["NodeLost", "NoMatchingGPUNodes"]
    assert findings[0].message == ('1 replica lost with its node: pod a on node "sick" (NotReady: network down); '
                                   "the Deployment replaces it once the pod is evicted or deleted")


def test_only_the_schedulers_node_filters_are_kept_not_what_varies_between_attempts() -> None:
    said = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. no new claims to deallocate, preemption: "
            "0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    again = said.replace("No preemption victims found for incoming pod", "Preemption is not helpful for scheduling")
    first = scheduler_message([pod("a", unschedulable=said)])
    assert first == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert scheduler_message([pod("a", unschedulable=again)]) == first, "no status write for the same shortfall"
