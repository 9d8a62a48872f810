"""The autoscaler loop against the real control plane and the real operator, with a fake metric source
and a fake clock: scale-up, stabilized scale-down, missing metrics, restarts, quiet ticks, explain, and
the count handed over when autoscaling is switched off and on again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from controllers.autoscaling.loop import AutoscalerLoop
from controllers.kube import Kube
from controllers.metrics import FakeMetricSource, Target
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import event_seen, eventually

GROUP, VERSION, PLURAL = "tokenworks.dev", "v1alpha1", "modeldeployments"
CAPACITY = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def operator(full_control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    install_api_and_rbac(full_control_plane)
    kubeconfig = service_account_kubeconfig(full_control_plane, full_control_plane.workdir / "as.kubeconfig")
    # The operator's own autoscaler never ticks here: the test drives an in-process loop instead.
    process = OperatorProcess(full_control_plane, kubeconfig, "as-operator", resync_seconds=5)
    process.argv.append("--autoscaler-tick=1000000")
    process.start()
    eventually(process.is_leader, timeout=30)
    yield process
    process.stop()


def deploy(plane: ControlPlane, namespace: str, **autoscaling: Any) -> Target:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    # The engine backend: its pods export token counts, so a load is set in tokens directly.
    manifest["spec"]["engine"]["backend"] = "tensorrt-engine"
    manifest["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 8,
                                       "tokensPerSecondPerReplica": CAPACITY,
                                       "scaleDownStabilizationSeconds": 120, **autoscaling}
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    eventually(lambda: deployment_replicas(plane, namespace) == 1, timeout=60)
    # The first pod must have started: a Pending pod holds any further scale-up.
    core = client.CoreV1Api(plane.api_client())
    eventually(lambda: [p for p in core.list_namespaced_pod(namespace).items if p.status.phase == "Running"],
               timeout=60)
    return Target(namespace, "llama-8b", 0.95)


def load(source: FakeMetricSource, target: Target, tps: float | None, **overrides: float | None) -> None:
    """``tps`` output tokens/s in 200-token answers, TTFT p95 400 ms and a 30 ms mean ITL, as the engine
    backend's families would read (ITL = decoding seconds / tokens after the first)."""
    requests = None if tps is None else tps / 200
    decoding = None if tps is None or requests is None else 0.03 * (tps - requests)
    signals: dict[str, float | None] = {
        "outputTokensPerSecond": tps, "outputTokensPerSecondShort": tps, "inputTokensPerSecond": tps,
        "requestsPerSecond": requests, "requestSeconds": None if decoding is None else decoding + 0.5,
        "firstResponseSeconds": 0.5, "ttftSeconds": 0.4,
        "kvCacheUtilization": 0.2}
    signals.update(overrides)
    source.set(target, **signals)


def deployment_replicas(plane: ControlPlane, namespace: str) -> int:
    return int(client.AppsV1Api(plane.api_client()).read_namespaced_deployment("llama-8b", namespace).spec.replicas)


def md_status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(plane.api_client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "llama-8b")
    return dict(obj.get("status") or {})


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_scale_up_stabilized_scale_down_missing_metrics_and_restart(
    full_control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    plane = full_control_plane
    target = deploy(plane, namespace)
    clock, source = Clock(), FakeMetricSource()
    kube = Kube(plane.api_client())
    loop = AutoscalerLoop(kube, source, clock=clock, namespaces=[namespace])

    # A load step: 3.5 replicas' worth. Up at once, applied by the reconciler.
    load(source, target, 3500)
    decision = loop.tick()[(namespace, "llama-8b")]
    assert (decision.replicas, decision.rule) == (4, "throughput")
    eventually(lambda: deployment_replicas(plane, namespace) == 4, timeout=30)
    status = md_status(plane, namespace)
    assert status["autoscaler"]["desiredReplicas"] == 4
    assert conditions(status)["MetricsAvailable"] == ("True", "AllSignalsRead")
    assert conditions(status)["Ready"][0] in ("True", "False"), "the reconciler's conditions survive"
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b",
               lambda e: e.reason == "Scaled" and "from 1 to 4" in e.message)

    # Steady: no writes while nothing changes.
    clock.now += 15
    loop.tick()  # the SLO signal now recommends the new count (it was computed at 1 replica)
    writes = kube.counter.writes
    for _ in range(3):
        clock.now += 15
        loop.tick()
    assert kube.counter.writes == writes

    # The load drops: held for the 120 s window, then down.
    load(source, target, 900)
    for _ in range(7):
        clock.now += 15
        assert loop.tick()[(namespace, "llama-8b")].replicas == 4
    clock.now += 30
    assert loop.tick()[(namespace, "llama-8b")].replicas == 2, "past the window; at most half per tick"

    # Prometheus gone: hold, say so.
    source.fail = "connection refused"
    clock.now += 15
    blind = loop.tick()[(namespace, "llama-8b")]
    assert (blind.replicas, blind.rule) == (2, "hold")
    eventually(lambda: conditions(md_status(plane, namespace)).get("MetricsAvailable") == ("False", "SignalsMissing"),
               timeout=10)
    # That write did not scale: the last scaling decision (to 2) is carried, not dropped.
    assert md_status(plane, namespace)["lastScalingDecision"]["replicas"] == 2
    # The scale-down to 2 reaches the Deployment through the reconciler, and blind ticks keep it there.
    eventually(lambda: deployment_replicas(plane, namespace) == 2, timeout=30)
    source.fail = None

    # An operator restart (a fresh loop) with low load: nothing scales down within a window.
    restarted = AutoscalerLoop(Kube(plane.api_client()), source, clock=clock, namespaces=[namespace])
    load(source, target, 100)
    for _ in range(4):
        clock.now += 15
        assert restarted.tick()[(namespace, "llama-8b")].replicas == 2
    clock.now += 120
    assert restarted.tick()[(namespace, "llama-8b")].replicas == 1


def test_advisory_mode_records_but_does_not_apply(
    full_control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    plane = full_control_plane
    target = deploy(plane, namespace, advisory=True)
    source = FakeMetricSource()
    load(source, target, 5000)
    decision = AutoscalerLoop(Kube(plane.api_client()), source, namespaces=[namespace]).tick()[
        (namespace, "llama-8b")]
    assert decision.replicas == 5
    eventually(lambda: md_status(plane, namespace).get("autoscaler", {}).get("desiredReplicas") == 5, timeout=10)
    event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b",
               lambda e: e.reason == "ScaleAdvised")
    assert deployment_replicas(plane, namespace) == 1

    explained = subprocess.run(
        [sys.executable, "-m", "controllers.cli", "explain", "llama-8b", f"--kubeconfig={plane.kubeconfig}",
         "-n", namespace], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, env={"COLUMNS": "200"},
    )
    assert explained.returncode == 0, explained.stderr
    for text in ("5 replicas (advisory: recorded, not applied)", "throughput <- won", "5000 tok/s",
                 "MetricsAvailable"):
        assert text in explained.stdout, text


def test_switching_autoscaling_off_under_load_keeps_the_count_and_on_again_starts_from_it(
    full_control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    plane = full_control_plane
    target = deploy(plane, namespace)
    clock, source = Clock(), FakeMetricSource()
    loop = AutoscalerLoop(Kube(plane.api_client()), source, clock=clock, namespaces=[namespace])
    load(source, target, 3500)
    assert loop.tick()[(namespace, "llama-8b")].replicas == 4
    eventually(lambda: deployment_replicas(plane, namespace) == 4, timeout=30)
    eventually(lambda: (md_status(plane, namespace).get("replicaSource") or {}).get("owner") == "autoscaler",
               timeout=30)
    apps = client.AppsV1Api(plane.api_client())
    generation = apps.read_namespaced_deployment("llama-8b", namespace).metadata.generation

    # Off under load: spec.replicas still says 1; the 4 running are handed over, not cut.
    custom = client.CustomObjectsApi(plane.api_client())
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b",
                                          {"spec": {"autoscaling": {"enabled": False}}})
    eventually(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b")[
        "spec"]["replicas"] == 4, timeout=30)
    handed = event_seen(client.CoreV1Api(plane.api_client()), namespace, "llama-8b",
                        lambda e: e.reason == "AutoscalingHandedOver")
    assert handed.type == "Normal" and "autoscaling off; keeping 4 replicas" in handed.message
    eventually(lambda: (md_status(plane, namespace).get("replicaSource") or {}).get("owner") == "spec", timeout=30)
    deployment = apps.read_namespaced_deployment("llama-8b", namespace)
    assert deployment.spec.replicas == 4
    assert deployment.metadata.generation == generation, "the Deployment's count never changed"
    clock.now += 15
    assert loop.tick() == {}

    # By hand for a while, then on again: the decision of before (4) is stale; the count is 2.
    plane.kubectl("-n", namespace, "scale", "mdep", "llama-8b", "--replicas=2")
    eventually(lambda: deployment_replicas(plane, namespace) == 2, timeout=30)
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b",
                                          {"spec": {"autoscaling": {"enabled": True}}})
    eventually(lambda: (md_status(plane, namespace).get("replicaSource") or {}).get("owner") == "autoscaler",
               timeout=30)
    assert deployment_replicas(plane, namespace) == 2, "the stale decision is not applied"
    load(source, target, 1500)
    clock.now += 3600
    assert loop.tick()[(namespace, "llama-8b")].replicas == 2
    generation = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b")[
        "metadata"]["generation"]
    assert md_status(plane, namespace)["autoscaler"]["generation"] == generation
