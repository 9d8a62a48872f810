"""Leader election rules and fencing: who may take the Lease, when an old leader must stop writing."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from controllers.leader import LeaderElector, LeaseRecord, NotLeader, may_acquire


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class LeaseStore:
    """The API server's Lease semantics that matter here: 404 before creation, resourceVersion
    bumped on each write, 409 for a replace carrying a stale version."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        self._check()
        if self.lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: Any, **_: Any) -> Any:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409)
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        self._check()
        if str(body.metadata.resource_version) != str(self.version):
            raise ApiException(status=409)
        return self._store(body)

    def _store(self, body: Any) -> Any:
        self.version += 1
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(self.version)
        self.lease = body
        return copy.deepcopy(body)


def elector(store: LeaseStore, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(store, "lease", "ns", identity, lease_duration=15, renew_deadline=10,
                         retry_period=2, clock=clock)


def record(holder: str, version: str = "1") -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=15, transitions=0, version=version)


def test_a_lease_is_free_when_absent_released_or_own() -> None:
    assert may_acquire(None, "a", observed_at=0, now=0)
    assert may_acquire(record(""), "a", observed_at=0, now=0), "a released lease is taken at once"
    assert may_acquire(record("a"), "a", observed_at=0, now=0)


def test_another_holder_is_waited_out_on_the_candidates_own_clock() -> None:
    assert not may_acquire(record("b"), "a", observed_at=50, now=64.9)
    assert may_acquire(record("b"), "a", observed_at=50, now=65)


def test_one_leader_and_the_standby_takes_over_only_after_a_whole_unchanged_lease() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 10
    assert a.try_acquire_or_renew(), "the leader renews"
    clock.now += 1
    assert not b.try_acquire_or_renew(), "the standby sees the renewal 1 s after it was made"
    clock.now += 14
    assert not b.try_acquire_or_renew(), "14 s since the standby saw it: not yet"
    clock.now += 1
    assert b.try_acquire_or_renew(), "15 s unchanged on the standby's clock: it takes the lease"
    assert store.lease.spec.holder_identity == "b" and store.lease.spec.lease_transitions == 1
    assert not a.try_acquire_or_renew(), "the old leader sees the new holder and backs off"


def test_writes_are_fenced_before_the_standby_can_take_over() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()  # the standby sees the renewal at the same instant
    assert a.fence() == pytest.approx(10)
    store.down = True  # the leader is cut off; it cannot renew
    clock.now += 9.9
    assert a.fence() == pytest.approx(0.1)
    clock.now += 0.1
    with pytest.raises(NotLeader):
        a.fence()
    store.down = False
    clock.now += 4.9
    assert not b.try_acquire_or_renew(), "the old leader stopped 5 s before the standby may start"
    clock.now += 0.1
    assert b.try_acquire_or_renew()


def test_fencing_counts_from_when_the_renewal_was_sent_not_answered() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, "a", clock)
    slow_read = store.read_namespaced_lease

    def read(*args: Any, **kwargs: Any) -> Any:
        clock.now += 3  # the API server answers slowly
        return slow_read(*args, **kwargs)

    a.try_acquire_or_renew()
    store.read_namespaced_lease = read  # type: ignore[method-assign]
    assert a.try_acquire_or_renew()
    assert a.remaining() == pytest.approx(7)


def test_a_stale_write_loses_to_a_concurrent_one() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew()
    stale = store.read_namespaced_lease("lease", "ns")
    assert a.try_acquire_or_renew()  # bumps the version
    stale.spec.holder_identity = "b"
    with pytest.raises(ApiException):
        store.replace_namespaced_lease("lease", "ns", stale)
    assert not b.try_acquire_or_renew()


def test_the_loop_ends_leadership_when_renewal_fails_past_the_deadline_and_releases_on_stop() -> None:
    store = LeaseStore()
    a = LeaderElector(store, "lease", "ns", "a", lease_duration=3, renew_deadline=2, retry_period=0.05)
    stop = threading.Event()
    stopped: list[bool] = []
    started = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop, started.set, stopped.append))
    thread.start()
    assert started.wait(5)
    store.down = True
    thread.join(10)
    assert not thread.is_alive() and stopped == [True], "a leader that cannot renew stops leading"
    with pytest.raises(NotLeader):
        a.fence()
    assert store.lease.spec.holder_identity == "a", "a lost lease is not released: it could not be"

    store.down = False
    b = LeaderElector(store, "lease", "ns", "b", lease_duration=3, renew_deadline=2, retry_period=0.05)
    stop_b, started_b, stopped_b = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=b.run, args=(stop_b, started_b.set, stopped_b.append))
    thread.start()
    assert started_b.wait(10)
    stop_b.set()
    thread.join(5)
    assert stopped_b == [True]
    assert not store.lease.spec.holder_identity, "a clean stop releases the lease"
    assert store.lease.spec.lease_duration_seconds == 1


def test_an_exception_in_the_elector_still_ends_leadership() -> None:
    store = LeaseStore()
    a = LeaderElector(store, "lease", "ns", "a", lease_duration=3, renew_deadline=2, retry_period=0.05)
    stopped: list[bool] = []

    def boom() -> None:
        raise RuntimeError("on_started failed")

    with pytest.raises(RuntimeError):
        a.run(threading.Event(), boom, stopped.append)
    assert stopped == [True]
    assert a.remaining() == 0


def test_the_timing_must_leave_room_for_fencing() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(LeaseStore(), "lease", "ns", "a", lease_duration=10, renew_deadline=10, retry_period=2)
