"""What the factory runs: the ModelDeployments, the traffic each one gets, and how time is compressed.

Compression ``C`` (docs/factory.md, "Compressed time"): the trace's arrivals are ``C`` times closer and
thinned to ``1/C`` (so the request rate is the trace's own, times ``rate``, and an hour of its ups and
downs passes in ``60/C`` minutes); the emulated engines run in real time (so every TTFT, ITL and
tokens/s is a real-time figure); what waits on the clock is divided by ``C``: the engine load time, the
pods' probe periods and grace, the autoscaler's tick and stabilisation window, Prometheus' scrape
interval and the autoscaler's rate windows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controllers.simulation.trace import TraceRequest, compress, load, multiply, require_window
from crds.gpus import GPU_PRODUCTS, known_product


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(Strict):
    """From ``at`` seconds of wall time on, the trace's rate times ``rate``."""

    at: float = Field(ge=0)
    rate: float = Field(gt=0)


class Traffic(Strict):
    trace: Path
    start: float = Field(0, ge=0, description="Seconds into the trace (its own time) to start from.")
    shape: list[Segment] = Field(min_length=1, description="Rate multipliers over wall time.")


class DeploymentPlan(Strict):
    manifest: Path
    traffic: Traffic


class NodePlan(Strict):
    """A GPU node, by product (``spec.gpu.product``'s names): its label and GPU count come from the one GPU table
    (crds/gpus.py), as GPU feature discovery would set them on such a node."""

    name: str
    product: str = Field(description="A GPU product of crds/gpus.py, e.g. H100-SXM.")
    gpus: int | None = Field(None, ge=1, le=72, description="GPUs of the node; unset: the product's node size "
                             "(8 for HGX boards, 4 for a GB200/GB300 tray).")

    @field_validator("product")
    @classmethod
    def _known(cls, product: str) -> str:
        return known_product(product, "product")

    @property
    def product_label(self) -> str:
        """The ``nvidia.com/gpu.product`` value GPU feature discovery sets (the table's first)."""
        return GPU_PRODUCTS[self.product].node_labels[0]

    @property
    def gpu_count(self) -> int:
        return self.gpus if self.gpus is not None else GPU_PRODUCTS[self.product].gpus_per_node


class Scenario(Strict):
    compression: float = Field(10, ge=1, le=100)
    duration: float = Field(540, gt=0, description="Wall seconds of traffic.")
    nodes: list[NodePlan] = Field(min_length=1)
    deployments: list[DeploymentPlan] = Field(min_length=1)

    @classmethod
    def read(cls, path: Path) -> Scenario:
        raw = yaml.safe_load(path.read_text())
        scenario = cls.model_validate(raw)
        # Paths in the file are relative to it.
        return scenario.model_copy(update={"deployments": [
            d.model_copy(update={"manifest": (path.parent / d.manifest).resolve(), "traffic": d.traffic.model_copy(
                update={"trace": (path.parent / d.traffic.trace).resolve()})}) for d in scenario.deployments]})

    def seconds(self, real: float) -> float:
        """A real-time duration on the compressed clock."""
        return real / self.compression


def shaped_requests(traffic: Traffic, compression: float, duration: float) -> list[TraceRequest]:
    """The trace from ``start``, compressed and thinned (rate x1 on the wall clock), then each segment's
    wall-time slice multiplied by its rate; arrivals in wall seconds from 0, within ``duration``."""
    requests = load(traffic.trace)
    span = duration * compression  # trace seconds the run covers
    window = require_window(requests, traffic.start, span, str(traffic.trace))
    base = compress(multiply(window, 1 / compression), compression)
    out: list[TraceRequest] = []
    edges = [s.at for s in traffic.shape[1:]] + [math.inf]
    for segment, end in zip(traffic.shape, edges, strict=True):
        part = [r for r in base if segment.at <= r.arrival < min(end, duration)]
        if part:
            out += [r for r in multiply(part, segment.rate) if r.arrival < min(end, duration)]
    return sorted(out, key=lambda r: r.arrival)


def compressed_manifest(manifest: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """The ModelDeployment with its clock-bound autoscaling settings divided by the compression."""
    spec = manifest.setdefault("spec", {})
    scaling = spec.setdefault("autoscaling", {})
    scaling["tickSeconds"] = max(1, round(scenario.seconds(scaling.get("tickSeconds", 15))))
    scaling["scaleDownStabilizationSeconds"] = max(
        1, round(scenario.seconds(scaling.get("scaleDownStabilizationSeconds", 300))))
    return manifest
