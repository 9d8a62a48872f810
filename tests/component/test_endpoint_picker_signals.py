"""The endpoint picker's signals end to end: a real Prometheus scrapes a double serving the EPP's cited
families; the source reads TTFT, ITL and the flow-control queue per InferencePool, and the observer prefers
them to the pods' (and falls back for a pool whose picker exports nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.autoscaling.observer import PodCounts, observe
from controllers.autoscaling.signals import Quality, Reading
from controllers.metrics import Target
from controllers.metrics.prometheus import PrometheusConfig, PrometheusSource
from inference_pods.performance import ReplicaModel
from tests.support.epp import EndpointPickerDouble
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import eventually

POOLED = Target("prod", "chat", 0.95, inference_pool="chat-pool")
UNSERVED = Target("prod", "code", 0.95, inference_pool="code-pool")  # no picker scraped for it


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    double = EndpointPickerDouble().start()
    server = PrometheusServer(tmp_path / "prometheus").start()
    # As a ServiceMonitor would: the target's namespace on every series.
    server.set_targets([([double.target], {"namespace": "prod"})])
    try:
        yield server
    finally:
        server.stop()
        double.stop()


def test_ttft_itl_and_queue_per_pool_and_the_observer_prefers_them(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(PrometheusConfig(url=prometheus.url, window="10s"))
    try:
        readings = eventually(lambda: (r := source.observe([POOLED, UNSERVED]))[POOLED].get("eppItlSeconds").ok
                              and r, timeout=60)
    finally:
        source.close()
    chat, code = readings[POOLED], readings[UNSERVED]
    # 90 of 100 first tokens within 0.2 s, 10 in (1.5, 2]: the 95th is halfway into that bucket.
    assert chat.get("eppTtftSeconds").value == pytest.approx(1.75)
    assert chat.get("eppItlSeconds").value == pytest.approx(0.039)  # all in (0.02, 0.04]: 0.02 + 0.95 x 0.02
    assert chat.get("eppQueue").value == 10  # 6 + 4 held, over both flows
    assert {code.get(s).quality for s in ("eppTtftSeconds", "eppItlSeconds", "eppQueue")} == {Quality.EMPTY}

    # The pods say TTFT 0.4 s and 1 request late; the picker's figures win where it has them.
    pods = {"ttftSeconds": 0.4, "requestsPerSecond": 10, "requestSeconds": 25, "firstResponseSeconds": 21,
            "outputTokensPerSecond": 1000}
    for reading_set in (chat, code):
        for signal, value in pods.items():
            reading_set.readings[signal] = Reading.of(value)
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM")
    preferred = observe(chat, "tensorrt-engine", replica, PodCounts(current=2, ready=2), 2.0)
    fallback = observe(code, "tensorrt-engine", replica, PodCounts(current=2, ready=2), 2.0)
    assert preferred.ttft_seconds.value == pytest.approx(1.75) and fallback.ttft_seconds.value == 0.4
    assert preferred.itl_seconds.value == pytest.approx(0.039)
    assert fallback.itl_seconds.value == pytest.approx(4 / 990)  # the pods' mean: 4 decoding over 990 tokens/s
    assert preferred.queue.value == 11 and fallback.queue.value == 1  # 10 held + 1 late; the pods' alone
