"""Children of a ModelDeployment, rendered purely from its spec (no I/O).

A ModelDeployment ``m`` owns: Deployment ``m`` (Triton + TensorRT-LLM pods), Service ``m``,
PodDisruptionBudget ``m``, ConfigMap ``m-engine`` (engine.json, the prepare script and the model
repository's files), where the Prometheus Operator is installed PodMonitor ``m`` and, with
``spec.routing.inferencePool`` where the Gateway API Inference Extension is installed, InferencePool ``m``.

A pod: init container ``prepare`` (same image) fills the model cache under a key of everything that
changes what it holds; container ``triton`` runs ``tritonserver`` as NVIDIA's launcher does, or Triton's
OpenAI frontend with ``spec.serving.frontend: openai`` (``inference_pods.repository.launch_command``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from crds.models import API_VERSION, KIND, ModelDeployment, ModelDeploymentSpec
from inference_pods.performance import engine_load_seconds, profiles_for
from inference_pods.repository import (
    CONFIG_PATH,
    MODEL_CACHE_PATH,
    CachePaths,
    cache_key,
    config_key,
    launch_command,
    launch_env,
    model_repository,
    openai_frontend,
    prepare_script,
    resolved_image,
    served_models,
    token_env_name,
)

MANAGED_BY = "tokenworks"
INSTANCE_LABEL = "tokenworks.dev/model-deployment"
CONFIG_HASH_ANNOTATION = "tokenworks.dev/engine-config-hash"
CACHE_KEY_ANNOTATION = "tokenworks.dev/model-cache-key"
ENGINE_CONFIG_PATH = CONFIG_PATH
# Seconds between a pod leaving the Service endpoints and Triton being told to stop: kube-proxy and
# gateways need a few seconds to stop routing to it.
PRESTOP_SLEEP_SECONDS = 10
# Seconds Triton waits for in-flight requests after SIGTERM (`--exit-timeout-secs`): a 4k-token
# answer at 25 ms per token takes 100 s.
DRAIN_SECONDS = 120
NON_ROOT_UID = 1000  # `triton-server` user of the NGC Triton images


@dataclass(frozen=True)
class ChildKind:
    """One kind of child: how it is addressed, and whether the operator works without it."""

    api_version: str
    kind: str
    plural: str
    name_suffix: str = ""  # ModelDeployment ``m``'s child of this kind is named ``m`` + suffix
    optional: bool = False  # skipped, with a condition, where the API server does not serve it
    without: str = ""  # what is lost where an optional kind is not served
    opt_in: bool = False  # rendered only for a spec that asks for it (wanted)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# The one table of child kinds (apply order): watches, RBAC and views follow it.
CHILD_KINDS = (
    ChildKind("v1", "ConfigMap", "configmaps", "-engine"),
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("v1", "Service", "services"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", optional=True,
              without="metrics are not scraped by the Prometheus Operator"),
    ChildKind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools", optional=True, opt_in=True,
              without="no Gateway can route to the model through an InferencePool (install the Gateway API "
              "Inference Extension's CRDs)"),
)
INFERENCE_POOL = "InferencePool"


def child_kind(kind: str) -> ChildKind:
    return next(k for k in CHILD_KINDS if k.kind == kind)


def wanted(kind: ChildKind, spec: ModelDeploymentSpec) -> bool:
    """Whether ``spec`` has a child of this kind (served or not): every kind but an opt-in one the spec
    does not ask for."""
    if not kind.opt_in:
        return True
    return kind.kind == INFERENCE_POOL and spec.routing.inference_pool is not None


def selector_labels(name: str) -> dict[str, str]:
    return {INSTANCE_LABEL: name}


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton-trtllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(name),
    }


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(md: ModelDeployment, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": md.namespace,
        "labels": labels(md.name),
        "ownerReferences": [owner_reference(md)],
    }


def engine_config(spec: ModelDeploymentSpec, registry: str = "") -> dict[str, Any]:
    """What the replica is prepared and run with, as the pod reads it from the ConfigMap (and the
    emulator twin reads it from the same path)."""
    source = (
        {"huggingFace": spec.model.hugging_face} if spec.model.hugging_face
        else {"ngc": spec.model.ngc} if spec.model.ngc
        else {"pvc": spec.model.pvc.model_dump(by_alias=True) if spec.model.pvc else None}
    )
    paths = CachePaths.of(spec, registry)
    return {
        "model": {"name": spec.model.name, "profile": spec.model.shape_name,
                  "architecture": spec.model.shape.model_dump(by_alias=True, exclude_none=True),
                  "revision": spec.model.revision, **source},
        "backend": spec.engine.backend,
        "image": resolved_image(spec, registry),
        "gpu": spec.gpu.product,
        "precision": spec.engine.precision,
        "kvCachePrecision": spec.engine.kv_cache_precision,
        "tensorParallelSize": spec.parallelism.tensor,
        "pipelineParallelSize": spec.parallelism.pipeline,
        "expertParallelSize": spec.parallelism.expert,
        "attentionDataParallel": spec.parallelism.attention_data_parallel,
        "maxBatchSize": spec.engine.max_batch_size,
        "maxNumTokens": spec.engine.max_num_tokens,
        "maxInputLength": spec.engine.max_input_length,
        "maxOutputLength": spec.engine.max_output_length,
        "kvCacheFreeGpuMemFraction": spec.engine.kv_cache_free_gpu_mem_fraction,
        "enableChunkedPrefill": spec.engine.enable_chunked_prefill,
        "cacheKey": cache_key(spec, registry),
        "repository": paths.repository,
        "servedModels": served_models(spec),
    }


def config_map(md: ModelDeployment, registry: str = "") -> dict[str, Any]:
    """engine.json, the prepare script and every rendered model-repository file (keys allow no '/';
    the pod's volume maps each key back to its path)."""
    repository = model_repository(md.spec, registry)
    data = {
        "engine.json": json.dumps(engine_config(md.spec, registry), indent=2, sort_keys=True),
        "prepare.sh": prepare_script(md.spec, registry),
        **{config_key(path): text for path, text in repository.items()},
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(md, f"{md.name}-engine"),
        "data": data,
    }


def config_items(md: ModelDeployment) -> list[dict[str, Any]]:
    paths = [*model_repository(md.spec)]
    return [{"key": "engine.json", "path": "engine.json"},
            {"key": "prepare.sh", "path": "prepare.sh", "mode": 0o755},
            *({"key": config_key(p), "path": f"repository/{p}"} for p in paths)]


def metrics_port_name(spec: ModelDeploymentSpec) -> str:
    """The port Prometheus scrapes: the OpenAI frontend starts no metrics listener and serves Triton's
    metrics text at ``/metrics`` on its own port (main.py starts only KServeHttp and KServeGrpc;
    observability.py returns ``server.metrics()``: facts 4)."""
    return "openai" if openai_frontend(spec) else "metrics"


def metrics_port(spec: ModelDeploymentSpec) -> int:
    return spec.ports.openai if openai_frontend(spec) else spec.ports.metrics


def container_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    ports = spec.ports
    last = ("openai", ports.openai) if openai_frontend(spec) else ("metrics", ports.metrics)
    return [{"name": name, "containerPort": number, "protocol": "TCP"}
            for name, number in (("http", ports.http), ("grpc", ports.grpc), last)]


def startup_probe_failure_threshold(spec: ModelDeploymentSpec, period_seconds: int) -> int:
    """Enough probes to cover twice the estimated engine load time, plus one minute. The download and
    the engine build happen before, in the init container, which no probe times.

    Llama-3.3-70B BF16 on TP4 loads in about 68.5 s: (2 x 68.5 + 60) / 10 s -> 20 probes.
    """
    model, _ = profiles_for(spec.model, spec.gpu.product)
    load = engine_load_seconds(model, spec.engine.precision, spec.gpus_per_replica)
    return max(6, math.ceil((2 * load + 60) / period_seconds))


def _token_env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    ref, name = spec.model.token_secret, token_env_name(spec)
    if ref is None or name is None:
        return []
    key = ref.key or name
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}}]


def pod_tolerations(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The usual ``nvidia.com/gpu:NoSchedule`` taint of GPU nodes, and the spec's own."""
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            *spec.scheduling.tolerations]


def pod_template(md: ModelDeployment, config_hash: str, registry: str = "") -> dict[str, Any]:
    spec = md.spec
    _, gpu = profiles_for(spec.model, spec.gpu.product)
    gpus = spec.gpus_per_replica
    image = resolved_image(spec, registry)
    startup_period = 10
    model_cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": spec.model_cache.claim_name}}
        if spec.model_cache.claim_name
        else {"emptyDir": {"sizeLimit": spec.model_cache.size_limit}}
    )
    volumes: list[dict[str, Any]] = [
        # NCCL, MPI and the Python backend's stubs exchange tensors through /dev/shm; the 64 MiB
        # default makes multi-GPU replicas fail at start (facts 6.3: NVIDIA's examples mount it).
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{16 * gpus}Gi"}},
        {"name": "model-cache", **model_cache},
        {"name": "engine-config", "configMap": {"name": f"{md.name}-engine", "items": config_items(md)}},
    ]
    mounts = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "engine-config", "mountPath": ENGINE_CONFIG_PATH, "readOnly": True},
    ]
    prepare_mounts = [
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "engine-config", "mountPath": ENGINE_CONFIG_PATH, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes.append({"name": "tmp", "emptyDir": {}})
    if spec.model.pvc:
        volumes.append({"name": "model-source", "persistentVolumeClaim": {
            "claimName": spec.model.pvc.claim_name, "readOnly": True}})
        source_mount = {"name": "model-source", "mountPath": "/model-source", "readOnly": True}
        mounts.append(source_mount)
        prepare_mounts.append(source_mount)
    env = [
        {"name": "TOKENWORKS_MODEL_NAME", "value": spec.model.name},
        {"name": "TOKENWORKS_ENGINE_CONFIG", "value": f"{ENGINE_CONFIG_PATH}/engine.json"},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
    ]
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
    }
    # Building an engine needs the GPUs (trtllm-build profiles kernels on them); a pod's effective
    # request is the larger of its init and main containers', so asking here costs nothing extra.
    build_gpus = {"nvidia.com/gpu": str(gpus)} if spec.engine.backend == "tensorrt-engine" else {}
    prepare = {
        "name": "prepare",
        "image": image,
        "command": ["bash", f"{ENGINE_CONFIG_PATH}/prepare.sh"],
        "env": [*env, *_token_env(spec)],
        "resources": {"requests": {"cpu": "4", "memory": "16Gi", **build_gpus},
                      "limits": {"memory": f"{max(32, 16 * gpus)}Gi", **build_gpus}},
        "volumeMounts": prepare_mounts,
        # The script writes `Reason: message` there; the operator turns it into ModelPrepared=False.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": security,
    }
    # The OpenAI frontend is ready when its in-process server is (GET /health/ready on its port, 200
    # or 400, observability.py); liveness stays on the KServe HTTP frontend it starts beside.
    ready = {"path": "/health/ready", "port": "openai"} if openai_frontend(spec) else \
        {"path": "/v2/health/ready", "port": "http"}
    container = {
        "name": "triton",
        "image": image,
        "command": launch_command(spec, registry),
        "env": [*env, *({"name": k, "value": v} for k, v in launch_env(spec).items())],
        "ports": container_ports(spec),
        "resources": {
            # Host resources scale with the GPUs: tokenisation, the HTTP front end, weight loading.
            "requests": {"cpu": str(4 * gpus), "memory": f"{32 * gpus}Gi", "nvidia.com/gpu": str(gpus)},
            "limits": {"memory": f"{48 * gpus}Gi", "nvidia.com/gpu": str(gpus)},
        },
        "startupProbe": {
            "httpGet": ready,
            "periodSeconds": startup_period,
            "failureThreshold": startup_probe_failure_threshold(spec, startup_period),
        },
        "readinessProbe": {"httpGet": ready, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 6},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": security,
    }
    pod_spec: dict[str, Any] = {
        "initContainers": [prepare],
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": PRESTOP_SLEEP_SECONDS + DRAIN_SECONDS + 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{
                "key": "nvidia.com/gpu.product", "operator": "In",
                "values": list(gpu.node_labels),
            }]}],
        }}},
        "tolerations": pod_tolerations(spec),
        "enableServiceLinks": False,
    }
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    return {
        "metadata": {
            "labels": labels(md.name),
            "annotations": {
                CONFIG_HASH_ANNOTATION: config_hash,
                CACHE_KEY_ANNOTATION: cache_key(spec, registry),
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(metrics_port(spec)),
            },
        },
        "spec": pod_spec,
    }


def deployment(md: ModelDeployment, replicas: int, config_hash: str, registry: str = "") -> dict[str, Any]:
    model, _ = profiles_for(md.spec.model, md.spec.gpu.product)
    load = engine_load_seconds(model, md.spec.engine.precision, md.spec.gpus_per_replica)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md, md.name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(md.name)},
            # Never fewer serving replicas during a rollout; needs room for one extra replica.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": int(600 + 2 * load),
            "revisionHistoryLimit": 5,
            "template": pod_template(md, config_hash, registry),
        },
    }


def service(md: ModelDeployment) -> dict[str, Any]:
    """Every port the pods listen on, by name: KServe HTTP and gRPC, then metrics or the OpenAI port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, md.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md.name),
            "ports": [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"], "protocol": "TCP"}
                      for p in container_ports(md.spec)],
        },
    }


def pod_disruption_budget(md: ModelDeployment, replicas: int) -> dict[str, Any]:
    """A drain must never take the whole model down: one replica at a time of two or more, and none of
    a single replica (the drain waits; docs/operator.md says how to move it)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, md.name),
        "spec": {"maxUnavailable": 1 if replicas > 1 else 0,
                 "selector": {"matchLabels": selector_labels(md.name)}},
    }


def pod_monitor(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(md, md.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(md.name)},
            # Becomes the `tokenworks_dev_model_deployment` label the autoscaler groups series by.
            "podTargetLabels": [INSTANCE_LABEL],
            "podMetricsEndpoints": [{"port": metrics_port_name(md.spec), "interval": "15s", "path": "/metrics"}],
        },
    }


def inference_pool(md: ModelDeployment) -> dict[str, Any]:
    """The Gateway API Inference Extension's v1 InferencePool of ``md``'s pods (vendored schema:
    tests/fixtures/crds/inference.networking.k8s.io/). Its endpoints are the pods its selector matches
    that the endpoint picker sees as ready (their readiness is the OpenAI frontend's /health/ready),
    on the OpenAI port; requests reach a pod through the Gateway, which asks the endpoint picker which."""
    pool = md.spec.routing.inference_pool
    assert pool is not None, "rendered only when spec.routing.inferencePool is set"
    picker = pool.endpoint_picker
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": INFERENCE_POOL,
        "metadata": _metadata(md, md.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(md.name)},
            "targetPorts": [{"number": md.spec.ports.openai}],
            # group and kind spelled out (the schema's defaults), so the applied intent is what is stored.
            "endpointPickerRef": {"group": "", "kind": "Service", "name": picker.name,
                                  "port": {"number": picker.port}, "failureMode": picker.failure_mode},
        },
    }


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def render_children(md: ModelDeployment, replicas: int, *, pod_monitor_api: bool = True,
                    inference_pool_api: bool = True, image_registry: str = "") -> list[dict[str, Any]]:
    """Every child of ``md`` at ``replicas``, in ``CHILD_KINDS`` order (the order to apply them in).
    The reconciler renders them all and skips optional kinds the API server does not serve; an opt-in
    kind (the InferencePool) is rendered only when the spec asks for it."""
    config = config_map(md, image_registry)
    children = [
        config,
        deployment(md, replicas, digest(config["data"]), image_registry),
        service(md),
        pod_disruption_budget(md, replicas),
    ]
    if pod_monitor_api:
        children.append(pod_monitor(md))
    if inference_pool_api and wanted(child_kind(INFERENCE_POOL), md.spec):
        children.append(inference_pool(md))
    return children
