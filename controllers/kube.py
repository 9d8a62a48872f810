"""Kubernetes I/O: the one module that imports the ``kubernetes`` client.

Everything else talks to the cluster through the ``KubeApi`` protocol, so reconcile logic can be
exercised against the real apiserver in component tests and reasoned about without it.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from prometheus_client import Counter

FIELD_MANAGER = "tokenworks"
LIST_PAGE = 500  # items per list request
API_REQUESTS = Counter("tokenworks_api_requests_total",
                       "Kubernetes API requests made by reconciles (watches excluded).", ["verb"])

ManifestT = dict[str, Any]


class KubeApi(Protocol):
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> ManifestT | None: ...
    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[ManifestT]: ...
    def apply(self, manifest: ManifestT, dry_run: bool = False) -> ManifestT: ...
    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: dict[str, Any], field_manager: str = FIELD_MANAGER) -> ManifestT: ...
    def has_kind(self, api_version: str, kind: str, recheck_seconds: float = 20, fresh: bool = False) -> bool: ...
    def event(self, regarding: ManifestT, reason: str, message: str, type_: str = "Normal") -> None: ...
    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> ManifestT: ...


class Conflict(Exception):  # noqa: N818 - reads as what happened
    """The write lost a race (409); the reconcile is retried with fresh state."""


class NamespaceTerminating(Exception):  # noqa: N818
    """The namespace is being deleted, or is gone: nothing can be created in it, and nothing needs to be."""


class KindNotServed(Exception):  # noqa: N818
    """The API server does not serve this kind (its CRD is not installed, or was deleted)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{api_version} {kind} is not served")
        self.api_version = api_version
        self.kind = kind


@dataclass
class RequestCounter:
    """Counts API requests by verb (reads vs writes) so tests and benchmarks can assert on them."""

    reads: int = 0
    writes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, write: bool) -> None:
        API_REQUESTS.labels("write" if write else "read").inc()
        with self._lock:
            if write:
                self.writes += 1
            else:
                self.reads += 1


def _not_found_kind(error: ApiException) -> str | None:
    """The kind a 404's Status names (``namespaces`` when the namespace is gone), if it names one."""
    try:
        details = json.loads(error.body or "{}").get("details") or {}
    except (TypeError, ValueError):
        return None
    kind = details.get("kind") if isinstance(details, dict) else None
    return str(kind) if kind else None


def _json(response: Any) -> ManifestT:
    """A raw (``serialize=False``) response's body as plain dicts."""
    body: ManifestT = json.loads(response.data)
    return body


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
    try:
        if kubeconfig:
            raise config.ConfigException("kubeconfig given")
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    return client.ApiClient()


class ProcessDiscoverer(dynamic.LazyDiscoverer):  # type: ignore[misc]  # the client is untyped
    """API discovery cached in this process only. The client's default cache is a file named by
    ``tempfile.gettempdir()``, which raises where nothing is writable (the image's read-only root)."""

    def __init__(self, dynamic_client: Any, cache_file: str | None = None) -> None:
        # A file that cannot exist (/dev/null is no directory), so none is read; none is written either.
        super().__init__(dynamic_client, cache_file or os.path.join(os.devnull, "tokenworks-discovery.json"))

    def _write_cache(self) -> None:
        pass


class Kube:
    """``KubeApi`` over the dynamic client; server-side apply with one field manager."""

    def __init__(self, api_client: client.ApiClient | None = None,
                 counter: RequestCounter | None = None, fence: Callable[[], float] | None = None,
                 request_timeout: float = 20) -> None:
        self.api_client = api_client or client.ApiClient()
        self.dynamic = dynamic.DynamicClient(self.api_client, discoverer=ProcessDiscoverer)
        self.counter = counter or RequestCounter()
        self._kinds: dict[tuple[str, str], tuple[bool, float]] = {}
        # Reconcile workers and watches share the discovery cache, which fills lazily and is emptied by a
        # refresh: one at a time (concurrent use saw a half-built cache: KeyError 'resources').
        self._discovery = threading.RLock()
        # Leader fencing: returns the seconds this process may still write, or raises NotLeader.
        self.fence = fence
        # No request may hang forever: a stuck API server must not stall a worker past its lease.
        self.request_timeout = request_timeout

    def _write_timeout(self) -> float:
        """Before every write: refuse it when leadership may have passed, and let it run no longer than
        leadership lasts."""
        if self.fence is None:
            return self.request_timeout
        return min(self.request_timeout, self.fence())

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            with self._discovery:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as error:
            # Discovery refreshes itself before it says no, so this is the server's current answer.
            self._kinds[(api_version, kind)] = (False, time.monotonic())
            raise KindNotServed(api_version, kind) from error

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's resource for a kind (watches use it); KindNotServed if not served."""
        return self._resource(api_version, kind)

    def invalidate_discovery(self) -> None:
        with self._discovery:
            self.dynamic.resources.invalidate_cache()

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> ManifestT | None:
        self.counter.count(write=False)
        try:
            response = self._resource(api_version, kind).get(name=name, namespace=namespace, serialize=False,
                                                             _request_timeout=self.request_timeout)
        except NotFoundError:
            return None
        return _json(response)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[ManifestT]:
        return self.list_with_version(api_version, kind, namespace, label_selector, field_selector)[0]

    def list_with_version(self, api_version: str, kind: str, namespace: str | None = None,
                          label_selector: str | None = None, field_selector: str | None = None,
                          page: int = LIST_PAGE) -> tuple[builtins.list[ManifestT], str]:
        """Every item, in pages of ``page``, and the list's resourceVersion (where a watch starts).

        Pages keep the peak small, and the items are plain dicts parsed from the JSON: the dynamic
        client's own objects cost several times the JSON in memory, which at 1,000 Deployments was
        most of the operator's peak."""
        resource = self._resource(api_version, kind)
        items: builtins.list[ManifestT] = []
        token: str | None = None
        while True:
            self.counter.count(write=False)
            body = _json(resource.get(namespace=namespace, label_selector=label_selector,
                                      field_selector=field_selector, limit=page, _continue=token,
                                      serialize=False, _request_timeout=self.request_timeout))
            items += body.get("items") or []
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion") or "")

    def apply(self, manifest: ManifestT, dry_run: bool = False) -> ManifestT:
        # A dry run (dryRun=All) persists nothing, but it is a PATCH: it counts as a write request,
        # and is fenced like one (a dry run of a non-leader is wasted work at best).
        timeout = self._write_timeout()
        self.counter.count(write=True)
        metadata = manifest["metadata"]
        try:
            obj = self._resource(manifest["apiVersion"], manifest["kind"]).server_side_apply(
                body=manifest, name=metadata["name"], namespace=metadata.get("namespace"),
                field_manager=FIELD_MANAGER, force_conflicts=True, _request_timeout=timeout, serialize=False,
                **({"dry_run": "All"} if dry_run else {}),
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(str(error.reason)) from error
            # A namespace being deleted refuses creates (403); once gone, every write is a 404 naming it.
            if (error.status == 403 and "NamespaceTerminating" in str(error.body)) or \
                    (error.status == 404 and _not_found_kind(error) == "namespaces"):
                raise NamespaceTerminating(metadata.get("namespace", "")) from error
            # A CRD being deleted refuses creates (403 "create not allowed while custom resource definition is
            # terminating") until its objects are gone and discovery drops it; after that, discovery is cached:
            # the kind reads as a 404. Ask again at once.
            if (error.status in (403, 405) and "custom resource definition is terminating" in str(error.body)) or (
                    error.status == 404 and not self.has_kind(manifest["apiVersion"], manifest["kind"], fresh=True)):
                raise KindNotServed(manifest["apiVersion"], manifest["kind"]) from error
            raise
        return _json(obj)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: dict[str, Any], field_manager: str = FIELD_MANAGER) -> ManifestT:
        """Server-side apply of the status subresource; each writer (reconciler, autoscaler) uses its
        own field manager and so owns only its own fields and conditions."""
        timeout = self._write_timeout()
        self.counter.count(write=True)
        body = {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "namespace": namespace}, "status": status}
        status_resource = self._resource(api_version, kind).subresources["status"]
        obj = self.dynamic.server_side_apply(
            status_resource, body=body, name=name, namespace=namespace,
            field_manager=field_manager, force_conflicts=True, _request_timeout=timeout, serialize=False,
        )
        return _json(obj)

    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> ManifestT:
        """``spec.replicas`` through the kind's scale subresource (merge patch of the autoscaling/v1 Scale,
        field manager ``tokenworks``): how a LeaderWorkerSet's group count is set. Returns the Scale."""
        timeout = self._write_timeout()
        self.counter.count(write=True)
        scale_resource = self._resource(api_version, kind).subresources["scale"]
        obj = self.dynamic.patch(
            scale_resource, body={"spec": {"replicas": replicas}}, name=name, namespace=namespace,
            content_type="application/merge-patch+json", field_manager=FIELD_MANAGER, _request_timeout=timeout,
            serialize=False,
        )
        return _json(obj)

    def has_kind(self, api_version: str, kind: str, recheck_seconds: float = 20, fresh: bool = False) -> bool:
        """Whether the API serves ``kind`` (e.g. the Prometheus Operator's PodMonitor). A "no" is
        re-checked every ``recheck_seconds``, so a CRD installed later is picked up within it; a "yes"
        is kept until a write of that kind fails (``fresh``: ask the server now)."""
        key = (api_version, kind)
        asked = time.monotonic()
        with self._discovery:
            known = self._kinds.get(key)
            if known is not None:
                # Fresh: another worker may have asked the server while this one waited for the lock.
                answered = known[1] >= asked if fresh else \
                    known[0] or time.monotonic() - known[1] < recheck_seconds
                if answered:
                    return known[0]
            if fresh:
                # A cached "yes" lives in discovery too; only a refresh drops a deleted CRD's kind.
                self.invalidate_discovery()
            try:
                self._resource(api_version, kind)
                found = True
            except KindNotServed:
                found = False
            self._kinds[key] = (found, time.monotonic())
            return found

    def event(self, regarding: ManifestT, reason: str, message: str, type_: str = "Normal") -> None:
        """A core/v1 Event about ``regarding``, shown by ``kubectl describe``."""
        timeout = self._write_timeout()
        self.counter.count(write=True)
        metadata = regarding["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{metadata['name']}.",
                                         namespace=metadata["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=regarding["apiVersion"], kind=regarding["kind"], name=metadata["name"],
                namespace=metadata["namespace"], uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            ),
            reason=reason, message=message[:1024], type=type_,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="tokenworks-operator"),
            reporting_component="tokenworks.dev/operator", reporting_instance="tokenworks-operator",
        )
        # Events are best effort: losing one must not fail a reconcile.
        with contextlib.suppress(ApiException):
            client.CoreV1Api(self.api_client).create_namespaced_event(metadata["namespace"], body,
                                                                      _request_timeout=timeout)

    def events_for(self, namespace: str, name: str) -> builtins.list[ManifestT]:
        self.counter.count(write=False)
        events = client.CoreV1Api(self.api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}", _request_timeout=self.request_timeout)
        serialized: builtins.list[ManifestT] = [self.api_client.sanitize_for_serialization(e)
                                       for e in events.items]
        return serialized
