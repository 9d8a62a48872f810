"""The engine emulator as a process: Triton's HTTP and gRPC protocols through the real tritonclient,
generate and OpenAI streaming, errors and overload, metrics, readiness after load, SIGTERM drain."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families

from tests.support.emulator import EmulatorProcess

MODEL = "llama-3-1-8b"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(["--load-seconds=0", "--time-scale=20", "--seed=7"]).start()
    yield process
    process.stop()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name``; the parser reports a counter exported without `_total` (as
    Triton does) under the `_total` name."""
    wanted = {"model": MODEL, "version": "1", **labels}
    return sum(v for (n, ls), v in metrics.items()
               if n in (name, f"{name}_total") and all(dict(ls).get(k) == x for k, x in wanted.items()))


def infer_inputs(text: str, max_tokens: int) -> list[triton_http.InferInput]:
    prompt = triton_http.InferInput("text_input", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    limit = triton_http.InferInput("max_tokens", [1, 1], "INT32")
    limit.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    return [prompt, limit]


def test_tritonclient_http_readiness_metadata_and_infer(emulator: EmulatorProcess) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{emulator.http_port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert [i["name"] for i in metadata["inputs"]] == ["text_input", "max_tokens"]
    assert metadata["outputs"][0] == {"name": "text_output", "datatype": "BYTES", "shape": [-1, 1]}

    result = client.infer(MODEL, infer_inputs("one two three four", 6))
    (text,) = result.as_numpy("text_output").ravel()
    assert len(text.decode().split()) == 6


def test_tritonclient_grpc_infer(emulator: EmulatorProcess) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{emulator.grpc_port}")
    assert client.is_server_ready()
    assert client.get_model_metadata(MODEL).inputs[0].name == "text_input"
    prompt = triton_grpc.InferInput("text_input", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[b"hello world"]], dtype=object))
    limit = triton_grpc.InferInput("max_tokens", [1, 1], "INT32")
    limit.set_data_from_numpy(np.array([[3]], dtype=np.int32))
    (text,) = client.infer(MODEL, [prompt, limit]).as_numpy("text_output").ravel()
    assert len(text.decode().split()) == 3


def test_generate_and_generate_stream(emulator: EmulatorProcess) -> None:
    response = httpx.post(f"{emulator.url}/v2/models/{MODEL}/generate",
                          json={"text_input": "why is the sky blue", "max_tokens": 5}, timeout=10)
    assert response.status_code == 200
    assert len(response.json()["text_output"].split()) == 5

    events = []
    with httpx.stream("POST", f"{emulator.url}/v2/models/{MODEL}/generate_stream",
                      json={"text_input": "tell me", "max_tokens": 7}, timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert len(events) == 7
    assert all(e["model_name"] == MODEL and e["text_output"].strip() for e in events)


def test_openai_chat_stream_is_parsed_token_by_token(emulator: EmulatorProcess) -> None:
    arrivals, tokens, done = [], [], False
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12,
            "stream": True}
    # In real time (7.5 ms per token), so the spacing of tokens is measurable on a busy machine.
    real_time = EmulatorProcess(["--load-seconds=0", "--grpc-port=0"]).start()
    try:
        with httpx.stream("POST", f"{real_time.url}/v1/chat/completions", json=body, timeout=10) as stream:
            for line in stream.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    tokens.append(chunk["choices"][0]["delta"]["content"])
                    arrivals.append(time.monotonic())
    finally:
        real_time.stop()
    assert done
    assert len(tokens) == 12
    assert all(t.strip() for t in tokens)
    assert arrivals == sorted(arrivals)
    # Tokens arrive spread over time, one engine step (7.5 ms) apart, not in one burst at the end (the
    # engine may run up to 50 ms behind its timeline on a loaded machine and then catch up).
    assert arrivals[-1] - arrivals[0] > 11 * 0.0075 - 0.05

    completion = httpx.post(f"{emulator.url}/v1/completions",
                            json={"model": MODEL, "prompt": "a b c d", "max_tokens": 4}, timeout=10).json()
    assert completion["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}


def test_a_seed_makes_the_output_deterministic() -> None:
    def answers(seed: int) -> list[str]:
        process = EmulatorProcess(["--load-seconds=0", "--time-scale=20", f"--seed={seed}"]).start()
        try:
            return [str(httpx.post(f"{process.url}/v2/models/{MODEL}/generate", timeout=10,
                                   json={"text_input": "x", "max_tokens": 8}).json()["text_output"])
                    for _ in range(3)]
        finally:
            process.stop()

    first = answers(7)
    assert answers(7) == first
    assert answers(8) != first


@pytest.mark.parametrize(("path", "body", "status", "text"), [
    ("/v2/models/llama-3-1-8b/generate", "{not json", 400, "malformed JSON"),
    ("/v2/models/unknown/generate", '{"text_input": "x"}', 400, "unknown model: 'unknown'"),
    ("/v2/models/llama-3-1-8b/infer", '{"inputs": []}', 400, "expected input 'text_input'"),
    ("/v2/models/llama-3-1-8b/generate", '{"text_input": "x", "max_tokens": -3}', 400, "max_tokens"),
    ("/v1/completions", '{"model": "llama-3-1-8b"}', 400, "'prompt' is required"),
    ("/v1/chat/completions", '{"model": "gpt-4", "messages": [{"content": "x"}]}', 404, "unknown model"),
])
def test_bad_requests_get_4xx_with_an_error_body(emulator: EmulatorProcess, path: str, body: str,
                                                 status: int, text: str) -> None:
    response = httpx.post(f"{emulator.url}{path}", content=body, timeout=10,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert text in message


def test_an_overlong_prompt_is_rejected_and_counted(emulator: EmulatorProcess) -> None:
    before = samples(emulator.metrics_url)
    response = httpx.post(f"{emulator.url}/v2/models/{MODEL}/generate",
                          json={"text_input": "w " * 9000, "max_tokens": 4}, timeout=10)
    assert response.status_code == 400
    assert "exceeds the engine's max input length 8192" in response.json()["error"]
    after = samples(emulator.metrics_url)
    assert value(after, "nv_inference_request_failure", reason="REJECTED") \
        == value(before, "nv_inference_request_failure", reason="REJECTED") + 1


def test_counters_move_by_the_right_amounts_for_a_known_workload(emulator: EmulatorProcess) -> None:
    before = samples(emulator.metrics_url)
    prompts = [3, 10, 50, 200]
    outputs = [4, 8, 16, 32]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda po: httpx.post(f"{emulator.url}/v2/models/{MODEL}/generate", timeout=30, json={
            "text_input": " ".join(["w"] * po[0]), "max_tokens": po[1]}).raise_for_status(), zip(prompts, outputs,
                                                                                                strict=True)))
    after = samples(emulator.metrics_url)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    assert delta("nv_inference_request_success") == 4
    assert delta("nv_inference_count") == 4
    assert delta("nv_llm_output_tokens_total") == sum(outputs)
    assert delta("nv_llm_input_token_len_sum") == sum(prompts)
    assert delta("nv_llm_output_token_len_sum") == sum(outputs)
    assert delta("nv_inference_first_response_histogram_ms_count") == 4
    assert delta("nv_inference_request_duration_us") > 0
    assert value(after, "nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="tokens_per") == 64
    assert value(after, "nv_inference_pending_request_count") == 0
    utilisation = [v for (n, labels), v in after.items() if n == "nv_gpu_utilization"]
    assert len(utilisation) == 1, "one GPU per TP1 replica"
    assert 0 < utilisation[0] <= 1, "the engine was busy since the last scrape"


def test_a_full_queue_answers_503_and_429() -> None:
    small = EmulatorProcess(["--load-seconds=0", "--max-batch-size=1", "--max-queue=1", "--time-scale=1"]).start()
    try:
        def post(path: str, body: dict[str, object]) -> httpx.Response:
            return httpx.post(f"{small.url}{path}", json=body, timeout=60)

        with ThreadPoolExecutor(4) as pool:
            # One runs, one waits; the third finds the queue full.
            running = [pool.submit(post, f"/v2/models/{MODEL}/generate", {"text_input": "x", "max_tokens": 200})
                       for _ in range(2)]
            time.sleep(0.3)
            kserve = post(f"/v2/models/{MODEL}/generate", {"text_input": "x", "max_tokens": 1})
            openai = post("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1})
            assert [f.result().status_code for f in running] == [200, 200]
        assert kserve.status_code == 503
        assert "queue is full" in kserve.json()["error"]
        assert openai.status_code == 429
        assert openai.json()["error"]["type"] == "rate_limit_exceeded"
    finally:
        small.stop()


def test_readiness_waits_for_the_engine_load_time() -> None:
    slow = EmulatorProcess(["--load-seconds=2"]).start(wait_ready=False)
    try:
        started = time.monotonic()
        assert httpx.get(f"{slow.url}/v2/health/ready").status_code == 503
        response = httpx.post(f"{slow.url}/v2/models/{MODEL}/generate", json={"text_input": "x"})
        assert response.status_code == 503
        while httpx.get(f"{slow.url}/v2/health/ready").status_code != 200:
            time.sleep(0.1)
            assert time.monotonic() - started < 10
        assert time.monotonic() - started > 1.5
    finally:
        slow.stop()


def test_sigterm_refuses_new_work_and_finishes_in_flight_requests() -> None:
    draining = EmulatorProcess(["--load-seconds=0", "--time-scale=1"]).start()
    received: list[str] = []

    def long_request() -> None:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 150, "stream": True}
        with httpx.stream("POST", f"{draining.url}/v1/completions", json=body, timeout=60) as stream:
            received.extend(line for line in stream.iter_lines() if line.startswith("data: {"))

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(0.3)
    draining.terminate()
    time.sleep(0.2)
    refused = httpx.post(f"{draining.url}/v2/models/{MODEL}/generate", json={"text_input": "x"}, timeout=5)
    assert refused.status_code == 503
    assert httpx.get(f"{draining.url}/v2/health/ready").status_code == 503
    worker.join(60)
    assert len(received) == 150, "the in-flight request finished"
    assert draining.process is not None
    assert draining.process.wait(15) == 0
