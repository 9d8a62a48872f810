"""Every query of the three dashboards, substituted as Grafana would, against a real Prometheus scraping emulator
twins under load (a tensorrt-engine and an llmapi ModelDeployment, each scaled 1 -> 2 by the operator) and the
real operator's /metrics: each parses, returns series with the labels its legend prints and only the selected
deployment's, reads nothing an llmapi pod lacks unless it says so; the variables list the deployments; the
GPU-hours and their cost add up."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser as pp
import pytest
import yaml
from kubernetes import client

from dashboards import NAMES, grafana, lint
from dashboards.model import Dashboard
from tests.support.controlplane import REPO_ROOT, ControlPlane, free_port
from tests.support.fleet import Kubelet, Load
from tests.support.operator import OPERATOR_NAMESPACE, OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import eventually

SCRAPE_SECONDS = 1.0
STEP_SECONDS = 2.0  # the step Grafana would pick for a ~2 min range on a ~60-point panel, above the scrape
TICK = 2
BACKENDS = {"engine": "tensorrt-engine", "chat": "llmapi"}
PERCENTILES = {"engine": 0.9, "chat": 0.95}
CAPACITY = 300.0  # output tokens/s per replica: 6 req/s x 64 tokens = 384 -> 2 replicas
RATE = 6.0
GPU_PRICE = "2.50"
# The range the queries cover: long enough for two steps of the GPU-hours' one-minute integral.
MIN_RANGE_SECONDS = 130


@dataclass
class Fleet:
    plane: ControlPlane
    prometheus: PrometheusServer
    namespace: str
    start: float
    end: float


def manifest(name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"]["engine"]["backend"] = BACKENDS[name]
    body["spec"]["ports"] = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    body["spec"]["autoscaling"] = {
        "enabled": True, "minReplicas": 1, "maxReplicas": 2, "tokensPerSecondPerReplica": CAPACITY,
        "tickSeconds": TICK, "scaleDownStabilizationSeconds": 600,
        "slo": {"ttftMilliseconds": 2000, "interTokenLatencyMilliseconds": 100, "percentile": PERCENTILES[name]}}
    return body


def scraped(prometheus: PrometheusServer, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None  # type: ignore[index]


@pytest.fixture(scope="module")
def fleet(full_control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    plane = full_control_plane
    install_api_and_rbac(plane)
    namespace = f"dashboards-{int(time.time()) % 100000}"
    plane.kubectl("create", "namespace", namespace)
    # A PodMonitor's job for the pods; the operator's with honor_labels, so that its per-ModelDeployment series
    # keep their namespace over the operator pod's (docs/monitoring.md).
    prometheus = PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"{SCRAPE_SECONDS:g}s",
                                  jobs={"pods": {}, "operator": {"honor_labels": True}}).start()
    operator = OperatorProcess(plane, service_account_kubeconfig(plane, plane.workdir / "dashboards.kubeconfig"),
                               "dashboards", resync_seconds=5)
    operator.argv += [f"--prometheus-url={prometheus.url}", f"--autoscaler-tick={TICK}",
                      "--prometheus-window=10s", "--prometheus-short-window=5s"]
    operator.start()
    prometheus.set_targets([([f"127.0.0.1:{operator.metrics_port}"], {
        "namespace": OPERATOR_NAMESPACE, "pod": "tokenworks-operator-0", "container": "operator"})], "operator")
    for name in BACKENDS:
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest(name, namespace)))
    kubelet = Kubelet(plane, prometheus, namespace, list(BACKENDS), job="pods").start()
    loads: list[Load] = []
    try:
        eventually(lambda: all(kubelet.urls(n) for n in BACKENDS), timeout=90, interval=1)
        start = time.time() - 5
        loads = [Load(functools.partial(kubelet.urls, name), backend).start(RATE) for name, backend in BACKENDS.items()]
        ns = f'namespace="{namespace}"'

        def both_at_two() -> bool:
            ready = f'tokenworks_modeldeployment_replicas{{{ns}, state="ready"}} == 2'
            return {str(s["metric"]["name"]) for s in prometheus.query(ready)} == set(BACKENDS)  # type: ignore[index]

        # Each scaled up once, and Prometheus has seen both replicas of each ready.
        eventually(both_at_two, timeout=150, interval=1)
        # The autoscaler holds at two on both (a decision per deployment per tick), readings of two replicas in.
        eventually(lambda: (scraped(prometheus, f'sum(increase(tokenworks_autoscaler_decisions_total{{{ns}, '
                                                f'direction="hold"}}[6s]))') or 0) >= 4, timeout=60, interval=1)
        eventually(lambda: time.time() - start >= MIN_RANGE_SECONDS, timeout=MIN_RANGE_SECONDS, interval=1)
        yield Fleet(plane, prometheus, namespace, start, time.time())
    finally:
        for load in loads:
            load.close()
        kubelet.close()
        operator.stop()
        prometheus.stop()
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# -- running a query as Grafana would ------------------------------------------------------------------
def settings(board: Dashboard, fleet: Fleet, deployment: str | None) -> dict[str, str]:
    values = {"namespace": fleet.namespace, "gpu_price": GPU_PRICE}
    if deployment is not None:
        values |= {"deployment": deployment, "percentile": f"{PERCENTILES[deployment]:g}"}
    return {k: v for k, v in values.items() if any(var.name == k for var in board.templating.variables)}


def run(fleet: Fleet, promql: str, instant: bool, step: float) -> list[dict[str, Any]]:
    if instant:
        return fleet.prometheus.query(promql, at=fleet.end)
    return fleet.prometheus.query_range(promql, fleet.start, fleet.end, step)


def optional(parents: tuple[pp.Expr, ...]) -> bool:
    """Under ``... or vector(0)``: the query itself says that no series means zero."""
    return any(isinstance(p, pp.BinaryExpr) and str(p.op) == "or" and isinstance(p.rhs, pp.Call)
               and p.rhs.func.name == "vector" for p in parents)


def under_or(parents: tuple[pp.Expr, ...]) -> bool:
    return any(isinstance(p, pp.BinaryExpr) and str(p.op) == "or" for p in parents)


@dataclass(frozen=True)
class Case:
    dashboard: str
    deployment: str | None  # the Deployment dashboard runs once per deployment

    @property
    def id(self) -> str:
        return f"{self.dashboard}-{self.deployment}" if self.deployment else self.dashboard


CASES = [Case("fleet", None), Case("operator", None), *(Case("deployment", d) for d in BACKENDS)]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_query_returns_what_its_panel_shows(fleet: Fleet, case: Case) -> None:
    raw = lint.load_raw(case.dashboard)
    board = Dashboard.model_validate(raw)
    values = settings(board, fleet, case.deployment)
    llmapi = case.deployment is not None and BACKENDS[case.deployment] == "llmapi"
    failures: list[str] = []
    checked = 0
    for q in lint.queries(raw):
        # Grafana runs an annotation at its own step (60 s unless it sets one).
        step = float((q.step or "60s").removesuffix("s")) if q.panel is None else STEP_SECONDS
        instant = q.instant
        promql = grafana.interpolate(q.expr, values, range_seconds=fleet.end - fleet.start, step_seconds=step,
                                     scrape_interval_seconds=SCRAPE_SECONDS)
        assert not grafana.referenced(promql) - {"1"}, f"{q.where}: unsubstituted {promql}"
        try:
            result = run(fleet, promql, instant, step)  # a query that does not parse fails here (400)
        except AssertionError as error:
            failures.append(f"{q.where}: {error}")
            continue
        checked += 1
        node = pp.parse(promql)
        engine_required = any(lint.is_engine_only(s.name or "") and not under_or(p) for s, p in lint.selectors(node))
        # Each selector on its own: the labels its matchers name hold the selected values, or (an engine-only
        # family on an llmapi pod) nothing at all, as the description says.
        for selector, parents in lint.selectors(node):
            match = f"{selector.name}{selector.matchers}"  # without an offset, which match[] refuses
            series = fleet.prometheus.api("series", {"match[]": match, "start": f"{fleet.start:.3f}",
                                                     "end": f"{fleet.end:.3f}"})
            engine_only = lint.is_engine_only(selector.name or "")
            if llmapi and engine_only and series:
                failures.append(f"{q.where}: {selector} has series on an llmapi pod")
            elif not (llmapi and engine_only) and not optional(parents) and not series:
                failures.append(f"{q.where}: {selector} matches no series")
        if llmapi and engine_required:
            if result:
                failures.append(f"{q.where}: returns series on llmapi, where its family does not exist")
            continue
        if not result:
            failures.append(f"{q.where}: no series for {promql}")
            continue
        printed = grafana.legend_labels(q.legend)
        for series_ in result:
            labels = series_["metric"]
            if missing := printed - set(labels):
                failures.append(f"{q.where}: legend prints {sorted(missing)}, series has {sorted(labels)}")
            if labels.get("namespace") not in (None, fleet.namespace):
                failures.append(f"{q.where}: a series of namespace {labels['namespace']}")
            if case.deployment and labels.get("name") not in (None, case.deployment):
                failures.append(f"{q.where}: a series of deployment {labels['name']}")
            points = [series_["value"]] if instant else series_["values"]
            numbers = [float(v) for _, v in points]
            if not any(math.isfinite(v) for v in numbers):
                failures.append(f"{q.where}: only NaN/Inf: {numbers[:5]}")
    assert checked == len(lint.queries(raw))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", NAMES)
def test_variables_list_the_deployments(fleet: Fleet, name: str) -> None:
    board = Dashboard.model_validate(lint.load_raw(name))
    expected = {"namespace": {fleet.namespace}, "deployment": set(BACKENDS)}
    for deployment in BACKENDS if name == "deployment" else [None]:
        values = settings(board, fleet, deployment)
        if deployment:
            expected["percentile"] = {f"{PERCENTILES[deployment]:g}"}
        for variable in board.templating.variables:
            if variable.type != "query":
                continue
            query = grafana.interpolate(variable.query_text, values, range_seconds=fleet.end - fleet.start,
                                        step_seconds=STEP_SECONDS, scrape_interval_seconds=SCRAPE_SECONDS)
            function, selector, label = grafana.variable_query(query)
            assert function == "label_values" and label
            found = set(fleet.prometheus.label_values(label, selector, fleet.start, fleet.end))
            if variable.name == "namespace":  # other tests' namespaces may be listed too
                assert expected["namespace"] <= found, (variable.name, found)
            else:
                assert found == expected[variable.name], (variable.name, found)


def _instant(fleet: Fleet, name: str, title: str, ref: str = "A", span: float | None = None, **values: str) -> float:
    """The panel's instant value at the end of the fleet's range, over that range or the last ``span`` s."""
    board = Dashboard.model_validate(lint.load_raw(name))
    (target,) = [t for p in board.all_panels() if p.title == title for t in p.targets if t.ref_id == ref]
    promql = grafana.interpolate(target.expr, {**settings(board, fleet, None), **values},
                                 range_seconds=span or fleet.end - fleet.start, step_seconds=STEP_SECONDS,
                                 scrape_interval_seconds=SCRAPE_SECONDS)
    result = fleet.prometheus.query(promql, at=fleet.end)
    assert len(result) == 1, (title, result)
    return float(result[0]["value"][1])  # type: ignore[index]


def test_gpu_hours_and_cost_add_up(fleet: Fleet) -> None:
    """The dashboard integrates the GPUs held at Grafana's step ($__interval); a 1 s integral of the same series
    is the reference: they differ by at most a minute of the most GPUs held (4), the step being far less."""
    hours = _instant(fleet, "fleet", "GPU-hours (range)")
    seconds = round(fleet.end - fleet.start)
    (reference,) = fleet.prometheus.query(
        f'sum_over_time(sum(tokenworks_modeldeployment_gpus{{namespace="{fleet.namespace}", state="requested"}})'
        f"[{seconds}s:1s]) / 3600", at=fleet.end)
    exact = float(reference["value"][1])  # type: ignore[index]
    assert hours > 0 and abs(hours - exact) <= 4 * 60 / 3600, (hours, exact)
    # 2 deployments x 1..2 one-GPU replicas over the range: between 1 and 4 GPUs all along.
    assert 2 * seconds / 3600 * 0.9 <= exact <= 4 * seconds / 3600
    # A range under a minute: a one-minute step had one step or none in it (an empty panel, or a minute of
    # GPUs for 45 s); Grafana's step integrates it to within a step of the 4 GPUs.
    short = _instant(fleet, "fleet", "GPU-hours (range)", span=45)
    (reference,) = fleet.prometheus.query(
        f'sum_over_time(sum(tokenworks_modeldeployment_gpus{{namespace="{fleet.namespace}", state="requested"}})'
        "[45s:1s]) / 3600", at=fleet.end)
    assert abs(short - float(reference["value"][1])) <= 4 * 2 * STEP_SECONDS / 3600, (short, reference)  # type: ignore[index]
    cost = _instant(fleet, "fleet", "GPU cost (range)")
    assert cost == pytest.approx(hours * float(GPU_PRICE))
    assert _instant(fleet, "fleet", "GPU cost (range)", gpu_price="4") == pytest.approx(hours * 4)


def test_attainment_and_ratios_are_shares(fleet: Fleet) -> None:
    for deployment in BACKENDS:
        values = {"deployment": deployment, "percentile": f"{PERCENTILES[deployment]:g}"}
        margin = _instant(fleet, "deployment", "TTFT attainment margin", **values)
        ttft = _instant(fleet, "deployment", "TTFT over target", **values)
        # The share within target is in [0, 1], the attainment target 0.99.
        assert -0.99 <= margin <= 0.01 + 1e-9 and ttft > 0, (deployment, margin, ttft)
    nodes = client.CoreV1Api(fleet.plane.api_client()).list_node().items
    allocatable = sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", 0)) for n in nodes
                      if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                      and not n.spec.unschedulable)
    # 2 deployments x 2 one-GPU replicas, over every Ready node's GPUs (2 x 8 H100 + 8 H200 by default).
    assert _instant(fleet, "fleet", "GPU capacity in use") == pytest.approx(4 / allocatable)


def test_operator_series_keep_their_namespace(fleet: Fleet) -> None:
    """honor_labels: the per-ModelDeployment series carry the ModelDeployment's namespace, the process-level
    ones the operator pod's, so namespace filters select deployments and never hide the control loop."""
    per_md = fleet.prometheus.query(f'tokenworks_modeldeployment_info{{namespace="{fleet.namespace}"}}')
    assert {s["metric"]["name"] for s in per_md} == set(BACKENDS)  # type: ignore[index]
    (leader,) = fleet.prometheus.query("tokenworks_leader")
    assert leader["metric"]["namespace"] == OPERATOR_NAMESPACE  # type: ignore[index]
