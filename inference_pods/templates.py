"""Children of a ModelDeployment, rendered purely from its spec (no I/O).

A ModelDeployment ``m`` owns: Deployment ``m`` (Triton + TensorRT-LLM pods), Service ``m``,
PodDisruptionBudget ``m``, ConfigMap ``m-engine`` (engine.json, the prepare script and the model
repository's files), where the Prometheus Operator is installed PodMonitor ``m`` and, with
``spec.routing.inferencePool`` where the Gateway API Inference Extension is installed, InferencePool ``m``.
A replica needing more GPUs than one node has (``needs_multi_node``) is LeaderWorkerSet ``m`` instead of
the Deployment: one group of ``group_size`` pods per replica, a leader that launches the MPI world and
workers that host its ranks (docs/operator.md, "Multi-node replicas").

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

from crds.gpus import GPU_PRODUCTS
from crds.models import API_VERSION, KIND, ModelDeployment, ModelDeploymentSpec
from inference_pods.groups import gpus_per_node as gpus_per_node
from inference_pods.groups import gpus_per_pod as gpus_per_pod
from inference_pods.groups import group_size as group_size
from inference_pods.groups import group_splits as group_splits
from inference_pods.groups import needs_multi_node as needs_multi_node
from inference_pods.performance import engine_load_seconds, prepare_seconds, profiles_for
from inference_pods.repository import (
    CONFIG_PATH,
    MODEL_CACHE_PATH,
    MPI_SSH_KEYS,
    MPI_SSH_PORT,
    MPI_SSH_RUN,
    CachePaths,
    cache_key,
    config_key,
    launch_command,
    launch_env,
    leader_launch_script,
    model_repository,
    openai_frontend,
    prepare_script,
    resolved_image,
    served_models,
    token_env_name,
    worker_launch_script,
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
    # A spec that wants this kind cannot be served without it: Degraded, nothing applied (not a warning).
    required_when_wanted: bool = False

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
    ChildKind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets", optional=True, opt_in=True,
              required_when_wanted=True, without="replicas larger than one node cannot be served (install the "
              "LeaderWorkerSet controller)"),
    ChildKind("v1", "Service", "services"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", optional=True,
              without="metrics are not scraped by the Prometheus Operator"),
    ChildKind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools", optional=True, opt_in=True,
              without="no Gateway can route to the model through an InferencePool (install the Gateway API "
              "Inference Extension's CRDs)"),
)
INFERENCE_POOL = "InferencePool"
LEADER_WORKER_SET = "LeaderWorkerSet"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
# The release whose CRD is vendored and tested against (tests/fixtures/crds/leaderworkerset.x-k8s.io/).
LWS_VERSION = "v0.8.0"
LWS_INSTALL = (f"install the LeaderWorkerSet controller {LWS_VERSION} from kubernetes-sigs/lws (its release "
               f"manifests.yaml, or its Helm chart), which serves {LWS_API_VERSION} {LEADER_WORKER_SET}")
# Labels the LeaderWorkerSet controller puts on every pod of a group (sigs.k8s.io/lws@v0.8.0
# api/leaderworkerset/v1/leaderworkerset_types.go): the leader's worker index is "0".
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
# On leaders and workers of a multi-node replica; the PodDisruptionBudget counts every pod of the groups.
# Workers carry no INSTANCE_LABEL: the Service, the PodMonitor and the autoscaler's pod counts see leaders
# only, the one pod of a group that serves (only rank 0 runs tritonserver's frontends).
GROUP_LABEL = "tokenworks.dev/model-deployment-group"
# NVIDIA GPU feature discovery's label naming a node's NVLink domain (an NVL72 rack: cluster UUID and clique).
NVLINK_CLIQUE_LABEL = "nvidia.com/gpu.clique"
# The Secret holding the key pair the leader's mpirun logs in to the workers with (docs/operator.md).
MPI_SSH_SECRET = "tokenworks-mpi-ssh"


def child_kind(kind: str) -> ChildKind:
    return next(k for k in CHILD_KINDS if k.kind == kind)


def wanted(kind: ChildKind, spec: ModelDeploymentSpec) -> bool:
    """Whether ``spec`` has a child of this kind (served or not): every kind but an opt-in one the spec
    does not ask for; the Deployment for a single-node replica, the LeaderWorkerSet for a multi-node one."""
    if kind.kind == "Deployment":
        return not needs_multi_node(spec)
    if not kind.opt_in:
        return True
    if kind.kind == LEADER_WORKER_SET:
        return needs_multi_node(spec)
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


def pod_template(md: ModelDeployment, config_hash: str, registry: str = "", gpus: int | None = None) -> dict[str, Any]:
    """The pod of a single-node replica; ``gpus``: one pod's share of a multi-node replica, whose leader
    and workers are this pod adapted (``leader_worker_set``)."""
    spec = md.spec
    _, gpu = profiles_for(spec.model, spec.gpu.product)
    gpus = spec.gpus_per_replica if gpus is None else gpus
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


def _group_pod(md: ModelDeployment, config_hash: str, registry: str, leader: bool) -> dict[str, Any]:
    """A leader or worker pod of a multi-node replica: the single-node pod (same ConfigMap, model cache,
    prepare step, security) with one pod's GPUs, the group's ssh key pair, and the launch of its role."""
    spec = md.spec
    template = pod_template(md, config_hash, registry, gpus=gpus_per_pod(spec))
    pod = template["spec"]
    (container,) = pod["containers"]
    pod["volumes"] += [
        # The key pair the leader's mpirun logs in to the workers with (docs/operator.md: one Secret per
        # namespace, made by whoever installs; the operator reads no Secrets).
        {"name": "mpi-ssh", "secret": {"secretName": MPI_SSH_SECRET, "defaultMode": 0o400}},
        {"name": "mpi-ssh-run", "emptyDir": {}},
    ]
    container["volumeMounts"] += [{"name": "mpi-ssh", "mountPath": MPI_SSH_KEYS, "readOnly": True},
                                  {"name": "mpi-ssh-run", "mountPath": MPI_SSH_RUN}]
    # Open MPI keeps the FQDNs given in --host rather than shortening them (ai-dynamo/dynamo:deploy/cloud/
    # operator/internal/dynamo/backend_trtllm.go@02b3bad0 sets the same).
    container["env"] = [*container["env"], {"name": "OMPI_MCA_orte_keep_fqdn_hostnames", "value": "1"}]
    container["ports"] = [*container["ports"], {"name": "mpi-ssh", "containerPort": MPI_SSH_PORT, "protocol": "TCP"}]
    labels_ = dict(template["metadata"]["labels"])
    if leader:
        container["command"] = ["bash", "-c", leader_launch_script(spec, registry)]
        # The leader waits for the workers' sshd inside its startup probe, and a worker's sshd starts only
        # after its own prepare step, which may finish well after the leader's (a cold cache on a new node):
        # twice the first-start preparation on top, or the probe would restart the group mid-download, and
        # each restart empties every pod's cache. DeepSeek-R1 FP8: 671 GB at 1 GB/s -> 135 more probes of 10 s.
        model, _ = profiles_for(spec.model, spec.gpu.product)
        wait = prepare_seconds(model, spec.engine.precision, spec.engine.backend)
        probe = container["startupProbe"]
        probe["failureThreshold"] += math.ceil(2 * wait / probe["periodSeconds"])
    else:
        # Workers serve nothing: they host the ranks the leader's mpirun starts over ssh. No INSTANCE_LABEL,
        # so no Service, PodMonitor or replica count sees them; an open sshd port is their readiness.
        labels_.pop(INSTANCE_LABEL)
        labels_["app.kubernetes.io/component"] = "inference-worker"
        container["command"] = ["bash", "-c", worker_launch_script()]
        container["ports"] = [p for p in container["ports"] if p["name"] == "mpi-ssh"]
        for probe in ("startupProbe", "livenessProbe"):
            container.pop(probe)
        container["readinessProbe"] = {"tcpSocket": {"port": "mpi-ssh"}, "periodSeconds": 5, "failureThreshold": 3}
        template["metadata"]["annotations"] = {k: v for k, v in template["metadata"]["annotations"].items()
                                               if not k.startswith("prometheus.io/")}
    labels_[GROUP_LABEL] = md.name
    template["metadata"]["labels"] = labels_
    product = GPU_PRODUCTS[spec.gpu.product]
    if product.nvlink_domain > product.gpus_per_node and spec.gpus_per_replica <= product.nvlink_domain:
        # GB200/GB300 NVL72: a group whose GPUs fit one rack's NVLink domain is kept in one rack, so its
        # collectives run over NVLink, not the network. Pod affinity on the group's own key
        # (matchLabelKeys) lets groups share a rack; LWS's exclusive-topology annotation would give each
        # group a rack of its own (its pod webhook adds anti-affinity to every other group).
        pod["affinity"]["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {LWS_NAME_LABEL: md.name}},
            "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
            "topologyKey": NVLINK_CLIQUE_LABEL,
        }]}
    return template


def leader_worker_set(md: ModelDeployment, replicas: int, config_hash: str, registry: str = "") -> dict[str, Any]:
    """A multi-node replica per group of a LeaderWorkerSet (schema: tests/fixtures/crds/leaderworkerset.x-k8s.io/,
    kubernetes-sigs/lws v0.8.0). Every policy is spelled out rather than left to the release's defaults,
    which changed between releases (``restartPolicy`` was ``Default`` before v0.6)."""
    spec = md.spec
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": LEADER_WORKER_SET,
        "metadata": _metadata(md, md.name),
        "spec": {
            "replicas": replicas,
            # Workers start with the leader: the leader waits for their sshd before mpirun. LeaderReady
            # would deadlock, since the leader is ready only once the whole MPI world has loaded the model.
            "startupPolicy": "LeaderCreated",
            # No surge: a surge group needs `size` whole nodes spare; one group at a time goes down.
            "rolloutStrategy": {"type": "RollingUpdate",
                                "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1}},
            # A headless Service per group, `m-<group>`: pods are `m-<group>.m-<group>.<ns>` and
            # `m-<group>-<i>.m-<group>.<ns>`. `Shared` would name its one headless Service `m`, which is the
            # operator's own model Service: the LWS controller creates it only where none exists, so worker
            # names would never resolve (or the two selectors would merge).
            "networkConfig": {"subdomainPolicy": "UniquePerReplica"},
            "leaderWorkerTemplate": {
                "size": group_size(spec),
                # A lost rank breaks the NCCL communicator of the whole group: restart it whole.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _group_pod(md, config_hash, registry, leader=True),
                "workerTemplate": _group_pod(md, config_hash, registry, leader=False),
            },
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
    # A multi-node replica's pods, leaders and workers alike: losing any one takes its whole group down
    # (RecreateGroupOnPodRestart), so one pod at a time is one group at a time.
    selector = {GROUP_LABEL: md.name} if needs_multi_node(md.spec) else selector_labels(md.name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md, md.name),
        "spec": {"maxUnavailable": 1 if replicas > 1 else 0,
                 "selector": {"matchLabels": selector}},
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
    kind (the InferencePool) is rendered only when the spec asks for it. A multi-node replica is a
    LeaderWorkerSet in the Deployment's place."""
    config = config_map(md, image_registry)
    workload = leader_worker_set if needs_multi_node(md.spec) else deployment
    children = [
        config,
        workload(md, replicas, digest(config["data"]), image_registry),
        service(md),
        pod_disruption_budget(md, replicas),
    ]
    if pod_monitor_api:
        children.append(pod_monitor(md))
    if inference_pool_api and wanted(child_kind(INFERENCE_POOL), md.spec):
        children.append(inference_pool(md))
    return children
