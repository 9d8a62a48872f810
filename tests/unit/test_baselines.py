"""Peer policies in the simulator: each follows its documented rule on a load step."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from controllers.simulation.baselines import (
    AggRegression,
    ArimaPredictor,
    ConstantPredictor,
    DynamoPlannerPolicy,
    Fpm,
    HpaPolicy,
    KpaPolicy,
    StaticPolicy,
    gpu_utilisation,
    in_flight_per_pod,
    queue_per_pod,
)
from controllers.simulation.simulator import SimulationResult, Simulator
from tests.unit.test_simulator import FAST, constant, deployment


def simulate(policy: object, rate_after: float = 40.0, seconds: float = 600) -> SimulationResult:
    requests = constant(5, 300) + constant(rate_after, seconds - 300, start=300)
    return Simulator(deployment(), requests, FAST, policy=policy).run()  # type: ignore[arg-type]


def peak(result: SimulationResult) -> int:
    return max(d for _, d, _, _ in result.timeline)


def test_hpa_on_in_flight_requests_scales_up_on_the_step_and_ticks_every_15_s() -> None:
    result = simulate(HpaPolicy("hpa-inflight", in_flight_per_pod, target=8, min_replicas=1, max_replicas=16))
    times = [t for t, *_ in result.timeline]
    assert all(b - a == 15 for a, b in itertools.pairwise(times))
    assert peak(result) >= 3
    assert all(d == 1 for t, d, _, _ in result.timeline if t < 300)


def test_hpa_on_gpu_utilisation_scales_on_busy_time() -> None:
    result = simulate(HpaPolicy("hpa-gpu", gpu_utilisation, target=0.7, min_replicas=1, max_replicas=16))
    assert peak(result) >= 2


def test_hpa_scale_down_waits_for_its_300_s_window() -> None:
    requests = constant(40, 300) + constant(2, 600, start=300)
    policy = HpaPolicy("hpa-inflight", in_flight_per_pod, target=4, min_replicas=1, max_replicas=16)
    result = Simulator(deployment(), requests, FAST, policy=policy).run()
    # The load falls at t = 300: recommendations of 1 start then, so the count reaches 1 only once
    # every recommendation of the 300 s window is low, at the first sync after t = 600.
    assert all(d > 2 for t, d, _, _ in result.timeline if t < 600)
    assert min(t for t, d, _, _ in result.timeline if d == 1) <= 615


def test_keda_queue_scaler_reacts_only_once_requests_wait() -> None:
    policy = HpaPolicy("keda-queue", queue_per_pod, target=4, min_replicas=1, max_replicas=16, external=True)
    light = simulate(policy, rate_after=5.0)
    assert peak(light) == 1, "no queue, no scale-up"


def test_kpa_ticks_every_2_s_and_panics_on_a_burst() -> None:
    result = simulate(KpaPolicy(target_concurrency=4, min_replicas=1, max_replicas=16))
    times = [t for t, *_ in result.timeline[:5]]
    assert times == [2, 4, 6, 8, 10]
    assert "panic" in {rule for _, rule, _ in result.decisions}
    assert peak(result) >= 3


def test_dynamo_planner_runs_its_load_loop_every_5_s_and_waits_for_each_scale_up() -> None:
    policy = DynamoPlannerPolicy(deployment(), min_replicas=1, max_replicas=16, predictor=ConstantPredictor)
    result = simulate(policy, rate_after=80, seconds=900)
    assert [t for t, *_ in result.timeline][:3] == [5, 10, 15]
    assert peak(result) >= 3
    assert policy.floor >= 2, "the throughput loop sized the 80 requests/s (the warm start seeded it at 1)"
    # One replica at a time: after each scale-up it only observes until the new replica serves (35 s here).
    ups = [t for t, rule, _ in result.decisions if rule == "load-up"]
    assert ups and all(b - a >= 35 for a, b in itertools.pairwise(ups))
    assert "scaling" in {rule for _, rule, _ in result.decisions}
    assert all(d == 1 for t, d, _, _ in result.timeline if t < 300), "no scale-up before the step"


def test_dynamo_planner_without_its_load_loop_sizes_every_180_s() -> None:
    policy = DynamoPlannerPolicy(deployment(), min_replicas=1, max_replicas=16, load_scaling=False,
                                 predictor=ConstantPredictor)
    result = simulate(policy, seconds=900)
    assert [t for t, *_ in result.timeline][:3] == [180, 360, 540]
    assert peak(result) >= 2


def test_arima_forecasts_a_rising_series_higher_than_the_constant_predictor() -> None:
    arima, constant = ArimaPredictor(), ConstantPredictor()
    for value in [0.0, 0.0, *(100 + 10 * i + (3 if i % 2 else -3) for i in range(10))]:
        arima.add(value)
        constant.add(value)
    assert constant.predict() == 193
    assert arima.predict() > 193 + 2, "ARIMA extends the trend; the constant predictor repeats the last value"
    assert arima.history[0] == 97, "the idle zeros before the first traffic are skipped"
    few = ArimaPredictor()
    for value in (10.0, 20.0, 30.0, 40.0):
        few.add(value)
    assert few.predict() == 40, "fewer than 5 points: the last value"


def linear(intercept: float, per_prefill: float, per_kv: float) -> AggRegression:
    """A regression fitted on exactly linear iterations, so its estimates can be computed by hand."""
    regression = AggRegression()
    for prefill in (0, 2000, 4000, 8000):
        for kv in (0, 50_000, 100_000, 200_000):
            regression.add(Fpm(intercept + per_prefill * prefill + per_kv * kv, prefill, 1, kv, 1), averages=False)
    return regression


def test_dynamo_sizes_an_aggregated_deployment_by_its_engine_rate_at_both_targets() -> None:
    # An iteration takes 10 ms + 10 us per prefill token + 0.1 us per decode KV token; ISL 1,000, OSL 100.
    regression = linear(0.01, 1e-5, 1e-7)
    regression.isl.add(1000)
    # A batch of b holds b x 1,050 KV tokens and prefills b x 10 tokens per iteration: 10 ms + 0.205 ms x b,
    # under the 50 ms ITL target up to b = 195, whose TTFT (its 1,950 tokens and one prompt, one chunk:
    # 10 + 29.5 + 20.5 = 60 ms) is under 1 s. 195 / (100 x 49.975 ms) = 39.02 requests/s.
    rps, ttft, itl = regression.engine_rps(1000, 100, 8192, 1.0, 0.05, 10**7, 256)
    assert (rps, ttft, itl) == pytest.approx((195 / (100 * 0.049975), 0.059975, 0.049975))
    assert regression.engine_rps(1000, 100, 8192, 1.0, 0.05, 10**7, 64)[0] == pytest.approx(64 / (100 * 0.02312))
    # The planner's count for 10,000 requests in the 180 s interval (55.6/s) on engines of at most 64
    # sequences (the test deployment's batch): ceil(55.6 / 27.68) = 3.
    policy = DynamoPlannerPolicy(deployment(slo={"ttftMilliseconds": 1000, "interTokenLatencyMilliseconds": 50}),
                                 min_replicas=1, max_replicas=16)
    policy.regression = regression
    assert policy.throughput_replicas(10_000, 1000, 100) == 3
    assert policy.throughput_replicas(100, 1000, 100) == 1, "at least min_endpoint"


def test_dynamo_load_loop_scales_up_when_every_engine_misses_and_down_only_when_the_rest_can_take_it() -> None:
    policy = DynamoPlannerPolicy(deployment(slo={"ttftMilliseconds": 1000, "interTokenLatencyMilliseconds": 50}),
                                 min_replicas=1, max_replicas=16)
    policy.regression = linear(0.01, 1e-5, 1e-7)
    # ITL of an engine holding k KV tokens: 10 ms + 0.1 us x k (no prefill on average, no queue).
    hot, cool = Fpm(0.05, 0, 0, 450_000, 300), Fpm(0.02, 0, 0, 50_000, 50)
    assert policy.load_replicas([hot, hot, hot], 3) == 4, "every engine over 50 ms (55 ms)"
    assert policy.load_replicas([hot, hot, cool], 3) == 3, "one engine within its target: no change"
    # 3 engines at 50,000 KV: on 2 they would hold 75,000, 17.5 ms < 80% of 50 ms, so one goes.
    assert policy.load_replicas([cool, cool, cool], 3) == 2
    warm = Fpm(0.04, 0, 0, 250_000, 250)  # on 2: 375,000 KV, 47.5 ms >= 40 ms: refused
    assert policy.load_replicas([warm, warm, warm], 3) == 3
    policy.floor = 3
    assert policy.load_replicas([cool, cool, cool], 3) == 3, "never below the throughput floor"


def test_dynamo_itl_correction_raises_the_count_when_observed_itl_exceeds_the_model() -> None:
    policy = DynamoPlannerPolicy(deployment(slo={"ttftMilliseconds": 1000, "interTokenLatencyMilliseconds": 50}),
                                 min_replicas=1, max_replicas=16, load_scaling=False, correction=True)
    policy.regression = linear(0.01, 1e-5, 1e-7)
    policy.regression.isl.add(1000)
    assert policy.throughput_replicas(10_000, 1000, 100) == 3  # as above: batches of 64, 27.7 requests/s
    # 10,000 requests of 5 s over 180 s on 3 engines: 92.6 in flight each, whose iteration the model puts
    # at 10 + 9.26 + 9.72 = 29 ms; 116 ms observed is a factor of 4, so the ITL target becomes 12.5 ms:
    # batches of 12 (12.46 ms), 9.63 requests/s per engine, ceil(55.6 / 9.63) = 6.
    policy.correct(observed_itl=0.116, request_seconds=5.0, num_req=10_000, isl=1000, osl=100, workers=3)
    assert policy.itl_correction == pytest.approx(4.0, rel=0.01)
    assert policy.throughput_replicas(10_000, 1000, 100) == 6


def test_static_keeps_its_count() -> None:
    result = Simulator(deployment(), constant(10, 300), replace(FAST, initial_replicas=3),
                       policy=StaticPolicy(3)).run()
    assert {d for _, d, _, _ in result.timeline} == {3}
    # GPU time ends with the last request, not with the policy's next (hourly) tick.
    assert result.gpu_seconds <= 3 * (result.duration + 1)
    assert result.duration < 400


def test_hpa_counts_pods_still_loading_as_zero_on_the_way_up() -> None:
    hpa = HpaPolicy("hpa", in_flight_per_pod, target=10, min_replicas=1, max_replicas=64)
    # 2 ready pods at 3x the target, 4 more ordered and loading: (3 x 2 + 0 x 4) / 6 = 1.0, no change,
    # rather than 6 x 3 = 18 (ordering again for load the loading pods will take).
    assert hpa._calculate(3.0, current=6, ready=2, not_ready=4) == 6
    assert hpa._calculate(3.0, current=2, ready=2, not_ready=0) == 6
    # On the way down the loading pods count at the target: (0.5 x 4 + 2) / 6 = 0.67, to 4.
    assert hpa._calculate(0.5, current=6, ready=4, not_ready=2) == 4
    keda = HpaPolicy("keda", queue_per_pod, target=4, min_replicas=1, max_replicas=64, external=True)
    assert keda._calculate(3.0, current=6, ready=2, not_ready=4) == 18, "an AverageValue target: total / target"


def test_hpa_seeds_its_window_with_the_current_count_so_a_warm_start_holds() -> None:
    # A warm start at 6 replicas on light load: the real HPA's recordInitialRecommendation puts 6 in the
    # stabilisation window, so it cannot drop to 1 at its first sync.
    policy = HpaPolicy("hpa-inflight", in_flight_per_pod, target=8, min_replicas=1, max_replicas=16)
    result = Simulator(deployment(), constant(5, 600), replace(FAST, initial_replicas=6), policy=policy).run()
    assert all(d == 6 for t, d, _, _ in result.timeline if t < 300)
    assert result.timeline[-1][1] < 6, "and scales down once the window has passed"


def test_kpa_scale_down_delay_holds_the_highest_count_of_the_delay() -> None:
    requests = constant(40, 300) + constant(2, 600, start=300)
    quick = Simulator(deployment(), requests, FAST,
                      policy=KpaPolicy(target_concurrency=4, min_replicas=1, max_replicas=16)).run()
    delayed = Simulator(deployment(), requests, FAST, policy=KpaPolicy(
        target_concurrency=4, min_replicas=1, max_replicas=16, scale_down_delay=300)).run()

    def held(result: SimulationResult) -> float:
        """How long the peak count lasted once reached for the last time."""
        top = max(d for _, d, _, _ in result.timeline)
        last_reached = max(t for t, d, _, _ in result.timeline if d == top and t > 0)
        start = last_reached
        for t, d, _, _ in reversed([r for r in result.timeline if r[0] <= last_reached]):
            if d != top:
                break
            start = t
        drop = min((t for t, d, _, _ in result.timeline if t > last_reached and d < top), default=result.duration)
        return drop - start

    assert held(quick) < 200
    assert held(delayed) >= 300 - 2, "no scale-down within 300 s of the decision for the peak"


def test_the_in_flight_target_comes_from_the_slo() -> None:
    replica = Simulator(deployment(), []).replica_model  # max batch 64
    strict, lax = replica.concurrency_at_slo(0.01), replica.concurrency_at_slo(0.1)
    assert 1 <= strict < lax <= replica.max_batch_size
    n = lax
    assert replica.steady_step_seconds(n, 1000, 200) <= 0.1
    assert n == replica.max_concurrency(1000, 200) or replica.steady_step_seconds(n + 1, 1000, 200) > 0.1
