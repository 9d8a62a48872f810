"""What the person at the terminal sees: per ModelDeployment its replicas, throughput, latency against the
SLO and the autoscaler's last decision, refreshed every second; and the summary at the end."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from controllers.factory.traffic import Result, Stats, percentile


@dataclass
class Sample:
    at: float
    desired: int
    ready: int
    loading: int
    gpus: int


@dataclass
class Timeline:
    """Per deployment, what the view saw each second: the scale-ups and downs, GPU-seconds."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, name: str, sample: Sample) -> None:
        self.samples.setdefault(name, []).append(sample)

    def changes(self, name: str) -> tuple[int, int]:
        ups = downs = 0
        previous = None
        for sample in self.samples.get(name, []):
            if previous is not None and sample.desired > previous:
                ups += 1
            elif previous is not None and sample.desired < previous:
                downs += 1
            previous = sample.desired
        return ups, downs

    def gpu_seconds(self, name: str) -> float:
        points = self.samples.get(name, [])
        return sum(a.gpus * (b.at - a.at) for a, b in itertools.pairwise(points))


def slo_of(md: dict[str, Any]) -> tuple[float, float]:
    slo = ((md.get("spec") or {}).get("autoscaling") or {}).get("slo") or {}
    return slo.get("ttftMilliseconds", 2000) / 1e3, slo.get("interTokenLatencyMilliseconds", 100) / 1e3


def within_slo(result: Result, ttft_target: float, itl_target: float) -> bool:
    return (result.error is None and result.ttft is not None and result.ttft <= ttft_target
            and (result.itl is None or result.itl <= itl_target))


def replica_counts(md: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[int, int, int]:
    status = md.get("status") or {}
    ready = sum(1 for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                       for c in (p.get("status") or {}).get("conditions") or []))
    loading = sum(1 for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")
                  and not (p.get("metadata") or {}).get("deletionTimestamp")) - ready
    return int(status.get("desiredReplicas") or 0), ready, max(0, loading)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.0f}"


def live_table(elapsed: float, duration: float, rows: list[dict[str, Any]], gpus_used: int, gpus_total: int,
               compression: float) -> Table:
    table = Table(title=f"Tokenworks factory: {elapsed:,.0f} / {duration:,.0f} s (time x{compression:g}); "
                        f"GPUs in use {gpus_used} of {gpus_total}", expand=True)
    for column in ("deployment", "desired", "ready", "loading", "out tok/s", "TTFT p95 ms", "ITL p95 ms",
                   "in SLO", "last decision"):
        table.add_column(column, overflow="fold")
    for row in rows:
        ttft_ok = row["ttft_p95"] is None or row["ttft_p95"] <= row["ttft_target"]
        itl_ok = row["itl_p95"] is None or row["itl_p95"] <= row["itl_target"]
        table.add_row(
            row["name"], str(row["desired"]), str(row["ready"]), str(row["loading"]),
            f"{row['tokens_per_second']:,.0f}",
            f"[{'green' if ttft_ok else 'red'}]{_ms(row['ttft_p95'])}[/] / {_ms(row['ttft_target'])}",
            f"[{'green' if itl_ok else 'red'}]{_ms(row['itl_p95'])}[/] / {_ms(row['itl_target'])}",
            "-" if row["attainment"] is None else f"{row['attainment']:.1%}", row["decision"])
    return table


def window_row(name: str, md: dict[str, Any], pods: list[dict[str, Any]], stats: Stats, elapsed: float,
               window: float = 10.0) -> dict[str, Any]:
    """The live figures of the last ``window`` seconds, from the clients' own measurements."""
    ttft_target, itl_target = slo_of(md)
    recent = [r for r in stats.recent(elapsed) if r.sent_at >= elapsed - window]
    done = [r for r in recent if r.error is None and r.ttft is not None]
    desired, ready, loading = replica_counts(md, pods)
    decision = ((md.get("status") or {}).get("lastScalingDecision") or {})
    return {
        "name": name, "desired": desired, "ready": ready, "loading": loading,
        "tokens_per_second": sum(r.received for r in recent) / window,
        "ttft_p95": percentile([r.ttft for r in done if r.ttft is not None], 0.95),
        "itl_p95": percentile([r.itl for r in done if r.itl is not None], 0.95),
        "ttft_target": ttft_target, "itl_target": itl_target,
        "attainment": (sum(within_slo(r, ttft_target, itl_target) for r in recent) / len(recent)) if recent else None,
        "decision": (f"{decision.get('replicas')}: {decision.get('reason', '')}"[:120]) if decision else "-",
    }


def summary(name: str, md: dict[str, Any], results: list[Result], timeline: Timeline,
            compression: float) -> dict[str, Any]:
    """One deployment's figures over the whole run, for the table and ``factory.json``."""
    ttft_target, itl_target = slo_of(md)
    done = [r for r in results if r.error is None and r.ttft is not None]
    ups, downs = timeline.changes(name)
    gpu_seconds = timeline.gpu_seconds(name)
    return {
        "name": name,
        "requests": len(results),
        "errors": sum(1 for r in results if r.error is not None),
        "output_tokens": sum(r.received for r in results),
        "ttft_p95_seconds": percentile([r.ttft for r in done if r.ttft is not None], 0.95),
        "itl_p95_seconds": percentile([r.itl for r in done if r.itl is not None], 0.95),
        "ttft_target_seconds": ttft_target, "itl_target_seconds": itl_target,
        "slo_attainment": (sum(within_slo(r, ttft_target, itl_target) for r in results) / len(results))
        if results else None,
        "scale_ups": ups, "scale_downs": downs,
        "gpu_hours_wall": gpu_seconds / 3600,
        # The trace's own clock runs C times faster than the wall's: what the same fleet would have cost.
        "gpu_hours_trace_time": gpu_seconds * compression / 3600,
        "max_replicas": max((s.desired for s in timeline.samples.get(name, [])), default=0),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Factory summary", expand=True)
    for column in ("deployment", "requests", "errors", "TTFT p95 ms", "ITL p95 ms", "SLO attainment",
                   "scale ups / downs", "max replicas", "GPU-hours (trace time)"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], f"{row['requests']:,}", f"{row['errors']:,}",
                      f"{_ms(row['ttft_p95_seconds'])} / {_ms(row['ttft_target_seconds'])}",
                      f"{_ms(row['itl_p95_seconds'])} / {_ms(row['itl_target_seconds'])}",
                      "-" if row["slo_attainment"] is None else f"{row['slo_attainment']:.1%}",
                      f"{row['scale_ups']} / {row['scale_downs']}", str(row["max_replicas"]),
                      f"{row['gpu_hours_trace_time']:.2f}")
    return table
