"""The trace-driven simulator: conservation, determinism, a flat count under constant load, scale-up
after the configured delays, agreement with the emulator, and bad input through the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli import app
from controllers.simulation.simulator import SimulationConfig, SimulationResult, Simulator, report
from controllers.simulation.trace import TraceRequest
from crds.models import ModelDeployment
from inference_pods.emulator.engine import EmulatedEngine
from inference_pods.performance import ReplicaModel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def deployment(**autoscaling: Any) -> ModelDeployment:
    raw = yaml.safe_load((EXAMPLES / "llama-8b-h100.yaml").read_text())
    raw["metadata"]["namespace"] = "default"
    raw["spec"]["engine"] = {"precision": "bf16", "maxBatchSize": 64}
    raw["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 16,
                                  "tokensPerSecondPerReplica": 1000, **autoscaling}
    return ModelDeployment.model_validate(raw)


def constant(rate: float, seconds: float, start: float = 0.0, prompt: int = 500,
             output: int = 100) -> list[TraceRequest]:
    return [TraceRequest(start + i / rate, prompt, output) for i in range(int(rate * seconds))]


TICK = 15.0  # spec.autoscaling.tickSeconds (the default), which the simulated autoscaler honours
FAST = SimulationConfig(scrape_seconds=15, window_seconds=60, short_window_seconds=30,
                        scheduling_seconds=5, load_seconds=30)


def run(md: ModelDeployment, requests: list[TraceRequest], config: SimulationConfig = FAST) -> SimulationResult:
    return Simulator(md, requests, config).run()


def test_every_request_completes_or_is_counted_dropped() -> None:
    requests = constant(20, 300)
    result = run(deployment(), requests)
    assert len(result.completed) + result.dropped == len(requests)
    assert result.dropped == 0
    summary = report(result, 2.0, 0.1, len(requests))
    assert summary.completed == len(requests)
    assert 0 < summary.attainment <= 1


def test_the_same_inputs_give_the_same_result() -> None:
    requests = constant(15, 240)
    first, second = run(deployment(), requests), run(deployment(), requests)
    assert first.timeline == second.timeline
    assert [(c.ttft, c.itl) for c in first.completed] == [(c.ttft, c.itl) for c in second.completed]
    assert first.gpu_seconds == second.gpu_seconds


def test_fast_forward_gives_exactly_what_stepping_every_iteration_gives() -> None:
    # Varied lengths, a load step that scales up and back down, and a small batch limit so requests
    # queue behind a full engine: every path that cuts a fast-forward short.
    requests = [TraceRequest(i / 6, 100 + 97 * (i % 7), 20 + 31 * (i % 5)) for i in range(600)] + \
        [TraceRequest(100 + i / 40, 300 + 53 * (i % 9), 50 + 17 * (i % 4)) for i in range(4000)]
    stepped = run(deployment(), requests, replace(FAST, fast_forward=False))
    forwarded = run(deployment(), requests)
    assert forwarded.timeline == stepped.timeline
    assert [(c.arrival, c.ttft, c.itl) for c in forwarded.completed] == \
        [(c.arrival, c.ttft, c.itl) for c in stepped.completed]
    assert forwarded.gpu_seconds == stepped.gpu_seconds
    assert max(d for _, d, _, _ in stepped.timeline) > 1


def test_a_constant_rate_gives_a_flat_replica_count() -> None:
    # 18 req/s x 100 tokens = 1,800 tok/s: two replicas at 1,000 each. The rate window filling at the
    # start looks like a rising trend and may order one more for a while; after that, no movement.
    result = run(deployment(scaleDownStabilizationSeconds=60), constant(18, 900))
    settled = [desired for t, desired, _, _ in result.timeline if 400 <= t <= 880]
    assert settled, result.timeline
    assert len(set(settled)) == 1, f"the count moved under constant load: {settled}"
    assert settled[0] == 2


def test_a_load_step_scales_up_after_the_configured_delays() -> None:
    requests = constant(5, 300) + constant(40, 300, start=300)  # 500 -> 4,000 tok/s at t = 300 s
    result = run(deployment(), requests)
    before = [d for t, d, _, _ in result.timeline if 200 <= t < 300]
    assert set(before) == {1}
    first_up = next(t for t, d, _, _ in result.timeline if t > 300 and d > 1)
    # Visible to the autoscaler one scrape later, then at the next tick.
    assert 300 + FAST.scrape_seconds <= first_up <= 300 + FAST.scrape_seconds + 2 * TICK
    # New replicas serve only after scheduling and engine load.
    serving_more = next(t for t, _, ready, _ in result.timeline if t > first_up and ready > 1)
    assert serving_more >= first_up + FAST.scheduling_seconds + FAST.load_seconds
    assert max(d for _, d, _, _ in result.timeline) >= 4


def test_simulated_latencies_match_the_emulator_on_the_same_workload() -> None:
    """The same small workload through the real-time emulator (4x faster) and the simulator with one
    fixed replica: per-request TTFT and mean ITL agree within 10% (plus 2 ms of timer jitter). The
    emulator runs 4x faster than the GPU: faster, and event-loop overhead becomes part of each step."""
    md = deployment()
    workload = [TraceRequest(i * 0.25, 200 + 50 * (i % 4), 40 + 10 * (i % 3)) for i in range(16)]
    simulated = Simulator(md.model_copy(update={"spec": md.spec.model_copy(update={
        "autoscaling": md.spec.autoscaling.model_copy(update={"enabled": False})})}), workload).run()
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", max_batch_size=64)
    scale = 4.0

    async def emulate() -> list[tuple[float, float]]:
        engine = EmulatedEngine(replica, time_scale=scale)
        engine.start()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        results: dict[int, tuple[float, float]] = {}

        async def one(index: int, request: TraceRequest) -> None:
            await asyncio.sleep(max(0.0, begin + request.arrival / scale - loop.time()))
            sequence = engine.submit(request.input_tokens, request.output_tokens)
            async for _ in engine.stream(sequence):
                pass
            assert sequence.first_token_at is not None and sequence.finished_at is not None
            ttft = (sequence.first_token_at - sequence.arrived) * scale
            itl = (sequence.finished_at - sequence.first_token_at) / (sequence.generated - 1) * scale
            results[index] = (ttft, itl)

        await asyncio.gather(*(one(i, r) for i, r in enumerate(workload)))
        await engine.stop()
        return [results[i] for i in range(len(workload))]

    by_arrival = sorted(simulated.completed, key=lambda c: c.arrival)

    def mismatches(emulated: list[tuple[float, float]]) -> list[str]:
        return [f"request {i}: simulated TTFT {sim.ttft:.4f} s / ITL {sim.itl:.4f} s, emulated {ttft:.4f} / {itl:.4f}"
                for i, ((ttft, itl), sim) in enumerate(zip(emulated, by_arrival, strict=True))
                if sim.ttft != pytest.approx(ttft, rel=0.10, abs=0.002 * scale)
                or sim.itl != pytest.approx(itl, rel=0.10, abs=0.002)]

    # The emulator runs in wall time: a stall of the shared CI machine (not of the model) while requests
    # are in flight is charged to them, once seen in a CI run (ITL 10.4 ms against 7.8). One more run
    # tells the two apart: a model mismatch fails both.
    missed = mismatches(asyncio.run(emulate()))
    if missed:
        missed = mismatches(asyncio.run(emulate()))
    assert not missed, missed


def test_bad_traces_fail_the_cli_clearly_and_write_nothing(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_seconds,input_tokens,output_tokens\n1,10,5\n0.5,10,5\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["simulate", str(trace), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "t.csv:3: timestamps go backwards" in result.output
    assert not out.exists()


def test_the_report_counts_iterations_whose_queue_waits_for_kv_space_or_a_batch_slot() -> None:
    # One replica, 40 requests at once of 1,000 + 2,000 tokens: 120,000 tokens reserved in all.
    burst = [TraceRequest(0.0, 1000, 2000) for _ in range(40)]

    def bound(engine: dict[str, Any]) -> SimulationResult:
        raw = deployment().model_dump(by_alias=True)
        raw["spec"]["engine"].update(engine)
        raw["spec"]["autoscaling"]["enabled"] = False
        return Simulator(ModelDeployment.model_validate(raw), burst, SimulationConfig(initial_replicas=1)).run()

    roomy = bound({"maxBatchSize": 64})
    assert roomy.iterations > 2000 and roomy.kv_bound_iterations == roomy.batch_bound_iterations == 0
    batch = bound({"maxBatchSize": 8})
    assert batch.batch_bound_iterations > 0 and batch.kv_bound_iterations == 0
    # 6% of the HBM left after the FP8 weights: 67,629 tokens, under the 120,000 the burst reserves.
    assert ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", precision="fp8",
                                     kv_cache_fraction=0.06).kv_capacity_tokens < 120_000
    kv = bound({"maxBatchSize": 64, "precision": "fp8", "kvCacheFreeGpuMemFraction": 0.06})
    assert kv.kv_bound_iterations > 0 and kv.batch_bound_iterations == 0
    assert kv.kv_bound_iterations < kv.iterations  # the last ones run with the queue empty
