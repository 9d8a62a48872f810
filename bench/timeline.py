"""One generalisation run, minute by minute: what arrived, what the oracle needs, what the policy asked for
and served, how many of that minute's arrivals met the SLO, and the decision that closed the minute.

    .venv/bin/python bench/timeline.py --family diurnal --seed 1 --minutes 20 --start warm
    .venv/bin/python bench/timeline.py --family constant --start cold --policy hpa-in-flight
    .venv/bin/python bench/timeline.py --family constant --static 10 --minutes 12

It runs exactly what ``bench/generalise.py`` runs for one row (the same trace, oracle, model and start),
so the figures docs/benchmarks.md quotes about a run's course (how far a cold start climbs, how long a
backlog drains, what a static count attains) come from here. ``--decisions`` prints every decision
whose rule or count changed, with its reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import generalise
from bench.generalise import model_for, oracle_for, requests_for
from controllers.simulation import oracle as oracle_module
from controllers.simulation.simulator import SimulationResult
from controllers.simulation.trace import TraceRequest


def simulate(family: str, seed: int, minutes: float, policy: str, start: str,
             static: int | None) -> tuple[SimulationResult, list[int], list[TraceRequest], int]:
    """``bench/generalise.py``'s row for this family, seed, policy and start: the result, the oracle's
    per-minute counts, the requests and how many of them are feasible."""
    md = model_for(family)
    requests = requests_for(family, seed, minutes, None, 1.0)
    need = oracle_for(family, requests)
    result = generalise.simulate(md, requests, need, policy, start, static)
    return result, need, requests, sum(oracle_module.feasible(md, requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="constant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--policy", default="tokenworks")
    parser.add_argument("--start", choices=("cold", "warm"), default="warm")
    parser.add_argument("--static", type=int, default=None, help="a fixed replica count instead of a policy")
    parser.add_argument("--decisions", action="store_true", help="print every changed decision too")
    args = parser.parse_args()
    os.environ.setdefault("TOKENWORKS_BENCH_BACKEND", "llmapi")
    md = model_for(args.family)
    slo = md.spec.autoscaling.slo
    ttft, itl = slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3
    result, need, requests, feasible = simulate(args.family, args.seed, args.minutes, args.policy, args.start,
                                                args.static)
    total = len(requests)

    # Arrivals from the trace, so a request never served (dropped) counts as a miss of its minute.
    arrived: dict[int, int] = defaultdict(int)
    met: dict[int, int] = defaultdict(int)
    worst: dict[int, float] = defaultdict(float)
    for r in requests:
        arrived[int(r.arrival // 60)] += 1
    for c in result.completed:
        minute = int(c.arrival // 60)
        met[minute] += c.ttft <= ttft and c.itl <= itl
        worst[minute] = max(worst[minute], c.ttft)
    # A minute without a decision (a static count ticks hourly) carries the last one's counts.
    closing: dict[int, tuple[str, str, str]] = {}
    for (at, desired, serving, _), (_, rule, _) in zip(result.timeline, result.decisions, strict=True):
        closing[int(at // 60)] = (str(desired), str(serving), rule)
    label = f"static {args.static}" if args.static is not None else f"{args.policy} {args.start}"
    print(f"{args.family} seed {args.seed}, {args.minutes:g} min, {label}: {total} requests, "
          f"{feasible} feasible, {total - len(result.completed)} never served; served until "
          f"{result.duration / 60:.1f} min")
    print(f"{'min':>4} {'arrived':>8} {'oracle':>6} {'desired':>7} {'serving':>7} {'met':>7} "
          f"{'worst TTFT s':>12}  rule")
    last = max([*closing, *arrived, len(need) - 1])
    carried = (str(result.initial_replicas), str(result.initial_replicas), "")
    for minute in range(last + 1):
        desired, serving, rule = carried = closing.get(minute, (*carried[:2], ""))
        share = f"{100 * met[minute] / arrived[minute]:6.1f}%" if arrived[minute] else "      -"
        oracle = str(need[minute]) if minute < len(need) else "-"
        print(f"{minute:>4} {arrived[minute]:>8} {oracle:>6} {desired:>7} {serving:>7} {share} "
              f"{worst[minute]:>12.1f}  {rule}")
    done = sum(met.values())
    print(f"met {done} of {feasible} feasible ({100 * done / max(1, feasible):.2f}%), "
          f"{result.gpu_hours:.2f} GPU-hours = {result.gpu_hours / (sum(need) * result.gpus_per_replica / 60):.2f}x "
          f"the oracle's {sum(need) * result.gpus_per_replica / 60:.2f}, most desired "
          f"{max([result.initial_replicas, *(d for _, d, _, _ in result.timeline)])}")
    if args.decisions:
        previous = ("", -1)
        for (at, desired, _, _), (_, rule, reason) in zip(result.timeline, result.decisions, strict=True):
            if (rule, desired) != previous:
                print(f"{at:8.0f} s  {desired:>3}  {rule}: {reason}")
                previous = (rule, desired)


if __name__ == "__main__":
    main()
