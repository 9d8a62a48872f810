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


@functools.lru_cache(maxsize=200_000)
def latency_alone(model: ReplicaModel, input_tokens: int, output_tokens: int) -> tuple[float, float]:
    """(TTFT, mean ITL) of one request on an idle replica: the best any fleet can do for it."""
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
        return latency_alone(model, input_tokens, 1)[0] <= ttft
    alone_ttft, alone_itl = latency_alone(model, input_tokens, output_tokens)
    return alone_ttft <= ttft and alone_itl <= itl


def met(md: ModelDeployment, result: SimulationResult) -> int:
    slo = md.spec.autoscaling.slo
    ttft, itl = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
    return sum(1 for c in result.completed if c.ttft <= ttft and c.itl <= itl)


def fixed(md: ModelDeployment, replicas: int) -> ModelDeployment:
    return md.model_copy(update={"spec": md.spec.model_copy(update={
        "autoscaling": md.spec.autoscaling.model_copy(update={"enabled": False}), "replicas": replicas})})


def meets(md: ModelDeployment, requests: list[TraceRequest], replicas: int, goal: float) -> bool:
    result = Simulator(fixed(md, replicas), requests, SimulationConfig(initial_replicas=replicas)).run()
    return met(md, result) >= goal * sum(feasible(md, requests))


def oracle(md: ModelDeployment, requests: list[TraceRequest], goal: float = 0.99,
           progress: Callable[[int], None] | None = None) -> list[int]:
    """Fewest replicas per minute (up to maxReplicas) that meet the goal on that minute's requests;
    ``progress`` is told each minute done."""
    per_minute = []
    end = requests[-1].arrival if requests else 0.0
    for minute in range(int(end // 60) + 1):
        chunk = window(requests, minute * 60, 60)
        low = 0
        if chunk:
            low, high = 1, md.spec.autoscaling.max_replicas
            while low < high:
                mid = (low + high) // 2
                if meets(md, chunk, mid, goal):
                    high = mid
                else:
                    low = mid + 1
        per_minute.append(low)
        if progress:
            progress(minute + 1)
    return per_minute
