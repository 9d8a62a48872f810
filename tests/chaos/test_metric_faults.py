"""Prometheus down, empty, NaN, stale or returning too many series: the replica count holds, never
goes down, and MetricsAvailable=False says why; a healthy idle reading does scale down (the control)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kubernetes import client

from controllers.autoscaling.loop import AutoscalerLoop
from controllers.kube import Kube
from controllers.metrics.prometheus import DEFAULT_DEPLOYMENT_LABEL, PrometheusConfig, PrometheusSource
from crds.models import GROUP, PLURAL, VERSION
from tests.support.controlplane import REPO_ROOT, ControlPlane, free_port
from tests.support.operator import OperatorProcess
from tests.support.waiting import eventually

NAME = "llama-8b"
START = 3
TICK = 30.0

# How a real Prometheus answers each fault, as /api/v1/query bodies for one query.
Answer = Callable[[str, str], tuple[int, dict[str, Any]]]


def vector(namespace: str, values: list[str], extra: list[dict[str, str]] | None = None) -> dict[str, Any]:
    series = [{"metric": {"namespace": namespace, DEFAULT_DEPLOYMENT_LABEL: NAME, **(extra[i] if extra else {})},
               "value": [0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": series}}


def idle(namespace: str, query: str) -> tuple[int, dict[str, Any]]:
    """No traffic, freshly scraped: rates are 0, quantiles over no requests are NaN."""
    if "timestamp(" in query:
        return 200, vector(namespace, ["5"])
    return 200, vector(namespace, ["NaN" if "histogram_quantile" in query else "0"])


FAULTS: dict[str, Answer] = {
    "unavailable": lambda ns, q: (503, {"status": "error", "errorType": "unavailable", "error": "starting"}),
    "empty": lambda ns, q: (200, vector(ns, [])),
    "nan": lambda ns, q: (200, vector(ns, ["NaN"])),
    # The pods stopped being scraped: rate() over old samples, and the newest sample an hour old.
    "stale": lambda ns, q: (200, vector(ns, ["3600" if "timestamp(" in q else "0"])),
    # A second scrape job: two series per ModelDeployment, each with half the load.
    "too-many-series": lambda ns, q: (200, vector(ns, ["0", "0"], [{"job": "a"}, {"job": "b"}])),
}


class FaultyPrometheus:
    """A loopback server speaking Prometheus' HTTP API, answering as ``answer`` says."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.answer: Answer = FAULTS["unavailable"]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                code, body = server.answer(server.namespace, query)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def scaled(chaos_plane: ControlPlane, operator_kubeconfig: Path, chaos_namespace: str) -> Iterator[str]:
    # The operator applies the autoscaler's decisions; its own autoscaler never ticks here.
    process = OperatorProcess(chaos_plane, operator_kubeconfig, "metric-faults", resync_seconds=5,
                              extra_args=("--autoscaler-tick=1000000",)).start()
    try:
        eventually(process.is_leader, timeout=40)
        manifest = yaml.safe_load((REPO_ROOT / "examples" / "llama-8b-h100.yaml").read_text())
        manifest["metadata"]["namespace"] = chaos_namespace
        manifest["spec"]["replicas"] = START
        manifest["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] = 60
        chaos_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        eventually(lambda: replicas(chaos_plane, chaos_namespace) == START, timeout=60)
        yield chaos_namespace
    finally:
        process.stop()


def replicas(plane: ControlPlane, namespace: str) -> int:
    return int(client.AppsV1Api(plane.api_client()).read_namespaced_deployment(NAME, namespace).spec.replicas)


def metrics_condition(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(plane.api_client()).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME)
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "MetricsAvailable"), {})


def test_a_faulty_prometheus_never_scales_down_and_says_so(chaos_plane: ControlPlane, scaled: str) -> None:
    namespace = scaled
    prometheus = FaultyPrometheus(namespace)
    clock = [1_000_000.0]
    source = PrometheusSource(PrometheusConfig(url=prometheus.url, timeout_seconds=2))
    loop = AutoscalerLoop(Kube(chaos_plane.api_client()), source, clock=lambda: clock[0], namespaces=[namespace])

    def run(ticks: int) -> list[int]:
        decided = []
        for _ in range(ticks):
            clock[0] += TICK
            decided.append(loop.tick()[(namespace, NAME)].replicas)
        return decided

    try:
        # Ten minutes of each fault, far past the 60 s scale-down stabilisation.
        for fault, answer in FAULTS.items():
            prometheus.answer = answer
            decided = run(20)
            assert min(decided) >= START, f"{fault}: the count went down: {decided}"
            assert replicas(chaos_plane, namespace) == START, fault
            condition = eventually(lambda: (lambda c: c if c.get("status") == "False" else None)(
                metrics_condition(chaos_plane, namespace)), timeout=10)
            assert condition["message"], fault

        prometheus.close()  # down: connection refused
        assert min(run(20)) >= START, "down"

        # The control: the same loop, told truthfully that nobody is asking, does scale down.
        prometheus = FaultyPrometheus(namespace)
        prometheus.answer = idle
        loop.source = PrometheusSource(PrometheusConfig(url=prometheus.url, timeout_seconds=2))
        assert run(20)[-1] < START, "a healthy idle reading releases replicas"
        eventually(lambda: replicas(chaos_plane, namespace) < START, timeout=30)
    finally:
        prometheus.close()
