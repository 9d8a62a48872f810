"""What `tokenworks simulate` prints and writes: a terminal table, JSON, and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from controllers.simulation.simulator import Report, SimulationResult


def table(report: Report, title: str) -> Table:
    grid = Table(title=title, title_justify="left", box=None, header_style="bold")
    grid.add_column("FIGURE")
    grid.add_column("VALUE", justify="right")
    rows = [
        ("requests (completed / dropped)", f"{report.requests:,} ({report.completed:,} / {report.dropped:,})"),
        ("SLO attainment (TTFT and mean ITL both met)", f"{100 * report.attainment:.2f}%"),
        ("TTFT p50 / p95 / p99", " / ".join(f"{v * 1e3:,.0f} ms" for v in report.ttft.values())),
        ("ITL p50 / p95 / p99", " / ".join(f"{v * 1e3:,.1f} ms" for v in report.itl.values())),
        ("GPU-hours", f"{report.gpu_hours:.2f}"),
        ("scale events", str(report.scale_events)),
        ("most replicas", str(report.max_replicas)),
    ]
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def write_json(path: Path, report: Report, result: SimulationResult, meta: dict[str, Any]) -> None:
    payload = {"meta": meta, "report": asdict(report),
               "timeline": [{"time": t, "desired": d, "ready": r, "outputTokensPerSecond": o}
                            for t, d, r, o in result.timeline],
               "decisions": [{"time": t, "rule": rule, "reason": reason} for t, rule, reason in result.decisions]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
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
