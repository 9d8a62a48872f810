"""Peer autoscaling policies, implemented from their documented algorithms and defaults, for the
simulator. Sources and constants are listed in docs/baselines.md; each class docstring names its rule.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from controllers.autoscaling.observer import DEFAULT_SHAPE
from controllers.simulation.simulator import SimReplica, Simulator
from crds.models import ModelDeployment
from inference_pods.performance import ReplicaModel, Step

Metric = Callable[[Simulator, float, "HpaPolicy"], float | None]


def gpu_utilisation(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """Mean GPU utilisation of the ready replicas since the previous sync (DCGM's GPU_UTIL, 0..1)."""
    ready = sim.ready_replicas(now)
    if not ready:
        return None
    busy = sim.busy_seconds(now)
    last_time, last_busy = policy.memory.get("gpu", (now - policy.tick_seconds, busy))
    policy.memory["gpu"] = (now, busy)
    elapsed = max(now - last_time, 1e-9)
    return min(1.0, max(0.0, (busy - last_busy) / (elapsed * len(ready))))


def in_flight_per_pod(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """Requests admitted or waiting per ready pod (a Pods metric)."""
    ready = sim.ready_replicas(now)
    if not ready:
        return None
    return sum(len(r.batcher.active) + len(r.batcher.waiting) for r in ready) / len(ready)


def queue_per_pod(sim: Simulator, now: float, policy: HpaPolicy) -> float | None:
    """KEDA's Prometheus scaler: the query's total (waiting requests) spread over the current replicas,
    which the HPA compares with the per-replica threshold (an AverageValue target)."""
    waiting = sum(len(r.batcher.waiting) for r in sim.ready_replicas(now)) + len(sim.unrouted)
    return waiting / max(1, sim.desired)


@dataclass
class HpaPolicy:
    """Kubernetes HPA (autoscaling/v2), as its replica calculator computes it. A Pods metric: the usage
    ratio over the ready pods, desired = ceil(ratio x ready pods), unchanged within the 0.1 tolerance;
    with pods not yet ready (pending, or loading and so without metrics) the ratio is recomputed with
    them at 0 on the way up (at the target on the way down) over all pods, and no change if that flips
    its direction. An External metric with an AverageValue target (KEDA): desired = ceil(total /
    target). Then up by at most max(4 pods, 100%) per 15 s; down to the highest recommendation of the
    last 300 s; bounded by min/max replicas. The recommendation history starts with the current count,
    as ``recordInitialRecommendation`` (horizontal.go) seeds it, so a warm start does not collapse at the
    first sync."""

    name: str
    metric: Metric
    target: float
    min_replicas: int
    max_replicas: int
    tick_seconds: float = 15.0
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    external: bool = False  # KEDA's metric: an External metric with an AverageValue target
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    history: list[tuple[float, int]] = field(default_factory=list)

    def _calculate(self, ratio: float, current: int, ready: int, not_ready: int) -> int:
        """pkg/controller/podautoscaler/replica_calculator.go, calcPlainMetricReplicas."""
        if self.external or not_ready == 0:
            if abs(ratio - 1) <= self.tolerance:
                return current
            return math.ceil(ratio * (current if self.external else ready))
        pods = ready + not_ready
        # The pods without metrics count as 0 on the way up, at the target on the way down.
        adjusted = ratio * ready / pods if ratio > 1 else (ratio * ready + not_ready) / pods
        if abs(adjusted - 1) <= self.tolerance or (ratio < 1 < adjusted) or (ratio > 1 > adjusted):
            return current
        desired = math.ceil(adjusted * pods)
        if (adjusted < 1 and desired > current) or (adjusted > 1 and desired < current):
            return current
        return desired

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        current = max(sim.desired, 1)
        value = self.metric(sim, now, self)
        if value is None:
            return sim.desired, "hold", "no metric"
        ratio = value / self.target
        ready = len(sim.ready_replicas(now))
        not_ready = sum(1 for r in sim.replicas if r.serving and r.ready_at > now)
        recommendation = self._calculate(ratio, current, ready, not_ready)
        if not self.history:  # horizontal.go: recordInitialRecommendation(currentReplicas, key)
            self.history.append((now, current))
        self.history = [(t, r) for t, r in self.history if now - t <= self.stabilization_seconds]
        self.history.append((now, recommendation))
        desired = recommendation
        if desired < current:
            desired = min(current, max(r for _, r in self.history))
        desired = min(desired, max(2 * current, current + 4))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        return desired, "hpa", f"{self.name}: metric {value:.3g} / target {self.target:.3g}"


@dataclass
class KpaPolicy:
    """Knative's KPA: desired = ceil(average concurrency / (target x 0.7)) over a 60 s stable window,
    ticking every 2 s; when the 6 s panic window asks for at least twice the ready pods it panics for
    60 s, scaling on the panic window and never down; down by at most half per tick. With
    ``scale_down_delay`` (Knative's `scale-down-delay`, documented for pods that are slow to start) a
    scale-down goes only to the highest count decided within that delay."""

    target_concurrency: float
    min_replicas: int
    max_replicas: int
    name: str = "knative-kpa"
    tick_seconds: float = 2.0
    target_utilisation: float = 0.7
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    scale_down_delay: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    decided: list[tuple[float, int]] = field(default_factory=list)
    panic_until: float = -1.0

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        ready = sim.ready_replicas(now)
        concurrency = sum(len(r.batcher.active) + len(r.batcher.waiting) for r in ready) + len(sim.unrouted)
        self.samples = [(t, c) for t, c in self.samples if now - t < self.stable_window]
        self.samples.append((now, concurrency))
        per_pod = self.target_concurrency * self.target_utilisation

        def average(window: float) -> float:
            values = [c for t, c in self.samples if now - t < window]
            return sum(values) / len(values)

        stable = math.ceil(average(self.stable_window) / per_pod)
        panic = math.ceil(average(self.panic_window) / per_pod)
        current = max(sim.desired, 1)
        if panic >= self.panic_threshold * max(len(ready), 1):
            self.panic_until = now + self.stable_window
        if now < self.panic_until:
            desired, rule = max(panic, current), "panic"
        else:
            desired, rule = stable, "stable"
        desired = max(desired, math.floor(current / self.max_scale_down_rate))
        if self.scale_down_delay > 0:  # autoscaler.go: the max over the delay window (a max-timed-float)
            self.decided = [(t, d) for t, d in self.decided if now - t < self.scale_down_delay]
            self.decided.append((now, desired))
            desired = max(d for _, d in self.decided)
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        return desired, rule, f"concurrency {concurrency} (target {per_pod:.3g} per pod)"


# --- NVIDIA Dynamo's planner --------------------------------------------------------------------
# The SLA planner of ai-dynamo/dynamo as its guide configures it for TTFT/ITL targets on an aggregated
# deployment (optimization_target sla, mode agg, throughput and load scaling both on). The defaults are
# SLAPlannerDefaults in components/src/dynamo/planner/config/defaults.py; docs/baselines.md gives the
# line of each.
DYNAMO_THROUGHPUT_INTERVAL = 180.0  # throughput_adjustment_interval
DYNAMO_LOAD_INTERVAL = 5.0  # load_adjustment_interval
DYNAMO_FPM_SAMPLES = 64  # max_num_fpm_samples
DYNAMO_FPM_BUCKETS_PER_AXIS = 4  # fpm_sample_bucket_size 16: a 4 x 4 grid for the two-input agg model
DYNAMO_SCALE_DOWN_SENSITIVITY = 0.8  # load_scaling_down_sensitivity 80, over 100
DYNAMO_ARIMA_MIN_POINTS = 5  # ARIMAPredictor's minimum_data_points (core/load/predictors.py)


class LoadPredictor(Protocol):
    """One of Dynamo's load predictors (core/load/predictors.py): a value per throughput interval in, a
    forecast of the next interval's out."""

    def add(self, value: float) -> None: ...

    def predict(self) -> float: ...


def _admit(history: list[float], value: float) -> bool:
    """BasePredictor.add_data_point: a non-finite reading counts as 0, and the zeros of the idle time before
    the first traffic are skipped. True when the value was kept."""
    value = value if math.isfinite(value) else 0.0
    if value == 0 and not history:
        return False
    history.append(value)
    return True


@dataclass
class ConstantPredictor:
    """Dynamo's ConstantPredictor: the next interval is the last one."""

    history: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        _admit(self.history, value)

    def predict(self) -> float:
        return self.history[-1] if self.history else 0.0


@dataclass
class ArimaPredictor:
    """Dynamo's default predictor (ARIMAPredictor, `load_predictor = "arima"`): pmdarima's auto_arima, fit
    on the whole series once it has 5 points, then only updated with each new point (the order is not
    searched again); a fit that collapses to (0, d, 0) is redone on log1p(y). Before 5 points, and while
    every point is equal (auto_arima forecasts 0 there), the last value; the forecast is floored at 0 and
    a failure falls back to the last value."""

    history: list[float] = field(default_factory=list)
    model: Any = None
    log1p: bool = False
    pending: list[float] = field(default_factory=list)  # points the fitted model has not seen

    def add(self, value: float) -> None:
        if _admit(self.history, value):
            self.history[-1] = max(0.0, self.history[-1])
            self.pending.append(self.history[-1])

    def predict(self) -> float:
        last = self.history[-1] if self.history else 0.0
        if len(self.history) < DYNAMO_ARIMA_MIN_POINTS or len(set(self.history)) == 1:
            return last
        import pmdarima  # a dev dependency, and slow to import: only when a forecast is due

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Dynamo passes suppress_warnings and filters the rest too
                if self.model is None:
                    self.model = pmdarima.auto_arima(self.history, suppress_warnings=True, error_action="ignore")
                    p, _, q = self.model.order
                    if p == 0 and q == 0:
                        try:
                            logged = [math.log1p(v) for v in self.history]
                            self.model = pmdarima.auto_arima(logged, suppress_warnings=True, error_action="ignore")
                            self.log1p = True
                        except Exception:  # Dynamo keeps the raw fit when the log1p one fails
                            self.log1p = False
                elif self.pending:
                    self.model.update([math.log1p(v) for v in self.pending] if self.log1p else self.pending)
                self.pending = []
                forecast = float(self.model.predict(n_periods=1)[0])
        except Exception:  # Dynamo: "ARIMA prediction failed ..., using last value"
            self.pending = []
            return last
        return max(0.0, math.expm1(forecast) if self.log1p else forecast)


@dataclass(frozen=True)
class Fpm:
    """One engine's ForwardPassMetrics (components/src/dynamo/common/forward_pass_metrics.py) at a load tick:
    the iteration in flight, and the prompt tokens waiting to be scheduled. All zero for an idle engine."""

    wall: float = 0.0  # seconds the iteration takes (0: an idle heartbeat)
    prefill_tokens: int = 0  # scheduled_requests.sum_prefill_tokens
    prefill_requests: int = 0
    decode_kv: int = 0  # scheduled_requests.sum_decode_kv_tokens
    decode_requests: int = 0
    queued_prefill: int = 0  # queued_requests.sum_prefill_tokens


def engine_fpm(replica: SimReplica, model: ReplicaModel) -> Fpm:
    """What a ready replica's engine reports: its current plan, timed by the performance model."""
    plan = replica.plan
    if plan is None:
        return Fpm()
    step = plan.step
    return Fpm(model.step_seconds(step), step.prefill_tokens, len(plan.chunks), step.decode_context,
               step.decode_requests, max(0, replica.batcher.pending_prompt_tokens - step.prefill_tokens))


def benchmark_fpms(model: ReplicaModel) -> list[Fpm]:
    """The pre-deployment profile the planner bootstraps its regression from (a worker self-benchmark or
    AI Configurator's estimate), here from the performance model: iterations of 4 prefill sizes x 6 decode
    batches up to the engine's concurrency at the default 1,000/200-token shape."""
    isl, osl = DEFAULT_SHAPE
    context = isl + osl // 2
    top = model.max_concurrency(isl, osl)
    batches = sorted({max(1, round(top ** (i / 5))) for i in range(6)})
    fpms = []
    for level in range(4):
        for n in batches:
            prefill = max(0, min(level * model.max_num_tokens // 4, model.max_num_tokens - n))
            step = Step(prefill_tokens=prefill, prefill_context=prefill * (isl + 1) // 2,
                        decode_requests=n, decode_context=n * context)
            fpms.append(Fpm(model.step_seconds(step), prefill, -(-prefill // isl), n * context, n))
    return fpms


@dataclass
class _MovingAverage:
    """Dynamo's _MovingAverage (core/perf_model/base.py): the last ``size`` values, skipping leading zeros.
    Weighted here: an engine's snapshot is the iteration in flight, which a long iteration is the more
    likely to be, where Dynamo reads the last one completed; weighting each by 1 / its duration gives
    Dynamo's per-iteration average. An idle engine's zero (Dynamo's heartbeat) counts as a typical sample."""

    size: int = DYNAMO_FPM_SAMPLES
    values: deque[tuple[float, float]] = field(default_factory=deque)  # (value, weight)

    def add(self, value: float, weight: float | None = None) -> None:
        if value == 0 and not self.values:
            return
        if weight is None:
            weight = sum(w for _, w in self.values) / len(self.values) if self.values else 1.0
        self.values.append((value, weight))
        if len(self.values) > self.size:
            self.values.popleft()

    @property
    def value(self) -> float:
        total = sum(w for _, w in self.values)
        return sum(v * w for v, w in self.values) / total if total else 0.0


@dataclass
class AggRegression:
    """Dynamo's AggRegressionModel (core/perf_model/agg.py on base.py's _BaseRegressionModel): an
    iteration's wall time = a + b x prefill tokens + c x decode KV tokens, least squares over at most 64
    observations kept spread over a 4 x 4 grid of the two inputs (when full, the fullest cell drops its
    oldest); a fit with a negative slope is rejected (no estimate). Moving averages over the last 64 FPMs
    of the tokens per prefill request, the context per decoding request and the prefill tokens per
    iteration complete the estimates."""

    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (prefill, decode KV, wall)
    low: list[float] = field(default_factory=lambda: [math.inf, math.inf])
    high: list[float] = field(default_factory=lambda: [-math.inf, -math.inf])
    coefficients: tuple[float, float, float] | None = None
    fitted: bool = False
    isl: _MovingAverage = field(default_factory=_MovingAverage)
    decode_length: _MovingAverage = field(default_factory=_MovingAverage)
    prefill_tokens: _MovingAverage = field(default_factory=_MovingAverage)

    def add(self, fpm: Fpm, averages: bool = True) -> None:
        if averages:  # _update_moving_averages runs before the idle heartbeat is skipped
            weight = 1 / fpm.wall if fpm.wall else None
            if fpm.prefill_requests:
                self.isl.add(fpm.prefill_tokens / fpm.prefill_requests, weight)
            if fpm.decode_requests:
                self.decode_length.add(fpm.decode_kv / fpm.decode_requests, weight)
            self.prefill_tokens.add(fpm.prefill_tokens, weight)
        if fpm.wall == 0:
            return
        sample = (float(fpm.prefill_tokens), float(fpm.decode_kv), fpm.wall)
        for axis in (0, 1):  # the grid spans every input seen, as Dynamo's axis bounds only widen
            self.low[axis], self.high[axis] = min(self.low[axis], sample[axis]), max(self.high[axis], sample[axis])
        self.samples.append(sample)
        if len(self.samples) > DYNAMO_FPM_SAMPLES:
            cells = [self._cell(s) for s in self.samples]
            fullest = max(set(cells), key=cells.count)
            del self.samples[cells.index(fullest)]  # its oldest: samples are in arrival order
        self.fitted = False

    def _cell(self, sample: tuple[float, float, float]) -> tuple[int, int]:
        index = []
        for axis in (0, 1):
            low, high = self.low[axis], self.high[axis]
            at = 0 if high <= low else int((sample[axis] - low) / (high - low) * DYNAMO_FPM_BUCKETS_PER_AXIS)
            index.append(max(0, min(at, DYNAMO_FPM_BUCKETS_PER_AXIS - 1)))
        return index[0], index[1]

    def fit(self) -> bool:
        if not self.fitted and self.samples:
            data = np.array(self.samples)
            inputs = np.column_stack([np.ones(len(data)), data[:, 0], data[:, 1]])
            a, b, c = (float(x) for x in np.linalg.lstsq(inputs, data[:, 2], rcond=None)[0])
            self.coefficients = (a, b, c) if b >= 0 and c >= 0 else None
            self.fitted = True
        return self.coefficients is not None

    def wall(self, prefill_tokens: float, decode_kv: float) -> float:
        assert self.coefficients is not None
        a, b, c = self.coefficients
        return max(1e-6, a + b * prefill_tokens + c * decode_kv)

    def ttft(self, queued_prefill: float, max_num_tokens: int, decode_kv: float) -> float | None:
        """estimate_next_ttft: the queue and one average prompt, prefilled in chunks of the step budget, each
        beside the current decode batch."""
        if not self.fit() or max_num_tokens <= 0:
            return None
        remaining = queued_prefill + self.isl.value
        total = 0.0
        while remaining > 0:
            chunk = min(remaining, max_num_tokens)
            total += self.wall(chunk, decode_kv)
            remaining -= chunk
        return total

    def itl(self, decode_kv: float, queued_decode_kv: float = 0.0) -> float | None:
        """estimate_next_itl: one iteration of the batch plus one average request, with the average prefill."""
        if not self.fit():
            return None
        return self.wall(self.prefill_tokens.value, decode_kv + queued_decode_kv + self.decode_length.value)

    def engine_rps(self, isl: float, osl: float, max_num_tokens: int, ttft_target: float, itl_target: float,
                   max_kv_tokens: int, max_num_seqs: int) -> tuple[float, float, float]:
        """find_best_engine_agg_rps: (requests/s, TTFT, ITL) of the largest steady batch whose iteration (its
        decodes plus the prefill of the prompts replacing those finishing) and TTFT stay within both targets,
        by Little's law batch / (OSL x iteration); the batch at most what the KV cache, the sequence limit
        and the step budget (prefill keeping up with decode) allow. Batch 1 even when it misses a target."""
        if not self.fit() or isl <= 0 or osl <= 0 or max_num_tokens <= 0:
            return 0.0, 0.0, 0.0
        context = isl + osl / 2
        cap = min(max(1, int(max_kv_tokens / max(1.0, context))), max_num_seqs, max_num_tokens - 1)
        low, high = 1, max(1, cap)
        while low < high:  # the largest batch whose prompts the rest of the step budget keeps up with
            mid = (low + high + 1) // 2
            if isl / (max_num_tokens - mid) <= osl:
                low = mid
            else:
                high = mid - 1
        best = (0.0, 0.0, 0.0)
        for batch in range(1, low + 1):
            decode_kv = batch * context
            prefill = min(batch * isl / osl, max_num_tokens)
            wall = self.wall(prefill, decode_kv)
            ttft = self.ttft(int(prefill), max_num_tokens, int(decode_kv)) or 0.0
            if wall > itl_target or ttft > ttft_target:
                if batch == 1:
                    best = (1 / (osl * wall), ttft, wall)
                break
            best = (batch / (osl * wall), ttft, wall)
        return best


@dataclass
class DynamoPlannerPolicy:
    """NVIDIA Dynamo's SLA planner on an aggregated deployment, as its guide configures it for TTFT/ITL
    targets (optimization_target sla, throughput and load scaling both on):

    - Throughput loop, every 180 s: the frontend's request count, mean ISL and mean OSL over the interval
      feed one predictor each (ARIMA by default); the forecast request rate over one engine's rate at both
      targets (``AggRegression.engine_rps``) gives a replica count that becomes a floor.
    - Load loop, every 5 s, on each ready engine's forward-pass metrics: the regression estimates each
      engine's next TTFT (its queued prompts, chunked beside its decodes) and ITL; one more replica when
      every engine's TTFT, or every engine's ITL, is over target; one fewer when, with the load of the
      removed replica spread over the rest, every engine's queue-induced TTFT stays under 80% of what its
      target leaves and its ITL under 80% of its target (and the KV cache holds it). Nothing while a
      scale-up is still loading. Never below the floor or min_endpoint (the min replicas).

    With ``load_scaling`` off (Dynamo's default; ticking only every 180 s) the throughput count is applied
    directly, and ``correction`` adds the throughput planners' ITL correction factor: the target is divided
    by observed / expected ITL at the observed concurrency."""

    md: ModelDeployment
    min_replicas: int
    max_replicas: int
    name: str = "dynamo-planner"
    load_scaling: bool = True
    correction: bool = False
    predictor: Callable[[], LoadPredictor] = ArimaPredictor
    throughput_interval: float = DYNAMO_THROUGHPUT_INTERVAL
    load_interval: float = DYNAMO_LOAD_INTERVAL
    tick_seconds: float = field(init=False)
    floor: int = field(init=False, default=1)  # the throughput lower bound (throughput_lower_bound_d)
    itl_correction: float = field(init=False, default=1.0)  # d_correction_factor
    seeded: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.tick_seconds = self.load_interval if self.load_scaling else self.throughput_interval
        self.engine = ReplicaModel.for_spec(self.md.spec)
        slo = self.md.spec.autoscaling.slo
        self.ttft_target, self.itl_target = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
        self.regression = AggRegression()
        for fpm in benchmark_fpms(self.engine):
            # The profile fits the regression; the averages (prompt and context lengths) are the live
            # traffic's, where Dynamo would start them on the profile's made-up shapes.
            self.regression.add(fpm, averages=False)
        self.num_req, self.isl, self.osl = self.predictor(), self.predictor(), self.predictor()
        self.next_throughput = self.throughput_interval
        self.completed_seen = 0

    def throughput_replicas(self, num_req: float, isl: float, osl: float) -> int | None:
        """_throughput_agg: ceil(forecast requests/s / one engine's requests/s), at least min_endpoint; None
        while the model cannot say (no traffic shape yet)."""
        target = self.itl_target / self.itl_correction if self.itl_correction > 0 else self.itl_target
        rps, _, _ = self.regression.engine_rps(isl, osl, self.engine.max_num_tokens, self.ttft_target, target,
                                               self.engine.kv_capacity_tokens, self.engine.max_batch_size)
        if rps <= 0:
            return None
        return max(math.ceil(num_req / self.throughput_interval / rps), self.min_replicas)

    def correct(self, observed_itl: float, request_seconds: float, num_req: float, isl: float, osl: float,
                workers: int) -> None:
        """The ITL correction factor: observed ITL over the model's at the interval's mean concurrency per
        engine (requests x duration / interval / engines) and context (ISL + OSL / 2)."""
        if workers <= 0 or osl <= 0 or not self.regression.fit():
            return
        concurrency = num_req / workers * request_seconds / self.throughput_interval
        expected = self.regression.wall(concurrency * isl / osl, concurrency * (isl + osl / 2))
        self.itl_correction = observed_itl / expected

    def _throughput(self, sim: Simulator, now: float, workers: int) -> int | None:
        """Observe the last interval as the frontend counts it (requests and their prompts on arrival, output
        lengths and latencies on completion), then forecast the next and size it."""
        arrived = sim.arrived_between(now - self.throughput_interval, now)
        done = sim.completed[self.completed_seen:]
        self.completed_seen = len(sim.completed)
        num_req = float(len(arrived))
        isl = sum(r.input_tokens for r in arrived) / len(arrived) if arrived else math.nan
        osl = sum(c.output_tokens for c in done) / len(done) if done else math.nan
        if self.correction and not self.load_scaling and done and arrived:
            itl = sum(c.itl for c in done) / len(done)
            seconds = sum(c.ttft + c.itl * max(0, c.output_tokens - 1) for c in done) / len(done)
            self.correct(itl, seconds, num_req, isl, osl, workers)
        self.num_req.add(num_req)
        self.isl.add(isl)
        self.osl.add(osl)
        return self.throughput_replicas(self.num_req.predict(), self.isl.predict(), self.osl.predict())

    def _ttft_decision(self, fpms: list[Fpm], n: int) -> int | None:
        """_agg_prefill_scaling: up when every engine's TTFT estimate is over target; down when, with the
        queue and decode batch of one engine fewer spread over the rest (x n / (n - 1)), each engine's
        queue-induced TTFT stays under 80% of what its own prefill leaves of the target."""
        budget = self.engine.max_num_tokens
        spread = n / (n - 1) if n > 1 else 1.0
        estimates: list[float] = []
        can_down, refused = n > 1, False
        for fpm in fpms:
            if (estimate := self.regression.ttft(fpm.queued_prefill, budget, fpm.decode_kv)) is not None:
                estimates.append(estimate)
            if can_down:
                own = self.regression.ttft(0, budget, int(fpm.decode_kv * spread))
                after = self.regression.ttft(int(fpm.queued_prefill * spread), budget, int(fpm.decode_kv * spread))
                if own is None or after is None:
                    can_down = False
                elif (room := (self.ttft_target - own) * DYNAMO_SCALE_DOWN_SENSITIVITY) <= 0 or after - own >= room:
                    can_down, refused = False, True
        decision = self._scale_decision(estimates, self.ttft_target, n, can_down)
        return n if decision is None and refused else decision

    def _itl_decision(self, fpms: list[Fpm], n: int) -> int | None:
        """_agg_decode_scaling: up when every engine's ITL estimate is over target; down when each engine's
        KV (its decodes and queued prompts) x n / (n - 1) fits the cache and iterates under 80% of the target."""
        spread = n / (n - 1) if n > 1 else 1.0
        estimates: list[float] = []
        can_down, refused = n > 1, False
        for fpm in fpms:
            if (estimate := self.regression.itl(fpm.decode_kv)) is not None:
                estimates.append(estimate)
            if can_down:
                after_kv = int((fpm.decode_kv + fpm.queued_prefill) * spread)
                if after_kv >= self.engine.kv_capacity_tokens:
                    can_down, refused = False, True
                elif (after := self.regression.itl(after_kv)) is None:
                    can_down = False
                elif after >= self.itl_target * DYNAMO_SCALE_DOWN_SENSITIVITY:
                    can_down, refused = False, True
        decision = self._scale_decision(estimates, self.itl_target, n, can_down)
        return n if decision is None and refused else decision

    def _scale_decision(self, estimates: list[float], target: float, n: int, can_down: bool) -> int | None:
        if not estimates:
            return None
        if all(t > target for t in estimates):
            return n + 1
        if n > 1 and can_down:
            return max(n - 1, self.min_replicas)
        return None

    def load_replicas(self, fpms: list[Fpm], n: int) -> int:
        """_advance_load_agg: up if either dimension asks, down only if both agree (or the TTFT one has no
        estimate), then no lower than the throughput floor and min_endpoint."""
        ttft, itl = self._ttft_decision(fpms, n), self._itl_decision(fpms, n)
        if ttft is not None and ttft > n:
            desired = ttft
        elif itl is not None and (itl > n or (ttft is None and itl < n)):
            desired = itl  # up on ITL alone; down on ITL alone only when TTFT has no estimate
        elif ttft is not None and ttft < n and itl is not None and itl < n:
            desired = max(ttft, itl)
        else:
            desired = n
        return max(desired, self.min_replicas, self.floor)

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        if not self.seeded:
            # A warm start is a deployment the planner has been sizing: its last throughput tick set the
            # floor at the count it runs (the trace before the window, which would have fed the
            # predictors, is not known).
            self.floor, self.seeded = max(self.min_replicas, sim.desired), True
        ready = sim.ready_replicas(now)
        fpms = [engine_fpm(r, self.engine) for r in ready]
        for fpm in fpms:  # the regression learns from every load tick, scaling or not
            self.regression.add(fpm)
        note = ""
        if now >= self.next_throughput - 1e-6:
            self.next_throughput += self.throughput_interval
            count = self._throughput(sim, now, len(ready))
            if count is not None and not self.load_scaling:
                desired = min(self.max_replicas, count)
                return desired, "throughput", f"{count} for the forecast (ITL correction {self.itl_correction:.2f})"
            if count is not None:
                self.floor = count
                note = f"; floor {count} for the forecast load"
        if not self.load_scaling:
            return sim.desired, "hold", "no traffic shape to size from"
        if sim.desired != len(ready):
            return sim.desired, "scaling", f"{len(ready)} of {sim.desired} ready: observing only{note}"
        desired = min(self.max_replicas, self.load_replicas(fpms, len(ready)))
        rule = "load-up" if desired > len(ready) else "load-down" if desired < len(ready) else "load-hold"
        return desired, rule, f"{len(ready)} engines, floor {self.floor}{note}"


@dataclass
class StaticPolicy:
    """Static provisioning: a fixed count, typically the trace's peak need."""

    count: int
    name: str = "static"
    tick_seconds: float = 3600.0

    def replicas(self, sim: Simulator, now: float) -> tuple[int, str, str]:
        return self.count, "static", f"fixed at {self.count}"
