"""What Grafana would show, drawn without Grafana: every panel of a dashboard (``dashboards/json``) run
against the factory's live Prometheus with the dashboard's own queries, variables substituted as Grafana
substitutes them (``dashboards.grafana.interpolate``), and plotted with matplotlib, one PNG per dashboard.

Time series, state timelines and stats are drawn over the run's range (a stat as its series, with the last
value in the title); tables are drawn as their instant values. Each panel reports how many series its
queries returned, so a caller can tell an empty panel from a full one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dashboards import load
from dashboards.grafana import interpolate
from dashboards.model import Dashboard, Panel

DRAWN = ("timeseries", "stat", "state-timeline", "table", "bargauge", "gauge")


@dataclass
class PanelResult:
    title: str
    kind: str
    series: int = 0
    errors: list[str] = field(default_factory=list)


def _panels(board: Dashboard) -> list[Panel]:
    out: list[Panel] = []
    for panel in board.panels:
        out += [panel, *panel.panels]
    return [p for p in out if p.type in DRAWN and p.targets]


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def run_panels(prometheus_url: str, name: str, variables: dict[str, str], start: float, end: float,
               scrape_interval: float) -> list[tuple[PanelResult, list[tuple[str, list[tuple[float, float]]]]]]:
    """Every drawn panel of dashboard ``name``: its result and its series as (legend, [(t, value)])."""
    board = load(name)
    span = max(1.0, end - start)
    step = max(scrape_interval, span / 240)
    results = []
    with httpx.Client(base_url=prometheus_url, timeout=30) as client:
        for panel in _panels(board):
            outcome = PanelResult(panel.title, panel.type)
            drawn: list[tuple[str, list[tuple[float, float]]]] = []
            for target in panel.targets:
                expr = interpolate(target.expr, variables, range_seconds=span, step_seconds=step,
                                   scrape_interval_seconds=scrape_interval)
                instant = target.is_instant
                params: dict[str, str] = {"query": expr}
                if instant:
                    params["time"] = f"{end:.3f}"
                else:
                    params |= {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
                body = client.get("/api/v1/query" if instant else "/api/v1/query_range", params=params).json()
                if body.get("status") != "success":
                    outcome.errors.append(f"{target.ref_id}: {body.get('error')}")
                    continue
                for series in body["data"]["result"]:
                    points = [series["value"]] if instant else series.get("values", [])
                    values = [(float(t), float(v)) for t, v in points]
                    drawn.append((legend(target.legend_format, series["metric"]), values))
                    outcome.series += 1
            results.append((outcome, drawn))
    return results


def draw(name: str, title: str, panels: list[tuple[PanelResult, list[tuple[str, list[tuple[float, float]]]]]],
         start: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    for index, (result, series) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        ax.set_title(result.title, fontsize=9)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        for label, points in series[:12]:  # a legend past a dozen lines says nothing
            finite = [(t - start, v) for t, v in points if math.isfinite(v)]
            if not finite:
                continue
            if len(finite) == 1 or result.kind == "table":
                ax.bar([label[:24]], [finite[-1][1]])
                ax.tick_params(axis="x", labelsize=6, labelrotation=30)
            else:
                ax.plot([t for t, _ in finite], [v for _, v in finite], label=label[:40], linewidth=1)
        if result.kind != "table" and any(len(p) > 1 for _, p in series):
            ax.set_xlabel("seconds", fontsize=7)
            ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def render(prometheus_url: str, namespace: str, deployments: list[str], start: float, end: float,
           scrape_interval: float, out: Path, gpu_price: str = "2.50") -> dict[str, Any]:
    """The fleet dashboard and one deployment dashboard per deployment as PNGs in ``out``; per dashboard,
    each panel's series count and errors."""
    report: dict[str, Any] = {}
    boards = [("fleet", "fleet", {"namespace": namespace, "gpu_price": gpu_price})]
    boards += [(f"deployment-{d}", "deployment", {"namespace": namespace, "deployment": d}) for d in deployments]
    for key, name, variables in boards:
        if name == "deployment":
            percentile = _percentile(prometheus_url, namespace, variables["deployment"])
            variables = {**variables, "percentile": percentile}
        panels = run_panels(prometheus_url, name, variables, start, end, scrape_interval)
        path = draw(name, f"{load(name).title}: {', '.join(f'{k}={v}' for k, v in variables.items())}", panels,
                    start, out / f"dashboard-{key}.png")
        report[key] = {"png": str(path), "panels": [{"title": r.title, "series": r.series, "errors": r.errors}
                                                   for r, _ in panels]}
    return report


def _percentile(prometheus_url: str, namespace: str, deployment: str) -> str:
    """The hidden ``percentile`` variable as Grafana fills it (label_values of the SLO target)."""
    body = httpx.get(f"{prometheus_url}/api/v1/label/percentile/values", timeout=10, params={
        "match[]": f'tokenworks_modeldeployment_slo_target_seconds{{namespace="{namespace}", name="{deployment}", '
                   'objective="ttft"}'}).json()
    values = body.get("data") or ["0.95"]
    return str(values[0])
