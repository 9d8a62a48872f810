"""Autoscaling benchmark: every policy on a trace, against the oracle's GPU-hours.

    .venv/bin/python bench/autoscaling.py --trace conv --model 8b --slo standard --rate 4

The oracle knows each minute's arrivals and starts replicas instantly: for each minute, the fewest
replicas (binary search, each minute simulated from empty with that many ready replicas) that meet the
SLO for 99% of that minute's requests. Work carried across minute boundaries is ignored, so it is a
lower bound no real policy can reach. Every policy's GPU-hours are reported as a ratio to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controllers.simulation.baselines import (
    DynamoPlannerPolicy,
    HpaPolicy,
    KpaPolicy,
    StaticPolicy,
    gpu_utilisation,
    in_flight_per_pod,
    queue_per_pod,
)
from controllers.simulation.simulator import (
    ScalingPolicy,
    SimulationConfig,
    Simulator,
    TokenworksPolicy,
    report,
)
from controllers.simulation.trace import TraceRequest, load, multiply, window
from crds.models import ModelDeployment

ROOT = Path(__file__).resolve().parents[1]
TRACES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}
MODELS = {"8b": "llama-8b-h100.yaml", "70b": "llama-70b-h200-tp4.yaml"}
SLOS = {"standard": (2000, 100), "interactive": (450, 40)}


def deployment(model: str, slo: str, max_replicas: int) -> ModelDeployment:
    name = MODELS[model]
    raw = yaml.safe_load((ROOT / "examples" / name).read_text())
    raw["metadata"]["namespace"] = "default"
    raw["spec"]["engine"]["precision"] = "bf16"
    ttft, itl = SLOS[slo]
    raw["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": max_replicas,
                                  "slo": {"ttftMilliseconds": ttft, "interTokenLatencyMilliseconds": itl}}
    return ModelDeployment.model_validate(raw)


def meets(md: ModelDeployment, requests: list[TraceRequest], replicas: int, goal: float) -> bool:
    fixed = md.model_copy(update={"spec": md.spec.model_copy(update={
        "autoscaling": md.spec.autoscaling.model_copy(update={"enabled": False}), "replicas": replicas})})
    result = Simulator(fixed, requests, SimulationConfig(initial_replicas=replicas)).run()
    slo = md.spec.autoscaling.slo
    return report(result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3,
                  len(requests)).attainment >= goal


def oracle(md: ModelDeployment, requests: list[TraceRequest], goal: float = 0.99) -> list[int]:
    """Fewest replicas per minute that meet the goal on that minute's requests."""
    per_minute = []
    end = requests[-1].arrival
    for minute in range(int(end // 60) + 1):
        chunk = window(requests, minute * 60, 60)
        if not chunk:
            per_minute.append(0)
            continue
        low, high = 1, md.spec.autoscaling.max_replicas
        while low < high:
            mid = (low + high) // 2
            if meets(md, chunk, mid, goal):
                high = mid
            else:
                low = mid + 1
        per_minute.append(low)
    return per_minute


def policies(md: ModelDeployment, peak: int, concurrency: float) -> list[ScalingPolicy]:
    bounds: dict[str, Any] = {"min_replicas": 1, "max_replicas": md.spec.autoscaling.max_replicas}
    return [
        TokenworksPolicy(md),
        HpaPolicy("hpa-gpu-util", gpu_utilisation, target=0.7, **bounds),
        HpaPolicy("hpa-in-flight", in_flight_per_pod, target=concurrency, **bounds),
        HpaPolicy("keda-queue", queue_per_pod, target=4, **bounds),
        KpaPolicy(target_concurrency=concurrency, **bounds),
        DynamoPlannerPolicy(md, **bounds),
        StaticPolicy(peak),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", choices=sorted(TRACES), default="conv")
    parser.add_argument("--model", choices=sorted(MODELS), default="8b")
    parser.add_argument("--slo", choices=sorted(SLOS), default="standard")
    parser.add_argument("--rate", type=int, default=4, help="arrival-rate multiplier (evenly spaced copies)")
    parser.add_argument("--minutes", type=float, default=None, help="only the first N minutes")
    parser.add_argument("--max-replicas", type=int, default=32)
    args = parser.parse_args()

    trace = load(ROOT.parent / "shared" / "traces" / TRACES[args.trace])
    if args.minutes:
        trace = window(trace, 0, args.minutes * 60)
    requests = multiply(trace, args.rate)
    md = deployment(args.model, args.slo, args.max_replicas)
    gpus = md.spec.gpus_per_replica
    began = time.monotonic()
    need = oracle(md, requests)
    oracle_gpu_hours = sum(need) * gpus / 60
    peak = max(need)
    slo = md.spec.autoscaling.slo
    # The in-flight target: what one replica holds at its SLO capacity (Little's law on the model).
    replica = Simulator(md, requests[:1]).replica_model
    concurrency = max(1.0, replica.max_concurrency(1000, 200) / 4)
    print(f"{args.trace} x{args.rate}, {md.spec.model.profile} on {md.spec.gpu.product} x{gpus}, SLO "
          f"TTFT {slo.ttft_milliseconds} ms / ITL {slo.inter_token_latency_milliseconds} ms, {len(requests):,} "
          f"requests; oracle peak {peak} replicas, {oracle_gpu_hours:.2f} GPU-hours "
          f"({time.monotonic() - began:.0f} s)")
    print("| Policy | SLO attainment | TTFT p50/p95/p99 (ms) | ITL p50/p95/p99 (ms) | GPU-hours | x oracle | "
          "scale events |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| oracle (lower bound) | >= 99% per minute | - | - | {oracle_gpu_hours:.2f} | 1.00 | - |")
    for policy in policies(md, peak, concurrency):
        config = SimulationConfig(initial_replicas=peak if policy.name == "static" else None)
        result = Simulator(md, requests, config, policy=policy).run()
        r = report(result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3, len(requests))
        ttft = "/".join(f"{v * 1e3:.0f}" for v in r.ttft.values())
        itl = "/".join(f"{v * 1e3:.0f}" for v in r.itl.values())
        print(f"| {policy.name} | {100 * r.attainment:.2f}% | {ttft} | {itl} | {r.gpu_hours:.2f} | "
              f"{r.gpu_hours / oracle_gpu_hours:.2f} | {r.scale_events} |", flush=True)
    print(f"\n({time.monotonic() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
