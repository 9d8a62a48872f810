"""The one observer: what the policy sees, built from a metric source's readings and the pods' states.

The live loop (Prometheus, Kubernetes pods) and the simulator (its own series store, its replicas
described as pods) both call ``observe``, so "pending", "ready", "empty" and every derived figure mean
the same in both.

Where each observation comes from (docs/autoscaling.md has the worked numbers):

- **tensorrt-engine**: output and prompt tokens/s from the backend's token-length histograms (counted
  when a request completes), KV use from its block gauges, ITL as the window's mean: time after the
  first token over tokens after the first.
- **llmapi**: Triton core families only. In flight C = rate of the request-duration counter (Little's
  law), awaiting the first token F = rate of the first-response histogram's sum; decoding D = C - F.
  Token counts are not exported, so the performance model turns D into them: ITL(b) of a steady-state
  step (decodes and the prefill replacing finished requests) at the mean batch b = D / ready replicas,
  output tokens/s = D / ITL(b) + requests/s. KV use is not observable.
- **Queue and in flight** on both: C in flight; the queue is F beyond what the TTFT target allows
  (``late_requests``).
- **TTFT** on both: the percentile of ``nv_inference_first_response_histogram_ms``, interpolated within
  the buckets the repository sets around the target.
- **Behind an InferencePool** whose endpoint picker exports them (``controllers.metrics.epp``): TTFT and ITL
  are the picker's percentiles of what it measured per request (ITL per request, which no pod family
  gives), preferred to the pods'; the requests its flow control holds are added to the queue (they wait
  at the gateway, where no pod counts them) and, without an ``activation.query``, are what activates a
  deployment at zero. A picker's family that is absent, NaN or unreadable falls back to the pods'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controllers.autoscaling.signals import Observations, Quality, Reading
from controllers.metrics import SignalReadings
from inference_pods.performance import ReplicaModel

# Request shape assumed where prompt and output lengths cannot be measured (the LLM-API path): the mean
# context of a decoding request with 1,000 prompt and 200 output tokens is 1,100 tokens.
DEFAULT_SHAPE = (1000, 200)


@dataclass(frozen=True)
class PodCounts:
    """What the Kubernetes API says about a ModelDeployment's pods."""

    current: int  # the count the system is moving to
    ready: int = 0  # Ready condition True and not terminating
    pending: int = 0  # phase Pending: not scheduled, pulling, or preparing the model cache
    loading: int = 0  # Running but not yet Ready: the engine is loading
    unschedulable: bool = False  # the scheduler rejected a pending pod


def count_pods(pods: Iterable[dict[str, Any]], current: int) -> PodCounts:
    ready = pending = loading = 0
    unschedulable = False
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # draining: no longer capacity, and not coming back
        status = pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        phase = status.get("phase")
        if phase == "Pending":
            pending += 1
            unschedulable |= (conditions.get("PodScheduled") or {}).get("reason") == "Unschedulable"
        elif phase == "Running" and (conditions.get("Ready") or {}).get("status") == "True":
            ready += 1
        elif phase == "Running":
            loading += 1
    return PodCounts(current, ready, pending, loading, unschedulable)


def _ok(reading: Reading) -> float | None:
    return reading.value if reading.ok and reading.value is not None else None


def _derived(value: float | None, parts: Iterable[Reading], detail: str) -> Reading:
    """A figure computed from others: unusable when any part is, with the first part's reason."""
    for part in parts:
        if not part.ok:
            return Reading(None, part.quality, part.detail)
    if value is None or math.isnan(value) or math.isinf(value):
        return Reading(None, Quality.NAN, f"{detail}: no requests in the window")
    return Reading(value, Quality.OK, detail)


def _decoding(readings: SignalReadings, short: bool) -> tuple[Reading, Reading, Reading]:
    suffix = "Short" if short else ""
    c = readings.get("requestSeconds" + suffix)
    f = readings.get("firstResponseSeconds" + suffix)
    d = _ok(c), _ok(f)
    value = max(0.0, d[0] - d[1]) if d[0] is not None and d[1] is not None else None
    return _derived(value, (c, f), "requests decoding (in flight minus awaiting the first token)"), c, f


def llmapi_tokens(readings: SignalReadings, replica: ReplicaModel, ready: int, short: bool) -> tuple[Reading, Reading]:
    """(output tokens/s, mean ITL) modelled from the measured decoding concurrency."""
    decoding, _, _ = _decoding(readings, short)
    first = readings.get("requestsPerSecond" + ("Short" if short else ""))
    d, r = _ok(decoding), _ok(first)
    if d is None or r is None:
        bad = decoding if d is None else first
        return Reading(None, bad.quality, bad.detail), Reading(None, bad.quality, bad.detail)
    isl, osl = DEFAULT_SHAPE
    batch = max(1, round(d / max(1, ready)))
    # The steady-state iteration (decodes plus the prefill of the prompts replacing those that finish),
    # the same the per-replica capacity is computed with, so their ratio is a ratio of concurrencies.
    # Under a backlog this misreads the iteration; the policy then counts completions instead.
    itl = replica.steady_step_seconds(batch, isl, osl)
    note = f"modelled from {d:.1f} requests decoding ({batch} per ready replica)"
    return Reading(d / itl + r, Quality.OK, note), Reading(itl, Quality.OK, note)


def engine_itl(readings: SignalReadings) -> Reading:
    decoding, _, _ = _decoding(readings, short=False)
    tokens, requests = readings.get("outputTokensPerSecond"), readings.get("requestsPerSecond")
    d, t, r = _ok(decoding), _ok(tokens), _ok(requests)
    after_first = (t - r) if t is not None and r is not None else None
    value = d / after_first if d is not None and after_first is not None and after_first > 0 else math.nan
    return _derived(value, (decoding, tokens, requests), "mean over the window: time after the first token "
                    "over tokens after the first")


def late_requests(readings: SignalReadings, ttft_target_seconds: float) -> Reading:
    """The queue: requests awaiting their first token beyond what meeting the TTFT target allows,
    F - requests/s x target (Little's law on the wait for the first token). 10 requests/s at a 0.5 s mean
    TTFT against a 2 s target: F = 5, allowance 20, queue 0; a backlog that takes the mean to 3 s: 10."""
    awaiting, requests = readings.get("firstResponseSeconds"), readings.get("requestsPerSecond")
    f, r = _ok(awaiting), _ok(requests)
    value = max(0.0, f - r * ttft_target_seconds) if f is not None and r is not None else None
    return _derived(value, (awaiting, requests), "requests awaiting their first token beyond the TTFT target")


def mean_wait(readings: SignalReadings) -> Reading:
    """Mean seconds to the first token over the short window: requests awaiting it over requests/s."""
    awaiting, requests = readings.get("firstResponseSecondsShort"), readings.get("requestsPerSecondShort")
    f, r = _ok(awaiting), _ok(requests)
    value = f / r if f is not None and r else math.nan
    return _derived(value, (awaiting, requests), "mean time to the first token (short window)")


def awaiting_pods(readings: SignalReadings) -> Reading:
    """How many pods share the wait for the first token: (sum F)^2 / sum F^2 over the pods' F (the
    participation ratio). One pod awaiting 300 s/s and nine 1 s/s: 309^2 / 90,009 = 1.06; ten alike: 10."""
    awaiting, squares = readings.get("firstResponseSecondsShort"), readings.get("firstResponsePodSquaresShort")
    f, q = _ok(awaiting), _ok(squares)
    value = f * f / q if f is not None and q else math.nan
    return _derived(value, (awaiting, squares), "pods sharing the wait for the first token")


def prefer_gateway(pods: Reading, gateway: Reading, what: str) -> Reading:
    """The endpoint picker's reading where it has one (it times every request it routes), else the pods'."""
    if gateway.ok:
        return Reading(gateway.value, Quality.OK, f"{what} measured by the endpoint picker")
    return pods


def gateway_queue(readings: SignalReadings, late: Reading, ready: int) -> Reading:
    """Requests held at the endpoint picker plus those late in the pods: two disjoint sets, a request the
    picker holds has reached no pod. 6 held and 4 late: 10. Held requests alone only with no ready pod (the
    pods' share is then none); otherwise an unreadable pods' share stays unreadable, never a zero."""
    held = readings.get("eppQueue")
    if not held.ok or held.value is None:
        return late
    if late.ok and late.value is not None:
        return Reading(held.value + late.value, Quality.OK, f"{held.value:.0f} held at the endpoint picker, "
                       f"{late.value:.1f} late in the pods")
    if ready == 0:
        return Reading(held.value, Quality.OK, "held at the endpoint picker (no ready pod)")
    return late


def activation_signal(readings: SignalReadings) -> Reading:
    """The spec's activation query when it has one (its threshold is in its units); otherwise the requests
    the endpoint picker holds for want of a pod."""
    configured = readings.readings.get("activation")
    if configured is not None:
        return configured
    held = readings.get("eppQueue")
    if held.ok:
        return Reading(held.value, Quality.OK, "requests held at the endpoint picker")
    return Reading(None, Quality.EMPTY, "no activation signal configured")


def observe(readings: SignalReadings, backend: str, replica: ReplicaModel, pods: PodCounts,
            ttft_target_seconds: float) -> Observations:
    """The policy's observations for one ModelDeployment."""
    ttft = prefer_gateway(readings.get("ttftSeconds"), readings.get("eppTtftSeconds"), "TTFT")
    _, in_flight, _ = _decoding(readings, short=False)
    # Both backends: the executor and the LLM API take every request at once, so a backlog shows as
    # time to the first token (the engine's own `waiting` gauge counts admitted, unscheduled requests only).
    queue = gateway_queue(readings, late_requests(readings, ttft_target_seconds), pods.ready)
    active = _derived(_ok(in_flight), (in_flight,), "requests in flight (window mean)")
    if backend == "tensorrt-engine":
        output, output_short = readings.get("outputTokensPerSecond"), readings.get("outputTokensPerSecondShort")
        inputs, inputs_short = readings.get("inputTokensPerSecond"), readings.get("inputTokensPerSecondShort")
        itl = engine_itl(readings)
        kv = readings.get("kvCacheUtilization")
    else:
        output, itl = llmapi_tokens(readings, replica, pods.ready, short=False)
        output_short, _ = llmapi_tokens(readings, replica, pods.ready, short=True)
        unexported = "not exported on the llmapi backend (Triton core families only)"
        inputs = inputs_short = kv = Reading(None, Quality.EMPTY, unexported)
    itl = prefer_gateway(itl, readings.get("eppItlSeconds"), "ITL")
    return Observations(
        output_tokens_per_second=output, output_tokens_per_second_short=output_short,
        input_tokens_per_second=inputs, input_tokens_per_second_short=inputs_short,
        ttft_seconds=ttft, itl_seconds=itl, queue=queue, in_flight=active, kv_utilization=kv,
        current_replicas=pods.current, ready_replicas=pods.ready, pending_replicas=pods.pending,
        unschedulable=pods.unschedulable, activation=activation_signal(readings), wait_short=mean_wait(readings),
        requests_per_second=readings.get("requestsPerSecond"), ttft_median_seconds=readings.get("ttftMedianSeconds"),
        requests_per_second_short=readings.get("requestsPerSecondShort"), awaiting_pods=awaiting_pods(readings),
    )
