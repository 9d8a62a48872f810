"""The emulator twin as a process, started from a rendered pod: Triton's HTTP and gRPC protocols through
the real tritonclient (decoupled models stream), errors and overload, readiness, SIGTERM drain, and
exactly the metric families, labels and buckets a real pod of each backend exports."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from inference_pods.repository import first_response_buckets
from tests.support.emulator import EmulatorProcess, pod_deployment
from tests.support.waiting import eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LLMAPI = "tensorrt_llm"
FAST = ["--load-seconds=0", "--time-scale=20", "--seed=7"]


@pytest.fixture(scope="module")
def llmapi() -> Iterator[EmulatorProcess]:
    process = EmulatorProcess.twin(pod_deployment("llmapi"), FAST).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def engine() -> Iterator[EmulatorProcess]:
    process = EmulatorProcess.twin(pod_deployment("tensorrt-engine", parallelism={"tensor": 2}), FAST).start()
    yield process
    process.stop()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(url: str) -> Samples:
    text = httpx.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Samples, name: str, model: str = LLMAPI, **labels: str) -> float:
    """Sum of the samples of ``name``; the parser reports a counter exported without `_total` (as
    Triton does) under the `_total` name."""
    wanted = {"model": model, "version": "1", **labels}
    return sum(v for (n, ls), v in metrics.items()
               if n in (name, f"{name}_total") and all(dict(ls).get(k) == x for k, x in wanted.items()))


def stream(process: EmulatorProcess, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    with httpx.stream("POST", f"{process.url}/v2/models/{model}/generate_stream", json=body, timeout=30) as s:
        s.raise_for_status()
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    return events


def test_the_llmapi_twin_serves_what_the_repository_holds(llmapi: EmulatorProcess) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{llmapi.http_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(LLMAPI)
    assert not client.is_model_ready("ensemble")
    inputs = [i["name"] for i in client.get_model_metadata(LLMAPI)["inputs"]]
    assert {"text_input", "streaming", "sampling_param_max_tokens"} <= set(inputs)
    # Decoupled: HTTP infer is refused as Triton refuses it; generate_stream streams token by token.
    prompt = triton_http.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"hello"], dtype=object))
    with pytest.raises(InferenceServerException, match="decoupled"):
        client.infer(LLMAPI, [prompt])
    events = stream(llmapi, LLMAPI, {"text_input": "tell me", "sampling_param_max_tokens": 7, "streaming": True})
    assert len(events) == 7 and all(e["model_name"] == LLMAPI and e["text_output"].strip() for e in events)
    refused = httpx.post(f"{llmapi.url}/v2/models/{LLMAPI}/generate", json={"text_input": "x"}, timeout=10)
    assert refused.status_code == 501


def test_tritonclient_grpc_streams_from_a_decoupled_model(llmapi: EmulatorProcess) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{llmapi.grpc_port}")
    assert client.is_server_ready()
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put(error or result))
    prompt = triton_grpc.InferInput("text_input", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"hello world"], dtype=object))
    limit = triton_grpc.InferInput("sampling_param_max_tokens", [1], "INT32")
    limit.set_data_from_numpy(np.array([5], dtype=np.int32))
    streaming = triton_grpc.InferInput("streaming", [1], "BOOL")
    streaming.set_data_from_numpy(np.array([True]))
    client.async_stream_infer(LLMAPI, [prompt, limit, streaming], enable_empty_final_response=True)
    tokens = []
    while True:
        result = results.get(timeout=10)
        assert not isinstance(result, Exception), result
        response = result.get_response()
        if response.parameters["triton_final_response"].bool_param:
            break
        tokens.append(result.as_numpy("text_output")[0].decode())
    client.stop_stream()
    assert len(tokens) == 5 and all(t.strip() for t in tokens)
    with pytest.raises(InferenceServerException, match="decoupled"):
        client.infer(LLMAPI, [prompt, limit])


def test_without_streaming_one_response_and_ttft_is_the_whole_answer(llmapi: EmulatorProcess) -> None:
    before = samples(llmapi.metrics_url)
    events = stream(llmapi, LLMAPI, {"text_input": "a b", "sampling_param_max_tokens": 6})
    assert len(events) == 1 and len(events[0]["text_output"].split()) == 6
    after = samples(llmapi.metrics_url)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    # The first response is the last: the first-response histogram counts the whole request.
    assert delta("nv_inference_first_response_histogram_ms_count") == 1
    assert delta("nv_inference_first_response_histogram_ms_sum") * 1e3 == pytest.approx(
        delta("nv_inference_request_duration_us"), rel=0.05)


def test_the_engine_twin_serves_the_ensemble_and_bls(engine: EmulatorProcess) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{engine.http_port}")
    for model in ("ensemble", "tensorrt_llm_bls", "preprocessing", "tensorrt_llm", "postprocessing"):
        assert client.is_model_ready(model), model
    for model in ("ensemble", "tensorrt_llm_bls"):
        events = stream(engine, model, {"text_input": "why is the sky blue", "max_tokens": 4, "stream": True})
        assert len(events) == 4
    missing = httpx.post(f"{engine.url}/v2/models/ensemble/generate_stream", json={"text_input": "x"}, timeout=10)
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]


def test_tokens_stream_in_real_time() -> None:
    # Real time (7.5 ms per token on an H100), so token spacing is measurable on a busy machine.
    real_time = EmulatorProcess.twin(pod_deployment(), ["--load-seconds=0"]).start()
    try:
        arrivals = []
        with httpx.stream("POST", f"{real_time.url}/v2/models/{LLMAPI}/generate_stream", timeout=10,
                          json={"text_input": "hello there", "sampling_param_max_tokens": 12, "streaming": True}) as s:
            for line in s.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic())
    finally:
        real_time.stop()
    assert len(arrivals) == 12
    # One engine step apart, not in one burst at the end (the engine may run up to 50 ms behind its
    # timeline on a loaded machine and then catch up).
    assert arrivals[-1] - arrivals[0] > 11 * 0.0075 - 0.05


def test_a_seed_makes_the_output_deterministic() -> None:
    def answers(seed: int) -> list[str]:
        process = EmulatorProcess.twin(pod_deployment(), ["--load-seconds=0", "--time-scale=20",
                                                          f"--seed={seed}"]).start()
        try:
            return ["".join(e["text_output"] for e in stream(process, LLMAPI, {
                "text_input": "x", "sampling_param_max_tokens": 8, "streaming": True})) for _ in range(3)]
        finally:
            process.stop()

    first = answers(7)
    assert answers(7) == first
    assert answers(8) != first


@pytest.mark.parametrize(("path", "body", "status", "text"), [
    ("/v2/models/tensorrt_llm/generate_stream", "{not json", 400, "malformed JSON"),
    ("/v2/models/unknown/generate_stream", '{"text_input": "x"}', 400, "unknown model: 'unknown'"),
    ("/v2/models/tensorrt_llm/generate_stream", '{"text_input": "x", "sampling_param_max_tokens": -3}', 400,
     "max_tokens"),
    ("/v2/models/tensorrt_llm/generate_stream", '{"text_input": "x", "sampling_param_max_tokens": 5000}', 400,
     "exceeds the engine's max output length 4096"),
])
def test_bad_requests_get_4xx_with_an_error_body(llmapi: EmulatorProcess, path: str, body: str,
                                                 status: int, text: str) -> None:
    response = httpx.post(f"{llmapi.url}{path}", content=body, timeout=10,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert text in response.json()["error"]


def test_an_overlong_prompt_is_rejected_and_counted(llmapi: EmulatorProcess) -> None:
    before = samples(llmapi.metrics_url)
    response = httpx.post(f"{llmapi.url}/v2/models/{LLMAPI}/generate_stream",
                          json={"text_input": "w " * 9000, "sampling_param_max_tokens": 4}, timeout=10)
    assert response.status_code == 400
    assert "exceeds the engine's max input length 8192" in response.json()["error"]
    after = samples(llmapi.metrics_url)
    assert value(after, "nv_inference_request_failure", reason="BACKEND") \
        == value(before, "nv_inference_request_failure", reason="BACKEND") + 1


PROMPTS, OUTPUTS = [3, 10, 50, 200], [4, 8, 16, 32]


def workload(process: EmulatorProcess, model: str, max_tokens: str, streaming: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda po: stream(process, model, {"text_input": " ".join(["w"] * po[0]), max_tokens: po[1],
                                                         streaming: True}), zip(PROMPTS, OUTPUTS, strict=True)))


def test_llmapi_counters_move_by_the_right_amounts(llmapi: EmulatorProcess) -> None:
    before = samples(llmapi.metrics_url)
    workload(llmapi, LLMAPI, "sampling_param_max_tokens", "streaming")
    after = samples(llmapi.metrics_url)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    assert delta("nv_inference_request_success") == 4
    assert delta("nv_inference_first_response_histogram_ms_count") == 4
    assert delta("nv_inference_request_duration_us") > delta("nv_inference_first_response_histogram_ms_sum") * 1e3
    utilisation = [v for (n, _), v in after.items() if n == "nv_gpu_utilization"]
    assert len(utilisation) == 1, "one GPU per TP1 replica"


def test_engine_counters_count_each_model_on_the_path(engine: EmulatorProcess) -> None:
    before = samples(engine.metrics_url)
    workload(engine, "ensemble", "max_tokens", "stream")
    after = samples(engine.metrics_url)

    def delta(name: str, model: str) -> float:
        return value(after, name, model) - value(before, name, model)

    for model in ("ensemble", "preprocessing", "tensorrt_llm"):
        assert delta("nv_inference_request_success", model) == 4, model
    assert delta("nv_inference_request_success", "postprocessing") == sum(OUTPUTS), "once per response"
    assert delta("nv_inference_request_success", "tensorrt_llm_bls") == 0
    assert delta("nv_llm_input_token_len_sum", "tensorrt_llm") == sum(PROMPTS)
    assert delta("nv_llm_output_token_len_sum", "tensorrt_llm") == sum(OUTPUTS)
    assert value(after, "nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="tokens_per") == 64
    assert len([v for (n, _), v in after.items() if n == "nv_gpu_utilization"]) == 2, "TP2: two GPUs"


def known_families() -> dict[str, dict[str, Any]]:
    """The families of the cited real exposition and table: type, label names, category values."""
    known: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families((FIXTURES / "triton-trtllm-metrics.txt").read_text()):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        values = {k: {s.labels[k] for s in family.samples} for k in labels if k not in ("model", "version")}
        name = "nv_inference_first_response_histogram_ms" if family.name == "nv_first_response_histogram_ms" \
            else family.name
        known[name] = {"type": family.type, "labels": labels, "values": values}
    for name, entry in yaml.safe_load((FIXTURES / "triton-families.yaml").read_text()).items():
        known[name] = {"type": entry["type"], "labels": set(entry["labels"]),
                       "values": {k: set(v) for k, v in (entry.get("values") or {}).items()},
                       "buckets": entry.get("default_buckets")}
    return known


def exported(url: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(httpx.get(url, timeout=5).text)}


@pytest.mark.parametrize("backend", ["llmapi", "engine"])
def test_families_labels_and_buckets_are_a_real_pods(backend: str, request: pytest.FixtureRequest) -> None:
    process: EmulatorProcess = request.getfixturevalue(backend)
    known = known_families()
    families = exported(process.metrics_url)
    for name, family in families.items():
        assert name in known, f"{name} is not a family a real pod exports"
        assert family.type == known[name]["type"], name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert labels == known[name]["labels"], name
        for label, allowed in known[name]["values"].items():
            assert {s.labels[label] for s in family.samples} <= allowed, (name, label)
        if family.type == "histogram":
            bounds = sorted({float(s.labels["le"]) for s in family.samples if "le" in s.labels})
            if name == "nv_inference_first_response_histogram_ms":
                expected = first_response_buckets(2000)  # the repository's model_metrics, around the SLO
            else:
                expected = known[name]["buckets"]
            assert bounds == [*map(float, expected), float("inf")], name
    trtllm = {n for n in families if n.startswith(("nv_trt_llm_", "nv_llm_"))}
    if backend == "llmapi":
        assert trtllm == set(), "the LLM-API model registers no metric family"
        assert {s.labels["model"] for s in families["nv_inference_request_success"].samples} == {LLMAPI}
    else:
        assert {"nv_trt_llm_request_metrics", "nv_llm_input_token_len", "nv_llm_output_token_len"} <= trtllm
        assert {s.labels["model"] for s in families["nv_inference_request_success"].samples} == {
            "ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"}


def test_a_full_queue_answers_503() -> None:
    small = EmulatorProcess.twin(pod_deployment(engine={"maxBatchSize": 1}),
                                 ["--load-seconds=0", "--max-queue=1", "--time-scale=1"]).start()
    try:
        def post(tokens: int) -> httpx.Response:
            return httpx.post(f"{small.url}/v2/models/{LLMAPI}/generate_stream", timeout=60,
                              json={"text_input": "x", "sampling_param_max_tokens": tokens, "streaming": True})

        with ThreadPoolExecutor(4) as pool:
            # One runs, one waits; the third finds the queue full.
            running = [pool.submit(post, 200) for _ in range(2)]
            # The first has its first token (it runs, batch of one), so the second waits.
            eventually(lambda: value(samples(small.metrics_url), "nv_inference_first_response_histogram_ms_count") >= 1,
                       timeout=10, interval=0.02)
            full = post(1)
            assert [f.result().status_code for f in running] == [200, 200]
        assert full.status_code == 503
        assert "queue is full" in full.json()["error"]
    finally:
        small.stop()


def test_readiness_waits_for_the_engine_load_time() -> None:
    slow = EmulatorProcess.twin(pod_deployment(), ["--load-seconds=2"]).start(wait_ready=False)
    try:
        started = time.monotonic()
        assert httpx.get(f"{slow.url}/v2/health/ready").status_code == 503
        response = httpx.post(f"{slow.url}/v2/models/{LLMAPI}/generate_stream", json={"text_input": "x"})
        assert response.status_code == 503
        eventually(lambda: httpx.get(f"{slow.url}/v2/health/ready").status_code == 200, timeout=10, interval=0.1)
        assert time.monotonic() - started > 1.5
    finally:
        slow.stop()


def test_sigterm_refuses_new_work_and_finishes_in_flight_requests() -> None:
    draining = EmulatorProcess.twin(pod_deployment(), ["--load-seconds=0", "--time-scale=1"]).start()
    received: list[str] = []

    def long_request() -> None:
        body = {"text_input": "x", "sampling_param_max_tokens": 150, "streaming": True}
        with httpx.stream("POST", f"{draining.url}/v2/models/{LLMAPI}/generate_stream", json=body, timeout=60) as s:
            received.extend(line for line in s.iter_lines() if line.startswith("data: {"))

    worker = threading.Thread(target=long_request)
    worker.start()
    eventually(lambda: received, timeout=10, interval=0.02)  # the request is streaming
    draining.terminate()
    eventually(lambda: httpx.get(f"{draining.url}/v2/health/ready").status_code == 503, timeout=10, interval=0.05)
    refused = httpx.post(f"{draining.url}/v2/models/{LLMAPI}/generate_stream", json={"text_input": "x"}, timeout=5)
    assert refused.status_code == 503
    worker.join(60)
    assert len(received) == 150, "the in-flight request finished"
    assert draining.process is not None
    assert draining.process.wait(15) == 0
