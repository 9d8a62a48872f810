"""Regression scenarios for the autoscaler's first-week failures, replayed in the simulator on generated traffic."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from controllers.autoscaling.loop import capacity_for
from controllers.simulation.families import PEAK_FACTOR, Family
from controllers.simulation.simulator import SimulationConfig, SimulationResult, Simulator, TokenworksPolicy
from crds.models import ModelDeployment

MEAN_OUTPUT = 248  # the chat mix's mean output tokens (log-normal, median 180, sigma 0.8)


def deployment() -> ModelDeployment:
    """The 8B example on one H100, BF16, on the LLM-API backend, autoscaled between 1 and 64."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "llama-8b-h100.yaml").read_text())
    raw["metadata"]["namespace"] = "default"
    raw["spec"]["engine"]["precision"] = "bf16"
    raw["spec"]["autoscaling"].update({"minReplicas": 1, "maxReplicas": 64})
    return ModelDeployment.model_validate(raw)


@cache
def replay(shape: str, replicas_of_load: float, minutes: float, start: int) -> SimulationResult:
    md = deployment()
    rate = replicas_of_load * capacity_for(md) / MEAN_OUTPUT
    requests = Family(shape).generate(rate, minutes, seed=3)
    return Simulator(md, requests, SimulationConfig(initial_replicas=start), policy=TokenworksPolicy(md)).run()


def counts(result: SimulationResult, start: float, end: float) -> list[int]:
    return [desired for t, desired, _, _ in result.timeline if start <= t < end]


def test_a_step_up_is_sized_within_two_minutes_not_overshot_and_released_after() -> None:
    # 2 replicas' worth of load, 4x for the middle third (6 to 12 minutes): 8 replicas' worth.
    result = replay("step", 2.0, 18, 2)
    before = max(counts(result, 300, 360))
    # Was: a replica or two a decision for five minutes. Now the growth of the wait for the first token
    # sizes the demand within two minutes of the step.
    assert max(counts(result, 360, 480)) >= 2.5 * before
    # Was: more than twice what the step needs, kept after it. Now at most twice the 8 replicas' worth...
    peak = max(counts(result, 360, 1080))
    assert peak <= 16
    # ...and released within six minutes of its end (the 300 s window and the decaying burst memory).
    assert counts(result, 1040, 1100)[-1] <= peak / 2


def test_repeated_bursts_do_not_ratchet_the_count_up() -> None:
    # 45 s bursts at 6x a rising trend every 4 minutes: the count follows the bursts down between them
    # instead of climbing one step per burst and staying.
    result = replay("bursts", 1.0, 24, 1)
    timeline = counts(result, 0, 24 * 60)
    peak_at = timeline.index(max(timeline))
    assert min(timeline[peak_at:]) <= 0.6 * max(timeline), timeline


def test_a_rising_day_is_led_not_chased() -> None:
    # A compressed day: from 2 replicas' worth to 10 at its peak, 9 minutes later, rising by up to a
    # third a minute. Was: sized for the demand now, the fleet was always one start-up lead behind; the
    # first backlog took the trend reading away and 55% of requests missed. Now the headroom multiplies
    # the measured demand by the growth seen within a lead from about its level (unbounded by the peak
    # while near it), and the rate's lag is projected over too.
    md = deployment()
    result = replay("diurnal", 10.0 / PEAK_FACTOR["diurnal"], 20, 2)
    slo = md.spec.autoscaling.slo
    met = sum(c.ttft <= slo.ttft_milliseconds / 1e3 and c.itl <= slo.inter_token_latency_milliseconds / 1e3
              for c in result.completed)
    assert met >= 0.99 * len(result.completed)
    # Not by holding the peak all day: 16 at most, and a quarter of it released by the end of the day.
    assert max(counts(result, 0, 1200)) <= 16
    assert counts(result, 1140, 1200)[-1] <= 0.75 * max(counts(result, 0, 1200))
