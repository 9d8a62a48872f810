"""A small kubelet for fake GPU nodes: it registers Nodes, keeps their Leases and status fresh, and runs
every pod the scheduler binds to them as the emulator twin of its Triton container, so a laptop without
GPUs runs the real control plane, operator and Prometheus against pods that serve tokens.

What it does of a kubelet's job (docs/factory.md, "The node agent"):

- **Node**: created with `nvidia.com/gpu` capacity and the GPU feature discovery labels
  (`nvidia.com/gpu.product`, `nvidia.com/gpu.count`), Ready; its Lease in `kube-node-lease` renewed every
  10 s (the node lifecycle controller marks a node whose Lease is 40 s old `Unknown` and evicts it).
- **Pod start**: the pod's ConfigMap volume laid out as the kubelet mounts it, its prepare init container
  run (``inference_pods.emulator.pod.lay_out``, stand-in tools, no weights), then the main container's own
  command line under the emulator on a loopback address of its own (127.<node>.x.y): the pod IP.
- **Pod status** through ``pods/status``: phase, IPs, start time, init and container statuses, the
  conditions, readiness from the pod's own startup and readiness probes.
- **Deletion**: the preStop sleep, SIGTERM, SIGKILL when the grace period ends, then the pod deleted with
  grace 0, as the kubelet finishes a graceful deletion.
- **A process that dies** marks the pod Failed (the emulator has no restart to offer a crash loop), so its
  ReplicaSet replaces it and the autoscaler stops counting it.

What it does not: images, volumes other than the engine ConfigMap, logs and exec (no kubelet port),
container restarts, resource enforcement.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from inference_pods.emulator.pod import lay_out

log = logging.getLogger("tokenworks.nodeagent")
AGENT_ANNOTATION = "tokenworks.dev/node-agent"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40  # the kubelet's default nodeLeaseDurationSeconds
RENEW_SECONDS = 10  # a quarter of it, as the kubelet renews
STATUS_SECONDS = 60  # node status heartbeat while nothing changes (the kubelet's is 5 min)
GPU_RESOURCE = "nvidia.com/gpu"
ENGINE_VOLUME = "engine-config"
MAIN_CONTAINER = "triton"
Manifest = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AgentNode:
    """One fake GPU node. ``octet`` picks its loopback block: node 127.<octet>.0.1, pods 127.<octet>.x.y."""

    name: str
    product_label: str  # as GPU feature discovery labels it, e.g. NVIDIA-H100-80GB-HBM3
    gpus: int = 8
    octet: int = 64
    cpu: str = "192"
    memory: str = "2Ti"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.{self.octet}.0.1"

    def manifest(self, identity: str) -> Manifest:
        return {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.name, "annotations": {AGENT_ANNOTATION: identity},
            "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "nvidia.com/gpu.product": self.product_label, "nvidia.com/gpu.count": str(self.gpus),
                       "nvidia.com/gpu.present": "true", **self.labels}}}

    def status(self, heartbeat: str) -> Manifest:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "2Ti",
                    GPU_RESOURCE: str(self.gpus)}

        def condition(type_: str, status: str, reason: str, message: str) -> Manifest:
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}

        return {"capacity": capacity, "allocatable": capacity,
                "conditions": [condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                               condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                               condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                               condition("Ready", "True", "KubeletReady", "tokenworks node agent is posting "
                                         "ready status")],
                "addresses": [{"type": "InternalIP", "address": self.address},
                              {"type": "Hostname", "address": self.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": self.name, "systemUUID": self.name, "bootID": self.name,
                             "kernelVersion": os.uname().release, "osImage": "tokenworks node agent",
                             "containerRuntimeVersion": "emulator://1", "kubeletVersion": "v1.36.3",
                             "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}


def rbac_objects(namespace: str, account: str = "tokenworks-node-agent") -> list[Manifest]:
    """What the agent may do: the part of `system:node` it uses (the Node authorizer's narrowing to its own
    node does not apply to a ServiceAccount, so this is cluster-wide)."""
    rules = [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    ]
    labels = {"app.kubernetes.io/name": "tokenworks", "app.kubernetes.io/component": "node-agent"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace,
                                                                      "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": account, "labels": labels}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": account, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]


@dataclass
class Probe:
    """One httpGet probe of the pod spec, on the pod's address."""

    url: str
    period: float
    failure_threshold: int
    success_threshold: int = 1
    next_at: float = 0.0
    failures: int = 0
    successes: int = 0

    @classmethod
    def of(cls, spec: Manifest | None, host: str, ports: dict[str, int], time_scale: float = 1.0) -> Probe | None:
        if not spec or "httpGet" not in spec:
            return None
        get = spec["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else int(get["port"])
        return cls(f"http://{host}:{port}{get.get('path', '/')}", float(spec.get("periodSeconds", 10)) / time_scale,
                   int(spec.get("failureThreshold", 3)), int(spec.get("successThreshold", 1)),
                   time.monotonic() + float(spec.get("initialDelaySeconds", 0)) / time_scale)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run(self, now: float, http: httpx.Client) -> bool | None:
        """True after successThreshold successes, False after failureThreshold failures, else None."""
        self.next_at = now + self.period
        try:
            ok = http.get(self.url, timeout=min(1.0, self.period)).status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            self.failures, self.successes = 0, self.successes + 1
            return True if self.successes >= self.success_threshold else None
        self.successes, self.failures = 0, self.failures + 1
        return False if self.failures >= self.failure_threshold else None


@dataclass
class PodRuntime:
    """What the agent keeps per pod it runs."""

    uid: str
    namespace: str
    name: str
    node: AgentNode
    ip: str
    root: Path
    started_at: str = ""
    process: subprocess.Popen[bytes] | None = None
    startup: Probe | None = None
    readiness: Probe | None = None
    started: bool = False  # the startup probe passed (or there is none)
    ready: bool = False
    phase: str = "Pending"
    terminating: bool = False
    finished: bool = False
    exit_code: int | None = None  # the main container's, once it ended
    init_exit: tuple[int, str] | None = None  # the prepare container's failure
    start_pending: bool = True  # not started yet (a failed start is tried again)
    reported: tuple[Any, ...] = ()
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition -> (status, since)


class NodeAgent:
    """Runs the nodes' pods. ``emulator_args`` go to every emulator (e.g. ``--time-scale``); ``python`` is
    the interpreter that runs them."""

    def __init__(self, api_client: ApiClient, nodes: list[AgentNode], workdir: Path,
                 emulator_args: list[str] | None = None, identity: str = "tokenworks-node-agent",
                 python: str = sys.executable, on_event: Callable[[str], None] | None = None,
                 renew_seconds: float = RENEW_SECONDS,
                 emulator_args_for: Callable[[Manifest], list[str]] | None = None, time_scale: float = 1.0) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.nodes = {n.name: n for n in nodes}
        self.workdir = workdir
        self.emulator_args = list(emulator_args or [])
        self.identity = identity
        self.python = python
        self.renew_seconds = renew_seconds
        # Per-pod emulator flags (the factory's compressed load time); probe periods, the preStop sleep and
        # the grace period divided by ``time_scale`` (the factory's compressed clock; 1 is the kubelet's).
        self.emulator_args_for = emulator_args_for or (lambda pod: [])
        self.time_scale = time_scale
        self.on_event = on_event or (lambda message: log.info("%s", message))
        self.pods: dict[str, PodRuntime] = {}
        self.objects: dict[str, Manifest] = {}  # the newest pod object per uid, from the watches
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._next_ip: dict[str, int] = {n.name: 2 for n in nodes}
        # One client for every probe: a new one per probe builds a TLS context each time (most of the
        # agent's CPU at a dozen pods).
        self.http = httpx.Client()

    # -- nodes -----------------------------------------------------------------------------------
    def register(self) -> None:
        for node in self.nodes.values():
            self.register_node(node)

    def register_node(self, node: AgentNode) -> None:
        manifest = node.manifest(self.identity)
        try:
            self.core.create_node(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.patch_node(node.name, {"metadata": manifest["metadata"]})
        self.core.patch_node_status(node.name, {"status": node.status(_now())})
        self._renew(node)

    def _renew(self, node: AgentNode) -> None:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.coordination.read_namespaced_lease(node.name, LEASE_NAMESPACE)
            lease.spec.renew_time = now
            lease.spec.holder_identity = node.name
            self.coordination.replace_namespaced_lease(node.name, LEASE_NAMESPACE, lease)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                uid = self.core.read_node(node.name).metadata.uid
            except ApiException as missing:
                if missing.status != 404:
                    raise
                # The Node was deleted under a running agent: register it again, as a kubelet does.
                self.register_node(node)
                return
            # Owned by its Node, as the kubelet's is: deleting the Node removes the Lease.
            self.coordination.create_namespaced_lease(LEASE_NAMESPACE, {
                "metadata": {"name": node.name, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": uid}]},
                "spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}})

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(self.renew_seconds):
            for node in self.nodes.values():
                try:
                    self._renew(node)
                    if time.monotonic() - last_status >= STATUS_SECONDS:
                        self.core.patch_node_status(node.name, {"status": node.status(_now())})
                except Exception:
                    log.warning("heartbeat failed node=%s", node.name, exc_info=True)
            if time.monotonic() - last_status >= STATUS_SECONDS:
                last_status = time.monotonic()

    # -- pods: watch ------------------------------------------------------------------------------
    def watch_node(self, node: AgentNode) -> None:
        """List then watch the pods bound to ``node``; every event updates the newest object."""
        selector = f"spec.nodeName={node.name}"
        while not self.stopping.is_set():
            try:
                listed = self.api.sanitize_for_serialization(self.core.list_pod_for_all_namespaces(
                    field_selector=selector))
                seen = set()
                with self.lock:
                    for pod in listed["items"]:
                        self.objects[pod["metadata"]["uid"]] = pod
                        seen.add(pod["metadata"]["uid"])
                    for uid, runtime in list(self.pods.items()):
                        if runtime.node is node and uid not in seen:
                            self.objects.pop(uid, None)  # deleted while no watch ran
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                              resource_version=listed["metadata"]["resourceVersion"],
                                              timeout_seconds=60, _request_timeout=70)
                for event in stream:
                    if self.stopping.is_set():
                        return
                    pod = self.api.sanitize_for_serialization(event["object"])
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.objects.pop(pod["metadata"]["uid"], None)
                        else:
                            self.objects[pod["metadata"]["uid"]] = pod
            except Exception:
                if self.stopping.is_set():
                    return
                log.warning("pod watch failed node=%s; relisting", node.name, exc_info=True)
                self.stopping.wait(1)

    # -- pods: lifecycle --------------------------------------------------------------------------
    def _allocate_ip(self, node: AgentNode) -> str:
        n = self._next_ip[node.name]
        self._next_ip[node.name] = n + 1
        return f"127.{node.octet}.{n // 250}.{n % 250 + 2}"

    def sync(self) -> None:
        """Bring every pod to what its object asks, report what changed; runs every 0.25 s."""
        while not self.stopping.wait(0.25):
            with self.lock:
                objects = dict(self.objects)
            for uid in [u for u in self.pods if u not in objects]:
                self._gone(self.pods.pop(uid))
            for uid, pod in objects.items():
                try:
                    self._sync_pod(uid, pod)
                except ApiException as error:
                    if error.status not in (404, 409):
                        log.warning("pod sync failed pod=%s/%s status=%s", pod["metadata"]["namespace"],
                                    pod["metadata"]["name"], error.status)
                except Exception:
                    log.exception("pod sync failed pod=%s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _sync_pod(self, uid: str, pod: Manifest) -> None:
        """Level-triggered: every pass brings the pod to what its object asks and reports what is true now,
        so a status write that failed is written again on the next pass."""
        runtime = self.pods.get(uid)
        meta = pod["metadata"]
        if runtime is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before this agent started: nothing to run
            node = self.nodes[pod["spec"]["nodeName"]]
            runtime = PodRuntime(uid, meta["namespace"], meta["name"], node, self._allocate_ip(node),
                                 Path(tempfile.mkdtemp(prefix=f"{meta['name']}-", dir=self.workdir)))
            self.pods[uid] = runtime
        if meta.get("deletionTimestamp"):
            if not runtime.terminating:
                runtime.terminating = True
                grace = float(meta.get("deletionGracePeriodSeconds") or 0) / self.time_scale
                threading.Thread(target=self._terminate, args=(runtime, pod, grace), daemon=True,
                                 name=f"stop-{runtime.name}").start()
            return
        if runtime.start_pending:
            try:
                self._start(runtime, pod)
            except Exception:
                # The ConfigMap not readable yet, a process that would not start: the next pass tries again.
                log.warning("pod start failed pod=%s/%s; retrying", runtime.namespace, runtime.name, exc_info=True)
                return
            runtime.start_pending = False
        process = runtime.process
        if not runtime.finished and process is not None and process.poll() is not None:
            runtime.finished, runtime.phase, runtime.ready = True, "Failed", False
            runtime.exit_code = process.returncode
            self.on_event(f"pod {runtime.namespace}/{runtime.name}: its process exited with {process.returncode}; "
                          "the pod is Failed")
        if not runtime.finished:
            now = time.monotonic()
            if not runtime.started and runtime.startup is not None and runtime.startup.due(now):
                verdict = runtime.startup.run(now, self.http)
                if verdict:
                    runtime.started = True
                    runtime.ready = runtime.readiness is None  # no readiness probe: ready once started
                elif verdict is False and process is not None:
                    # The kubelet kills a container whose startup probe fails; it has no restart here.
                    self.on_event(f"pod {runtime.namespace}/{runtime.name}: its startup probe failed; stopping it")
                    _signal(process, signal.SIGKILL)
            elif runtime.started and runtime.readiness is not None and runtime.readiness.due(now):
                verdict = runtime.readiness.run(now, self.http)
                if verdict is not None:
                    runtime.ready = verdict
        self._report(runtime, pod, exit_code=runtime.exit_code, init_exit=runtime.init_exit)

    def _start(self, runtime: PodRuntime, pod: Manifest) -> None:
        spec = pod["spec"]
        runtime.started_at = _now()
        container = next(c for c in spec["containers"] if c["name"] == MAIN_CONTAINER)
        volume = next((v for v in spec.get("volumes") or [] if v["name"] == ENGINE_VOLUME), None)
        if volume is None:
            self._fail_init(runtime, pod, 1, f"no {ENGINE_VOLUME} volume: not a Tokenworks inference pod")
            return
        config = self.core.read_namespaced_config_map(volume["configMap"]["name"], runtime.namespace).data or {}
        prepared = lay_out(runtime.root, config, volume["configMap"]["items"])
        if prepared.returncode:
            self._fail_init(runtime, pod, prepared.returncode, prepared.termination_message or prepared.output[-300:])
            return
        ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        log_file = (runtime.root / "container.log").open("ab")
        try:
            runtime.process = subprocess.Popen(
                [self.python, "-m", "inference_pods.emulator", f"--host={runtime.ip}", *self.emulator_args,
                 *self.emulator_args_for(pod),
                 f"--root={runtime.root}", "--", *container["command"], *container.get("args", [])],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **container_env(container), "PYTHONUNBUFFERED": "1"})
        finally:
            log_file.close()
        runtime.phase = "Running"
        runtime.startup = Probe.of(container.get("startupProbe"), runtime.ip, ports, self.time_scale)
        runtime.readiness = Probe.of(container.get("readinessProbe"), runtime.ip, ports, self.time_scale)
        runtime.started = runtime.startup is None
        runtime.ready = runtime.readiness is None and runtime.started
        self.on_event(f"pod {runtime.namespace}/{runtime.name}: started on {runtime.node.name} at {runtime.ip} "
                      f"(pid {runtime.process.pid})")

    def _fail_init(self, runtime: PodRuntime, pod: Manifest, code: int, message: str) -> None:
        """The prepare container failed: the pod stays Pending with its termination message, which the
        operator turns into ModelPrepared=False (a kubelet would retry it in a crash loop)."""
        runtime.finished = True
        runtime.init_exit = (code, message)
        self.on_event(f"pod {runtime.namespace}/{runtime.name}: prepare failed ({code}): {message}")

    def _terminate(self, runtime: PodRuntime, pod: Manifest, grace: float) -> None:
        """The kubelet's graceful stop: preStop, SIGTERM, SIGKILL at the end of the grace period; then the
        pod object is deleted for good."""
        deadline = time.monotonic() + grace
        container: Manifest = next((c for c in pod["spec"]["containers"] if c["name"] == MAIN_CONTAINER), {})
        sleep = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        process = runtime.process
        if process is not None and process.poll() is None:
            self.stopping.wait(max(0.0, min(float(sleep) / self.time_scale, deadline - time.monotonic())))
            _signal(process, signal.SIGTERM)
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)
                process.wait()
        runtime.finished = True
        try:
            self.core.delete_namespaced_pod(runtime.name, runtime.namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=runtime.uid)))
        except ApiException as error:
            if error.status not in (404, 409):  # gone already, or a new pod of the same name
                log.warning("deleting pod failed pod=%s/%s status=%s body=%s", runtime.namespace, runtime.name,
                            error.status, error.body)
                runtime.terminating = False  # the next sync tries again
                return
        self.on_event(f"pod {runtime.namespace}/{runtime.name}: stopped and deleted")

    def _gone(self, runtime: PodRuntime) -> None:
        process = runtime.process
        if process is not None and process.poll() is None:
            _signal(process, signal.SIGKILL)
            process.wait()
        shutil.rmtree(runtime.root, ignore_errors=True)

    def _report(self, runtime: PodRuntime, pod: Manifest, exit_code: int | None = None,
                init_exit: tuple[int, str] | None = None) -> None:
        """``pods/status`` from the runtime, patched only when it changed."""
        key = (runtime.phase, runtime.started, runtime.ready, exit_code, init_exit)
        if key == runtime.reported:
            return
        spec = pod["spec"]
        stamp = _now()
        init_status = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": init_exit is None,
                        "restartCount": 0, "state": {"terminated": {
                            "exitCode": init_exit[0] if init_exit else 0,
                            "reason": "Error" if init_exit else "Completed",
                            **({"message": init_exit[1]} if init_exit else {}),
                            "startedAt": runtime.started_at, "finishedAt": stamp}}}
                       for c in spec.get("initContainers") or []]
        containers = []
        for c in spec["containers"]:
            if init_exit is not None:
                state: Manifest = {"waiting": {"reason": "PodInitializing"}}
            elif exit_code is not None:
                state = {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                                        "startedAt": runtime.started_at, "finishedAt": stamp}}
            else:
                state = {"running": {"startedAt": runtime.started_at}}
            containers.append({"name": c["name"], "image": c.get("image", ""), "imageID": "",
                               "ready": runtime.ready, "started": runtime.started and exit_code is None,
                               "restartCount": 0, "state": state,
                               **({"containerID": f"emulator://{runtime.process.pid}"} if runtime.process else {})})
        ready = "True" if runtime.ready and exit_code is None else "False"

        def condition(type_: str, status: str) -> Manifest:
            # A transition time moves only when the status does, as the kubelet's.
            before = runtime.transitions.get(type_)
            since = before[1] if before is not None and before[0] == status else stamp
            runtime.transitions[type_] = (status, since)
            return {"type": type_, "status": status, "lastTransitionTime": since}

        status: Manifest = {
            "phase": runtime.phase, "hostIP": runtime.node.address, "hostIPs": [{"ip": runtime.node.address}],
            "startTime": runtime.started_at,
            "conditions": [condition("PodScheduled", "True"),
                           condition("Initialized", "False" if init_exit else "True"),
                           condition("ContainersReady", ready), condition("Ready", ready)],
            "initContainerStatuses": init_status, "containerStatuses": containers,
        }
        if init_exit is None:
            status.update({"podIP": runtime.ip, "podIPs": [{"ip": runtime.ip}]})
        self.core.patch_namespaced_pod_status(runtime.name, runtime.namespace, {"status": status})
        runtime.reported = key

    # -- running ----------------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.register()
        targets: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            ("heartbeat", self.heartbeat, ()), ("sync", self.sync, ()),
            *((f"watch-{n.name}", self.watch_node, (n,)) for n in self.nodes.values())]
        for name, target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True, name=name)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, delete_nodes: bool = True) -> None:
        """Every process it started ends (SIGKILL after 5 s); the Nodes go too unless asked to stay."""
        self.stopping.set()
        # The sync thread first: a pod it is starting now must be in the list below, not left running.
        for thread in self.threads:
            thread.join(30 if thread.name == "sync" else 2)
        runtimes = list(self.pods.values())
        for runtime in runtimes:
            if runtime.process is not None and runtime.process.poll() is None:
                _signal(runtime.process, signal.SIGTERM)
        for runtime in runtimes:
            if runtime.process is not None:
                try:
                    runtime.process.wait(5)
                except subprocess.TimeoutExpired:
                    _signal(runtime.process, signal.SIGKILL)
                    runtime.process.wait()
        self.http.close()
        if delete_nodes:
            for name in self.nodes:
                with contextlib.suppress(ApiException):
                    self.core.delete_node(name)

    def processes(self) -> list[int]:
        """Process ids of the emulators still running."""
        # Copied in one step: the sync thread adds pods while other threads ask.
        runtimes = list(self.pods.values())
        return [r.process.pid for r in runtimes if r.process is not None and r.process.poll() is None]


def container_env(container: Manifest) -> dict[str, str]:
    """The container's literal environment (``value``), as the kubelet sets it; references to Secrets and
    ConfigMaps are left out (the agent reads no Secret, and the emulator needs none)."""
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Its own session: the signal reaches the emulator and anything it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
