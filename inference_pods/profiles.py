"""GPU and model profiles for the performance model: views of the API's tables, nothing measured.

GPUs come from ``crds.gpus.GPU_PRODUCTS`` (the one table of products), models from an ``Architecture``: the
catalogue's for ``spec.model.profile``, or the spec's own ``spec.model.architecture``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crds.architecture import Architecture
from crds.catalogue import CATALOGUE
from crds.gpus import GPU_PRODUCTS, GpuProduct
from crds.models import ModelSpec

GpuProfile = GpuProduct
GPUS: dict[str, GpuProduct] = GPU_PRODUCTS

# Bytes a weight or KV value takes. NVFP4 stores 4-bit values with one FP8 scale per block of 16 (and a
# per-tensor FP32 scale): 0.5 + 1/16 bytes (TensorRT-LLM's and ModelOpt's NVFP4 format).
BYTES_PER_VALUE: dict[str, float] = {"fp4": 0.5 + 1 / 16, "fp8": 1.0, "bf16": 2.0, "fp16": 2.0}


def bytes_per_value(precision: str) -> float:
    return BYTES_PER_VALUE[precision]


@dataclass(frozen=True)
class ModelProfile:
    """A model for the performance model: its name (a catalogue name, or ``custom``) and architecture."""

    name: str
    architecture: Architecture

    @classmethod
    def of(cls, model: ModelSpec) -> ModelProfile:
        return cls(model.shape_name, model.shape)

    @property
    def parameters(self) -> float:
        """Every weight (what HBM holds): total, not active, for a mixture of experts."""
        return float(self.architecture.total_parameters)

    @property
    def active_parameters(self) -> float:
        return float(self.architecture.active_parameters)

    @property
    def compute_parameters(self) -> float:
        """Weights one token multiplies (active, less the embedding lookup)."""
        return float(self.architecture.compute_parameters)

    @property
    def layers(self) -> int:
        return self.architecture.layers

    @property
    def hidden_size(self) -> int:
        return self.architecture.hidden_size

    @property
    def attention_heads(self) -> int:
        return self.architecture.attention_heads

    @property
    def kv_heads(self) -> int:
        return self.architecture.kv_heads

    @property
    def head_dim(self) -> int:
        return self.architecture.head_dim

    @property
    def vocab_size(self) -> int:
        return self.architecture.vocab_size

    @property
    def context_length(self) -> int:
        return self.architecture.context_length

    def weight_bytes(self, precision: str) -> float:
        return self.parameters * bytes_per_value(precision)

    def kv_bytes_per_token(self, precision: str, context: int | None = None) -> float:
        """K and V of every attention layer for one token (see ``Architecture.kv_values_per_token``).

        Llama-3.1-8B in BF16: 2 x 32 x 8 x 128 x 2 B = 131,072 B = 128 KiB per token; DeepSeek-R1's MLA in
        FP8: 61 x 576 x 1 B = 34.3 KiB.
        """
        return self.architecture.kv_values_per_token(context) * bytes_per_value(precision)


MODELS: dict[str, ModelProfile] = {name: ModelProfile(name, shape) for name, shape in CATALOGUE.items()}
