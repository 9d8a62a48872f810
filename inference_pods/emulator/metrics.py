"""Prometheus metrics with the names and labels Triton and its TensorRT-LLM backend export.

Counters and histograms are updated as requests finish; gauges are read from the engine at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference_pods.emulator.engine import KV_BLOCK_TOKENS, EmulatedEngine, Request

# Triton exports no `_created` samples.
disable_created_metrics()  # type: ignore[no-untyped-call]
# Triton's counters carry no `_total` suffix (prometheus-cpp adds none); prometheus_client adds one.
TRITON_COUNTERS = (
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_request_duration_us",
)

# Triton's default buckets for nv_inference_first_response_histogram_ms.
FIRST_RESPONSE_BUCKETS_MS = (100, 500, 2000, 5000)
# Finer buckets so a percentile between 50 ms and 10 s can be interpolated.
LATENCY_BUCKETS_MS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)
TOKEN_LEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
ITL_BUCKETS_MS = (5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500)


class EngineCollector(Collector):
    """Gauges sampled from the engine at scrape time."""

    def __init__(self, engine: EmulatedEngine, model: str, gpus: int) -> None:
        self.engine = engine
        self.labels = [model, "1"]
        self.gpus = gpus
        self._last = (time.monotonic(), engine.stats.busy_seconds)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.engine
        pending = GaugeMetricFamily("nv_inference_pending_request_count",
                                    "Instantaneous number of pending requests awaiting execution",
                                    labels=["model", "version"])
        pending.add_metric(self.labels, len(engine.waiting))
        yield pending

        prefilling = sum(1 for r in engine.active if r.prefilled < r.prompt_tokens)
        requests = GaugeMetricFamily("nv_trt_llm_request_metrics", "TRT LLM request metrics",
                                     labels=["model", "version", "request_type"])
        for kind, value in (("active", len(engine.active)), ("max", engine.model.max_batch_size),
                            ("scheduled", len(engine.active)), ("context", prefilling),
                            ("waiting", len(engine.waiting))):
            requests.add_metric([*self.labels, kind], value)
        yield requests

        max_blocks, used_blocks = engine.kv_blocks()
        blocks = GaugeMetricFamily("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics",
                                   labels=["model", "version", "kv_cache_block_type"])
        for kind, value in (("max", max_blocks), ("free", max_blocks - used_blocks),
                            ("used", used_blocks), ("tokens_per", KV_BLOCK_TOKENS)):
            blocks.add_metric([*self.labels, kind], value)
        yield blocks

        # Utilisation over the time since the previous scrape: busy engine time / wall time.
        now, busy = time.monotonic(), engine.stats.busy_seconds
        last_time, last_busy = self._last
        self._last = (now, busy)
        utilisation = min(1.0, (busy - last_busy) / (now - last_time)) if now > last_time else 0.0
        gpu = GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=["gpu_uuid"])
        total = GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=["gpu_uuid"])
        used = GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=["gpu_uuid"])
        model = engine.model
        weights = model.model.weight_bytes(model.precision) / self.gpus
        kv_used = used_blocks * KV_BLOCK_TOKENS * model.kv_bytes_per_token / self.gpus
        for index in range(self.gpus):
            uuid = f"GPU-emulated-{index}"
            gpu.add_metric([uuid], utilisation)
            total.add_metric([uuid], model.gpu.hbm_bytes)
            used.add_metric([uuid], weights + kv_used)
        yield gpu
        yield total
        yield used


class EmulatorMetrics:
    def __init__(self, engine: EmulatedEngine, model: str, gpus: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        self.values = [model, "1"]
        r = self.registry
        self.success = Counter("nv_inference_request_success", "Number of successful inference requests, "
                               "all batch sizes", labels, registry=r)
        self.failure = Counter("nv_inference_request_failure", "Number of failed inference requests, all "
                               "batch sizes", [*labels, "reason"], registry=r)
        self.count = Counter("nv_inference_count", "Number of inferences performed", labels, registry=r)
        self.exec_count = Counter("nv_inference_exec_count", "Number of model executions performed", labels,
                                  registry=r)
        self.queue_us = Counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in "
                                "microseconds", labels, registry=r)
        self.compute_us = Counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference "
                                  "duration in microseconds", labels, registry=r)
        self.request_us = Counter("nv_inference_request_duration_us", "Cumulative inference request duration "
                                  "in microseconds", labels, registry=r)
        self.first_response = Histogram("nv_inference_first_response_histogram_ms", "Duration from request to "
                                        "first response in milliseconds", labels, registry=r,
                                        buckets=LATENCY_BUCKETS_MS)
        self.input_len = Histogram("nv_llm_input_token_len", "TRT LLM response input token length", labels,
                                   registry=r, buckets=TOKEN_LEN_BUCKETS)
        self.output_len = Histogram("nv_llm_output_token_len", "TRT LLM response output token length", labels,
                                    registry=r, buckets=TOKEN_LEN_BUCKETS)
        self.output_tokens = Counter("nv_llm_output_tokens", "Output tokens generated; rate() gives tokens "
                                     "per second", labels, registry=r)
        self.input_tokens = Counter("nv_llm_input_tokens", "Prompt tokens processed", labels, registry=r)
        self.inter_token = Histogram("nv_llm_inter_token_latency_ms", "Mean time between output tokens of "
                                     "each finished request, in milliseconds", labels, registry=r,
                                     buckets=ITL_BUCKETS_MS)
        for family in (self.success, self.count, self.exec_count, self.queue_us, self.compute_us,
                       self.request_us, self.output_tokens, self.input_tokens):
            family.labels(*self.values)  # export zeros from the start, so rate() has a baseline
        for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
            self.failure.labels(*self.values, reason)
        self._generated = 0
        self.registry.register(EngineCollector(engine, model, gpus))
        engine.on_first_token.append(self._first_token)
        engine.on_finish.append(self._finished)
        self.engine = engine

    def exposition(self) -> bytes:
        """The Prometheus text format, with Triton's exact counter names."""
        self.sync_tokens()
        text = generate_latest(self.registry).decode()
        for name in TRITON_COUNTERS:
            text = text.replace(f"{name}_total", name)
        return text.encode()

    def sync_tokens(self) -> None:
        """Move the engine's token count into the counter (called per scrape and per request)."""
        generated = self.engine.stats.generated_tokens
        if generated > self._generated:
            self.output_tokens.labels(*self.values).inc(generated - self._generated)
            self._generated = generated

    def fail(self, reason: str) -> None:
        self.failure.labels(*self.values, reason).inc()

    def _first_token(self, request: Request) -> None:
        assert request.first_token_at is not None
        self.first_response.labels(*self.values).observe((request.first_token_at - request.arrived) * 1e3)

    def _finished(self, request: Request) -> None:
        v = self.values
        assert request.finished_at is not None and request.first_token_at is not None
        admitted = request.admitted_at if request.admitted_at is not None else request.arrived
        self.success.labels(*v).inc()
        self.count.labels(*v).inc()
        self.exec_count.labels(*v).inc()
        self.queue_us.labels(*v).inc((admitted - request.arrived) * 1e6)
        self.compute_us.labels(*v).inc((request.finished_at - admitted) * 1e6)
        self.request_us.labels(*v).inc((request.finished_at - request.arrived) * 1e6)
        self.input_len.labels(*v).observe(request.prompt_tokens)
        self.output_len.labels(*v).observe(request.generated)
        self.input_tokens.labels(*v).inc(request.prompt_tokens)
        if request.generated > 1:
            itl = (request.finished_at - request.first_token_at) / (request.generated - 1)
            self.inter_token.labels(*v).observe(itl * 1e3)
        self.sync_tokens()
