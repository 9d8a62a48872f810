"""The control plane the tests start: it lives in the product (the factory starts it too)."""

from controllers.factory.plane import (
    BUILD_SCRIPT,
    COMPONENTS,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    KUBE_VERSION,
    KWOK_ANNOTATION,
    REPO_ROOT,
    Component,
    ControlPlane,
    ControlPlaneError,
    GpuNodeSpec,
    Pki,
    binary,
    default_bin_dir,
    default_gpu_nodes,
    free_port,
)

__all__ = [
    "BUILD_SCRIPT",
    "COMPONENTS",
    "GPU_PRODUCT_LABEL",
    "GPU_RESOURCE",
    "KUBE_VERSION",
    "KWOK_ANNOTATION",
    "REPO_ROOT",
    "Component",
    "ControlPlane",
    "ControlPlaneError",
    "GpuNodeSpec",
    "Pki",
    "binary",
    "default_bin_dir",
    "default_gpu_nodes",
    "free_port",
]
