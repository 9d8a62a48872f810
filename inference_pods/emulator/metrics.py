"""The `/metrics` exposition of a Triton + TensorRT-LLM pod, family for family.

What a real pod exports depends on its model repository and backend (../shared facts, section 5):

- Triton core, for every model in the repository (labels ``model``, ``version``): request counters
  and cumulative durations, the pending-request gauge, the model load time and, with
  ``--metrics-config=histogram_latencies=true``, ``nv_inference_first_response_histogram_ms`` with the
  buckets of the model's ``model_metrics`` (Triton's 100/500/2000/5000 ms otherwise). Before release
  26.01 that histogram exists for decoupled models only.
- GPU, CPU and pinned-memory families of the process.
- The legacy ``tensorrtllm`` backend adds, on its ``tensorrt_llm`` model, the ``nv_trt_llm_*`` gauges
  and the token-length histograms ``nv_llm_input_token_len`` / ``nv_llm_output_token_len`` (buckets
  10, 50, 100, 500, 1000, observed once per request when it completes). The LLM-API backend adds
  nothing: its ``model.py`` registers no metric family.

The text is written here rather than by prometheus_client so that it matches Triton's: counters
without ``_total``, no ``_created`` samples, integer bucket bounds, labels in alphabetical order.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from inference_pods.emulator.engine import KV_BLOCK_TOKENS, EmulatedEngine, Request
from inference_pods.repository import TRITON_DEFAULT_FIRST_RESPONSE_BUCKETS_MS, TRTLLM_MODEL

TOKEN_LEN_BUCKETS = (10.0, 50.0, 100.0, 500.0, 1000.0)  # custom_metrics_reporter.cc
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# (name, type, help) of Triton core's per-model families, as core/src/metrics.cc registers them.
CORE_COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)"),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds "
     "(includes cached requests)"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds "
     "(includes cached requests)"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds "
     "(does not include cached requests)"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds "
     "(does not include cached requests)"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in "
     "microseconds (does not include cached requests)"),
)
FIRST_RESPONSE = "nv_inference_first_response_histogram_ms"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: dict[str, str]) -> Iterable[str]:
        yield f"{name}_count{_labels(labels)} {self.count}"
        yield f"{name}_sum{_labels(labels)} {_number(self.total)}"
        for bound, cumulative in zip(self.bounds, self.counts, strict=True):
            # `le` last, as Triton prints it.
            yield f'{name}_bucket{_labels(labels)[:-1]},le="{_number(bound)}"}} {cumulative}'
        yield f'{name}_bucket{_labels(labels)[:-1]},le="+Inf"}} {self.count}'


@dataclass(frozen=True)
class ModelMetricsConfig:
    """What the exposition needs from one model's config.pbtxt."""

    name: str
    decoupled: bool
    first_response_buckets: tuple[float, ...] | None  # None: Triton's defaults
    trtllm_backend: bool = False  # the C++ tensorrtllm backend's custom families


@dataclass(frozen=True)
class ExpositionConfig:
    models: tuple[ModelMetricsConfig, ...]
    histograms: bool  # --metrics-config=histogram_latencies=true
    gpu_metrics: bool = True
    cpu_metrics: bool = True
    # Triton 26.01 extended the first-response histogram to non-decoupled models.
    first_response_for_non_decoupled: bool = True
    gpus: int = 1


class PodMetrics:
    """Triton's families for every model of the repository, fed by the engine's request events.

    A request enters through a served model (``tensorrt_llm`` on the LLM-API path, ``ensemble`` or
    ``tensorrt_llm_bls`` on the engine path); the models it passes through count it too, as Triton's
    ensemble scheduler and BLS calls do: preprocessing once, ``tensorrt_llm`` once, postprocessing once
    per response.
    """

    def __init__(self, engine: EmulatedEngine, config: ExpositionConfig, load_seconds: float) -> None:
        self.engine = engine
        self.config = config
        self.load_seconds = load_seconds
        self.counters: dict[str, dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
        self.first_response: dict[str, Histogram] = {}
        for model in config.models:
            key = (model.name,)
            for name, _ in CORE_COUNTERS:
                if name == "nv_inference_request_failure":
                    for reason in FAILURE_REASONS:
                        self.counters[name][(model.name, reason)] += 0
                else:
                    self.counters[name][key] += 0
            if self._has_first_response(model):
                self.first_response[model.name] = Histogram(
                    model.first_response_buckets or TRITON_DEFAULT_FIRST_RESPONSE_BUCKETS_MS)
        self.trtllm = next((m for m in config.models if m.trtllm_backend), None)
        self.input_len = Histogram(TOKEN_LEN_BUCKETS)
        self.output_len = Histogram(TOKEN_LEN_BUCKETS)
        self.route: dict[int, tuple[str, bool]] = {}  # engine request id -> (model called, streaming)
        self.energy_joules = 0.0
        self._last = (time.monotonic(), engine.stats.busy_seconds)
        engine.on_first_token.append(self._first_token)
        engine.on_finish.append(self._finished)

    def _has_first_response(self, model: ModelMetricsConfig) -> bool:
        return self.config.histograms and (model.decoupled or self.config.first_response_for_non_decoupled)

    def models_on_path(self, entry: str) -> list[str]:
        """The models a request to ``entry`` executes, in the repository."""
        names = {m.name for m in self.config.models}
        if entry == "ensemble":
            path = ["ensemble", "preprocessing", TRTLLM_MODEL, "postprocessing"]
        elif entry == "tensorrt_llm_bls":
            path = ["tensorrt_llm_bls", "preprocessing", TRTLLM_MODEL, "postprocessing"]
        else:
            path = [entry]
        return [m for m in path if m in names]

    # -- events ----------------------------------------------------------------------------------
    def started(self, request: Request, entry: str, stream: bool = True) -> None:
        self.route[request.id] = (entry, stream)

    def fail(self, entry: str, reason: str) -> None:
        self.counters["nv_inference_request_failure"][(entry, reason)] += 1

    def _first_response(self, entry: str, milliseconds: float) -> None:
        for model in self.models_on_path(entry):
            histogram = self.first_response.get(model)
            if histogram is not None and model != "preprocessing":
                histogram.observe(milliseconds)

    def _first_token(self, request: Request) -> None:
        # The first *response*: the first token when streaming, the whole answer otherwise.
        entry, stream = self.route.get(request.id, (TRTLLM_MODEL, True))
        if stream:
            assert request.first_token_at is not None
            self._first_response(entry, (request.first_token_at - request.arrived) * 1e3)

    def _finished(self, request: Request) -> None:
        assert request.finished_at is not None
        entry, stream = self.route.pop(request.id, (TRTLLM_MODEL, True))
        if not stream:
            self._first_response(entry, (request.finished_at - request.arrived) * 1e3)
        admitted = request.admitted_at if request.admitted_at is not None else request.arrived
        queue_us = (admitted - request.arrived) * 1e6
        total_us = (request.finished_at - request.arrived) * 1e6
        for model in self.models_on_path(entry):
            key = (model,)
            executions = request.generated if model == "postprocessing" and stream else 1
            c = self.counters
            c["nv_inference_request_success"][key] += executions
            c["nv_inference_count"][key] += executions
            c["nv_inference_exec_count"][key] += executions
            if model in ("preprocessing", "postprocessing"):
                c["nv_inference_request_duration_us"][key] += 200.0 * executions  # tokenising is fast
                c["nv_inference_compute_infer_duration_us"][key] += 150.0 * executions
                continue
            c["nv_inference_request_duration_us"][key] += total_us
            c["nv_inference_queue_duration_us"][key] += queue_us
            c["nv_inference_compute_infer_duration_us"][key] += total_us - queue_us
        if self.trtllm is not None:
            self.input_len.observe(request.prompt_tokens)
            self.output_len.observe(request.generated)

    # -- exposition ----------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        out: list[str] = []
        help_text = dict(CORE_COUNTERS)
        for name, _ in CORE_COUNTERS:
            out += [f"# HELP {name} {help_text[name]}", f"# TYPE {name} counter"]
            for key, value in self.counters[name].items():
                labels = {"model": key[0], "version": "1"}
                if len(key) > 1:
                    labels["reason"] = key[1]
                out.append(f"{name}{_labels(labels)} {_number(value)}")
        out += ["# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting "
                "execution per-model.", "# TYPE nv_inference_pending_request_count gauge"]
        for model in self.config.models:
            # Both TensorRT-LLM backends take a request from Triton at once (the executor, or the LLM
            # API's generate_async, queues it): Triton's own pending count stays 0 [inference from
            # model_instance_state.cc and llmapi model.py]. The engine path shows the wait in
            # nv_trt_llm_request_metrics{request_type="waiting"}.
            out.append(f"nv_inference_pending_request_count{_labels({'model': model.name, 'version': '1'})} 0")
        out += ["# HELP nv_model_load_duration_secs Model load time in seconds",
                "# TYPE nv_model_load_duration_secs gauge"]
        for model in self.config.models:
            load = self.load_seconds if model.name == TRTLLM_MODEL else 0.5
            out.append(f"nv_model_load_duration_secs{_labels({'model': model.name, 'version': '1'})} "
                       f"{_number(round(load, 3))}")
        if self.first_response:
            out += [f"# HELP {FIRST_RESPONSE} Duration from request to first response in milliseconds",
                    f"# TYPE {FIRST_RESPONSE} histogram"]
            for name, histogram in self.first_response.items():
                out += histogram.lines(FIRST_RESPONSE, {"model": name, "version": "1"})
        if self.trtllm is not None:
            out += self._trtllm_families()
        if self.config.gpu_metrics:
            out += self._gpu_families()
        if self.config.cpu_metrics:
            out += ["# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]", "# TYPE nv_cpu_utilization gauge",
                    "nv_cpu_utilization 0.05",
                    "# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes",
                    "# TYPE nv_cpu_memory_total_bytes gauge", "nv_cpu_memory_total_bytes 2147483648000",
                    "# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes",
                    "# TYPE nv_cpu_memory_used_bytes gauge", "nv_cpu_memory_used_bytes 68719476736"]
        out += ["# HELP nv_pinned_memory_pool_total_bytes Pinned memory pool total memory size, in bytes",
                "# TYPE nv_pinned_memory_pool_total_bytes gauge", "nv_pinned_memory_pool_total_bytes 268435456",
                "# HELP nv_pinned_memory_pool_used_bytes Pinned memory pool used memory size, in bytes",
                "# TYPE nv_pinned_memory_pool_used_bytes gauge", "nv_pinned_memory_pool_used_bytes 0"]
        return ("\n".join(out) + "\n").encode()

    def _trtllm_families(self) -> list[str]:
        engine = self.engine
        base = {"model": TRTLLM_MODEL, "version": "1"}
        prefilling = sum(1 for r in engine.active if r.prefilled < r.prompt_tokens)
        max_blocks, used_blocks = engine.kv_blocks()
        gpu_bytes = engine.model.model.weight_bytes(engine.model.precision)
        context_tokens = sum(r.prompt_tokens - r.prefilled for r in engine.active if r.prefilled < r.prompt_tokens)
        families: list[tuple[str, str, str, str, list[tuple[str, float]]]] = [
            # The executor's iteration stats: active = requests it has admitted (at most max), waiting =
            # active - scheduled; requests still queued for admission show in neither (facts 5.3). The
            # emulated engine schedules every admitted request each iteration, so waiting is 0.
            ("nv_trt_llm_request_metrics", "TRT LLM request metrics", "gauge", "request_type", [
                ("active", len(engine.active)), ("max", engine.model.max_batch_size),
                ("scheduled", len(engine.active)), ("context", prefilling), ("waiting", 0)]),
            ("nv_trt_llm_runtime_memory_metrics", "TRT LLM runtime memory metrics", "gauge", "memory_type", [
                ("cpu", 0), ("gpu", gpu_bytes), ("pinned", 0)]),
            ("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics", "gauge",
             "kv_cache_block_type", [
                 ("max", max_blocks), ("free", max_blocks - used_blocks), ("used", used_blocks),
                 ("tokens_per", KV_BLOCK_TOKENS), ("reused", 0),
                 ("fraction", used_blocks / max_blocks if max_blocks else 0.0)]),
            ("nv_trt_llm_disaggregated_serving_metrics", "TRT LLM disaggregated serving metrics", "counter",
             "disaggregated_serving_type", [("kv_cache_transfer_ms", 0), ("request_count", 0)]),
            ("nv_trt_llm_inflight_batcher_metrics", "TRT LLM inflight_batcher-specific metrics", "gauge",
             "inflight_batcher_specific_metric", [
                 ("total_context_tokens", context_tokens),
                 ("generation_requests", len(engine.active) - prefilling),
                 ("micro_batch_id", 0), ("paused_requests", 0)]),
            ("nv_trt_llm_general_metrics", "General TRT LLM metrics", "gauge", "general_type", [
                ("iteration_counter", engine.stats.steps), ("timestamp", int(time.time() * 1e6))]),
        ]
        out: list[str] = []
        for name, help_text, kind, label, samples in families:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            out += [f"{name}{_labels({**base, label: value})} {_number(sample)}" for value, sample in samples]
        for name, histogram, kind in (("nv_llm_input_token_len", self.input_len, "total_input_tokens"),
                                      ("nv_llm_output_token_len", self.output_len, "total_output_tokens")):
            out += [f"# HELP {name} TRT LLM response metrics", f"# TYPE {name} histogram"]
            out += histogram.lines(name, {**base, "response_metric_type": kind})
        return out

    def _gpu_families(self) -> list[str]:
        # Utilisation over the time since the previous scrape: busy engine time / wall time.
        engine = self.engine
        now, busy = time.monotonic(), engine.stats.busy_seconds
        last_time, last_busy = self._last
        self._last = (now, busy)
        utilisation = min(1.0, (busy - last_busy) / (now - last_time)) if now > last_time else 0.0
        model = engine.model
        gpus = self.config.gpus
        weights = model.model.weight_bytes(model.precision) / gpus
        _, used_blocks = engine.kv_blocks()
        kv_used = used_blocks * KV_BLOCK_TOKENS * model.kv_bytes_per_token / gpus
        power_limit, idle_power = 700.0, 90.0
        power = idle_power + (power_limit - idle_power) * utilisation
        self.energy_joules += power * (now - last_time) * gpus
        out = []
        for name, help_text, kind in (
                ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge"),
                ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge"),
                ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge"),
                ("nv_gpu_power_usage", "GPU power usage in watts", "gauge"),
                ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge"),
                ("nv_energy_consumption", "GPU energy consumption in joules since the Triton Server started",
                 "counter")):
            value = {"nv_gpu_utilization": utilisation, "nv_gpu_memory_total_bytes": model.gpu.usable_hbm_bytes,
                     "nv_gpu_memory_used_bytes": weights + kv_used, "nv_gpu_power_usage": power,
                     "nv_gpu_power_limit": power_limit, "nv_energy_consumption": self.energy_joules / gpus}[name]
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            out += [f"{name}{_labels({'gpu_uuid': f'GPU-emulated-{i}'})} {_number(round(value, 4))}"
                    for i in range(gpus)]
        return out
