"""The ModelDeployment reconcile: level-triggered and idempotent.

read the ModelDeployment -> check it can work (memory, engine limits, claims) -> render children (pure)
-> server-side apply the ones that differ -> derive status -> write status only when it changed.
A spec that cannot work sets ``Degraded`` and leaves running children exactly as they are. What the
cluster lacks (GPU nodes, free GPUs, an optional API) never blocks the apply: it is a warning condition
(``GPUCapacity``, ``OptionalAPIs``) beside the applied children.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods.performance import ReplicaModel, profiles_for, weights_fit
from inference_pods.repository import PREPARE_REASONS, cache_key
from inference_pods.templates import (
    CACHE_KEY_ANNOTATION,
    CHILD_KINDS,
    child_kind,
    digest,
    render_children,
    selector_labels,
)

log = logging.getLogger("tokenworks.reconcile")

APPLIED_HASH_ANNOTATION = "tokenworks.dev/applied-hash"
DEGRADED, GPU_CAPACITY, OPTIONAL_APIS = "Degraded", "GPUCapacity", "OptionalAPIs"
OWN_CONDITIONS = ("Ready", "Progressing", DEGRADED, "ModelPrepared", GPU_CAPACITY, OPTIONAL_APIS)
# How soon a "no" about an optional API is asked again (KubeApi.has_kind), and so how soon its return is seen.
OPTIONAL_API_RECHECK_SECONDS = 20
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
    model, _ = profiles_for(md.spec.model.profile, md.spec.gpu.product)
    engine_path = md.spec.engine.backend == "tensorrt-engine"
    # The download is in the checkpoint's own precision: an fp8 engine is built from 16-bit weights.
    downloaded = 0.0 if md.spec.model.pvc else \
        model.weight_bytes("bf16" if engine_path else md.spec.engine.precision)
    built = 2 * model.weight_bytes(md.spec.engine.precision) if engine_path else 0.0
    return 1.1 * (downloaded + built)


def engine_limit_problems(md: ModelDeployment) -> list[Problem]:
    """Engine limits the model or the GPUs cannot hold (pure)."""
    spec = md.spec
    engine = spec.engine
    model, _ = profiles_for(spec.model.profile, spec.gpu.product)
    sequence = engine.max_input_length + engine.max_output_length
    problems = []
    if sequence > model.context_length:
        problems.append(Problem("EngineLimitTooLarge", (
            f"engine.maxInputLength + engine.maxOutputLength = {sequence} tokens exceeds {model.name}'s "
            f"context of {model.context_length} tokens")))
    replica = ReplicaModel.for_spec(spec)
    if weights_fit(model, replica.gpu, engine.precision, spec.gpus_per_replica).fits \
            and replica.kv_capacity_tokens < sequence:
        need = sequence * replica.kv_bytes_per_token / 1e9
        have = replica.kv_capacity_tokens * replica.kv_bytes_per_token / 1e9
        problems.append(Problem("EngineLimitTooLarge", (
            f"one request of maxInputLength + maxOutputLength = {sequence} tokens needs {need:.1f} GB of KV "
            f"cache; the replica's {spec.gpus_per_replica} x {spec.gpu.product} keep {have:.1f} GB for it "
            f"(kvCacheFreeGpuMemFraction {engine.kv_cache_free_gpu_mem_fraction}): lower the limits or add "
            "GPUs")))
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
# Writers whose changes to a child's spec are expected (the Deployment controller writes status
# and annotations, not spec) or our own.
TRUSTED_MANAGERS = {FIELD_MANAGER, "kube-controller-manager"}

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
    reverted: list[str] = field(default_factory=list)  # children another writer had changed
    lost: list[LostReplica] = field(default_factory=list)  # replicas on nodes gone or not Ready
    # When the state can change with no watch event (an optional API returning, pending pods getting a
    # node): a caller may re-queue the key after this many seconds.
    requeue_after: float | None = None


def desired_replicas(md: ModelDeployment) -> int:
    """The one rule for who owns the replica count (docs/replicas.md).

    Autoscaling off or advisory: ``spec.replicas`` (what ``kubectl scale`` sets). Autoscaling on:
    the autoscaler's last decision in ``status.autoscaler.desiredReplicas``, and before its first
    decision ``spec.replicas`` clamped to [minReplicas, maxReplicas].
    """
    spec = md.spec
    scaling = spec.autoscaling
    if not scaling.enabled or scaling.advisory:
        return spec.replicas
    status = md.status.model_dump(by_alias=True) if md.status else {}
    decided = (status.get("autoscaler") or {}).get("desiredReplicas")
    target = decided if isinstance(decided, int) else spec.replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, target))


def foreign_spec_writer(live: ManifestT) -> str | None:
    """Name of a field manager other than ours that owns part of the child's spec, if any."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        manager = entry.get("manager", "")
        # `kubectl scale deployment` writes through the scale subresource: that counts too.
        if manager in TRUSTED_MANAGERS or entry.get("subresource") == "status":
            continue
        if "f:spec" in (entry.get("fieldsV1") or {}):
            return str(manager)
    return None


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message, "observedGeneration": generation}


def derive_status(md: ModelDeployment, deployment: ManifestT | None, replicas: int,
                  problems: list[Problem], pods: list[ManifestT] | None = None,
                  image_registry: str = "") -> dict[str, Any]:
    """Status fields the reconciler owns, from the Deployment's status. Pure."""
    generation = int(md.metadata.get("generation", 0))
    observed = (deployment or {}).get("status") or {}
    existing = int(observed.get("replicas") or 0)
    ready = int(observed.get("readyReplicas") or 0)
    updated = int(observed.get("updatedReplicas") or 0)
    deployment_conditions = {c["type"]: c for c in observed.get("conditions") or []}
    stuck = deployment_conditions.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    rolled_out = (
        deployment is not None
        and observed.get("observedGeneration") == (deployment.get("metadata") or {}).get("generation")
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
        gpu_capacity = _condition(GPU_CAPACITY, True, "Sufficient", (
            f"every replica has a node with its {md.spec.gpus_per_replica} GPUs" if replicas else "no replica desired"),
            generation)
    if missing:
        optional = _condition(OPTIONAL_APIS, False, "APINotServed", "; ".join(p.message for p in missing),
                              generation)
    else:
        optional = _condition(OPTIONAL_APIS, True, "AllServed", "every optional API is served", generation)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": existing,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "desiredReplicas": replicas,
        "gpus": existing * md.spec.gpus_per_replica,
        "endpoint": f"http://{md.name}.{md.namespace}.svc:{md.spec.ports.http}",
        "selector": ",".join(f"{k}={v}" for k, v in selector_labels(md.name).items()),
        "conditions": [ready_condition, progressing, degraded,
                       prepared_condition(pods or [], cache_key(md.spec, image_registry), generation),
                       gpu_capacity, optional],
    }
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
                 image_registry: str | None = None) -> None:
        self.kube = kube
        self.clock = clock
        # Prefixed to the pinned images, which name no registry host (docs/design/serving-path.md).
        self.image_registry = os.environ.get("TOKENWORKS_IMAGE_REGISTRY", "") if image_registry is None \
            else image_registry
        self.node_cache_seconds = node_cache_seconds
        self._nodes: tuple[float, list[ManifestT]] | None = None
        self._bound_pods: tuple[float, list[ManifestT]] | None = None

    def nodes(self, max_age: float | None = None) -> list[ManifestT]:
        # One node list serves every reconcile for a while: 200 deployments must not mean 200 lists.
        now = time.monotonic()
        limit = self.node_cache_seconds if max_age is None else max_age
        if self._nodes is None or now - self._nodes[0] > limit:
            self._nodes = (now, self.kube.list("v1", "Node"))
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
        bound = self.bound_pods() if pending_replicas(pods, replicas) > 0 else []
        findings = gpu_findings(Placement.of(md), replicas, pods, nodes, bound)
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
        model, gpu = profiles_for(spec.model.profile, spec.gpu.product)
        problems = []
        if spec.engine.precision == "fp8" and gpu.fp8_tflops is None:
            problems.append(Problem("PrecisionUnsupported",
                                    f"{gpu.product} has no FP8 tensor cores; use bf16 or fp16"))
        fit = weights_fit(model, gpu, spec.engine.precision, spec.gpus_per_replica)
        if not fit.fits:
            problems.append(Problem("ModelDoesNotFit", fit.message + "; raise parallelism.tensor "
                                    "or use fp8"))
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
                        f"writes about {need / 1e9:.0f} GB for {spec.model.profile} ({spec.engine.backend})")))
        elif quantity_bytes(spec.model_cache.size_limit) < need:
            problems.append(Problem("ModelCacheTooSmall", (
                f"spec.modelCache.sizeLimit {spec.model_cache.size_limit} is below the about {need / 1e9:.0f} GB "
                f"the prepare step writes for {spec.model.profile} ({spec.engine.backend})")))
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

        deployment = self.kube.get("apps/v1", "Deployment", namespace, name)
        replicas = desired_replicas(md)
        result.problems = self.problems(md)
        missing = [k.kind for k in CHILD_KINDS if k.optional and not self.kube.has_kind(
            k.api_version, k.kind, recheck_seconds=OPTIONAL_API_RECHECK_SECONDS)]
        if not result.problems:
            for child in render_children(md, replicas, image_registry=self.image_registry):
                if child["kind"] in missing:
                    continue
                try:
                    applied = self._apply_if_changed(child, result)
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
                    if child["kind"] == "Deployment":
                        deployment = applied
        else:
            replicas = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)

        for change in result.reverted:
            # A second writer (an HPA on the Deployment, a hand edit): the operator owns these fields.
            self.kube.event(obj, "ForeignWriteReverted", f"reverted the change to {change}: the operator owns "
                            "this object's spec; scale the ModelDeployment instead", "Warning")
        pods = self.kube.list("v1", "Pod", namespace,
                              ",".join(f"{k}={v}" for k, v in selector_labels(name).items()))
        capacity, result.lost = self.capacity_problems(md, replicas, pods)
        result.problems += capacity + self.optional_problems(missing)
        if missing:
            result.requeue_after = OPTIONAL_API_RECHECK_SECONDS
        elif capacity:
            result.requeue_after = self.node_cache_seconds
        status = derive_status(md, deployment, replicas, result.problems, pods, self.image_registry)
        if status_changed(status, current_status):
            merge_transition_times(status, current_status.get("conditions") or [], self.clock())
            self.kube.patch_status(API_VERSION, KIND, namespace, name, status)
            result.status_written = True
            self._post_events(obj, current_status, status, result)
        elif result.applied:
            self._post_events(obj, current_status, status, result)
        return result

    def _apply_if_changed(self, child: ManifestT, result: ReconcileResult) -> ManifestT | None:
        metadata = child["metadata"]
        wanted = digest(child)
        live = self.kube.get(child["apiVersion"], child["kind"], metadata["namespace"], metadata["name"])
        if live is not None:
            live_hash = (live["metadata"].get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
            foreign = foreign_spec_writer(live)
            if live_hash == wanted and foreign is None:
                return None
            if foreign is not None:
                log.info("reverted change by another writer kind=%s object=%s/%s manager=%s",
                         child["kind"], metadata["namespace"], metadata["name"], foreign)
                result.reverted.append(f"{child['kind']}/{metadata['name']} by {foreign}")
        metadata.setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = wanted
        return self.kube.apply(child)

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
        status = {"observedGeneration": generation, "conditions": [
            _condition("Degraded", True, problem.reason, problem.message, generation)]}
        mine = {c["type"]: c for c in current.get("conditions") or []}
        if mine.get("Degraded", {}).get("message") != problem.message:
            merge_transition_times(status, current.get("conditions") or [], self.clock())
            self.kube.patch_status(API_VERSION, KIND, obj["metadata"]["namespace"],
                                   obj["metadata"]["name"], status)
            result.status_written = True
            self.kube.event(obj, problem.reason, problem.message, "Warning")
