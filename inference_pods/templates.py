"""Children of a ModelDeployment, rendered purely from its spec (no I/O).

A ModelDeployment ``m`` owns: Deployment ``m`` (Triton + TensorRT-LLM pods), Service ``m``,
PodDisruptionBudget ``m``, ConfigMap ``m-engine`` and, where the Prometheus Operator is installed,
PodMonitor ``m``.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from crds.models import API_VERSION, KIND, ModelDeployment, ModelDeploymentSpec
from inference_pods.performance import engine_load_seconds, profiles_for

MANAGED_BY = "tokenworks"
INSTANCE_LABEL = "tokenworks.dev/model-deployment"
CONFIG_HASH_ANNOTATION = "tokenworks.dev/engine-config-hash"
ENGINE_CONFIG_PATH = "/etc/tokenworks"
MODEL_CACHE_PATH = "/model-cache"
# Seconds between a pod leaving the Service endpoints and Triton being told to stop: kube-proxy and
# gateways need a few seconds to stop routing to it.
PRESTOP_SLEEP_SECONDS = 10
# Seconds Triton waits for in-flight requests after SIGTERM (`--exit-timeout-secs`): a 4k-token
# answer at 25 ms per token takes 100 s.
DRAIN_SECONDS = 120
NON_ROOT_UID = 1000  # `triton-server` user of the NGC Triton images


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


def engine_config(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """What the engine is built and run with, as the pod reads it from the ConfigMap."""
    source = (
        {"huggingFace": spec.model.hugging_face} if spec.model.hugging_face
        else {"ngc": spec.model.ngc} if spec.model.ngc
        else {"pvc": spec.model.pvc.model_dump(by_alias=True) if spec.model.pvc else None}
    )
    return {
        "model": {"name": spec.model.name, "profile": spec.model.profile,
                  "revision": spec.model.revision, **source},
        "backend": "tensorrtllm",
        "precision": spec.engine.precision,
        "tensorParallelSize": spec.parallelism.tensor,
        "pipelineParallelSize": spec.parallelism.pipeline,
        "maxBatchSize": spec.engine.max_batch_size,
        "maxNumTokens": spec.engine.max_num_tokens,
        "maxInputLength": spec.engine.max_input_length,
        "maxOutputLength": spec.engine.max_output_length,
        "kvCacheFreeGpuMemFraction": spec.engine.kv_cache_free_gpu_mem_fraction,
        "enableChunkedPrefill": spec.engine.enable_chunked_prefill,
        "batchingStrategy": "inflight_fused_batching",
    }


def config_map(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(md, f"{md.name}-engine"),
        "data": {"engine.json": json.dumps(engine_config(md.spec), indent=2, sort_keys=True)},
    }


def startup_probe_failure_threshold(spec: ModelDeploymentSpec, period_seconds: int) -> int:
    """Enough probes to cover twice the estimated engine load time, plus one minute.

    Llama-3.3-70B BF16 on TP4 loads in about 68.5 s: (2 x 68.5 + 60) / 10 s -> 20 probes.
    """
    model, _ = profiles_for(spec.model.profile, spec.gpu.product)
    load = engine_load_seconds(model, spec.engine.precision, spec.gpus_per_replica)
    return max(6, math.ceil((2 * load + 60) / period_seconds))


def triton_args(spec: ModelDeploymentSpec) -> list[str]:
    return [
        f"--model-repository={MODEL_CACHE_PATH}/triton-repository",
        f"--http-port={spec.ports.http}",
        f"--grpc-port={spec.ports.grpc}",
        f"--metrics-port={spec.ports.metrics}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
        "--metrics-config=histogram_latencies=true",
        f"--exit-timeout-secs={DRAIN_SECONDS}",
        "--disable-auto-complete-config",
        *spec.engine.extra_args,
    ]


def pod_template(md: ModelDeployment, config_hash: str) -> dict[str, Any]:
    spec = md.spec
    _, gpu = profiles_for(spec.model.profile, spec.gpu.product)
    gpus = spec.gpus_per_replica
    startup_period = 10
    model_cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": spec.model_cache.claim_name}}
        if spec.model_cache.claim_name
        else {"emptyDir": {"sizeLimit": spec.model_cache.size_limit}}
    )
    volumes: list[dict[str, Any]] = [
        # NCCL and the TensorRT-LLM runtime exchange tensors through /dev/shm; the 64 MiB default
        # makes multi-GPU engines fail at start.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{16 * gpus}Gi"}},
        {"name": "model-cache", **model_cache},
        {"name": "engine-config", "configMap": {"name": f"{md.name}-engine"}},
    ]
    mounts = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "engine-config", "mountPath": ENGINE_CONFIG_PATH, "readOnly": True},
    ]
    if spec.model.pvc:
        volumes.append({"name": "model-source", "persistentVolumeClaim": {
            "claimName": spec.model.pvc.claim_name, "readOnly": True}})
        mounts.append({"name": "model-source", "mountPath": "/model-source", "readOnly": True})
    env = [
        {"name": "TOKENWORKS_MODEL_NAME", "value": spec.model.name},
        {"name": "TOKENWORKS_ENGINE_CONFIG", "value": f"{ENGINE_CONFIG_PATH}/engine.json"},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
    ]
    http = {"path": "/v2/health/ready", "port": "http"}
    container = {
        "name": "triton",
        "image": spec.engine.image,
        "command": ["tritonserver"],
        "args": triton_args(spec),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": spec.ports.http, "protocol": "TCP"},
            {"name": "grpc", "containerPort": spec.ports.grpc, "protocol": "TCP"},
            {"name": "metrics", "containerPort": spec.ports.metrics, "protocol": "TCP"},
        ],
        "resources": {
            # Host resources scale with the GPUs: tokenisation, the HTTP front end, weight loading.
            "requests": {"cpu": str(4 * gpus), "memory": f"{32 * gpus}Gi", "nvidia.com/gpu": str(gpus)},
            "limits": {"memory": f"{48 * gpus}Gi", "nvidia.com/gpu": str(gpus)},
        },
        "startupProbe": {
            "httpGet": http,
            "periodSeconds": startup_period,
            "failureThreshold": startup_probe_failure_threshold(spec, startup_period),
        },
        "readinessProbe": {"httpGet": http, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"},
                          "periodSeconds": 10, "failureThreshold": 6},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
        },
    }
    pod_spec: dict[str, Any] = {
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
                "values": list(gpu.node_label_values),
            }]}],
        }}},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            *spec.scheduling.tolerations,
        ],
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
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.ports.metrics),
            },
        },
        "spec": pod_spec,
    }


def deployment(md: ModelDeployment, replicas: int, config_hash: str) -> dict[str, Any]:
    model, _ = profiles_for(md.spec.model.profile, md.spec.gpu.product)
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
            "template": pod_template(md, config_hash),
        },
    }


def service(md: ModelDeployment) -> dict[str, Any]:
    ports = md.spec.ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md, md.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md.name),
            "ports": [
                {"name": "http", "port": ports.http, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": ports.grpc, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": ports.metrics, "targetPort": "metrics",
                 "protocol": "TCP"},
            ],
        },
    }


def pod_disruption_budget(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, md.name),
        # One replica at a time: a drained node must not take a whole model offline at once.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(md.name)}},
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
            "podMetricsEndpoints": [{"port": "metrics", "interval": "15s", "path": "/metrics"}],
        },
    }


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def render_children(md: ModelDeployment, replicas: int, *, pod_monitor_api: bool) -> list[dict[str, Any]]:
    """Every child of ``md`` at ``replicas``; the order is the order to apply them in."""
    config = config_map(md)
    children = [
        config,
        deployment(md, replicas, digest(config["data"])),
        service(md),
        pod_disruption_budget(md),
    ]
    if pod_monitor_api:
        children.append(pod_monitor(md))
    return children
