"""Polling helper for tests against a live cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException


def eventually(check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    """Return the first truthy result of ``check``; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every field of ``expected`` is in ``actual`` with the same value; the apiserver may add
    defaults (imagePullPolicy, terminationMessagePath...) that ``expected`` does not name."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: expected {expected!r}, got {actual!r}"


def event_seen(core: Any, namespace: str, name: str, match: Callable[[Any], bool],
               timeout: float = 30) -> Any:
    """Wait for an Event about ``name`` that ``match`` accepts and return it. The operator posts
    Events after it writes status, so a test that has seen the status may not see the Event yet."""
    def found() -> Any:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return next((e for e in events if match(e)), None)
    return eventually(found, timeout=timeout)
