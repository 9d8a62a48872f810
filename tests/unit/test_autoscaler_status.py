"""The autoscaler loop's status writes against a fake API: its whole intent every time, decisions stamped with
their generation, stale ones ignored."""

from __future__ import annotations

import copy
from typing import Any

from controllers.autoscaling.loop import AutoscalerLoop
from controllers.kube import ManifestT
from controllers.metrics import FakeMetricSource, Target
from crds.models import API_VERSION, KIND
from inference_pods.templates import INSTANCE_LABEL
from tests.support.fake_kube import FakeKube

AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "tokensPerSecondPerReplica": 1000.0,
               "scaleDownStabilizationSeconds": 120}
TARGET = Target("ns", "m", 0.95)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def model(generation: int = 1, autoscaling: dict[str, Any] | None = None) -> ManifestT:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
            "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                     "engine": {"backend": "tensorrt-engine"}, "gpu": {"product": "H100-SXM"}, "replicas": 1,
                     "autoscaling": autoscaling or AUTOSCALING}}


def pods(count: int) -> list[ManifestT]:
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"m-{i}", "namespace": "ns", "labels": {INSTANCE_LABEL: "m"}},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
            for i in range(count)]


def running(kube: FakeKube, replicas: int) -> None:
    """What the reconciler and the Deployment controller would make of a decision."""
    kube.objects = {k: v for k, v in kube.objects.items() if k[0] != "Pod"}
    kube.store({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m", "namespace": "ns"},
                "spec": {"replicas": replicas}})
    for pod in pods(replicas):
        kube.store(pod)


def edit(kube: FakeKube, **spec: Any) -> None:
    obj = kube.objects[(KIND, "ns", "m")]
    obj["spec"].update(spec)
    obj["metadata"]["generation"] += 1
    kube.store(obj)


def load(source: FakeMetricSource, tps: float) -> None:
    """``tps`` output tokens/s in 200-token answers, well within the latency targets."""
    requests = tps / 200
    source.set(TARGET, outputTokensPerSecond=tps, outputTokensPerSecondShort=tps, inputTokensPerSecond=tps,
               requestsPerSecond=requests, requestSeconds=0.03 * (tps - requests) + 0.5,
               firstResponseSeconds=0.5, ttftSeconds=0.4, kvCacheUtilization=0.2)


def status(kube: FakeKube) -> dict[str, Any]:
    return copy.deepcopy(kube.objects[(KIND, "ns", "m")]["status"])


def test_the_last_scaling_decision_survives_writes_that_do_not_scale() -> None:
    kube, source, clock = FakeKube(model()), FakeMetricSource(), Clock()
    running(kube, 1)
    loop = AutoscalerLoop(kube, source, clock=clock, namespaces=["ns"])
    load(source, 3500)
    assert loop.tick()[("ns", "m")].replicas == 4
    first = status(kube)
    assert first["autoscaler"]["generation"] == 1
    assert first["lastScalingDecision"]["replicas"] == 4

    # A spec edit: the decision is re-stamped for the new generation (a write), at the same count.
    running(kube, 4)
    edit(kube, engine={"backend": "tensorrt-engine", "maxBatchSize": 64})
    writes = kube.writes()["patch_status ModelDeployment"]
    clock.now += 15
    assert loop.tick()[("ns", "m")].replicas == 4
    assert kube.writes()["patch_status ModelDeployment"] == writes + 1
    second = status(kube)
    assert second["autoscaler"]["generation"] == 2
    assert second["lastScalingDecision"] == first["lastScalingDecision"], "carried forward, not dropped"


def test_a_decision_from_before_autoscaling_was_switched_off_is_stale() -> None:
    kube, source, clock = FakeKube(model()), FakeMetricSource(), Clock()
    running(kube, 1)
    loop = AutoscalerLoop(kube, source, clock=clock, namespaces=["ns"])
    load(source, 3500)
    assert loop.tick()[("ns", "m")].replicas == 4
    running(kube, 4)

    # Off (the count handed over), a week at 2 replicas by hand, then on again under a lighter load.
    edit(kube, autoscaling={**AUTOSCALING, "enabled": False}, replicas=4)
    clock.now += 15
    assert loop.tick() == {}
    clock.now += 7 * 24 * 3600
    running(kube, 2)
    edit(kube, replicas=2)
    edit(kube, autoscaling=AUTOSCALING)
    load(source, 1500)
    decision = loop.tick()[("ns", "m")]
    assert decision.replicas == 2, "from the current count, not last week's 4"
    assert status(kube)["autoscaler"]["generation"] == 4

    # A new operator process sees the same: last week's saved state is not resumed either.
    stale = model(generation=4)
    stale["status"] = {"autoscaler": {**status(kube)["autoscaler"], "desiredReplicas": 6, "generation": 1}}
    restarted = FakeKube(stale)
    running(restarted, 2)
    assert AutoscalerLoop(restarted, source, clock=clock, namespaces=["ns"]).tick()[("ns", "m")].replicas == 2
