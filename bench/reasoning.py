"""Reasoning-workload benchmark: DeepSeek-R1 (FP8 on 8 x H200, FP4 on 8 x B200) and a dense reasoning model
under reasoning traffic, every policy against the oracle, and which limit binds when answers are long.

    .venv/bin/python bench/reasoning.py                                   # 5 configurations, 1 process
    .venv/bin/python bench/reasoning.py --only r1-h200/production --policies tokenworks,static
    .venv/bin/python bench/reasoning.py --minutes 60 --jobs 2

It reuses bench/autoscaling.py's machinery: the cached per-minute oracle, one simulation per policy,
the same table. Each oracle minute is simulated from empty as many minutes before it as a mean answer
lasts at the ITL target, so the answers still decoding load it. Traces are generated in-process by
``controllers.simulation.workloads`` (seeded, never written): production DeepSeek-R1 traffic
(ServeGen) on a diurnal arrival whose period is the window (lowest at the start, highest half-way),
MLPerf's DeepSeek-R1 prompts on Poisson arrivals, and Llama-3.3-Nemotron-Super-49B's reasoning
lengths on the diurnal arrival. The deployments are the examples (examples/deepseek-r1-*.yaml,
examples/nemotron-super-49b-h200-tp2.yaml) with their SLOs.

Rates are derived from the performance model, never from a run: one replica carries
``capacity_at_slo(ITL target, mean prompt, mean answer) / mean answer`` requests per second (the
steady batch whose iteration stays under the ITL target, or that the KV cache or maxBatchSize allows,
at 80% headroom), and the arrival's peak is ``FLEET`` times that. The script prints markdown: per
configuration the table of bench/autoscaling.py and a second one of what bound admission and latency.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.autoscaling import cached_oracle, run_policy, table
from controllers.simulation.policies import POLICIES
from controllers.simulation.trace import TraceRequest
from controllers.simulation.workloads import WORKLOADS, Arrival, Diurnal, Poisson, generate
from crds.models import ModelDeployment
from inference_pods.performance import ReplicaModel

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"r1-h200": "deepseek-r1-h200-fp8.yaml", "r1-b200": "deepseek-r1-b200-fp4.yaml",
          "nemotron-h200": "nemotron-super-49b-h200-tp2.yaml"}
# traffic name -> (workload, arrival kind)
TRAFFIC = {"production": ("deepseek-r1-production", "diurnal"), "mlperf": ("mlperf-deepseek-r1", "poisson"),
           "nemotron": ("nemotron-super-49b-reasoning", "diurnal")}
PAIRS = [("r1-h200", "production"), ("r1-h200", "mlperf"), ("r1-b200", "production"), ("r1-b200", "mlperf"),
         ("nemotron-h200", "nemotron")]
# Replicas the model's steady-state capacity (at the ITL target, 80% headroom) needs at the arrival's peak.
# What the oracle needs differs: TTFT under long prompts may need more, a minute's burst fewer.
FLEET = 6
DIURNAL_AMPLITUDE = 0.5  # rate from 0.5x to 1.5x the mean over the window
SEED = 1
MINUTES = 20.0
ORACLE_MINIMUM = 4  # a configuration whose oracle peak is below this is flagged: too small a fleet to judge


@dataclass(frozen=True)
class ReasoningConfig:
    model: str  # a key of MODELS
    traffic: str  # a key of TRAFFIC
    minutes: float = MINUTES  # the window the rate's diurnal period spans

    @property
    def key(self) -> str:
        return f"{self.model}/{self.traffic}"

    @property
    def workload(self) -> str:
        return TRAFFIC[self.traffic][0]

    @property
    def rate(self) -> float:
        """Mean arrivals per second, from the model's capacity (``per_replica_rate``)."""
        return rate_for(self.model, self.traffic)

    def arrival(self) -> Arrival:
        if TRAFFIC[self.traffic][1] == "diurnal":
            return Diurnal(self.rate, DIURNAL_AMPLITUDE, self.minutes * 60)
        return Poisson(self.rate)

    @property
    def title(self) -> str:
        md = self.deployment(1)
        return f"{self.workload}, {self.arrival().describe()}, {md.spec.engine.precision}"

    @property
    def cache_name(self) -> str:
        # The oracle's own key covers the simulator and the spec; the trace comes from the workloads module.
        source = hashlib.sha256((ROOT / "controllers/simulation/workloads.py").read_bytes()).hexdigest()[:8]
        return f"reasoning-{self.model}-{self.traffic}-{self.rate:.4f}-seed{SEED}-{source}"

    @property
    def oracle_lookback(self) -> int:
        """Minutes a mean answer lasts at the ITL target (the slowest the SLO allows), rounded up: each oracle
        minute starts that much earlier, so the answers still decoding from before load it."""
        md = self.deployment(1)
        _, answer = mean_lengths(self.model, self.traffic)
        return math.ceil(answer * md.spec.autoscaling.slo.inter_token_latency_milliseconds / 1e3 / 60)

    def deployment(self, max_replicas: int) -> ModelDeployment:
        return deployment(self.model, max_replicas)

    def requests(self, minutes: float | None) -> list[TraceRequest]:
        return requests_for(self, minutes if minutes is not None else self.minutes)


@functools.cache
def _manifest(model: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "examples" / MODELS[model]).read_text())
    return raw


def deployment(model: str, max_replicas: int) -> ModelDeployment:
    raw = _manifest(model)
    spec = {**raw["spec"], "autoscaling": {**raw["spec"]["autoscaling"], "maxReplicas": max_replicas}}
    return ModelDeployment.model_validate({**raw, "metadata": {**raw["metadata"], "namespace": "default"},
                                           "spec": spec})


def mean_lengths(model: str, traffic: str) -> tuple[float, float]:
    """The workload's mean prompt and answer (its length model's exact means)."""
    workload = WORKLOADS[TRAFFIC[traffic][0]]
    return workload.input.mean(), workload.output.mean()


def per_replica_rate(model: str, traffic: str) -> float:
    """Requests per second one replica carries at the SLO's ITL target with the workload's mean lengths."""
    md = deployment(model, 1)
    replica = ReplicaModel.for_spec(md.spec)
    prompt, answer = mean_lengths(model, traffic)
    itl = md.spec.autoscaling.slo.inter_token_latency_milliseconds / 1e3
    return replica.capacity_at_slo(itl, round(prompt), round(answer)) / answer


@functools.cache
def rate_for(model: str, traffic: str) -> float:
    peak_factor = 1 + DIURNAL_AMPLITUDE if TRAFFIC[traffic][1] == "diurnal" else 1.0
    return FLEET * per_replica_rate(model, traffic) / peak_factor


@functools.lru_cache(maxsize=16)
def _generated(config: ReasoningConfig, minutes: float) -> tuple[TraceRequest, ...]:
    engine = config.deployment(1).spec.engine
    trace = generate(WORKLOADS[config.workload], config.arrival(), minutes * 60, SEED,
                     max_input=engine.max_input_length, max_output=engine.max_output_length)
    return tuple(trace.requests)


def requests_for(config: ReasoningConfig, minutes: float) -> list[TraceRequest]:
    return list(_generated(config, minutes))


def limits(config: ReasoningConfig) -> str:
    """What one replica holds at the workload's mean lengths, and which limit comes first."""
    md = config.deployment(1)
    replica = ReplicaModel.for_spec(md.spec)
    prompt, answer = mean_lengths(config.model, config.traffic)
    per_request = round(prompt) + round(answer)
    kv = replica.kv_capacity_tokens // per_request
    itl = md.spec.autoscaling.slo.inter_token_latency_milliseconds / 1e3
    at_itl = replica.concurrency_at_slo(itl, round(prompt), round(answer))
    # The engine's limits (per rank with attention data-parallel: batch_limit and token_budget are the node's).
    budget = int(replica.token_budget / (1 + prompt / answer))
    bounds = {"the KV cache": kv, "maxBatchSize": replica.batch_limit, "the step's token budget": budget}
    first = min(bounds, key=lambda k: bounds[k])
    binds = "the ITL target" if at_itl < bounds[first] else first
    step = replica.steady_step_seconds(at_itl, round(prompt), round(answer))
    return (f"One replica at the mean request ({prompt:,.0f} prompt + {answer:,.0f} answer tokens, "
            f"{per_request * replica.kv_bytes_per_token / 2**20:,.0f} MiB of KV at "
            f"{replica.kv_bytes_per_token / 1024:.1f} KiB per token): the KV cache "
            f"({replica.kv_capacity_tokens:,} tokens) holds {kv:,} requests, maxBatchSize allows "
            f"{replica.batch_limit:,}, the ITL target ({itl * 1e3:.0f} ms) allows {at_itl:,} (a steady step of "
            f"{step * 1e3:.1f} ms): **{binds} binds first**; {per_replica_rate(config.model, config.traffic):.3f} "
            f"req/s per replica at 80%, so {config.rate:.3f} req/s on average, peak "
            f"{config.arrival().peak():.3f}, is {FLEET} replicas' worth at the peak; the oracle's minutes start "
            f"{config.oracle_lookback} minutes early (the mean answer at the ITL target, rounded up)")


def binding(config: ReasoningConfig, rows: list[dict[str, Any]]) -> str:
    md = config.deployment(1)
    slo = md.spec.autoscaling.slo
    lines = ["| Policy | iterations with a request waiting for KV space | ... for a batch slot | TTFT p95 / "
             f"target ({slo.ttft_milliseconds} ms) | ITL p95 / target ({slo.inter_token_latency_milliseconds} ms) |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        ttft = row["ttft"]["p95"] * 1e3 / slo.ttft_milliseconds
        itl = row["itl"]["p95"] * 1e3 / slo.inter_token_latency_milliseconds
        lines.append(f"| {row['policy']} | {100 * row['kv_bound']:.1f}% | {100 * row['batch_bound']:.1f}% | "
                     f"{ttft:.2f} | {itl:.2f} |")
    return "\n".join(lines)


def run(configs: list[ReasoningConfig], names: list[str], minutes: float | None, max_replicas: int,
        jobs: int = 1, out: Callable[[str], None] = print) -> dict[ReasoningConfig, list[dict[str, Any]]]:
    """Every policy in ``names`` on every configuration; prints the markdown through ``out``. One job runs
    in this process (no pool)."""
    results: dict[ReasoningConfig, list[dict[str, Any]]] = {}

    def report(config: ReasoningConfig, need: list[int], rows: list[dict[str, Any]]) -> None:
        gpus = config.deployment(1).spec.gpus_per_replica
        small = f" (**below {ORACLE_MINIMUM}**: too small a fleet to judge)" if max(need) < ORACLE_MINIMUM else ""
        out(f"### {config.key}\n\n{limits(config)}. Oracle peak {max(need)} replicas{small}.\n\n"
            + table(config, need, rows, len(config.requests(minutes)), gpus) + "\n\n" + binding(config, rows) + "\n")
        results[config] = rows

    if jobs == 1:
        for config in configs:
            need = cached_oracle(config, max_replicas, minutes)
            report(config, need, [run_policy(config, n, need, max_replicas, minutes) for n in names])
        return results
    with ProcessPoolExecutor(jobs) as pool:
        needs = dict(zip(configs, pool.map(cached_oracle, configs, [max_replicas] * len(configs),
                                            [minutes] * len(configs)), strict=True))
        futures = {(c, n): pool.submit(run_policy, c, n, needs[c], max_replicas, minutes)
                   for c in configs for n in names}
        for config in configs:
            report(config, needs[config], [futures[(config, n)].result() for n in names])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="model/traffic, e.g. r1-h200/production")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--minutes", type=float, default=MINUTES, help="the window (and the diurnal period)")
    parser.add_argument("--max-replicas", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    configs = [ReasoningConfig(m, t, args.minutes) for m, t in PAIRS]
    if args.only:
        unknown = set(args.only) - {c.key for c in configs}
        if unknown:
            parser.error(f"unknown configuration(s) {sorted(unknown)}; one of {[c.key for c in configs]}")
        configs = [c for c in configs if c.key in args.only]
    began = time.monotonic()
    run(configs, args.policies.split(","), args.minutes, args.max_replicas, args.jobs)
    print(f"({time.monotonic() - began:.0f} s in all, {args.jobs} process{'es' if args.jobs > 1 else ''})")


if __name__ == "__main__":
    main()
