"""What `tokenworks simulate` prints and writes: a terminal table, JSON, and PNG plots; for one policy,
or for every policy against the oracle (``--compare``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from controllers.simulation.simulator import Report, SimulationResult

if TYPE_CHECKING:
    from controllers.simulation.policies import PolicyRun

INFEASIBLE = "infeasible (miss the SLO even alone on an idle replica)"
REJECTED = "rejected (over the engine's maxInputLength or sequence length)"


def _share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _ms(seconds: float, digits: int) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:,.{digits}f}"


def table(report: Report, title: str) -> Table:
    grid = Table(title=title, title_justify="left", box=None, header_style="bold")
    grid.add_column("FIGURE")
    grid.add_column("VALUE", justify="right")
    rows = [
        ("requests (completed / dropped)", f"{report.requests:,} ({report.completed:,} / {report.dropped:,})"),
        ("SLO attainment (TTFT and mean ITL both met)", f"{100 * report.attainment:.2f}%"),
        ("SLO attainment of feasible requests", _share(report.feasible_attainment)),
        (INFEASIBLE, _share(report.infeasible)),
        (REJECTED, f"{report.rejected:,}"),
        ("TTFT p50 / p95 / p99", " / ".join(f"{v * 1e3:,.0f} ms" for v in report.ttft.values())),
        ("ITL p50 / p95 / p99", " / ".join(f"{v * 1e3:,.1f} ms" for v in report.itl.values())),
        ("GPU-hours", f"{report.gpu_hours:.2f}"),
        ("scale events", str(report.scale_events)),
        ("most replicas", str(report.max_replicas)),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def _timeline(result: SimulationResult) -> list[dict[str, Any]]:
    return [{"time": t, "desired": d, "ready": r, "outputTokensPerSecond": o} for t, d, r, o in result.timeline]


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    # NaN (a percentile of no completed request) is not JSON: written as null.
    tmp.write_text(json.dumps(_finite(payload), indent=1))
    tmp.replace(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, report: Report, result: SimulationResult, meta: dict[str, Any]) -> None:
    _write(path, {"meta": meta, "report": asdict(report), "rejected": report.rejected,
                  "timeline": _timeline(result),
                  "decisions": [{"time": t, "rule": rule, "reason": reason} for t, rule, reason in result.decisions]})


def oracle_gpu_hours(need: list[int], gpus_per_replica: int) -> float:
    """The oracle runs ``need[m]`` replicas through minute ``m``."""
    return sum(need) * gpus_per_replica / 60


def compare_table(runs: list[PolicyRun], need: list[int], gpus_per_replica: int, goal: float,
                  title: str) -> Table:
    """One row per policy under the oracle's, GPU-hours as a ratio to the oracle's."""
    bound = oracle_gpu_hours(need, gpus_per_replica)
    first = runs[0].report
    caption = (f"{first.requests:,} requests simulated; {_share(first.infeasible)} {INFEASIBLE}; "
               f"{first.rejected:,} {REJECTED}. The oracle knows each minute's arrivals and starts replicas "
               f"instantly, with the fewest that meet the goal for that minute's feasible requests: a lower "
               f"bound no policy reaches.")
    grid = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=None,
                 header_style="bold")
    for name in ("POLICY", "SLO\nMET", "OF\nFEASIBLE", "TTFT ms\np50/p95/p99", "ITL ms\np50/p95/p99", "GPU-\nHOURS",
                 "x\nORACLE", "SCALE\nEVENTS", "MOST\nREPLICAS"):
        grid.add_column(name, justify="left" if name == "POLICY" else "right", no_wrap=True)
    grid.add_row("oracle", "-", f">={100 * goal:g}%/min", "-", "-", f"{bound:.2f}", "1.00", "-",
                 str(max(need, default=0)))
    for run in runs:
        r = run.report
        ratio = f"{r.gpu_hours / bound:.2f}" if bound else "-"
        grid.add_row(run.name, _share(r.attainment), _share(r.feasible_attainment),
                     "/".join(_ms(v, 0) for v in r.ttft.values()), "/".join(_ms(v, 1) for v in r.itl.values()),
                     f"{r.gpu_hours:.2f}", ratio, str(r.scale_events), str(r.max_replicas))
    return grid


def write_compare_json(path: Path, runs: list[PolicyRun], need: list[int], gpus_per_replica: int, goal: float,
                       meta: dict[str, Any]) -> None:
    bound = oracle_gpu_hours(need, gpus_per_replica)
    first = runs[0].report
    _write(path, {
        "meta": meta, "requests": first.requests, "rejected": first.rejected, "infeasible": first.infeasible,
        "oracle": {"goal": goal, "perMinute": need, "gpuHours": bound, "mostReplicas": max(need, default=0)},
        "policies": [{"policy": run.name, "report": asdict(run.report),
                      "ratioToOracle": run.report.gpu_hours / bound if bound else None,
                      "timeline": _timeline(run.result)} for run in runs],
    })


def compare_plot(path: Path, runs: list[PolicyRun], need: list[int], gpus_per_replica: int, title: str) -> None:
    """Each policy's replica count over time against the oracle's per-minute need, and each policy's SLO
    attainment against its GPU-hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (replicas, scatter) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [3, 2]})
    end = max(run.result.duration for run in runs)
    colours = {run.name: plt.get_cmap("tab10")(number % 10) for number, run in enumerate(runs)}
    for run in runs:
        # From the count at time 0 to the run's end: a static policy's first tick comes after the trace.
        points = [(0.0, run.result.initial_replicas)] + [(t, d) for t, d, _, _ in run.result.timeline
                                                         if t <= run.result.duration]
        points.append((run.result.duration, points[-1][1]))
        replicas.step([t / 60 for t, _ in points], [d for _, d in points], where="post", label=run.name,
                      linewidth=1.2, color=colours[run.name])
    if need:
        replicas.step(list(range(len(need) + 1)), [*need, need[-1]], where="post", color="black", linestyle="--",
                      linewidth=1.5, label="oracle (per minute)")
    replicas.set_xlim(0, max(end / 60, len(need)))
    replicas.set_xlabel("minutes")
    replicas.set_ylabel("replicas (desired)")
    replicas.set_title(title, fontsize=9)
    replicas.legend(loc="upper left", fontsize=8, ncol=2)
    # Policies that land on the same point share one label rather than overprinting.
    spots: dict[tuple[float, float], list[str]] = {}
    for run in runs:
        r = run.report
        y = r.feasible_attainment if r.feasible_attainment is not None else r.attainment
        spots.setdefault((round(r.gpu_hours, 3), round(100 * y, 2)), []).append(run.name)
    for number, ((x, y), names) in enumerate(sorted(spots.items())):
        scatter.scatter(x, y, color=colours[names[0]])
        # Alternate above and below, so labels of nearby points overlap less.
        scatter.annotate(", ".join(names), (x, y), fontsize=8, xytext=(5, 4 if number % 2 == 0 else -11),
                         textcoords="offset points")
    bound = oracle_gpu_hours(need, gpus_per_replica)
    scatter.axvline(bound, color="black", linestyle="--", linewidth=1)
    scatter.annotate("oracle", (bound, 1), xycoords=("data", "axes fraction"), fontsize=8, xytext=(4, -12),
                     textcoords="offset points")
    scatter.set_xlabel("GPU-hours")
    scatter.set_ylabel("SLO attainment of feasible requests (%)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def plot(path: Path, result: SimulationResult, ttft_target: float, itl_target: float, title: str) -> None:
    """Load, replicas and latency against targets over time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [t / 60 for t, *_ in result.timeline]
    fig, (load, replicas, latency) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    load.plot(minutes, [o for *_, o in result.timeline], color="tab:blue")
    load.set_ylabel("output tokens/s")
    load.set_title(title, fontsize=9)
    replicas.step(minutes, [d for _, d, _, _ in result.timeline], where="post", label="desired")
    replicas.step(minutes, [r for _, _, r, _ in result.timeline], where="post", label="serving")
    replicas.set_ylabel("replicas")
    replicas.legend(loc="upper left")
    buckets: dict[int, list[tuple[float, float]]] = {}
    for c in result.completed:
        buckets.setdefault(int(c.arrival // 60), []).append((c.ttft, c.itl))
    keys = sorted(buckets)

    def p95(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    latency.plot(keys, [p95([v[0] for v in buckets[k]]) / ttft_target for k in keys], label="TTFT p95 / target")
    latency.plot(keys, [p95([v[1] for v in buckets[k]]) / itl_target for k in keys], label="ITL p95 / target")
    latency.axhline(1.0, color="red", linestyle="--", linewidth=1)
    latency.set_ylabel("share of target")
    latency.set_xlabel("minutes")
    latency.legend(loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
