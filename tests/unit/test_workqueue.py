"""The reconcile work queue: coalescing, one worker per key, requeue while processing, backoff."""

from __future__ import annotations

from controllers.workqueue import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_adds_coalesce() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(10):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert queue.get(timeout=0) == "a"
    assert queue.get(timeout=0) == "b"
    assert queue.get(timeout=0) is None


def test_a_key_added_while_processing_comes_back_once_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = queue.get(timeout=0)
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout=0) is None, "never two workers on one key"
    queue.done(key or "")
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    assert queue.get(timeout=0) is None


def test_retry_backs_off_exponentially_and_forget_resets() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(base_delay=1, max_delay=5, clock=clock)
    assert [queue.retry("a") for _ in range(5)] == [1, 2, 4, 5, 5]
    queue.forget("a")
    assert queue.retry("a") == 1


def test_delayed_keys_appear_when_due() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 10)
    assert queue.get(timeout=0) is None
    clock.now = 10
    assert queue.get(timeout=0) == "a"


def test_a_key_waits_once_at_its_earliest_time() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 20)
    queue.add_after("a", 5)
    queue.add_after("a", 30)  # later than what is already scheduled: nothing new
    clock.now = 5
    assert queue.get(timeout=0) == "a"
    queue.done("a")
    clock.now = 40
    assert queue.get(timeout=0) is None, "the superseded 20 s and 30 s entries do not fire"
    queue.add_after("a", 1)
    clock.now = 41
    assert queue.get(timeout=0) == "a", "once it fired, the key may wait again"
