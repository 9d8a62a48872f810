"""Replay a request trace against one ModelDeployment in virtual time.

The replicas batch requests with ``inference_pods.batching`` and take ``ReplicaModel.step_seconds`` per
iteration, exactly as the emulator does; the autoscaler is the live ``decide`` function, fed by the live
loop's observer (``controllers.autoscaling.observer.observe``) from the families a real pod exports
(``controllers.simulation.series``: completion-counted counters, the bucketed TTFT histogram, gauges
per scrape) and from the replicas described as pods (Pending while scheduled, Running while the engine
loads, Ready after), with the live loop's delays: a tick every ``tick_seconds``, metrics lagging by one
scrape interval over the same rate windows, and draining on scale-down. A router sends each request to
the serving replica with the least outstanding work, so queueing comes from capacity rather than
routing luck.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controllers.autoscaling.loop import capacity_for
from controllers.autoscaling.observer import count_pods, observe
from controllers.autoscaling.policy import Decision, decide
from controllers.autoscaling.signals import Observations, Reading
from controllers.autoscaling.state import PolicyState
from controllers.metrics import SignalReadings
from controllers.simulation.series import SimulatedSeries
from controllers.simulation.trace import TraceRequest
from crds.models import ModelDeployment
from inference_pods.batching import Batcher, Plan, Sequence
from inference_pods.emulator.engine import KV_BLOCK_TOKENS
from inference_pods.performance import ReplicaModel
from inference_pods.repository import first_response_buckets


@dataclass(frozen=True)
class SimulationConfig:
    scrape_seconds: float = 15.0  # metrics are this old when the autoscaler reads them
    window_seconds: float = 120.0  # the stable rate window
    short_window_seconds: float = 30.0  # the panic window
    scheduling_seconds: float = 5.0  # pod scheduled and container started, before the engine loads
    load_seconds: float | None = None  # default: the performance model's engine load time
    initial_replicas: int | None = None  # default: the autoscaler's minimum
    # Step a decode-only batch as one event until its first request finishes or a request arrives;
    # exact (tested against stepping every iteration), and what makes an hour take seconds.
    fast_forward: bool = True


@dataclass(eq=False)
class SimReplica:
    id: int
    batcher: Batcher
    started_at: float
    ready_at: float
    draining: bool = False
    stopped_at: float | None = None
    plan: Plan | None = None  # the iteration in flight (repeated len(ends) times when fast-forwarded)
    ends: list[float] = field(default_factory=list)  # end time of each repeat of the plan
    version: int = 0  # bumped when a fast-forward is cut short, to ignore the superseded STEP_END
    busy_seconds: float = 0.0  # time spent in iterations, for GPU utilisation
    # What held requests in the queue when the iteration in flight was planned: "kv" (the next one's
    # prompt plus output did not fit the KV cache's free reservation), "batch" (maxBatchSize reached) or "".
    blocked: str = ""

    @property
    def serving(self) -> bool:
        return self.stopped_at is None and not self.draining

    def outstanding(self) -> tuple[int, int]:
        """(requests, prompt tokens not yet processed): the router's measure of queued work."""
        return len(self.batcher.active) + len(self.batcher.waiting), self.batcher.pending_prompt_tokens

    def cut_fast_forward(self, now: float) -> float | None:
        """A request arrived at ``now``: end the repeated plan with the iteration in progress, so the next
        iteration can admit it. Returns the new end time, or None when nothing was cut."""
        if len(self.ends) <= 1:
            return None
        keep = bisect.bisect_left(self.ends, now) + 1
        if keep >= len(self.ends):
            return None
        self.busy_seconds -= self.ends[-1] - self.ends[keep - 1]
        del self.ends[keep:]
        self.version += 1
        return self.ends[-1]


@dataclass
class Completed:
    arrival: float
    input_tokens: int
    output_tokens: int
    ttft: float
    itl: float  # mean inter-token latency of the request (0 for one token)


@dataclass
class SimulationResult:
    completed: list[Completed]
    dropped: int
    gpu_seconds: float
    scale_events: int
    timeline: list[tuple[float, int, int, float]]  # (time, desired, serving, output tokens/s)
    decisions: list[tuple[float, str, str]]
    duration: float
    gpus_per_replica: int
    initial_replicas: int = 0  # serving at time 0, before the first entry of the timeline
    # Engine iterations run, and of them those planned while a queued request waited for KV space or for
    # a batch slot: which limit bound admission (0 when the queue was empty: nothing was limited).
    iterations: int = 0
    kv_bound_iterations: int = 0
    batch_bound_iterations: int = 0

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600


ARRIVAL, READY, STEP_END, TICK, SCRAPE = range(5)
# A fast-forwarded run of decode iterations stops after this long, so the token counts the autoscaler
# reads (15 s old) are always complete.
FAST_FORWARD_HORIZON = 5.0


class ScalingPolicy(Protocol):
    """What decides the replica count in a simulation: the live autoscaler or a peer's algorithm."""

    name: str
    tick_seconds: float

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        """(replicas, rule, reason) at ``now``; ``sim`` is read, never changed."""
        ...


class TokenworksPolicy:
    """The live autoscaler's ``decide``, with its state, fed what Prometheus would show."""

    name = "tokenworks"

    def __init__(self, md: ModelDeployment, tick_seconds: float | None = None) -> None:
        self.md = md
        # The spec's autoscaling.tickSeconds, as the live loop honours it.
        self.tick_seconds = float(tick_seconds or md.spec.autoscaling.tick_seconds)
        self.state: PolicyState | None = None
        self.last: Decision | None = None

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        obs, _ = sim.observations(now)
        decision = decide(obs, self.md.spec.autoscaling, capacity_for(self.md, obs), sim.load_seconds,
                          self.state, now, prefill_tokens_per_second=sim.replica_model.prefill_capacity())
        self.state, self.last = decision.state, decision
        if decision.infeasible:
            sim.infeasible_ticks += 1
        return decision.replicas, decision.rule, decision.reason


class Simulator:
    def __init__(self, md: ModelDeployment, requests: list[TraceRequest],
                 config: SimulationConfig | None = None, policy: ScalingPolicy | None = None) -> None:
        self.md = md
        self.requests = requests
        self.config = config or SimulationConfig()
        self.replica_model = ReplicaModel.for_spec(md.spec)
        self.load_seconds = self.config.load_seconds if self.config.load_seconds is not None \
            else self.replica_model.load_seconds()
        self._arrival_times = [r.arrival for r in requests]
        self.policy = policy or TokenworksPolicy(md)
        self.infeasible_ticks = 0  # decisions that found latency infeasible at any count
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.replicas: list[SimReplica] = []
        self.unrouted: list[Sequence] = []
        self.completed: list[Completed] = []
        self.arrivals: dict[int, TraceRequest] = {}
        # Output tokens emitted per whole second: the ground truth for the timeline and for peers that
        # count tokens at their own frontend; the policy reads only what the pods export (`series`).
        self.token_seconds: dict[int, int] = {}
        self.series = SimulatedSeries(first_response_buckets(md.spec.autoscaling.slo.ttft_milliseconds),
                                      self.config.scrape_seconds)
        self.desired = 0
        self.scale_events = 0
        self.timeline: list[tuple[float, int, int, float]] = []
        self.decisions: list[tuple[float, str, str]] = []
        self.iterations: dict[str, int] = {"": 0, "kv": 0, "batch": 0}  # by what blocked admission

    # -- events ----------------------------------------------------------------------------
    def _push(self, at: float, kind: int, data: Any = None) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, data))

    def _add_replica(self, now: float, ready_now: bool = False) -> None:
        ready = now if ready_now else now + self.config.scheduling_seconds + self.load_seconds
        replica = SimReplica(len(self.replicas), Batcher(self.replica_model), now, ready)
        self.replicas.append(replica)
        self._push(ready, READY, replica)

    def _start_step(self, replica: SimReplica, now: float) -> None:
        if replica.plan is not None or replica.stopped_at is not None or now < replica.ready_at:
            return
        batcher = replica.batcher
        batcher.admit(now)
        # admit() stops at a full batch or at a reservation the KV cache cannot take; nothing else.
        replica.blocked = "" if not batcher.waiting else \
            "batch" if len(batcher.active) >= batcher.model.max_batch_size else "kv"
        plan = batcher.plan()
        if plan is None:
            if replica.draining:
                replica.stopped_at = now
            return
        replica.plan = plan
        steps = replica.batcher.decode_run_length(plan) if self.config.fast_forward else 1
        if steps > 1:
            replica.ends = self.replica_model.decode_run_ends(
                now, plan.step.decode_requests, plan.step.decode_context, steps, now + FAST_FORWARD_HORIZON)
        else:
            replica.ends = [now + self.replica_model.step_seconds(plan.step)]
        replica.busy_seconds += replica.ends[-1] - now
        self._push(replica.ends[-1], STEP_END, (replica, replica.version))

    def _route(self, sequence: Sequence, now: float) -> None:
        serving = [r for r in self.replicas if r.serving and r.ready_at <= now]
        if not serving:
            self.unrouted.append(sequence)
            return
        target = min(serving, key=lambda r: (r.outstanding(), r.id))
        admissible = not target.batcher.waiting  # behind a blocked queue it could not be admitted anyway
        target.batcher.add(sequence)
        if admissible and (end := target.cut_fast_forward(now)) is not None:
            self._push(end, STEP_END, (target, target.version))
        self._start_step(target, now)

    def _step_end(self, replica: SimReplica, now: float) -> None:
        plan, replica.plan = replica.plan, None
        assert plan is not None
        self.iterations[replica.blocked] += len(replica.ends)
        if len(replica.ends) > 1:
            batch = plan.step.decode_requests
            for end in replica.ends:
                second = int(end)
                self.token_seconds[second] = self.token_seconds.get(second, 0) + batch
            emitted = replica.batcher.complete_decodes(plan, len(replica.ends), now)
        else:
            emitted = replica.batcher.complete(plan, now)
            second = int(now)
            self.token_seconds[second] = self.token_seconds.get(second, 0) + len(emitted)
        for sequence in emitted:
            if sequence.generated == 1:
                self.series.first_token(now, now - sequence.arrived, replica.id)
            if sequence.finished_at is not None:
                assert sequence.first_token_at is not None
                itl = (now - sequence.first_token_at) / (sequence.generated - 1) if sequence.generated > 1 else 0.0
                request = self.arrivals.pop(sequence.id)
                self.series.finished(now, now - sequence.arrived, request.input_tokens, sequence.generated)
                self.completed.append(Completed(request.arrival, request.input_tokens, request.output_tokens,
                                                sequence.first_token_at - sequence.arrived, itl))
        self._start_step(replica, now)

    # -- what Prometheus would show the autoscaler -----------------------------------------
    def output_rate(self, end: float, window: float) -> float:
        """Output tokens/s emitted over ``window`` ending at ``end`` (ground truth, not a pod metric)."""
        start = end - window
        return sum(self.token_seconds.get(s, 0) for s in range(math.floor(start), math.floor(end))) / \
            SimulatedSeries._observed(end, window)

    def pods(self, now: float) -> list[dict[str, Any]]:
        """The replicas as the Kubernetes API would show their pods."""
        pods: list[dict[str, Any]] = []
        for r in self.replicas:
            if r.stopped_at is not None:
                continue
            metadata: dict[str, Any] = {"deletionTimestamp": "draining"} if r.draining else {}
            if now < r.started_at + self.config.scheduling_seconds and now < r.ready_at:
                status: dict[str, Any] = {"phase": "Pending"}
            else:
                ready = "True" if r.ready_at <= now else "False"
                status = {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}
            pods.append({"metadata": metadata, "status": status})
        return pods

    def _scrape(self, now: float) -> None:
        """The KV-cache gauges as the engine backend's pods export them at a scrape."""
        serving = [r for r in self.replicas if r.stopped_at is None and r.ready_at <= now]
        used = sum(-(-sum(s.context for s in r.batcher.active) // KV_BLOCK_TOKENS) for r in serving)
        blocks = len(serving) * (self.replica_model.kv_capacity_tokens // KV_BLOCK_TOKENS)
        self.series.scrape(now, {"kvCacheUtilization": used / blocks if blocks else 0.0})

    def observations(self, now: float) -> tuple[Observations, SignalReadings]:
        seen = now - self.config.scrape_seconds
        window = self.config.window_seconds
        # A pod exports series once Triton serves (its metrics start after the models load).
        alive = any(r.ready_at < seen and (r.stopped_at is None or r.stopped_at > seen - window)
                    for r in self.replicas)
        readings = self.series.readings(now, window, self.config.short_window_seconds,
                                        self.md.spec.autoscaling.slo.percentile,
                                        self.md.spec.engine.backend == "tensorrt-engine", alive)
        if self.md.spec.autoscaling.activation is not None:
            # A gateway in front of the pods counts arrivals whether or not a pod serves them.
            short = self.config.short_window_seconds
            arrived = len(self.arrived_between(seen - short, seen))
            readings.readings["activation"] = Reading(arrived / SimulatedSeries._observed(seen, short))
        obs = observe(readings, self.md.spec.engine.backend, self.replica_model,
                      count_pods(self.pods(now), self.desired), self.md.spec.autoscaling.slo.ttft_milliseconds / 1e3)
        return obs, readings

    def arrived_between(self, start: float, end: float) -> list[TraceRequest]:
        lo = bisect.bisect_left(self._arrival_times, start)
        hi = bisect.bisect_left(self._arrival_times, end)
        return self.requests[lo:hi]

    def ready_replicas(self, now: float) -> list[SimReplica]:
        return [r for r in self.replicas if r.serving and r.ready_at <= now]

    def busy_seconds(self, now: float) -> float:
        """GPU-busy seconds of the ready replicas so far (an in-flight iteration counts as busy)."""
        total = 0.0
        for replica in self.ready_replicas(now):
            total += replica.busy_seconds
            if len(replica.ends) > 1 and replica.plan is not None:  # fast-forwarded iterations not yet begun
                total -= replica.ends[-1] - replica.ends[min(len(replica.ends) - 1,
                                                            bisect.bisect_left(replica.ends, now))]
        return total

    def _tick(self, now: float) -> None:
        replicas, rule, reason = self.policy.replicas(self, now)
        self._scale_to(replicas, now)
        self.timeline.append((now, self.desired, len(self.ready_replicas(now)),
                              self.output_rate(now - self.config.scrape_seconds, self.config.window_seconds)))
        self.decisions.append((now, rule, reason))

    def _scale_to(self, desired: int, now: float) -> None:
        if desired == self.desired:
            return
        self.scale_events += 1
        self.desired = desired
        live = [r for r in self.replicas if r.serving]
        for _ in range(desired - len(live)):
            self._add_replica(now)
        if len(live) > desired:
            # Drain the ones still loading first, then the least loaded.
            victims = sorted(live, key=lambda r: (r.ready_at <= now, r.outstanding()))[:len(live) - desired]
            for replica in victims:
                replica.draining = True
                if replica.ready_at > now or (replica.plan is None and replica.batcher.idle):
                    replica.stopped_at = now

    # -- run -------------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> SimulationResult:
        scaling = self.md.spec.autoscaling
        initial = self.config.initial_replicas
        if initial is None:
            initial = max(1, scaling.min_replicas) if scaling.enabled else self.md.spec.replicas
        self.desired = initial
        for _ in range(initial):
            self._add_replica(0.0, ready_now=True)
        for index, request in enumerate(self.requests):
            self._push(request.arrival, ARRIVAL, index)
        if scaling.enabled:
            self._push(self.policy.tick_seconds, TICK)
            self._push(self.config.scrape_seconds, SCRAPE)
        end = self.requests[-1].arrival if self.requests else 0.0
        now = last_work = 0.0
        while self._events:
            now, _, kind, data = heapq.heappop(self._events)
            if kind == STEP_END and data[1] != data[0].version:
                continue  # a fast-forward that an arrival cut short
            if kind not in (TICK, SCRAPE):
                last_work = now
            if kind == ARRIVAL:
                request = self.requests[data]
                self.arrivals[data] = request
                self._route(Sequence(data, request.input_tokens, request.output_tokens, now), now)
            elif kind == STEP_END:
                self._step_end(data[0], now)
            elif kind == READY:
                if data.stopped_at is None:
                    pending, self.unrouted = self.unrouted, []
                    for sequence in pending:
                        self._route(sequence, now)
                    self._start_step(data, now)
            elif kind == SCRAPE:
                self._scrape(now)
                if now < end or any(r.plan is not None for r in self.replicas) or self.unrouted:
                    self._push(now + self.config.scrape_seconds, SCRAPE)
            elif kind == TICK:
                self._tick(now)
                busy = any(r.plan is not None for r in self.replicas) or self.unrouted
                if now < end or busy:
                    self._push(now + self.policy.tick_seconds, TICK)
                if progress:
                    progress(min(now, end))
        # The run ends with its last request, not with a policy's trailing tick (a static policy ticks
        # hourly; counting GPUs until then would bill idle time that no trace asked for).
        finish = max(last_work, end)
        gpus = self.replica_model.gpus
        gpu_seconds = sum(((r.stopped_at if r.stopped_at is not None else finish) - r.started_at) * gpus
                          for r in self.replicas)
        # Every request either completed or is still open here (never served): counted as dropped.
        return SimulationResult(self.completed, len(self.arrivals), gpu_seconds,
                                self.scale_events, self.timeline, self.decisions, finish, gpus, initial,
                                sum(self.iterations.values()), self.iterations["kv"], self.iterations["batch"])


@dataclass
class Report:
    requests: int
    completed: int
    dropped: int
    attainment: float
    ttft: dict[str, float] = field(default_factory=dict)
    itl: dict[str, float] = field(default_factory=dict)
    gpu_hours: float = 0.0
    scale_events: int = 0
    max_replicas: int = 0
    # Of the simulated requests: the share that misses the SLO even alone on an idle replica (None: not
    # computed), and the attainment over the rest.
    infeasible: float | None = None
    feasible_attainment: float | None = None
    rejected: int = 0  # requests over the engine's limits, refused before any replica saw them


def report(result: SimulationResult, ttft_target: float, itl_target: float, total: int, *,
           feasible: int | None = None, rejected: int = 0) -> Report:
    """``total`` requests were simulated, ``feasible`` of them (when given) can meet the SLO at all."""
    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    met = sum(1 for c in result.completed if c.ttft <= ttft_target and c.itl <= itl_target)
    ttfts = [c.ttft for c in result.completed]
    itls = [c.itl for c in result.completed]
    return Report(
        requests=total, completed=len(result.completed), dropped=result.dropped,
        attainment=met / total if total else 1.0,
        ttft={f"p{q}": pct(ttfts, q / 100) for q in (50, 95, 99)},
        itl={f"p{q}": pct(itls, q / 100) for q in (50, 95, 99)},
        gpu_hours=result.gpu_hours, scale_events=result.scale_events,
        max_replicas=max((t[1] for t in result.timeline), default=0),
        infeasible=None if feasible is None else (1 - feasible / total if total else 0.0),
        feasible_attainment=None if feasible is None else (met / feasible if feasible else None),
        rejected=rejected,
    )
