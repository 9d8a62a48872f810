"""Watches that feed the work queue: list, then watch from the list's resourceVersion, server-side
filtered.

Children are watched with the label selector ``app.kubernetes.io/managed-by=tokenworks`` sent to the
API server, so the operator streams its own children only, not every Deployment of the cluster.
A watch the server ends (its ``timeoutSeconds``) continues from the last resourceVersion; one that
expired (410 Gone after etcd compaction) relists; any other failure (the API server restarting or
down) retries with a capped backoff. Each read has a timeout, so a hung connection is noticed within
``timeout_seconds + READ_SLACK`` instead of never.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from prometheus_client import Counter

from controllers.kube import KindNotServed

log = logging.getLogger("tokenworks.watches")

RELISTS = Counter("tokenworks_watch_relists_total", "Lists that (re)started a watch, by kind and cause.",
                  ["kind", "cause"])
READ_SLACK = 15  # seconds past the server's own watch timeout before a silent connection is dropped
MAX_BACKOFF = 10.0


@dataclass
class WatchState:
    """What /healthz reports for one watch."""

    kind: str
    namespace: str | None
    synced: bool = False  # the initial list is done
    connected: bool = False
    failing_since: float | None = None  # monotonic; None while healthy
    last_error: str = ""
    relists: int = 0
    missing: bool = False  # the kind was not served at the last attempt
    events: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Watch:
    """One list+watch loop for one kind in one namespace (or cluster-wide), calling ``on_object``
    with each object seen (listed or changed, deletions included)."""

    def __init__(self, kube: Any, api_version: str, kind: str, namespace: str | None,
                 on_object: Callable[[dict[str, Any]], None], stopping: threading.Event,
                 label_selector: str | None = None, timeout_seconds: int = 60,
                 optional: bool = False, on_served: Callable[[], None] | None = None) -> None:
        self.kube = kube  # controllers.kube.Kube: resolves kinds under its discovery lock
        self.api_version = api_version
        self.kind = kind
        self.namespace = namespace
        self.on_object = on_object
        self.stopping = stopping
        self.label_selector = label_selector
        self.timeout_seconds = timeout_seconds
        self.optional = optional  # an API that may not be installed (PodMonitor): absent is not a failure
        self.on_served = on_served  # called when a kind that was not served is served again
        self.state = WatchState(kind, namespace)
        self.watcher: k8s_watch.Watch | None = None

    def run(self) -> None:
        backoff = 0.5
        cause = "start"
        while not self.stopping.is_set():
            try:
                version = self._list(cause)
                backoff = 0.5
                self._watch(version)
                cause = "expired"  # _watch returns only on 410 Gone
            except KindNotServed as error:
                cause = "error"
                with self.state.lock:
                    self.state.missing = True
                self._failed(error, quiet=self.optional)
                self.kube.invalidate_discovery()  # noticed when the CRD comes back
                self.stopping.wait(20 if self.optional else backoff)
            except Exception as error:  # the loop must outlive any API failure
                cause = "error"
                self._failed(error)
                self.stopping.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _resource(self) -> Any:
        return self.kube.resource(self.api_version, self.kind)

    def _list(self, cause: str) -> str:
        items, version = self.kube.list_with_version(self.api_version, self.kind, self.namespace,
                                                     self.label_selector)
        RELISTS.labels(self.kind, cause).inc()
        for item in items:
            self.on_object(item)
        with self.state.lock:
            returned = self.state.missing
            self.state.missing = False
            self.state.synced = True
            self.state.connected = True
            self.state.failing_since = None
            self.state.relists += 1
        if returned and self.on_served is not None:
            # The kind is served again (its CRD reinstalled): no object of it exists to say so, so
            # every owner is asked to reconcile and create its child now.
            log.info("kind served again kind=%s", self.kind)
            self.on_served()
        return str(version)

    def _watch(self, version: str) -> None:
        """Follow changes from ``version``; returns when the version expired (relist)."""
        resource = self._resource()
        while not self.stopping.is_set():
            self.watcher = k8s_watch.Watch()
            try:
                for event in self.watcher.stream(
                    resource.get, namespace=self.namespace, label_selector=self.label_selector,
                    resource_version=version, serialize=False, timeout_seconds=self.timeout_seconds,
                    allow_watch_bookmarks=True, _request_timeout=(5, self.timeout_seconds + READ_SLACK),
                ):
                    obj = event["raw_object"] if isinstance(event, dict) else {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") == "BOOKMARK":
                        continue
                    with self.state.lock:
                        self.state.events += 1
                    self.on_object(obj)
            except ApiException as error:
                if error.status == 410:
                    log.info("watch expired kind=%s namespace=%s: relisting", self.kind, self.namespace or "*")
                    return
                raise
            with self.state.lock:
                self.state.connected = True
                self.state.failing_since = None

    def _failed(self, error: Exception, quiet: bool = False) -> None:
        if self.stopping.is_set():
            return  # the connection was closed because the process is stopping
        with self.state.lock:
            self.state.connected = False
            if self.state.failing_since is None:
                self.state.failing_since = time.monotonic()
            self.state.last_error = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        if not quiet:
            log.warning("watch failed kind=%s namespace=%s error=%s", self.kind, self.namespace or "*",
                        self.state.last_error)
