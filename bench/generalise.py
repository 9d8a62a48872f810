"""Autoscaling on traffic it was not tuned on: generated families, several seeds, cold and warm starts,
and the attainment-cost frontier against static provisioning.

    .venv/bin/python bench/generalise.py                        # every family, 2 seeds, 30 minutes each
    .venv/bin/python bench/generalise.py --families step,bursts --seeds 1 --minutes 20
    .venv/bin/python bench/generalise.py --trace my-trace.jsonl --rate 1.5   # any trace file
    .venv/bin/python bench/generalise.py --frontier-only --families bursts,diurnal

Families are in ``controllers/simulation/families.py``. Each trace's base rate is sized from the
performance model so that its peak needs about 10 replicas of Llama-3.1-8B on an H100 (never from a
simulation of the trace). Every policy starts cold (at ``minReplicas``, 1) and warm (at the oracle's
first-minute count; static starts and stays at the oracle's peak). The oracle is the per-minute lower
bound of ``controllers/simulation/oracle.py``. The frontier runs Tokenworks at three ``slo.attainment``
values and static provisioning at every count from the oracle's median to 1.5x its peak, and writes a
table and ``out/frontier.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.autoscaling import CACHE, deployment
from controllers.autoscaling.loop import capacity_for
from controllers.simulation import oracle as oracle_module
from controllers.simulation.baselines import StaticPolicy
from controllers.simulation.families import BURSTY, PEAK_FACTOR, family, mean_output_tokens
from controllers.simulation.policies import make_policy
from controllers.simulation.simulator import SimulationConfig, SimulationResult, Simulator, TokenworksPolicy, report
from controllers.simulation.trace import TraceRequest, load, multiply
from crds.models import ModelDeployment

FAMILIES = ["constant", "step", "ramp", "bursts", "diurnal", "constant+long-context", "diurnal+reasoning"]
POLICIES = ["tokenworks", "hpa-in-flight", "knative-kpa", "keda-queue", "dynamo-planner", "static"]
ATTAINMENTS = (0.95, 0.99, 0.999)
GOAL = 0.99
PEAK_REPLICAS = 10


def model_for(name: str, attainment: float = 0.99) -> ModelDeployment:
    md = deployment("8b", "standard", 64)
    raw = md.model_dump(by_alias=True)
    raw["spec"]["autoscaling"]["slo"]["attainment"] = attainment
    if "long-context" in name:
        raw["spec"]["engine"]["maxInputLength"] = 65536  # prompts up to 57k tokens (ServeGen's maximum)
    if "reasoning" in name:
        raw["spec"]["engine"]["maxOutputLength"] = 32768
    return ModelDeployment.model_validate(raw)


def requests_for(name: str, seed: int, minutes: float, trace: str | None, rate: float) -> list[TraceRequest]:
    if trace:
        return multiply(load(Path(trace)), rate)
    fam = family(name)
    md = model_for(name)
    # Base rate from the performance model: the shape's peak needs PEAK_REPLICAS at the model's
    # per-replica capacity for this mix's mean output length.
    base = PEAK_REPLICAS * capacity_for(md) / mean_output_tokens(fam) / PEAK_FACTOR[fam.shape]
    return fam.generate(base, minutes, seed, md.spec.engine.max_input_length, md.spec.engine.max_output_length)


def oracle_for(name: str, requests: list[TraceRequest]) -> list[int]:
    md = model_for(name)
    digest = hashlib.sha256(json.dumps([(r.arrival, r.input_tokens, r.output_tokens) for r in requests]).encode())
    for source in ("controllers/simulation/simulator.py", "controllers/simulation/oracle.py",
                   "inference_pods/batching.py", "inference_pods/performance.py"):
        digest.update((Path(__file__).resolve().parents[1] / source).read_bytes())
    path = CACHE / f"family-{name.replace('+', '-')}-{digest.hexdigest()[:12]}.json"
    if path.exists():
        return list(json.loads(path.read_text()))
    need = oracle_module.oracle(md, requests, GOAL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(need))
    return need


def simulate(md: ModelDeployment, requests: list[TraceRequest], need: list[int], policy: str, start: str,
             static: int | None = None) -> SimulationResult:
    """One row's simulation: ``policy`` (or a ``static`` count) from a cold (1) or warm (the oracle's
    first-minute count) start; static starts and stays at the oracle's peak."""
    peak = max(need)
    if static is not None:
        chosen: Any = StaticPolicy(static)
        initial = static
    else:
        chosen = make_policy(policy, md, peak)
        initial = peak if policy == "static" else (1 if start == "cold" else max(1, need[0]))
    simulated = chosen.md if isinstance(chosen, TokenworksPolicy) else md
    return Simulator(simulated, requests, SimulationConfig(initial_replicas=initial), policy=chosen).run()


def run(name: str, seed: int, minutes: float, trace: str | None, rate: float, policy: str, start: str,
        need: list[int], attainment: float = 0.99, static: int | None = None) -> dict[str, Any]:
    md = model_for(name, attainment)
    requests = requests_for(name, seed, minutes, trace, rate)
    began = time.process_time()
    result = simulate(md, requests, need, policy, start, static)
    slo = md.spec.autoscaling.slo
    summary = report(result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3, len(requests))
    feasible = sum(oracle_module.feasible(md, requests))
    infeasible_share = 1 - feasible / len(requests) if requests else 0.0
    return {"trace": name, "seed": seed, "policy": policy if static is None else f"static-{static}",
            "start": start, "attainment": summary.attainment,
            "of_feasible": oracle_module.met(md, result) / max(1, feasible), "infeasible": infeasible_share,
            "gpu_hours": result.gpu_hours, "oracle_gpu_hours": sum(need) * result.gpus_per_replica / 60,
            "max_replicas": summary.max_replicas, "target": attainment, "cpu_seconds": time.process_time() - began}


def verdict(rows: list[dict[str, Any]], name: str) -> str:
    ours = [r for r in rows if r["policy"] == "tokenworks"]
    if not ours:
        return ""
    limit = 2.0 if family(name).shape in BURSTY or name.startswith("file") else 1.25
    parts = []
    for r in ours:
        ratio = r["gpu_hours"] / r["oracle_gpu_hours"]
        dominated = [o["policy"] for o in rows if o["start"] == r["start"] and o["policy"] != "tokenworks"
                     and o["seed"] == r["seed"] and o["of_feasible"] > r["of_feasible"]
                     and o["gpu_hours"] < r["gpu_hours"]]
        parts.append(f"seed {r['seed']} {r['start']}: {100 * r['of_feasible']:.2f}% of feasible "
                     f"({'met' if r['of_feasible'] >= GOAL else 'MISSED'}), {ratio:.2f}x oracle "
                     f"({'met' if ratio <= limit else 'MISSED'}, goal {limit}x), dominated by "
                     f"{', '.join(dominated) or 'none'}")
    cold = {r["seed"]: r["of_feasible"] for r in ours if r["start"] == "cold"}
    warm = {r["seed"]: r["of_feasible"] for r in ours if r["start"] == "warm"}
    gaps = [abs(cold[s] - warm[s]) * 100 for s in cold if s in warm]
    gap = f"; cold/warm gap {max(gaps):.2f} points ({'met' if max(gaps) <= 1 else 'MISSED'})" if gaps else ""
    return f"- {name}: " + "; ".join(parts) + gap


def table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"**{name}** ({100 * rows[0]['infeasible']:.2f}% infeasible)", "",
             "| policy | start | seed | attainment (of feasible) | GPU-hours | x oracle | most replicas |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['start']} | {r['seed']} | {100 * r['attainment']:.2f}% "
                     f"({100 * r['of_feasible']:.2f}%) | {r['gpu_hours']:.2f} | "
                     f"{r['gpu_hours'] / r['oracle_gpu_hours']:.2f} | {r['max_replicas']} |")
    return "\n".join(lines)


def frontier_plot(path: Path, frontiers: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frontiers), figsize=(5 * len(frontiers), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], frontiers.items(), strict=True):
        static = sorted((r for r in rows if r["policy"].startswith("static-")), key=lambda r: r["gpu_hours"])
        ours = sorted((r for r in rows if r["policy"] == "tokenworks"), key=lambda r: r["target"])
        ax.plot([r["gpu_hours"] for r in static], [100 * r["of_feasible"] for r in static], "o-", color="grey",
                label="static at each count")
        for r in static:
            ax.annotate(r["policy"].removeprefix("static-"), (r["gpu_hours"], 100 * r["of_feasible"]), fontsize=7)
        ax.plot([r["gpu_hours"] for r in ours], [100 * r["of_feasible"] for r in ours], "s-", color="tab:blue",
                label="tokenworks, slo.attainment")
        for r in ours:
            ax.annotate(f"{r['target']:g}", (r["gpu_hours"], 100 * r["of_feasible"]), fontsize=7, color="tab:blue")
        ax.set_title(name)
        ax.set_xlabel("GPU-hours")
        ax.set_ylabel("SLO attainment of feasible requests (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--trace", default=None, help="a trace file (Azure CSV, JSONL, generic CSV) instead")
    parser.add_argument("--rate", type=float, default=1.0, help="rate multiplier for --trace")
    parser.add_argument("--frontier", default="bursts,diurnal", help="families to draw the frontier for")
    parser.add_argument("--frontier-only", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    os.environ.setdefault("TOKENWORKS_BENCH_BACKEND", "llmapi")
    names = ["file"] if args.trace else args.families.split(",")
    seeds = [1] if args.trace else list(range(1, args.seeds + 1))
    policies = args.policies.split(",")
    began = time.monotonic()
    with ProcessPoolExecutor(args.jobs) as pool:
        traces = {(n, s): requests_for(n if not args.trace else "constant", s, args.minutes, args.trace, args.rate)
                  for n in names for s in seeds}
        needs = dict(zip(traces, pool.map(oracle_for, [n if not args.trace else "constant" for n, _ in traces],
                                          traces.values()), strict=True))
        verdicts = []
        if not args.frontier_only:
            futures = {(n, s, p, st): pool.submit(run, n if not args.trace else "constant", s, args.minutes,
                                                  args.trace, args.rate, p, st, needs[(n, s)])
                       for n in names for s in seeds for p in policies
                       for st in (("warm",) if p == "static" else ("cold", "warm"))}
            for n in names:
                rows = [f.result() for (fn, _, _, _), f in futures.items() if fn == n]
                print(table(n, rows) + "\n", flush=True)
                verdicts.append(verdict(rows, n if not args.trace else "constant"))
            print("\n".join(v for v in verdicts if v) + "\n", flush=True)
        frontiers: dict[str, list[dict[str, Any]]] = {}
        for n in [f for f in args.frontier.split(",") if f] if not args.trace else []:
            need = needs.get((n, 1)) or oracle_for(n, requests_for(n, 1, args.minutes, None, 1.0))
            counts = sorted({max(1, sorted(need)[len(need) // 2]), *range(max(1, sorted(need)[len(need) // 2]),
                                                                          int(1.5 * max(need)) + 1)})
            jobs = [pool.submit(run, n, 1, args.minutes, None, 1.0, "tokenworks", "warm", need, a) for a in ATTAINMENTS]
            jobs += [pool.submit(run, n, 1, args.minutes, None, 1.0, "static", "warm", need, 0.99, c) for c in counts]
            frontiers[n] = [j.result() for j in jobs]
            print(f"**Frontier, {n} (seed 1)**\n\n| provisioning | attainment of feasible | GPU-hours | x oracle |\n"
                  "|---|---:|---:|---:|", flush=True)
            for r in frontiers[n]:
                label = f"tokenworks slo.attainment={r['target']:g}" if r["policy"] == "tokenworks" else r["policy"]
                print(f"| {label} | {100 * r['of_feasible']:.2f}% | {r['gpu_hours']:.2f} | "
                      f"{r['gpu_hours'] / r['oracle_gpu_hours']:.2f} |", flush=True)
            print()
        if frontiers:
            frontier_plot(Path(args.out) / "frontier.png", frontiers)
            print(f"wrote {Path(args.out) / 'frontier.png'}")
    print(f"({time.monotonic() - began:.0f} s in all, {args.jobs} processes)")


if __name__ == "__main__":
    main()
