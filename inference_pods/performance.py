"""Performance model of one replica (one tensor/pipeline-parallel TensorRT-LLM engine).

Pure functions of the GPU and model profiles plus a handful of efficiency constants; nothing here is a
table of measured results. The emulator (real time) and the simulator (virtual time) both step engines
with ``ReplicaModel.step_seconds``, so they agree by construction. docs/performance-model.md derives the
formulas with worked numbers and compares them with the published figures in ../shared/calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crds.models import ModelDeploymentSpec, ModelSpec
from inference_pods.profiles import GPUS, MODELS, GpuProfile, ModelProfile

# --- efficiency constants (the only fitted numbers) ---------------------------------------------
# Fraction of dense tensor-core peak that large GEMMs reach (prefill, big decode batches).
COMPUTE_EFFICIENCY = 0.5
# Fraction of HBM bandwidth that weight and KV-cache streaming reaches.
BANDWIDTH_EFFICIENCY = 0.8
# All-reduce bus bandwidth per GPU over NVLink, as NCCL measures it (below the 450 GB/s one way).
ALLREDUCE_BANDWIDTH_FRACTION = 0.4
# Latency of one small all-reduce step; a ring of tp ranks takes log2(tp) + 1 of them.
ALLREDUCE_LATENCY_SECONDS = 15e-6
# Compute and memory traffic overlap only in part: a step takes the p-norm of the two times
# (p = 1 would be no overlap, p = infinity a perfect roofline).
OVERLAP_NORM = 1.5
# Per engine step: scheduling, sampling, CUDA-graph launch.
STEP_OVERHEAD_SECONDS = 1.5e-3
# Memory the runtime keeps for activations, CUDA graphs and NCCL buffers, per GPU.
RUNTIME_RESERVED_BYTES = 4e9
# Weights stream from the model cache at this rate on a cold start (a local NVMe-backed PVC or
# node cache reads 1-3 GB/s; 1.5 GB/s per replica is a middle value).
DEFAULT_STORAGE_BANDWIDTH = 1.5e9
# Fixed engine start cost: CUDA context, NCCL init, KV-cache allocation, CUDA-graph capture.
ENGINE_INIT_SECONDS = 45.0
ACTIVATION_BYTES = 2  # activations stay in 16-bit even with FP8 weights


@dataclass(frozen=True)
class Fit:
    fits: bool
    weight_bytes_per_gpu: float
    usable_bytes_per_gpu: float
    message: str


def weights_fit(model: ModelProfile, gpu: GpuProfile, precision: str, gpus_per_replica: int) -> Fit:
    """Do the weights fit in the replica's GPUs with room left for a KV cache?

    Llama-3.1-405B in BF16 on 8 x H100: 405.9e9 x 2 B / 8 = 101.5 GB per GPU > 76 GB usable, so no.
    """
    per_gpu = model.weight_bytes(precision) / gpus_per_replica
    usable = gpu.usable_hbm_bytes - RUNTIME_RESERVED_BYTES
    fits = per_gpu < usable
    message = (
        f"{model.name} in {precision} needs {per_gpu / 1e9:.1f} GB of weights per GPU across "
        f"{gpus_per_replica} GPU(s); a {gpu.name} offers {usable / 1e9:.1f} GB after the runtime's "
        f"reserve"
    )
    return Fit(fits, per_gpu, usable, message)


def engine_load_seconds(model: ModelProfile, precision: str, gpus_per_replica: int,
                        storage_bandwidth: float = DEFAULT_STORAGE_BANDWIDTH) -> float:
    """Cold start of one replica: read the weights once, then initialise the engine.

    Each rank reads its own shard in parallel, so the time is one shard over the bandwidth:
    Llama-3.3-70B BF16 on TP4: 141.2 GB / 4 = 35.3 GB at 1.5 GB/s = 23.5 s, + 45 s init = 68.5 s.
    """
    shard = model.weight_bytes(precision) / gpus_per_replica
    return shard / storage_bandwidth + ENGINE_INIT_SECONDS


# First-start preparation (the init container): no NVIDIA-published figure exists (facts 6.2), so these
# are stated assumptions, printed by `tokenworks plan` as estimates: a 1 GB/s download from the hub or a
# claim, and for the engine path a checkpoint conversion and `trtllm-build` at 0.5 GB/s of weights plus
# 120 s of kernel selection.
DOWNLOAD_BANDWIDTH = 1.0e9
ENGINE_BUILD_BANDWIDTH = 0.5e9
ENGINE_BUILD_FIXED_SECONDS = 120.0


def prepare_seconds(model: ModelProfile, precision: str, backend: str) -> float:
    """The prepare step on an empty cache: Llama-3.3-70B BF16 downloads 141 GB in 141 s; the engine path
    adds 141 / 0.5 + 120 = 402 s of conversion and build. With the cache key complete it is ~0 s."""
    seconds = model.weight_bytes("bf16" if backend == "tensorrt-engine" else precision) / DOWNLOAD_BANDWIDTH
    if backend == "tensorrt-engine":
        seconds += model.weight_bytes(precision) / ENGINE_BUILD_BANDWIDTH + ENGINE_BUILD_FIXED_SECONDS
    return seconds


def profiles_for(model: ModelSpec, gpu_product: str) -> tuple[ModelProfile, GpuProfile]:
    """The model (its catalogue profile or inline architecture) and the GPU of a spec."""
    return ModelProfile.of(model), GPUS[gpu_product]


@dataclass(frozen=True)
class Step:
    """The work of one engine iteration (in-flight batching: prefill chunks and decodes together)."""

    prefill_tokens: int = 0  # prompt tokens processed this step
    prefill_context: int = 0  # sum over prefill tokens of the context they attend to
    decode_requests: int = 0  # requests emitting one token this step
    decode_context: int = 0  # sum of the decode requests' context lengths (KV read)


@dataclass(frozen=True)
class ReplicaModel:
    """One engine: ``tp`` x ``pp`` GPUs serving ``model`` at ``precision``."""

    model: ModelProfile
    gpu: GpuProfile
    precision: str = "bf16"
    tp: int = 1
    pp: int = 1
    max_batch_size: int = 256
    max_num_tokens: int = 8192
    kv_cache_fraction: float = 0.9
    chunked_prefill: bool = True

    @classmethod
    def for_profiles(cls, model: str, gpu: str, **kwargs: object) -> ReplicaModel:
        return cls(MODELS[model], GPUS[gpu], **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_spec(cls, spec: ModelDeploymentSpec) -> ReplicaModel:
        """The engine a ModelDeployment's spec describes: profile, GPU, precision, parallelism, limits."""
        return cls(ModelProfile.of(spec.model), GPUS[spec.gpu.product], precision=spec.engine.precision,
                   tp=spec.parallelism.tensor, pp=spec.parallelism.pipeline,
                   max_batch_size=spec.engine.max_batch_size, max_num_tokens=spec.engine.max_num_tokens,
                   kv_cache_fraction=spec.engine.kv_cache_free_gpu_mem_fraction,
                   chunked_prefill=spec.engine.enable_chunked_prefill)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def kv_bytes_per_token(self) -> float:
        # TensorRT-LLM keeps the KV cache in FP8 when the checkpoint is FP8, else in 16 bit.
        return self.model.kv_bytes_per_token(self.precision)

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the paged KV cache holds: the HBM left after weights and reserve, times the fraction.

        Llama-3.1-8B FP8 on one H100: (80 - 8.03 - 4) GB x 0.9 / 65,536 B = 933,000 tokens.
        """
        free = self.gpus * self.gpu.usable_hbm_bytes - self.model.weight_bytes(self.precision) \
            - self.gpus * RUNTIME_RESERVED_BYTES
        return max(0, int(free * self.kv_cache_fraction / self.kv_bytes_per_token))

    def _allreduce_seconds(self, tokens: int) -> float:
        """Two all-reduces per layer of the activations (after attention and after the MLP)."""
        if self.tp == 1 or tokens == 0:
            return 0.0
        payload = tokens * self.model.hidden_size * ACTIVATION_BYTES
        ring_bytes = 2 * (self.tp - 1) / self.tp * payload
        bandwidth = self.gpu.nvlink_bandwidth * ALLREDUCE_BANDWIDTH_FRACTION
        latency = ALLREDUCE_LATENCY_SECONDS * (1 + math.log2(self.tp))
        return 2 * self.model.layers * (latency + ring_bytes / bandwidth)

    def step_seconds(self, step: Step) -> float:
        """Duration of one iteration: a soft roofline of compute and memory, plus communication.

        FLOPs: 2 x params per token, plus attention, 4 x layers x d_model per (token, context token)
        (QK^T and AV, multiply-adds). Bytes: every weight once, plus the KV cache of every decoding
        request. Decode of Llama-3.1-8B BF16 on one H100 at batch 1, context 1,000: weights
        16.06 GB + KV 0.13 GB over 3.35 TB/s x 0.8 = 6.04 ms of memory; 16 GFLOP over 989 TFLOP/s
        x 0.5 = 0.03 ms of compute; (6.04^1.5 + 0.03^1.5)^(1/1.5) + 1.5 ms overhead = 7.5 ms per token.
        """
        tokens = step.prefill_tokens + step.decode_requests
        if tokens == 0:
            return 0.0
        d_model = self.model.attention_heads * self.model.head_dim
        flops = 2 * self.model.parameters * tokens \
            + 4 * self.model.layers * d_model * (step.prefill_context + step.decode_context)
        compute = flops / (self.gpus * self.gpu.tflops(self.precision) * 1e12 * COMPUTE_EFFICIENCY)
        kv_bytes = (step.decode_context + step.prefill_tokens) * self.kv_bytes_per_token
        memory = (self.model.weight_bytes(self.precision) + kv_bytes) / (
            self.gpus * self.gpu.hbm_bandwidth * BANDWIDTH_EFFICIENCY)
        busy = float((compute**OVERLAP_NORM + memory**OVERLAP_NORM) ** (1 / OVERLAP_NORM))
        # Summed as decode_run_ends sums them (float addition is not associative).
        return busy + (self._allreduce_seconds(tokens) + STEP_OVERHEAD_SECONDS)

    def decode_run_ends(self, start: float, batch: int, context: int, steps: int, horizon: float) -> list[float]:
        """End times of up to ``steps`` successive decode iterations of ``batch`` requests starting at
        ``start`` with ``context`` tokens of KV in all (each iteration adds ``batch``), stopping after the
        first that ends at or past ``horizon``. The same numbers as ``step_seconds`` on each
        ``Step(decode_requests=batch, decode_context=...)``, for the simulator's fast-forward."""
        # step_seconds with everything but the context hoisted out of the loop (a few hundred
        # iterations per call, millions per simulated hour).
        d_model = self.model.attention_heads * self.model.head_dim
        compute_rate = self.gpus * self.gpu.tflops(self.precision) * 1e12 * COMPUTE_EFFICIENCY
        memory_rate = self.gpus * self.gpu.hbm_bandwidth * BANDWIDTH_EFFICIENCY
        weight_flops = 2 * self.model.parameters * batch
        attention_flops = 4 * self.model.layers * d_model
        weights, kv_bytes = self.model.weight_bytes(self.precision), self.kv_bytes_per_token
        fixed = self._allreduce_seconds(batch) + STEP_OVERHEAD_SECONDS
        p, inverse_p = OVERLAP_NORM, 1 / OVERLAP_NORM
        ends: list[float] = []
        now = start
        for i in range(steps):
            kv = context + i * batch
            compute = (weight_flops + attention_flops * kv) / compute_rate
            memory = (weights + kv * kv_bytes) / memory_rate
            now += float((compute**p + memory**p) ** inverse_p) + fixed
            ends.append(now)
            if now >= horizon:
                break
        return ends

    def prefill_capacity(self, prompt_tokens: int = 2048, headroom: float = 0.8) -> float:
        """Prompt tokens per second one replica prefills, at ``headroom``: whole prompts, as many per step
        as the step's token budget takes. Nearly independent of the prompt length up to a few thousand
        tokens (attention is a small share of a prefill's FLOPs there), so 2,048 serves as the default.
        Llama-3.1-8B BF16 on one H100: 4 prompts of 2,048 per 8,192-token step in 0.277 s, x 0.8 =
        23,650 tokens/s; Llama-3.3-70B BF16 on four H200s: 9,430 tokens/s."""
        batch = max(1, self.max_num_tokens // prompt_tokens)
        return headroom * batch * prompt_tokens / self.prefill_seconds(prompt_tokens, batch)

    def prefill_seconds(self, prompt_tokens: int, batch: int = 1) -> float:
        """One unchunked prefill of ``batch`` prompts of ``prompt_tokens`` (causal: each token attends
        to half the prompt on average)."""
        return self.step_seconds(Step(prefill_tokens=prompt_tokens * batch,
                                      prefill_context=batch * prompt_tokens * (prompt_tokens + 1) // 2))

    def decode_seconds(self, batch: int, context: int) -> float:
        """One decode step of ``batch`` requests each holding ``context`` tokens."""
        return self.step_seconds(Step(decode_requests=batch, decode_context=batch * context))

    def max_concurrency(self, input_tokens: int, output_tokens: int) -> int:
        """Requests in flight at once: the batch limit, or the KV cache when TensorRT-LLM's default
        scheduler (GUARANTEED_NO_EVICT) reserves input + output tokens per request."""
        per_request = input_tokens + output_tokens
        return max(1, min(self.max_batch_size, self.kv_capacity_tokens // per_request))

    def saturation_throughput(self, input_tokens: int, output_tokens: int) -> float:
        """Output tokens per second at an infinite request rate, fixed lengths (as trtllm-bench).

        In steady state with N requests in flight, each step emits N tokens and N / OSL requests
        finish, so N / OSL new prompts (ISL tokens each) are prefilled per step, within the
        ``max_num_tokens`` budget. The decode batch's mean context is ISL + OSL / 2.
        """
        n = self.max_concurrency(input_tokens, output_tokens)
        prefill_per_output = input_tokens / output_tokens
        # The token budget of a step bounds the batch: N decodes + N x ISL/OSL prefill tokens.
        n = max(1, min(n, int(self.max_num_tokens / (1 + prefill_per_output))))
        prefill_tokens = round(n * prefill_per_output)
        step = Step(
            prefill_tokens=prefill_tokens,
            prefill_context=prefill_tokens * (input_tokens + 1) // 2,
            decode_requests=n,
            decode_context=n * (input_tokens + output_tokens // 2),
        )
        return n / self.step_seconds(step)

    def steady_step_seconds(self, n: int, input_tokens: int, output_tokens: int) -> float:
        """One iteration with ``n`` requests in flight in steady state: their decodes plus the prefill of
        the prompts that replace those finishing (n x ISL / OSL tokens), the inter-token latency the
        fleet sees. What ``capacity_at_slo`` holds under the ITL target."""
        return self.step_seconds(self._steady_step(n, input_tokens, output_tokens))

    def _steady_step(self, n: int, input_tokens: int, output_tokens: int) -> Step:
        prefill = round(n * input_tokens / output_tokens)
        return Step(prefill_tokens=prefill, prefill_context=prefill * (input_tokens + 1) // 2,
                    decode_requests=n, decode_context=n * (input_tokens + output_tokens // 2))

    def concurrency_at_slo(self, itl_target_seconds: float, input_tokens: int = 1000,
                           output_tokens: int = 200) -> int:
        """The most requests one replica holds in flight while its steady iteration (the inter-token
        latency: their decodes plus their share of prefill) stays under the target: what a team sets as
        a per-pod concurrency target for HPA or Knative from the SLO."""
        limit = max(1, min(self.max_concurrency(input_tokens, output_tokens),
                           int(self.max_num_tokens / (1 + input_tokens / output_tokens))))
        low, high = 0, limit
        while low < high:  # the largest n whose steady iteration meets the target
            mid = (low + high + 1) // 2
            if self.step_seconds(self._steady_step(mid, input_tokens, output_tokens)) <= itl_target_seconds:
                low = mid
            else:
                high = mid - 1
        return max(1, low)

    def capacity_at_slo(self, itl_target_seconds: float, input_tokens: int = 1000, output_tokens: int = 200,
                        headroom: float = 0.8) -> float:
        """Output tokens/s one replica carries while an iteration (the inter-token latency) stays
        under target, times ``headroom`` so queues stay short (TTFT) between autoscaler ticks.

        Llama-3.1-8B BF16 on an H100 at 1000/200 tokens and a 100 ms ITL target: the largest steady
        batch whose iteration (its decodes plus their share of prefill) stays under 100 ms, at 80%.
        """
        n = self.concurrency_at_slo(itl_target_seconds, input_tokens, output_tokens)
        return headroom * n / self.step_seconds(self._steady_step(n, input_tokens, output_tokens))

    def load_seconds(self, storage_bandwidth: float = DEFAULT_STORAGE_BANDWIDTH) -> float:
        return engine_load_seconds(self.model, self.precision, self.gpus, storage_bandwidth)
