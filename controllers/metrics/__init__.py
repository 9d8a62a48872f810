"""Metric sources for the autoscaler: a small interface, the Prometheus implementation, and a fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controllers.autoscaling.signals import Reading


@dataclass(frozen=True)
class Target:
    """One autoscaled ModelDeployment, as the metric source groups series."""

    namespace: str
    name: str
    percentile: float = 0.95
    activation_query: str | None = None  # spec.autoscaling.activation.query, read as "activation"
    # The InferencePool whose endpoint picker fronts the pods: its TTFT, ITL and queue are read too, and
    # the observer prefers them (docs/monitoring.md, "The endpoint picker's signals").
    inference_pool: str | None = None


@dataclass
class SignalReadings:
    """What the metric source knows about one target; absent keys read as EMPTY."""

    readings: dict[str, Reading] = field(default_factory=dict)

    def get(self, signal: str) -> Reading:
        return self.readings.get(signal) or Reading.empty()


# What a metric source reads per ModelDeployment, each from a family a real pod exports (on the model
# `tensorrt_llm`, docs/autoscaling.md has what each measures, its lag and resolution). The observer
# (controllers.autoscaling.observer) turns them into the policy's observations.
CORE_SIGNALS = (
    "requestsPerSecond", "requestsPerSecondShort",  # nv_inference_request_success
    "requestSeconds", "requestSecondsShort",  # nv_inference_request_duration_us: mean requests in flight
    "firstResponseSeconds", "firstResponseSecondsShort",  # first-response histogram sum: mean awaiting token 1
    # The same per pod, squared and summed: (sum F)^2 / sum F^2 is how many pods share the wait (one pod
    # holding a backlog reads 1 whatever the fleet's size; a fleet-wide shortage reads the fleet's size).
    "firstResponsePodSquaresShort",
    "ttftSeconds",  # first-response histogram quantile
    "ttftMedianSeconds",  # the same histogram's median: capacity short raises it, requests slow alone do not
)
# Only the legacy tensorrtllm backend exports these (its custom metrics reporter).
ENGINE_SIGNALS = (
    "outputTokensPerSecond", "outputTokensPerSecondShort",  # nv_llm_output_token_len_sum
    "inputTokensPerSecond", "inputTokensPerSecondShort",  # nv_llm_input_token_len_sum
    "kvCacheUtilization",  # nv_trt_llm_kv_cache_block_metrics
)
# Read only for targets with an InferencePool, from its endpoint picker (controllers.metrics.epp).
EPP_SIGNALS = (
    "eppTtftSeconds",  # inference_objective_request_ttft_seconds at the spec's percentile
    "eppItlSeconds",  # inference_objective_request_tpot_seconds (per-request mean ITL) at the percentile
    "eppQueue",  # inference_extension_flow_control_queue_size: requests held at the gateway
)
SIGNALS = CORE_SIGNALS + ENGINE_SIGNALS + EPP_SIGNALS


class MetricSource(Protocol):
    def observe(self, targets: list[Target], now: float) -> dict[Target, SignalReadings]:
        """Every signal for every target, in one batch per signal (not one query per target)."""
        ...


class FakeMetricSource:
    """Readings set by a test; ``fail`` makes every signal an ERROR, as an unreachable server would."""

    def __init__(self) -> None:
        self.values: dict[Target, dict[str, Reading]] = {}
        self.fail: str | None = None
        self.calls = 0

    def set(self, target: Target, **signals: float | None) -> None:
        self.values[target] = {k: Reading.of(v) for k, v in signals.items()}

    def observe(self, targets: list[Target], now: float) -> dict[Target, SignalReadings]:
        self.calls += 1
        if self.fail:
            return {t: SignalReadings({s: Reading.error(self.fail) for s in SIGNALS}) for t in targets}
        return {t: SignalReadings(dict(self.values.get(t, {}))) for t in targets}


class UnconfiguredSource:
    """Used when the operator runs without a Prometheus URL: every signal reads as an error, so
    autoscaled ModelDeployments hold their count and say why."""

    def observe(self, targets: list[Target], now: float) -> dict[Target, SignalReadings]:
        message = "no metric source configured (operator started without --prometheus-url)"
        return {t: SignalReadings({s: Reading.error(message) for s in SIGNALS}) for t in targets}
