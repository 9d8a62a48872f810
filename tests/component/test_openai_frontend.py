"""The emulator twin of a pod running Triton's OpenAI frontend, started from the rendered pod: the official
`openai` client (streaming and not, with usage), tritonclient on the KServe ports beside it, readiness, and
exactly Triton's metric families on the OpenAI port."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from prometheus_client.parser import text_string_to_metric_families

from crds.models import ModelDeployment
from inference_pods import repository
from inference_pods.emulator.pod import LaunchError, materialize, read_launch
from tests.support.emulator import EmulatorProcess, pod_deployment

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = ["--load-seconds=0", "--time-scale=20", "--seed=7"]
IMAGE = "registry.example/team/tritonserver-openai:25.12"


def openai_deployment(**spec: Any) -> ModelDeployment:
    return pod_deployment("tensorrt-engine", parallelism={"tensor": 2}, serving={"frontend": "openai"},
                          engine={"backend": "tensorrt-engine", "image": IMAGE}, **spec)


@pytest.fixture(scope="module")
def pod() -> Iterator[EmulatorProcess]:
    process = EmulatorProcess.twin(openai_deployment(), FAST).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(pod: EmulatorProcess) -> Iterator[openai.OpenAI]:
    """The official client on the pod's OpenAI port (no key is checked; retries off so errors show)."""
    with openai.OpenAI(base_url=f"{pod.openai_url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def test_chat_completions_stream_token_by_token_with_usage(api: openai.OpenAI) -> None:
    stream = api.chat.completions.create(
        model="ensemble", messages=[{"role": "user", "content": "why is the sky blue"}], max_tokens=6,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(content) == 6 and all(t.strip() for t in content)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 6, 11)


def test_completions_with_and_without_streaming(api: openai.OpenAI) -> None:
    answer = api.completions.create(model="tensorrt_llm_bls", prompt="a b c", max_tokens=4)
    assert len(answer.choices[0].text.split()) == 4 and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 4)
    chunks = list(api.completions.create(model="ensemble", prompt="hello", max_tokens=5, stream=True))
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 4 + ["stop"]
    # No max_tokens: main.py's --default-max-tokens, 16.
    assert len(api.completions.create(model="ensemble", prompt="x").choices[0].text.split()) == 16


def test_models_readiness_and_errors_are_the_frontends(pod: EmulatorProcess, api: openai.OpenAI) -> None:
    listed = {m.id for m in api.models.list()}
    assert listed == {"ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"}
    assert httpx.get(f"{pod.openai_url}/health/ready", timeout=5).status_code == 200
    # FastAPI's HTTPException bodies, {"detail": ...}, not OpenAI's error objects.
    with pytest.raises(openai.BadRequestError) as unknown:
        api.completions.create(model="nope", prompt="x")
    assert unknown.value.response.json() == {"detail": "Unknown model: nope"}
    # A model that takes token ids: Triton refuses the frontend's inputs, the frontend answers 500.
    with pytest.raises(openai.InternalServerError) as refused:
        api.completions.create(model="tensorrt_llm", prompt="x")
    assert refused.value.response.json()["detail"] == "unexpected inference input 'text_input' for model 'tensorrt_llm'"
    missing = httpx.get(f"{pod.openai_url}/v1/models/nope", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Unknown model: nope"}


def test_tritonclient_keeps_working_on_the_kserve_frontends(pod: EmulatorProcess) -> None:
    http = triton_http.InferenceServerClient(f"127.0.0.1:{pod.http_port}")
    assert http.is_server_ready() and http.is_model_ready("ensemble")
    grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{pod.grpc_port}")
    results: queue.Queue[Any] = queue.Queue()
    grpc.start_stream(callback=lambda result, error: results.put(error or result))
    prompt = triton_grpc.InferInput("text_input", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[b"hello world"]], dtype=object))
    limit = triton_grpc.InferInput("max_tokens", [1, 1], "INT32")
    limit.set_data_from_numpy(np.array([[3]], dtype=np.int32))
    stream = triton_grpc.InferInput("stream", [1, 1], "BOOL")
    stream.set_data_from_numpy(np.array([[True]]))
    grpc.async_stream_infer("ensemble", [prompt, limit, stream], enable_empty_final_response=True)
    tokens = []
    while True:
        result = results.get(timeout=10)
        assert not isinstance(result, Exception), result
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
        tokens.append(result.as_numpy("text_output")[0].decode())
    grpc.stop_stream()
    assert len(tokens) == 3


def known_families() -> dict[str, str]:
    """Family -> type of a real pod: the cited exposition and table (tests/component/test_emulator.py)."""
    known = {("nv_inference_first_response_histogram_ms" if f.name == "nv_first_response_histogram_ms" else f.name):
             f.type for f in text_string_to_metric_families((FIXTURES / "triton-trtllm-metrics.txt").read_text())}
    known.update({n: e["type"] for n, e in yaml.safe_load((FIXTURES / "triton-families.yaml").read_text()).items()})
    return known


def test_metrics_are_tritons_on_the_openai_port_without_latency_histograms(pod: EmulatorProcess,
                                                                            api: openai.OpenAI) -> None:
    def families() -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(httpx.get(pod.metrics_url, timeout=5).text)}

    assert pod.metrics_url == f"{pod.openai_url}/metrics"
    before = families()
    api.completions.create(model="ensemble", prompt="count me", max_tokens=2)
    after = families()
    known = known_families()
    for name, family in after.items():
        assert known.get(name) == family.type, f"{name} is not a family a real pod exports"
    # main.py's in-process server has no metrics configuration: counters on, histograms off.
    assert "nv_inference_first_response_histogram_ms" not in after
    assert {"nv_trt_llm_request_metrics", "nv_llm_output_token_len"} <= set(after)

    def success(fams: dict[str, Any], model: str) -> float:
        return sum(s.value for s in fams["nv_inference_request_success"].samples if s.labels["model"] == model)

    assert success(after, "ensemble") - success(before, "ensemble") == 1
    assert success(after, "tensorrt_llm") - success(before, "tensorrt_llm") == 1
    # No tritonserver metrics listener: the rendered pod names no metrics port at all.
    assert pod.metrics_port == 0


def test_a_repository_without_the_frontends_inputs_fails_as_triton_would(tmp_path: Path) -> None:
    md = openai_deployment()
    command, prepared = materialize(md, tmp_path)
    assert prepared.returncode == 0
    plain = md.model_copy(update={"spec": md.spec.model_copy(update={"serving": md.spec.serving.model_copy(
        update={"frontend": "triton"})})})
    served = tmp_path / repository.CachePaths.of(md.spec).repository.lstrip("/") / "ensemble" / "config.pbtxt"
    served.write_text(repository.model_repository(plain.spec)["ensemble/config.pbtxt"])
    process = EmulatorProcess(FAST, None, md.spec.ports.http, md.spec.ports.grpc, 0, command, tmp_path,
                              openai_port=md.spec.ports.openai, env=repository.launch_env(md.spec)).start()
    try:
        response = httpx.post(f"{process.openai_url}/v1/completions", timeout=10,
                              json={"model": "ensemble", "prompt": "x", "max_tokens": 2})
        assert response.status_code == 500
        assert response.json() == {"detail": "unexpected inference input 'return_num_input_tokens' for model "
                                              "'ensemble'"}
    finally:
        process.stop()


def test_a_multi_gpu_engine_in_one_process_needs_orchestrator_mode(tmp_path: Path) -> None:
    md = openai_deployment()
    command, _ = materialize(md, tmp_path)
    env = {"TOKENWORKS_ENGINE_CONFIG": "/etc/tokenworks/engine.json"}
    with pytest.raises(LaunchError, match="needs TRTLLM_ORCHESTRATOR=1"):
        read_launch(command, tmp_path, env)
    launch = read_launch(command, tmp_path, {**env, **repository.launch_env(md.spec)})
    assert (launch.frontend, launch.openai_port, launch.metrics_port, launch.histograms) == (
        "openai", md.spec.ports.openai, 0, False)
