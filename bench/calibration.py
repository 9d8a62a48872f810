"""Every published throughput row of ../shared/calibration against the performance model, and the fit of its
efficiency constants.

    PYTHONPATH=. .venv/bin/python -m bench.calibration          # every row, then the summary per table
    PYTHONPATH=. .venv/bin/python -m bench.calibration --fit    # search the constants again (~20 s, 1 core)

The rows are ``tests/fixtures/calibration/rows.csv``: numbers copied from the calibration files' tables (each
row names its file and section), nothing else. A row is one trtllm-bench saturation run: model, GPU,
parallelism, weight and KV precision, fixed ISL/OSL, the engine's batch and token limits, and the published
output tokens/s (of the whole group, or per GPU where the table gives that).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference_pods import performance
from inference_pods.performance import ReplicaModel
from inference_pods.profiles import GPUS, MODELS

ROWS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "calibration" / "rows.csv"
ADP_LIMITS_ARE_TOTAL = False
KV_ESTIMATE_BYTES = 2  # the checkpoints name no KV type, so the estimate takes 16 bit
WITHIN = 0.15  # the goal: >= 90% of rows within 15%, mean absolute error under 10%
# The constants the fit moves, with the box it searches in.
FITTED: dict[str, tuple[float, float]] = {
    "COMPUTE_EFFICIENCY": (0.2, 0.9),
    "FP4_COMPUTE_EFFICIENCY": (0.05, 0.9),
    "MOE_COMPUTE_EFFICIENCY": (0.02, 1.0),
    "BANDWIDTH_EFFICIENCY": (0.4, 0.95),
    "OVERLAP_NORM": (1.0, 4.0),
    "STEP_OVERHEAD_SECONDS": (0.0, 0.01),
    "COMM_EFFICIENCY": (0.1, 1.0),
    "COMM_LATENCY_SECONDS": (0.0, 60e-6),
    "RUNTIME_RESERVED_BYTES": (1e9, 12e9),
    "ACTIVATION_RESERVE_WIDTHS": (0.0, 100.0),
}


def trtllm_bench_limits(model: str, gpu: str, precision: str, tp: int, pp: int, isl: int, osl: int) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) as ``trtllm-bench throughput`` picks them when the run does not set them:
    ``calc_engine_setting`` and ``finetune_setting`` of NVIDIA/TensorRT-LLM
    ``tensorrt_llm/bench/build/tuning.py`` @ 04cba882084a25665e7f80f5bda71b35b9790b6f. Its estimate takes the
    checkpoint's KV type (none in the ModelOpt FP8/NVFP4 checkpoints, so 2 bytes), at least one KV head per TP
    rank, the config's ``num_key_value_heads`` on every layer (128 for DeepSeek's MLA), and the weights at 1 byte
    (FP8) or 0.5 (NVFP4) per parameter; then it rounds the KV-bound request count up ("slightly optimistic")."""
    shape = MODELS[model].architecture
    gib = 1024**3
    per_token = 2 * shape.layers * max(tp, shape.kv_heads) * shape.head_dim * KV_ESTIMATE_BYTES / gib
    engine = MODELS[model].parameters * {"fp4": 0.5, "fp8": 1.0}.get(precision, 2.0) / gib
    available = GPUS[gpu].usable_hbm_bytes / gib * tp * pp - engine
    requests = available * 0.95 / (per_token * (isl + osl))
    raw_bs = min(requests, 4096) / pp
    raw_token = min(raw_bs * (1 + isl / osl), 32768)
    if raw_bs < 256:
        bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        bs = 128 * math.ceil(raw_bs / 128)
    else:
        bs = 256 * math.ceil(raw_bs / 256)
    if raw_token < 4096:
        tokens = max(2048, 256 * math.ceil(raw_token / 256))
    elif raw_token < 8192:
        tokens = 512 * math.ceil(raw_token / 512)
    else:
        tokens = 1024 * math.ceil(raw_token / 1024)
    return bs, tokens


@dataclass(frozen=True)
class Row:
    table: str
    model: str
    gpu: str
    tp: int
    pp: int
    ep: int
    attention_dp: bool
    precision: str
    kv_precision: str
    isl: int
    osl: int
    published: float
    per_gpu: bool
    max_batch: int
    max_tokens: int
    source: str

    @property
    def label(self) -> str:
        par = f"{'DEP' if self.attention_dp else 'TP'}{self.tp}" + (f"xPP{self.pp}" if self.pp > 1 else "")
        return f"{self.model} {self.gpu} {par} {self.precision}"

    def replica(self) -> ReplicaModel:
        # trtllm-bench's setup: kv_cache_free_gpu_mem_fraction 0.95, chunked prefill, and its own limits unless
        # the row gives the run's (0: not given).
        batch, tokens = self.max_batch, self.max_tokens
        if not batch:
            batch, tokens = trtllm_bench_limits(self.model, self.gpu, self.precision, self.tp, self.pp, self.isl,
                                                self.osl)
            if self.attention_dp and ADP_LIMITS_ARE_TOTAL:
                batch, tokens = -(-batch // self.tp), -(-tokens // self.tp)
        return ReplicaModel.for_profiles(self.model, self.gpu, precision=self.precision, tp=self.tp, pp=self.pp,
                                         ep=self.ep, attention_dp=self.attention_dp, kv_precision=self.kv_precision,
                                         max_batch_size=batch, max_num_tokens=tokens, kv_cache_fraction=0.95)

    def predict(self) -> float:
        """The model's figure in the row's unit."""
        replica = self.replica()
        total = replica.saturation_throughput(self.isl, self.osl)
        return total / replica.gpus if self.per_gpu else total


def load_rows(path: Path = ROWS) -> list[Row]:
    with path.open() as f:
        return [Row(r["table"], r["model"], r["gpu"], int(r["tp"]), int(r["pp"]), int(r["ep"]),
                    r["attention_dp"] == "1", r["precision"], r["kv_precision"], int(r["isl"]), int(r["osl"]),
                    float(r["published"]), r["unit"] == "per_gpu", int(r["max_batch"]), int(r["max_tokens"]),
                    r["source"]) for r in csv.DictReader(f)]


def errors(rows: list[Row]) -> list[float]:
    """Relative error of each row: model / published - 1."""
    return [row.predict() / row.published - 1 for row in rows]


def summary(errs: list[float]) -> tuple[float, float]:
    """(share of rows within 15%, mean absolute error)."""
    return (sum(abs(e) <= WITHIN for e in errs) / len(errs), sum(abs(e) for e in errs) / len(errs))


@contextmanager
def constants(values: dict[str, float]) -> Iterator[None]:
    """The performance model with ``values`` for its constants (each row builds a fresh ReplicaModel, so no
    cached costs outlive them)."""
    saved = {name: getattr(performance, name) for name in values}
    for name, value in values.items():
        setattr(performance, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(performance, name, value)


def loss(errs: list[float]) -> float:
    """Mean absolute log error, plus a penalty per row outside the 15% band (the goal counts those)."""
    return sum(abs(math.log1p(e)) + (0.05 if abs(e) > WITHIN else 0.0) for e in errs) / len(errs)


def nelder_mead(f: Callable[[list[float]], float], start: list[float], scale: list[float],
                iterations: int = 300) -> list[float]:
    """A plain Nelder-Mead simplex search (scipy is not a dependency)."""
    simplex = [start] + [[x + (scale[i] if i == j else 0.0) for j, x in enumerate(start)] for i in range(len(start))]
    values = [f(p) for p in simplex]
    for _ in range(iterations):
        order = sorted(range(len(simplex)), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        centroid = [sum(p[j] for p in simplex[:-1]) / (len(simplex) - 1) for j in range(len(start))]
        worst = simplex[-1]
        reflected = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        fr = f(reflected)
        if fr < values[0]:
            expanded = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (x - b) for b, x in zip(best, p, strict=True)] for p in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(len(simplex)), key=values.__getitem__)]


def fit(rows: list[Row]) -> dict[str, float]:
    names = list(FITTED)
    # Search in the unit box: each constant as a fraction of its range, clamped.
    def values(x: list[float]) -> dict[str, float]:
        return {n: FITTED[n][0] + min(1.0, max(0.0, v)) * (FITTED[n][1] - FITTED[n][0])
                for n, v in zip(names, x, strict=True)}

    def objective(x: list[float]) -> float:
        with constants(values(x)):
            return loss(errors(rows))

    # From the middle of the box, then restarted from the best point (a simplex stuck on a clamped edge
    # stops moving).
    best = [0.5] * len(names)
    for scale in (0.25, 0.1, 0.05):
        best = nelder_mead(objective, [min(1.0, max(0.0, v)) for v in best], [scale] * len(names))
    return values(best)


def report(rows: list[Row]) -> None:
    errs = errors(rows)
    print(f"{'table':<17} {'model, GPU, parallelism, precision':<48} {'ISL/OSL':>11} {'published':>10} "
          f"{'model':>10} {'error':>7}")
    for row, e in zip(rows, errs, strict=True):
        unit = "/GPU" if row.per_gpu else ""
        print(f"{row.table:<17} {row.label:<48} {f'{row.isl}/{row.osl}':>11} {row.published:>10,.0f} "
              f"{row.published * (1 + e):>10,.0f} {100 * e:>+6.1f}%{unit}")
    print()
    for table in dict.fromkeys(r.table for r in rows):
        share, mae = summary([e for r, e in zip(rows, errs, strict=True) if r.table == table])
        count = sum(r.table == table for r in rows)
        print(f"{table:<17} {count:>4} rows: {100 * share:5.1f}% within 15%, MAE {100 * mae:4.1f}%")
    share, mae = summary(errs)
    print(f"{'all':<17} {len(rows):>4} rows: {100 * share:5.1f}% within 15%, MAE {100 * mae:4.1f}%")
    print("\nConfigurations off by more than 15% on average (mean signed error, rows outside 15%):")
    groups: dict[str, list[float]] = {}
    for row, e in zip(rows, errs, strict=True):
        groups.setdefault(row.label, []).append(e)
    for label, es in sorted(groups.items(), key=lambda g: -sum(abs(e) for e in g[1]) / len(g[1])):
        if sum(abs(e) for e in es) / len(es) > WITHIN:
            print(f"  {label:<48} {100 * sum(es) / len(es):+6.1f}%  {sum(abs(e) > WITHIN for e in es)}/{len(es)}")


# Step times measured on another serving stack (README.md, "Prefill and decode step times": the Splitwise
# simulator's profile of Llama-2-70B FP16 on H100): a second, latency table with its own check
# (tests/unit/test_performance_model.py holds TP2/TP4 prefill to 20%).
SPLITWISE_MS = {2: (83.8, 310, 1340, 37.0, 42.0, 52.3), 4: (59.6, 201, 954, 29.7, 32.8, 36.9),
                8: (53.4, 137, 845, 29.8, 34.2, 38.6)}


def step_times() -> None:
    labels = ("Prefill 512", "Prefill 2048", "Prefill 8192", "Decode b1", "Decode b16", "Decode b32")
    print("\nStep times, Llama-2-70B FP16 on H100 (Splitwise's measurements), ms, model / published:")
    print(f"{'':<14}" + "".join(f"{f'TP{tp}':>24}" for tp in SPLITWISE_MS))
    cells: list[list[str]] = [[] for _ in labels]
    for tp, published in SPLITWISE_MS.items():
        replica = ReplicaModel(MODELS["Llama-2-70B"], GPUS["H100-SXM"], precision="fp16", tp=tp)
        predicted = (replica.prefill_seconds(512), replica.prefill_seconds(2048), replica.prefill_seconds(8192),
                     replica.decode_seconds(1, 512), replica.decode_seconds(16, 512), replica.decode_seconds(32, 512))
        for cell, p, m in zip(cells, predicted, published, strict=True):
            cell.append(f"{p * 1e3:.1f} / {m:g} ({100 * (p * 1e3 / m - 1):+.0f}%)")
    for label, cell in zip(labels, cells, strict=True):
        print(f"{label:<14}" + "".join(f"{c:>24}" for c in cell))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="search the efficiency constants and print them")
    args = parser.parse_args()
    rows = load_rows()
    if args.fit:
        began = time.process_time()
        best = fit(rows)
        for name, value in best.items():
            print(f"{name} = {value:.4g}")
        print(f"({time.process_time() - began:.1f} s CPU)\n")
        with constants(best):
            report(rows)
        return
    report(rows)
    step_times()


if __name__ == "__main__":
    main()
