"""The factory's traffic: endpoints from pod status, least-outstanding-work routing, client-side percentiles."""

from __future__ import annotations

from typing import Any

from controllers.factory.traffic import Endpoint, Router, percentile, ready_endpoints


def pod(name: str, ip: str | None, ready: bool, deleting: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, **({"deletionTimestamp": "2026-12-01T00:00:00Z"} if deleting else {})},
            "spec": {"containers": [{"name": "triton", "ports": [{"name": "http", "containerPort": 8000},
                                                                 {"name": "metrics", "containerPort": 8002}]}]},
            "status": {**({"podIP": ip} if ip else {}),
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_only_ready_pods_with_an_ip_are_endpoints() -> None:
    pods = [pod("b", "127.64.0.3", True), pod("a", "127.64.0.2", True), pod("loading", "127.64.0.4", False),
            pod("pending", None, False), pod("leaving", "127.64.0.5", True, deleting=True)]
    assert ready_endpoints(pods) == [Endpoint("a", "http://127.64.0.2:8000"), Endpoint("b", "http://127.64.0.3:8000")]


def test_the_router_sends_to_the_endpoint_with_least_outstanding_work() -> None:
    router = Router()
    a, b = Endpoint("a", "http://a"), Endpoint("b", "http://b")
    router.set_endpoints([a, b])
    assert router.pick(1000) == a  # a tie goes to the first by name
    assert router.pick(100) == b
    assert router.pick(100) == b  # b holds 100 against a's 1000
    router.done(a, 1000)
    assert router.pick(50) == a
    assert Router().pick(1) is None  # no endpoint: the caller counts it unrouted


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([], 0.95) is None
