"""Leader election on a coordination.k8s.io/v1 Lease, with fencing.

client-go's rules, kept small enough to test without a cluster:

- A candidate may take the Lease when it is free (no holder: released), already its own, or has not
  changed for ``lease_duration`` *as measured on the candidate's own monotonic clock* from when it
  first saw that version. Wall clocks of two nodes may disagree; elapsed time on one clock does not.
- Every request carries a timeout shorter than the renew deadline, so a hung API server (a stuck
  load balancer, a SIGSTOPped apiserver) cannot block the elector past it.
- Fencing: a successful renew sent at monotonic ``t`` makes this process leader until
  ``t + renew_deadline``. A standby cannot take over before ``t + lease_duration`` (it saw the
  renewed Lease at ``t`` or later and waits a whole lease duration), so with
  ``renew_deadline < lease_duration`` an old leader that checks ``remaining()`` before each write
  stops writing before anyone else starts. Writes are also sent with at most ``remaining()`` as
  their timeout.
- Any exit of the elector, an exception included, ends leadership: ``on_stopped`` runs in a
  ``finally``. On a clean stop (SIGTERM) the Lease is released (holder emptied, duration 1 s), so
  the standby takes over on its next retry instead of waiting out the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("tokenworks.leader")

Monotonic = Callable[[], float]


class NotLeader(Exception):  # noqa: N818 - reads as what happened
    """A write was refused because this process's leadership may have passed to another."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the Lease says; ``version`` is its resourceVersion (the optimistic-concurrency token)."""

    holder: str
    duration_seconds: int
    transitions: int
    version: str


def may_acquire(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> bool:
    """Whether ``identity`` may write the Lease: free, its own, or unchanged for a whole lease duration
    since ``observed_at`` (monotonic, when this candidate first saw ``record``). Pure."""
    if record is None or not record.holder or record.holder == identity:
        return True
    return now - observed_at >= record.duration_seconds


class LeaseApi(Protocol):
    """The three Lease calls the elector makes (kubernetes ``CoordinationV1Api`` fits)."""

    def read_namespaced_lease(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    def create_namespaced_lease(self, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any: ...


def _record(lease: Any) -> LeaseRecord:
    spec = lease.spec
    return LeaseRecord(holder=spec.holder_identity or "", duration_seconds=int(spec.lease_duration_seconds or 0),
                       transitions=int(spec.lease_transitions or 0), version=str(lease.metadata.resource_version))


class LeaderElector:
    def __init__(self, api: LeaseApi, name: str, namespace: str, identity: str, lease_duration: float = 15,
                 renew_deadline: float = 10, retry_period: float = 2, clock: Monotonic = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError(f"need retry period ({retry_period}s) < renew deadline ({renew_deadline}s) < "
                             f"lease duration ({lease_duration}s)")
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.wall = wall
        # One attempt is a read and a write; together they finish inside the renew deadline.
        self.request_timeout = max(0.5, (renew_deadline - retry_period) / 2)
        self._lock = threading.Lock()
        self._valid_until = 0.0
        self._observed: tuple[LeaseRecord | None, float] = (None, 0.0)
        self.last_attempt = 0.0  # monotonic; /healthz checks the elector is alive
        self.leading = threading.Event()

    # -- fencing -----------------------------------------------------------------------------
    def remaining(self) -> float:
        """Seconds this process may still write as leader; 0 when it may not."""
        with self._lock:
            return max(0.0, self._valid_until - self.clock()) if self.leading.is_set() else 0.0

    def fence(self) -> float:
        """``remaining()``, or ``NotLeader`` when nothing remains: call before every write."""
        left = self.remaining()
        if left <= 0:
            raise NotLeader(f"{self.identity} is not (or may no longer be) the leader")
        return left

    # -- one attempt -------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        started = self.clock()
        self.last_attempt = started
        timeout = self.request_timeout
        now = self.wall()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.lease_duration),
                                        acquire_time=now, renew_time=now, lease_transitions=0))
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            self._renewed(started)
            return True
        record = _record(lease)
        seen, seen_at = self._observed
        if record != seen:
            self._observed = (record, started)
            seen_at = started
        if not may_acquire(record, self.identity, seen_at, started):
            return False
        spec = lease.spec
        if record.holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = record.transitions + 1
            spec.holder_identity = self.identity
        spec.lease_duration_seconds = int(self.lease_duration)
        spec.renew_time = now
        # A replace carries the resourceVersion read above: if another candidate wrote in between,
        # this is a 409 and the attempt fails.
        updated = self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=timeout)
        self._observed = (_record(updated), started)
        self._renewed(started)
        return True

    def _renewed(self, sent_at: float) -> None:
        with self._lock:
            self._valid_until = sent_at + self.renew_deadline
            self.leading.set()

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as error:  # any failure is a failed attempt; the deadline decides
            log.warning("lease attempt failed identity=%s error=%s", self.identity, str(error).splitlines()[0][:200])
            return False

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event, on_started: Callable[[], None],
            on_stopped: Callable[[bool], None]) -> None:
        """Campaign until leader, renew until the deadline passes or ``stop`` is set. ``on_stopped``
        is called exactly once, with whether this process had been leading."""
        led = False
        try:
            while not stop.is_set() and not self._attempt():
                stop.wait(self.retry_period * (1 + random.random() * 0.2))  # jitter
            if stop.is_set():
                return
            led = True
            log.info("acquired lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
            on_started()
            while not stop.wait(self.retry_period):
                if not self._attempt() and self.remaining() <= 0:
                    log.error("could not renew lease=%s/%s within %.0fs identity=%s", self.namespace, self.name,
                              self.renew_deadline, self.identity)
                    return
        finally:
            with self._lock:
                self.leading.clear()
                self._valid_until = 0.0
            if led and stop.is_set():
                self.release()
            on_stopped(led)

    def release(self) -> None:
        """Give the Lease up (clean shutdown): the standby may take it on its next retry."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.request_timeout)
            if (lease.spec.holder_identity or "") != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = self.wall()
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.request_timeout)
            log.info("released lease=%s/%s identity=%s", self.namespace, self.name, self.identity)
        except Exception as error:  # best effort: the lease expires anyway
            log.warning("could not release lease identity=%s error=%s", self.identity, str(error)[:200])
