"""Performance model of one replica (one tensor/pipeline-parallel TensorRT-LLM engine).

Pure functions of the GPU and model profiles; the emulator and the simulator both use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference_pods.profiles import GPUS, MODELS, GpuProfile, ModelProfile

# Weights stream from the model cache at this rate on a cold start (a local NVMe-backed PVC or
# node cache reads 1-3 GB/s; 1.5 GB/s per replica is a middle value).
DEFAULT_STORAGE_BANDWIDTH = 1.5e9
# Fixed engine start cost: CUDA context, NCCL init, KV-cache allocation, CUDA-graph capture.
ENGINE_INIT_SECONDS = 45.0
# Memory the runtime keeps for activations, CUDA graphs and NCCL buffers, per GPU.
RUNTIME_RESERVED_BYTES = 4e9


@dataclass(frozen=True)
class Fit:
    fits: bool
    weight_bytes_per_gpu: float
    usable_bytes_per_gpu: float
    message: str


def weights_fit(model: ModelProfile, gpu: GpuProfile, precision: str, gpus_per_replica: int) -> Fit:
    """Do the weights fit in the replica's GPUs with room left for a KV cache?

    Llama-3.1-405B in BF16 on 8 x H100: 405.9e9 x 2 B / 8 = 101.5 GB per GPU > 80 GB, so no.
    """
    per_gpu = model.weight_bytes(precision) / gpus_per_replica
    usable = gpu.hbm_bytes - RUNTIME_RESERVED_BYTES
    fits = per_gpu < usable
    message = (
        f"{model.name} in {precision} needs {per_gpu / 1e9:.1f} GB of weights per GPU across "
        f"{gpus_per_replica} GPU(s); a {gpu.product} offers {usable / 1e9:.1f} GB after the runtime's "
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


def profiles_for(model_profile: str, gpu_product: str) -> tuple[ModelProfile, GpuProfile]:
    return MODELS[model_profile], GPUS[gpu_product]
