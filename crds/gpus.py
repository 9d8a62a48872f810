"""The one table of GPU products: everything else (the CRD's enum and rules, the node labels pods are placed
by, the performance model's figures, the node agent's fake nodes) is derived from ``GPU_PRODUCTS``.

Figures are per GPU, dense (without 2:4 sparsity). Sources (see ../shared/calibration/hopper-blackwell-moe.md):

- H100, H200, B200, GB200, B300, GB300: NVIDIA AIConfigurator's system files
  (``ai-dynamo/aiconfigurator@095f58a5`` ``aic-core/src/aiconfigurator_core/systems/*.yaml``), which cite the
  Hopper and Blackwell (Ultra) datasheets. ``usable_hbm_bytes`` is what the driver reports (nvidia-smi's total,
  the files' ``mem_capacity``), not the marketing figure: an H100 "80 GB" is 80 GiB = 85.9e9 bytes, a B200
  "180 GB" reports 184,320 MiB = 193.3e9 bytes.
- A100 80GB and L40S: their datasheets (312 / 362 dense BF16 TFLOPS, 2,039 / 864 GB/s); usable memory is
  nvidia-smi's total (81,920 MiB; 46,068 MiB for the L40S, whose 48 GB includes ECC reserve).
- GB200 and GB300 come as NVL72 racks: 18 compute trays of 4 GPUs each (one Kubernetes node per tray),
  all 72 GPUs in one NVLink domain; the HGX/DGX boards have 8 GPUs in one NVLink domain per node (the
  L40S's 8 talk over PCIe, whose bandwidth stands in its nvlink_bandwidth).
- Node labels: NVIDIA GPU feature discovery's ``nvidia.com/gpu.product``, the NVML product name with spaces
  replaced by '-'.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
TB = 1e12
MIB = 2**20


@dataclass(frozen=True)
class GpuProduct:
    """One GPU product as the API names it and the performance model costs it."""

    name: str  # the value of spec.gpu.product
    node_labels: tuple[str, ...]  # nvidia.com/gpu.product values that count as this product
    gpus_per_node: int  # GPUs one Kubernetes node (server, or NVL72 compute tray) has
    nvlink_domain: int  # GPUs that reach each other over NVLink (a whole NVL72 rack for GB200/GB300)
    bf16_tflops: float
    fp8_tflops: float | None  # None: no FP8 tensor cores (A100)
    fp4_tflops: float | None  # None: no FP4 (NVFP4) tensor cores (everything before Blackwell)
    usable_hbm_bytes: float  # what the driver reports
    hbm_bandwidth: float  # bytes/s
    nvlink_bandwidth: float  # bytes/s per GPU, both directions (PCIe where there is no NVLink)
    network_bandwidth: float  # bytes/s per GPU, one direction, between nodes (InfiniBand/RoCE NICs)
    compute_capability: str

    def tflops(self, precision: str) -> float:
        """Dense tensor TFLOPS for weights in ``precision``: FP4 and FP8 run on their own tensor cores where the
        GPU has them, and fall back to the next wider ones where it does not (the API refuses fp4 there)."""
        if precision == "fp4" and self.fp4_tflops is not None:
            return self.fp4_tflops
        if precision in ("fp4", "fp8") and self.fp8_tflops is not None:
            return self.fp8_tflops
        return self.bf16_tflops

    @property
    def has_fp4(self) -> bool:
        return self.fp4_tflops is not None


GPU_PRODUCTS: dict[str, GpuProduct] = {p.name: p for p in (
    GpuProduct("H100-SXM", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB"), 8, 8,
               989, 1979, None, 85_899_345_920, 3.35 * TB, 900 * GB, 50 * GB, "9.0"),
    GpuProduct("H200-SXM", ("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e"), 8, 8,
               989, 1979, None, 151_397_597_184, 4.8 * TB, 900 * GB, 50 * GB, "9.0"),
    GpuProduct("B200", ("NVIDIA-B200",), 8, 8,
               2250, 4500, 9000, 193_273_528_320, 7.7 * TB, 1800 * GB, 100 * GB, "10.0"),
    GpuProduct("GB200", ("NVIDIA-GB200",), 4, 72,
               2500, 5000, 10000, 198_674_743_296, 8.0 * TB, 1800 * GB, 100 * GB, "10.0"),
    GpuProduct("B300", ("NVIDIA-B300-SXM6-AC",), 8, 8,
               2250, 4500, 14000, 288_400_343_040, 7.75 * TB, 1800 * GB, 100 * GB, "10.3"),
    GpuProduct("GB300", ("NVIDIA-GB300",), 4, 72,
               2500, 5000, 15000, 298_013_687_808, 8.0 * TB, 1800 * GB, 100 * GB, "10.3"),
    GpuProduct("A100-80GB", ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"), 8, 8,
               312, None, None, 81_920 * MIB, 2.039 * TB, 600 * GB, 25 * GB, "8.0"),
    GpuProduct("L40S", ("NVIDIA-L40S",), 8, 8,
               362, 733, None, 46_068 * MIB, 0.864 * TB, 64 * GB, 25 * GB, "8.9"),
)}

GPU_PRODUCT_NAMES: tuple[str, ...] = tuple(GPU_PRODUCTS)
# Derived views kept for their readers (the CRD's rules, the node agent, telemetry).
GPUS_PER_NODE: dict[str, int] = {p.name: p.gpus_per_node for p in GPU_PRODUCTS.values()}
GPU_PRODUCT_NODE_LABELS: dict[str, list[str]] = {p.name: list(p.node_labels) for p in GPU_PRODUCTS.values()}
FP4_PRODUCTS: tuple[str, ...] = tuple(p.name for p in GPU_PRODUCTS.values() if p.has_fp4)


def known_product(product: str, field: str = "gpu.product") -> str:
    """``product`` if the table has it, else a ValueError naming the field and every product."""
    if product not in GPU_PRODUCTS:
        raise ValueError(f"{field} {product!r} is not one of {', '.join(GPU_PRODUCT_NAMES)}")
    return product
