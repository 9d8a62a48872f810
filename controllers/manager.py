"""The operator process: leader election, kopf watches feeding a work queue, reconcile workers,
periodic resync, health endpoints and Prometheus metrics.

Only the leader watches and writes. A standby blocks on the Lease and takes over within the lease
duration when the leader dies; a leader that cannot renew exits, so two never act at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from controllers.kube import Conflict, Kube, NamespaceTerminating, load_config
from controllers.listening import listening
from controllers.reconcile import Reconciler
from controllers.workqueue import WorkQueue
from crds.models import API_VERSION, GROUP, KIND, PLURAL, VERSION
from inference_pods.templates import INSTANCE_LABEL, MANAGED_BY

log = logging.getLogger("tokenworks.manager")

RECONCILES = Counter("tokenworks_reconcile_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram("tokenworks_reconcile_duration_seconds", "Reconcile duration.")
CHILD_WRITES = Counter("tokenworks_child_applies_total", "Server-side applies of children.", ["kind"])
STATUS_WRITES = Counter("tokenworks_status_writes_total", "Status subresource writes.")
LEADER = Gauge("tokenworks_leader", "1 while this process is the leader.")
QUEUE_DEPTH = Gauge("tokenworks_workqueue_depth", "Keys waiting to be reconciled.")

# Children whose changes trigger a reconcile of their owner: (group, version, plural).
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("policy", "v1", "poddisruptionbudgets"),
)

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
        self.kube = Kube(self.api_client)
        self.reconciler = Reconciler(self.kube)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.leading = threading.Event()
        self.stopping = threading.Event()
        self.registry = self._registry()

    # -- kopf: watches only, no handlers that persist state or add finalizers ---------------
    def _registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        queue = self.queue

        def on_model_deployment(body: Any, **_: Any) -> None:
            queue.add((body["metadata"]["namespace"], body["metadata"]["name"]))

        def on_child(body: Any, **_: Any) -> None:
            owner = (body["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
            if owner:
                queue.add((body["metadata"]["namespace"], owner))

        # A private registry has no default login handlers. Hand kopf the credentials the
        # kubernetes client already loaded (in-cluster service account, or --kubeconfig), so both
        # clients act as the same identity.
        kopf.on.login(registry=registry)(self._credentials)
        kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(on_model_deployment)
        for group, version, plural in WATCHED_CHILDREN:
            kopf.on.event(group, version, plural, registry=registry,
                          labels={"app.kubernetes.io/managed-by": MANAGED_BY})(on_child)
        return registry

    def _credentials(self, **_: Any) -> kopf.ConnectionInfo:
        configuration = self.api_client.configuration
        # The client keeps the token under "BearerToken" (kubeconfig) or "authorization".
        keys = configuration.api_key or {}
        token = str(keys.get("BearerToken") or keys.get("authorization") or "")
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            scheme="Bearer" if token else None,
            token=token.removeprefix("Bearer ") or None,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )

    def _settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # we post our own Events, about the ModelDeployment
        settings.scanning.disabled = True  # no cluster-wide CRD/namespace watch: least privilege
        settings.watching.server_timeout = 300
        settings.peering.standalone = True
        return settings

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

    def resync(self) -> None:
        """Re-queue every ModelDeployment periodically: level-triggered, so drift is repaired even
        when a watch event was missed."""
        while not self.stopping.wait(self.config.resync_seconds):
            scopes: list[str | None] = list(self.config.namespaces) or [None]
            try:
                for namespace in scopes:
                    for item in self.kube.list(API_VERSION, KIND, namespace):
                        self.queue.add((item["metadata"]["namespace"], item["metadata"]["name"]))
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
                short_window=self.config.prometheus_short_window))
        loop = AutoscalerLoop(self.kube, source, namespaces=self.config.namespaces)
        while not self.stopping.wait(self.config.autoscaler_tick_seconds):
            try:
                loop.tick()
            except Exception:
                log.exception("autoscaler tick failed")

    # -- leader election -------------------------------------------------------------------
    def elect(self) -> None:
        from kubernetes.leaderelection import electionconfig, leaderelection
        from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

        def on_lost() -> None:
            LEADER.set(0)
            if self.stopping.is_set():
                return
            log.error("lost leadership identity=%s; exiting so a fresh process can stand by",
                      self.config.identity)
            os._exit(1)

        lock = LeaseLock(self.config.lease_name, self.config.lease_namespace, self.config.identity)
        elector = leaderelection.LeaderElection(electionconfig.Config(
            lock, self.config.lease_duration, self.config.renew_deadline, self.config.retry_period,
            onstarted_leading=self.leading.set, onstopped_leading=on_lost,
        ))
        threading.Thread(target=elector.run, name="leader-election", daemon=True).start()

    # -- health ----------------------------------------------------------------------------
    def serve_health(self) -> ThreadingHTTPServer:
        operator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in ("/healthz", "/readyz"):
                    self.send_error(404)
                    return
                body = json.dumps({"leader": operator.leading.is_set(),
                                   "identity": operator.config.identity}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("0.0.0.0", self.config.health_port), Handler)
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        return server

    # -- main ------------------------------------------------------------------------------
    def run(self) -> None:
        if self.config.metrics_port:
            with listening("--metrics-port", self.config.metrics_port):
                start_http_server(self.config.metrics_port)
        if self.config.health_port:
            with listening("--health-port", self.config.health_port):
                self.serve_health()
        if self.config.leader_elect:
            log.info("waiting for leadership lease=%s/%s identity=%s", self.config.lease_namespace,
                     self.config.lease_name, self.config.identity)
            self.elect()
            self.leading.wait()
        else:
            self.leading.set()
        LEADER.set(1)
        log.info("leading identity=%s", self.config.identity)
        threads = [threading.Thread(target=self.worker, name=f"worker-{i}", daemon=True)
                   for i in range(self.config.workers)]
        threads.append(threading.Thread(target=self.resync, name="resync", daemon=True))
        threads.append(threading.Thread(target=self.autoscale, name="autoscaler", daemon=True))
        for thread in threads:
            thread.start()
        try:
            kopf.run(
                registry=self.registry, settings=self._settings(), standalone=True,
                clusterwide=not self.config.namespaces, namespaces=self.config.namespaces,
            )
        finally:
            self.stopping.set()
            self.queue.shutdown()
            log.info("stopped identity=%s", self.config.identity)


def main(config: ManagerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("leaderelection").setLevel(logging.WARNING)
    Operator(config).run()
