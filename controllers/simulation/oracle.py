"""The lower bound the autoscaling benchmark measures every policy against.

An oracle that knows each minute's arrivals and starts replicas instantly: for each minute, the fewest
replicas (binary search, the minute simulated from empty with that many ready replicas) that meet the
SLO for ``goal`` of that minute's feasible requests. Work carried across minute boundaries is ignored,
so no real policy can reach it. A request is infeasible when it misses the SLO even alone on an idle
replica (a 16k-token prompt cannot start within 450 ms on any number of replicas); no count of replicas
helps those, so the goal is a share of the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from controllers.simulation.simulator import SimulationConfig, SimulationResult, Simulator
from controllers.simulation.trace import TraceRequest, window
from crds.models import ModelDeployment
from inference_pods.batching import Batcher, Sequence
from inference_pods.performance import ReplicaModel


def latency_alone(model: ReplicaModel, input_tokens: int, output_tokens: int) -> tuple[float, float]:
    """(TTFT, mean ITL) of one request on an idle replica: the best any fleet can do for it."""
    return _latency_alone(model, input_tokens, output_tokens)


@functools.lru_cache(maxsize=200_000)
def _latency_alone(model: ReplicaModel, input_tokens: int, output_tokens: int) -> tuple[float, float]:
    batcher = Batcher(model)
    sequence = Sequence(0, input_tokens, output_tokens, 0.0)
    batcher.add(sequence)
    now = 0.0
    while sequence.finished_at is None:
        batcher.admit(now)
        plan = batcher.plan()
        assert plan is not None
        steps = batcher.decode_run_length(plan)
        if steps > 1:
            now = model.decode_run_ends(now, plan.step.decode_requests, plan.step.decode_context, steps,
                                        float("inf"))[-1]
            batcher.complete_decodes(plan, steps, now)
        else:
            now += model.step_seconds(plan.step)
            batcher.complete(plan, now)
    assert sequence.first_token_at is not None
    decode = sequence.generated - 1
    return sequence.first_token_at, (now - sequence.first_token_at) / decode if decode else 0.0


def feasible(md: ModelDeployment, requests: list[TraceRequest]) -> list[bool]:
    """Whether each request can meet the SLO at all (alone on an idle replica)."""
    model = ReplicaModel.for_spec(md.spec)
    slo = md.spec.autoscaling.slo
    ttft, itl = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
    return [_feasible(model, r.input_tokens, r.output_tokens, ttft, itl) for r in requests]


@functools.lru_cache(maxsize=200_000)
def _feasible(model: ReplicaModel, input_tokens: int, output_tokens: int, ttft: float, itl: float) -> bool:
    # A decode step takes longer the more context it reads, so when a step at the request's whole
    # length meets the ITL target, so does the mean of its steps: then only the prefill (the TTFT, the
    # same for any output length) needs stepping, not every decode step.
    if model.decode_seconds(1, input_tokens + output_tokens) <= itl:
        return _latency_alone(model, input_tokens, 1)[0] <= ttft
    alone_ttft, alone_itl = _latency_alone(model, input_tokens, output_tokens)
    return alone_ttft <= ttft and alone_itl <= itl


def met(md: ModelDeployment, result: SimulationResult) -> int:
    slo = md.spec.autoscaling.slo
    ttft, itl = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
    return sum(1 for c in result.completed if c.ttft <= ttft and c.itl <= itl)


def fixed(md: ModelDeployment, replicas: int) -> ModelDeployment:
    return md.model_copy(update={"spec": md.spec.model_copy(update={
        "autoscaling": md.spec.autoscaling.model_copy(update={"enabled": False}), "replicas": replicas})})


def meets(md: ModelDeployment, requests: list[TraceRequest], replicas: int, goal: float,
          scored_from: float = 0.0) -> bool:
    """Whether ``replicas`` ready from the start meet the goal on the requests arriving from ``scored_from``
    (those before only load the replicas)."""
    result = Simulator(fixed(md, replicas), requests, SimulationConfig(initial_replicas=replicas)).run()
    slo = md.spec.autoscaling.slo
    ttft, itl = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
    scored = [r for r in requests if r.arrival >= scored_from]
    hits = sum(1 for c in result.completed if c.arrival >= scored_from and c.ttft <= ttft and c.itl <= itl)
    return hits >= goal * sum(feasible(md, scored))


def _meets_with(md: ModelDeployment, requests: list[TraceRequest], goal: float, scored_from: float,
                replicas: int) -> bool:
    return meets(md, requests, replicas, goal, scored_from)


def fewest(ok: Callable[[int], bool], high: int, guess: int | None = None) -> int:
    """The smallest n in [1, high] with ``ok(n)``, ``ok`` taken as monotone and ``ok(high)`` as true (never
    called). Without ``guess``, bisection of [1, high]; with one (last minute's count), a search outwards
    from it: two calls when the count holds, instead of log2(high)."""
    low = 1
    if guess is not None:
        guess = min(max(guess, 1), high)
        if guess == high or ok(guess):
            if guess == 1 or not ok(guess - 1):
                return guess
            high = guess - 1
        else:
            step = 1
            while True:
                probe = min(guess + step, high)
                if probe == high or ok(probe):
                    low, high = guess + step // 2 + 1, probe
                    break
                step *= 2
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


def oracle(md: ModelDeployment, requests: list[TraceRequest], goal: float = 0.99,
           progress: Callable[[int], None] | None = None, lookback_minutes: int = 0) -> list[int]:
    """Fewest replicas per minute (up to maxReplicas) that meet the goal on that minute's requests;
    ``progress`` is told each minute done.

    With ``lookback_minutes`` L, each minute is simulated from empty L minutes earlier (the count held from
    then, only the minute's own requests scored), so answers that outlast a minute load it as they would
    in a fleet: a reasoning answer of 3,700 tokens at 50 ms a token lasts 3 minutes, and a minute simulated
    from empty would see a third of the requests in flight that a steady fleet holds. Each such minute
    costs L + 1 minutes of simulation, so its search starts from the minute before's count."""
    per_minute: list[int] = []
    end = requests[-1].arrival if requests else 0.0
    for minute in range(int(end // 60) + 1):
        start = max(0, minute - lookback_minutes)
        chunk = window(requests, start * 60, (minute - start + 1) * 60)
        scored_from = (minute - start) * 60.0
        need = 0
        if any(r.arrival >= scored_from for r in chunk):
            guess = next((n for n in reversed(per_minute) if n), None) if lookback_minutes else None
            need = fewest(functools.partial(_meets_with, md, chunk, goal, scored_from),
                          md.spec.autoscaling.max_replicas, guess)
        per_minute.append(need)
        if progress:
            progress(minute + 1)
    return per_minute
