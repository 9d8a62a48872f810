"""A work queue in the manner of client-go's: keys are coalesced, one worker per key at a time,
failed keys come back after an exponential backoff.

Ten watch events for one ModelDeployment while it is being reconciled become one more reconcile,
not ten.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._queue: list[K] = []
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()  # added again while being processed
        self._delayed: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # each delayed key's one current due time
        self._failures: dict[K, int] = {}
        self._seq = 0
        self._shutdown = False
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock

    def add(self, key: K) -> None:
        with self._cond:
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)
                self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds. A key waits at most once: the earliest time wins, so
        a reconcile that asks to be re-queued every time cannot grow a chain per watch event."""
        with self._cond:
            due = self.clock() + delay
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, key))
            self._cond.notify()

    def retry(self, key: K) -> float:
        """Re-queue a failed key after 0.5 s, 1 s, 2 s ... up to ``max_delay``; returns the delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.max_delay, self.base_delay * 2.0**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self, timeout: float | None = None) -> K | None:
        """The next key, marked as processing; ``None`` on shutdown or timeout."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._shutdown:
                    return None
                if self._queue:
                    key = self._queue.pop(0)
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                wait = None if deadline is None else deadline - self.clock()
                if self._delayed:
                    until_due = self._delayed[0][0] - self.clock()
                    wait = until_due if wait is None else min(wait, until_due)
                if wait is not None and wait <= 0 and deadline is not None and self.clock() >= deadline:
                    return None
                self._cond.wait(None if wait is None else max(wait, 0.001))

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.append(key)
                    self._cond.notify()

    def _promote_due(self) -> None:
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) != due:
                continue  # superseded by an earlier time for the same key
            del self._due[key]
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._queue.append(key)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)
