"""The simulator as a metric source: the families a pod exports, kept per second, and read back with
Prometheus' semantics, so the policy in a simulation sees what it sees in production.

What is kept is what the twin's ``/metrics`` holds for the ``tensorrt_llm`` model, summed over
replicas as the queries sum over pods: the request-success and request-duration counters (counted when
a request completes, so they lag by its duration), the first-response histogram in the repository's
buckets (counted at the first token), and on the engine backend the token-length histograms' sums
(counted at completion) and the KV-cache gauges (sampled at each scrape). ``readings`` answers
each signal of ``controllers.metrics.SIGNALS`` as the Prometheus source's query does: ``rate()`` over
the window ending a scrape ago, ``histogram_quantile`` interpolated within the buckets, and no series
(EMPTY) where no replica has lived in the window, as at zero pods.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field

from controllers.autoscaling.signals import Quality, Reading
from controllers.metrics import SignalReadings


def histogram_quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """Prometheus' ``histogram_quantile`` over per-bucket (not cumulative) counts; the last count is
    the +Inf bucket. NaN without observations; a rank in the +Inf bucket reads as the highest finite
    bound; linear interpolation within a bucket, the first one starting at 0."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1]


@dataclass
class SimulatedSeries:
    """Per-second increments of the counters a scrape would show, and gauge samples per scrape."""

    buckets_ms: list[float]
    scrape_seconds: float = 15.0
    success: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    duration_seconds: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    first_response_seconds: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    first_response_buckets: dict[int, list[int]] = field(default_factory=dict)
    # Per second, the TTFT sum per pod: each pod exports its own series, and one query squares them.
    first_response_by_pod: dict[int, dict[int, float]] = field(default_factory=dict)
    output_tokens: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    input_tokens: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    gauges: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (scrape time, values)

    # -- what the pods count -------------------------------------------------------------------------
    def first_token(self, at: float, ttft: float, pod: int = 0) -> None:
        second = int(at)
        self.first_response_seconds[second] += ttft
        by_pod = self.first_response_by_pod.setdefault(second, {})
        by_pod[pod] = by_pod.get(pod, 0.0) + ttft
        counts = self.first_response_buckets.setdefault(second, [0] * (len(self.buckets_ms) + 1))
        counts[bisect.bisect_left(self.buckets_ms, ttft * 1e3)] += 1

    def finished(self, at: float, duration: float, input_tokens: int, output_tokens: int) -> None:
        second = int(at)
        self.success[second] += 1
        self.duration_seconds[second] += duration
        self.output_tokens[second] += output_tokens
        self.input_tokens[second] += input_tokens

    def scrape(self, at: float, values: dict[str, float]) -> None:
        self.gauges.append((at, values))

    # -- what the queries read --------------------------------------------------------------------------
    @staticmethod
    def _observed(end: float, window: float) -> float:
        """The part of a rate window the run has seen: Prometheus' rate() extrapolates over a series
        younger than its range rather than averaging in zeros from before it existed."""
        return max(1.0, min(window, end))

    def _rate(self, per_second: dict[int, float], end: float, window: float) -> float:
        start = end - window
        return sum(per_second.get(s, 0.0) for s in range(math.floor(start), math.floor(end))) / \
            self._observed(end, window)

    def _pod_squares(self, end: float, window: float) -> float:
        """sum over pods of rate(pod's TTFT sum)^2, as the ``firstResponsePodSquaresShort`` query reads."""
        sums: dict[int, float] = {}
        for second in range(math.floor(end - window), math.floor(end)):
            for pod, value in self.first_response_by_pod.get(second, {}).items():
                sums[pod] = sums.get(pod, 0.0) + value
        observed = self._observed(end, window)
        return sum((v / observed) ** 2 for v in sums.values())

    def _gauge(self, name: str, at: float) -> float | None:
        index = bisect.bisect_right([g[0] for g in self.gauges], at) - 1
        return self.gauges[index][1].get(name) if index >= 0 else None

    def readings(self, now: float, window: float, short_window: float, percentile: float,
                 engine_backend: bool, any_pod: bool = True) -> SignalReadings:
        """Every signal at ``now``; ``any_pod``: some replica lived in the window (else no series)."""
        seen = now - self.scrape_seconds  # the newest scrape is up to one interval old
        out: dict[str, Reading] = {}
        if seen < self.scrape_seconds:
            # rate() needs two scrapes: until then every rate series is empty.
            empty = Reading(None, Quality.EMPTY, "fewer than two scrapes since the start")
            return SignalReadings({k: empty for k in _RATE_SIGNALS})
        if not any_pod:
            empty = Reading(None, Quality.EMPTY, "no pod exported a series in the window")
            return SignalReadings({k: empty for k in _RATE_SIGNALS})
        for suffix, w in (("", window), ("Short", short_window)):
            out["requestsPerSecond" + suffix] = Reading(self._rate(self.success, seen, w))
            out["requestSeconds" + suffix] = Reading(self._rate(self.duration_seconds, seen, w))
            out["firstResponseSeconds" + suffix] = Reading(self._rate(self.first_response_seconds, seen, w))
            if engine_backend:
                out["outputTokensPerSecond" + suffix] = Reading(self._rate(self.output_tokens, seen, w))
                out["inputTokensPerSecond" + suffix] = Reading(self._rate(self.input_tokens, seen, w))
        out["firstResponsePodSquaresShort"] = Reading(self._pod_squares(seen, short_window))
        counts = [0.0] * (len(self.buckets_ms) + 1)
        for second in range(math.floor(seen - window), math.floor(seen)):
            for i, c in enumerate(self.first_response_buckets.get(second, ())):
                counts[i] += c
        quantile = histogram_quantile(percentile, self.buckets_ms, counts)
        out["ttftSeconds"] = Reading.of(quantile / 1e3 if not math.isnan(quantile) else math.nan)
        median = histogram_quantile(0.5, self.buckets_ms, counts)
        out["ttftMedianSeconds"] = Reading.of(median / 1e3 if not math.isnan(median) else math.nan)
        if engine_backend:
            for name in ("kvCacheUtilization",):
                value = self._gauge(name, now)
                out[name] = Reading(value) if value is not None else Reading.empty()
        return SignalReadings(out)


_RATE_SIGNALS = ("requestsPerSecond", "requestsPerSecondShort", "requestSeconds", "requestSecondsShort",
                 "firstResponseSeconds", "firstResponseSecondsShort", "firstResponsePodSquaresShort",
                 "ttftSeconds", "ttftMedianSeconds", "outputTokensPerSecond",
                 "outputTokensPerSecondShort", "inputTokensPerSecond", "inputTokensPerSecondShort")
