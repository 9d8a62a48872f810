"""The rendered Triton model repository, launch and prepare step: every config.pbtxt parses with Triton's
own model_config_pb2 and holds the spec's values; layout and launch match NVIDIA's documented ones; the
prepare script (run for real against stand-in tools) caches by key and names each failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from crds.models import ModelDeployment
from inference_pods.emulator.pod import materialize, parse_model_config
from inference_pods.repository import (
    CachePaths,
    cache_inputs,
    cache_key,
    engine_build_commands,
    first_response_buckets,
    launch_command,
    model_repository,
    prepare_script,
    resolved_image,
)

FIXTURE = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-launch.yaml").read_text())


def md(backend: str = "llmapi", **spec: Any) -> ModelDeployment:
    body: dict[str, Any] = {
        "model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
        "engine": {"backend": backend, "maxBatchSize": 64, "maxNumTokens": 4096, "maxInputLength": 2048,
                   "maxOutputLength": 1024, "kvCacheFreeGpuMemFraction": 0.5, "maxQueueDelayMicroseconds": 100},
        "gpu": {"product": "H100-SXM"}, "parallelism": {"tensor": 2},
        "autoscaling": {"slo": {"ttftMilliseconds": 800}},
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return ModelDeployment.model_validate({"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": body})


@pytest.mark.parametrize("backend", ["llmapi", "tensorrt-engine"])
def test_the_layout_is_nvidias(backend: str) -> None:
    files = model_repository(md(backend).spec)
    expected = FIXTURE["layouts"][backend]
    assert {path.split("/")[0] for path in files} == set(expected)
    for model, want in expected.items():
        config = parse_model_config(files[f"{model}/config.pbtxt"])
        assert config.name == model
        assert config.backend == want.get("backend", "")
        assert config.platform == want.get("platform", "")
        assert [s.model_name for s in config.ensemble_scheduling.step] == want.get("steps", [])
        for extra in want.get("files", []):
            assert f"{model}/{extra}" in files


def test_llmapi_config_and_model_yaml_hold_the_spec() -> None:
    files = model_repository(md().spec)
    config = parse_model_config(files["tensorrt_llm/config.pbtxt"])
    # Streaming needs decoupled, set in config.pbtxt: the launcher disables auto-complete, so
    # model.yaml's triton_config is never applied.
    assert config.model_transaction_policy.decoupled is True
    assert {"text_input", "streaming", "sampling_param_max_tokens"} <= {i.name for i in config.input}
    (control,) = config.model_metrics.metric_control
    assert control.metric_identifier.family == "nv_inference_first_response_histogram_ms"
    assert list(control.histogram_options.buckets) == first_response_buckets(800)
    llm = yaml.safe_load(files["tensorrt_llm/1/model.yaml"])
    assert llm == {
        "model": CachePaths.of(md().spec).weights, "backend": "pytorch", "dtype": "bfloat16", "tensor_parallel_size": 2,
        "pipeline_parallel_size": 1, "max_batch_size": 64, "max_num_tokens": 4096, "max_seq_len": 3072,
        "enable_chunked_prefill": True, "kv_cache_config": {"free_gpu_memory_fraction": 0.5},
        "triton_config": {"max_batch_size": 0, "decoupled": True}}


def test_engine_configs_hold_the_spec() -> None:
    spec = md("tensorrt-engine").spec
    files = model_repository(spec)
    trtllm = parse_model_config(files["tensorrt_llm/config.pbtxt"])
    assert trtllm.max_batch_size == 64 and trtllm.model_transaction_policy.decoupled is True
    assert trtllm.dynamic_batching.max_queue_delay_microseconds == 100
    parameters = {k: v.string_value for k, v in trtllm.parameters.items()}
    assert parameters["gpt_model_type"] == "inflight_fused_batching"
    assert parameters["gpt_model_path"] == CachePaths.of(spec).engine
    assert parameters["kv_cache_free_gpu_mem_fraction"] == "0.5"
    assert parameters["enable_chunked_context"] == "true"
    for model in ("preprocessing", "postprocessing"):
        config = parse_model_config(files[f"{model}/config.pbtxt"])
        assert config.parameters["tokenizer_dir"].string_value == CachePaths.of(spec).weights
    assert parse_model_config(files["tensorrt_llm_bls/config.pbtxt"]).model_transaction_policy.decoupled


def test_first_response_buckets_bracket_the_target() -> None:
    buckets = first_response_buckets(2000)
    assert 2000 in buckets and min(buckets) < 500 and max(buckets) >= 8000
    assert buckets == sorted(set(buckets))


def expected_rank(spec: Any, rank: int) -> list[str]:
    values = {"repo": CachePaths.of(spec).repository, "grpc": spec.ports.grpc, "http": spec.ports.http,
              "metrics": spec.ports.metrics, "rank": rank}
    return [a.format(**values) for a in FIXTURE["launch"]["rank"]]


@pytest.mark.parametrize(("backend", "world"), [("tensorrt-engine", 2), ("llmapi", 1)])
def test_the_launch_is_what_nvidias_launcher_runs(backend: str, world: int) -> None:
    spec = md(backend).spec
    command = launch_command(spec)
    assert command[:2] == FIXTURE["launch"]["prefix"]
    ranks = " ".join(command[2:]).split(" : ")
    assert len(ranks) == world == (spec.gpus_per_replica if backend == "tensorrt-engine"
                                   else FIXTURE["launch"]["llmapi_world_size"])
    for rank, text in enumerate(ranks):
        args = text.split(" ")
        documented = expected_rank(spec, rank)
        assert args[: len(documented)] == documented
        extra = args[len(documented):]
        if rank:
            assert extra == FIXTURE["launch"]["other_ranks"]
        else:
            assert "--metrics-config=histogram_latencies=true" in extra  # the TTFT histogram is off by default


def test_cache_key_changes_with_what_changes_the_artefacts() -> None:
    base = cache_key(md().spec)
    for change in ({"engine": {"maxBatchSize": 32}}, {"engine": {"precision": "fp8"}},
                   {"parallelism": {"tensor": 4}}, {"gpu": {"product": "H200-SXM"}},
                   {"model": {"revision": "abc"}},
                   {"engine": {"image": "nvidia/tritonserver:26.08-trtllm-python-py3"}},
                   {"engine": {"kvCachePrecision": "bf16"}}):
        assert cache_key(md(**change).spec) != base, change
    assert cache_key(md(replicas=5).spec) == base
    assert cache_key(md(autoscaling={"enabled": True}).spec) == base
    # The fields issue 15 added leave the key of a spec that does not set them as it was.
    assert cache_key(md(engine={"kvCachePrecision": "auto"}).spec) == base


def test_images_get_the_registry_only_when_they_name_none() -> None:
    spec = md().spec
    assert resolved_image(spec) == "nvidia/tritonserver:26.07-trtllm-python-py3"
    assert resolved_image(spec, "mirror.example/") == "mirror.example/nvidia/tritonserver:26.07-trtllm-python-py3"
    pinned = md(engine={"image": "mirror.example:5000/triton:1"}).spec
    assert resolved_image(pinned, "other.example") == "mirror.example:5000/triton:1"


def test_prepare_runs_once_per_cache_key(tmp_path: Path) -> None:
    deployment = md()
    command, first = materialize(deployment, tmp_path)
    assert first.returncode == 0, first.output
    assert "fetching weights" in first.output
    repository = tmp_path / CachePaths.of(deployment.spec).repository.lstrip("/")
    assert (repository / "tensorrt_llm" / "1" / "model.py").exists()  # NVIDIA's, from the image
    assert (repository / "tensorrt_llm" / "1" / "model.yaml").exists()
    _, second = materialize(deployment, tmp_path)
    assert second.returncode == 0 and "prepared already" in second.output
    assert command == launch_command(deployment.spec)


def test_the_engine_is_built_with_the_spec_limits(tmp_path: Path) -> None:
    deployment = md("tensorrt-engine")
    _, prepared = materialize(deployment, tmp_path)
    assert prepared.returncode == 0, prepared.output
    engine = json.loads((tmp_path / CachePaths.of(deployment.spec).engine.lstrip("/") / "config.json").read_text())
    for flag in ("--max_batch_size 64", "--max_num_tokens 4096", "--max_input_len 2048", "--max_seq_len 3072",
                 "--use_paged_context_fmha enable", "--workers 2"):
        assert flag in engine["build_args"], flag


def test_an_fp8_kv_cache_over_16_bit_weights_is_quantised_into_the_engine(tmp_path: Path) -> None:
    # kvCachePrecision fp8 with bf16 weights: quantize.py calibrates only the KV scales (full_prec weights);
    # convert_checkpoint.py would build a 16-bit cache whatever model.yaml says.
    fp8_kv = md("tensorrt-engine", engine={"precision": "bf16", "kvCachePrecision": "fp8"})
    convert = engine_build_commands(fp8_kv.spec)[0]
    assert "quantization/quantize.py" in convert and "convert_checkpoint.py" not in convert
    assert "--dtype bfloat16 --qformat full_prec --kv_cache_dtype fp8" in convert
    assert "--tp_size 2 --pp_size 1" in convert
    assert convert in prepare_script(fp8_kv.spec)
    plain = md("tensorrt-engine", engine={"precision": "bf16"})
    assert "--kv_cache_dtype" not in engine_build_commands(plain.spec)[0]
    assert cache_key(fp8_kv.spec) != cache_key(plain.spec), "a different engine: a different cache key"
    # Engines built before the FP8 cache was honoured here hold a 16-bit one under the same spec fields:
    # the build recipe is in the key, so they are rebuilt, not reused.
    assert cache_inputs(fp8_kv.spec)["kvCacheBuild"] == "modelopt-full-prec"
    on_llmapi = md("llmapi", engine={"precision": "bf16", "kvCachePrecision": "fp8"})
    assert "kvCacheBuild" not in cache_inputs(on_llmapi.spec)
    _, prepared = materialize(fp8_kv, tmp_path)
    assert prepared.returncode == 0, prepared.output


@pytest.mark.parametrize(("hub", "reason"), [
    ("gated", "GatedModel"), ("missing-repository", "ModelNotFound"),
    ("missing-revision", "RevisionNotFound"), ("full", "ModelCacheFull")])
def test_a_failed_fetch_names_its_cause(tmp_path: Path, hub: str, reason: str) -> None:
    _, prepared = materialize(md(model={"revision": "v9"}), tmp_path, env={"TOKENWORKS_FAKE_HUB": hub})
    assert prepared.returncode == 1
    assert prepared.termination_message.split(": ", 1)[0] == reason, prepared.termination_message
    if reason == "RevisionNotFound":
        assert "revision v9 does not exist for meta-llama/Llama-3.1-8B-Instruct" in prepared.termination_message
    assert not (tmp_path / CachePaths.of(md().spec).marker.lstrip("/")).exists()


def test_a_hostile_model_id_is_never_run_by_the_shell(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = md(model={"huggingFace": f'a/b"$(touch {marker})`touch {marker}`', "revision": f"v$(touch {marker})"})
    _, prepared = materialize(hostile, tmp_path / "pod", env={"TOKENWORKS_FAKE_HUB": "gated"})
    assert prepared.termination_message.startswith("GatedModel: a/b\"$(touch")
    assert not marker.exists()


def test_ngc_weights_land_in_the_weights_folder(tmp_path: Path) -> None:
    deployment = md(model={"name": "m", "profile": "Llama-3.1-8B", "ngc": "nvidia/llama-3.1-8b:1.0"})
    raw = deployment.model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["model"].pop("huggingFace")
    deployment = ModelDeployment.model_validate(raw)
    _, prepared = materialize(deployment, tmp_path)
    assert prepared.returncode == 0, prepared.output
    assert (tmp_path / CachePaths.of(deployment.spec).weights.lstrip("/") / "config.json").exists()


def test_a_failed_build_is_not_taken_for_a_hub_error(tmp_path: Path) -> None:
    # A build log full of numbers (40326 MiB, 403 kernels) is a build failure, not a credential error.
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "trtllm-build").write_text("#!/bin/bash\necho 'used 40326 MiB; 403 kernels; aggregated'; exit 1\n")
    (broken / "trtllm-build").chmod(0o755)
    root = tmp_path / "pod"
    stand_ins = root / ".image" / "bin"  # materialize writes the other stand-ins there
    _, prepared = materialize(md("tensorrt-engine"), root, env={"PATH": f"{broken}:{stand_ins}:/usr/bin:/bin"})
    assert prepared.returncode == 1
    assert prepared.termination_message.startswith("EngineBuildFailed:"), prepared.termination_message
