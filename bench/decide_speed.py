"""How long one autoscaler tick's decisions take: ``decide`` for 1,000 ModelDeployments, each with an
hour of state (the demand history the attainment headroom reads, at a 15 s tick), on one core.

    .venv/bin/python bench/decide_speed.py [--models 1000] [--ticks 20]

Target: 1,000 decisions within 100 ms. Prints the median and worst tick.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controllers.autoscaling.policy import decide
from controllers.autoscaling.signals import Observations, Reading
from controllers.autoscaling.state import PolicyState
from crds.models import AutoscalingSpec


def observations(rng: random.Random, current: int) -> Observations:
    tps = rng.uniform(500, 30000)
    return Observations(
        output_tokens_per_second=Reading(tps), output_tokens_per_second_short=Reading(tps * rng.uniform(0.8, 1.3)),
        input_tokens_per_second=Reading(tps * 5), ttft_seconds=Reading(rng.uniform(0.1, 3.0)),
        itl_seconds=Reading(rng.uniform(0.01, 0.12)), queue=Reading(rng.choice([0.0, 0.0, 0.0, 20.0])),
        in_flight=Reading(rng.uniform(5, 200)), kv_utilization=Reading(0.4), current_replicas=current,
        ready_replicas=current, wait_short=Reading(rng.uniform(0.05, 3.0)),
        requests_per_second=Reading(tps / 200), requests_per_second_short=Reading(tps / 200),
        ttft_median_seconds=Reading(rng.uniform(0.05, 0.5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(1)
    spec = AutoscalingSpec.model_validate({"enabled": True, "minReplicas": 1, "maxReplicas": 64})
    # An hour of history per deployment, as after an hour of 15 s decisions.
    now = 3600.0
    states = []
    for _ in range(args.models):
        states.append(PolicyState(
            demand=tuple((float(t), rng.uniform(1, 20)) for t in range(3450, 3600, 15)),
            growth=tuple((float(t), rng.uniform(1, 20), rng.uniform(1, 3)) for t in range(0, 3480, 60)),
            history=tuple((float(t), 8.0) for t in range(3300, 3600, 15)),
            tokens_per_request=200.0, last_decision=3585.0, watching_since=0.0))
    currents = [rng.randint(1, 32) for _ in range(args.models)]
    times = []
    for tick in range(args.ticks):
        inputs = [observations(rng, c) for c in currents]
        began = time.process_time()
        for i in range(args.models):
            d = decide(inputs[i], spec, 3396.0, 62.0, states[i], now + 15 * tick,
                       prefill_tokens_per_second=23650.0)
            states[i], currents[i] = d.state, d.replicas
        times.append(time.process_time() - began)
    print(f"decide x {args.models} ModelDeployments, one tick, one core: median "
          f"{1e3 * statistics.median(times):.0f} ms, worst {1e3 * max(times):.0f} ms over {args.ticks} ticks "
          "(target 100 ms)")


if __name__ == "__main__":
    main()
