"""GPU and model profiles: published hardware figures and model shapes, nothing measured.

Figures are per GPU, dense (without 2:4 sparsity), from the NVIDIA datasheets; model shapes from the
models' published configurations. The performance model derives timings from these.
"""

from __future__ import annotations

from dataclasses import dataclass

from crds.models import GPU_PRODUCT_NODE_LABELS, GPUS_PER_NODE

GB = 1e9
TB = 1e12


@dataclass(frozen=True)
class GpuProfile:
    product: str
    bf16_tflops: float
    fp8_tflops: float | None  # None: no FP8 tensor cores (A100)
    hbm_bytes: float
    hbm_bandwidth: float  # bytes/s
    interconnect_bandwidth: float  # bytes/s per GPU (NVLink, or PCIe where there is none)
    gpus_per_node: int
    node_label_values: tuple[str, ...]

    def tflops(self, precision: str) -> float:
        if precision == "fp8" and self.fp8_tflops is not None:
            return self.fp8_tflops
        return self.bf16_tflops


GPUS: dict[str, GpuProfile] = {
    "H100-SXM": GpuProfile("H100-SXM", 989, 1979, 80 * GB, 3.35 * TB, 900 * GB,
                           GPUS_PER_NODE["H100-SXM"], tuple(GPU_PRODUCT_NODE_LABELS["H100-SXM"])),
    "H200-SXM": GpuProfile("H200-SXM", 989, 1979, 141 * GB, 4.8 * TB, 900 * GB,
                           GPUS_PER_NODE["H200-SXM"], tuple(GPU_PRODUCT_NODE_LABELS["H200-SXM"])),
    "A100-80GB": GpuProfile("A100-80GB", 312, None, 80 * GB, 2.039 * TB, 600 * GB,
                            GPUS_PER_NODE["A100-80GB"], tuple(GPU_PRODUCT_NODE_LABELS["A100-80GB"])),
    "L40S": GpuProfile("L40S", 362, 733, 48 * GB, 0.864 * TB, 64 * GB,
                       GPUS_PER_NODE["L40S"], tuple(GPU_PRODUCT_NODE_LABELS["L40S"])),
}


@dataclass(frozen=True)
class ModelProfile:
    name: str
    parameters: float
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int = 131_072  # max_position_embeddings of the published config (Llama 3.1/3.3: 128k)

    def weight_bytes(self, precision: str) -> float:
        return self.parameters * bytes_per_value(precision)

    def kv_bytes_per_token(self, precision: str) -> float:
        """K and V for every layer: 2 x layers x kv_heads x head_dim values.

        Llama-3.1-8B in BF16: 2 x 32 x 8 x 128 x 2 B = 131,072 B = 128 KiB per token.
        """
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value(precision)


MODELS: dict[str, ModelProfile] = {
    "Llama-3.1-8B": ModelProfile("Llama-3.1-8B", 8.03e9, 32, 4096, 32, 8, 128, 128_256),
    "Llama-3.3-70B": ModelProfile("Llama-3.3-70B", 70.6e9, 80, 8192, 64, 8, 128, 128_256),
    "Llama-3.1-405B": ModelProfile("Llama-3.1-405B", 405.9e9, 126, 16384, 128, 8, 128, 128_256),
}


def bytes_per_value(precision: str) -> float:
    return 1.0 if precision == "fp8" else 2.0
