"""The one observer and the simulator's series: pods counted the same way live and simulated, the
policy's observations derived from real families per backend, and Prometheus' histogram_quantile."""

from __future__ import annotations

import math

import pytest

from controllers.autoscaling.observer import PodCounts, count_pods, observe
from controllers.autoscaling.signals import Quality, Reading
from controllers.metrics import SignalReadings
from controllers.simulation.series import SimulatedSeries, histogram_quantile
from inference_pods.performance import ReplicaModel

REPLICA = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM")
TTFT_TARGET = 2.0


def readings(**values: float | None) -> SignalReadings:
    return SignalReadings({k: Reading.of(v) for k, v in values.items()})


def test_pods_are_counted_by_phase_and_readiness() -> None:
    pods = [
        {"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "Unschedulable"}]}},
        {"status": {"phase": "Pending"}},
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}},
        {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running",
                                                            "conditions": [{"type": "Ready", "status": "True"}]}},
    ]
    assert count_pods(pods, 4) == PodCounts(current=4, ready=1, pending=2, loading=1, unschedulable=True)


def test_engine_backend_reads_tokens_and_derives_the_mean_itl() -> None:
    # 10 requests/s of 100 tokens: 1,000 tok/s; 25 requests in flight, 5 awaiting their first token:
    # 20 decoding over 990 tokens after the first each second = 20.2 ms.
    r = readings(outputTokensPerSecond=1000, outputTokensPerSecondShort=1200, inputTokensPerSecond=5000,
                 requestsPerSecond=10, requestSeconds=25, firstResponseSeconds=5, ttftSeconds=0.4,
                 kvCacheUtilization=0.5)
    obs = observe(r, "tensorrt-engine", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    assert obs.output_tokens_per_second.value == 1000 and obs.output_tokens_per_second_short.value == 1200
    assert obs.itl_seconds.value == pytest.approx(20 / 990)
    assert (obs.queue.value, obs.in_flight.value, obs.kv_utilization.value) == (0, 25, 0.5)


def test_llmapi_backend_models_tokens_from_the_decoding_concurrency() -> None:
    r = readings(requestsPerSecond=10, requestsPerSecondShort=10, requestSeconds=25, requestSecondsShort=25,
                 firstResponseSeconds=5, firstResponseSecondsShort=5, ttftSeconds=0.4)
    obs = observe(r, "llmapi", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    itl = REPLICA.steady_step_seconds(10, 1000, 200)  # 20 decoding over 2 replicas
    assert obs.itl_seconds.value == pytest.approx(itl)
    assert obs.output_tokens_per_second.value == pytest.approx(20 / itl + 10)
    assert "modelled" in obs.output_tokens_per_second.detail
    assert obs.queue.value == 0 and obs.in_flight.value == 25  # 5 awaiting, 20 allowed at a 2 s target
    assert obs.input_tokens_per_second.quality is Quality.EMPTY  # no token counts on this backend
    assert obs.kv_utilization.quality is Quality.EMPTY


def test_a_missing_part_makes_the_derived_figure_missing() -> None:
    r = SignalReadings({"requestsPerSecond": Reading.of(10.0), "requestSeconds": Reading.error("down"),
                        "firstResponseSeconds": Reading.of(5.0)})
    obs = observe(r, "llmapi", REPLICA, PodCounts(current=1, ready=1), TTFT_TARGET)
    assert obs.output_tokens_per_second.quality is Quality.ERROR
    assert obs.itl_seconds.quality is Quality.ERROR
    assert observe(r, "tensorrt-engine", REPLICA, PodCounts(current=1, ready=1), TTFT_TARGET).itl_seconds.quality \
        is Quality.ERROR


def test_idle_traffic_reads_as_zero_not_missing() -> None:
    r = readings(requestsPerSecond=0, requestSeconds=0, firstResponseSeconds=0, requestsPerSecondShort=0,
                 requestSecondsShort=0, firstResponseSecondsShort=0)
    obs = observe(r, "llmapi", REPLICA, PodCounts(current=1, ready=1), TTFT_TARGET)
    assert obs.output_tokens_per_second.value == 0 and obs.queue.value == 0


def test_the_queue_is_what_waits_beyond_the_ttft_target() -> None:
    # 10 requests/s whose first token takes 3 s on average against a 2 s target: 10 late.
    r = readings(requestsPerSecond=10, requestSeconds=40, firstResponseSeconds=30)
    obs = observe(r, "llmapi", REPLICA, PodCounts(current=1, ready=1), TTFT_TARGET)
    assert obs.queue.value == pytest.approx(10)


def test_the_pods_sharing_the_wait_are_its_participation_ratio() -> None:
    # The docstring's numbers: one pod awaiting 300 s/s, nine 1 s/s, read as about one pod; ten alike as ten.
    one = readings(firstResponseSecondsShort=309, firstResponsePodSquaresShort=300**2 + 9)
    alike = readings(firstResponseSecondsShort=30, firstResponsePodSquaresShort=10 * 3**2)
    for r, expected in ((one, 309**2 / 90_009), (alike, 10.0)):
        obs = observe(r, "llmapi", REPLICA, PodCounts(current=10, ready=10), TTFT_TARGET)
        assert obs.awaiting_pods.value == pytest.approx(expected)
    # No first response in the window (0 / 0), or the squares unread: never a number.
    idle = observe(readings(firstResponseSecondsShort=0, firstResponsePodSquaresShort=0), "llmapi", REPLICA,
                   PodCounts(current=1, ready=1), TTFT_TARGET)
    assert idle.awaiting_pods.quality is Quality.NAN
    unread = observe(readings(firstResponseSecondsShort=3), "llmapi", REPLICA, PodCounts(current=1, ready=1),
                     TTFT_TARGET)
    assert unread.awaiting_pods.quality is Quality.EMPTY


def test_the_simulated_pods_squares_are_per_pod() -> None:
    series = SimulatedSeries([100.0, 500.0, 2000.0], scrape_seconds=15)
    for second in range(60):
        series.first_token(second + 0.5, 10.0, pod=1)  # a pod draining a backlog: 10 s per first token
        for pod in (2, 3, 4):
            series.first_token(second + 0.5, 0.5, pod=pod)
    r = series.readings(60 + 15.0, 60, 30, 0.95, engine_backend=False)
    assert r.get("firstResponseSecondsShort").value == pytest.approx(11.5)
    assert r.get("firstResponsePodSquaresShort").value == pytest.approx(100 + 3 * 0.25)
    obs = observe(r, "llmapi", REPLICA, PodCounts(current=4, ready=4), TTFT_TARGET)
    assert obs.awaiting_pods.value == pytest.approx(11.5**2 / 100.75)  # 1.31 of 4 pods


@pytest.mark.parametrize(("q", "counts", "expected"), [
    # Prometheus: the rank falls in a bucket, linear within it; the first bucket starts at 0.
    (0.5, [2, 2, 0, 0], 100.0),
    (0.75, [2, 2, 0, 0], 150.0),
    (0.25, [2, 2, 0, 0], 50.0),
    # In +Inf: the highest finite bound.
    (0.99, [0, 0, 1, 3], 400.0),
    (0.5, [0, 0, 0, 0], math.nan),
])
def test_histogram_quantile_is_prometheus(q: float, counts: list[float], expected: float) -> None:
    result = histogram_quantile(q, [100.0, 200.0, 400.0], counts)
    assert math.isnan(result) if math.isnan(expected) else result == pytest.approx(expected)


def test_series_read_as_prometheus_would() -> None:
    series = SimulatedSeries([100.0, 500.0, 2000.0], scrape_seconds=15)
    for second in range(100):
        series.first_token(second + 0.5, 0.2)
        series.finished(second + 0.5, 2.0, 1000, 100)
    at = 100 + 15.0  # read a scrape later
    r = series.readings(at, 60, 30, 0.95, engine_backend=True)
    assert r.get("requestsPerSecond").value == pytest.approx(1.0)
    assert r.get("requestSeconds").value == pytest.approx(2.0)  # Little: 1/s x 2 s in flight
    assert r.get("firstResponseSeconds").value == pytest.approx(0.2)
    assert r.get("outputTokensPerSecond").value == pytest.approx(100)
    assert 0.1 < (r.get("ttftSeconds").value or 0) <= 0.5  # interpolated in the 100-500 ms bucket
    assert series.readings(at, 60, 30, 0.95, engine_backend=False).get("outputTokensPerSecond").quality \
        is Quality.EMPTY
    assert series.readings(10, 60, 30, 0.95, True).get("requestsPerSecond").quality is Quality.EMPTY
    assert series.readings(at, 60, 30, 0.95, True, any_pod=False).get("requestsPerSecond").quality is Quality.EMPTY


POD_SIGNALS = {"requestsPerSecond": 10, "requestSeconds": 25, "firstResponseSeconds": 21, "ttftSeconds": 0.4,
               "outputTokensPerSecond": 1000}  # 1 request late at a 2 s target; 4 decoding over 990 tokens/s


def test_the_endpoint_pickers_ttft_itl_and_held_requests_are_preferred() -> None:
    r = readings(**POD_SIGNALS, eppTtftSeconds=1.75, eppItlSeconds=0.039, eppQueue=10)
    obs = observe(r, "tensorrt-engine", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    assert obs.ttft_seconds.value == 1.75 and "endpoint picker" in obs.ttft_seconds.detail
    assert obs.itl_seconds.value == 0.039
    assert obs.queue.value == 11, "10 held at the gateway and 1 late in the pods: disjoint, so added"
    # On llmapi the picker's ITL replaces the modelled one.
    llmapi = observe(r, "llmapi", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    assert llmapi.itl_seconds.value == 0.039


@pytest.mark.parametrize("missing", [None, math.nan])
def test_a_picker_family_absent_or_nan_falls_back_to_the_pods(missing: float | None) -> None:
    r = readings(**POD_SIGNALS, eppTtftSeconds=missing, eppItlSeconds=missing, eppQueue=missing)
    obs = observe(r, "tensorrt-engine", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    assert obs.ttft_seconds.value == 0.4
    assert obs.itl_seconds.value == pytest.approx(4 / 990)
    assert obs.queue.value == 1


def test_held_requests_alone_only_where_no_pod_is_ready() -> None:
    at_zero = observe(readings(eppQueue=3), "llmapi", REPLICA, PodCounts(current=0), TTFT_TARGET)
    assert at_zero.queue.value == 3 and at_zero.activation.value == 3, "the demand waiting for a first pod"
    # Pods ready whose share cannot be read: unknown stays unknown, never the gateway's share alone.
    blind = SignalReadings({"eppQueue": Reading.of(3), "firstResponseSeconds": Reading.error("timeout"),
                            "requestsPerSecond": Reading.error("timeout")})
    obs = observe(blind, "llmapi", REPLICA, PodCounts(current=2, ready=2), TTFT_TARGET)
    assert obs.queue.quality is Quality.ERROR


def test_a_configured_activation_query_wins_over_the_pickers_queue() -> None:
    r = SignalReadings({"eppQueue": Reading.of(5), "activation": Reading.of(0.0)})
    assert observe(r, "llmapi", REPLICA, PodCounts(current=0), TTFT_TARGET).activation.value == 0.0
    none = observe(readings(), "llmapi", REPLICA, PodCounts(current=0), TTFT_TARGET).activation
    assert none.quality is Quality.EMPTY and "no activation signal" in none.detail
