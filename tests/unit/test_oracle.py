"""The benchmark's lower bound: per-request feasibility, per-minute sizing, and that no policy reaching
the oracle's SLO attainment spends fewer GPU-hours than it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.simulation.baselines import DynamoPlannerPolicy, HpaPolicy, KpaPolicy, StaticPolicy, in_flight_per_pod
from controllers.simulation.oracle import feasible, fewest, fixed, latency_alone, met, oracle
from controllers.simulation.simulator import ScalingPolicy, SimulationConfig, Simulator, TokenworksPolicy
from controllers.simulation.trace import TraceRequest, load, multiply, window
from crds.models import ModelDeployment
from inference_pods.performance import ReplicaModel

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT.parent / "shared" / "traces"


def deployment(ttft_ms: int = 2000, itl_ms: int = 100, max_replicas: int = 16) -> ModelDeployment:
    raw = yaml.safe_load((ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    raw["metadata"]["namespace"] = "default"
    raw["spec"]["engine"]["precision"] = "bf16"
    raw["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": max_replicas,
                                  "slo": {"ttftMilliseconds": ttft_ms, "interTokenLatencyMilliseconds": itl_ms}}
    return ModelDeployment.model_validate(raw)


def test_latency_alone_is_what_the_simulator_gives_one_request_on_an_idle_replica() -> None:
    md = deployment()
    for prompt, output in [(1, 1), (300, 1), (2000, 50), (12_000, 300)]:
        result = Simulator(fixed(md, 1), [TraceRequest(0.0, prompt, output)],
                           SimulationConfig(initial_replicas=1)).run()
        (done,) = result.completed
        ttft, itl = latency_alone(ReplicaModel.for_spec(md.spec), prompt, output)
        assert (done.ttft, done.itl) == pytest.approx((ttft, itl), rel=1e-9)


def test_a_prompt_too_long_for_the_ttft_target_is_infeasible() -> None:
    md = deployment(ttft_ms=450, itl_ms=40)
    short, long = TraceRequest(0, 500, 100), TraceRequest(0, 30_000, 10)
    assert feasible(md, [short, long]) == [True, False]


@pytest.mark.parametrize(("ttft_ms", "itl_ms"), [(2000, 100), (450, 40), (300, 8)])
def test_feasibility_is_latency_alone_against_both_targets(ttft_ms: int, itl_ms: int) -> None:
    # 8 ms sits inside the range of decode steps of Llama-3.1-8B BF16 on one H100 (7.5 ms at 1,000
    # tokens of context): the grid crosses the ITL target both ways, and the TTFT target at 300 ms.
    md = deployment(ttft_ms=ttft_ms, itl_ms=itl_ms)
    model = ReplicaModel.for_spec(md.spec)
    requests = [TraceRequest(0, i, o) for i in (1, 300, 2000, 8000, 30_000) for o in (1, 2, 50, 500, 2000)]
    expected = []
    for r in requests:
        ttft, itl = latency_alone(model, r.input_tokens, r.output_tokens)
        expected.append(ttft <= ttft_ms / 1e3 and itl <= itl_ms / 1e3)
    assert feasible(md, requests) == expected
    if itl_ms == 8:
        assert True in expected and False in expected


def test_the_oracle_sizes_each_minute_to_the_fewest_replicas_that_meet_the_goal() -> None:
    md = deployment()
    # Minute 0: 2 requests/s; minute 1: nothing; minute 2: 40 requests/s.
    light = [TraceRequest(i * 0.5, 1000, 200) for i in range(120)]
    heavy = [TraceRequest(120 + i / 40, 1000, 200) for i in range(2400)]
    need = oracle(md, light + heavy)
    assert len(need) == 3 and need[1] == 0 and need[2] > need[0] >= 1
    minute = window(light + heavy, 120, 60)
    for replicas, ok in [(need[2], True), (need[2] - 1, False)]:
        result = Simulator(fixed(md, replicas), minute, SimulationConfig(initial_replicas=replicas)).run()
        assert (met(md, result) >= 0.99 * len(minute)) is ok


@pytest.mark.parametrize("trace", [pytest.param("conv", marks=pytest.mark.xfail(strict=True, reason=(
    "known since the recalibrated performance model (issue 15): the Dynamo planner meets the attainment with "
    "0.337 GPU-hours against the oracle's 0.350 on this trace. The oracle asks 99% of every minute, the policies "
    "are scored on 99% of the whole trace, so a policy that misses more in a few minutes can undercut it: the "
    "oracle is no lower bound here. Strict: a fix makes this fail until the marker goes"))), "code"])
def test_no_policy_that_reaches_the_oracles_attainment_uses_fewer_gpu_hours(trace: str) -> None:
    md = deployment(max_replicas=16)
    requests = multiply(window(load(TRACES / f"AzureLLMInferenceTrace_{trace}.csv"), 0, 600),
                        6 if trace == "conv" else 1)
    need = oracle(md, requests)
    oracle_gpu_hours = sum(need) / 60
    goal = 0.99 * sum(feasible(md, requests))
    bounds: dict[str, Any] = {"min_replicas": 1, "max_replicas": 16}
    policies: list[tuple[ScalingPolicy, int]] = [
        (TokenworksPolicy(md), need[0]), (HpaPolicy("hpa-in-flight", in_flight_per_pod, 16, **bounds), need[0]),
        (KpaPolicy(target_concurrency=16, **bounds), need[0]), (DynamoPlannerPolicy(md, **bounds), need[0]),
        *((StaticPolicy(count), count) for count in range(1, max(need) + 1)),
    ]
    reached = []
    for policy, start in policies:
        result = Simulator(md, requests, SimulationConfig(initial_replicas=start), policy=policy).run()
        if met(md, result) >= goal:
            reached.append(policy.name)
            assert result.gpu_hours >= oracle_gpu_hours, (policy.name, result.gpu_hours, oracle_gpu_hours)
    assert "static" in reached, "static at the oracle's peak reaches the goal, so the check is not vacuous"


def test_a_lookback_loads_each_minute_with_the_answers_still_decoding_from_before() -> None:
    md = deployment(max_replicas=16)
    # Minute 0: 240 requests whose 6,000-token answers last minutes; minute 1: 12 more.
    requests = [TraceRequest(i * 0.25, 500, 6000) for i in range(240)]
    requests += [TraceRequest(60.0 + i * 5, 500, 6000) for i in range(12)]
    plain = oracle(md, requests)
    loaded = oracle(md, requests, lookback_minutes=1)
    assert loaded[0] == plain[0]  # nothing before the first minute
    assert plain[1] == 1  # 12 requests alone fit one replica
    assert loaded[1] > plain[1]  # behind minute 0's answers they do not


@pytest.mark.parametrize("answer", [1, 2, 5, 16, 17, 31, 32])
def test_the_search_from_a_guess_finds_what_bisection_finds(answer: int) -> None:
    calls: list[int] = []

    def ok(n: int) -> bool:
        assert 1 <= n < 32  # the top is taken as enough, never simulated
        calls.append(n)
        return n >= answer

    assert fewest(ok, 32) == answer
    for guess in (None, 1, 4, answer, 20, 32):
        calls.clear()
        assert fewest(ok, 32, guess) == answer, guess
    calls.clear()
    fewest(ok, 32, answer)
    assert len(calls) <= 2  # an unchanged count costs two simulations
