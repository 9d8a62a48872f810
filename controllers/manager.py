"""The operator process: leader election, watches feeding a work queue, reconcile workers, periodic
resync, the autoscaler loop, health endpoints and Prometheus metrics.

Only the leader watches and writes. A standby campaigns for the Lease and takes over within the
lease duration when the leader dies or releases it. Every write is fenced (controllers/leader.py): a
leader whose lease could have passed to another writes nothing, and any end of the elector ends the
process, so two never act at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from controllers.kube import Conflict, Kube, NamespaceTerminating, load_config
from controllers.leader import LeaderElector, NotLeader
from controllers.listening import listening
from controllers.reconcile import Reconciler
from controllers.telemetry import FleetTelemetry
from controllers.watches import Watch
from controllers.workqueue import WorkQueue
from crds.models import API_VERSION, KIND
from inference_pods.templates import CHILD_KINDS, INSTANCE_LABEL, MANAGED_BY

log = logging.getLogger("tokenworks.manager")

RECONCILES = Counter("tokenworks_reconcile_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram("tokenworks_reconcile_duration_seconds", "Reconcile duration.")
CHILD_WRITES = Counter("tokenworks_child_applies_total", "Server-side applies of children.", ["kind"])
STATUS_WRITES = Counter("tokenworks_status_writes_total", "Status subresource writes.")
LEADER = Gauge("tokenworks_leader", "1 while this process is the leader.")
QUEUE_DEPTH = Gauge("tokenworks_workqueue_depth", "Keys waiting to be reconciled.")
TELEMETRY = FleetTelemetry()
REGISTRY.register(TELEMETRY)

CHILD_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# A watch failing this long makes /healthz fail, so the kubelet restarts a process whose watches
# are wedged; an API server outage shorter than this is ridden out.
WATCH_UNHEALTHY_SECONDS = 120

Key = tuple[str, str]


@dataclass
class ManagerConfig:
    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    leader_elect: bool = True
    lease_name: str = "tokenworks-operator"
    lease_namespace: str = "tokenworks-system"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2
    workers: int = 4
    resync_seconds: float = 300
    metrics_port: int = 8080
    health_port: int = 8081
    prometheus_url: str | None = None
    prometheus_token: str | None = None
    prometheus_ca_file: str | None = None
    autoscaler_tick_seconds: float = 5.0  # a pass; each ModelDeployment decides on its own tickSeconds
    prometheus_window: str = "2m"
    prometheus_short_window: str = "30s"
    log_level: str = "info"  # a logging level name, any case
    prometheus_recording_rules: bool = False


class KeyValueFormatter(logging.Formatter):
    """Kubernetes-style structured logs: one line per event, key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f'{stamp} {record.levelname[0]} logger={record.name} msg="{record.getMessage()}"'
        if record.exc_info:
            # The traceback on one line, so a log collector keeps it with its event.
            trace = self.formatException(record.exc_info).replace("\n", " | ")
            line += f' error="{trace}"'
        return line


class Operator:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.api_client = load_config(config.kubeconfig)
        # The audit log then tells the two replicas apart.
        self.api_client.user_agent = f"tokenworks-operator/{config.identity}"
        self.elector: LeaderElector | None = None
        if config.leader_elect:
            from kubernetes import client

            self.elector = LeaderElector(
                client.CoordinationV1Api(self.api_client), config.lease_name, config.lease_namespace,
                config.identity, config.lease_duration, config.renew_deadline, config.retry_period)
        self.kube = Kube(self.api_client, fence=self.elector.fence if self.elector else None)
        self.reconciler = Reconciler(self.kube, telemetry=TELEMETRY)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.leading = threading.Event()
        self.stopping = threading.Event()
        self.finished = threading.Event()  # the process should end: stopped, or leadership over
        self.signalled = threading.Event()  # SIGTERM/SIGINT: a clean stop
        self.watches: list[Watch] = []
        self.threads: dict[str, threading.Thread] = {}

    # -- watches: list+watch, server-side filtered, feeding the queue ----------------------
    def _watches(self) -> list[Watch]:
        queue = self.queue

        def on_model_deployment(obj: dict[str, Any]) -> None:
            queue.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))

        def on_child(obj: dict[str, Any]) -> None:
            owner = (obj["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
            if owner:
                queue.add((obj["metadata"]["namespace"], owner))

        scopes: list[str | None] = list(self.config.namespaces) or [None]
        watches = [Watch(self.kube, API_VERSION, KIND, ns, on_model_deployment, self.stopping)
                   for ns in scopes]
        watches += [Watch(self.kube, k.api_version, k.kind, ns, on_child, self.stopping,
                          label_selector=CHILD_SELECTOR, optional=k.optional,
                          on_served=self.requeue_all if k.optional else None)
                    for k in CHILD_KINDS for ns in scopes]
        return watches

    # -- work ------------------------------------------------------------------------------
    def worker(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get(timeout=1)
            QUEUE_DEPTH.set(len(self.queue))
            if key is None:
                continue
            namespace, name = key
            started = time.monotonic()
            try:
                result = self.reconciler.reconcile(namespace, name)
            except NotLeader:
                # Leadership lapsed mid-reconcile: the write was refused, the next leader does it.
                RECONCILES.labels("not_leader").inc()
            except Conflict:
                RECONCILES.labels("conflict").inc()
                self.queue.retry(key)
            except NamespaceTerminating:
                # The garbage collector removes the ModelDeployment with its namespace; retrying only
                # fills the log.
                RECONCILES.labels("skipped").inc()
                log.info("skipped reconcile object=%s/%s reason=NamespaceTerminating", namespace, name)
            except Exception:
                RECONCILES.labels("error").inc()
                delay = self.queue.retry(key)
                log.exception("reconcile failed object=%s/%s retry_in=%.1fs", namespace, name, delay)
            else:
                RECONCILES.labels("success").inc()
                self.queue.forget(key)
                if result.requeue_after is not None:
                    # What can change without a watch event (an optional API returning, a node for a
                    # pending replica) is looked at again soon, not at the next resync.
                    self.queue.add_after(key, result.requeue_after)
                for applied in result.applied:
                    CHILD_WRITES.labels(applied.split("/")[0]).inc()
                if result.status_written:
                    STATUS_WRITES.inc()
                if result.applied or result.status_written:
                    log.info("reconciled object=%s/%s applied=%s status_written=%s problems=%s",
                             namespace, name, ",".join(result.applied) or "-", result.status_written,
                             ",".join(p.reason for p in result.problems) or "-")
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.queue.done(key)

    def requeue_all(self) -> None:
        scopes: list[str | None] = list(self.config.namespaces) or [None]
        for namespace in scopes:
            for item in self.kube.list(API_VERSION, KIND, namespace):
                self.queue.add((item["metadata"]["namespace"], item["metadata"]["name"]))

    def resync(self) -> None:
        """Re-queue every ModelDeployment periodically: level-triggered, so drift is repaired even
        when a watch event was missed."""
        while not self.stopping.wait(self.config.resync_seconds):
            try:
                self.requeue_all()
            except Exception:
                log.exception("resync list failed")

    def autoscale(self) -> None:
        """The autoscaler loop, leader only: one tick every ``autoscaler_tick_seconds``."""
        from controllers.autoscaling.loop import AutoscalerLoop
        from controllers.metrics import MetricSource, UnconfiguredSource
        from controllers.metrics.prometheus import PrometheusConfig, PrometheusSource

        source: MetricSource = UnconfiguredSource()
        if self.config.prometheus_url:
            source = PrometheusSource(PrometheusConfig(
                url=self.config.prometheus_url, bearer_token=self.config.prometheus_token,
                ca_file=self.config.prometheus_ca_file, window=self.config.prometheus_window,
                short_window=self.config.prometheus_short_window,
                recording_rules=self.config.prometheus_recording_rules))
        loop = AutoscalerLoop(self.kube, source, namespaces=self.config.namespaces)
        while not self.stopping.wait(self.config.autoscaler_tick_seconds):
            try:
                loop.tick()
            except Exception:
                log.exception("autoscaler tick failed")

    # -- leader election -------------------------------------------------------------------
    def elect(self) -> None:
        elector = self.elector
        assert elector is not None

        def on_started() -> None:
            self.leading.set()

        def on_stopped(led: bool) -> None:
            self.leading.clear()
            LEADER.set(0)
            if not self.stopping.is_set():
                log.error("leadership ended identity=%s led=%s; exiting so a fresh process can stand by",
                          self.config.identity, led)
            self.finished.set()

        thread = threading.Thread(target=elector.run, args=(self.stopping, on_started, on_stopped),
                                  name="leader-election", daemon=True)
        self.threads["leader-election"] = thread
        thread.start()

    # -- health ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive unless a thread that must run has died, the elector has stopped trying, or a watch
        has failed for WATCH_UNHEALTHY_SECONDS. Pure over the process's own state."""
        now = time.monotonic()
        problems = [f"thread {name} exited" for name, thread in self.threads.items() if not thread.is_alive()]
        elector = self.elector
        # Three retries, each of which may spend two request timeouts, without an attempt: it is stuck.
        stuck_after = 3 * self.config.retry_period + 2 * elector.request_timeout if elector else 0.0
        if elector is not None and elector.last_attempt and now - elector.last_attempt > stuck_after:
            problems.append(f"no lease attempt for {now - elector.last_attempt:.0f}s")
        watches = {}
        for w in self.watches:
            with w.state.lock:
                failing = w.state.failing_since
                name = f"{w.kind}/{w.namespace or '*'}"
                watches[name] = "watching" if w.state.connected else (
                    f"retrying for {now - failing:.0f}s: {w.state.last_error}" if failing is not None
                    else "starting")
            if failing is not None and now - failing > WATCH_UNHEALTHY_SECONDS and not w.optional:
                problems.append(f"watch {name} failing for {now - failing:.0f}s")
        body = {"leader": self.leading.is_set(), "identity": self.config.identity,
                "leaseRemainingSeconds": round(self.elector.remaining(), 1) if self.elector else None,
                "watches": watches, "problems": problems}
        return not problems, body

    def serve_health(self) -> ThreadingHTTPServer:
        operator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in ("/healthz", "/readyz"):
                    self.send_error(404)
                    return
                ok, report = operator.health()
                body = json.dumps(report).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("0.0.0.0", self.config.health_port), Handler)
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        return server

    # -- main ------------------------------------------------------------------------------
    def _start(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads[name] = thread
        thread.start()

    def run(self) -> None:
        def terminate(signum: int, _frame: Any) -> None:
            log.info("received signal=%s: releasing the lease and stopping", signal.Signals(signum).name)
            self.signalled.set()
            self.stopping.set()
            if self.elector is None:
                self.finished.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, terminate)
            signal.signal(signal.SIGINT, terminate)
        if self.config.metrics_port:
            with listening("--metrics-port", self.config.metrics_port):
                start_http_server(self.config.metrics_port)
        if self.config.health_port:
            with listening("--health-port", self.config.health_port):
                self.serve_health()
        if self.elector is not None:
            log.info("waiting for leadership lease=%s/%s identity=%s", self.config.lease_namespace,
                     self.config.lease_name, self.config.identity)
            self.elect()
            while not self.leading.wait(0.5):
                if self.finished.is_set():
                    log.info("stopped identity=%s", self.config.identity)
                    return
        else:
            self.leading.set()
        LEADER.set(1)
        log.info("leading identity=%s", self.config.identity)
        for i in range(self.config.workers):
            self._start(f"worker-{i}", self.worker)
        self._start("resync", self.resync)
        self._start("autoscaler", self.autoscale)
        self.watches = self._watches()
        for w in self.watches:
            self._start(f"watch-{w.kind}-{w.namespace or 'all'}", w.run)
        self.finished.wait()
        self.stopping.set()
        self.queue.shutdown()
        for w in self.watches:
            w.stop()
        log.info("stopped identity=%s", self.config.identity)
        if not self.signalled.is_set():
            # Leadership was lost, not given up: end now, whatever a worker is blocked in; the
            # Deployment restarts the process as a standby.
            logging.shutdown()
            os._exit(1)


def main(config: ManagerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler], force=True)
    Operator(config).run()
