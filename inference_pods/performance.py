"""Performance model of one replica: one TensorRT-LLM engine on ``tp x pp`` GPUs, dense or mixture-of-experts.

Pure functions of the GPU table (``crds.gpus``), the model's architecture (``crds.architecture``) and a handful
of fitted efficiency constants; nothing here is a table of measured results. The emulator (real time) and the
simulator (virtual time) both step engines with ``ReplicaModel.step_seconds``, so they agree by construction.
docs/performance-model.md derives the formulas with worked numbers and compares them with every published row of
../shared/calibration (``python -m bench.calibration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from crds.models import ModelDeploymentSpec, ModelSpec
from inference_pods.profiles import GPUS, MODELS, GpuProfile, ModelProfile, bytes_per_value

# --- efficiency constants (the only fitted numbers: bench/calibration.py --fit) -------------------
# Fraction of dense tensor-core peak that large GEMMs reach (prefill, big decode batches), FP8 and 16-bit.
COMPUTE_EFFICIENCY = 0.634
# The same for NVFP4 GEMMs: activations are quantised to FP4 with block scales on the fly, and the doubled peak
# is reached only at shapes larger than a serving step's.
FP4_COMPUTE_EFFICIENCY = 0.389
# Grouped expert GEMMs reach this share of what dense GEMMs do: each expert sees only T x k / E of the step's
# tokens (a few to a few hundred rows), padded to whole tiles, after a routing permutation.
MOE_COMPUTE_EFFICIENCY = 0.165
# Fraction of HBM bandwidth that weight and KV-cache streaming reaches.
BANDWIDTH_EFFICIENCY = 0.95
# Fraction of the one-way link bandwidth (NVLink, or the network between nodes) collectives reach.
COMM_EFFICIENCY = 0.691
# Latency of one small collective step; a ring of n ranks takes log2(n) + 1 of them.
COMM_LATENCY_SECONDS = 20.4e-6
# Compute and memory traffic overlap only in part: a step takes the p-norm of the two times
# (p = 1 would be no overlap, p = infinity a perfect roofline). The fit lands on p = 1: a step is a sequence
# of kernels (GEMMs, attention, MoE, collectives), each bound by one or the other, so their times add.
OVERLAP_NORM = 1.0
# Per engine step: scheduling, sampling, CUDA-graph launch.
STEP_OVERHEAD_SECONDS = 2.81e-3
# Memory the runtime keeps for CUDA graphs, NCCL buffers and the like, per GPU.
RUNTIME_RESERVED_BYTES = 6.08e9
# Activations: the runtime sizes its KV cache after a profiling forward pass of a full step (max_num_tokens
# tokens, the group's with attention DP), whose peak holds this many hidden-sized 16-bit vectors per token
# (residual, norms, QKV, the FFN's or the experts' intermediates, logits).
ACTIVATION_RESERVE_WIDTHS = 54.6
# Weights stream from the model cache at this rate on a cold start (a local NVMe-backed PVC or
# node cache reads 1-3 GB/s; 1.5 GB/s per replica is a middle value).
DEFAULT_STORAGE_BANDWIDTH = 1.5e9
# Fixed engine start cost: CUDA context, NCCL init, KV-cache allocation, CUDA-graph capture.
ENGINE_INIT_SECONDS = 45.0
ACTIVATION_BYTES = 2  # activations (and what collectives move) stay in 16-bit even with FP8/FP4 weights


@dataclass(frozen=True)
class Fit:
    fits: bool
    weight_bytes_per_gpu: float
    usable_bytes_per_gpu: float
    message: str


def weight_bytes_per_gpu(model: ModelProfile, precision: str, tp: int, pp: int = 1,
                         attention_dp: bool = False) -> float:
    """Weights one GPU holds: its pipeline stage's share, split over the stage's ``tp`` ranks. With attention
    data-parallel every rank runs attention (and the rest of the non-expert layers) for its own requests, so
    those weights are whole on every rank of the stage and only the routed experts split.

    DeepSeek-R1 FP8 (671.0 GB, 653.9 GB of them routed experts) on TP8 x PP2: 671.0 / 16 = 41.9 GB per GPU;
    with attention DP (17.1 + 653.9 / 8) / 2 = 49.4 GB."""
    experts = model.architecture.expert_parameters * bytes_per_value(precision)
    rest = model.weight_bytes(precision) - experts
    return (rest / (1 if attention_dp else tp) + experts / tp) / pp


def weights_fit(model: ModelProfile, gpu: GpuProfile, precision: str, tp: int, pp: int = 1,
                attention_dp: bool = False) -> Fit:
    """Do the weights fit in the replica's ``tp x pp`` GPUs with room left for a KV cache?

    Llama-3.1-405B in BF16 on 8 x H100: 405.9e9 x 2 B / 8 = 101.5 GB per GPU > 79.8 GB usable, so no.
    """
    per_gpu = weight_bytes_per_gpu(model, precision, tp, pp, attention_dp)
    usable = gpu.usable_hbm_bytes - RUNTIME_RESERVED_BYTES
    fits = per_gpu < usable
    copies = " (attention DP: the non-expert weights whole on every rank)" if attention_dp and tp > 1 else ""
    message = (
        f"{model.name} in {precision} needs {per_gpu / 1e9:.1f} GB of weights per GPU across "
        f"{tp * pp} GPU(s){copies}; a {gpu.name} offers {usable / 1e9:.1f} GB after the runtime's "
        f"reserve"
    )
    return Fit(fits, per_gpu, usable, message)


def spec_fit(spec: ModelDeploymentSpec) -> Fit:
    """``weights_fit`` of a ModelDeployment's model, GPU, precision and parallelism."""
    model, gpu = profiles_for(spec.model, spec.gpu.product)
    parallelism = spec.parallelism
    return weights_fit(model, gpu, spec.engine.precision, parallelism.tensor, parallelism.pipeline,
                       parallelism.attention_data_parallel)


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


def resolve_kv_precision(precision: str, kv_precision: str = "auto") -> str:
    """``auto`` as the API documents it (TensorRT-LLM's default): FP8 KV for FP8/FP4 checkpoints, else the
    weights' 16-bit type."""
    if kv_precision != "auto":
        return kv_precision
    return "fp8" if precision in ("fp8", "fp4") else precision


@dataclass(frozen=True)
class Step:
    """The work of one engine iteration (in-flight batching: prefill chunks and decodes together)."""

    prefill_tokens: int = 0  # prompt tokens processed this step
    prefill_context: int = 0  # sum over prefill tokens of the context they attend to
    decode_requests: int = 0  # requests emitting one token this step
    decode_context: int = 0  # sum of the decode requests' context lengths (KV read)


@dataclass(frozen=True)
class _Costs:
    """Everything about a step that does not depend on its work, per rank of one pipeline stage."""

    flops_per_token: float  # 2 x non-expert weights a prompt token multiplies (LM head excluded), / ranks
    expert_flops: float  # 2 x the routed expert weights a token multiplies, / ranks, in units of the dense rate
    head_flops: float  # 2 x LM head, for each token that samples, / ranks
    attention_flops: float  # per (token, context token) over the full-attention layers, / ranks
    window_flops: float  # the same for the sliding-window layers (their context capped at the window)
    window: int
    dense_bytes: float  # non-expert weights one rank reads per micro-batch, over all its stages
    expert_bytes: float  # one routed expert of every MoE layer, / ranks (0: dense model)
    experts: int
    miss: float  # 1 - k / E: the chance a token skips a given expert
    kv_bytes: float  # KV bytes per context token over the full-attention layers, / KV shards
    window_kv_bytes: float  # the same for the sliding-window layers
    compute_rate: float  # GEMM FLOP/s of one rank at the weights' precision, efficiency applied
    attention_rate: float  # attention FLOP/s of one rank (at the KV cache's precision), over compute_rate
    memory_rate: float  # bytes/s of one rank
    comm_latency: float  # per micro-batch traversal, all stages
    comm_per_token: float  # seconds per token of collectives and stage-to-stage transfers, all stages
    pp: int


@dataclass(frozen=True)
class ReplicaModel:
    """One engine: ``tp`` x ``pp`` GPUs serving ``model`` at ``precision``; ``ep`` of the ``tp`` ranks split
    the routed experts, and with ``attention_dp`` every rank runs attention for its own share of the requests
    (TensorRT-LLM's ``enable_attention_dp``: the "DEP" configurations)."""

    model: ModelProfile
    gpu: GpuProfile
    precision: str = "bf16"
    tp: int = 1
    pp: int = 1
    max_batch_size: int = 256
    max_num_tokens: int = 8192
    kv_cache_fraction: float = 0.9
    chunked_prefill: bool = True
    ep: int = 1
    attention_dp: bool = False
    kv_precision: str = "auto"

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
                   chunked_prefill=spec.engine.enable_chunked_prefill, ep=spec.parallelism.expert,
                   attention_dp=spec.parallelism.attention_data_parallel,
                   kv_precision=spec.engine.kv_cache_precision)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def batch_limit(self) -> int:
        """Requests in flight at most: ``max_batch_size`` is per rank with attention data-parallel (each rank
        schedules its own requests), else per engine."""
        return self.max_batch_size * (self.tp if self.attention_dp else 1)

    @property
    def token_budget(self) -> int:
        """Tokens one iteration takes at most (per rank with attention data-parallel, as ``batch_limit``)."""
        return self.max_num_tokens * (self.tp if self.attention_dp else 1)

    @property
    def kv_dtype(self) -> str:
        return resolve_kv_precision(self.precision, self.kv_precision)

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes of one token over all layers at the KV precision (at long context)."""
        return self.model.kv_bytes_per_token(self.kv_dtype)

    @property
    def _kv_shards(self) -> int:
        """Ranks of one stage that each hold a different part of a token's KV: every rank its own requests'
        with attention DP; KV heads split over at most kv_heads ranks (copied beyond); MLA's one latent per
        token is copied to every tensor-parallel rank."""
        arch = self.model.architecture
        if self.attention_dp:
            return self.tp
        if arch.mla is not None:
            return 1
        return min(self.tp, arch.kv_heads)

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weights one GPU holds: its stage's share; with attention DP the non-expert weights are whole on
        every rank of the stage, the experts split."""
        return weight_bytes_per_gpu(self.model, self.precision, self.tp, self.pp, self.attention_dp)

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the paged KV cache holds: per GPU the usable HBM less its weights and the reserve, times the
        fraction, over the bytes a token takes on one GPU (its stage's layers, its KV shard).

        Llama-3.1-8B FP8 on one H100, 8,192-token steps: (85.90 - 8.03 - 6.08 - 3.66 activations) GB x 0.9 /
        65,536 B = 935,557 tokens.
        """
        # With attention DP the MoE layers gather every rank's tokens, so their activations are the group's.
        activations = self.max_num_tokens * (self.tp if self.attention_dp else 1) * self.model.hidden_size \
            * ACTIVATION_BYTES * ACTIVATION_RESERVE_WIDTHS
        free = self.gpu.usable_hbm_bytes - self.weight_bytes_per_gpu - RUNTIME_RESERVED_BYTES - activations
        per_gpu = self.kv_bytes_per_token / (self.pp * self._kv_shards)
        return max(0, int(free * self.kv_cache_fraction / per_gpu))

    @property
    def request_kv_capacity_tokens(self) -> int:
        """Tokens of KV one request can hold: the whole cache, or with attention DP one rank's share of it, since
        each rank keeps the KV of its own requests (``_kv_shards``) and a request never spans ranks. DeepSeek-R1
        FP8 with attention DP on 8 x H200: one eighth of the group's tokens."""
        return self.kv_capacity_tokens // (self.tp if self.attention_dp else 1)

    def _link(self, ranks: int) -> float:
        """One-way bytes/s per GPU of a collective over ``ranks`` GPUs: NVLink within one NVLink domain
        (a node, or a whole NVL72 rack), the network beyond."""
        if ranks <= self.gpu.nvlink_domain:
            return self.gpu.nvlink_bandwidth / 2 * COMM_EFFICIENCY
        return self.gpu.network_bandwidth * COMM_EFFICIENCY

    @cached_property
    def _costs(self) -> _Costs:
        arch = self.model.architecture
        tp, pp = self.tp, self.pp
        ranks = tp * pp
        width = bytes_per_value(self.precision)
        hidden = arch.hidden_size
        head = arch.vocab_size * hidden
        # Attention: QK^T and AV, 2 FLOPs per multiply-add; MLA in its absorbed form scores the 576-wide
        # latent+rope and mixes the 512-wide latent per head.
        if arch.mla is not None:
            per_context = 2 * arch.attention_heads * (arch.mla.cached_values + arch.mla.kv_lora_rank)
        else:
            per_context = 4 * arch.attention_heads * arch.head_dim
        window_layers = arch.sliding_window.layers if arch.sliding_window else 0
        full_layers = arch.attention_layers - window_layers
        kv_width = bytes_per_value(self.kv_dtype)
        kv_layer = arch.kv_values_per_layer * kv_width / self._kv_shards
        experts = arch.moe.routed_experts if arch.moe else 0
        expert_bytes = arch.expert_parameters * width / experts / ranks if experts else 0.0
        rest_params = self.model.parameters - arch.expert_parameters \
            - (0 if arch.tied_embeddings else head)  # the input embedding is a lookup, not a read
        dense_bytes = rest_params * width / (pp if self.attention_dp else ranks)
        # Collectives per stage: with attention DP, an all-to-all of each token's hidden state to its k experts
        # and back (dispatch + combine) in every MoE layer; else two all-reduces per layer (after attention and
        # after the FFN/MoE), a ring moving 2 (tp-1)/tp of the payload.
        act = hidden * ACTIVATION_BYTES
        comm_latency, comm_per_token = 0.0, 0.0
        if tp > 1:
            link = self._link(tp)
            steps = 1 + math.log2(tp)
            if self.attention_dp:
                k = arch.moe.experts_per_token if arch.moe else 1
                layers = arch.moe_layers if arch.moe else 0
                comm_per_token = layers * 2 * k * act * (self.ep - 1) / self.ep / tp / link
                comm_latency = layers * 2 * COMM_LATENCY_SECONDS * steps
            else:
                comm_per_token = arch.layers * 2 * 2 * (tp - 1) / tp * act / link
                comm_latency = arch.layers * 2 * COMM_LATENCY_SECONDS * steps
        if pp > 1:  # each stage hands its activations to the next
            link = self._link(ranks)
            comm_per_token += (pp - 1) * act / link
            comm_latency += (pp - 1) * COMM_LATENCY_SECONDS
        routed = 0.0
        if arch.moe is not None:
            routed = arch.moe_layers * arch.moe.experts_per_token * 3 * hidden * arch.moe.expert_ffn_size
        gemm_efficiency = FP4_COMPUTE_EFFICIENCY if self.precision == "fp4" and self.gpu.has_fp4 \
            else COMPUTE_EFFICIENCY
        compute_rate = self.gpu.tflops(self.precision) * 1e12 * gemm_efficiency
        return _Costs(
            flops_per_token=2 * (self.model.compute_parameters - head - routed) / ranks,
            expert_flops=2 * routed / ranks / MOE_COMPUTE_EFFICIENCY,
            head_flops=2 * head / ranks,
            attention_flops=full_layers * per_context / ranks,
            window_flops=window_layers * per_context / ranks,
            window=arch.sliding_window.window if arch.sliding_window else 0,
            dense_bytes=dense_bytes,
            expert_bytes=expert_bytes,
            experts=experts,
            miss=1 - arch.moe.experts_per_token / experts if arch.moe else 1.0,
            kv_bytes=full_layers * kv_layer / pp,
            window_kv_bytes=window_layers * kv_layer / pp,
            compute_rate=compute_rate,
            attention_rate=self.gpu.tflops(self.kv_dtype) * 1e12 * COMPUTE_EFFICIENCY / compute_rate,
            memory_rate=self.gpu.hbm_bandwidth * BANDWIDTH_EFFICIENCY,
            comm_latency=comm_latency,
            comm_per_token=comm_per_token,
            pp=pp,
        )

    def _seconds(self, c: _Costs, tokens: int, sampled: int, attended: int, kv_read: int,
                 windows: int) -> float:
        """One iteration of ``tokens`` tokens (``sampled`` of them produce logits), ``attended`` (token,
        context) pairs, ``kv_read`` context tokens of KV read; ``windows`` caps both at a sliding window.

        The batch runs as m = min(pp, tokens) micro-batches. Every rank's share of a stage: compute and memory
        as a soft roofline (the p-norm), its weights once per micro-batch (the routed experts the micro-batch's
        tokens touch: E (1 - (1 - k/E)^t) per layer), then its collectives. A request's next token needs its
        micro-batch to pass every stage, and a stage serves the m micro-batches in turn, so the iteration takes
        max(m, pp) stage times: with m = pp every GPU is busy; a batch too small to split leaves pp - m of
        them idle (the pipeline bubble), which is why PP adds capacity but not speed."""
        m = c.pp if tokens >= c.pp else tokens
        t = tokens / m
        window_attended = attended if attended < windows * c.window else windows * c.window
        window_read = kv_read if kv_read < windows * c.window else windows * c.window
        compute = ((c.flops_per_token + c.expert_flops) * t + c.head_flops * sampled / m
                   + (c.attention_flops * attended + c.window_flops * window_attended) / m / c.attention_rate) \
            / c.compute_rate
        weights = c.dense_bytes
        if c.experts:
            weights += c.expert_bytes * c.experts * (1 - c.miss ** t)
        memory = (weights + (c.kv_bytes * kv_read + c.window_kv_bytes * window_read) / m) / c.memory_rate
        p = OVERLAP_NORM
        stage = float((compute**p + memory**p) ** (1 / p)) + (c.comm_latency + c.comm_per_token * t) / c.pp
        return c.pp * stage + STEP_OVERHEAD_SECONDS

    def step_seconds(self, step: Step) -> float:
        """Duration of one iteration (see ``_seconds``). Decode of Llama-3.1-8B BF16 on one H100 at batch 1,
        context 1,000: weights 15.01 GB (all but the input embedding, a lookup) + KV 0.13 GB over 3.35 TB/s x
        0.95 = 4.76 ms of memory; 15 GFLOP over 989 TFLOP/s x 0.634 = 0.02 ms of compute; summed (p = 1)
        4.78 ms, + 2.81 ms of step overhead = 7.6 ms per token."""
        tokens = step.prefill_tokens + step.decode_requests
        if tokens == 0:
            return 0.0
        return self._seconds(self._costs, tokens, step.decode_requests, step.prefill_context + step.decode_context,
                             step.decode_context + step.prefill_tokens, tokens)

    def decode_run_ends(self, start: float, batch: int, context: int, steps: int, horizon: float) -> list[float]:
        """End times of up to ``steps`` successive decode iterations of ``batch`` requests starting at
        ``start`` with ``context`` tokens of KV in all (each iteration adds ``batch``), stopping after the
        first that ends at or past ``horizon``. The same numbers as ``step_seconds`` on each
        ``Step(decode_requests=batch, decode_context=...)``, for the simulator's fast-forward."""
        # _seconds with everything but the context hoisted out of the loop (a few hundred iterations per call,
        # millions per simulated hour); the same operations in the same order, so the same floats.
        c = self._costs
        m = c.pp if batch >= c.pp else batch
        t = batch / m
        cap = batch * c.window
        fixed_compute = (c.flops_per_token + c.expert_flops) * t + c.head_flops * batch / m
        weights = c.dense_bytes
        if c.experts:
            weights += c.expert_bytes * c.experts * (1 - c.miss ** t)
        comm = (c.comm_latency + c.comm_per_token * t) / c.pp
        p, inverse_p, pp, overhead = OVERLAP_NORM, 1 / OVERLAP_NORM, c.pp, STEP_OVERHEAD_SECONDS
        ends: list[float] = []
        now = start
        for i in range(steps):
            kv = context + i * batch
            capped = kv if kv < cap else cap
            compute = (fixed_compute + (c.attention_flops * kv + c.window_flops * capped) / m / c.attention_rate) \
                / c.compute_rate
            memory = (weights + (c.kv_bytes * kv + c.window_kv_bytes * capped) / m) / c.memory_rate
            now += pp * (float((compute**p + memory**p) ** inverse_p) + comm) + overhead
            ends.append(now)
            if now >= horizon:
                break
        return ends

    def prefill_capacity(self, prompt_tokens: int = 2048, headroom: float = 0.8) -> float:
        """Prompt tokens per second one replica prefills, at ``headroom``: whole prompts, as many per step
        as the step's token budget takes. Nearly independent of the prompt length up to a few thousand
        tokens (attention is a small share of a prefill's FLOPs there), so 2,048 serves as the default."""
        batch = max(1, self.token_budget // prompt_tokens)
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
        scheduler (GUARANTEED_NO_EVICT) reserves input + output tokens per request (per rank's cache with
        attention DP)."""
        per_request = input_tokens + output_tokens
        # With attention DP each rank admits into its own cache: whole requests per rank, times the ranks.
        ranks = self.tp if self.attention_dp else 1
        return max(1, min(self.batch_limit, ranks * (self.request_kv_capacity_tokens // per_request)))

    def saturation_throughput(self, input_tokens: int, output_tokens: int) -> float:
        """Output tokens per second at an infinite request rate, fixed lengths (as trtllm-bench): the steady
        state of the engine's own scheduler (``inference_pods.batching``) with every request queued.

        With N requests in flight each takes one step to prefill and OSL - 1 to decode, so a cycle of OSL steps
        emits N x OSL tokens. The scheduler does not spread prompts evenly over the cycle: when a group of
        requests finishes, the group that replaces it is prefilled in the next step, and a step's prompts fill
        its token budget (B tokens less the other requests' decodes). So g = (B - N) / (ISL - 1) prompts share
        a step, F = N / g steps of each cycle carry prefill and OSL - F only decode. When F reaches OSL every
        step is full (prefill-bound): d = B (OSL - 1) / (OSL - 1 + ISL) decodes plus B - d prompt tokens a
        step. tests/unit/test_performance_model.py checks this against ``batching.closed_loop_throughput``.
        """
        isl, osl, budget = input_tokens, max(1, output_tokens), self.token_budget
        n = self.max_concurrency(isl, osl)
        context = isl + osl // 2  # a decoder's mean context over its life
        group = float(n) if isl <= 1 else min(float(n), max(1.0, (budget - n) / (isl - 1)))
        mixed_steps = n / group
        if mixed_steps >= osl or budget <= n:
            decodes = max(1, min(n, int(budget * (osl - 1) / (osl - 1 + isl))))
            prefill = max(0, budget - decodes)
            step = Step(prefill_tokens=prefill, prefill_context=prefill * (isl + 1) // 2,
                        decode_requests=decodes, decode_context=decodes * context)
            return (decodes + prefill / max(1, isl)) / self.step_seconds(step)
        # A mixed step: the prompts of the group (a fraction of one spills into the next step) and the others'
        # decodes, filling the budget; F of them carry the cycle's N x ISL prompt tokens.
        prefill = min(n * isl, int(budget - (n - group)))
        mixed_steps = n * isl / prefill
        groups = prefill / isl
        mixed = Step(prefill_tokens=prefill, prefill_context=int(groups * (isl * (isl + 1) // 2)),
                     decode_requests=n - int(groups), decode_context=(n - int(groups)) * context)
        decode = Step(decode_requests=n, decode_context=n * context)
        cycle = mixed_steps * self.step_seconds(mixed) + (osl - mixed_steps) * self.step_seconds(decode)
        return n * osl / cycle

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
                           int(self.token_budget / (1 + input_tokens / output_tokens))))
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
