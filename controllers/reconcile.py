"""The ModelDeployment reconcile: level-triggered and idempotent.

read the ModelDeployment -> hand the replica count over if autoscaling was just switched off -> check
it can work (memory, engine limits, claims) -> render children (pure) -> server-side apply the ones
whose content differs -> derive status -> write status only when it changed.
A spec that cannot work sets ``Degraded`` and leaves running children exactly as they are. What the
cluster lacks (GPU nodes, free GPUs, an optional API) never blocks the apply: it is a warning condition
(``GPUCapacity``, ``OptionalAPIs``) beside the applied children.

Drift is judged by content, not by who wrote last: a child unchanged since it was last verified
(same intent, same resourceVersion) is skipped; otherwise a server-side apply dry run of the intent is
compared with the live object, and only a difference is applied. Fields another writer took from the
operator are reverted with a ``ForeignWriteReverted`` Event; fields another writer added, which
server-side apply cannot take back, are reported once with ``ForeignFieldsKept``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError

from controllers.capacity import (
    BOUND_PODS_FIELD_SELECTOR,
    LostReplica,
    Placement,
    gpu_findings,
    lost_replicas,
    node_phrase,
    pending_replicas,
)
from controllers.kube import FIELD_MANAGER, KindNotServed, KubeApi, ManifestT
from controllers.telemetry import FleetTelemetry
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods.groups import split_advice, whole_nodes
from inference_pods.performance import ReplicaModel, profiles_for, spec_fit, weights_fit
from inference_pods.repository import PREPARE_REASONS, cache_key
from inference_pods.templates import (
    CACHE_KEY_ANNOTATION,
    CHILD_KINDS,
    GROUP_LABEL,
    INFERENCE_POOL,
    LEADER_WORKER_SET,
    LWS_API_VERSION,
    LWS_INSTALL,
    child_kind,
    digest,
    gpus_per_node,
    gpus_per_pod,
    group_size,
    group_splits,
    needs_multi_node,
    render_children,
    selector_labels,
    wanted,
)

log = logging.getLogger("tokenworks.reconcile")
DRY_RUNS = Counter("tokenworks_child_dry_runs_total",
                   "Server-side apply dry runs of children (drift checks; none at rest).", ["kind"])

APPLIED_HASH_ANNOTATION = "tokenworks.dev/applied-hash"
DEGRADED, GPU_CAPACITY, OPTIONAL_APIS = "Degraded", "GPUCapacity", "OptionalAPIs"
ROUTING_READY = "RoutingReady"
OWN_CONDITIONS = ("Ready", "Progressing", DEGRADED, "ModelPrepared", GPU_CAPACITY, OPTIONAL_APIS, ROUTING_READY)
# How soon a "no" about an optional API is asked again (KubeApi.has_kind), and so how soon its return is seen.
OPTIONAL_API_RECHECK_SECONDS = 20
CAPACITY_RECHECK_SECONDS = 60
PREPARE_CONTAINER = "prepare"
_QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                      "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def quantity_bytes(value: str) -> float:
    """A Kubernetes quantity as bytes: ``200Gi`` -> 214,748,364,800; NaN for what is not one (no size
    check then: the API server validates the claim's own quantities)."""
    try:
        for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
            if value.endswith(suffix):
                return float(value[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
        return float(value)
    except ValueError:
        return math.nan


def cache_bytes_needed(md: ModelDeployment) -> float:
    """What the prepare step writes to the model cache: the weights, and on the engine path the
    converted checkpoint and the engine beside them while it builds (each about the weights' size),
    plus 10% for tokenizer, configs and the repository.

    Llama-3.3-70B BF16: 141 GB of weights -> 155 GB on llmapi, 465 GB on tensorrt-engine. Weights from a
    claim (``model.pvc``) are linked, not copied."""
    model, _ = profiles_for(md.spec.model, md.spec.gpu.product)
    engine_path = md.spec.engine.backend == "tensorrt-engine"
    # The download is in the checkpoint's own precision: an fp8 engine is built from 16-bit weights.
    downloaded = 0.0 if md.spec.model.pvc else \
        model.weight_bytes("bf16" if engine_path else md.spec.engine.precision)
    built = 2 * model.weight_bytes(md.spec.engine.precision) if engine_path else 0.0
    return 1.1 * (downloaded + built)


def multi_node_problems(md: ModelDeployment, lws_served: bool) -> list[Problem]:
    """Why a replica larger than one node cannot be served here (pure): no LeaderWorkerSet API (nothing is
    applied then: no group can exist, and a Deployment would hold pods that can never start), a frontend
    that runs in one process, or GPUs that do not split into pods along the parallelism (``replica_split``)."""
    spec = md.spec
    if not needs_multi_node(spec):
        return []
    per_node, size, gpus = gpus_per_node(spec), group_size(spec), spec.gpus_per_replica
    problems = []
    if not lws_served:
        problems.append(Problem("LeaderWorkerSetAPINotServed", (
            f"each replica needs {gpus} GPUs, more than one {spec.gpu.product} node has ({per_node}), so it runs "
            f"as a LeaderWorkerSet group of {size} pods; {LWS_API_VERSION} {LEADER_WORKER_SET} is not served: "
            f"{LWS_INSTALL}. Nothing is applied until it is")))
    if spec.serving.frontend == "openai":
        # The OpenAI frontend runs Triton in its own process, with TensorRT-LLM in orchestrator mode, which
        # "currently only works for single node deployments" (tensorrtllm_backend:README.md@0b9d7d5a).
        problems.append(Problem("MultiNodeFrontendUnsupported", (
            f"serving.frontend openai runs on one node only, and each replica needs {gpus} GPUs over {size} "
            f"{spec.gpu.product} pods: use serving.frontend triton, or at most {per_node} GPUs per replica")))
    if not group_splits(spec):
        problems.append(Problem("ReplicaDoesNotSplit", (
            f"{gpus} GPUs per replica (tensor {spec.parallelism.tensor} x pipeline {spec.parallelism.pipeline}) do "
            f"not split into pods that keep each tensor-parallel group inside one {spec.gpu.product} node "
            f"({per_node} GPUs) or over whole nodes: use {split_advice(per_node)}, e.g. tensor "
            f"{per_node} x pipeline {-(-gpus // per_node)}")))
    return problems


def fewest_gpus(md: ModelDeployment) -> int | None:
    """The fewest GPUs (a power of two, as tensor x pipeline usually is) the weights fit with room for a KV
    cache; None beyond 1,024. DeepSeek-R1 BF16 (1,342 GB) on H100: 32. Counted as the suggestion reads
    (tensor up to a node, pipeline beyond), which matters with attention DP: only tensor leaves the
    non-expert weights whole on every rank."""
    model, gpu = profiles_for(md.spec.model, md.spec.gpu.product)
    per_node, adp = gpus_per_node(md.spec), md.spec.parallelism.attention_data_parallel
    return next((g for g in (2**i for i in range(11))
                 if weights_fit(model, gpu, md.spec.engine.precision, min(g, per_node), max(1, g // per_node),
                                adp).fits), None)


def engine_limit_problems(md: ModelDeployment) -> list[Problem]:
    """Engine limits the model or the GPUs cannot hold (pure)."""
    spec = md.spec
    engine = spec.engine
    model, _ = profiles_for(spec.model, spec.gpu.product)
    sequence = engine.max_input_length + engine.max_output_length
    problems = []
    if sequence > model.context_length:
        problems.append(Problem("EngineLimitTooLarge", (
            f"engine.maxInputLength + engine.maxOutputLength = {sequence} tokens exceeds {model.name}'s "
            f"context of {model.context_length} tokens")))
    replica = ReplicaModel.for_spec(spec)
    # With attention DP a request's KV lives on one rank (each keeps its own requests'): one rank's share counts.
    if spec_fit(spec).fits \
            and replica.request_kv_capacity_tokens < sequence:
        need = sequence * replica.kv_bytes_per_token / 1e9
        have = replica.request_kv_capacity_tokens * replica.kv_bytes_per_token / 1e9
        holder = (f"each attention-DP rank of the replica's {spec.gpus_per_replica} x {spec.gpu.product} keeps "
                  f"{have:.1f} GB for its own requests" if spec.parallelism.attention_data_parallel else
                  f"the replica's {spec.gpus_per_replica} x {spec.gpu.product} keep {have:.1f} GB for it")
        fix = "lower the limits, add pipeline stages or turn attention DP off" \
            if spec.parallelism.attention_data_parallel else "lower the limits or add GPUs"
        problems.append(Problem("EngineLimitTooLarge", (
            f"one request of maxInputLength + maxOutputLength = {sequence} tokens needs {need:.1f} GB of KV "
            f"cache; {holder} (kvCacheFreeGpuMemFraction {engine.kv_cache_free_gpu_mem_fraction}): {fix}")))
    if not engine.enable_chunked_prefill and engine.max_input_length > engine.max_num_tokens:
        problems.append(Problem("EngineLimitTooLarge", (
            f"prompts of up to maxInputLength {engine.max_input_length} tokens do not fit one step of "
            f"maxNumTokens {engine.max_num_tokens} without enableChunkedPrefill")))
    return problems


def _parse_termination(message: str) -> tuple[str, str]:
    reason, _, text = message.strip().partition(": ")
    if reason in PREPARE_REASONS and text:
        return reason, text
    return "PrepareFailed", message.strip()[-300:] or "the prepare step failed"


def prepared_condition(pods: list[ManifestT], key: str, generation: int) -> dict[str, Any]:
    """``ModelPrepared`` from the pods of the current cache key: False with the prepare step's own
    reason when it failed (or when the kubelet could not start it, as for a missing token Secret), True
    once a pod got past it, Unknown before any pod tried."""
    current = [p for p in pods if ((p.get("metadata") or {}).get("annotations") or {})
               .get(CACHE_KEY_ANNOTATION) == key]
    failure: tuple[str, str] | None = None
    for pod in current:
        status = pod.get("status") or {}
        # The main container only starts once the init container succeeded.
        started = any({"running", "terminated"} & set(c.get("state") or {})
                      for c in status.get("containerStatuses") or [])
        for container in status.get("initContainerStatuses") or []:
            if container.get("name") != PREPARE_CONTAINER:
                continue
            state = container.get("state") or {}
            terminated = state.get("terminated") or {}
            if started or terminated.get("exitCode") == 0:
                return _condition("ModelPrepared", True, "Prepared", f"the model cache holds key {key}", generation)
            failed = terminated or (container.get("lastState") or {}).get("terminated") or {}
            waiting = state.get("waiting") or {}
            if failed.get("exitCode") not in (None, 0):
                failure = _parse_termination(failed.get("message") or "")
            elif waiting.get("reason") == "CreateContainerConfigError":
                text = waiting.get("message") or "the kubelet could not configure the prepare container"
                failure = ("TokenSecretMissing" if "secret" in text.lower() else "CreateContainerConfigError", text)
    if failure:
        return _condition("ModelPrepared", False, failure[0], failure[1], generation)
    return {"type": "ModelPrepared", "status": "Unknown", "reason": "NotPreparedYet",
            "message": "no pod of the current spec has run the prepare step yet", "observedGeneration": generation}
# Status fields the reconciler owns (field manager ``tokenworks``): every status write sends all of them,
# since server-side apply removes the fields a manager stops sending.
RECONCILER_STATUS_FIELDS = ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas",
                            "desiredReplicas", "gpus", "endpoint", "selector", "replicaSource", "conditions")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Problem:
    """A ``Degraded`` problem blocks the apply: the spec cannot work here. Any other ``condition``
    (``GPUCapacity``, ``OptionalAPIs``) is a warning reported there, beside the applied children."""

    reason: str
    message: str
    condition: str = DEGRADED

    @property
    def blocking(self) -> bool:
        return self.condition == DEGRADED


@dataclass
class ReconcileResult:
    applied: list[str] = field(default_factory=list)
    status_written: bool = False
    problems: list[Problem] = field(default_factory=list)  # blocking ones and warnings
    gone: bool = False
    reverted: list[str] = field(default_factory=list)  # what another writer had changed, reverted
    lost: list[LostReplica] = field(default_factory=list)  # replicas on nodes gone or not Ready
    # When the state can change with no watch event (an optional API returning, pending pods getting a
    # node): a caller may re-queue the key after this many seconds.
    requeue_after: float | None = None
    seen: dict[str, ManifestT] = field(default_factory=dict)  # each child as last read or written, by kind


def replica_owner(md: ModelDeployment) -> str:
    """``autoscaler`` while autoscaling is on and not advisory, else ``spec`` (spec.replicas)."""
    scaling = md.spec.autoscaling
    return "autoscaler" if scaling.enabled and not scaling.advisory else "spec"


def current_decision(md: ModelDeployment) -> int | None:
    """The autoscaler's decision if it was made under the current ``metadata.generation``; a decision
    of another generation (one from before autoscaling was switched off and on again, or before the
    last spec edit) is stale: None."""
    autoscaler = md.status.autoscaler if md.status else None
    if autoscaler is None or not isinstance(autoscaler.desired_replicas, int):
        return None
    if autoscaler.generation != md.metadata.get("generation"):
        return None
    return autoscaler.desired_replicas


def desired_replicas(md: ModelDeployment, live: int | None = None) -> int:
    """The one rule for who owns the replica count (docs/operator.md, "Who owns the replica count").

    Autoscaling off or advisory: ``spec.replicas`` (what ``kubectl scale`` sets). Autoscaling on: the
    autoscaler's decision for this generation in ``status.autoscaler.desiredReplicas``; without one
    (none yet, or a stale one) the ``live`` count of the Deployment, and without a Deployment
    ``spec.replicas``; clamped to [minReplicas, maxReplicas].
    """
    spec = md.spec
    scaling = spec.autoscaling
    if replica_owner(md) == "spec":
        return spec.replicas
    decided = current_decision(md)
    target = decided if decided is not None else live if live is not None else spec.replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, target))


def handover_replicas(md: ModelDeployment, live: int | None) -> int | None:
    """The count to write into ``spec.replicas`` when autoscaling was just switched off (or to
    advisory), so capacity is handed over, not cut: the ``live`` count of the Deployment.

    None when there is nothing to hand over: the autoscaler does not own the count now and did not at
    the last reconcile (``status.replicaSource``), or the user set ``spec.replicas`` in the same edit
    (it differs from what it was while the autoscaler owned the count: the user's number wins), or
    the live count already equals ``spec.replicas``.
    """
    source = md.status.replica_source if md.status else None
    if replica_owner(md) != "spec" or source is None or source.owner != "autoscaler":
        return None
    if md.spec.replicas != source.spec_replicas or live is None or live == md.spec.replicas:
        return None
    return live


# --- drift by content -------------------------------------------------------------------------------
FieldPath = tuple[str, ...]  # keys of a managedFields fieldsV1 trie: ("f:spec", "f:replicas")
# What `kubectl rollout restart` adds to the pod template: the documented way to restart, kept silently.
RESTARTED_AT: FieldPath = ("f:spec", "f:template", "f:metadata", "f:annotations",
                           "f:kubectl.kubernetes.io/restartedAt")
# Maintained by the API server, not asked for: no part of the comparison.
_SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")


def owned_fields(fields_v1: dict[str, Any]) -> set[FieldPath]:
    """The fields a fieldsV1 trie names: its leaves, and list elements marked ``.`` (the element
    itself). A ``.`` under a struct or map field only says the map exists, which nobody asked for."""
    paths: set[FieldPath] = set()

    def walk(node: dict[str, Any], path: FieldPath) -> None:
        for key, child in node.items():
            if key == ".":
                if path and not path[-1].startswith("f:"):
                    paths.add(path)
            elif child:
                walk(child, (*path, key))
            else:
                paths.add((*path, key))

    walk(fields_v1, ())
    return paths


def field_owners(obj: ManifestT) -> dict[str, set[FieldPath]]:
    """Fields of the main resource per writer, named ``manager`` or ``manager (through /scale)``;
    status-subresource entries are left out (status is not the operator's to compare)."""
    owners: dict[str, set[FieldPath]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        subresource = entry.get("subresource") or ""
        if subresource == "status":
            continue
        name = str(entry.get("manager", "")) + (f" (through /{subresource})" if subresource else "")
        owners.setdefault(name, set()).update(owned_fields(entry.get("fieldsV1") or {}))
    return owners


def field_name(path: FieldPath) -> str:
    """``spec.template.spec.containers[name=triton].env[name=EXTRA]`` for a fieldsV1 path."""
    text = ""
    for key in path:
        kind, _, rest = key.partition(":")
        if kind == "f":
            text += f"[{rest}]" if "." in rest or "/" in rest else ("." if text else "") + rest
        elif kind == "k":
            element = json.loads(rest)
            text += "[" + ",".join(f"{k}={v}" for k, v in element.items()) + "]"
        elif kind == "v":
            text += f"[={rest}]"
        else:
            text += f"[{rest}]"
    return text


def _outermost(paths: set[FieldPath]) -> list[FieldPath]:
    """The paths no other path of the set contains: an added env var, not also its name and value."""
    return sorted(p for p in paths if not any(p[:i] in paths for i in range(1, len(p))))


def comparable(obj: ManifestT) -> ManifestT:
    """The object less what the server maintains (managedFields, resourceVersion, generation, uid,
    creationTimestamp) and less status: what a dry run is compared on."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "status")}, "metadata": metadata}


_MISSING: Any = object()


def value_at(obj: Any, path: FieldPath) -> Any:
    """The value a fieldsV1 path names in ``obj``; ``_MISSING`` where there is none."""
    node = obj
    for key in path:
        kind, _, rest = key.partition(":")
        if kind == "f" and isinstance(node, dict) and rest in node:
            node = node[rest]
        elif kind == "k" and isinstance(node, list):
            want = json.loads(rest)
            node = next((e for e in node if isinstance(e, dict)
                         and all(e.get(k) == v for k, v in want.items())), _MISSING)
        elif kind == "v" and isinstance(node, list):
            node = json.loads(rest) if json.loads(rest) in node else _MISSING
        elif kind == "i" and isinstance(node, list) and int(rest) < len(node):
            node = node[int(rest)]
        else:
            return _MISSING
        if node is _MISSING:
            return node
    return node


def fields_taken(live: ManifestT, dry: ManifestT, intent_changed: bool) -> dict[str, list[str]]:
    """Fields another writer took from the operator, per writer: those the operator owns once its
    intent is applied (``dry``, the dry run) but not in ``live``, with another value there.

    A field another writer owns in ``live`` is named after it. A field nobody owns was removed; it
    counts only when the intent did not change (``intent_changed`` False), since a field new in the
    intent is missing from ``live`` too."""
    taken = field_owners(dry).get(FIELD_MANAGER, set()) - field_owners(live).get(FIELD_MANAGER, set())
    others = {name: fields for name, fields in field_owners(live).items() if name != FIELD_MANAGER}
    named: dict[str, list[str]] = {}
    for path in _outermost(taken):
        if value_at(live, path) == value_at(dry, path):
            continue  # another owner, the same value: nothing was changed
        writers = [name for name, fields in others.items()
                   if any(path[:i] in fields for i in range(1, len(path) + 1))]
        if not writers and intent_changed:
            continue
        for writer in writers or ["a writer that removed it"]:
            named.setdefault(writer, []).append(field_name(path))
    return named


def fields_kept(applied: ManifestT) -> dict[str, list[str]]:
    """Spec fields other writers added that the operator never set (an env var from ``kubectl
    edit``), per writer: server-side apply cannot remove fields a manager does not own. The
    ``restartedAt`` annotation of ``kubectl rollout restart`` is not listed."""
    mine = field_owners(applied).get(FIELD_MANAGER, set())
    kept: dict[str, list[str]] = {}
    for name, fields in field_owners(applied).items():
        if name == FIELD_MANAGER:
            continue
        extra = {p for p in fields if p[:1] == ("f:spec",) and p != RESTARTED_AT and p not in mine}
        if extra:
            kept[name] = [field_name(p) for p in _outermost(extra)]
    return kept


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message, "observedGeneration": generation}


def _parent_name(parent: dict[str, Any], namespace: str) -> str:
    ref = parent.get("parentRef") or {}
    return f"{ref.get('kind') or 'Gateway'} {ref.get('namespace') or namespace}/{ref.get('name', '?')}"


def routing_condition(md: ModelDeployment, *, pool: ManifestT | None, api_served: bool,
                      blocking: list[Problem], leftover: ManifestT | None = None) -> dict[str, Any] | None:
    """``RoutingReady``, or None where routing was never asked for (no condition: a model without a
    Gateway has nothing to say about one). Pure.

    Requested: False while the InferencePool API is not served (``InferencePoolAPINotServed``, the rest
    is applied) or the spec is Degraded; else True once the pool is applied, unless a parent Gateway
    reports it ``Accepted`` or ``ResolvedRefs`` False (its reason and message are passed on). Not
    requested but a pool of this model is still there (routing switched off): False
    ``RoutingNotRequested`` saying so, since the operator deletes nothing and an HTTPRoute may still
    use it."""
    generation = int(md.metadata.get("generation", 0))
    pool_name = f"InferencePool {md.namespace}/{md.name}"
    spec = md.spec.routing.inference_pool
    if spec is None:
        if leftover is None:
            return None
        return _condition(ROUTING_READY, False, "RoutingNotRequested", (
            f"spec.routing.inferencePool is unset; {pool_name} is left as it was and no longer updated (the "
            "operator deletes nothing, and an HTTPRoute may still send requests to it): delete it with "
            f"`kubectl delete inferencepool {md.name} -n {md.namespace}` once no route refers to it"), generation)
    if not api_served:
        return _condition(ROUTING_READY, False, "InferencePoolAPINotServed", (
            "inference.networking.k8s.io/v1 InferencePool is not served: install the Gateway API Inference "
            "Extension's CRDs; everything else is applied, and the pool is created once the API is there"),
            generation)
    if blocking:
        return _condition(ROUTING_READY, False, blocking[0].reason,
                          f"{pool_name} is not applied: the spec cannot be served (see Degraded)", generation)
    if pool is None:
        return _condition(ROUTING_READY, False, "InferencePoolNotApplied", f"{pool_name} was not applied",
                          generation)
    refused, accepted = [], []
    for parent in (pool.get("status") or {}).get("parents") or []:
        who = _parent_name(parent, md.namespace)
        for cond in parent.get("conditions") or []:
            if cond.get("type") in ("Accepted", "ResolvedRefs") and cond.get("status") == "False":
                refused.append((cond["type"], f"{who} reports {cond['type']}=False ({cond.get('reason', '')}): "
                                f"{cond.get('message', '')}".rstrip(": ")))
            elif cond.get("type") == "Accepted" and cond.get("status") == "True":
                accepted.append(who)
    if refused:
        reason = "ParentNotAccepted" if refused[0][0] == "Accepted" else "ParentRefsNotResolved"
        return _condition(ROUTING_READY, False, reason, f"{pool_name}: " + "; ".join(m for _, m in refused),
                          generation)
    picker = spec.endpoint_picker
    target = (f"pods on port {md.spec.ports.openai}, endpoint picker Service {picker.name}:{picker.port} "
              f"({picker.failure_mode})")
    if accepted:
        return _condition(ROUTING_READY, True, "Accepted", f"{pool_name} ({target}) is accepted by "
                          + ", ".join(accepted), generation)
    return _condition(ROUTING_READY, True, "InferencePoolApplied", (
        f"{pool_name} is applied ({target}); no Gateway has accepted it yet: an HTTPRoute must name it as "
        "a backend"), generation)


def derive_status(md: ModelDeployment, deployment: ManifestT | None, replicas: int,
                  problems: list[Problem], pods: list[ManifestT] | None = None,
                  image_registry: str = "", routing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Status fields the reconciler owns, from the Deployment's status (``routing``: the RoutingReady
    condition, routing_condition's). Pure."""
    generation = int(md.metadata.get("generation", 0))
    observed = (deployment or {}).get("status") or {}
    existing = int(observed.get("replicas") or 0)
    ready = int(observed.get("readyReplicas") or 0)
    updated = int(observed.get("updatedReplicas") or 0)
    deployment_conditions = {c["type"]: c for c in observed.get("conditions") or []}
    stuck = deployment_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    seen = observed.get("observedGeneration")
    if seen is None and (deployment or {}).get("kind") == LEADER_WORKER_SET:
        # A LeaderWorkerSet's status has no observedGeneration (v0.8.0), and its controller writes its
        # conditions without one: its updatedReplicas (groups on the current revision) is the only word on
        # the rollout, so it is taken alone (a status not yet caught up with a new spec reads as done).
        seen = (deployment.get("metadata") or {}).get("generation") if deployment else None
    rolled_out = (
        deployment is not None
        and seen == (deployment.get("metadata") or {}).get("generation")
        and updated == replicas and ready == replicas and existing == replicas
    )
    blocking = [p for p in problems if p.blocking]
    capacity = [p for p in problems if p.condition == GPU_CAPACITY]
    missing = [p for p in problems if p.condition == OPTIONAL_APIS]
    short = "; ".join(p.message for p in capacity)
    if blocking and deployment is None:
        # Nothing was ever applied: say why, not "scaled to zero".
        ready_condition = _condition("Ready", False, blocking[0].reason,
                                     "nothing is deployed: the spec cannot be served (see Degraded)", generation)
    elif replicas == 0:
        ready_condition = _condition("Ready", False, "ScaledToZero", "0 replicas desired", generation)
    elif ready >= replicas:
        ready_condition = _condition("Ready", True, "AllReplicasReady", f"{ready}/{replicas} replicas ready",
                                     generation)
    else:
        ready_condition = _condition(
            "Ready", False, capacity[0].reason if capacity else "ReplicasNotReady",
            f"{ready}/{replicas} replicas ready" + (f" ({GPU_CAPACITY}: {capacity[0].reason})" if capacity else ""),
            generation)
    if blocking:
        progressing = _condition("Progressing", False, blocking[0].reason, (
            f"generation {generation} is not applied (see Degraded)"
            + ("; the running pods are left as they are" if deployment is not None else "")), generation)
    elif stuck:
        progressing = _condition("Progressing", False, "ProgressDeadlineExceeded",
                                 deployment_conditions["Progressing"].get("message", "")
                                 + (f"; {short}" if short else ""), generation)
    elif rolled_out:
        progressing = _condition("Progressing", False, "Complete",
                                 f"{replicas} replicas on the current spec", generation)
    else:
        progressing = _condition("Progressing", True, "RollingOut",
                                 f"{updated}/{replicas} updated, {ready}/{replicas} ready"
                                 + (f"; {short}" if short else ""), generation)
    if blocking:
        degraded = _condition(DEGRADED, True, blocking[0].reason,
                              "; ".join(p.message for p in blocking), generation)
    else:
        degraded = _condition(DEGRADED, False, "AsExpected", "spec can be served", generation)
    if capacity:
        gpu_capacity = _condition(GPU_CAPACITY, False, capacity[0].reason, short, generation)
    else:
        placed = (f"every replica has its {group_size(md.spec)} nodes with {gpus_per_pod(md.spec)} GPUs each"
                  if needs_multi_node(md.spec) and whole_nodes(md.spec) else
                  f"every replica has room for its {group_size(md.spec)} pods of {gpus_per_pod(md.spec)} GPUs each"
                  if needs_multi_node(md.spec) else
                  f"every replica has a node with its {md.spec.gpus_per_replica} GPUs")
        gpu_capacity = _condition(GPU_CAPACITY, True, "Sufficient", placed if replicas else "no replica desired",
                                  generation)
    if missing:
        optional = _condition(OPTIONAL_APIS, False, "APINotServed", "; ".join(p.message for p in missing),
                              generation)
    else:
        optional = _condition(OPTIONAL_APIS, True, "AllServed", "every optional API is served", generation)
    endpoint_port = md.spec.ports.openai if md.spec.serving.frontend == "openai" else md.spec.ports.http
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": existing,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "desiredReplicas": replicas,
        "gpus": existing * md.spec.gpus_per_replica,
        # The OpenAI port where the pods serve it (clients' base URL is it + /v1), else KServe v2 HTTP.
        "endpoint": f"http://{md.name}.{md.namespace}.svc:{endpoint_port}",
        "selector": ",".join(f"{k}={v}" for k, v in selector_labels(md.name).items()),
        "replicaSource": {"owner": replica_owner(md), "specReplicas": md.spec.replicas},
        "conditions": [ready_condition, progressing, degraded,
                       prepared_condition(pods or [], cache_key(md.spec, image_registry), generation),
                       gpu_capacity, optional, *([routing] if routing else [])],
    }
    return status


def degraded_only_status(current: dict[str, Any], problem: Problem, generation: int) -> dict[str, Any]:
    """The reconciler's whole status intent when only ``Degraded`` can be known (the spec does not
    parse): its other fields and conditions carried forward from ``current``. Pure."""
    status = {k: current[k] for k in RECONCILER_STATUS_FIELDS if k in current and k != "conditions"}
    status["observedGeneration"] = generation
    status["conditions"] = [
        *(c for c in current.get("conditions") or [] if c.get("type") in OWN_CONDITIONS
          and c.get("type") != "Degraded"),
        _condition("Degraded", True, problem.reason, problem.message, generation)]
    return status


def merge_transition_times(new: dict[str, Any], old_conditions: list[dict[str, Any]],
                           now: dt.datetime) -> dict[str, Any]:
    """Keep ``lastTransitionTime`` of conditions whose status did not change."""
    previous = {c.get("type"): c for c in old_conditions}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in new["conditions"]:
        before = previous.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        condition["lastTransitionTime"] = before.get("lastTransitionTime", stamp) if same and before \
            else stamp
    return new


def status_changed(new: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether writing ``new`` would change anything but condition timestamps."""

    def essence(condition: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in condition.items() if k != "lastTransitionTime"}

    for key, value in new.items():
        if key == "conditions":
            mine = {c["type"]: essence(c) for c in current.get("conditions") or []
                    if c["type"] in OWN_CONDITIONS}
            if len(mine) != len(value) or any(mine.get(c["type"]) != essence(c) for c in value):
                return True
        elif current.get(key) != value:
            return True
    return False


class Reconciler:
    """Reconciles one ModelDeployment per call; safe to call concurrently for different keys."""

    def __init__(self, kube: KubeApi, clock: Clock = utc_now, node_cache_seconds: float = 30,
                 image_registry: str | None = None, telemetry: FleetTelemetry | None = None) -> None:
        self.kube = kube
        # The operator passes the registered one; elsewhere a private one records what would be exported.
        self.telemetry = telemetry or FleetTelemetry()
        self.clock = clock
        # Prefixed to the pinned images, which name no registry host (docs/design/serving-path.md).
        self.image_registry = os.environ.get("TOKENWORKS_IMAGE_REGISTRY", "") if image_registry is None \
            else image_registry
        self.node_cache_seconds = node_cache_seconds
        self._nodes: tuple[float, list[ManifestT]] | None = None
        # Per ModelDeployment, each child's (intent hash, resourceVersion) when its content was last
        # found equal to the intent: unchanged since, it needs no dry run. Workers share it.
        self._verified: dict[tuple[str, str], dict[tuple[str, str, str], tuple[str, str | None]]] = {}
        self._kept_said: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self._bound_pods: tuple[float, list[ManifestT]] | None = None

    def nodes(self, max_age: float | None = None) -> list[ManifestT]:
        # One node list serves every reconcile for a while: 200 deployments must not mean 200 lists.
        now = time.monotonic()
        limit = self.node_cache_seconds if max_age is None else max_age
        if self._nodes is None or now - self._nodes[0] > limit:
            self._nodes = (now, self.kube.list("v1", "Node"))
            self.telemetry.record_nodes(self._nodes[1])
        return self._nodes[1]

    def bound_pods(self) -> list[ManifestT] | None:
        """Every pod bound to a node, cluster-wide, for the GPUs each node has left; cached like the nodes
        and asked for only while some replica is pending, so a cluster at rest never lists them. None
        when the list fails: the scheduler's own message then says why pods are pending."""
        now = time.monotonic()
        if self._bound_pods is None or now - self._bound_pods[0] > self.node_cache_seconds:
            try:
                self._bound_pods = (now, self.kube.list("v1", "Pod", field_selector=BOUND_PODS_FIELD_SELECTOR))
            except Exception:  # best effort: the numbers sharpen the message, they decide nothing
                log.warning("listing bound pods failed; GPU shortfalls are named from the scheduler only",
                            exc_info=True)
                return None
        return self._bound_pods[1]

    def capacity_problems(self, md: ModelDeployment, replicas: int,
                          pods: list[ManifestT]) -> tuple[list[Problem], list[LostReplica]]:
        """Warnings for ``GPUCapacity``: replicas lost with their nodes, pending replicas without one."""
        nodes = self.nodes()
        known = {n["metadata"]["name"] for n in nodes}
        if any((p.get("spec") or {}).get("nodeName") not in known | {None, ""} for p in pods):
            # A node newer than the cached list (a node pool just scaled up) is not a lost one.
            nodes = self.nodes(max_age=2)
        placement = Placement.of(md)
        bound = self.bound_pods() if pending_replicas(pods, replicas, placement.pods_per_replica) > 0 else []
        findings = gpu_findings(placement, replicas, pods, nodes, bound)
        return [Problem(f.reason, f.message, GPU_CAPACITY) for f in findings], lost_replicas(pods, nodes)

    def optional_problems(self, missing: list[str]) -> list[Problem]:
        problems = []
        for kind in CHILD_KINDS:
            if kind.kind in missing:
                problems.append(Problem("APINotServed", f"{kind.api_version} {kind.kind} is not served; {kind.without}",
                                        OPTIONAL_APIS))
        return problems

    def problems(self, md: ModelDeployment) -> list[Problem]:
        """Why a schema-valid spec cannot work here, whatever the nodes; empty when it can."""
        spec = md.spec
        _, gpu = profiles_for(spec.model, spec.gpu.product)
        problems = []
        if spec.engine.precision == "fp8" and gpu.fp8_tflops is None:
            problems.append(Problem("PrecisionUnsupported",
                                    f"{gpu.name} has no FP8 tensor cores; use bf16 or fp16"))
        elif spec.engine.kv_cache_precision == "fp8" and gpu.fp8_tflops is None:
            problems.append(Problem("PrecisionUnsupported",
                                    f"{gpu.name} has no FP8 support for an FP8 KV cache; set engine.kvCachePrecision "
                                    "auto"))
        fit = spec_fit(spec)
        lws_served = self.kube.has_kind(LWS_API_VERSION, LEADER_WORKER_SET,
                                        recheck_seconds=OPTIONAL_API_RECHECK_SECONDS)
        if not fit.fits:
            fewest, per_node = fewest_gpus(md), gpus_per_node(spec)
            if fewest is not None and fewest > per_node:
                # Fits no single node: say how many nodes, and what serving it over several needs.
                hint = (f"; no single {spec.gpu.product} node ({per_node} GPUs) holds it: at least {fewest} GPUs, "
                        f"{math.ceil(fewest / per_node)} nodes as a LeaderWorkerSet group, e.g. parallelism.tensor "
                        f"{min(fewest, per_node)} x pipeline {max(1, fewest // per_node)}"
                        + ("" if lws_served else f", and {LWS_API_VERSION} {LEADER_WORKER_SET} is not served: "
                           f"{LWS_INSTALL}"))
            else:
                hint = "; raise parallelism.tensor or use fp8"
            problems.append(Problem("ModelDoesNotFit", fit.message + hint))
        problems += multi_node_problems(md, lws_served)
        # No node check here: nodes come and go (a pool scaling from zero, a device plugin restarting),
        # and a Deployment that is never applied has no Pending pod for an autoscaler to act on.
        problems += engine_limit_problems(md)
        problems += self.claim_problems(md)
        return problems

    def claim_problems(self, md: ModelDeployment) -> list[Problem]:
        """The model cache must exist and hold what the prepare step writes; a model-source claim must
        exist. A claim's size is its bound capacity, else its request."""
        spec = md.spec
        need = cache_bytes_needed(md)
        problems = []
        if spec.model_cache.claim_name:
            claim = self.kube.get("v1", "PersistentVolumeClaim", md.namespace, spec.model_cache.claim_name)
            if claim is None:
                problems.append(Problem("ModelCacheClaimMissing", (
                    f"spec.modelCache.claimName {spec.model_cache.claim_name!r} names no PersistentVolumeClaim in "
                    f"namespace {md.namespace}; create it (at least {need / 1e9:.0f} GB) or unset it for an "
                    "emptyDir")))
            else:
                size = ((claim.get("status") or {}).get("capacity") or {}).get("storage") or \
                    (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
                if size and quantity_bytes(str(size)) < need:
                    problems.append(Problem("ModelCacheTooSmall", (
                        f"PersistentVolumeClaim {spec.model_cache.claim_name!r} holds {size}; the prepare step "
                        f"writes about {need / 1e9:.0f} GB for {spec.model.shape_name} ({spec.engine.backend})")))
        elif quantity_bytes(spec.model_cache.size_limit) < need:
            problems.append(Problem("ModelCacheTooSmall", (
                f"spec.modelCache.sizeLimit {spec.model_cache.size_limit} is below the about {need / 1e9:.0f} GB "
                f"the prepare step writes for {spec.model.shape_name} ({spec.engine.backend})")))
        if spec.model.pvc and self.kube.get("v1", "PersistentVolumeClaim", md.namespace,
                                            spec.model.pvc.claim_name) is None:
            problems.append(Problem("ModelSourceClaimMissing", (
                f"spec.model.pvc.claimName {spec.model.pvc.claim_name!r} names no PersistentVolumeClaim in "
                f"namespace {md.namespace}")))
        return problems

    def reconcile(self, namespace: str, name: str) -> ReconcileResult:
        result = ReconcileResult()
        obj = self.kube.get(API_VERSION, KIND, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            result.gone = True
            self._forget(namespace, name)
            self.telemetry.forget(namespace, name)
            return result  # owner references let the garbage collector remove the children
        current_status = obj.get("status") or {}
        try:
            md = ModelDeployment.model_validate(obj)
        except ValidationError as error:
            # The CRD schema should make this unreachable; if an older schema let it in, say so.
            problem = Problem("InvalidSpec", "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()))
            result.problems = [problem]
            self._write_degraded_only(obj, problem, result)
            return result

        # The workload: the Deployment, or for a replica larger than one node the LeaderWorkerSet (read only
        # where it is served; without it nothing is applied, see multi_node_problems).
        workload_kind = child_kind(LEADER_WORKER_SET if needs_multi_node(md.spec) else "Deployment")
        deployment = self.kube.get(workload_kind.api_version, workload_kind.kind, namespace, name) \
            if not workload_kind.optional or self.kube.has_kind(
                workload_kind.api_version, workload_kind.kind, recheck_seconds=OPTIONAL_API_RECHECK_SECONDS) else None
        live = (deployment or {}).get("spec", {}).get("replicas")
        live = live if isinstance(live, int) else None
        if deployment is None:
            # A switch between single-node and multi-node (a spec edit, so any decision is stale): the new
            # kind starts at the count the old one serves, not at spec.replicas, or the autoscaler (which reads
            # the new kind's count once it exists) would hold that and the old one would be retired down to it.
            old_count = ((self._other_workload(md, workload_kind.kind) or {}).get("spec") or {}).get("replicas")
            live = old_count if isinstance(old_count, int) and old_count > 0 else None
        handover = handover_replicas(md, live)
        if handover is not None:
            # Before anything is applied, even while Degraded: no reconcile may cut to a stale count.
            obj, md = self._hand_over(obj, md, handover)
        replicas = desired_replicas(md, live)
        result.problems = self.problems(md)
        # Optional kinds this model has (an opt-in one only when asked for) that the API server lacks.
        # (A kind required when wanted, the LeaderWorkerSet, is a Degraded problem instead: problems().)
        missing = [k.kind for k in CHILD_KINDS if k.optional and not k.required_when_wanted and wanted(k, md.spec)
                   and not self.kube.has_kind(k.api_version, k.kind, recheck_seconds=OPTIONAL_API_RECHECK_SECONDS)]
        if not result.problems:
            for child in render_children(md, replicas, image_registry=self.image_registry):
                if child["kind"] in missing:
                    continue
                if child["kind"] == LEADER_WORKER_SET and deployment is not None and live != replicas:
                    # The group count moves through the scale subresource (same field manager); the apply
                    # below restates the count it now has, so no write of the spec changes it.
                    self.kube.scale(LWS_API_VERSION, LEADER_WORKER_SET, namespace, name, replicas)
                    if live is not None:
                        result.reverted += self._scaled_by_others(deployment, live, replicas)
                try:
                    applied = self._apply_if_changed(obj, child, result)
                except KindNotServed:
                    if not child_kind(child["kind"]).optional:
                        raise
                    # Its CRD went away since discovery said yes: the required children must not wait on it.
                    log.warning("skipped optional child kind=%s object=%s/%s reason=KindNotServed",
                                child["kind"], namespace, name)
                    missing.append(child["kind"])
                    continue
                if applied is not None:
                    result.applied.append(f"{child['kind']}/{child['metadata']['name']}")
                    if child["kind"] == workload_kind.kind:
                        deployment = applied
            self._retire_other_workload(obj, md, workload_kind.kind, deployment, replicas, result)
        else:
            replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)

        for change in result.reverted:
            # A second writer (an HPA on the Deployment, a hand edit): the operator owns these fields.
            self.kube.event(obj, "ForeignWriteReverted", f"reverted {change}: the operator owns these "
                            "fields; change the ModelDeployment instead", "Warning")
        pods = self.kube.list("v1", "Pod", namespace,
                              ",".join(f"{k}={v}" for k, v in selector_labels(name).items()))
        # A multi-node replica's workers carry no INSTANCE_LABEL: capacity counts every pod of the groups.
        group_pods = self.kube.list("v1", "Pod", namespace, f"{GROUP_LABEL}={name}") \
            if needs_multi_node(md.spec) else pods
        capacity, result.lost = self.capacity_problems(md, replicas, group_pods)
        result.problems += capacity + self.optional_problems(missing)
        # An optional API's return is seen by its watch, which re-queues every ModelDeployment: no
        # per-object polling (1,000 models re-reconciled every 20 s was most of a fleet's load).
        if capacity:
            # A node joining changes no child: look again for the message, at the node cache's pace.
            result.requeue_after = max(self.node_cache_seconds, CAPACITY_RECHECK_SECONDS)
        routing = routing_condition(
            md, pool=result.seen.get(INFERENCE_POOL), api_served=INFERENCE_POOL not in missing,
            blocking=[p for p in result.problems if p.blocking], leftover=self.leftover_pool(md, current_status))
        status = derive_status(md, deployment, replicas, result.problems, pods, self.image_registry, routing)
        # The autoscaler's conditions live beside the reconciler's (its own field manager).
        derived = {c["type"] for c in status["conditions"]}
        # Every pod of the groups: a group whose worker waits for a node is a pending replica.
        self.telemetry.record(md, {**status, "conditions": status["conditions"] + [
            c for c in current_status.get("conditions") or [] if c.get("type") not in derived]}, group_pods)
        if status_changed(status, current_status):
            merge_transition_times(status, current_status.get("conditions") or [], self.clock())
            self.kube.patch_status(API_VERSION, KIND, namespace, name, status)
            result.status_written = True
            self._post_events(obj, current_status, status, result)
        elif result.applied:
            self._post_events(obj, current_status, status, result)
        return result

    def leftover_pool(self, md: ModelDeployment, current_status: dict[str, Any]) -> ManifestT | None:
        """This model's InferencePool while routing is switched off, if it is still there. Looked for only
        where the last status had a RoutingReady condition (routing was on, or a pool was left), so a
        model that never routed asks nothing more."""
        if md.spec.routing.inference_pool is not None or not any(
                c.get("type") == ROUTING_READY for c in current_status.get("conditions") or []):
            return None
        kind = child_kind(INFERENCE_POOL)
        if not self.kube.has_kind(kind.api_version, kind.kind, recheck_seconds=OPTIONAL_API_RECHECK_SECONDS):
            return None
        try:
            pool = self.kube.get(kind.api_version, kind.kind, md.namespace, md.name)
        except KindNotServed:
            return None
        owners = ((pool or {}).get("metadata") or {}).get("ownerReferences") or []
        return pool if any(o.get("uid") == md.metadata.get("uid") for o in owners) else None

    @staticmethod
    def _scaled_by_others(workload: ManifestT, live: int, replicas: int) -> list[str]:
        """What a writer other than the operator did to a LeaderWorkerSet's group count (``kubectl scale``,
        an HPA), now reverted; nothing where the count was the operator's own (a new decision)."""
        writers = sorted(name for name, fields in field_owners(workload).items()
                         if not name.startswith(FIELD_MANAGER) and ("f:spec", "f:replicas") in fields)
        if not writers:
            return []
        return [f"{LEADER_WORKER_SET}/{workload['metadata']['name']}: spec.replicas changed by {', '.join(writers)} "
                f"({live}, not {replicas})"]

    def _other_workload(self, md: ModelDeployment, kind: str) -> ManifestT | None:
        """This model's workload of the other kind than ``kind`` (Deployment or LeaderWorkerSet), where it
        exists and this ModelDeployment owns it."""
        other = child_kind("Deployment" if kind == LEADER_WORKER_SET else LEADER_WORKER_SET)
        if other.optional and not self.kube.has_kind(other.api_version, other.kind,
                                                     recheck_seconds=OPTIONAL_API_RECHECK_SECONDS):
            return None
        try:
            old = self.kube.get(other.api_version, other.kind, md.namespace, md.name)
        except KindNotServed:
            return None
        owners = ((old or {}).get("metadata") or {}).get("ownerReferences") or []
        if old is None or not any(o.get("uid") == md.metadata.get("uid") for o in owners):
            return None
        return old

    def _retire_other_workload(self, obj: ManifestT, md: ModelDeployment, kind: str, workload: ManifestT | None,
                               replicas: int, result: ReconcileResult) -> None:
        """After a switch between a single-node and a multi-node replica: the other kind's object of this
        model is scaled to zero once the new workload has every replica ready (make before break: the Service
        selects both meanwhile), and left in place with an Event (the operator deletes nothing)."""
        other = child_kind("Deployment" if kind == LEADER_WORKER_SET else LEADER_WORKER_SET)
        old = self._other_workload(md, kind)
        if old is None:
            return
        if not ((old.get("spec") or {}).get("replicas") or 0):
            return
        ready = int(((workload or {}).get("status") or {}).get("readyReplicas") or 0)
        if ready < replicas:
            return  # the old one keeps serving until the new one can
        self.kube.scale(other.api_version, other.kind, md.namespace, md.name, 0)
        result.applied.append(f"{other.kind}/{md.name} (scaled to 0)")
        self.kube.event(obj, "WorkloadReplaced", (
            f"{kind}/{md.name} has {ready}/{replicas} replicas ready, so {other.kind}/{md.name} is scaled to 0 and "
            f"left in place (the operator deletes nothing): `kubectl delete {other.kind.lower()} {md.name} -n "
            f"{md.namespace}`"))

    def _hand_over(self, obj: ManifestT, md: ModelDeployment, replicas: int) -> tuple[ManifestT, ModelDeployment]:
        """Write the live count into ``spec.replicas`` (field manager ``tokenworks``, this one field):
        from here ``spec.replicas`` is the count, and ``kubectl scale`` changes it as usual."""
        before = md.spec.replicas
        updated = self.kube.apply({"apiVersion": API_VERSION, "kind": KIND,
                                   "metadata": {"name": md.name, "namespace": md.namespace},
                                   "spec": {"replicas": replicas}})
        what = "advisory" if md.spec.autoscaling.enabled else "off"
        self.kube.event(updated, "AutoscalingHandedOver", (
            f"autoscaling {what}; keeping {replicas} replicas: spec.replicas set from {before} to {replicas} "
            "(the count the autoscaler left); set spec.replicas to change it"))
        log.info("handed over the replica count object=%s/%s replicas=%d was=%d", md.namespace, md.name,
                 replicas, before)
        return updated, ModelDeployment.model_validate(updated)

    def _forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._verified.pop((namespace, name), None)
            self._kept_said = {k for k in self._kept_said if k[:2] != (namespace, name)}

    def _apply_if_changed(self, obj: ManifestT, child: ManifestT, result: ReconcileResult) -> ManifestT | None:
        """Apply ``child`` only where the live object's content differs from it (see the module
        docstring); the applied object, or None when nothing was written."""
        metadata = child["metadata"]
        owner = (metadata["namespace"], obj["metadata"]["name"])
        key = (child["apiVersion"], child["kind"], metadata["name"])
        wanted = digest(child)
        metadata.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = wanted
        live = self.kube.get(child["apiVersion"], child["kind"], metadata["namespace"], metadata["name"])
        if live is None:
            applied = self.kube.apply(child)
            self._verify(owner, key, wanted, applied)
            result.seen[child["kind"]] = applied
            return applied
        result.seen[child["kind"]] = live
        with self._lock:
            known = self._verified.get(owner, {}).get(key)
        if known == (wanted, live["metadata"].get("resourceVersion")):
            return None  # verified before, and nobody has written it since
        dry = self.kube.apply(child, dry_run=True)
        DRY_RUNS.labels(child["kind"]).inc()
        self._say_kept(obj, child, dry)
        if comparable(dry) == comparable(live):
            self._verify(owner, key, wanted, live)
            return None
        intent_changed = (live["metadata"].get("annotations") or {}).get(APPLIED_HASH_ANNOTATION) != wanted
        taken = fields_taken(live, dry, intent_changed)
        applied = self.kube.apply(child)
        self._verify(owner, key, wanted, applied)
        result.seen[child["kind"]] = applied
        if taken:
            writers = "; ".join(f"{', '.join(fields)} changed by {writer}" for writer, fields in taken.items())
            log.info("reverted change by another writer kind=%s object=%s/%s fields=%s", child["kind"],
                     metadata["namespace"], metadata["name"], writers)
            result.reverted.append(f"{child['kind']}/{metadata['name']}: {writers}")
        return applied

    def _verify(self, owner: tuple[str, str], key: tuple[str, str, str], wanted: str, obj: ManifestT) -> None:
        with self._lock:
            self._verified.setdefault(owner, {})[key] = (wanted, obj["metadata"].get("resourceVersion"))

    def _say_kept(self, obj: ManifestT, child: ManifestT, applied: ManifestT) -> None:
        """One Warning per child, writer and set of fields per process: fields another writer added
        stay, and only a person can remove them."""
        metadata = child["metadata"]
        for writer, fields in fields_kept(applied).items():
            said = (metadata["namespace"], obj["metadata"]["name"], child["kind"], metadata["name"], writer,
                    *fields)
            with self._lock:
                if said in self._kept_said:
                    continue
                self._kept_said.add(said)
            self.kube.event(obj, "ForeignFieldsKept", (
                f"{child['kind']}/{metadata['name']}: {writer} added {', '.join(fields)}, which the operator "
                "never set; server-side apply cannot remove fields it does not own, so they stay: remove "
                f"them by hand (kubectl edit {child['kind'].lower()} {metadata['name']}) if unwanted"),
                "Warning")

    def _post_events(self, obj: ManifestT, old: dict[str, Any], new: dict[str, Any],
                     result: ReconcileResult) -> None:
        if result.applied:
            created = not old.get("observedGeneration")
            self.kube.event(obj, "Created" if created else "Updated",
                            ("created " if created else "applied ") + ", ".join(result.applied))
        before = {c["type"]: c for c in old.get("conditions") or []}
        # One Warning per lost node: a node the last status already named had its Event.
        named = str(before.get(GPU_CAPACITY, {}).get("message", ""))
        for node in sorted({r.node for r in result.lost}):
            if node_phrase(node) not in named:
                on = [r for r in result.lost if r.node == node]
                pods = f"pod{'s' if len(on) > 1 else ''} {', '.join(r.pod for r in on)}"
                self.kube.event(obj, "NodeLost", f"replica {pods} on {node_phrase(node)} no longer "
                                f"serve{'' if len(on) > 1 else 's'}: the node is {on[0].why}", "Warning")
        for condition in new["conditions"]:
            prior = before.get(condition["type"], {})
            if prior.get("status") == condition["status"] and prior.get("reason") == condition["reason"]:
                continue
            if condition["type"] == GPU_CAPACITY and condition["status"] == "False":
                if condition["reason"] != "NodeLost":  # those have their Event per node, above
                    self.kube.event(obj, condition["reason"], condition["message"], "Warning")
            elif condition["type"] == GPU_CAPACITY and prior.get("status") == "False":
                self.kube.event(obj, "GPUCapacityAvailable", condition["message"])
            elif condition["type"] == OPTIONAL_APIS and condition["status"] == "False" \
                    and prior.get("status") == "True":
                # Only a loss is news: a cluster that never had the API hears it from the condition.
                self.kube.event(obj, condition["reason"], condition["message"], "Warning")
            elif condition["type"] == ROUTING_READY and condition["status"] == "False":
                self.kube.event(obj, condition["reason"], condition["message"], "Warning")
            elif condition["type"] == ROUTING_READY and prior.get("status") == "False":
                self.kube.event(obj, ROUTING_READY, condition["message"])
            elif condition["type"] == "Degraded" and condition["status"] == "True":
                self.kube.event(obj, condition["reason"], condition["message"], "Warning")
            elif condition["type"] == "Degraded" and prior.get("status") == "True":
                self.kube.event(obj, "Recovered", "the spec can be served again")
            elif condition["type"] == "Ready" and condition["status"] == "True":
                self.kube.event(obj, "Ready", condition["message"])
            elif condition["type"] == "Progressing" and condition["reason"] == "ProgressDeadlineExceeded":
                self.kube.event(obj, "ProgressDeadlineExceeded", condition["message"], "Warning")
            elif condition["type"] == "ModelPrepared" and condition["status"] == "False":
                self.kube.event(obj, condition["reason"], "the prepare step failed: " + condition["message"],
                                "Warning")

    def _write_degraded_only(self, obj: ManifestT, problem: Problem, result: ReconcileResult) -> None:
        generation = int(obj["metadata"].get("generation", 0))
        current = obj.get("status") or {}
        status = degraded_only_status(current, problem, generation)
        mine = {c["type"]: c for c in current.get("conditions") or []}
        if mine.get("Degraded", {}).get("message") != problem.message:
            merge_transition_times(status, current.get("conditions") or [], self.clock())
            self.kube.patch_status(API_VERSION, KIND, obj["metadata"]["namespace"],
                                   obj["metadata"]["name"], status)
            result.status_written = True
            self.kube.event(obj, problem.reason, problem.message, "Warning")
