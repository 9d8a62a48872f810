"""Reading recorded series equals reading the raw queries: a real Prometheus evaluates the committed
dashboards/rules/recording.yaml over emulator twins of both backends under load and an endpoint-picker
double; at the timestamp of the recorded samples the autoscaler's readings from recorded series equal the
raw readings exactly, signal by signal, and the loaded rules are the very expressions the source runs."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from controllers.autoscaling.signals import Quality
from controllers.metrics import CORE_SIGNALS, ENGINE_SIGNALS, EPP_SIGNALS, Target
from controllers.metrics.prometheus import PrometheusConfig, PrometheusSource, normalise
from controllers.metrics.rules import RECORDING_PATH, SIGNALS_GROUP
from inference_pods.repository import REQUEST_SHAPE
from tests.support.emulator import EmulatorProcess, pod_deployment
from tests.support.epp import EndpointPickerDouble
from tests.support.prometheus import PrometheusServer
from tests.support.waiting import eventually

NAMESPACE = "test"
# The engine twin sits behind an InferencePool; every recorded percentile is asked for, and one that is not.
CHAT = [Target(NAMESPACE, "chat", p, inference_pool="chat-pool") for p in (0.5, 0.9, 0.95, 0.99)]
CODE = [Target(NAMESPACE, "code", 0.95), Target(NAMESPACE, "code", 0.97)]
TARGETS = CHAT + CODE
LAST_RULE = ('namespace_inference_pool_quantile:inference_objective_request_tpot_seconds:'
             'histogram_quantile_rate2m{quantile="0.99"}')


@dataclass
class Stack:
    prometheus: PrometheusServer
    twins: dict[str, tuple[EmulatorProcess, str]]  # deployment -> (twin, backend)


def load(twin: EmulatorProcess, backend: str, stop: threading.Event) -> None:
    """Open-loop streaming requests, 4 a second, to the model the backend serves."""
    model, limit, stream = REQUEST_SHAPE[backend]
    body = {"text_input": "w " * 100, limit: 16, stream: True}

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream(
                "POST", f"{twin.url}/v2/models/{model}/generate_stream", json=body, timeout=30) as response:
            for _ in response.iter_lines():
                pass

    for _ in itertools.count():
        if stop.wait(0.25):
            return
        threading.Thread(target=send, daemon=True).start()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    twins = {name: (EmulatorProcess.twin(pod_deployment(backend), ["--load-seconds=1"],
                                         tmp_path / f"{name}.log").start(), backend)
             for name, backend in (("chat", "tensorrt-engine"), ("code", "llmapi"))}
    double = EndpointPickerDouble().start()
    # Rules evaluate 5 s in the past, so a scrape still being written when they run is in their input.
    prometheus = PrometheusServer(tmp_path / "prometheus", rule_files=[RECORDING_PATH],
                                  rule_query_offset="5s").start()
    prometheus.set_targets([([twin.metrics_target], {"namespace": NAMESPACE,
                                                     "tokenworks_dev_model_deployment": name})
                            for name, (twin, _) in twins.items()] + [([double.target], {"namespace": NAMESPACE})])
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(twin, backend, stop), daemon=True)
               for twin, backend in twins.values()]
    for thread in threads:
        thread.start()
    try:
        yield Stack(prometheus, twins)
    finally:
        stop.set()
        prometheus.stop()
        double.stop()
        for twin, _ in twins.values():
            twin.stop()


def test_the_loaded_rules_are_the_source_expressions(stack: Stack) -> None:
    committed = {(r["record"], tuple(sorted((r.get("labels") or {}).items()))): r["expr"]
                 for g in yaml.safe_load(RECORDING_PATH.read_text())["groups"] for r in g["rules"]}
    loaded = {(r["name"], tuple(sorted((r.get("labels") or {}).items()))): r["query"]
              for g in stack.prometheus.rules() for r in g["rules"]}
    assert set(loaded) == set(committed)
    # Prometheus prints a loaded rule from its parsed form; the source compares against that text.
    assert {k: normalise(v) for k, v in loaded.items()} == {k: normalise(v) for k, v in committed.items()}


def test_recorded_readings_equal_the_raw_ones_at_the_recorded_timestamp(stack: Stack) -> None:
    prometheus = stack.prometheus

    def evaluated_with_load() -> float | None:
        # Every recorded signal with data: the engine twin's tokens, both twins' quantiles, the picker's.
        ready = all(prometheus.query(q) for q in (
            'namespace_model_deployment:nv_llm_output_token_len_sum:rate30s > 0',
            'namespace_model_deployment_quantile:nv_inference_first_response_histogram_ms:'
            'histogram_quantile_rate2m{tokenworks_dev_model_deployment="code",quantile="0.95"} > 0',
            'namespace_model_deployment:nv_inference_request_duration_us:rate30s{tokenworks_dev_model_deployment="code"}'
            ' > 0', LAST_RULE))
        stamp = prometheus.query(f"timestamp({LAST_RULE})")
        return float(stamp[0]["value"][1]) if ready and stamp else None

    # The last rule of the group at its newest evaluation: every rule before it has a sample there too.
    at = eventually(evaluated_with_load, timeout=120, interval=1)
    for rule in (r["name"] for g in prometheus.rules() if g["name"] == SIGNALS_GROUP for r in g["rules"]):
        stamps = {float(s["value"][1]) for s in prometheus.query(f"timestamp({rule})", at)}
        assert stamps <= {at}, f"{rule}: samples at {stamps}, not {at}"

    config = PrometheusConfig(url=prometheus.url)
    raw_source = PrometheusSource(config)
    recorded_source = PrometheusSource(PrometheusConfig(url=prometheus.url, recording_rules=True))
    try:
        raw = raw_source.observe(TARGETS, now=at)
        recorded = recorded_source.observe(TARGETS, now=at)
        unrecorded = dict(recorded_source.read_raw)
    finally:
        raw_source.close()
        recorded_source.close()

    for target in TARGETS:
        for signal, reading in raw[target].readings.items():
            other = recorded[target].get(signal)
            assert (other.quality, other.value) == (reading.quality, reading.value), \
                f"{target.name} p{target.percentile} {signal}: recorded {other}, raw {reading}"
    # The readings compared are real ones: the engine twin reads every signal, the llmapi twin its core ones.
    chat, code = raw[CHAT[2]], raw[CODE[0]]
    assert all(chat.get(s).ok for s in CORE_SIGNALS + ENGINE_SIGNALS + EPP_SIGNALS), chat.readings
    assert all(code.get(s).ok for s in CORE_SIGNALS), code.readings
    assert {code.get(s).quality for s in ENGINE_SIGNALS} == {Quality.EMPTY}
    # Only the percentile no rule records was read raw, and the source says so.
    assert unrecorded == {"ttftSeconds": 'no rule namespace_model_deployment_quantile:'
                          'nv_inference_first_response_histogram_ms:histogram_quantile_rate2m{quantile="0.97"} loaded'}
