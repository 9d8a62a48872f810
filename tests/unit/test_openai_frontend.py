"""The OpenAI frontend as the pod's process: its command line against NVIDIA's (cited fixture), ports,
probes and scraping, the repository it needs, and the rules that keep it to what it can serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from crds.models import ModelDeployment
from inference_pods import repository, templates
from inference_pods.emulator.pod import parse_model_config

LAUNCH = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "openai-frontend-launch.yaml")
                        .read_text())["launch"]
IMAGE = "registry.example/team/tritonserver-openai:25.12"


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "llama", "profile": "Llama-3.1-8B", "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
        "gpu": {"product": "H100-SXM"}, "parallelism": {"tensor": 2},
        "engine": {"backend": "tensorrt-engine", "image": IMAGE}, "serving": {"frontend": "openai"},
    }
    body.update(overrides)
    return body


def md(**overrides: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "llama", "namespace": "ns", "uid": "u"},
                                           "spec": spec(**overrides)})


def parse(command: list[str]) -> dict[str, Any]:
    """The command line as main.py's parser reads it, from the fixture's list of its arguments."""
    assert command[:2] == [LAUNCH["interpreter"], f"{LAUNCH['frontend_dir']}/{LAUNCH['script']}"]
    args: dict[str, Any] = {}
    for arg in command[2:]:
        name, has_value, value = arg.partition("=")
        assert name in LAUNCH["arguments"], f"main.py takes no {name}"
        kind = LAUNCH["arguments"][name]["kind"]
        assert (kind == "flag") == (not has_value), arg
        args[name] = value if has_value else True
    required = {n for n, a in LAUNCH["arguments"].items() if a.get("required")}
    assert required <= set(args)
    return args


def test_the_command_line_is_main_py_with_the_kserve_frontends_on_the_spec_ports() -> None:
    model = md(ports={"http": 8100, "grpc": 8101, "metrics": 8102, "openai": 9100})
    paths = repository.CachePaths.of(model.spec)
    args = parse(repository.launch_command(model.spec))
    assert args == {
        "--model-repository": paths.repository, "--tokenizer": paths.weights, "--host": "0.0.0.0",
        "--openai-port": "9100", "--enable-kserve-frontends": True, "--kserve-http-port": "8100",
        "--kserve-grpc-port": "8101"}
    # One process whatever the GPUs: TensorRT-LLM in orchestrator mode, as NVIDIA's README sets it.
    assert repository.launch_env(model.spec) == LAUNCH["env"]
    assert repository.launch_env(md(serving={"frontend": "triton"}, engine={"backend": "tensorrt-engine"}).spec) == {}


def test_extra_args_go_to_main_py() -> None:
    model = md(engine={"backend": "tensorrt-engine", "image": IMAGE, "extraArgs": ["--tool-call-parser=llama3"]})
    assert parse(repository.launch_command(model.spec))["--tool-call-parser"] == "llama3"


def test_the_pod_serves_probes_and_metrics_on_the_openai_port() -> None:
    model = md()
    pod = templates.deployment(model, 1, "h")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 8000), ("grpc", 8001), ("openai", 9000)]
    assert {"name": "TRTLLM_ORCHESTRATOR", "value": "1"} in container["env"]
    ready = {"path": "/health/ready", "port": "openai"}
    assert container["readinessProbe"]["httpGet"] == container["startupProbe"]["httpGet"] == ready
    # The KServe HTTP frontend main.py starts beside the OpenAI one keeps Triton's liveness route.
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9000"
    monitor = templates.pod_monitor(model)
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "openai", "interval": "15s", "path": "/metrics"}]
    assert "/metrics" in LAUNCH["routes"] and "/health/ready" in LAUNCH["routes"]
    service = templates.service(model)
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 8000, "http"), ("grpc", 8001, "grpc"), ("openai", 9000, "openai")]


def test_the_triton_frontend_is_unchanged() -> None:
    model = md(serving={"frontend": "triton"}, engine={"backend": "tensorrt-engine"})
    (container,) = templates.deployment(model, 1, "h")["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "mpirun" and container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert [p["name"] for p in container["ports"]] == ["http", "grpc", "metrics"]
    assert templates.pod_monitor(model)["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert "OPENAI" not in str(repository.model_repository(model.spec)).upper()


def inputs(config: Any) -> set[str]:
    return {i.name for i in config.input}


def test_the_served_models_take_what_the_frontend_sends_and_return_usage() -> None:
    files = repository.model_repository(md().spec)
    configs = {path.split("/")[0]: parse_model_config(text, path) for path, text in files.items()}
    sent = set(LAUNCH["request_inputs"])
    for served in ("ensemble", "tensorrt_llm_bls"):
        assert sent <= inputs(configs[served]), served
        assert set(LAUNCH["usage_outputs"]) <= {o.name for o in configs[served].output}, served
    # The ensemble carries them to the engine model (and stop words through the tokenizer).
    steps = {s.model_name: s for s in configs["ensemble"].ensemble_scheduling.step}
    trtllm = steps["tensorrt_llm"]
    assert {"return_num_input_tokens", "return_num_output_tokens", "stop_words_list"} <= set(trtllm.input_map)
    assert set(trtllm.input_map) <= inputs(configs["tensorrt_llm"])
    assert set(trtllm.output_map.values()) >= {"num_input_tokens", "num_output_tokens"}
    assert steps["preprocessing"].output_map["STOP_WORDS_IDS"] == trtllm.input_map["stop_words_list"]
    # Orchestrator mode spawns the C++ backend's worker per GPU.
    assert configs["tensorrt_llm"].parameters["executor_worker_path"].string_value == repository.EXECUTOR_WORKER_PATH
    assert isinstance(configs["tensorrt_llm"], model_config_pb2.ModelConfig)


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"engine": {"backend": "llmapi", "image": IMAGE}}, "needs engine.backend tensorrt-engine"),
    ({"engine": {"backend": "tensorrt-engine"}}, "needs engine.image"),
    ({"serving": {"frontend": "triton"}, "engine": {"backend": "tensorrt-engine"},
      "routing": {"inferencePool": {"endpointPicker": {"name": "epp"}}}},
     "routing.inferencePool needs serving.frontend"),
])
def test_what_the_frontend_cannot_serve_is_refused(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        md(**overrides)


def test_every_parallelism_of_one_node_is_one_process() -> None:
    for tensor, pipeline in ((1, 1), (2, 1), (4, 2), (8, 1)):
        model = md(parallelism={"tensor": tensor, "pipeline": pipeline})
        command = repository.launch_command(model.spec)
        assert command.count("python3") == 1 and "mpirun" not in command and ":" not in command
