"""The scaling decision: a pipeline of small pure stages over (observations, spec, state, now).

Each stage takes the proposal so far and returns the next one with its reason and the HPA-style
condition it owns; ``Decision.stages`` is the trace `tokenworks explain` prints. docs/autoscaling.md has
the arithmetic with worked numbers.

1. **signals**, each on its own ratio: *throughput* (completions times the tokens a request carries,
   projected one start-up lead (and the rate window's lag) ahead while it keeps rising, over the
   per-replica capacity at the SLO; no tolerance band, so the settled count does not depend on the
   start; the projection holds the count for one lead, the history records the demand now), *latency*
   (TTFT and ITL percentiles over their targets, 10% tolerance; near the target, over 70% of it, it
   holds the count; a scale-up on latency that does not bring it down marks it infeasible, and
   throughput decides), *queue* (demand from how fast the wait for the first token grows, and the
   backlog once a scale-up has settled), and *headroom* (the attainment target:
   the measured demand times its growth within one start-up lead, at the ``slo.attainment`` quantile
   of the last hour's growth from about the same level, older growth fading);
2. **combine**: the largest recommendation, as HPA does across metrics; missing signals never allow
   less than the current count, and with none readable the count is held (or raised to the fallback);
3. **panic**: a burst (the 30 s demand alone needs twice the ready replicas) is sized in one decision
   and starts 60 s without scale-down (Knative's KPA);
4. **stabilise**: a scale-down goes only to the highest recommendation of the last
   ``scaleDownStabilizationSeconds``, and to no less than the headroom asked or the trend projected
   within a lead;
5. **rate-limit**: up by at most max(4 replicas, 100%) per decision, down by at most half;
6. **pods**: no further scale-up while pods are Pending; an unschedulable pod is GPU capacity exhausted;
7. **bounds**: [minReplicas, maxReplicas]; with ``minReplicas: 0`` an idle deployment goes to zero after
   300 s, and the activation signal (outside the pods) brings it back.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter
from typing import NamedTuple

from controllers.autoscaling.signals import Observations, Quality, Reading
from controllers.autoscaling.state import Carried, Growth, PolicyState, Sample, per_minute, within
from crds.models import AutoscalingSpec

TOLERANCE = 0.10
PANIC_THRESHOLD = 2.0  # short-window demand / ready replicas that starts panic mode
PANIC_SECONDS = 60.0
MAX_UP_FACTOR, MAX_UP_REPLICAS = 2.0, 4  # HPA's default scale-up policy: 100% or 4 pods per period
MAX_DOWN_FRACTION = 0.5
SCALE_TO_ZERO_IDLE_SECONDS = 300.0
SETTLE_SECONDS = 60.0  # after new replicas serve, for the latency window and the backlog to show them
TREND_SECONDS = 90.0  # the throughput samples a rising trend is fitted over
# A rate over a window measures the demand at the window's middle, one scrape late on average: while it
# rises, the 2 m rate trails it by 60 s + 7.5 s and the 30 s rate by 15 s + 7.5 s.
RATE_LAG_SECONDS, SHORT_LAG_SECONDS = 67.5, 22.5
# Beyond the engine load time, until a replica ordered now serves: metrics up to one scrape (15 s)
# old, and pod scheduling and container start (5 to 15 s).
LEAD_EXTRA_SECONDS = 30.0
MEDIAN_SHARE = 0.5  # a TTFT median over half its target is a shortage of capacity (prefill), not a tail
INFEASIBLE_HOLD_SECONDS = 1800.0  # how long latency found infeasible is only reported, then tested again
DEMAND_MEMORY_SECONDS = 3600.0  # the demand history the headroom is learned from
RECENT_EXTRA_SECONDS = 60.0  # per-decision demand is kept for a lead and this much more
LEARN_LOAD = 0.5  # learn capacity only from replicas carrying at least half the planned capacity
MIN_CAPACITY_SCALE = 0.3  # the learned capacity never falls below this share of the model's
RECOVERY_PER_MINUTE = 0.03  # a learned cut recovers this share a minute while latency is comfortable
COMFORTABLE = 0.7  # latency under this share of its targets is comfortable
CARRIED_SECONDS = 3600.0  # how long a count seen carrying a throughput within target is remembered
GROWTH_SECONDS = 30.0  # the wait-for-first-token samples the backlog's growth rate is measured over
MIN_GROWTH = 0.05  # s/s: slower growth is noise in a 30 s window
CALM_SECONDS = 150.0  # the stable window (120 s) and a scrape: how long a backlog's times stay in it
LEVEL_SHARE = 0.8  # growth is read from demand at least this share of today's (see ``weighted_growths``)
REACH = 2.0  # ...and from no lower than 1/REACH of it, where no demand was that high
# A wait shared by at most a tenth of the ready pods is held by the pods that admitted it (a cold start's
# first pod: 1.0 of 32). A shortage on pods full of long answers reads more (2.5 of 12 on reasoning traffic).
TRAPPED_SHARE = 0.1
MAX_GROWTH = 0.8  # demand at most 5x what is served; faster growth is queues of different ages mixed


@dataclass(frozen=True)
class Recommendation:
    signal: str
    value: float | None
    target: float | None
    replicas: int | None  # None: no recommendation (signal missing); 0: no pressure
    note: str
    holds: bool = False  # holding the count (a scale-up settling, latency near target): not a measure of demand
    # What the stabilisation history records for it, where that differs from ``replicas`` (the throughput
    # records its ask without the trend's projection, which it keeps for one lead instead).
    recorded: int | None = None


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


class Proposal(NamedTuple):
    """The count a stage proposes (a tuple: several are made every decision, and a frozen dataclass's
    ``__init__`` costs twice as much)."""

    replicas: int
    rule: str
    reason: str


@dataclass(frozen=True)
class StageTrace:
    stage: str
    replicas: int
    rule: str
    note: str


class Inputs(NamedTuple):
    """What every stage reads: never changed by a stage. Made with ``Inputs.of``."""

    obs: Observations
    spec: AutoscalingSpec
    model_capacity: float  # output tokens/s per replica at the SLO, the performance model's
    load_seconds: float
    prefill_tokens_per_second: float | None
    now: float
    # Requests queue past the TTFT target now: read by several stages, so computed once (in ``of``; a
    # cached_property takes a lock on every first read, twice a decision).
    backlogged: bool
    # Why a backlog is held by the pods that admitted it (``trapped``), or None: read by four stages.
    trapped: str | None = None

    @classmethod
    def of(cls, obs: Observations, spec: AutoscalingSpec, model_capacity: float, load_seconds: float,
           prefill_tokens_per_second: float | None, now: float) -> Inputs:
        wait, queue = _value(obs.wait_short), _value(obs.queue)
        backlogged = (wait is not None and wait > spec.slo.ttft_milliseconds / 1e3) or \
            (queue is not None and queue / max(obs.ready_replicas, 1) > spec.queue_per_replica)
        return cls(obs, spec, model_capacity, load_seconds, prefill_tokens_per_second, now, backlogged,
                   trapped(obs, spec))

    @property
    def lead(self) -> float:
        return self.load_seconds + LEAD_EXTRA_SECONDS


class StageResult(NamedTuple):
    proposal: Proposal
    state: PolicyState
    conditions: tuple[Condition, ...] = ()
    changes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    replicas: int
    rule: str  # which stage decided
    reason: str  # a sentence for a person
    recommendations: list[Recommendation]
    conditions: list[Condition]
    state: PolicyState
    metrics_available: bool
    what_would_change: list[str] = field(default_factory=list)
    stages: list[StageTrace] = field(default_factory=list)
    capacity: float = 0.0  # the per-replica capacity planned with (learned from latency)
    infeasible: bool = False  # latency over target that no count of replicas would fix


def _value(reading: Reading) -> float | None:
    return reading.value if reading.quality is Quality.OK else None


_first, _second = itemgetter(0), itemgetter(1)


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - 1e-9))


# -- signal helpers ---------------------------------------------------------------------------------


def rising_slope(samples: tuple[Sample, ...]) -> float:
    """Least-squares slope of the samples when the last three keep rising, else 0: a step that has
    levelled off is not a trend (projecting it would overshoot by slope x lead)."""
    if len(samples) < 4 or samples[-1][0] - samples[0][0] < 45 or \
            not samples[-3][1] < samples[-2][1] < samples[-1][1]:
        return 0.0
    n = len(samples)
    mean_t = sum(s[0] for s in samples) / n
    mean_v = sum(s[1] for s in samples) / n
    var = sum((s[0] - mean_t) ** 2 for s in samples)
    return max(0.0, sum((s[0] - mean_t) * (s[1] - mean_v) for s in samples) / var) if var else 0.0


def latency_pressure(obs: Observations, spec: AutoscalingSpec) -> float | None:
    ttft, itl = _value(obs.ttft_seconds), _value(obs.itl_seconds)
    if ttft is None or itl is None:
        return None
    return max(ttft / (spec.slo.ttft_milliseconds / 1e3), itl / (spec.slo.inter_token_latency_milliseconds / 1e3))


def learned_capacity(inputs: Inputs, state: PolicyState) -> PolicyState:
    """The capacity per replica to plan with: the performance model's figure times a learned scale.

    The model is a prior for an average request mix; latency says what this traffic allows. Latency
    over target while loaded replicas carry less than the planned capacity, seen again at the next decision
    outside a scale-up's settling, cuts the scale to 90% of what they carry (once per settle period): at the
    first tick of a step in demand the latency rises before the served tokens do and before a backlog shows,
    so one reading is no evidence of slow replicas. Comfortable latency recovers 3% a minute, at any load,
    up to the model's figure, so one bad minute is not remembered forever.
    """
    obs, now = inputs.obs, inputs.now
    scale = state.capacity_scale
    out, pressure = _value(obs.output_tokens_per_second), latency_pressure(obs, inputs.spec)
    elapsed = now - state.last_decision if state.last_decision is not None else 0.0
    if out is None or pressure is None or obs.ready_replicas < 1:
        return state
    per_replica = out / obs.ready_replicas
    capacity = inputs.model_capacity * scale
    cut_allowed = now >= (state.capacity_learned_at or -math.inf) + inputs.load_seconds + SETTLE_SECONDS
    over = pressure > 1 + TOLERANCE
    if over and not _settling(inputs, state) and cut_allowed and calm(inputs, state) \
            and LEARN_LOAD * capacity <= per_replica < capacity:
        # A first reading (or one older than a scale-up takes to show: a state restored by a new leader, an
        # episode long over) is remembered; the cut comes when the miss is still there at the next decision
        # outside a scale-up's settling, so the scale-up the first reading ordered has had its say.
        horizon = inputs.lead + SETTLE_SECONDS + 2 * inputs.spec.tick_seconds
        if state.slow_since is None or state.slow_since >= now or now - state.slow_since > horizon:
            return state.updated(slow_since=now)
        return state.updated(capacity_scale=round(max(MIN_CAPACITY_SCALE, 0.9 * per_replica
                                                      / inputs.model_capacity), 4),
                             capacity_learned_at=now, slow_since=None)
    if not over and state.slow_since is not None:
        state = state.updated(slow_since=None)  # latency recovered: no evidence left
    if pressure < COMFORTABLE and scale < 1.0:
        return state.updated(capacity_scale=round(min(1.0, scale * (1 + RECOVERY_PER_MINUTE)
                                                      ** (elapsed / 60)), 4))
    return state


def _settling(inputs: Inputs, state: PolicyState) -> bool:
    """A scale-up is still on its way into the lagging signals: until the replicas ordered serve (one
    lead) and the latency window has moved past the time they did not."""
    return inputs.now < (state.last_scale_up or -math.inf) + inputs.lead + SETTLE_SECONDS


def short_demand(inputs: Inputs, capacity: float) -> float | None:
    """Replicas the 30 s window needs: output tokens, or prompt tokens where they are counted (a burst
    of long prompts is prefill work that output tokens show only later and in part)."""
    short = _value(inputs.obs.output_tokens_per_second_short)
    if short is None:
        return None
    demand = short / capacity
    prompts = _value(inputs.obs.input_tokens_per_second_short)
    if inputs.prefill_tokens_per_second and prompts is not None:
        demand = max(demand, prompts / (inputs.prefill_tokens_per_second * capacity / inputs.model_capacity))
    return demand


def growth_quantile(demand: tuple[Sample, ...], lead: float, attainment: float, now: float,
                    half_life: float, level: float = 0.0) -> float:
    """Headroom for the attainment target: for each past decision, the most the demand grew within one
    start-up lead after it (what a replica ordered then could not have been in time for), as a ratio
    to the demand then (at least one replica's worth); the ``attainment`` quantile of those ratios,
    each weighted by 2^(-age / half-life) and its excess over 1x faded alike so old surprises fade, over
    the decisions whose demand was about ``level`` or more (``weighted_growths``). 1.0 with no
    history. The live signal composes the same steps, keeping each minute's highest growth
    (``headroom_signal``)."""
    growths = new_growths(demand, (), lead, now)
    return weighted_quantile(weighted_growths(growths, level, now, lead, half_life)[0], attainment)


def weighted_growths(growths: tuple[Growth, ...], level: float, now: float, lead: float,
                     half_life: float) -> tuple[list[tuple[float, float]], float]:
    """(growth, weight) pairs to take the quantile of, and the decaying peak (the highest demand x growth x
    weight of all samples), in one pass (it runs for every ModelDeployment at every decision).

    Weight: 2^(-age / half-life). Conditional: only the samples whose demand was at least ``LEVEL_SHARE``
    of ``level``: from the top of a burst the demand was never seen to grow by the burst again, from its
    foot it was. Above every sample's demand, those from at least that share of the highest: a new high
    grows as the highest did (none when the highest is under 1/REACH of ``level``).

    Faded: each growth's excess over 1x fades as its weight, from the time it was known (a lead after its
    decision). Weighting alone fades only a surprise's share: with a sample a minute and a 300 s half-life
    the weights sum to about 1 / (1 - 2^-0.2) = 7.7 newest-weights, so one 4x step keeps over 1% of the
    weight, and the 99% quantile, until 2^(-age / 300) < 0.077, some 1,100 s. Faded, it counts
    1 + 3 x 0.5 = 2.5x one half-life after it was known."""
    highest = max(0.0, max(map(_second, growths), default=0.0))
    floor = LEVEL_SHARE * min(level, highest) if highest >= level / REACH else math.inf
    shift = 2.0 ** (lead / half_life)
    out: list[tuple[float, float]] = []
    peak = 0.0
    for t, d, g in growths:
        w = 2.0 ** ((t - now) / half_life)
        if d * g * w > peak:
            peak = d * g * w
        if d >= floor:
            faded = w * shift
            out.append((1.0 + (g - 1.0) * (faded if faded < 1.0 else 1.0), w))
    return out, peak


def weighted_quantile(growths: list[tuple[float, float]], attainment: float) -> float:
    """The ``attainment`` quantile of (value, weight) pairs: the first value, in order, at which the running
    weight reaches that share of the total; 1.0 when empty."""
    if not growths:
        return 1.0
    growths = sorted(growths, key=_first)
    running = list(accumulate(map(_second, growths)))
    return growths[min(bisect_left(running, attainment * running[-1] - 1e-12), len(growths) - 1)][0]


def new_growths(demand: tuple[Sample, ...], done: tuple[Growth, ...], lead: float, now: float) -> tuple[Growth, ...]:
    """Growth samples (time, demand then, growth) for the demand samples that have become a lead old since
    the last decision; each is final then (no later sample falls within its lead), so they are kept
    rather than recomputed."""
    last = done[-1][0] if done else -math.inf
    out: list[Growth] = []
    n = len(demand)
    # Only the samples since the last kept one (time-ordered: a binary search finds the first).
    for k in range(bisect_right(demand, (last, math.inf)), n):
        t, d = demand[k]
        if t > now - lead:
            break
        end, ahead, seen = t + lead, 0.0, False
        for later, value in demand[k + 1:]:
            if later > end:
                break
            seen = True
            if value > ahead:
                ahead = value
        if seen:  # a later sample within the lead: its growth is known
            out.append((t, d, max(1.0, ahead / max(d, 1.0))))
    return tuple(out)


# -- stage 1: signals --------------------------------------------------------------------------------


def throughput_signal(inputs: Inputs, state: PolicyState, capacity: float) -> tuple[Recommendation, PolicyState]:
    obs = inputs.obs
    out = obs.output_tokens_per_second
    value = _value(out)
    samples = within(state.throughput, inputs.now, TREND_SECONDS)
    kept = within(state.projected, inputs.now, inputs.lead)
    if value is None:
        return Recommendation("throughput", None, capacity, None, out.describe()), \
            state.updated(throughput=samples, projected=kept)
    samples = (*samples, (inputs.now, value))
    short = _value(obs.output_tokens_per_second_short)
    # Start-up lead: a replica ordered now serves only after scheduling and the engine load, so while
    # the load keeps rising, size for where it will be then.
    level = max(value, short) if short is not None else value
    # A backlog draining shows as a rising rate too: no trend is read until calm.
    settled = state.ready_changed_at is None or inputs.now - state.ready_changed_at > CALM_SECONDS
    slope = rising_slope(samples) if calm(inputs, state) and settled else 0.0
    projected = max(value + slope * (inputs.lead + RATE_LAG_SECONDS),
                    (short if short is not None else value) + slope * (inputs.lead + SHORT_LAG_SECONDS))
    replicas = _ceil(projected / capacity)
    # The stabilisation history records the demand measured now; the projection is a forecast for one
    # lead ahead and holds the count for one lead (``stabilise``). Recorded for 300 s, a burst's
    # projection (a 2-minute window still rising after the burst has stopped: up to twice the burst)
    # held the count until the next burst, and the count ratcheted up burst by burst.
    now_replicas = _ceil(level / capacity)
    note = f"{value:.0f} tok/s" + (f", {projected:.0f} projected {inputs.lead:.0f} s ahead of its lag"
                                   if projected > value * 1.01 else "")
    note += f" / {capacity:.0f} tok/s per replica"
    if capacity < inputs.model_capacity * 0.999:
        note += f" (learned from latency; the model says {inputs.model_capacity:.0f})"
    # No tolerance band here: the capacity already keeps 20% headroom and scale-down is stabilised, and
    # a band would make the settled count depend on where it started (9 stays 9 and 10 stays 10 for a
    # need of 9.4).
    if not calm(inputs, state):
        waits = state.waits
        trapped_by = inputs.trapped
        if trapped_by is not None:
            # The pods holding it serve at their full batch, not at the SLO's capacity.
            replicas, note = 0, f"{note}: served is not demand: {trapped_by}"
        elif len(waits) >= 2 and waits[-1][1] < waits[0][1]:
            # A backlog draining is served faster than it arrives: served is not demand.
            replicas, note = 0, note + ": a backlog is draining, so served is not demand"
        else:
            # Growing or holding, served is at most the demand: a floor, with no trend read into it.
            replicas = _ceil(level / capacity)
            note += ": requests queued, served is a floor of demand"
        now_replicas = replicas
    if replicas > now_replicas:
        kept = (*kept, (inputs.now, float(replicas)))
    return Recommendation("throughput", value, capacity, replicas, note, recorded=now_replicas), \
        state.updated(throughput=samples, projected=kept)


def latency_signal(inputs: Inputs, state: PolicyState) -> tuple[Recommendation, PolicyState]:
    obs, spec = inputs.obs, inputs.spec
    ttft, itl = obs.ttft_seconds, obs.itl_seconds
    out = _value(obs.output_tokens_per_second)
    if out == 0:
        return Recommendation("latency", 0.0, 1.0, 0, "no traffic: latency targets trivially met"), \
            state.updated(infeasible_since=None)
    pressure = latency_pressure(obs, spec)
    if pressure is None:
        unread = ttft if not ttft.ok else itl
        return Recommendation("latency", None, 1.0, None, unread.describe()), state
    assert ttft.value is not None and itl.value is not None
    p = f"p{spec.slo.percentile * 100:.0f}"
    said = (f"TTFT {p} {ttft.value * 1e3:.0f}/{spec.slo.ttft_milliseconds} ms, ITL {p} "
            f"{itl.value * 1e3:.0f}/{spec.slo.inter_token_latency_milliseconds} ms")
    ready, current = obs.ready_replicas, obs.current_replicas
    carried = within(state.carried, inputs.now, CARRIED_SECONDS)
    if pressure <= 1 + TOLERANCE:
        settled = state.ready_changed_at is None or inputs.now - state.ready_changed_at > CALM_SECONDS
        if out is not None and ready > 0 and settled and calm(inputs, state):
            carried = carry(carried, (inputs.now, float(ready), out, pressure))
        state = state.updated(infeasible_since=None, latency_scaled_at=None, latency_pressure=None,
                              carried=carried)
        if pressure > COMFORTABLE:
            # Near its target, latency is what this count holds it at: fewer replicas would put it over
            # (when the token model cannot see the work, as with long prompts on the LLM-API backend, the
            # throughput's ask is far lower, and a scale-down to it misses until latency orders the count
            # back). A hold, not a measure of demand: the headroom does not grow it and the stabilisation
            # history does not record it, so once latency is comfortable the count follows demand again.
            # Kept for a lead (``stabilise``): a single comfortable reading is noise, and releasing on it
            # would halve the fleet that holds latency here.
            # Unless fewer replicas were seen carrying as much, at latency as low (within 5%), this last
            # hour: then latency sits where it is at any count (an ITL floor of the model on this GPU),
            # and the hold is that count, not whatever count a burst left.
            fewest = min((n for _, n, tokens, was in carried
                          if out is not None and tokens >= out and was <= pressure * 1.05), default=current)
            hold = min(current, int(fewest))
            held = (*within(state.held, inputs.now, inputs.lead), (inputs.now, float(hold)))
            why = "no scale-down" if hold >= current else \
                f"holding {hold}, the fewest seen carrying {out:.0f} tok/s within target this hour"
            return Recommendation("latency", pressure, 1.0, hold, f"{said}: within target but near it "
                                  f"(over {COMFORTABLE:.0%}): {why}", holds=True), \
                state.updated(held=held)
        return Recommendation("latency", pressure, 1.0, 0, f"{said}: within target"), state
    # The p95 is the held backlog's: it says nothing of this count.
    trapped_by = inputs.trapped
    if trapped_by is not None:
        # A hold, not a measure: recorded in no history, so it restarts no stabilisation window.
        return Recommendation("latency", pressure, 1.0, current, f"{said}: over target, but {trapped_by}: holding",
                              holds=True), state
    if out is not None and carried:
        # Over target at this count and throughput: no fewer replicas carry as much (the mix changed).
        state = state.updated(carried=tuple(c for c in carried if not (c[1] <= ready and c[2] >= out)))
    if _settling(inputs, state):
        until = (state.last_scale_up or 0) + inputs.lead + SETTLE_SECONDS - inputs.now
        return Recommendation("latency", pressure, 1.0, current,
                              f"{said}: over target, but the last scale-up shows in latency only {until:.0f} s "
                              "from now", holds=True), state
    waits = state.waits
    if len(waits) >= 2 and waits[-1][1] < waits[0][1]:
        return Recommendation("latency", pressure, 1.0, current, holds=True, note=(
            f"{said}: over target but improving (the wait for the first token fell from {waits[0][1]:.1f} s to "
            f"{waits[-1][1]:.1f} s): holding")), state
    # Requests slow even alone (prompts whose prefill alone exceeds the TTFT target) miss at any count,
    # and the pods export no prompt lengths to tell them apart. So latency is put to the test: once a
    # scale-up it decided has settled, pressure that has not fallen by a fifth was never capacity's.
    # Then throughput sizes the fleet for INFEASIBLE_HOLD_SECONDS and latency is reported, unless the
    # median (a shortage of capacity raises it; a slow tail does not) or the ITL says otherwise.
    median = _value(obs.ttft_median_seconds)
    capacity_short = (itl.value > spec.slo.inter_token_latency_milliseconds / 1e3 * (1 + TOLERANCE)) or (
        median is not None and median > spec.slo.ttft_milliseconds / 1e3 * MEDIAN_SHARE)
    since = state.infeasible_since
    tested = state.latency_scaled_at is not None and state.latency_pressure is not None and \
        inputs.now >= state.latency_scaled_at + inputs.lead + SETTLE_SECONDS
    if not capacity_short and since is None and tested and pressure >= (state.latency_pressure or 0) * 0.8:
        since = inputs.now
    if not capacity_short and since is not None and inputs.now - since < INFEASIBLE_HOLD_SECONDS:
        return Recommendation("latency", pressure, 1.0, 0,
                              f"{said}: over target, and a scale-up on it did not bring it down: requests slow "
                              "even alone (infeasible at any count); throughput decides"), \
            state.updated(infeasible_since=since, latency_scaled_at=None, latency_pressure=None)
    state = state.updated(infeasible_since=None)
    # How far over target says little about how many more replicas are needed once queueing sets in:
    # at most doubling per decision, and the stages after this one add the settle time.
    replicas = max(current + 1, _ceil(max(ready, 1) * min(pressure, MAX_UP_FACTOR)))
    return Recommendation("latency", pressure, 1.0, replicas, f"{said}: over target"), state


def carry(front: tuple[Carried, ...], sample: Carried) -> tuple[Carried, ...]:
    """The Pareto front of (replicas, tokens/s, pressure) with ``sample``: an entry stays unless the sample
    carries as much with no more replicas at latency as low; the sample joins unless an entry already
    does. In time order."""
    _, n, tokens, pressure = sample
    if any(c[1] <= n and c[2] >= tokens and c[3] <= pressure for c in front):
        return front
    return (*(c for c in front if not (c[1] >= n and c[2] <= tokens and c[3] >= pressure)), sample)


def trapped(obs: Observations, spec: AutoscalingSpec) -> str | None:
    """Why a backlog is held by the pods that admitted it, or None: more replicas drain none of it.

    Triton takes every request it is sent and no pod hands one on, so a backlog a pod admitted before
    others were ready stays there; the router sends the new arrivals to the others. It shows as a wait
    shared by few pods (``awaiting_pods``: 10 ready, one pod holding 300 awaiting-seconds a second and
    the rest 1: 1.06 pods) while the TTFT median is within its target (the other pods' first tokens).
    A shortage, by contrast, raises the wait on every pod the router feeds, and with it the median."""
    pods, median, ready = _value(obs.awaiting_pods), _value(obs.ttft_median_seconds), obs.ready_replicas
    if pods is None or median is None or ready < 2 or pods > ready * TRAPPED_SHARE or \
            median > spec.slo.ttft_milliseconds / 1e3 * MEDIAN_SHARE:
        return None
    return (f"the wait is held by about {pods:.1f} of {ready} ready pods and the TTFT median is "
            f"{median * 1e3:.0f} ms: the other pods take the arrivals, and more replicas drain none of it")


def backlog_growth(waits: tuple[Sample, ...]) -> float:
    """Seconds the mean wait for the first token grows per second, over the kept samples (0 if falling)."""
    if len(waits) < 2 or waits[-1][0] <= waits[0][0]:
        return 0.0
    return max(0.0, (waits[-1][1] - waits[0][1]) / (waits[-1][0] - waits[0][0]))


def backlog_demand(inputs: Inputs, state: PolicyState) -> float | None:
    """Replicas of demand while the wait for the first token grows g s/s: ready / (1 - g).

    The request served at t arrived at a(t), and waited W = t - a(t); served at mu and arriving at
    lambda, a'(t) = mu / lambda, so W grows at g = 1 - mu / lambda: the demand is 1 / (1 - g) times
    what the saturated replicas serve, in whatever mix of prompt and output this traffic has (no
    token model: a queue means every ready replica runs at its real capacity). Read only while the
    ready count has held for the samples' window: a replica that just became ready serves fresh
    requests while the old ones drain their queues, and the mean wait no longer says it."""
    if inputs.trapped is not None:
        return None  # the wait grows in the pods holding a backlog, not in those taking the arrivals
    growth = backlog_growth(state.waits)
    wait = _value(inputs.obs.wait_short)
    changed = state.ready_changed_at
    steady = changed is None or changed <= (state.last_scale_up or -math.inf) or (
        inputs.now - changed >= GROWTH_SECONDS + 15 and not _settling(inputs, state))
    ready = inputs.obs.ready_replicas
    # Growth at or above 1 s/s is impossible for one FIFO queue (it says the fleet serves nothing):
    # queues of replicas of different ages mixed in one mean; no estimate then.
    if steady and ready > 0 and MIN_GROWTH < growth < 1.0 and wait is not None \
            and wait > inputs.spec.slo.ttft_milliseconds / 2e3:
        return ready / (1 - min(growth, MAX_GROWTH))
    return None


def drain_replicas(inputs: Inputs, waiting: float) -> float:
    """Replicas that drain ``waiting`` requests within one lead, at the rate the ready replicas
    complete requests now (saturated, so at their real capacity for this mix): 2,500 waiting, 14
    requests/s a replica, a 90 s lead: 2."""
    r = _value(inputs.obs.requests_per_second_short) or _value(inputs.obs.requests_per_second)
    ready = inputs.obs.ready_replicas
    if not r or ready < 1:
        return 1.0
    # Never more replicas than requests waiting (a near-zero completion rate reads as infinite need).
    return min(waiting, waiting / (r / ready * inputs.lead))


def queue_signal(inputs: Inputs, state: PolicyState) -> tuple[Recommendation, PolicyState]:
    """Requests waiting. Two readings of one backlog: how fast it grows, and how many wait.

    While the wait for the first token grows, ``backlog_demand`` gives the demand in replicas (the one
    figure of demand a saturated fleet shows: its served tokens are capped by its capacity); the order
    adds what keeps queueing until the new replicas serve and the queue now spread over a lead. That is
    an absolute estimate, so reading it again while the new replicas load orders nothing more. Once a
    scale-up has settled and requests still queue, enough more to drain them within a lead.
    """
    obs, spec, now = inputs.obs, inputs.spec, inputs.now
    waits = within(state.waits, now, GROWTH_SECONDS)
    wait = _value(obs.wait_short)
    if wait is not None:
        waits = (*waits, (now, wait))
    state = state.updated(waits=waits)
    queue = obs.queue
    value = _value(queue)
    if value is None:
        return Recommendation("queue", None, spec.queue_per_replica, None, queue.describe()), state
    ready = max(obs.ready_replicas, 1)
    per_replica = value / ready
    note = f"{value:.0f} waiting, {per_replica:.1f} per ready replica (limit {spec.queue_per_replica:g})"
    replicas = 0
    estimate = backlog_demand(inputs, state)
    if estimate is not None:
        # The backlog keeps growing until the replicas ordered now serve, one lead from now; order
        # enough to drain what will have queued by then within one more lead: the demand, plus its
        # excess over the ready replicas, plus the queue now.
        growth = backlog_growth(waits)
        estimate += max(0.0, estimate - obs.ready_replicas) + drain_replicas(inputs, value)
        replicas = _ceil(estimate)
        note += f"; the wait for the first token grows {growth:.2f} s/s: demand {estimate:.1f} replicas"
    if per_replica <= spec.queue_per_replica * (1 + TOLERANCE):
        return Recommendation("queue", value, spec.queue_per_replica, replicas, note), state
    current = obs.current_replicas
    trapped_by = inputs.trapped
    if trapped_by is not None:
        return Recommendation("queue", value, spec.queue_per_replica, current, f"{note}; {trapped_by}: holding",
                              holds=True), state
    if _settling(inputs, state):
        return Recommendation("queue", value, spec.queue_per_replica, max(replicas, current),
                              note + "; the last scale-up drains it", holds=replicas <= current), state
    # Still queued once the last scale-up serves: enough extra replicas to drain the backlog within one
    # start-up lead at the rate the ready replicas complete requests.
    extra = _ceil(drain_replicas(inputs, value))
    return Recommendation("queue", value, spec.queue_per_replica, max(replicas, current + max(1, extra)),
                          note + f"; {extra} more drain it within {inputs.lead:.0f} s"), state


def headroom_signal(inputs: Inputs, state: PolicyState, capacity: float,
                    measured: list[Recommendation]) -> tuple[Recommendation, PolicyState]:
    """The attainment target's headroom, from the history of demand (docs/autoscaling.md has worked
    numbers).

    Demand, in replicas, is what is measured: the 30 s token demand while calm, the demand the backlog's
    growth gives while requests queue, and what latency asks for (in replicas rather than tokens, so
    traffic whose work is prefill the token model cannot see is remembered by its latency). Not the
    other asks: the throughput's carries a projection and the queue's a drain already. The
    recommendation is the demand now times the ``slo.attainment`` quantile of the growth seen from
    demand at about this level (``weighted_growths``): from the foot of a burst the bursts count, from its
    top they do not. Well below the peak it is bounded by the peak, which fades."""
    now = inputs.now
    demand = within(state.demand, now, inputs.lead + RECENT_EXTRA_SECONDS)
    # Its calm asks are kept for one start-up lead, for ``stabilise``: the 30 s demand swings a replica
    # either way from one decision to the next, and a replica released on a dip and ordered back on the
    # next rise serves nothing for a whole start-up. Kept for as long as a start-up, an idle replica
    # costs at most what ordering it again would (the ski-rental bound).
    asks = within(state.headroom, now, inputs.lead)
    quiet = calm(inputs, state)
    tokens = short_demand(inputs, capacity) if quiet else None
    seen = [x for x in (tokens, backlog_demand(inputs, state),
                        *(float(r.replicas) for r in measured if r.signal == "latency" and r.replicas
                          and not r.holds)) if x]
    asked = [float(r.replicas) for r in measured if r.replicas is not None and not r.holds]
    if not seen and not asked:
        return Recommendation("headroom", None, inputs.spec.slo.attainment, None,
                              inputs.obs.output_tokens_per_second_short.describe()), \
            state.updated(demand=demand, headroom=asks)
    # Nothing measured this decision (a backlog while the ready count changes): what the others ask.
    base = max(seen) if seen else max(asked)
    # The growth is learned only from calm demand, measured true (a backlog's estimate reads low while
    # the ready count changes, and its recovery would read as growth), and once the rate windows have
    # filled after the first decision (a window filling reads as demand growing).
    if seen and quiet and state.watching_since is not None and now - state.watching_since >= CALM_SECONDS:
        demand = (*demand, (now, base))
    # Memories fade with the scale-down window's half-life: a burst 300 s ago counts for half.
    half_life = max(15.0, float(inputs.spec.scale_down_stabilization_seconds))
    # Incremental: each decision finalises the growth of the samples that have just become a lead old,
    # kept as each minute's highest; the weights 2^(-age / half-life) share one factor, so only relative
    # ages count.
    growths = within(state.growth, now, DEMAND_MEMORY_SECONDS)
    for sample in new_growths(demand, state.growth, inputs.lead, now):
        growths = per_minute(growths, sample)
    pairs, peak = weighted_growths(growths, base, now, inputs.lead, half_life)
    growth = weighted_quantile(pairs, inputs.spec.slo.attainment)
    target = base * growth
    # Well below the highest demand reached (the foot of a burst, after a step), the headroom is bounded
    # by that peak, halved every half-life: the memory of a burst fades. Near it (a rising trend) it is
    # not, or no rising trend could be led.
    bounded = base < LEVEL_SHARE * peak
    if bounded:
        target = min(target, max(base, peak))
    replicas = _ceil(target)
    # While requests queue, the demand read is a lagging estimate: read again while a scale-up settles,
    # it would order on top of what is on its way (as the latency and queue signals hold, so does this).
    holds = not quiet and _settling(inputs, state) and replicas > inputs.obs.current_replicas
    if holds:
        replicas = inputs.obs.current_replicas
    note = (f"demand {base:.1f} replicas now; from about this level it grew up to {growth:.2f}x within "
            f"{inputs.lead:.0f} s at the {inputs.spec.slo.attainment:.2%} quantile of the last hour"
            + (f"; bounded by the decaying peak {peak:.1f}" if bounded else "")
            + ("; requests queue and a scale-up is on its way: holding" if holds else ""))
    if quiet:
        asks = (*asks, (now, float(replicas)))
    return Recommendation("headroom", growth, inputs.spec.slo.attainment, replicas, note, holds=holds), \
        state.updated(demand=demand, growth=growths, headroom=asks)


def calm(inputs: Inputs, state: PolicyState) -> bool:
    """No backlog now and none within the stable window: the windows hold no queued requests' times."""
    return not inputs.backlogged and (
        state.last_backlog is None or inputs.now - state.last_backlog > CALM_SECONDS)


def served(inputs: Inputs, state: PolicyState) -> tuple[Inputs, PolicyState]:
    """Output tokens as completions/s times the output tokens a request carries, learned while calm.

    Completions are counted true at any load and through any change of count. The token figures are
    not, after a backlog: on the LLM-API backend they are modelled from the decoding concurrency, which
    the queue times of requests completing after a backlog inflate for a window. So the tokens per
    request are learned (a moving average) only while calm, and once learned the throughput is always
    completions times them: 60 requests/s of 250 tokens read as 15,000 tok/s.
    """
    obs = inputs.obs
    if inputs.backlogged:
        state = state.updated(last_backlog=inputs.now)
    out, r = _value(obs.output_tokens_per_second), _value(obs.requests_per_second)
    learned = state.tokens_per_request
    # Learned only while calm and with the ready count unchanged over the window: the modelled tokens
    # read the window's concurrency over the ready replicas now, and a count that just changed skews it.
    settled = state.ready_changed_at is None or inputs.now - state.ready_changed_at > CALM_SECONDS
    if calm(inputs, state) and settled and out is not None and r is not None and r > 0:
        sample = out / r
        learned = sample if learned is None else 0.8 * learned + 0.2 * sample
        state = state.updated(tokens_per_request=round(learned, 3))
    if learned is None:
        return inputs, state
    r_short = _value(obs.requests_per_second_short)
    corrected = obs.replaced(
        output_tokens_per_second=Reading(r * learned, Quality.OK, f"{r:.1f} requests/s x {learned:.0f} tokens")
        if r is not None else obs.output_tokens_per_second,
        output_tokens_per_second_short=Reading(r_short * learned, Quality.OK,
                                               f"{r_short:.1f} requests/s x {learned:.0f} tokens")
        if r_short is not None else obs.output_tokens_per_second_short)
    # Only the token readings change, so whether requests queue stays as it was read.
    return inputs._replace(obs=corrected), state


def signals(inputs: Inputs, state: PolicyState) -> tuple[list[Recommendation], PolicyState, float, bool]:
    ready = inputs.obs.ready_replicas
    if ready != state.ready:
        # The first look is no change: the count was not seen before.
        changed = inputs.now if state.last_decision is not None else state.ready_changed_at
        state = state.updated(ready=ready, ready_changed_at=changed)
    inputs, state = served(inputs, state)
    state = learned_capacity(inputs, state)
    capacity = inputs.model_capacity * state.capacity_scale
    tp, state = throughput_signal(inputs, state, capacity)
    queue, state = queue_signal(inputs, state)
    latency, state = latency_signal(inputs, state)
    headroom, state = headroom_signal(inputs, state, capacity, [tp, queue, latency])
    infeasible = state.infeasible_since is not None
    return [tp, latency, queue, headroom], state, capacity, infeasible


# -- stages 2 to 7 ---------------------------------------------------------------------------------


def combine(recs: list[Recommendation], inputs: Inputs, state: PolicyState) -> StageResult:
    current = inputs.obs.current_replicas
    usable = [r for r in recs if r.replicas is not None]
    missing = [r.signal for r in recs if r.replicas is None]
    if not usable:
        fallback = inputs.spec.missing_metrics_replicas
        if fallback is not None and fallback > current:
            blind = Proposal(fallback, "fallback", f"no usable metrics ({', '.join(missing)}): up to the fallback "
                             f"of {fallback} replicas")
        else:
            blind = Proposal(current, "hold", f"no usable metrics ({', '.join(missing)}): holding {current} replicas")
        # Recorded like any hold: the stabilisation window runs from the last blind decision, so the first
        # readings after an outage longer than the window cannot cut at once.
        history = (*within(state.history, inputs.now, inputs.spec.scale_down_stabilization_seconds),
                   (inputs.now, float(blind.replicas)))
        return StageResult(blind, state.updated(history=history))
    winner = max(usable, key=lambda r: r.replicas or 0)
    proposal = Proposal(winner.replicas or 0, winner.signal, f"{winner.signal} asks for {winner.replicas}: "
                        f"{winner.note}")
    if proposal.replicas < current and inputs.backlogged:
        proposal = Proposal(current, "hold", f"requests queued past the TTFT target: never scaling down; holding "
                            f"{current}")
    if missing and proposal.replicas < current:
        proposal = Proposal(current, "hold", f"{', '.join(missing)} unavailable: never scaling down on missing "
                            f"data; holding {current}")
    # The stabilisation history records what the measured load asks for; the headroom has its own
    # decaying memory, and recording it here too would hold a burst twice as long.
    # Nor a count a signal holds (a lagging one while a scale-up settles, latency near its target): that
    # is no measure of demand, and recording it would restart the window on every decision of a backlog
    # (latency's hold is kept for a lead instead). The throughput is recorded without its projection.
    measured = max([(r.recorded if r.recorded is not None else r.replicas or 0) for r in usable
                    if r.signal != "headroom" and not r.holds] + [0])
    recorded = proposal.replicas if proposal.rule in ("hold", "fallback") else measured
    history = (*within(state.history, inputs.now, inputs.spec.scale_down_stabilization_seconds),
               (inputs.now, float(recorded)))
    return StageResult(proposal, state.updated(history=history))


def panic(p: Proposal, inputs: Inputs, state: PolicyState, capacity: float) -> StageResult:
    obs, now = inputs.obs, inputs.now
    d = short_demand(inputs, capacity)
    if d is not None:
        burst = _ceil(d)
        if burst >= PANIC_THRESHOLD * max(obs.ready_replicas, 1) and burst > obs.current_replicas:
            state = state.updated(panic_until=now + PANIC_SECONDS)
            if burst > p.replicas:
                p = Proposal(burst, "panic", f"burst: the 30 s demand needs {burst} replicas, "
                             f"{obs.ready_replicas} ready; sized in one decision, no scale-down for "
                             f"{PANIC_SECONDS:.0f} s")
    if state.panic_until is not None and now < state.panic_until and p.replicas < obs.current_replicas:
        p = Proposal(obs.current_replicas, "panic", f"panic mode for {state.panic_until - now:.0f} s more: not "
                     "scaling down")
    return StageResult(p, state)


# The asks kept for one start-up lead, by state field: what bound the count, and what would release it.
LEAD_ASKS = {"headroom": ("the headroom asked for", "the headroom asking for less"),
             "projected": ("the throughput's trend projected", "no rising trend"),
             "held": ("latency near its target held", "latency comfortable")}


def stabilise(p: Proposal, inputs: Inputs, state: PolicyState) -> StageResult:
    current = inputs.obs.current_replicas
    if p.replicas >= current or not state.history:
        return StageResult(p, state)
    window = inputs.spec.scale_down_stabilization_seconds
    lead = inputs.lead
    # The history's highest and each ask kept for one start-up lead (``LEAD_ASKS``); on a tie the first
    # listed is the one named.
    highest, source = max([(int(max(map(_second, state.history))), ""), *(
        (int(max(map(_second, within(getattr(state, name), inputs.now, lead)), default=0.0)), name)
        for name in LEAD_ASKS)], key=_first)
    if highest <= p.replicas:
        return StageResult(p, state)
    if source:
        what, unless = LEAD_ASKS[source]
        why, would = f"{what} {highest} within the last {lead:.0f} s (a start-up)", f"{unless} for {lead:.0f} s"
    else:
        why = f"the highest recommendation of the last {window} s is {highest}"
        would = f"load staying low for {window} s"
    would += f" would allow {p.replicas}"
    bound = min(highest, current)
    return StageResult(Proposal(bound, "stabilization", f"{p.reason}; {why}: scaling down to {bound} at most"),
                       state, changes=(would,))


def rate_limit(p: Proposal, inputs: Inputs, state: PolicyState) -> StageResult:
    current = inputs.obs.current_replicas
    up = max(math.ceil(current * MAX_UP_FACTOR), current + MAX_UP_REPLICAS)
    down = current - max(1, math.floor(current * MAX_DOWN_FRACTION))
    if p.replicas > up:
        return StageResult(Proposal(up, "rate-limit", f"{p.reason}; limited to {up} this decision (scale-up "
                                    "rate)"), state,
                           (Condition("ScalingLimited", True, "ScaleUpLimit", f"at most {up} this decision"),))
    if p.replicas < down and current > 0:
        return StageResult(Proposal(down, "rate-limit", f"{p.reason}; limited to {down} this decision "
                                    "(scale-down rate)"), state)
    return StageResult(p, state)


def pods(p: Proposal, inputs: Inputs, state: PolicyState) -> StageResult:
    obs, current = inputs.obs, inputs.obs.current_replicas
    if p.replicas > current and obs.unschedulable:
        message = "a pending pod is unschedulable: no node has the GPUs it needs; not adding more"
        return StageResult(
            Proposal(current, "gpu-capacity", f"{p.reason}; GPU capacity exhausted (unschedulable pod): holding "
                     f"{current}"), state,
            (Condition("AbleToScale", False, "GPUCapacityExhausted", message),
             Condition("ScalingLimited", True, "GPUCapacityExhausted", message)),
            ("free GPUs of this product (or more nodes) would let it scale up",))
    if p.replicas > current and obs.pending_replicas > 0:
        return StageResult(
            Proposal(current, "pending", f"{p.reason}; {obs.pending_replicas} pod(s) still pending: holding "
                     f"{current}"), state,
            (Condition("AbleToScale", False, "WaitingForPendingPods",
                       f"{obs.pending_replicas} pod(s) pending; no further scale-up until they start"),))
    return StageResult(p, state, _ABLE)


def idle(obs: Observations) -> bool:
    """No traffic: zero output, nothing in flight or queued; at zero pods, no series is the expected
    reading (every pod metric is EMPTY) and counts as idle."""
    if obs.current_replicas == 0 and obs.ready_replicas == 0:
        return all(r.quality is Quality.EMPTY or (r.ok and r.value == 0)
                   for r in (obs.output_tokens_per_second, obs.in_flight, obs.queue))
    # Spelled out rather than all() over a generator: it runs at every decision, and the first reading
    # with traffic settles it.
    return _value(obs.output_tokens_per_second) == 0 and _value(obs.in_flight) == 0 and _value(obs.queue) == 0


def bounds(p: Proposal, inputs: Inputs, state: PolicyState) -> StageResult:
    spec, obs, now = inputs.spec, inputs.obs, inputs.now
    quiet = idle(obs)
    state = state.updated(idle_since=(state.idle_since if state.idle_since is not None else now)
                          if quiet else None)
    floor = spec.min_replicas
    if spec.min_replicas == 0:
        idle_for = now - state.idle_since if state.idle_since is not None else 0.0
        floor = 0 if quiet and idle_for >= SCALE_TO_ZERO_IDLE_SECONDS else 1
        if floor == 0 and obs.current_replicas > 0:
            p = Proposal(0, "scale-to-zero", f"idle for {idle_for:.0f} s: scaling to zero")
        if obs.current_replicas == 0:
            activation = obs.activation
            value = _value(activation)
            threshold = spec.activation.threshold if spec.activation else 0.0
            if value is not None and value > threshold:
                p = Proposal(max(p.replicas, 1), "activation", f"activation signal {value:.3g} > {threshold:g}: "
                             "starting from zero")
            else:
                why = activation.describe() if value is None else f"{value:.3g} <= {threshold:g}"
                return StageResult(Proposal(0, "scale-to-zero", f"at zero; activation signal {why}"), state,
                                   (Condition("ScalingLimited", False, "DesiredWithinRange", "at zero, idle"),))
    if p.replicas > spec.max_replicas:
        return StageResult(Proposal(spec.max_replicas, "max", f"{p.reason}; clamped to maxReplicas "
                                    f"{spec.max_replicas}"), state,
                           (Condition("ScalingLimited", True, "TooManyReplicas",
                                      f"{p.replicas} wanted, maxReplicas is {spec.max_replicas}"),),
                           (f"raising maxReplicas above {spec.max_replicas}",))
    if p.replicas < floor:
        return StageResult(Proposal(floor, "min", f"{p.reason}; raised to the floor {floor}"), state,
                           (Condition("ScalingLimited", True, "TooFewReplicas",
                                      f"{p.replicas} wanted, the floor is {floor}"),))
    return StageResult(p, state)


@lru_cache(maxsize=64)
def _scaling_active(usable: tuple[str, ...]) -> Condition:
    """ScalingActive for the signals read (few combinations: built once each)."""
    if usable:
        return Condition("ScalingActive", True, "ValidMetricFound", "scaling on " + ", ".join(usable))
    return Condition("ScalingActive", False, "FailedGetMetrics", "no signal could be read")


Stage = Callable[[Proposal, Inputs, PolicyState], StageResult]
# After ``combine`` and ``panic`` (which also takes the capacity planned with).
STAGES: tuple[tuple[str, Stage], ...] = (("stabilise", stabilise), ("rate-limit", rate_limit), ("pods", pods),
                                         ("bounds", bounds))
# The conditions most decisions set, built once (decide runs for every ModelDeployment at every tick).
_ABLE = (Condition("AbleToScale", True, "ReadyForNewScale", "the replica count can be changed"),)
_WITHIN_RANGE = Condition("ScalingLimited", False, "DesiredWithinRange", "no limit applied")
_ALL_READ = Condition("MetricsAvailable", True, "AllSignalsRead", "every signal was read")


def decide(obs: Observations, spec: AutoscalingSpec, capacity_tokens_per_second: float, load_seconds: float,
           state: PolicyState | None, now: float, prefill_tokens_per_second: float | None = None) -> Decision:
    """Desired replicas for one ModelDeployment. ``capacity_tokens_per_second`` is the output tokens/s
    one replica carries within the SLO (the performance model's), ``prefill_tokens_per_second`` the
    prompt tokens/s it prefills (None: demand is measured on output alone), ``load_seconds`` how long a
    new replica takes to serve."""
    inputs = Inputs.of(obs, spec, capacity_tokens_per_second, load_seconds, prefill_tokens_per_second, now)
    state = state or PolicyState.restore(None, obs.current_replicas, now)
    if obs.current_replicas == 0 and obs.ready_replicas == 0:
        # At zero pods no pod exports a series: EMPTY is the expected reading, not a missing one.
        capacity, infeasible = capacity_tokens_per_second * state.capacity_scale, False
        recs = [Recommendation(name, None, None, 0, "no pods: no series is the expected reading")
                for name in ("throughput", "latency", "queue", "headroom")]
    else:
        recs, state, capacity, infeasible = signals(inputs, state)
    result = combine(recs, inputs, state)
    trace = [StageTrace("combine", result.proposal.replicas, result.proposal.rule, result.proposal.reason)]
    conditions: list[Condition] = list(result.conditions)
    changes: list[str] = list(result.changes)
    proposal, state = result.proposal, result.state
    for name, stage in (("panic", None), *STAGES):
        result = stage(proposal, inputs, state) if stage else panic(proposal, inputs, state, capacity)
        if result.proposal is not proposal and result.proposal != proposal:
            trace.append(StageTrace(name, result.proposal.replicas, result.proposal.rule, result.proposal.reason))
        proposal, state = result.proposal, result.state
        conditions += result.conditions
        changes += result.changes

    usable = [r for r in recs if r.replicas is not None]
    metrics_available = len(usable) == len(recs)
    if not any(c.type == "ScalingLimited" for c in conditions):
        conditions.append(_WITHIN_RANGE)
    conditions.append(_scaling_active(tuple(r.signal for r in usable)))
    conditions.append(_ALL_READ if metrics_available else Condition(
        "MetricsAvailable", False, "SignalsMissing",
        "; ".join(f"{r.signal}: {r.note}" for r in recs if r.replicas is None)))
    current = obs.current_replicas
    # The rate windows fill a window after pods came from zero: demand is learned from a window after the
    # last decision at zero pods (their series start then).
    at_zero = current == 0 and obs.ready_replicas == 0
    watching = None if at_zero else state.watching_since if state.watching_since is not None else now
    update: dict[str, float | None] = {"last_decision": now, "watching_since": watching}
    if proposal.replicas > current:
        update["last_scale_up"] = now
        # Latency asked for more than there was: this scale-up is latency's test, whichever signal won
        # (headroom remembering latency's earlier asks would otherwise scale on it untested).
        asked = next((r.replicas for r in recs if r.signal == "latency"), None)
        if asked is not None and asked > current and state.latency_scaled_at is None:
            update["latency_scaled_at"] = now
            update["latency_pressure"] = latency_pressure(obs, spec)
    state = state.updated(**update)
    for r in usable:
        if r.replicas is not None and r.replicas > proposal.replicas and r.signal != proposal.rule:
            changes.append(f"{r.signal} alone would ask for {r.replicas}")
    # One condition per type (a status list-map): the later stage's is the one that bound the count.
    merged = list({c.type: c for c in conditions}.values())
    return Decision(proposal.replicas, proposal.rule, proposal.reason, recs, merged, state, metrics_available,
                    changes, trace, capacity, infeasible)

