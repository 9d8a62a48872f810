"""How a replica's GPUs split over the pods of a LeaderWorkerSet group (pure).

TensorRT-LLM numbers ranks tensor-parallel first: ``tp_rank = rank % tp_size``, ``pp_rank = rank // tp_size``, and
a rank's device is ``rank % gpus_per_node`` (NVIDIA/TensorRT-LLM:tensorrt_llm/mapping.py@05ebebb2), and mpirun fills
each pod's slots in order. So a pod of ``k x tensor`` GPUs holds ``k`` whole tensor-parallel groups (pipeline
stages), and only pipeline sends cross pods; a pod of any other size puts a tensor-parallel group, whose all-reduces
run at every layer, across two pods, over the network. Where ``tensor`` is larger than a node, each pod is a whole
node and ``tensor`` must be a multiple of it (docs/operator.md, "Multi-node replicas").
"""

from __future__ import annotations

from crds.gpus import GPU_PRODUCTS
from crds.models import ModelDeploymentSpec


def replica_split(tensor: int, pipeline: int, per_node: int) -> tuple[int, int] | None:
    """``(pods, GPUs per pod)`` of a replica of ``tensor x pipeline`` GPUs on nodes of ``per_node``, or None where
    no split keeps each tensor-parallel group inside a node or spread over whole nodes.

    TP4 x PP3 on 8-GPU nodes -> (3, 4): multiples of 4 up to 8 that divide 12 are 4 only. TP8 x PP2 -> (2, 8);
    TP2 x PP4 on 4-GPU trays -> (2, 4); TP16 on 8-GPU nodes -> (2, 8); TP12 on 8-GPU nodes -> None."""
    gpus = tensor * pipeline
    if gpus <= per_node:
        return 1, gpus
    if tensor <= per_node:
        per_pod = max(k * tensor for k in range(1, per_node // tensor + 1) if gpus % (k * tensor) == 0)
        return gpus // per_pod, per_pod
    if tensor % per_node:
        return None
    return gpus // per_node, per_node


def split_advice(per_node: int) -> str:
    """Which tensor values split, for a message."""
    return (f"parallelism.tensor at most {per_node} (each pod then holds whole tensor-parallel groups, pipeline "
            f"stages across pods) or a multiple of {per_node} (each pod a whole node)")


def gpus_per_node(spec: ModelDeploymentSpec) -> int:
    return GPU_PRODUCTS[spec.gpu.product].gpus_per_node


def needs_multi_node(spec: ModelDeploymentSpec) -> bool:
    """A replica with more GPUs than one node of its product has (8 on HGX, 4 on a GB200/GB300 compute
    tray): a LeaderWorkerSet group instead of one pod."""
    return spec.gpus_per_replica > gpus_per_node(spec)


def _split(spec: ModelDeploymentSpec) -> tuple[int, int] | None:
    return replica_split(spec.parallelism.tensor, spec.parallelism.pipeline, gpus_per_node(spec))


def group_splits(spec: ModelDeploymentSpec) -> bool:
    return _split(spec) is not None


def group_size(spec: ModelDeploymentSpec) -> int:
    """Pods per replica: TP16 on H100 (8 per node) -> 2; TP4 x PP3 on H100 -> 3 pods of 4 GPUs; TP8 on GB200
    (4 per tray) -> 2. A replica that does not split (``group_splits``) counts whole nodes; the reconciler
    refuses it as Degraded, so it is never applied."""
    split = _split(spec)
    return split[0] if split else -(-spec.gpus_per_replica // gpus_per_node(spec))


def gpus_per_pod(spec: ModelDeploymentSpec) -> int:
    """Each pod's share of the replica's GPUs (the whole replica on a single node)."""
    split = _split(spec)
    return split[1] if split else spec.gpus_per_replica // group_size(spec)


def whole_nodes(spec: ModelDeploymentSpec) -> bool:
    """Whether each pod of the replica takes a whole node (a pod smaller than a node may share one)."""
    return gpus_per_pod(spec) == gpus_per_node(spec)
