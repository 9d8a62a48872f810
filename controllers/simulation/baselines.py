"""Peer autoscaling policies, implemented from their documented algorithms and defaults, for the
simulator. Sources and constants are listed in docs/baselines.md; each class docstring names its rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controllers.autoscaling.loop import capacity_for
from controllers.simulation.simulator import Simulator
from crds.models import ModelDeployment

Metric = Callable[[Simulator, float, "HpaPolicy"], float | None]


def gpu_utilisation(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """Mean GPU utilisation of the ready replicas since the previous sync (DCGM's GPU_UTIL, 0..1)."""
    ready = sim.ready_replicas(now)
    if not ready:
        return None
    busy = sim.busy_seconds(now)
    last_time, last_busy = policy.memory.get("gpu", (now - policy.tick_seconds, busy))
    policy.memory["gpu"] = (now, busy)
    elapsed = max(now - last_time, 1e-9)
    return min(1.0, max(0.0, (busy - last_busy) / (elapsed * len(ready))))


def in_flight_per_pod(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """Requests admitted or waiting per ready pod (a Pods metric)."""
    ready = sim.ready_replicas(now)
    if not ready:
        return None
    return sum(len(r.batcher.active) + len(r.batcher.waiting) for r in ready) / len(ready)


def queue_per_pod(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """KEDA's Prometheus scaler: the query's total (waiting requests) spread over the current replicas,
    which the HPA compares with the per-replica threshold (an AverageValue target)."""
    waiting = sum(len(r.batcher.waiting) for r in sim.ready_replicas(now)) + len(sim.unrouted)
    return waiting / max(1, sim.desired)


@dataclass
class HpaPolicy:
    """Kubernetes HPA (autoscaling/v2), as its replica calculator computes it. A Pods metric: the usage
    ratio over the ready pods, desired = ceil(ratio x ready pods), unchanged within the 0.1 tolerance;
    with pods not yet ready (pending, or loading and so without metrics) the ratio is recomputed with
    them at 0 on the way up (at the target on the way down) over all pods, and no change if that flips
    its direction. An External metric with an AverageValue target (KEDA): desired = ceil(total /
    target). Then up by at most max(4 pods, 100%) per 15 s; down to the highest recommendation of the
    last 300 s; bounded by min/max replicas. The recommendation history starts with the current count,
    as ``recordInitialRecommendation`` (horizontal.go) seeds it, so a warm start does not collapse at the
    first sync."""

    name: str
    metric: Metric
    target: float
    min_replicas: int
    max_replicas: int
    tick_seconds: float = 15.0
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    external: bool = False  # KEDA's metric: an External metric with an AverageValue target
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    history: list[tuple[float, int]] = field(default_factory=list)

    def _calculate(self, ratio: float, current: int, ready: int, not_ready: int) -> int:
        """pkg/controller/podautoscaler/replica_calculator.go, calcPlainMetricReplicas."""
        if self.external or not_ready == 0:
            if abs(ratio - 1) <= self.tolerance:
                return current
            return math.ceil(ratio * (current if self.external else ready))
        pods = ready + not_ready
        # The pods without metrics count as 0 on the way up, at the target on the way down.
        adjusted = ratio * ready / pods if ratio > 1 else (ratio * ready + not_ready) / pods
        if abs(adjusted - 1) <= self.tolerance or (ratio < 1 < adjusted) or (ratio > 1 > adjusted):
            return current
        desired = math.ceil(adjusted * pods)
        if (adjusted < 1 and desired > current) or (adjusted > 1 and desired < current):
            return current
        return desired

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        current = max(sim.desired, 1)
        value = self.metric(sim, now, self)
        if value is None:
            return sim.desired, "hold", "no metric"
        ratio = value / self.target
        ready = len(sim.ready_replicas(now))
        not_ready = sum(1 for r in sim.replicas if r.serving and r.ready_at > now)
        recommendation = self._calculate(ratio, current, ready, not_ready)
        if not self.history:  # horizontal.go: recordInitialRecommendation(currentReplicas, key)
            self.history.append((now, current))
        self.history = [(t, r) for t, r in self.history if now - t <= self.stabilization_seconds]
        self.history.append((now, recommendation))
        desired = recommendation
        if desired < current:
            desired = min(current, max(r for _, r in self.history))
        desired = min(desired, max(2 * current, current + 4))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        return desired, "hpa", f"{self.name}: metric {value:.3g} / target {self.target:.3g}"


@dataclass
class KpaPolicy:
    """Knative's KPA: desired = ceil(average concurrency / (target x 0.7)) over a 60 s stable window,
    ticking every 2 s; when the 6 s panic window asks for at least twice the ready pods it panics for
    60 s, scaling on the panic window and never down; down by at most half per tick. With
    ``scale_down_delay`` (Knative's `scale-down-delay`, documented for pods that are slow to start) a
    scale-down goes only to the highest count decided within that delay."""

    target_concurrency: float
    min_replicas: int
    max_replicas: int
    name: str = "knative-kpa"
    tick_seconds: float = 2.0
    target_utilisation: float = 0.7
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    scale_down_delay: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    decided: list[tuple[float, int]] = field(default_factory=list)
    panic_until: float = -1.0

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        ready = sim.ready_replicas(now)
        concurrency = sum(len(r.batcher.active) + len(r.batcher.waiting) for r in ready) + len(sim.unrouted)
        self.samples = [(t, c) for t, c in self.samples if now - t < self.stable_window]
        self.samples.append((now, concurrency))
        per_pod = self.target_concurrency * self.target_utilisation

        def average(window: float) -> float:
            values = [c for t, c in self.samples if now - t < window]
            return sum(values) / len(values)

        stable = math.ceil(average(self.stable_window) / per_pod)
        panic = math.ceil(average(self.panic_window) / per_pod)
        current = max(sim.desired, 1)
        if panic >= self.panic_threshold * max(len(ready), 1):
            self.panic_until = now + self.stable_window
        if now < self.panic_until:
            desired, rule = max(panic, current), "panic"
        else:
            desired, rule = stable, "stable"
        desired = max(desired, math.floor(current / self.max_scale_down_rate))
        if self.scale_down_delay > 0:  # autoscaler.go: the max over the delay window (a max-timed-float)
            self.decided = [(t, d) for t, d in self.decided if now - t < self.scale_down_delay]
            self.decided.append((now, desired))
            desired = max(d for _, d in self.decided)
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        return desired, rule, f"concurrency {concurrency} (target {per_pod:.3g} per pod)"


# --- NVIDIA Dynamo's load predictors (ai-dynamo/dynamo components/src/dynamo/planner/core/load/predictors.py)
DYNAMO_ARIMA_MIN_POINTS = 5  # ARIMAPredictor's minimum_data_points


class LoadPredictor(Protocol):
    """One of Dynamo's load predictors (core/load/predictors.py): a value per throughput interval in, a
    forecast of the next interval's out."""

    def add(self, value: float) -> None: ...

    def predict(self) -> float: ...


def _admit(history: list[float], value: float) -> bool:
    """BasePredictor.add_data_point: a non-finite reading counts as 0, and the zeros of the idle time before
    the first traffic are skipped. True when the value was kept."""
    value = value if math.isfinite(value) else 0.0
    if value == 0 and not history:
        return False
    history.append(value)
    return True


@dataclass
class ConstantPredictor:
    """Dynamo's ConstantPredictor: the next interval is the last one."""

    history: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        _admit(self.history, value)

    def predict(self) -> float:
        return self.history[-1] if self.history else 0.0


@dataclass
class ArimaPredictor:
    """Dynamo's default predictor (ARIMAPredictor, `load_predictor = "arima"`): pmdarima's auto_arima, fit
    on the whole series once it has 5 points, then only updated with each new point (the order is not
    searched again); a fit that collapses to (0, d, 0) is redone on log1p(y). Before 5 points, and while
    every point is equal (auto_arima forecasts 0 there), the last value; the forecast is floored at 0 and
    a failure falls back to the last value."""

    history: list[float] = field(default_factory=list)
    model: Any = None
    log1p: bool = False
    pending: list[float] = field(default_factory=list)  # points the fitted model has not seen

    def add(self, value: float) -> None:
        if _admit(self.history, value):
            self.history[-1] = max(0.0, self.history[-1])
            self.pending.append(self.history[-1])

    def predict(self) -> float:
        last = self.history[-1] if self.history else 0.0
        if len(self.history) < DYNAMO_ARIMA_MIN_POINTS or len(set(self.history)) == 1:
            return last
        import pmdarima  # a dev dependency, and slow to import: only when a forecast is due

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Dynamo passes suppress_warnings and filters the rest too
                if self.model is None:
                    self.model = pmdarima.auto_arima(self.history, suppress_warnings=True, error_action="ignore")
                    p, _, q = self.model.order
                    if p == 0 and q == 0:
                        try:
                            logged = [math.log1p(v) for v in self.history]
                            self.model = pmdarima.auto_arima(logged, suppress_warnings=True, error_action="ignore")
                            self.log1p = True
                        except Exception:  # Dynamo keeps the raw fit when the log1p one fails
                            self.log1p = False
                elif self.pending:
                    self.model.update([math.log1p(v) for v in self.pending] if self.log1p else self.pending)
                self.pending = []
                forecast = float(self.model.predict(n_periods=1)[0])
        except Exception:  # Dynamo: "ARIMA prediction failed ..., using last value"
            self.pending = []
            return last
        return max(0.0, math.expm1(forecast) if self.log1p else forecast)


@dataclass
class DynamoPlannerPolicy:
    """Dynamo's SLA planner, on an aggregated deployment: every 180 s, predict the next interval's load
    as the last interval's (its constant predictor), and provision for it from per-replica capacity
    under the SLO from the performance model: decode capacity at the ITL target, prefill capacity at
    the TTFT target; the larger replica count wins."""

    md: ModelDeployment
    min_replicas: int
    max_replicas: int
    name: str = "dynamo-planner"
    tick_seconds: float = 180.0

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        window = self.tick_seconds
        output = sim.output_rate(now, window)
        requests = sim.arrived_between(now - window, now)
        prompt_rate = sum(r.input_tokens for r in requests) / window
        decode_capacity = capacity_for(self.md)
        # Prefill capacity: prompt tokens per second one replica prefills at mean prompt length, with
        # the same 80% headroom, so prompts rarely queue past the TTFT target.
        mean_prompt = max(1, round(sum(r.input_tokens for r in requests) / len(requests))) if requests else 1000
        prefill_capacity = 0.8 * mean_prompt / sim.replica_model.prefill_seconds(mean_prompt)
        decode = math.ceil(output / decode_capacity) if output else 0
        prefill = math.ceil(prompt_rate / prefill_capacity) if prompt_rate else 0
        desired = max(self.min_replicas, min(self.max_replicas, max(decode, prefill)))
        return desired, "planner", (f"decode {decode}, prefill {prefill} for {output:.0f} tok/s and "
                                    f"{prompt_rate:.0f} prompt tok/s")


@dataclass
class StaticPolicy:
    """Static provisioning: a fixed count, typically the trace's peak need."""

    count: int
    name: str = "static"
    tick_seconds: float = 3600.0

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        return self.count, "static", f"fixed at {self.count}"
