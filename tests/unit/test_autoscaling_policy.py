"""The autoscaling decision, rule by rule as named scenarios, and its properties under hypothesis."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.autoscaling.policy import SCALE_TO_ZERO_IDLE_SECONDS, decide
from controllers.autoscaling.signals import Observations, Quality, Reading
from crds.models import AutoscalingSpec

CAPACITY = 1000.0  # output tokens/s one replica carries within the SLO
LOAD_SECONDS = 60.0


def spec(**overrides: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"enabled": True, "minReplicas": 1, "maxReplicas": 32, **overrides})


def obs(tps: float | None = 4000.0, *, current: int = 4, ready: int | None = None, ttft: float | None = 0.5,
        itl: float | None = 0.04, queue: float | None = 0.0, short: float | None = None, pending: int = 0,
        unschedulable: bool = False, in_flight: float | None = 10.0) -> Observations:
    def reading(value: float | None) -> Reading:
        return Reading(value) if value is not None else Reading.error("prometheus unreachable")

    return Observations(
        output_tokens_per_second=reading(tps),
        output_tokens_per_second_short=reading(tps if short is None else short),
        input_tokens_per_second=reading(None if tps is None else tps * 5),
        ttft_seconds=reading(ttft), itl_seconds=reading(itl), queue=reading(queue), in_flight=reading(in_flight),
        kv_utilization=reading(0.3), current_replicas=current,
        ready_replicas=current if ready is None else ready, pending_replicas=pending, unschedulable=unschedulable,
    )


def run(o: Observations, s: AutoscalingSpec | None = None, state: dict[str, Any] | None = None,
        now: float = 1000.0) -> tuple[int, str, dict[str, Any]]:
    decision = decide(o, s or spec(), CAPACITY, LOAD_SECONDS, state, now)
    return decision.replicas, decision.rule, decision.state


def condition(o: Observations, type_: str, state: dict[str, Any] | None = None) -> tuple[bool, str]:
    decision = decide(o, spec(), CAPACITY, LOAD_SECONDS, state, 1000.0)
    (found,) = [c for c in decision.conditions if c.type == type_]
    return found.status, found.reason


@pytest.mark.parametrize(("name", "observations", "expected", "rule"), [
    ("steady load that fits: unchanged", obs(3500), 4, "throughput"),
    ("twice the load: twice the replicas", obs(8000), 8, "throughput"),
    ("within 10% of the usage target: unchanged", obs(10500, current=10), 10, "throughput"),
    ("TTFT at twice its target: proportional scale-up", obs(3000, ttft=4.0), 8, "slo"),
    ("ITL over target", obs(3000, itl=0.15), 6, "slo"),
    ("a queue 10 per replica over full batches: at most doubling", obs(1000, queue=40, in_flight=40), 8, "queue"),
    ("a queue of 6 per replica behind 20 in flight each: +30%", obs(1000, queue=24, in_flight=80), 6, "queue"),
    ("a queue within its per-replica limit: no pressure", obs(3500, queue=16), 4, "throughput"),
    ("a latency far over target at most doubles", obs(3000, ttft=40.0), 8, "slo"),
    ("a huge jump is rate limited to max(2x, +4)", obs(50000, current=2), 6, "rate-limit"),
    ("pending pods: no further scale-up", obs(8000, pending=1), 4, "pending"),
    ("unschedulable: GPU capacity exhausted", obs(8000, pending=1, unschedulable=True), 4, "gpu-capacity"),
    ("clamped to maxReplicas", obs(60000, current=30), 32, "max"),
    ("not-ready pods count as zero on the way up", obs(3000, current=4, ready=2, ttft=3.0), 5, "slo"),
])
def test_rules(name: str, observations: Observations, expected: int, rule: str) -> None:
    replicas, decided_by, _ = run(observations)
    assert (replicas, decided_by) == (expected, rule), name


def test_missing_metrics_hold_and_are_reported() -> None:
    blind = obs(None, ttft=None, itl=None, queue=None, current=5)
    replicas, rule, _ = run(blind)
    assert (replicas, rule) == (5, "hold")
    assert condition(blind, "MetricsAvailable") == (False, "SignalsMissing")
    assert condition(blind, "ScalingActive") == (False, "FailedGetMetrics")


def test_a_configured_fallback_applies_when_blind_but_never_scales_down() -> None:
    blind = obs(None, ttft=None, itl=None, queue=None, current=2)
    assert run(blind, spec(missingMetricsReplicas=5))[:2] == (5, "fallback")
    assert run(replace(blind, current_replicas=7), spec(missingMetricsReplicas=5))[:2] == (7, "hold")


@pytest.mark.parametrize("quality", [Quality.EMPTY, Quality.ERROR, Quality.NAN, Quality.STALE])
def test_a_missing_signal_never_scales_down(quality: Quality) -> None:
    # Throughput alone says 1 replica, but latency cannot be read: hold 6.
    latency_gone = replace(obs(500, current=6), ttft_seconds=Reading(None, quality, "x"))
    assert run(latency_gone)[:2] == (6, "hold")
    # ...while a usable signal asking for more still scales up.
    assert run(replace(obs(9000, current=6), ttft_seconds=Reading(None, quality, "x")))[0] == 9


def test_nan_as_a_value_is_never_a_number() -> None:
    assert Reading.of(float("nan")).quality is Quality.NAN
    assert Reading.of(float("inf")).quality is Quality.NAN
    assert Reading.of(None).quality is Quality.EMPTY
    assert Reading.of(5.0, age_seconds=600).quality is Quality.STALE
    assert Reading.of(0.0).ok


def test_scale_down_waits_for_the_stabilization_window() -> None:
    state: dict[str, Any] = {}
    replicas, _, state = run(obs(8000, current=8), state=state, now=0)
    assert replicas == 8
    for t in range(15, 300, 15):  # the load fell to 2 replicas' worth
        replicas, rule, state = run(obs(2000, current=8, ttft=0.2, itl=0.02), state=state, now=t)
        # Both the scale-down window and the burst memory remember the 8 for 300 s.
        assert (replicas, rule) in {(8, "stabilization"), (8, "burst")}, t
    replicas, _, state = run(obs(2000, current=8, ttft=0.2, itl=0.02), state=state, now=315)
    assert replicas == 4, "after 300 s, down by at most half per tick"
    replicas, _, state = run(obs(2000, current=4, ttft=0.2, itl=0.02), state=state, now=330)
    assert replicas == 2


def test_a_burst_enters_panic_and_panic_never_scales_down() -> None:
    replicas, rule, state = run(obs(3000, short=12000, current=4), now=0)
    assert (replicas, rule) == (8, "rate-limit"), "panic wants 12; at most double per tick"
    assert state["panicUntil"] == 60
    # The burst is remembered: the next tick orders the rest of what it needed.
    replicas, rule, state = run(obs(2000, current=8, ttft=0.1, itl=0.01), state=state, now=15)
    assert (replicas, rule) == (12, "burst")
    # A quiet short window during panic: nothing scales down, whatever the burst memory says.
    state["bursts"] = []
    replicas, rule, state = run(obs(2000, current=12, ttft=0.1, itl=0.01), state=state, now=30)
    assert (replicas, rule) == (12, "panic")


def test_conditions_for_pending_and_unschedulable_pods() -> None:
    assert condition(obs(8000, pending=1), "AbleToScale") == (False, "WaitingForPendingPods")
    assert condition(obs(8000, pending=1, unschedulable=True), "ScalingLimited") == (True, "GPUCapacityExhausted")
    assert condition(obs(4000), "ScalingLimited") == (False, "DesiredWithinRange")


def test_scale_to_zero_after_an_idle_period_and_back() -> None:
    s = spec(minReplicas=0, activation={"query": "sum(gateway_queue)"})
    idle = obs(0.0, current=1, ttft=None, itl=None, queue=0.0, in_flight=0.0)
    replicas, _, state = run(idle, s, now=0)
    assert replicas == 1, "the warm floor holds until the idle period has passed"
    replicas, rule, state = run(idle, s, state, now=SCALE_TO_ZERO_IDLE_SECONDS)
    assert (replicas, rule) == (0, "scale-to-zero")
    waiting = obs(None, current=0, ttft=None, itl=None, queue=3.0, in_flight=None)
    assert run(waiting, s, state, now=SCALE_TO_ZERO_IDLE_SECONDS + 15)[:2] == (1, "activation")


def test_without_min_zero_an_idle_deployment_keeps_its_floor() -> None:
    idle = obs(0.0, current=3, ttft=None, itl=None, queue=0.0, in_flight=0.0)
    state: dict[str, Any] = {}
    for t in range(0, 1200, 15):
        replicas, _, state = run(idle, spec(minReplicas=2, scaleDownStabilizationSeconds=0), state, now=t)
    assert replicas == 2


def test_start_up_lead_scales_ahead_of_a_rising_load() -> None:
    state: dict[str, Any] = {}
    for i, t in enumerate(range(0, 75, 15)):  # +100 tok/s every 15 s: ~6.7 tok/s per second
        replicas, _, state = run(obs(3000 + 100 * i, current=4), state=state, now=t)
    # Now 3,400 tok/s, projected 90 s ahead (60 s load + 30 s for the metrics' age and scheduling):
    # 3,400 + 6.7 x 90 = 4,000: still 4; a steeper ramp orders more.
    assert replicas == 4
    state = {}
    for i, t in enumerate(range(0, 75, 15)):  # +500 tok/s every 15 s
        replicas, _, state = run(obs(3000 + 500 * i, current=4), state=state, now=t)
    assert replicas == 8, "5,000 tok/s now, 8,000 projected 90 s ahead"


def test_a_decision_explains_itself() -> None:
    decision = decide(obs(60000, current=30), spec(), CAPACITY, LOAD_SECONDS, None, 0)
    assert "clamped to maxReplicas 32" in decision.reason
    assert "raising maxReplicas above 32" in decision.what_would_change
    assert {r.signal for r in decision.recommendations} == {"throughput", "slo", "queue", "burst"}


@settings(max_examples=200, deadline=None)
@given(tps=st.floats(0, 1e6), current=st.integers(1, 64), ttft=st.floats(0, 30), itl=st.floats(0, 1),
       queue=st.floats(0, 1e4), min_r=st.integers(1, 8), max_r=st.integers(8, 64))
def test_results_stay_within_bounds(tps: float, current: int, ttft: float, itl: float, queue: float, min_r: int,
                                    max_r: int) -> None:
    decision = decide(obs(tps, current=current, ttft=ttft, itl=itl, queue=queue),
                      spec(minReplicas=min_r, maxReplicas=max_r), CAPACITY, LOAD_SECONDS, None, 1000.0)
    assert min_r <= decision.replicas <= max_r
    types = [c.type for c in decision.conditions]
    assert len(types) == len(set(types)), "conditions are a list-map keyed by type"


@settings(max_examples=100, deadline=None)
@given(low=st.floats(0, 50000), extra=st.floats(0, 50000), current=st.integers(1, 32))
def test_more_load_never_yields_fewer_replicas(low: float, extra: float, current: int) -> None:
    fewer, _, _ = run(obs(low, current=current))
    more, _, _ = run(obs(low + extra, current=current))
    assert more >= fewer


@settings(max_examples=50, deadline=None)
@given(tps=st.floats(100, 30000), start=st.integers(1, 32))
def test_constant_load_never_oscillates(tps: float, start: int) -> None:
    """Feed each decision back as the next current count: the count moves one way, then stays."""
    state: dict[str, Any] = {}
    current, counts = start, []
    for t in range(0, 1800, 15):
        current, _, state = run(obs(tps, current=current, ttft=0.5, itl=0.04), state=state, now=t)
        counts.append(current)
    changes = [b - a for a, b in itertools.pairwise(counts) if b != a]
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes), counts
    assert counts[-1] == counts[-20], "settled"


def test_latency_and_queue_are_not_read_as_new_pressure_while_a_scale_up_settles() -> None:
    # Scaled up 30 s ago: the new replicas serve after 60 s of loading, and the 120 s latency window
    # and the backlog show them only after that. Until then the lagging signals hold; throughput does not.
    state = {"lastScaleUpTime": 970.0}
    decision = decide(obs(3000, ttft=10.0, queue=200, in_flight=40), spec(), CAPACITY, LOAD_SECONDS, state, 1000.0)
    assert decision.replicas == 4
    held = {r.signal: r for r in decision.recommendations}
    assert held["slo"].replicas == held["queue"].replicas == 4
    assert "shows in latency only 90 s from now" in held["slo"].note
    replicas, rule, _ = run(obs(7000, ttft=10.0, queue=200, in_flight=40), state=state)
    assert (replicas, rule) == (7, "throughput")
    # Once settled (load 60 s + 60 s later), the same readings are pressure again.
    replicas, rule, _ = run(obs(3000, ttft=10.0, queue=200, in_flight=40), state={"lastScaleUpTime": 870.0})
    assert (replicas, rule) == (8, "slo")


def test_capacity_is_learned_from_latency_missed_below_the_planned_capacity() -> None:
    # 4 replicas planned at 1,000 tok/s carry 3,200 (800 each) and still miss the TTFT target: this
    # traffic's real capacity is under 800, so the plan uses 90% of it (720) and asks for 5.
    decision = decide(obs(3200, ttft=3.0), spec(), CAPACITY, LOAD_SECONDS, None, 1000.0)
    assert decision.state["capacityScale"] == pytest.approx(0.72)
    throughput = next(r for r in decision.recommendations if r.signal == "throughput")
    assert throughput.replicas == 5 and "learned from latency" in throughput.note
    # One cut per settle period: a second miss right after leaves the scale alone.
    again = decide(obs(3200, current=5, ttft=3.0), spec(), CAPACITY, LOAD_SECONDS, decision.state, 1015.0)
    assert again.state["capacityScale"] == pytest.approx(0.72)
    # Comfortably under target while running at the learned capacity: it recovers 1% a tick.
    easy = decide(obs(3600, current=5, ttft=0.2, itl=0.01), spec(), CAPACITY, LOAD_SECONDS,
                  {"capacityScale": 0.72}, 2000.0)
    assert easy.state["capacityScale"] == pytest.approx(0.7272)


def test_latency_missed_at_low_load_teaches_nothing_and_asks_for_at_most_twice_the_load() -> None:
    # 400 tok/s on 4 replicas of 1,000 (10% load), TTFT at 10x its target: long prompts, not capacity.
    decision = decide(obs(400, ttft=20.0), spec(), CAPACITY, LOAD_SECONDS, None, 1000.0)
    assert decision.state.get("capacityScale", 1.0) == 1.0
    slo = next(r for r in decision.recommendations if r.signal == "slo")
    assert slo.replicas == 4 and "the load needs only 1" in slo.note
    assert decision.replicas == 4


def test_bursty_traffic_is_remembered_longer_than_smooth_traffic() -> None:
    def history(samples: list[float]) -> dict[str, Any]:
        return {"bursts": [[1000.0 - 15 * (len(samples) - i), v] for i, v in enumerate(samples)]}

    # Bursts needing 10 replicas 885 s and 600 s ago, idle since: bursty, kept for 900 s.
    bursty = history([10.0] + [0.0] * 18 + [10.0] + [0.0] * 39)
    decision = decide(obs(500, current=10, short=500), spec(), CAPACITY, LOAD_SECONDS, bursty, 1000.0)
    burst = next(r for r in decision.recommendations if r.signal == "burst")
    assert burst.replicas == 10 and "last 900 s" in burst.note
    # Smooth traffic whose highest 30 s was 600 s ago is not held for it (300 s memory).
    smooth = history([6.0] + [5.0] * 39)
    decision = decide(obs(5000, current=6, short=5000), spec(), CAPACITY, LOAD_SECONDS, smooth, 1000.0)
    burst = next(r for r in decision.recommendations if r.signal == "burst")
    assert burst.replicas == 5 and "last 300 s" in burst.note


def test_one_condition_per_type_even_when_two_limits_apply() -> None:
    # 50 replicas' worth on 2: the rate limit allows 6, maxReplicas 4 binds below it. Two ScalingLimited
    # entries would be rejected by the API server (conditions are a list-map keyed by type).
    decision = decide(obs(50000, current=2), spec(maxReplicas=4), CAPACITY, LOAD_SECONDS, None, 0)
    assert decision.replicas == 4
    limited = [c for c in decision.conditions if c.type == "ScalingLimited"]
    assert [(c.status, c.reason) for c in limited] == [(True, "TooManyReplicas")]
    assert len({c.type for c in decision.conditions}) == len(decision.conditions)
