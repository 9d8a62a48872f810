"""What the autoscaler observes: readings that say whether they can be trusted, never a silent zero."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    OK = "ok"
    EMPTY = "empty"  # the query returned no series: no pod exports it (yet)
    ERROR = "error"  # the metric source failed (unreachable, bad query, HTTP error)
    NAN = "nan"  # the value is NaN or infinite (e.g. a quantile over no requests)
    STALE = "stale"  # the newest sample is older than the staleness limit


@dataclass(frozen=True)
class Reading:
    value: float | None
    quality: Quality = Quality.OK
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.quality is Quality.OK and self.value is not None

    @classmethod
    def of(cls, value: float | None, age_seconds: float = 0.0, stale_after: float = 120.0) -> Reading:
        """Classify a raw value: NaN/Inf and old samples are never passed on as numbers."""
        if value is None:
            return cls(None, Quality.EMPTY, "no series")
        if math.isnan(value) or math.isinf(value):
            return cls(None, Quality.NAN, f"value {value}")
        if age_seconds > stale_after:
            return cls(None, Quality.STALE, f"newest sample {age_seconds:.0f}s old")
        return cls(value)

    @classmethod
    def error(cls, detail: str) -> Reading:
        return cls(None, Quality.ERROR, detail)

    @classmethod
    def empty(cls, detail: str = "no series") -> Reading:
        return cls(None, Quality.EMPTY, detail)

    def describe(self) -> str:
        if self.ok and self.value is not None:
            return f"{self.value:.4g}"
        return f"unavailable ({self.quality.value}: {self.detail})"


@dataclass(frozen=True)
class Observations:
    """Everything one decision for one ModelDeployment sees, at one instant."""

    output_tokens_per_second: Reading  # over the stable window (default 2 min)
    output_tokens_per_second_short: Reading  # over the panic window (default 30 s)
    input_tokens_per_second: Reading
    ttft_seconds: Reading  # at the spec's percentile
    itl_seconds: Reading  # at the spec's percentile
    queue: Reading  # requests waiting, all pods together
    in_flight: Reading  # requests admitted, all pods together
    kv_utilization: Reading  # used / max KV blocks, 0..1
    # From the Kubernetes API, always known:
    current_replicas: int = 0  # Deployment spec.replicas
    ready_replicas: int = 0
    pending_replicas: int = 0  # pods not yet scheduled or started
    unschedulable: bool = False  # a pending pod was rejected by the scheduler
    # Prompt tokens over the panic window: a burst of long prompts shows here before it shows in output.
    input_tokens_per_second_short: Reading = Reading(None, Quality.EMPTY, "not read")
    # Mean time to the first token over the panic window (awaiting / first responses, Little's law):
    # under a growing backlog it rises at (arrivals / service - 1) seconds per second.
    wait_short: Reading = Reading(None, Quality.EMPTY, "not read")
    # Requests completed per second (stable and panic windows): under a backlog, times the tokens a
    # request carries, the one token count that stays true on the llmapi backend.
    requests_per_second: Reading = Reading(None, Quality.EMPTY, "not read")
    requests_per_second_short: Reading = Reading(None, Quality.EMPTY, "not read")
    # The TTFT median: a shortage of capacity raises it; requests slow even alone raise only the tail.
    ttft_median_seconds: Reading = Reading(None, Quality.EMPTY, "not read")
    # How many pods share the wait for the first token (short window): (sum F)^2 / sum F^2 over the pods'
    # awaiting-first-token figures F. One pod holding a backlog reads 1; every pod queueing alike, the fleet.
    awaiting_pods: Reading = Reading(None, Quality.EMPTY, "not read")
    # From outside the pods (spec.autoscaling.activation): what wakes a deployment at zero.
    activation: Reading = Reading(None, Quality.EMPTY, "no activation signal configured")

    def replaced(self, **readings: Reading) -> Observations:
        """``dataclasses.replace`` without re-running the frozen 20-field ``__init__`` (about 1 us against 8;
        the policy corrects two readings at every decision of every ModelDeployment): the same fields with
        ``readings`` in their place. Every field is a plain value and there is no ``__post_init__``."""
        unknown = readings.keys() - self.__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"Observations has no field {', '.join(sorted(unknown))}")
        new = object.__new__(Observations)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(readings)
        return new

    def metric_readings(self) -> dict[str, Reading]:
        return {
            "outputTokensPerSecond": self.output_tokens_per_second,
            "outputTokensPerSecondShort": self.output_tokens_per_second_short,
            "inputTokensPerSecond": self.input_tokens_per_second,
            "inputTokensPerSecondShort": self.input_tokens_per_second_short,
            "ttftSeconds": self.ttft_seconds,
            "interTokenLatencySeconds": self.itl_seconds,
            "queue": self.queue,
            "inFlight": self.in_flight,
            "kvCacheUtilization": self.kv_utilization,
            "activation": self.activation,
        }
