"""The scaling decision: a pure function of (observations, spec, saved state, now).

Stages, each of which can change the count and says why:

1. **signals**: throughput (output tokens/s over per-replica capacity at the SLO), SLO (TTFT and ITL
   percentiles against their targets, in the manner of Dynamo's planner), queue (waiting requests
   per ready replica over ``queuePerReplica``: grow by the share the batches cannot hold); combined by
   taking the largest, as HPA does across metrics. The lagging two (latency, queue) are not read as
   new pressure until a scale-up has had time to show in them;
2. **tolerance**: changes within 10% of the current count are ignored;
3. **panic**: a burst (the 30 s rate alone needs at least twice the ready replicas) enters panic
   mode for 60 s, during which nothing scales down (as Knative's KPA);
4. **stabilization**: a scale-down goes only to the highest recommendation of the last
   ``scaleDownStabilizationSeconds`` (default 300 s);
5. **rate limits**: up by at most max(4 replicas, 100%) per tick, down by at most half;
6. **pods**: no further scale-up while pods are Pending; an unschedulable pod is reported as GPU
   capacity exhausted rather than retried;
7. **bounds**: [minReplicas, maxReplicas], with scale to zero only after an idle period when
   minReplicas is 0.

Missing, broken or stale metrics never scale down: with none usable the count is held, with some
usable only a scale-up can result, and ``MetricsAvailable`` turns False.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from controllers.autoscaling.signals import Observations, Reading
from crds.models import AutoscalingSpec

TOLERANCE = 0.10
# SLO policy: scale down only when both percentiles are under this share of their targets.
SLO_HYSTERESIS = 0.7
PANIC_THRESHOLD = 2.0  # short-window demand / ready replicas that starts panic mode
PANIC_SECONDS = 60.0
MAX_UP_FACTOR, MAX_UP_REPLICAS = 2.0, 4  # HPA's default scale-up policy: 100% or 4 pods per period
MAX_DOWN_FRACTION = 0.5
SCALE_TO_ZERO_IDLE_SECONDS = 300.0
SETTLE_SECONDS = 60.0  # after new replicas serve, for latency windows and backlogs to show them
TREND_WINDOW_SECONDS = 300.0  # throughput samples kept to project the load one start-up lead ahead
# Beyond the engine load time, until a replica ordered now serves: metrics up to one scrape (15 s)
# old, and pod scheduling and container start (5 to 15 s).
LEAD_EXTRA_SECONDS = 30.0
# Bursts: capacity for the busiest short window of the scale-down window is kept; traffic whose 30 s
# demand rises past BURSTY_PEAK_TO_MEAN times its mean more than once within BURSTY_MEMORY_FACTOR times
# that window is bursty, and its bursts are kept for the longer memory (900 s at the default 300 s).
BURSTY_PEAK_TO_MEAN = 2.0
BURSTY_MEMORY_FACTOR = 3
SLO_CAP = 2.0  # latency alone asks for at most this multiple of what the measured load needs
LEARN_LOAD = 0.5  # learn capacity only from replicas carrying at least half the planned capacity
MIN_CAPACITY_SCALE = 0.3  # the learned capacity never falls below this share of the model's


@dataclass(frozen=True)
class Recommendation:
    signal: str
    value: float | None
    target: float | None
    replicas: int | None  # None: no recommendation (signal missing)
    note: str


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass
class Decision:
    replicas: int
    rule: str  # which stage decided
    reason: str  # a sentence for a person
    recommendations: list[Recommendation]
    conditions: list[Condition]
    state: dict[str, Any]
    metrics_available: bool
    what_would_change: list[str] = field(default_factory=list)


def _window(samples: list[list[float]], now: float, seconds: float) -> list[list[float]]:
    return [s for s in samples if now - s[0] <= seconds]


def trend_per_second(samples: list[list[float]]) -> float:
    """Least-squares slope of (time, value) samples; 0 with fewer than 3."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mean_t = sum(s[0] for s in samples) / n
    mean_v = sum(s[1] for s in samples) / n
    var = sum((s[0] - mean_t) ** 2 for s in samples)
    if var == 0:
        return 0.0
    return sum((s[0] - mean_t) * (s[1] - mean_v) for s in samples) / var


def _learned_capacity(model_capacity: float, out: Reading, pressure: float | None, ready: int,
                      state: dict[str, Any], now: float, load_seconds: float, settling: bool) -> tuple[float, bool]:
    """The capacity per replica to plan with: the performance model's figure times a learned scale.

    The model is a prior for an average request mix; the fleet's latency says what this traffic really
    allows. When the SLO is missed while the replicas carry less than the planned capacity, the real
    capacity is below what they carry: the scale drops to 90% of it. When latency is comfortably under
    target at the planned capacity, the scale recovers 1% a tick, never above the model. One cut per
    settle period (a replica load plus a minute), and none at low load, where latency over target comes
    from long requests rather than from a lack of capacity.
    """
    scale = float(state.get("capacityScale", 1.0))
    capacity = model_capacity * scale
    if pressure is None or not out.ok or out.value is None or ready < 1:
        return capacity, scale < 1.0
    per_replica = out.value / ready
    cut_allowed = now >= float(state.get("capacityLearnedAt", -math.inf)) + load_seconds + SETTLE_SECONDS
    if pressure > 1 and not settling and cut_allowed and LEARN_LOAD * capacity <= per_replica < capacity:
        scale = max(MIN_CAPACITY_SCALE, 0.9 * per_replica / model_capacity)
        state["capacityLearnedAt"] = now
    elif pressure < SLO_HYSTERESIS and per_replica >= 0.9 * capacity:
        scale = min(1.0, scale * 1.01)
    state["capacityScale"] = round(scale, 4)
    return model_capacity * scale, scale < 1.0


def decide(obs: Observations, spec: AutoscalingSpec, capacity_tokens_per_second: float,
           load_seconds: float, state: dict[str, Any] | None, now: float,
           prefill_tokens_per_second: float | None = None) -> Decision:
    """Desired replicas for one ModelDeployment. ``capacity_tokens_per_second`` is the output tokens/s
    one replica carries within the SLO, ``prefill_tokens_per_second`` the prompt tokens/s it prefills
    (None: bursts are measured on output alone); ``load_seconds`` how long a new replica takes to serve."""
    state = dict(state or {})
    current = obs.current_replicas
    ready = obs.ready_replicas
    slo = spec.slo
    ttft_target = slo.ttft_milliseconds / 1e3
    itl_target = slo.inter_token_latency_milliseconds / 1e3
    recs: list[Recommendation] = []
    out, short = obs.output_tokens_per_second, obs.output_tokens_per_second_short
    idle_traffic = out.ok and out.value == 0
    ttft, itl = obs.ttft_seconds, obs.itl_seconds
    pressure: float | None = None
    if ttft.ok and itl.ok and ttft.value is not None and itl.value is not None:
        pressure = max(ttft.value / ttft_target, itl.value / itl_target)
    # Latency percentiles and a backlog lag behind capacity: after a scale-up they stay high until the
    # new replicas serve and the window moves on. Reading them as fresh pressure in that time orders
    # replicas for a backlog that is already being drained (a TTFT p95 of 90 s against 2 s, on 10
    # ready replicas, is 45x pressure: 450 replicas before the rate limit).
    settling_until = float(state.get("lastScaleUpTime", -math.inf)) + load_seconds + SETTLE_SECONDS
    settling = now < settling_until
    model_capacity = capacity_tokens_per_second
    capacity_tokens_per_second, learned = _learned_capacity(model_capacity, out, pressure, ready, state, now,
                                                            load_seconds, settling)

    # 1. Signals. ---------------------------------------------------------------------------
    throughput_samples = _window(state.get("throughput", []), now, TREND_WINDOW_SECONDS)
    if out.ok and out.value is not None:
        throughput_samples.append([now, out.value])
        slope = trend_per_second(throughput_samples)
        # Start-up lead: a replica ordered now serves only after scheduling and load_seconds, and what
        # it is ordered for was measured up to a scrape ago; size for the load projected that far ahead
        # when it is rising.
        lead = load_seconds + LEAD_EXTRA_SECONDS
        projected = out.value + max(0.0, slope) * lead
        replicas = math.ceil(projected / capacity_tokens_per_second) if projected > 0 else 0
        # HPA's tolerance, on the usage ratio: 2,030 tok/s on 2 replicas of 1,000 is 1.015, no change.
        if current > 0 and abs(projected / (current * capacity_tokens_per_second) - 1) <= TOLERANCE:
            replicas = current
        note = (f"{out.value:.0f} tok/s now, {projected:.0f} tok/s projected {lead:.0f} s ahead"
                if projected > out.value * 1.01 else f"{out.value:.0f} tok/s")
        if learned:
            note += (f" / {capacity_tokens_per_second:.0f} tok/s per replica (learned from latency; the model "
                     f"says {model_capacity:.0f})")
        else:
            note += f" / {capacity_tokens_per_second:.0f} tok/s per replica"
        recs.append(Recommendation("throughput", out.value, capacity_tokens_per_second, replicas, note))
    else:
        recs.append(Recommendation("throughput", None, capacity_tokens_per_second, None, out.describe()))
    state["throughput"] = throughput_samples[-40:]

    if idle_traffic:
        recs.append(Recommendation("slo", 0.0, 1.0, 0, "no traffic: latency targets trivially met"))
    elif pressure is not None and ttft.value is not None and itl.value is not None:
        # Not-ready pods count as zero when scaling up: latency comes from the ready ones.
        if pressure > 1 and settling:
            replicas = current
            note = f"over target, but the last scale-up shows in latency only {settling_until - now:.0f} s from now"
        elif pressure > 1:
            # At most doubling on latency alone: how far over target says little about how many more
            # replicas are needed once queueing sets in.
            replicas = max(current + 1, math.ceil(max(ready, 1) * min(pressure, MAX_UP_FACTOR)))
            note = "over target"
            load_need = max(math.ceil(r.value / capacity_tokens_per_second) for r in (out, short)
                            if r.ok and r.value is not None) if out.ok or short.ok else 0
            cap = max(current, math.ceil(SLO_CAP * max(1, load_need)))
            if replicas > cap:
                replicas = cap
                note = (f"over target, but the load needs only {load_need}: latency alone never asks for "
                        f"more than {SLO_CAP:g}x that (long requests are slow on any number of replicas)")
        elif pressure < SLO_HYSTERESIS and out.ok and out.value is not None and current > 1 \
                and out.value / (current - 1) <= capacity_tokens_per_second:
            # Comfortably under both targets and the load fits on one replica fewer: down to what
            # carries the load.
            replicas = max(1, math.ceil(out.value / capacity_tokens_per_second))
            note = "comfortably under target; the load fits on fewer replicas"
        else:
            replicas, note = current, "within target"
        p = f"p{slo.percentile * 100:.0f}"
        recs.append(Recommendation("slo", pressure, 1.0, replicas,
                                   f"TTFT {p} {ttft.value * 1e3:.0f}/{ttft_target * 1e3:.0f} ms, "
                                   f"ITL {p} {itl.value * 1e3:.0f}/{itl_target * 1e3:.0f} ms: {note}"))
    else:
        unread = ttft if not ttft.ok else itl
        recs.append(Recommendation("slo", None, 1.0, None, unread.describe()))

    queue = obs.queue
    if queue.ok and queue.value is not None:
        per_replica = queue.value / max(ready, 1)
        note = f"{queue.value:.0f} waiting, {per_replica:.1f} per ready replica (limit {spec.queue_per_replica:g})"
        if per_replica <= spec.queue_per_replica:
            replicas = 0  # no pressure from the queue; the other signals size the deployment
        elif settling:
            replicas = current
            note += f"; the last scale-up drains it, serving {settling_until - now:.0f} s from now"
        else:
            # Engines are full and requests wait: grow by the share of demand the batches cannot hold
            # (Knative's concurrency rule), at most doubling, since a backlog is not a rate.
            in_flight = obs.in_flight.value if obs.in_flight.ok and obs.in_flight.value else 1.0
            factor = min(MAX_UP_FACTOR, (in_flight + queue.value) / in_flight)
            replicas = max(current + 1, math.ceil(max(ready, 1) * factor))
        recs.append(Recommendation("queue", queue.value, spec.queue_per_replica, replicas, note))
    else:
        recs.append(Recommendation("queue", None, spec.queue_per_replica, None, queue.describe()))

    # Bursts: traffic that comes in 30 s bursts after idle minutes (the Azure code trace) is gone before
    # a replica ordered for it loads, and back a minute later; capacity for the busiest short window of
    # the scale-down window is kept. For smooth traffic this is the stable rate plus its noise.
    window = spec.scale_down_stabilization_seconds
    long_memory = BURSTY_MEMORY_FACTOR * window
    bursts = _window(state.get("bursts", []), now, long_memory)
    if short.ok and short.value is not None:
        demand = short.value / capacity_tokens_per_second
        prompts = obs.input_tokens_per_second_short
        if prefill_tokens_per_second and prompts.ok and prompts.value is not None:
            # A burst of long prompts is prefill work that output tokens show only later and in part
            # (the code trace: 2,048 prompt tokens per 28 output tokens).
            learned_share = capacity_tokens_per_second / model_capacity
            demand = max(demand, prompts.value / (prefill_tokens_per_second * learned_share))
        bursts.append([now, demand])
    state["bursts"] = bursts[-max(1, int(long_memory / 5)):]
    if bursts:
        values = [b[1] for b in bursts]
        threshold = BURSTY_PEAK_TO_MEAN * sum(values) / len(values)
        # Bursty: demand rose past twice its mean at least twice (one drop in load is not a burst).
        rises = sum(1 for before, value in zip([0.0, *values], values, strict=False) if value >= threshold > before)
        bursty = threshold > 0 and rises >= 2
        memory = long_memory if bursty else window
        recent = _window(bursts, now, memory)
        if recent:
            peak = max(b[1] for b in recent)
            replicas = math.ceil(peak)
            if current > 0 and abs(peak / current - 1) <= TOLERANCE:  # the same tolerance as throughput
                replicas = current
            recs.append(Recommendation("burst", peak, 1.0, replicas,
                                       f"the busiest 30 s of the last {memory:.0f} s needed {peak:.1f} replicas"))

    usable = [r for r in recs if r.replicas is not None]
    missing = [r.signal for r in recs if r.replicas is None]
    metrics_available = not missing
    conditions: list[Condition] = []
    changes: list[str] = []

    if not usable:
        fallback = spec.missing_metrics_replicas
        if fallback is not None and fallback > current:
            desired, rule = fallback, "fallback"
            reason = f"no usable metrics ({', '.join(missing)}): up to the fallback of {fallback} replicas"
        else:
            desired, rule = current, "hold"
            reason = f"no usable metrics ({', '.join(missing)}): holding {current} replicas"
    else:
        winner = max(usable, key=lambda r: r.replicas or 0)
        desired, rule = winner.replicas or 0, winner.signal
        reason = f"{winner.signal} asks for {desired}: {winner.note}"
        if missing and desired < current:
            desired, rule = current, "hold"
            reason = f"{', '.join(missing)} unavailable: never scaling down on missing data; holding {current}"

    # 2. Tolerance. -------------------------------------------------------------------------
    if current > 0 and desired != current and abs(desired / current - 1) <= TOLERANCE + 1e-9:
        reason = f"{reason}; within the {TOLERANCE:.0%} tolerance of {current}: unchanged"
        desired, rule = current, "tolerance"

    # 3. Panic. -----------------------------------------------------------------------------
    if short.ok and short.value is not None:
        burst = math.ceil(short.value / capacity_tokens_per_second)
        if burst >= PANIC_THRESHOLD * max(ready, 1) and burst > current:
            state["panicUntil"] = now + PANIC_SECONDS
            if burst > desired:
                desired, rule = burst, "panic"
                reason = f"burst: the 30 s rate needs {burst} replicas, {ready} ready; panic mode for 60 s"
    panicking = now < float(state.get("panicUntil", 0))
    if panicking and desired < current:
        desired, rule = current, "panic"
        reason = f"panic mode until {state['panicUntil'] - now:.0f} s from now: not scaling down"

    # 4. Scale-down stabilization. ----------------------------------------------------------
    window = spec.scale_down_stabilization_seconds
    history = _window(state.get("history", []), now, window)
    # The burst memory is a window of its own: recording its count here too would hold a burst twice
    # as long (the memory's 300 s, then the window's 300 s).
    recorded = desired if rule != "burst" else max([r.replicas or 0 for r in usable if r.signal != "burst"] + [0])
    history.append([now, float(recorded)])
    state["history"] = history[-200:]
    if desired < current:
        stabilized = int(max(h[1] for h in history))
        if stabilized > desired:
            reason = (f"{reason}; the highest recommendation of the last {window} s is {stabilized}: "
                      f"scaling down to {min(stabilized, current)} at most")
            desired, rule = min(stabilized, current), "stabilization"
            changes.append(f"load staying low for {window} s would allow {int(history[-1][1])}")

    # 5. Rate limits. -----------------------------------------------------------------------
    up_limit = max(math.ceil(current * MAX_UP_FACTOR), current + MAX_UP_REPLICAS)
    down_limit = current - max(1, math.floor(current * MAX_DOWN_FRACTION))
    if desired > up_limit:
        reason, desired, rule = f"{reason}; limited to {up_limit} this tick (scale-up rate)", up_limit, "rate-limit"
        conditions.append(Condition("ScalingLimited", True, "ScaleUpLimit", f"at most {up_limit} this tick"))
    elif desired < down_limit:
        reason, desired, rule = f"{reason}; limited to {down_limit} this tick (scale-down rate)", down_limit, \
            "rate-limit"

    # 6. Pods. ------------------------------------------------------------------------------
    able = Condition("AbleToScale", True, "ReadyForNewScale", "the replica count can be changed")
    if desired > current and obs.unschedulable:
        able = Condition("AbleToScale", False, "GPUCapacityExhausted",
                         "a pending pod is unschedulable: no node has the GPUs it needs; not adding more")
        conditions.append(Condition("ScalingLimited", True, "GPUCapacityExhausted", able.message))
        reason = f"{reason}; GPU capacity exhausted (unschedulable pod): holding {current}"
        desired, rule = current, "gpu-capacity"
        changes.append("free GPUs of this product (or more nodes) would let it scale up")
    elif desired > current and obs.pending_replicas > 0:
        able = Condition("AbleToScale", False, "WaitingForPendingPods",
                         f"{obs.pending_replicas} pod(s) pending; no further scale-up until they start")
        reason = f"{reason}; {obs.pending_replicas} pod(s) still pending: holding {current}"
        desired, rule = current, "pending"

    # 7. Bounds and scale to zero. ----------------------------------------------------------
    idle = idle_traffic and queue.ok and queue.value == 0 and obs.in_flight.ok and obs.in_flight.value == 0
    if idle:
        state.setdefault("idleSince", now)
    else:
        state.pop("idleSince", None)
    floor = spec.min_replicas
    if spec.min_replicas == 0:
        idle_for = now - float(state.get("idleSince", now))
        floor = 0 if idle and idle_for >= SCALE_TO_ZERO_IDLE_SECONDS else 1
        if floor == 0 and current > 0:
            desired, rule, reason = 0, "scale-to-zero", f"idle for {idle_for:.0f} s: scaling to zero"
        if queue.ok and (queue.value or 0) > 0 and current == 0:
            desired, rule, reason = max(desired, 1), "activation", "requests are waiting: activating from zero"
    if desired > spec.max_replicas:
        conditions.append(Condition("ScalingLimited", True, "TooManyReplicas",
                                    f"{desired} wanted, maxReplicas is {spec.max_replicas}"))
        reason, desired, rule = f"{reason}; clamped to maxReplicas {spec.max_replicas}", spec.max_replicas, "max"
        changes.append(f"raising maxReplicas above {spec.max_replicas}")
    elif desired < floor:
        conditions.append(Condition("ScalingLimited", True, "TooFewReplicas",
                                    f"{desired} wanted, the floor is {floor}"))
        reason, desired, rule = f"{reason}; raised to the floor {floor}", floor, "min"

    if not any(c.type == "ScalingLimited" for c in conditions):
        conditions.append(Condition("ScalingLimited", False, "DesiredWithinRange", "no limit applied"))
    conditions.append(able)
    conditions.append(Condition(
        "ScalingActive", bool(usable), "ValidMetricFound" if usable else "FailedGetMetrics",
        "scaling on " + ", ".join(r.signal for r in usable) if usable else "no signal could be read"))
    conditions.append(Condition(
        "MetricsAvailable", metrics_available, "AllSignalsRead" if metrics_available else "SignalsMissing",
        "every signal was read" if metrics_available else
        "; ".join(f"{r.signal}: {r.note}" for r in recs if r.replicas is None)))

    if desired != current:
        state["lastScaleTime"] = now
    if desired > current:
        state["lastScaleUpTime"] = now
    for r in usable:
        if r.replicas is not None and r.replicas > desired and r.signal != rule:
            changes.append(f"{r.signal} alone would ask for {r.replicas}")
    # One condition per type (a status list-map): the later stage's limit is the one that bound the
    # count (a scale-up rate limit, then maxReplicas below it).
    conditions = list({c.type: c for c in conditions}.values())
    return Decision(desired, rule, reason, recs, conditions, state, metrics_available, changes)
