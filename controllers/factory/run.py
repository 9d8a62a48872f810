"""`tokenworks factory up`: the real control plane, the operator as its own ServiceAccount with leader
election, the node agent's GPU nodes running emulator twins, a real Prometheus discovering the pods from
the PodMonitors, ModelDeployments applied and traces replayed against them (docs/factory.md).

Everything it starts is recorded by process id in ``<workdir>/factory.json`` and stopped on the way out
(the end of the scenario, Ctrl-C, an error) or by ``tokenworks factory down``; a run first stops what a
previous one left and starts from an empty work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client
from pydantic import ValidationError

from controllers.factory.monitoring import prometheus_config
from controllers.factory.plane import REPO_ROOT, ControlPlane, binary, free_port
from controllers.factory.scenario import Scenario, compressed_manifest, shaped_requests
from controllers.factory.traffic import EndpointWatcher, Replayer, Router, Stats
from controllers.nodeagent import AgentNode, NodeAgent, rbac_objects
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods.performance import ReplicaModel
from inference_pods.templates import INSTANCE_LABEL

log = logging.getLogger("tokenworks.factory")
OPERATOR_NAMESPACE = "tokenworks-system"
OPERATOR_ACCOUNT = "tokenworks-operator"
AGENT_ACCOUNT = "tokenworks-node-agent"
DEMO_NAMESPACE = "factory"
POD_MONITOR_CRD = REPO_ROOT / "tests" / "fixtures" / "crds" / "monitoring.coreos.com" / \
    "monitoring.coreos.com_podmonitors.yaml"


class FactoryError(RuntimeError):
    """A component of the factory could not start or the input is wrong; the message names which."""


def default_workdir() -> Path:
    cache = os.environ.get("TOKENWORKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tokenworks")
    return Path(cache) / "factory"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22): with the pid it
    names one process, so a pid reused after a crash or a reboot is not taken for the factory's."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(FileNotFoundError, IndexError):
        # A zombie is gone for every purpose here.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _stop(pids: list[int], timeout: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def stop_recorded(workdir: Path) -> list[int]:
    """Stop what a factory recorded in ``factory.json``: the factory first (it stops its own children in
    order), then whatever of them is left; only processes whose start time matches the record. The ids
    it signalled."""
    state = workdir / "factory.json"
    try:
        recorded = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    started = recorded.get("started") or {}

    def ours(pid: Any) -> bool:
        return isinstance(pid, int) and pid != os.getpid() and _alive(pid) \
            and _started(pid) is not None and _started(pid) == started.get(str(pid))

    factory = [p for p in [recorded.get("pid")] if ours(p)]
    _stop(factory, 60)
    children = [p for p in recorded.get("children", []) if ours(p)]
    _stop(children, 20)
    return factory + children


@dataclass
class Deployment:
    namespace: str
    name: str
    backend: str
    manifest: dict[str, Any]
    router: Router = field(default_factory=Router)
    stats: Stats = field(default_factory=Stats)
    replayer: Replayer | None = None


class Factory:
    def __init__(self, scenario: Scenario, workdir: Path, out: Path, say: Callable[[str], None]) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.out = out
        self.say = say
        self.plane: ControlPlane | None = None
        self.agent: NodeAgent | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.prometheus: subprocess.Popen[bytes] | None = None
        self.prometheus_port = 0
        self.operator_metrics_port = 0
        self.deployments: list[Deployment] = []
        # Every deployment's requests, read before anything starts: a trace that does not parse stops the
        # run before a process exists.
        self.requests = [shaped_requests(plan.traffic, scenario.compression, scenario.duration)
                         for plan in scenario.deployments]
        self.stopping = threading.Event()  # the whole factory
        self.traffic_over = threading.Event()
        self.started_at = 0.0
        self.started_wall = 0.0
        self._monitors: list[dict[str, Any]] | None = None

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "prometheus"):
            binary(name)  # a missing binary is named before anything starts
        stop_recorded(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self._record()
        started = time.monotonic()
        self.say("control plane: etcd, kube-apiserver, controller manager, scheduler")
        self.plane = ControlPlane(self.workdir / "plane").start()
        self._record()
        self.plane.start_full(kwok=False)
        self._record()
        plane = self.plane
        for path in (REPO_ROOT / "crds" / "modeldeployment.yaml", POD_MONITOR_CRD):
            plane.kubectl("apply", "--server-side", "-f", str(path))
        plane.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.tokenworks.dev",
                      "crd/podmonitors.monitoring.coreos.com", "--timeout=60s")
        plane.kubectl("apply", "-f", str(REPO_ROOT / "operator" / "namespace.yaml"))
        plane.kubectl("apply", "-f", str(REPO_ROOT / "operator" / "rbac.yaml"))
        for obj in rbac_objects(OPERATOR_NAMESPACE, AGENT_ACCOUNT):
            plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
        plane.kubectl("create", "namespace", DEMO_NAMESPACE)

        plans = self.scenario.nodes
        self.say(f"node agent: {', '.join(f'{n.name} ({n.gpu_count} x {n.product_label})' for n in plans)}")
        nodes = [AgentNode(n.name, n.product_label, n.gpu_count, octet=100 + i) for i, n in enumerate(plans)]
        self.agent = NodeAgent(plane.api_client(self._token(AGENT_ACCOUNT)), nodes, self.workdir / "pods",
                               emulator_args_for=self._emulator_args, time_scale=self.scenario.compression,
                               on_event=lambda m: log.info("%s", m)).start()

        self.say("prometheus: scraping the PodMonitors' pods and the operator")
        self.operator_metrics_port = free_port()
        self._start_prometheus()
        self.say("operator: its own ServiceAccount, leader election, autoscaler reading Prometheus")
        self._start_operator()
        threading.Thread(target=self._follow_monitors, daemon=True, name="podmonitors").start()

        for plan in self.scenario.deployments:
            manifest = yaml.safe_load(plan.manifest.read_text())
            manifest.setdefault("metadata", {})["namespace"] = DEMO_NAMESPACE
            manifest = compressed_manifest(manifest, self.scenario)
            md = ModelDeployment.model_validate(manifest)
            # Known before its first pod can be bound: the agent asks for its compressed load time.
            self.deployments.append(Deployment(DEMO_NAMESPACE, md.name, md.spec.engine.backend, manifest))
            result = plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
            if "created" not in result and "configured" not in result and "unchanged" not in result:
                raise FactoryError(f"{plan.manifest}: the API server rejected it: {result.strip()}")
        self.say(f"up in {time.monotonic() - started:.0f} s: {len(self.deployments)} ModelDeployments applied "
                 f"(KUBECONFIG={plane.kubeconfig})")

    def _token(self, account: str) -> str:
        assert self.plane is not None
        token: str = client.CoreV1Api(self.plane.api_client()).create_namespaced_service_account_token(
            account, OPERATOR_NAMESPACE, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=24 * 3600))).status.token
        return token

    def _emulator_args(self, pod: dict[str, Any]) -> list[str]:
        """The engine's load time, compressed: the pod's ModelDeployment's modelled time over C."""
        owner = ((pod.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL)
        for deployment in self.deployments:
            if deployment.name == owner:
                md = ModelDeployment.model_validate(deployment.manifest)
                seconds = ReplicaModel.for_spec(md.spec).load_seconds()
                return [f"--load-seconds={self.scenario.seconds(seconds):.2f}"]
        return []

    def interval(self) -> str:
        return f"{max(1, round(self.scenario.seconds(15)))}s"

    def _start_prometheus(self) -> None:
        assert self.plane is not None
        directory = self.workdir / "prometheus"
        directory.mkdir()
        self.prometheus_port = free_port()
        self._write_prometheus_config([])
        log_file = (directory / "prometheus.log").open("ab")
        self.prometheus = subprocess.Popen(
            [str(binary("prometheus")), f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
             "--log.level=warn"], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        self._record()
        self._wait(lambda: httpx.get(f"{self.prometheus_url}/-/ready", timeout=1).status_code == 200,
                   "prometheus", self.prometheus, directory / "prometheus.log")

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def _write_prometheus_config(self, monitors: list[dict[str, Any]]) -> None:
        assert self.plane is not None
        config = prometheus_config(monitors, self.plane.kubeconfig, self.interval(),
                                   [f"127.0.0.1:{self.operator_metrics_port}"])
        path = self.workdir / "prometheus" / "prometheus.yml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        os.replace(tmp, path)

    def _follow_monitors(self) -> None:
        """The Prometheus Operator's job, for the factory: PodMonitors in, scrape configs out, reload."""
        assert self.plane is not None
        api = client.CustomObjectsApi(self.plane.api_client())
        said: set[str] = set()
        while not self.stopping.wait(1):
            try:
                listed = api.list_cluster_custom_object("monitoring.coreos.com", "v1", "podmonitors")
                monitors = [{"metadata": m["metadata"], "spec": m.get("spec") or {}} for m in listed["items"]]
                if monitors != self._monitors and self.prometheus is not None:
                    self._write_prometheus_config(monitors)
                    self.prometheus.send_signal(signal.SIGHUP)
                    self._monitors = monitors
            except Exception as error:  # the API server restarting; each distinct failure said once
                if (text := f"{type(error).__name__}: {error}") not in said:
                    said.add(text)
                    log.warning("following the PodMonitors failed: %s", text)

    def _start_operator(self) -> None:
        assert self.plane is not None
        kubeconfig = self.plane.kubeconfig_for_token(
            self._token(OPERATOR_ACCOUNT), self.workdir / "operator.kubeconfig",
            user=f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}")
        health = free_port()
        # A rate needs two samples in its window: at least three scrape intervals, whatever the compression.
        scrape = max(1, round(self.scenario.seconds(15)))
        window = f"{max(4 * scrape, round(self.scenario.seconds(120)))}s"
        short = f"{max(3 * scrape, round(self.scenario.seconds(30)))}s"
        log_path = self.workdir / "operator.log"
        with log_path.open("ab") as log_file:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "controllers.cli", "operator", "run", f"--kubeconfig={kubeconfig}",
                 "--identity=factory-operator", f"--metrics-port={self.operator_metrics_port}",
                 f"--health-port={health}", f"--prometheus-url={self.prometheus_url}",
                 f"--autoscaler-tick={max(1.0, self.scenario.seconds(5)):.1f}", f"--prometheus-window={window}",
                 f"--prometheus-short-window={short}", "--resync-seconds=30"],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._record()
        self._wait(lambda: httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=1).json().get("leader") is True,
                   "operator", self.operator, log_path)

    def _wait(self, ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log_path: Path,
              timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise FactoryError(f"{what} exited with {process.returncode}: "
                                   + " | ".join(log_path.read_text(errors="replace").splitlines()[-5:]))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if ready():
                    return
            time.sleep(0.2)
        raise FactoryError(f"{what} was not ready within {timeout:.0f} s (log: {log_path})")

    def _record(self) -> None:
        """Every process id this factory started, for `factory down` and the next run."""
        children = [c.process.pid for c in (self.plane.components if self.plane else []) if c.process]
        children += [p.pid for p in (self.operator, self.prometheus) if p is not None]
        children += self.agent.processes() if self.agent else []
        pids = [os.getpid(), *children]
        state = {"pid": os.getpid(), "children": children,
                 "started": {str(p): t for p in pids if (t := _started(p)) is not None},
                 "kubeconfig": str(self.plane.kubeconfig) if self.plane else None,
                 "prometheus": self.prometheus_url if self.prometheus_port else None}
        # Whole or not at all: `factory down` may read it at any moment.
        tmp = self.workdir / "factory.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.workdir / "factory.json")

    # -- traffic -----------------------------------------------------------------------------
    def run_traffic(self, tick: Callable[[float], None] | None = None) -> None:
        """Replay each deployment's traffic for the scenario's duration; ``tick`` is called about once a
        second with the wall seconds since the start (the live view)."""
        assert self.plane is not None
        def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
            return self.pods(namespace, selector)

        routers = {(d.namespace, d.name): d.router for d in self.deployments}
        watcher = EndpointWatcher(list_pods, routers).start()
        for d, requests in zip(self.deployments, self.requests, strict=True):
            d.replayer = Replayer(d.name, d.backend, requests, d.router, d.stats)
        loop = asyncio.new_event_loop()
        self.started_at = time.monotonic()
        self.started_wall = time.time()

        async def main() -> None:
            def stop() -> bool:
                return self.traffic_over.is_set() or self.stopping.is_set()

            await asyncio.gather(*(d.replayer.run(self.started_at, stop) for d in self.deployments if d.replayer))

        runner = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True, name="traffic")
        runner.start()
        try:
            while runner.is_alive() and not self.stopping.is_set():
                runner.join(1)
                self._record()
                if tick:
                    tick(time.monotonic() - self.started_at)
        finally:
            watcher.stop()
            self.traffic_over.set()  # the replayers stop sending; their streams end within their timeout
            runner.join(30)
            if not runner.is_alive():
                loop.close()

    # -- stop --------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()
        if self.agent:
            self.agent.stop(delete_nodes=False)
        for process in (self.operator, self.prometheus):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.plane:
            self.plane.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "factory.json").unlink()

    # -- reading the factory's state ----------------------------------------------------------
    def model_deployments(self) -> list[dict[str, Any]]:
        assert self.plane is not None
        listed = client.CustomObjectsApi(self.plane.api_client()).list_namespaced_custom_object(
            API_VERSION.split("/")[0], API_VERSION.split("/")[1], DEMO_NAMESPACE, KIND.lower() + "s")
        return list(listed["items"])

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        """Raw JSON: the client's typed models cost a core's worth of CPU at the view's once a second."""
        assert self.plane is not None
        response = client.CoreV1Api(self.plane.api_client()).list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
        result: list[dict[str, Any]] = body["data"]["result"] if body.get("status") == "success" else []
        return result


def up(scenario_path: Path, out: Path, keep: bool, headless: bool, workdir: Path | None = None,
       console: Any = None, watch: Callable[[Factory, float], None] | None = None) -> dict[str, Any]:
    """Start the factory, run the scenario with the live view, write ``out/factory.json``; with ``keep``
    stay up (until SIGTERM or Ctrl-C) for kubectl. Everything started is stopped on every way out.
    ``watch`` is called each second of the traffic with the factory and the elapsed seconds (tests)."""
    from rich.console import Console
    from rich.live import Live

    from controllers.factory.view import Sample, Timeline, live_table, summary, summary_table, window_row

    console = console or Console()
    try:
        scenario = Scenario.read(scenario_path)
    except (OSError, ValueError) as error:
        raise FactoryError(f"{scenario_path}: {error}") from error
    for plan in scenario.deployments:
        if not plan.traffic.trace.exists():
            raise FactoryError(f"{plan.traffic.trace}: no such trace (scenario {scenario_path})")
    for plan in scenario.deployments:
        try:
            manifest = yaml.safe_load(plan.manifest.read_text())
            ModelDeployment.model_validate({**manifest, "metadata": {
                **(manifest.get("metadata") or {}), "namespace": DEMO_NAMESPACE}})
        except ValidationError as error:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
            raise FactoryError(f"{plan.manifest}: not a ModelDeployment: {reasons}") from error
        except (OSError, ValueError, TypeError) as error:
            raise FactoryError(f"{plan.manifest}: not a ModelDeployment: {' '.join(str(error).split())}") from error
    factory = Factory(scenario, workdir or default_workdir(), out, lambda m: console.print(f"[bold]factory[/] {m}"))
    timeline = Timeline()
    terminated = threading.Event()

    def on_term(signum: int, _frame: Any) -> None:
        terminated.set()
        factory.stopping.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        factory.start()
        assert factory.plane is not None
        total_gpus = sum(n.gpu_count for n in scenario.nodes)
        live = None if headless else Live(console=console, refresh_per_second=1)

        def tick(elapsed: float) -> None:
            models = {m["metadata"]["name"]: m for m in factory.model_deployments()}
            pods = factory.pods(DEMO_NAMESPACE)
            rows = []
            for d in factory.deployments:
                md = models.get(d.name, {})
                own = [p for p in pods if (p["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == d.name]
                row = window_row(d.name, md, own, d.stats, elapsed)
                gpus = int((md.get("status") or {}).get("gpus") or 0)
                timeline.add(d.name, Sample(elapsed, row["desired"], row["ready"], row["loading"], gpus))
                rows.append(row)
            used = sum(int((m.get("status") or {}).get("gpus") or 0) for m in models.values())
            if live is not None:
                live.update(live_table(elapsed, scenario.duration, rows, used, total_gpus, scenario.compression))
            if watch is not None:
                watch(factory, elapsed)

        if live is not None:
            live.start()
        try:
            factory.run_traffic(tick)
        finally:
            if live is not None:
                live.stop()
        if terminated.is_set():
            return {}  # stopped from outside (`factory down`): no summary against a plane going away
        models = {m["metadata"]["name"]: m for m in factory.model_deployments()}
        rows = [summary(d.name, models.get(d.name, {}), d.stats.all(), timeline, scenario.compression)
                for d in factory.deployments]
        console.print(summary_table(rows))
        out.mkdir(parents=True, exist_ok=True)
        from controllers.factory.panels import render

        dashboards = render(factory.prometheus_url, DEMO_NAMESPACE, [d.name for d in factory.deployments],
                            factory.started_wall, time.time(), float(factory.interval().rstrip("s")), out)
        empty = [f"{board}: {p['title']}" for board, drawn in dashboards.items() for p in drawn["panels"]
                 if not p["series"]]
        console.print("[bold]factory[/] dashboards drawn from the live Prometheus: "
                      + ", ".join(d["png"] for d in dashboards.values())
                      + (f" ({len(empty)} panels without data: {'; '.join(empty)})" if empty else ""))
        report = {"scenario": str(scenario_path), "compression": scenario.compression,
                  "duration_seconds": scenario.duration, "deployments": rows, "dashboards": dashboards,
                  "timeline": {name: [vars(s) for s in samples] for name, samples in timeline.samples.items()}}
        (out / "factory.json").write_text(json.dumps(report, indent=1))
        console.print(f"[bold]factory[/] wrote {out / 'factory.json'}")
        if keep and not terminated.is_set():
            console.print(f"[bold]factory[/] still running: export KUBECONFIG={factory.plane.kubeconfig}; "
                          "then `kubectl get mdep -n factory`, `tokenworks explain -n factory NAME`; "
                          "`tokenworks factory down` (or Ctrl-C here) stops it")
            factory.stopping.wait()
        return report
    finally:
        signal.signal(signal.SIGTERM, previous)
        factory.stop()
