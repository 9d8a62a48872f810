"""End to end: the operator autoscales a ModelDeployment on the families a real Prometheus scrapes from
emulator twins of its pods (one per replica, each started from the Deployment's own pod template and
ConfigMap as the API server holds them, on its own loopback address), through a load step up and down,
Prometheus stopping and coming back, and an operator restart."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.controlplane import REPO_ROOT, ControlPlane, free_port
from tests.support.emulator import EmulatorProcess
from tests.support.fleet import Load
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import eventually

GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
NAME = "llama-8b"
TICK = 2  # seconds between autoscaler decisions
STABILIZATION = 20  # seconds
CAPACITY = 300.0  # output tokens/s per replica (spec.autoscaling.tokensPerSecondPerReplica)


class Pods:
    """Stands in for the kubelet: keeps one emulator process per replica of the Deployment and lists
    them as Prometheus targets carrying the ModelDeployment's labels."""

    def __init__(self, plane: ControlPlane, prometheus: PrometheusServer, namespace: str) -> None:
        self.plane, self.prometheus, self.namespace = plane, prometheus, namespace
        self.emulators: list[EmulatorProcess] = []
        self.subnet = random.randrange(1, 250)  # pod addresses 127.0.<subnet>.<n>, apart from other runs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        api = self.plane.api_client()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        addresses = (f"127.0.{self.subnet}.{i}" for i in itertools.count(2))
        while not self.stop.wait(0.5):
            try:
                deployment = api.sanitize_for_serialization(apps.read_namespaced_deployment(NAME, self.namespace))
                config = core.read_namespaced_config_map(f"{NAME}-engine", self.namespace).data
            except client.ApiException:
                continue
            want = deployment["spec"]["replicas"] or 0
            with self.lock:
                while len(self.emulators) < want:
                    self.emulators.append(EmulatorProcess.from_pod(
                        deployment["spec"]["template"], config, next(addresses), ["--load-seconds=1"]).start())
                while len(self.emulators) > want:
                    self.emulators.pop().stop()
                urls = [e.metrics_target for e in self.emulators]
            self.prometheus.set_targets([(urls, {"namespace": self.namespace,
                                                 "tokenworks_dev_model_deployment": NAME})])

    def urls(self) -> list[str]:
        with self.lock:
            return [e.url for e in self.emulators]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for emulator in self.emulators:
            emulator.stop()


@pytest.fixture(params=["llmapi", "tensorrt-engine"])
def stack(full_control_plane: ControlPlane, namespace: str, tmp_path: Any,
          request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    backend = request.param
    plane = full_control_plane
    install_api_and_rbac(plane)
    prometheus = PrometheusServer(tmp_path / "prometheus").start()
    kubeconfig = service_account_kubeconfig(plane, plane.workdir / "e2e.kubeconfig")

    def operator(name: str) -> OperatorProcess:
        process = OperatorProcess(plane, kubeconfig, name, resync_seconds=5)
        process.argv += [f"--prometheus-url={prometheus.url}", f"--autoscaler-tick={TICK}",
                         "--prometheus-window=10s", "--prometheus-short-window=5s"]
        return process.start()

    manifest = yaml.safe_load((REPO_ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    # llmapi: Triton core families only, tokens from the observer's model; tensorrt-engine: token counts.
    manifest["spec"]["engine"]["backend"] = backend
    manifest["spec"]["ports"] = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    manifest["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 4,
                                       "tokensPerSecondPerReplica": CAPACITY, "tickSeconds": TICK,
                                       "scaleDownStabilizationSeconds": STABILIZATION}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    first = operator("e2e-first")
    eventually(first.is_leader, timeout=30)
    pods = Pods(plane, prometheus, namespace)
    pods.thread.start()
    load = Load(pods.urls, backend).start(0.0)
    state = {"plane": plane, "prometheus": prometheus, "operator": first, "make_operator": operator,
             "pods": pods, "load": load, "namespace": namespace}
    yield state
    load.stop.set()
    pods.close()
    state["operator"].stop()
    prometheus.stop()


def replicas(plane: ControlPlane, namespace: str) -> int:
    return int(client.AppsV1Api(plane.api_client()).read_namespaced_deployment(NAME, namespace).spec.replicas)


def condition(plane: ControlPlane, namespace: str, type_: str) -> str | None:
    obj = client.CustomObjectsApi(plane.api_client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME)
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def ticks(stack: dict[str, Any], count: int) -> None:
    """Wait for ``count`` more decisions of the leader's autoscaler (one per tick)."""
    operator = stack["operator"]
    seen = operator.metric("tokenworks_autoscaler_decisions_total")
    eventually(lambda: operator.metric("tokenworks_autoscaler_decisions_total") >= seen + count,
               timeout=30 * count, interval=0.2)


@pytest.mark.timeout(400)
def test_load_step_prometheus_outage_and_operator_restart(stack: dict[str, Any]) -> None:
    plane, namespace, load = stack["plane"], stack["namespace"], stack["load"]
    eventually(lambda: replicas(plane, namespace) == 1 and len(stack["pods"].urls()) == 1, timeout=60)

    # Step up: 12 req/s x 64 tokens = 768 tok/s, 2.6 replicas' worth -> 3.
    load.rate = 12.0
    started = time.monotonic()
    eventually(lambda: replicas(plane, namespace) >= 3, timeout=60, interval=1)
    # 10 s for the rate window to fill, then one tick; 20 ticks is the bound on a loaded 2-core machine.
    assert time.monotonic() - started < 20 * TICK, "scaled up within a bounded number of ticks"
    eventually(lambda: condition(plane, namespace, "MetricsAvailable") == "True", timeout=30)
    peak = replicas(plane, namespace)

    # Prometheus stops: replicas stay, MetricsAvailable turns False; it comes back, scaling resumes.
    stack["prometheus"].stop()
    eventually(lambda: condition(plane, namespace, "MetricsAvailable") == "False", timeout=30, interval=1)
    load.rate = 1.0  # lower load that must NOT cause a scale-down while blind
    ticks(stack, 3)
    assert replicas(plane, namespace) == peak
    stack["prometheus"].start()
    eventually(lambda: condition(plane, namespace, "MetricsAvailable") == "True", timeout=60, interval=1)

    # Load drops (1 req/s = 64 tok/s): down only after the stabilization window, and an operator
    # restart in the middle of the window does not shorten it.
    dropped = time.monotonic()
    ticks(stack, STABILIZATION // (2 * TICK))  # half the window
    assert replicas(plane, namespace) == peak
    stack["operator"].kill()
    stack["operator"] = stack["make_operator"]("e2e-second")
    eventually(stack["operator"].is_leader, timeout=30)
    restarted = time.monotonic()
    eventually(lambda: replicas(plane, namespace) < peak, timeout=90, interval=1)
    assert time.monotonic() - dropped >= STABILIZATION
    assert time.monotonic() - restarted >= STABILIZATION - TICK, "the restarted operator kept the window"
    eventually(lambda: replicas(plane, namespace) == 1, timeout=90, interval=1)
