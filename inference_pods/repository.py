"""The Triton model repository, preparation script and launch command of a ModelDeployment (pure).

Two backends, as NVIDIA documents them (docs/design/serving-path.md cites each choice):

- ``llmapi``: one Python-backend model ``tensorrt_llm`` whose ``1/model.yaml`` holds the LLM-API
  arguments (``all_models/llmapi`` in TensorRT-LLM's ``triton_backend``); no engine is built.
- ``tensorrt-engine``: the inflight-batcher layout (``preprocessing``, ``tensorrt_llm``,
  ``postprocessing``, ``ensemble``, ``tensorrt_llm_bls``) over an engine that ``trtllm-build`` writes
  once into the model cache.

The ``config.pbtxt`` files are written here in Triton's model-config text format with the spec's
values (what NVIDIA's ``fill_template.py`` does to its templates); a test parses every one with
Triton's own ``model_config_pb2``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from crds.models import DEFAULT_IMAGES, OPENAI_FRONTEND_DIR, ModelDeploymentSpec
from inference_pods.groups import gpus_per_pod, needs_multi_node

MODEL_CACHE_PATH = "/model-cache"
CONFIG_PATH = "/etc/tokenworks"  # the ConfigMap: repository files, prepare script, engine.json
TRTLLM_MODEL = "tensorrt_llm"  # the model whose series the autoscaler reads, on both backends
# What a client sends each backend's served model: (model, the output-length input, the streaming input).
# The LLM-API model takes sampling parameters; the engine path's ensemble takes the template's inputs.
REQUEST_SHAPE: dict[str, tuple[str, str, str]] = {
    "llmapi": (TRTLLM_MODEL, "sampling_param_max_tokens", "streaming"),
    "tensorrt-engine": ("ensemble", "max_tokens", "stream"),
}
# Triton's defaults for nv_inference_first_response_histogram_ms (core metric_model_reporter.h).
TRITON_DEFAULT_FIRST_RESPONSE_BUCKETS_MS = (100.0, 500.0, 2000.0, 5000.0)
# Where the NGC Triton TRT-LLM images keep the backend's model templates and tools; the prepare step
# copies NVIDIA's model.py files from here (override with TOKENWORKS_TRITON_BACKEND_DIR).
IMAGE_BACKEND_DIR = "/app"  # Dockerfile.triton.trt_llm_backend: WORKDIR /app; COPY scripts, all_models, tools, examples
# termination message reasons the prepare step writes; the operator turns them into conditions.
PREPARE_REASONS = ("GatedModel", "ModelNotFound", "RevisionNotFound", "ModelCacheFull", "CredentialsInvalid",
                   "EngineBuildFailed", "DownloadFailed", "RepositoryIncomplete")


def resolved_image(spec: ModelDeploymentSpec, registry: str = "") -> str:
    """The container image: the spec's, else the one pinned for its backend; a registry host is
    prefixed only to a reference that names none (its first part has no '.' or ':')."""
    image = spec.engine.image or DEFAULT_IMAGES[spec.engine.backend]
    first = image.split("/", 1)[0]
    has_host = "/" in image and ("." in first or ":" in first or first == "localhost")
    return f"{registry.rstrip('/')}/{image}" if registry and not has_host else image


# -- cache layout ---------------------------------------------------------------------------
def _digest(values: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def weights_key(spec: ModelDeploymentSpec) -> str:
    """Downloaded weights depend only on where they come from and the revision."""
    model = spec.model
    source = model.hugging_face or model.ngc or (model.pvc.claim_name + ":" + model.pvc.path if model.pvc else "")
    return _digest({"source": source, "revision": model.revision})


def cache_key(spec: ModelDeploymentSpec, registry: str = "") -> str:
    """Everything that changes what the prepare step produces: a restart or a new replica with the same
    key finds it ready and skips the download and the engine build."""
    return _digest(cache_inputs(spec, registry))


def cache_inputs(spec: ModelDeploymentSpec, registry: str = "") -> dict[str, object]:
    """What ``cache_key`` hashes."""
    engine = spec.engine
    # An FP8 cache over 16-bit weights is built by ModelOpt since it was first honoured on the engine path;
    # engines built before under the same fields hold a 16-bit cache, so the recipe is part of the key.
    fp8_kv_build = engine.backend == "tensorrt-engine" and fp8_kv_over_16_bit(spec)
    return {
        "weights": weights_key(spec), "backend": engine.backend, "image": resolved_image(spec, registry),
        "precision": engine.precision, "tp": spec.parallelism.tensor, "pp": spec.parallelism.pipeline,
        "maxBatchSize": engine.max_batch_size, "maxNumTokens": engine.max_num_tokens,
        "maxInputLength": engine.max_input_length, "maxOutputLength": engine.max_output_length,
        "gpu": spec.gpu.product,
        # Added with issue 15, only where set: the keys of specs without them (and their cached engines) stay.
        **({"kvCachePrecision": engine.kv_cache_precision} if engine.kv_cache_precision != "auto" else {}),
        **({"expert": spec.parallelism.expert} if spec.parallelism.expert != 1 else {}),
        **({"attentionDataParallel": True} if spec.parallelism.attention_data_parallel else {}),
        **({"kvCacheBuild": "modelopt-full-prec"} if fp8_kv_build else {}),
    }


@dataclass(frozen=True)
class CachePaths:
    root: str  # /model-cache/tokenworks
    weights: str
    prepared: str  # everything keyed by cache_key
    repository: str
    engine: str
    marker: str  # written last: its presence means the prepared tree is complete

    @classmethod
    def of(cls, spec: ModelDeploymentSpec, registry: str = "") -> CachePaths:
        root = f"{MODEL_CACHE_PATH}/tokenworks"
        prepared = f"{root}/prepared/{cache_key(spec, registry)}"
        return cls(root, f"{root}/weights/{weights_key(spec)}", prepared, f"{prepared}/repository",
                   f"{prepared}/engine", f"{prepared}/.complete")


# -- model-config text format ----------------------------------------------------------------
def _quote(value: str) -> str:
    return json.dumps(value)  # protobuf text format accepts JSON's escaping for strings


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False

    def render(self) -> str:
        parts = [f"name: {_quote(self.name)}", f"data_type: {self.data_type}",
                 f"dims: [ {', '.join(str(d) for d in self.dims)} ]"]
        if self.optional:
            parts.append("optional: true")
        return "  {\n" + "".join(f"    {p}\n" for p in parts) + "  }"


def _tensors(kind: str, tensors: Iterable[Tensor]) -> str:
    return f"{kind} [\n" + ",\n".join(t.render() for t in tensors) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(f"parameters: {{\n  key: {_quote(k)}\n  value: {{ string_value: {_quote(v)} }}\n}}\n"
                   for k, v in values.items())


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def first_response_buckets(ttft_target_ms: int) -> list[float]:
    """Bucket bounds for the TTFT histogram that bracket the SLO: the target itself (so the share of
    requests over it is exact, not interpolated), fractions below it to see the headroom, multiples
    above to see how far a miss goes. A 2,000 ms target gives 125, 250, 500, 1000, 1500, 2000, 2500,
    3000, 4000, 8000, 16000 ms; Triton's own default (100, 500, 2000, 5000) would put the p95 of a
    healthy deployment somewhere in a 1,500 ms wide bucket."""
    t = float(ttft_target_ms)
    bounds = {t * f for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1, 5 / 4, 3 / 2, 2, 4, 8)}
    return sorted(round(b, 3) for b in bounds if b >= 1)


def _model_metrics(buckets: list[float]) -> str:
    return ("model_metrics {\n  metric_control: [\n    {\n      metric_identifier: {\n"
            "        family: \"nv_inference_first_response_histogram_ms\"\n      }\n"
            "      histogram_options: {\n"
            f"        buckets: [ {', '.join(_number(b) for b in buckets)} ]\n      }}\n    }}\n  ]\n}}\n")


def _instance_group(count: int = 1) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: KIND_CPU\n  }}\n]\n"


def _header(name: str, backend: str | None, max_batch_size: int, decoupled: bool | None,
            platform: str | None = None) -> str:
    lines = [f"name: {_quote(name)}"]
    if backend:
        lines.append(f"backend: {_quote(backend)}")
    if platform:
        lines.append(f"platform: {_quote(platform)}")
    lines.append(f"max_batch_size: {max_batch_size}")
    text = "\n".join(lines) + "\n"
    if decoupled is not None:
        text += f"model_transaction_policy {{\n  decoupled: {'true' if decoupled else 'false'}\n}}\n"
    return text


# -- llmapi ----------------------------------------------------------------------------------------
LLMAPI_INPUTS = (
    Tensor("text_input", "TYPE_STRING", (-1,)),
    Tensor("streaming", "TYPE_BOOL", (1,), optional=True),
    Tensor("sampling_param_max_tokens", "TYPE_INT32", (1,), optional=True),
    Tensor("sampling_param_temperature", "TYPE_FP32", (1,), optional=True),
    Tensor("sampling_param_top_p", "TYPE_FP32", (1,), optional=True),
    Tensor("sampling_param_top_k", "TYPE_INT32", (1,), optional=True),
    Tensor("sampling_param_seed", "TYPE_UINT64", (1,), optional=True),
    Tensor("sampling_param_return_perf_metrics", "TYPE_BOOL", (1,), optional=True),
)
LLMAPI_OUTPUTS = (
    Tensor("text_output", "TYPE_STRING", (-1,)),
    Tensor("finish_reason", "TYPE_STRING", (-1,)),
    Tensor("stop_reason", "TYPE_STRING", (-1,)),
    Tensor("cumulative_logprob", "TYPE_FP32", (-1,)),
)


def llmapi_config(spec: ModelDeploymentSpec) -> str:
    """``tensorrt_llm/config.pbtxt``: a decoupled Python model (streaming needs decoupled); Triton does
    no batching for it (``max_batch_size: 0``), the LLM API batches in flight."""
    buckets = first_response_buckets(spec.autoscaling.slo.ttft_milliseconds)
    return (_header(TRTLLM_MODEL, "python", 0, True) + _tensors("input", LLMAPI_INPUTS)
            + _tensors("output", LLMAPI_OUTPUTS) + _instance_group() + _model_metrics(buckets))


def llmapi_model_yaml(spec: ModelDeploymentSpec, paths: CachePaths) -> str:
    """``tensorrt_llm/1/model.yaml``: its keys are the ``LLM()`` constructor's arguments.

    Precision: bf16 and fp16 set ``dtype``; fp8 on this backend means an FP8 checkpoint (ModelOpt's, such
    as ``nvidia/Llama-3.1-8B-Instruct-FP8``), whose quantisation the LLM API reads from the checkpoint
    itself (facts 2.3), so ``dtype`` stays ``auto``; fp4 likewise means an NVFP4 checkpoint (ModelOpt's
    ``hf_quant_config``, read from the checkpoint).

    Parallelism keys are ``BaseLlmArgs``' (NVIDIA/TensorRT-LLM:tensorrt_llm/llmapi/llm_args.py@fcd3f316):
    ``tensor_parallel_size``, ``pipeline_parallel_size``; ``moe_expert_parallel_size`` for a
    mixture-of-experts model (None there means no expert parallelism, so it is written for every MoE
    model); ``enable_attention_dp`` when asked for; ``gpus_per_node`` for a replica over several nodes
    (one pod's GPUs, as in tensorrtllm_backend's multi-node model.yaml). ``kv_cache_config.dtype``
    (``KvCacheConfig``, "only for the Pytorch backend") is written for ``kvCachePrecision: fp8``; a
    16-bit cache is its ``auto``, the model's own dtype, unless the checkpoint itself quantises the KV
    cache (a ModelOpt FP8/FP4 checkpoint may)."""
    engine = spec.engine
    parallelism = spec.parallelism
    kv_cache: dict[str, object] = {"free_gpu_memory_fraction": engine.kv_cache_free_gpu_mem_fraction}
    if engine.kv_cache_precision == "fp8":
        kv_cache["dtype"] = "fp8"
    values: dict[str, object] = {
        "model": paths.weights,
        "backend": "pytorch",
        "dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(engine.precision, "auto"),
        "tensor_parallel_size": parallelism.tensor,
        "pipeline_parallel_size": parallelism.pipeline,
    }
    if spec.model.shape.moe is not None or parallelism.expert > 1:
        values["moe_expert_parallel_size"] = parallelism.expert
    if parallelism.attention_data_parallel:
        values["enable_attention_dp"] = True
    if needs_multi_node(spec):
        values["gpus_per_node"] = gpus_per_pod(spec)
    values |= {
        "max_batch_size": engine.max_batch_size,
        "max_num_tokens": engine.max_num_tokens,
        "max_seq_len": engine.max_input_length + engine.max_output_length,
        "enable_chunked_prefill": engine.enable_chunked_prefill,
        "kv_cache_config": kv_cache,
        "triton_config": {"max_batch_size": 0, "decoupled": True},
    }
    import yaml

    return "# LLM() arguments, rendered by tokenworks from the ModelDeployment spec.\n" + \
        yaml.safe_dump(values, sort_keys=False)


# -- tensorrt-engine (inflight batcher) ---------------------------------------------------------------
TRTLLM_INPUTS = (
    Tensor("input_ids", "TYPE_INT32", (-1,)),
    Tensor("input_lengths", "TYPE_INT32", (1,)),
    Tensor("request_output_len", "TYPE_INT32", (1,)),
    Tensor("end_id", "TYPE_INT32", (1,), optional=True),
    Tensor("pad_id", "TYPE_INT32", (1,), optional=True),
    Tensor("streaming", "TYPE_BOOL", (1,), optional=True),
    Tensor("beam_width", "TYPE_INT32", (1,), optional=True),
    Tensor("temperature", "TYPE_FP32", (1,), optional=True),
    Tensor("runtime_top_k", "TYPE_INT32", (1,), optional=True),
    Tensor("runtime_top_p", "TYPE_FP32", (1,), optional=True),
    Tensor("random_seed", "TYPE_UINT64", (1,), optional=True),
    Tensor("stop", "TYPE_BOOL", (1,), optional=True),
)
TRTLLM_OUTPUTS = (
    Tensor("output_ids", "TYPE_INT32", (-1, -1)),
    Tensor("sequence_length", "TYPE_INT32", (-1,)),
)
TEXT_INPUTS = (
    Tensor("text_input", "TYPE_STRING", (-1,)),
    Tensor("max_tokens", "TYPE_INT32", (-1,)),
    Tensor("stream", "TYPE_BOOL", (1,), optional=True),
    Tensor("end_id", "TYPE_INT32", (1,), optional=True),
    Tensor("pad_id", "TYPE_INT32", (1,), optional=True),
    Tensor("temperature", "TYPE_FP32", (1,), optional=True),
    Tensor("top_k", "TYPE_INT32", (1,), optional=True),
    Tensor("top_p", "TYPE_FP32", (1,), optional=True),
)
TEXT_OUTPUTS = (Tensor("text_output", "TYPE_STRING", (-1,)),)
# What the OpenAI frontend sends to a TensorRT-LLM model beyond TEXT_INPUTS, named as NVIDIA's ensemble
# template names them (NVIDIA/TensorRT-LLM:triton_backend/all_models/inflight_batcher_llm/ensemble/
# config.pbtxt@2a9abd95): the two `return_num_*` always, the rest when a request sets them
# (server:python/openai/openai_frontend/engine/utils/triton.py@6297a6be, _create_trtllm_generate_request).
# Triton refuses a request with an input its model does not declare, so the served models declare them.
_OPENAI_SHARED_INPUTS = (  # named alike on the text-facing models and on tensorrt_llm
    Tensor("frequency_penalty", "TYPE_FP32", (1,), optional=True),
    Tensor("presence_penalty", "TYPE_FP32", (1,), optional=True),
    Tensor("seed", "TYPE_UINT64", (1,), optional=True),
    Tensor("exclude_input_in_output", "TYPE_BOOL", (1,), optional=True),
    Tensor("return_num_input_tokens", "TYPE_BOOL", (1,), optional=True),
    Tensor("return_num_output_tokens", "TYPE_BOOL", (1,), optional=True),
)
OPENAI_TEXT_INPUTS = (Tensor("stop_words", "TYPE_STRING", (-1,), optional=True), *_OPENAI_SHARED_INPUTS)
# The token counts the frontend turns into `usage` (_get_usage_from_response).
USAGE_OUTPUTS = (Tensor("num_input_tokens", "TYPE_INT32", (1,)), Tensor("num_output_tokens", "TYPE_INT32", (1,)))
# The tensorrt_llm model's names for them (same template directory, tensorrt_llm/config.pbtxt@2a9abd95).
OPENAI_TRTLLM_INPUTS = (Tensor("stop_words_list", "TYPE_INT32", (2, -1), optional=True), *_OPENAI_SHARED_INPUTS)
# The C++ backend's worker binary in orchestrator mode: the fixed value of NVIDIA's template (facts 1.3).
EXECUTOR_WORKER_PATH = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"


def openai_frontend(spec: ModelDeploymentSpec) -> bool:
    return spec.serving.frontend == "openai"


def engine_parameters(spec: ModelDeploymentSpec, paths: CachePaths) -> dict[str, str]:
    """The ``tensorrt_llm`` model's parameters, named as in NVIDIA's template (docs/model_config.md).
    In orchestrator mode (the OpenAI frontend) the backend spawns ``executor_worker_path`` per GPU."""
    engine = spec.engine
    worker = {"executor_worker_path": EXECUTOR_WORKER_PATH} if openai_frontend(spec) else {}
    return {**worker,
        "max_beam_width": "1",
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": paths.engine,
        "batch_scheduler_policy": "guaranteed_no_evict",
        "kv_cache_free_gpu_mem_fraction": _number(engine.kv_cache_free_gpu_mem_fraction),
        "enable_chunked_context": "true" if engine.enable_chunked_prefill else "false",
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "false",
        "stats_check_period_ms": "100",
        "cancellation_check_period_ms": "100",
    }


def _dynamic_batching(spec: ModelDeploymentSpec) -> str:
    return ("dynamic_batching {\n"
            f"  preferred_batch_size: [ {spec.engine.max_batch_size} ]\n"
            f"  max_queue_delay_microseconds: {spec.engine.max_queue_delay_microseconds}\n"
            "  default_queue_policy: { max_queue_size: 0 }\n}\n")


def _ensemble_steps(openai: bool = False) -> str:
    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        maps = "".join(f"      input_map {{ key: {_quote(k)} value: {_quote(v)} }}\n" for k, v in inputs.items())
        maps += "".join(f"      output_map {{ key: {_quote(k)} value: {_quote(v)} }}\n" for k, v in outputs.items())
        return f"    {{\n      model_name: {_quote(model)}\n      model_version: -1\n{maps}    }}"

    # The OpenAI frontend's extra inputs pass straight through, stop words by way of the tokenizer.
    passed = {n: n for n in ("frequency_penalty", "presence_penalty", "seed", "exclude_input_in_output",
                             "return_num_input_tokens", "return_num_output_tokens")} if openai else {}
    steps = [
        step("preprocessing", {"QUERY": "text_input", "REQUEST_OUTPUT_LEN": "max_tokens",
                               **({"STOP_WORDS_DICT": "stop_words"} if openai else {})},
             {"REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN", "INPUT_ID": "_INPUT_ID",
              "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
              **({"STOP_WORDS_IDS": "_STOP_WORDS_IDS"} if openai else {})}),
        step(TRTLLM_MODEL, {"input_ids": "_INPUT_ID", "input_lengths": "_REQUEST_INPUT_LEN",
                            "request_output_len": "_REQUEST_OUTPUT_LEN", "streaming": "stream",
                            "end_id": "end_id", "pad_id": "pad_id", "temperature": "temperature",
                            "runtime_top_k": "top_k", "runtime_top_p": "top_p",
                            **({"stop_words_list": "_STOP_WORDS_IDS"} if openai else {}), **passed},
             {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH",
              **({"num_input_tokens": "num_input_tokens", "num_output_tokens": "num_output_tokens"}
                 if openai else {})}),
        step("postprocessing", {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
             {"OUTPUT": "text_output"}),
    ]
    return "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"


def engine_repository(spec: ModelDeploymentSpec, paths: CachePaths) -> dict[str, str]:
    """With the OpenAI frontend, the served models also declare what that frontend sends and returns
    (OPENAI_TEXT_INPUTS, USAGE_OUTPUTS); behind tritonserver the repository is as it was."""
    batch = spec.engine.max_batch_size
    buckets = _model_metrics(first_response_buckets(spec.autoscaling.slo.ttft_milliseconds))
    tokenizer = {"tokenizer_dir": paths.weights}
    openai = openai_frontend(spec)
    text_inputs = (*TEXT_INPUTS, *OPENAI_TEXT_INPUTS) if openai else TEXT_INPUTS
    text_outputs = (*TEXT_OUTPUTS, *USAGE_OUTPUTS) if openai else TEXT_OUTPUTS
    stop_in = (Tensor("STOP_WORDS_DICT", "TYPE_STRING", (-1,), optional=True),) if openai else ()
    stop_out = (Tensor("STOP_WORDS_IDS", "TYPE_INT32", (2, -1)),) if openai else ()
    return {
        "preprocessing/config.pbtxt": (
            _header("preprocessing", "python", batch, None)
            + _tensors("input", (Tensor("QUERY", "TYPE_STRING", (1,)),
                                 Tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", (1,)), *stop_in))
            + _tensors("output", (Tensor("INPUT_ID", "TYPE_INT32", (-1,)),
                                  Tensor("REQUEST_INPUT_LEN", "TYPE_INT32", (1,)),
                                  Tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", (-1,)), *stop_out))
            + _parameters({**tokenizer, "add_special_tokens": "false"}) + _instance_group()),
        TRTLLM_MODEL + "/config.pbtxt": (
            _header(TRTLLM_MODEL, "tensorrtllm", batch, True) + _dynamic_batching(spec)
            + _tensors("input", (*TRTLLM_INPUTS, *(OPENAI_TRTLLM_INPUTS if openai else ())))
            + _tensors("output", (*TRTLLM_OUTPUTS, *(USAGE_OUTPUTS if openai else ()))) + _instance_group()
            + _parameters(engine_parameters(spec, paths)) + buckets),
        "postprocessing/config.pbtxt": (
            _header("postprocessing", "python", batch, None)
            + _tensors("input", (Tensor("TOKENS_BATCH", "TYPE_INT32", (-1, -1)),
                                 Tensor("SEQUENCE_LENGTH", "TYPE_INT32", (-1,))))
            + _tensors("output", (Tensor("OUTPUT", "TYPE_STRING", (-1,)),))
            + _parameters({**tokenizer, "skip_special_tokens": "true"}) + _instance_group()),
        "ensemble/config.pbtxt": (
            _header("ensemble", None, batch, None, platform="ensemble")
            + _tensors("input", text_inputs) + _tensors("output", text_outputs) + _ensemble_steps(openai)
            + buckets),
        "tensorrt_llm_bls/config.pbtxt": (
            _header("tensorrt_llm_bls", "python", batch, True)
            + _tensors("input", text_inputs) + _tensors("output", text_outputs)
            + _parameters({"tensorrt_llm_model_name": TRTLLM_MODEL, "accumulate_tokens": "false"})
            + _instance_group() + buckets),
    }


def model_repository(spec: ModelDeploymentSpec, registry: str = "") -> dict[str, str]:
    """Relative path in the repository -> file text: every file the operator renders."""
    paths = CachePaths.of(spec, registry)
    if spec.engine.backend == "llmapi":
        return {f"{TRTLLM_MODEL}/config.pbtxt": llmapi_config(spec),
                f"{TRTLLM_MODEL}/1/model.yaml": llmapi_model_yaml(spec, paths)}
    return engine_repository(spec, paths)


def served_models(spec: ModelDeploymentSpec) -> list[str]:
    """Triton model names a client may send requests to (the OpenAI ``model`` too)."""
    return [TRTLLM_MODEL] if spec.engine.backend == "llmapi" else ["ensemble", "tensorrt_llm_bls"]


def config_key(relative_path: str) -> str:
    """ConfigMap key of a repository file (keys allow no '/'): ``tensorrt_llm/1/model.yaml`` ->
    ``repository.tensorrt_llm.1.model.yaml``; the volume's ``items`` map it back to its path."""
    return "repository." + relative_path.replace("/", ".")


# -- launch -----------------------------------------------------------------------------------------
def tritonserver_args(spec: ModelDeploymentSpec, repository: str, rank: int) -> list[str]:
    """One rank's ``tritonserver`` arguments, as ``launch_triton_server.py`` builds them (``get_cmd``):
    every rank gets the ports and its own shared-memory prefix; ranks above 0 load only the
    ``tensorrt_llm`` model and never return from its initialisation (leader mode)."""
    ports = spec.ports
    args = [
        "tritonserver", f"--model-repository={repository}", f"--grpc-port={ports.grpc}",
        f"--http-port={ports.http}", f"--metrics-port={ports.metrics}", "--disable-auto-complete-config",
        f"--backend-config=python,shm-region-prefix-name=prefix{rank}_",
    ]
    if rank == 0:
        # Counters are on by default; the TTFT histogram is not (core: latency_histograms_enabled_).
        args += ["--allow-metrics=true", "--allow-gpu-metrics=true", "--allow-cpu-metrics=true",
                 "--metrics-interval-ms=2000", "--metrics-config=histogram_latencies=true",
                 "--exit-timeout-secs=120", "--log-info=true", *spec.engine.extra_args]
    else:
        args += ["--model-control-mode=explicit", f"--load-model={TRTLLM_MODEL}"]
    return args


OPENAI_MAIN = f"{OPENAI_FRONTEND_DIR}/openai_frontend/main.py"


def openai_frontend_command(spec: ModelDeploymentSpec, registry: str = "") -> list[str]:
    """The OpenAI frontend as the container's main process: ``main.py`` starts Triton in-process on the
    repository, the OpenAI routes on ports.openai and, with ``--enable-kserve-frontends``, KServe v2 HTTP
    and gRPC on ports.http and ports.grpc (server:python/openai/openai_frontend/main.py@7e31829e). Chat
    templates come from ``--tokenizer``: the downloaded weights hold the model's tokenizer files.

    One process, so TensorRT-LLM runs in orchestrator mode (``TRTLLM_ORCHESTRATOR=1``, launch_env): the
    backend spawns a worker per GPU; leader mode, one tritonserver rank per GPU, is not supported by the
    frontend (server:python/openai/README.md, "Model Parallelism Support")."""
    paths = CachePaths.of(spec, registry)
    ports = spec.ports
    return ["python3", OPENAI_MAIN, f"--model-repository={paths.repository}", f"--tokenizer={paths.weights}",
            "--host=0.0.0.0", f"--openai-port={ports.openai}", "--enable-kserve-frontends",
            f"--kserve-http-port={ports.http}", f"--kserve-grpc-port={ports.grpc}", *spec.engine.extra_args]


def launch_env(spec: ModelDeploymentSpec) -> dict[str, str]:
    """Environment the server container needs for its launch: orchestrator mode for the OpenAI frontend
    (tensorrtllm_backend:README.md@0b9d7d5a, "Orchestrator mode"; facts 3.2, 4)."""
    return {"TRTLLM_ORCHESTRATOR": "1"} if openai_frontend(spec) else {}


def launch_command(spec: ModelDeploymentSpec, registry: str = "") -> list[str]:
    """The container's command: what ``launch_triton_server.py`` starts, run in the foreground (the
    script itself returns at once after ``Popen``, so it cannot be a container's main process), or the
    OpenAI frontend (``serving.frontend: openai``, openai_frontend_command).

    llmapi: one Triton process; the LLM API starts its own workers for TP x PP GPUs, so the world
    size is 1. tensorrt-engine: ``mpirun`` with one ``tritonserver`` rank per GPU (leader mode).
    """
    if openai_frontend(spec):
        return openai_frontend_command(spec, registry)
    repository = CachePaths.of(spec, registry).repository
    world = 1 if spec.engine.backend == "llmapi" else spec.gpus_per_replica
    command = ["mpirun", "--allow-run-as-root"]
    for rank in range(world):
        if rank:
            command.append(":")
        command += ["-n", "1", *tritonserver_args(spec, repository, rank)]
    return command


# -- multi-node launch (a LeaderWorkerSet group; docs/design/serving-path.md, "Multi-node replicas") ------
# The ssh key pair and run directory the pod template mounts (inference_pods/templates.py), and the port
# each worker's sshd listens on: above 1024, since sshd runs as the pod's non-root user.
MPI_SSH_KEYS = "/etc/tokenworks/ssh"
MPI_SSH_RUN = "/var/run/tokenworks-ssh"
MPI_SSH_PORT = 2222
# Environment mpirun hands to every rank (-x): sshd starts remote commands with its own, not the pod's.
MPI_FORWARDED_ENV = ("PATH", "LD_LIBRARY_PATH", "HF_HOME", "TOKENWORKS_ENGINE_CONFIG", "TOKENWORKS_MODEL_NAME",
                     "OMPI_MCA_orte_keep_fqdn_hostnames")


def group_ranks(spec: ModelDeploymentSpec, registry: str = "") -> list[str]:
    """mpirun's application contexts for the whole group: llmapi, one ``trtllm-llmapi-launch tritonserver``
    per GPU (rank 0 runs tritonserver, the others TensorRT-LLM's worker loop: trtllm-llmapi-launch
    @020c89e6); tensorrt-engine, one ``tritonserver`` per GPU, rank 0 serving (leader mode, facts 3.2)."""
    repository = CachePaths.of(spec, registry).repository
    world = spec.gpus_per_replica
    if spec.engine.backend == "llmapi":
        return ["-n", str(world), "trtllm-llmapi-launch", *tritonserver_args(spec, repository, 0)]
    contexts: list[str] = []
    for rank in range(world):
        contexts += ([":"] if rank else []) + ["-n", "1", *tritonserver_args(spec, repository, rank)]
    return contexts


def leader_launch_script(spec: ModelDeploymentSpec, registry: str = "") -> str:
    """The leader's command: wait for every worker's sshd, then one ``mpirun`` over the group's pods,
    ``<pod>:<GPUs of one pod>`` each (``groups.gpus_per_pod``: ranks fill each pod's slots in order, so each
    pod holds whole tensor-parallel groups; host:slots as in
    kubernetes-sigs/lws:docs/examples/tensorrt-llm/build/server.py@4aaf9d50), logging in over ssh on port
    2222 with the group's key (Dynamo's TensorRT-LLM launch, backend_trtllm.go@02b3bad0). Pod names follow
    LWS: the leader is ``LWS_LEADER_ADDRESS`` (``<lws>-<group>.<subdomain>.<namespace>``), worker ``i`` is
    ``<lws>-<group>-<i>`` in the same subdomain; ``LWS_GROUP_SIZE`` counts the leader. mpirun is run by
    its full path, which Open MPI takes as ``--prefix`` so that the remote daemons are found through ssh's
    bare environment."""
    ssh_options = (f"-p {MPI_SSH_PORT} -i {MPI_SSH_RUN}/id -o StrictHostKeyChecking=no "
                   "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    forwarded = " ".join(f"-x {name}" for name in MPI_FORWARDED_ENV)
    ranks = " ".join(shlex.quote(arg) for arg in group_ranks(spec, registry))
    slots = gpus_per_pod(spec)
    return "\n".join([
        "set -euo pipefail",
        f'install -m 600 {MPI_SSH_KEYS}/private.key "{MPI_SSH_RUN}/id"',
        'leader="${LWS_LEADER_ADDRESS%%.*}"; domain="${LWS_LEADER_ADDRESS#*.}"',
        f'hosts="$LWS_LEADER_ADDRESS:{slots}"; workers=""',
        'for i in $(seq 1 $((LWS_GROUP_SIZE - 1))); do',
        f'  hosts="$hosts,$leader-$i.$domain:{slots}"; workers="$workers $leader-$i.$domain"',
        "done",
        "# Workers start with the leader (startupPolicy LeaderCreated): wait for each sshd; the startup",
        "# probe bounds the wait.",
        f'for w in $workers; do until ssh {ssh_options} "$w" true; do sleep 2; done; done',
        f'exec "$(command -v mpirun)" --allow-run-as-root -H "$hosts" --mca plm_rsh_agent ssh '
        f'--mca plm_rsh_args "{ssh_options}" {forwarded} {ranks}',
    ]) + "\n"


def worker_launch_script() -> str:
    """A worker's command: only an sshd, as the pod's own user, that lets the leader's key in (Dynamo's
    worker runs sshd in the foreground and nothing else: backend_trtllm.go@02b3bad0)."""
    run = MPI_SSH_RUN
    return "\n".join([
        "set -euo pipefail",
        f'install -m 600 {MPI_SSH_KEYS}/private.key.pub "{run}/authorized_keys"',
        f"ssh-keygen -q -t ed25519 -N '' -f \"{run}/host_ed25519_key\"",
        f'exec "$(command -v sshd || echo /usr/sbin/sshd)" -D -e -p {MPI_SSH_PORT} -h "{run}/host_ed25519_key" '
        f'-o PidFile="{run}/sshd.pid" -o AuthorizedKeysFile="{run}/authorized_keys" -o PasswordAuthentication=no '
        "-o KbdInteractiveAuthentication=no -o StrictModes=no -o UsePAM=no",
    ]) + "\n"


# -- preparation ---------------------------------------------------------------------------------------
def token_env_name(spec: ModelDeploymentSpec) -> str | None:
    """The environment variable the fetch tools read the credential from."""
    if spec.model.token_secret is None:
        return None
    return "NGC_API_KEY" if spec.model.ngc else "HF_TOKEN"


def fetch_command(spec: ModelDeploymentSpec) -> str:
    """The shell command that puts the weights in ``$WEIGHTS``."""
    model = spec.model
    revision = f" --revision {shlex.quote(model.revision)}" if model.revision else ""
    if model.hugging_face:
        # `hf` is the current Hugging Face CLI; `huggingface-cli` its older name in older images.
        args = f'download {shlex.quote(model.hugging_face)}{revision} --local-dir "$WEIGHTS"'
        return f"{{ if command -v hf >/dev/null; then hf {args}; else huggingface-cli {args}; fi; }}"
    if model.ngc:
        target = model.ngc if ":" in model.ngc or not model.revision else f"{model.ngc}:{model.revision}"
        # The NGC CLI writes into <dest>/<model>_v<version>/: move that one folder to $WEIGHTS.
        return ('mkdir -p "$WEIGHTS.ngc" && ngc registry model download-version '
                f'{shlex.quote(target)} --dest "$WEIGHTS.ngc" && set -- "$WEIGHTS.ngc"/*/ && [ $# -eq 1 ] '
                '&& rm -rf "$WEIGHTS" && mv "$1" "$WEIGHTS" && rm -rf "$WEIGHTS.ngc"')
    return 'ln -sfn "$SOURCE" "$WEIGHTS"'


def fp8_kv_over_16_bit(spec: ModelDeploymentSpec) -> bool:
    """16-bit weights with an FP8 KV cache: on the engine path, quantize.py's ``full_prec`` recipe builds it."""
    return spec.engine.precision in ("bf16", "fp16") and spec.engine.kv_cache_precision == "fp8"


def engine_build_commands(spec: ModelDeploymentSpec) -> list[str]:
    """Checkpoint conversion and ``trtllm-build`` for the legacy backend, with the spec's limits
    (TensorRT-LLM ``examples/models/core/llama/README.md``; FP8 through ModelOpt's ``quantize.py``)."""
    engine = spec.engine
    tp, pp = spec.parallelism.tensor, spec.parallelism.pipeline
    if engine.precision in ("fp8", "fp4"):
        # quantize.py's --qformat takes nvfp4 and fp8; --kv_cache_dtype int8|fp8, or none for a 16-bit cache
        # (NVIDIA/TensorRT-LLM:examples/quantization/quantize.py@059c97c1).
        qformat = "nvfp4" if engine.precision == "fp4" else "fp8"
        kv = "" if engine.kv_cache_precision in ("bf16", "fp16") else " --kv_cache_dtype fp8"
        convert = ('python3 "$TRTLLM_EXAMPLES/quantization/quantize.py" --model_dir "$WEIGHTS" --dtype bfloat16 '
                   f'--qformat {qformat}{kv} --output_dir "$PREPARED/checkpoint" --calib_size 512 '
                   f"--tp_size {tp} --pp_size {pp}")
    elif fp8_kv_over_16_bit(spec):
        # 16-bit weights over an FP8 KV cache: quantize.py with --qformat full_prec (ModelOpt's EMPTY_CFG, no
        # weight quantiser) and --kv_cache_dtype fp8 (FP8_KV_CFG) calibrates only the KV scales
        # (NVIDIA/TensorRT-LLM:tensorrt_llm/quantization/quantize_by_modelopt.py@042c510d); convert_checkpoint.py
        # has no FP8 KV option (only --int8_kv_cache).
        dtype = "bfloat16" if engine.precision == "bf16" else "float16"
        convert = ('python3 "$TRTLLM_EXAMPLES/quantization/quantize.py" --model_dir "$WEIGHTS" '
                   f'--dtype {dtype} --qformat full_prec --kv_cache_dtype fp8 --output_dir "$PREPARED/checkpoint" '
                   f"--calib_size 512 --tp_size {tp} --pp_size {pp}")
    else:
        dtype = "bfloat16" if engine.precision == "bf16" else "float16"
        convert = ('python3 "$TRTLLM_EXAMPLES/models/core/llama/convert_checkpoint.py" --model_dir "$WEIGHTS" '
                   f'--output_dir "$PREPARED/checkpoint" --dtype {dtype} --tp_size {tp} --pp_size {pp}')
    build = ('trtllm-build --checkpoint_dir "$PREPARED/checkpoint" --output_dir "$PREPARED/engine" --gemm_plugin auto '
             f"--max_batch_size {engine.max_batch_size} --max_num_tokens {engine.max_num_tokens} "
             f"--max_input_len {engine.max_input_length} "
             f"--max_seq_len {engine.max_input_length + engine.max_output_length} "
             f"--use_paged_context_fmha {'enable' if engine.enable_chunked_prefill else 'disable'} "
             # One build worker per GPU of this pod: a pod of a multi-node replica builds every rank's
             # engine on its own GPUs.
             f"--workers {gpus_per_pod(spec)}")
    return [convert, build, 'rm -rf "$PREPARED/checkpoint"']


def prepare_script(spec: ModelDeploymentSpec, registry: str = "") -> str:
    """The init container's script: fetch the weights once, build the engine once (tensorrt-engine),
    lay out the model repository from the rendered files and NVIDIA's model.py files, and mark the
    cache key complete. A second start with the same key does nothing. A failure writes one
    ``Reason: message`` line to the termination log, which the operator turns into a condition.

    Every path hangs off ``$TOKENWORKS_POD_ROOT`` (empty in a pod), so tests and the emulator twin run
    this very script against a directory."""
    paths = CachePaths.of(spec, registry)
    q = shlex.quote
    files = model_repository(spec, registry)
    copies = "\n".join(
        f'mkdir -p "$STAGE/{path.rsplit("/", 1)[0]}" && cp "$CONFIG/repository/{path}" "$STAGE/{path}"'
        for path in files)
    if spec.engine.backend == "llmapi":
        templates = f'cp "$BACKEND_DIR/all_models/llmapi/{TRTLLM_MODEL}/1/model.py" "$STAGE/{TRTLLM_MODEL}/1/"'
        build = "true  # llmapi: the LLM API builds nothing ahead of time"
    else:
        templates = "\n".join(
            f'mkdir -p "$STAGE/{m}/1" && cp -r "$BACKEND_DIR/all_models/inflight_batcher_llm/{m}/1/." "$STAGE/{m}/1/"'
            for m in ("preprocessing", "postprocessing", "tensorrt_llm_bls"))
        templates += f'\nmkdir -p "$STAGE/{TRTLLM_MODEL}/1" "$STAGE/ensemble/1"'
        build = " && \\\n  ".join(engine_build_commands(spec))
    source = "/model-source/" + spec.model.pvc.path.strip("/") if spec.model.pvc else ""
    model_revision = spec.model.revision or "(default)"
    model_source = spec.model.hugging_face or spec.model.ngc or "the model"
    token_hint = ("the token in spec.model.tokenSecret has no access" if spec.model.token_secret
                  else "spec.model.tokenSecret names no token")
    # Messages are quoted here: a model id or revision must never be read by the shell.
    gated = q(f"{model_source} is gated: give spec.model.tokenSecret a token of an account with access")
    no_revision = q(f"revision {model_revision} does not exist for {model_source}")
    not_found = q(f"{model_source} was not found, or it is gated and {token_hint}")
    return f"""#!/bin/bash
# Rendered by tokenworks: prepares {paths.prepared}
# (cache key of model, revision, precision, parallelism, engine limits, GPU product and image).
set -uo pipefail
ROOT="${{TOKENWORKS_POD_ROOT:-}}"
CONFIG="$ROOT{CONFIG_PATH}"
WEIGHTS="$ROOT"{q(paths.weights)}
PREPARED="$ROOT"{q(paths.prepared)}
SOURCE="$ROOT"{q(source.rstrip("/"))}
BACKEND_DIR="${{TOKENWORKS_TRITON_BACKEND_DIR:-{IMAGE_BACKEND_DIR}}}"
TRTLLM_EXAMPLES="${{TOKENWORKS_TRTLLM_EXAMPLES:-$BACKEND_DIR/examples}}"
TERMINATION_LOG="${{TOKENWORKS_TERMINATION_LOG:-/dev/termination-log}}"
export NGC_CLI_API_KEY="${{NGC_CLI_API_KEY:-${{NGC_API_KEY:-}}}}"
LOG="${{TMPDIR:-/tmp}}/prepare.log"
fail() {{ printf '%s: %s\n' "$1" "$2" | tee "$TERMINATION_LOG" >&2; exit 1; }}
classify() {{
  # Hub and credential errors only where the hub is asked (the download); any step can fill the disk.
  if [ "$1" = DownloadFailed ]; then
    if grep -qE 'GatedRepo|requires approval|awaiting a review|[Gg]ated repo' "$LOG"; then
      fail GatedModel {gated}
    elif grep -qiE 'RevisionNotFound|Revision not found|Invalid rev' "$LOG"; then
      fail RevisionNotFound {no_revision}
    elif grep -qiE 'RepositoryNotFound|Repository not found|\b404\b' "$LOG"; then
      fail ModelNotFound {not_found}
    elif grep -qiE '\b40[13]\b|Unauthorized|Invalid user token|invalid api key' "$LOG"; then
      fail CredentialsInvalid "the credential in spec.model.tokenSecret was refused"
    fi
  fi
  if grep -qiE 'No space left' "$LOG"; then
    fail ModelCacheFull "the model cache ran out of space: give spec.modelCache more room"
  fi
  fail "$1" "$(tail -c 300 "$LOG" | tr '\n' ' ')"
}}
if [ -f "$PREPARED/.complete" ]; then echo "prepared already: $PREPARED"; exit 0; fi
mkdir -p "$(dirname "$WEIGHTS")" "$PREPARED" || fail ModelCacheFull "cannot write to the model cache"
if [ ! -f "$WEIGHTS/.complete" ] && [ ! -L "$WEIGHTS" ]; then
  echo "fetching weights into $WEIGHTS"
  {{ {fetch_command(spec)}; }} >"$LOG" 2>&1 || classify DownloadFailed
  [ -L "$WEIGHTS" ] || touch "$WEIGHTS/.complete"
fi
if [ ! -f "$PREPARED/.built" ]; then
  {{ {build}
  }} >"$LOG" 2>&1 || classify EngineBuildFailed
  touch "$PREPARED/.built"
fi
STAGE="$PREPARED/repository.new"
{{ rm -rf "$STAGE" && mkdir -p "$STAGE"; }} || fail ModelCacheFull "cannot write the model repository"
{{
{copies}
{templates}
}} || fail RepositoryIncomplete "could not lay out the model repository from $CONFIG and $BACKEND_DIR"
rm -rf "$PREPARED/repository" && mv "$STAGE" "$PREPARED/repository" && touch "$PREPARED/.complete"
echo "prepared $PREPARED"
"""
