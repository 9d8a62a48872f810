"""Every scaling policy the simulator can run, by name: the live autoscaler and the peers it is compared
with (``baselines``). Shared by ``tokenworks simulate --policy/--compare`` and ``bench/autoscaling.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controllers.simulation.baselines import (
    DynamoPlannerPolicy,
    HpaPolicy,
    KpaPolicy,
    StaticPolicy,
    gpu_utilisation,
    in_flight_per_pod,
    queue_per_pod,
)
from controllers.simulation.simulator import (
    Report,
    ScalingPolicy,
    SimulationConfig,
    SimulationResult,
    Simulator,
    TokenworksPolicy,
    report,
)
from controllers.simulation.trace import TraceRequest
from crds.models import ModelDeployment

POLICIES = ["tokenworks", "tokenworks-p99", "hpa-gpu-util", "hpa-in-flight", "keda-queue", "knative-kpa",
            "dynamo-planner", "static"]


def make_policy(name: str, md: ModelDeployment, peak: int) -> ScalingPolicy:
    """The policy ``name`` for ``md``, bounded by its min/max replicas; ``peak`` is the static count."""
    # HPA and Knative cannot scale to zero on their own metrics, so their floor is at least one.
    bounds: dict[str, Any] = {"min_replicas": max(1, md.spec.autoscaling.min_replicas),
                              "max_replicas": md.spec.autoscaling.max_replicas}
    # The in-flight target of HPA and Knative, sized as their users would from the SLO: the most
    # requests one replica holds while its iteration stays under the ITL target (the performance model
    # at 1,000/200 tokens), never from the trace being scored.
    slo = md.spec.autoscaling.slo
    concurrency = float(Simulator(md, []).replica_model.concurrency_at_slo(
        slo.inter_token_latency_milliseconds / 1e3))
    match name:
        case "tokenworks":
            return TokenworksPolicy(md)
        case "tokenworks-p99":  # the same autoscaler with its latency targets at p99 instead of p95
            slo = md.spec.autoscaling.slo.model_copy(update={"percentile": 0.99})
            strict = md.model_copy(update={"spec": md.spec.model_copy(update={
                "autoscaling": md.spec.autoscaling.model_copy(update={"slo": slo})})})
            policy = TokenworksPolicy(strict)
            policy.name = name
            return policy
        case "hpa-gpu-util":
            return HpaPolicy(name, gpu_utilisation, target=0.7, **bounds)
        case "hpa-in-flight":
            # With the 80% headroom Tokenworks' own capacity figure keeps (HPA has no target utilisation
            # of its own; Knative applies its 70% to the same concurrency).
            return HpaPolicy(name, in_flight_per_pod, target=0.8 * concurrency, **bounds)
        case "keda-queue":
            return HpaPolicy(name, queue_per_pod, target=4, external=True, **bounds)
        case "knative-kpa":
            # Knative documents `scale-down-delay` for slow-starting pods; these take 60-75 s to serve.
            return KpaPolicy(target_concurrency=concurrency, scale_down_delay=300.0, **bounds)
        case "dynamo-planner":
            return DynamoPlannerPolicy(md, **bounds)
        case "static":
            return StaticPolicy(peak)
    raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICIES)}")


def simulated_deployment(policy: ScalingPolicy, md: ModelDeployment) -> ModelDeployment:
    """The spec to simulate ``policy`` with: the latency percentile the autoscaler reads is the one in its
    own spec (tokenworks-p99's), the rest is ``md``."""
    return policy.md if isinstance(policy, TokenworksPolicy) else md


@dataclass
class PolicyRun:
    name: str
    report: Report
    result: SimulationResult


def simulate_policy(name: str, md: ModelDeployment, requests: list[TraceRequest], *, peak: int,
                    start: int | None = None, feasible: int | None = None, rejected: int = 0,
                    progress: Callable[[float], None] | None = None) -> PolicyRun:
    """Replay ``requests`` under the policy ``name``, starting at ``start`` replicas (default: the spec's
    minimum; static starts and stays at ``peak``), scored against ``md``'s SLO."""
    policy = make_policy(name, md, peak)
    initial = peak if name == "static" else start
    result = Simulator(simulated_deployment(policy, md), requests, SimulationConfig(initial_replicas=initial),
                       policy=policy).run(progress)
    slo = md.spec.autoscaling.slo
    summary = report(result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3,
                     len(requests), feasible=feasible, rejected=rejected)
    return PolicyRun(name, summary, result)
