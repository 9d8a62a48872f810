"""ModelDeployment (tokenworks.dev/v1alpha1): the pydantic models are the source of truth.

The CRD's OpenAPI schema, defaults, enums, bounds and CEL rules are generated from these models by
``crds.generate`` (``tokenworks crds generate``); field descriptions become ``kubectl explain`` text.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from crds.architecture import Architecture
from crds.base import ApiModel as ApiModel  # re-exported: its readers import it from here
from crds.base import rule as rule
from crds.catalogue import CATALOGUE, PROFILE_NAMES
from crds.gpus import FP4_PRODUCTS, GPU_PRODUCT_NAMES, known_product
from crds.gpus import GPU_PRODUCT_NODE_LABELS as GPU_PRODUCT_NODE_LABELS
from crds.gpus import GPUS_PER_NODE as GPUS_PER_NODE

GROUP = "tokenworks.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
API_VERSION = f"{GROUP}/{VERSION}"
# `kubectl get mdep`. A column holds one JSONPath value, so "ready/desired" cannot be one column: the two
# counts sit side by side, then the Ready condition's reason (AllReplicasReady, GPUCapacityExhausted, ...).
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Desired", "type": "integer", "description": "Replicas the Deployment is set to.",
     "jsonPath": ".status.desiredReplicas"},
    {"name": "Ready", "type": "integer", "description": "Replicas ready to serve.",
     "jsonPath": ".status.readyReplicas"},
    {"name": "Status", "type": "string", "description": "Reason of the Ready condition.",
     "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "GPU", "type": "string", "priority": 1, "jsonPath": ".spec.gpu.product"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# Weight precision; fp4 is NVFP4 (Blackwell's FP4 tensor cores, ModelOpt's `nvidia/...-FP4` checkpoints).
Precision = Literal["fp4", "fp8", "bf16", "fp16"]
# KV-cache precision, apart from the weights': `auto` keeps TensorRT-LLM's default (the checkpoint's
# `kv_cache_quant_algo`: FP8 for ModelOpt's FP8 and FP4 checkpoints, else the activations' 16 bits).
KvCachePrecision = Literal["auto", "fp8", "bf16", "fp16"]
# The two ways NVIDIA documents to run TensorRT-LLM under Triton (docs/design/serving-path.md):
# `llmapi`, the engine-free LLM-API (PyTorch) backend of current images, and `tensorrt-engine`, the
# legacy inflight-batcher C++ backend over an engine built by `trtllm-build`, kept on the last release
# that has it.
Backend = Literal["llmapi", "tensorrt-engine"]
# Images pinned per backend (registry host left to the operator's `--image-registry`).
DEFAULT_IMAGES: dict[str, str] = {
    "llmapi": "nvidia/tritonserver:26.07-trtllm-python-py3",
    "tensorrt-engine": "nvidia/tritonserver:25.12-trtllm-python-py3",
}
# The pod's main process (docs/design/serving-path.md, "The frontend"): `triton`, NVIDIA's launcher line
# (`mpirun ... tritonserver`, KServe v2 only); `openai`, Triton's OpenAI-compatible frontend
# (`openai_frontend/main.py`) with its KServe v2 frontends enabled beside it.
Frontend = Literal["triton", "openai"]
# Where the OpenAI frontend lies in an image that ships it: NVIDIA's vLLM images keep it there
# (`cd /opt/tritonserver/python/openai` in server:python/openai/README.md); its TRT-LLM images do not ship
# it, so `serving.frontend: openai` needs `engine.image` naming an image built with it.
OPENAI_FRONTEND_DIR = "/opt/tritonserver/python/openai"



# A ModelDeployment's name is its children's: the tightest limits are the Service's name, a DNS-1035
# label (at most 63 characters: lowercase letters, digits and '-', starting with a letter, not ending with
# '-'), and the label values that select its pods (at most 63). The rest allow more: the ConfigMap
# `NAME-engine` is a DNS subdomain (253); the Deployment's ReplicaSets are `NAME-HASH` (253), and the
# apiserver cuts its pods' generated names to 63.
NAME_MAX_LENGTH = 63
NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MESSAGE = (
    "the name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and "
    f"ending with a letter or digit) of at most {NAME_MAX_LENGTH} characters: it names the ModelDeployment's "
    "Service and labels its pods"
)


def valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


class PvcSource(ApiModel):
    claim_name: str = Field(min_length=1, description="Name of a PersistentVolumeClaim in the same "
                            "namespace holding the model or its prebuilt engine.")
    path: str = Field("/", description="Path inside the claim.")


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret in the same namespace.")
    key: str | None = Field(None, description="Key in the Secret; default `HF_TOKEN` for Hugging Face, "
                            "`NGC_API_KEY` for NGC.")


PROFILE_OR_ARCHITECTURE = ("exactly one of model.profile (a catalogue name) or model.architecture (the shape, "
                           "e.g. from `tokenworks model from-config config.json`) must be set")


class ModelSpec(ApiModel):
    """What to serve."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule(
        "[has(self.huggingFace), has(self.ngc), has(self.pvc)].filter(x, x).size() == 1",
        "exactly one of model.huggingFace, model.ngc or model.pvc must be set",
    ), rule(
        "has(self.profile) != has(self.architecture)",
        PROFILE_OR_ARCHITECTURE, reason="FieldValueRequired",
    ), rule(
        "!has(self.ngc) || !self.ngc.contains(':') || !has(self.revision)",
        "model.ngc names a version after ':' already; set model.revision or the version, not both",
        reason="FieldValueInvalid",
    )]})

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A name for the model, e.g. `llama-3-1-8b`, shown in status and dashboards. Triton "
        "serves it under the model names of NVIDIA's repository layout: `tensorrt_llm` (llmapi backend) "
        "or `ensemble` and `tensorrt_llm_bls` (tensorrt-engine backend).",
    )
    profile: str | None = Field(
        None, description="A well-known model's architecture by name (the catalogue: "
        + ", ".join(PROFILE_NAMES) + "); or set `architecture`.", json_schema_extra={"enum": list(PROFILE_NAMES)},
    )
    architecture: Architecture | None = Field(
        None, description="The model's shape (layers, widths, heads, experts, MLA, sliding windows, blocks), "
        "for sizing and the performance model; `tokenworks model from-config config.json` writes it from a "
        "Hugging Face config. Set this or `profile`.",
    )
    hugging_face: str | None = Field(None, description="Hugging Face repository id, e.g. "
                                     "`meta-llama/Llama-3.1-8B-Instruct`.")
    ngc: str | None = Field(None, description="NGC model path, e.g. `nvidia/llama-3.1-8b:1.0`.")
    pvc: PvcSource | None = Field(None, description="A PersistentVolumeClaim that holds the model.")
    revision: str | None = Field(None, description="Revision (commit, tag or version) to pin.")
    token_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the credential the weights are fetched with: a Hugging Face "
        "token (key `HF_TOKEN` unless set; needed for gated models such as Llama) or an NGC API key "
        "(key `NGC_API_KEY`).",
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, profile: str | None) -> str | None:
        if profile is not None and profile not in CATALOGUE:
            raise ValueError(f"model.profile {profile!r} is not in the catalogue ({', '.join(PROFILE_NAMES)}); "
                             "describe the model with model.architecture instead")
        return profile

    @model_validator(mode="after")
    def _one_shape(self) -> ModelSpec:
        if (self.profile is None) == (self.architecture is None):
            raise ValueError(PROFILE_OR_ARCHITECTURE)
        return self

    @property
    def shape(self) -> Architecture:
        """The architecture: the catalogue's for a profile, else the spec's own."""
        return CATALOGUE[self.profile] if self.profile is not None else self.architecture  # type: ignore[return-value]

    @property
    def shape_name(self) -> str:
        """The profile's name, or `custom` for an inline architecture (a label value in telemetry)."""
        return self.profile or "custom"


class EngineSpec(ApiModel):
    """TensorRT-LLM engine served by Triton."""

    backend: Backend = Field(
        "llmapi", description="`llmapi`: Triton's engine-free TensorRT-LLM LLM-API (PyTorch) backend, "
        "configured by `model.yaml` (current images). `tensorrt-engine`: the legacy inflight-batcher "
        "backend over an engine built by `trtllm-build` at first start and cached (last image with it: "
        "25.12).",
    )
    image: str | None = Field(
        None, min_length=1, description="Triton Inference Server image with TensorRT-LLM; unset: the "
        "image pinned for the backend (`nvidia/tritonserver:26.07-trtllm-python-py3` for llmapi, "
        "`:25.12-trtllm-python-py3` for tensorrt-engine), under the operator's image registry.",
    )
    precision: Precision = Field("bf16", description="Weight precision. On the llmapi backend fp8 and fp4 "
                                 "(NVFP4, Blackwell GPUs only) need a quantised checkpoint (e.g. ModelOpt's "
                                 "`nvidia/...-FP8`, `nvidia/...-FP4`); the tensorrt-engine backend quantises a "
                                 "16-bit one while building.")
    kv_cache_precision: KvCachePrecision = Field(
        "auto", description="KV-cache precision, apart from the weights': `auto` is TensorRT-LLM's default (FP8 "
        "for FP8/FP4 checkpoints that quantise it, else 16-bit); `fp8` halves the cache's bytes per token.")
    max_batch_size: int = Field(256, ge=1, le=4096, description="Largest in-flight batch "
                                "(requests decoded together per step).")
    max_num_tokens: int = Field(8192, ge=64, le=131072, description="Most tokens one engine step "
                                "processes (prefill chunks plus decode tokens).")
    max_input_length: int = Field(8192, ge=1, le=131072, description="Longest prompt accepted, in "
                                  "tokens; longer prompts are rejected with 400.")
    max_output_length: int = Field(4096, ge=1, le=131072, description="Most tokens generated per "
                                   "request.")
    kv_cache_free_gpu_mem_fraction: float = Field(
        0.9, gt=0.05, le=0.99,
        description="Fraction of GPU memory left after the weights that the KV cache may take.",
    )
    enable_chunked_prefill: bool = Field(True, description="Split long prompts across engine "
                                         "steps so decoding requests keep streaming.")
    max_queue_delay_microseconds: int = Field(
        0, ge=0, le=1_000_000, description="Triton dynamic-batching queue delay (tensorrt-engine): above 0 "
        "raises the chance that two requests start in the same iteration, at that cost in TTFT.",
    )
    extra_args: list[str] = Field(default_factory=list, max_length=64,
                                  description="Extra command-line arguments of the pod's server: "
                                  "tritonserver's (serving.frontend triton) or the OpenAI frontend's "
                                  "main.py (serving.frontend openai, e.g. `--tool-call-parser=llama3`).")


EXPERT_DIVIDES_TENSOR = ("parallelism.expert must divide parallelism.tensor: the expert-parallel ranks are a "
                         "split of the tensor-parallel group")


class ParallelismSpec(ApiModel):
    """How one replica is split across GPUs; GPUs per replica = tensor x pipeline. A replica with more GPUs than
    one node has runs as a LeaderWorkerSet group of pods (one per node)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule(
        "self.tensor % self.expert == 0", EXPERT_DIVIDES_TENSOR, reason="FieldValueInvalid", field_path=".expert",
    )]})

    tensor: Literal[1, 2, 4, 8, 16, 32, 64] = Field(1, description="Tensor-parallel ranks.")
    pipeline: int = Field(1, ge=1, le=16, description="Pipeline-parallel stages.")
    expert: int = Field(1, ge=1, le=64, description="Expert-parallel ranks of a mixture-of-experts model, within "
                        "the tensor-parallel group (TensorRT-LLM's `moe_expert_parallel_size`; the rest of the "
                        "group splits each expert).")
    attention_data_parallel: bool = Field(False, description="Attention data-parallel (TensorRT-LLM's "
                                          "`enable_attention_dp`): each rank of the group runs attention for its "
                                          "own requests with the whole KV of them, experts stay parallel.")

    @model_validator(mode="after")
    def _expert_divides(self) -> ParallelismSpec:
        if self.tensor % self.expert:
            raise ValueError(EXPERT_DIVIDES_TENSOR)
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor * self.pipeline


class GpuSpec(ApiModel):
    product: str = Field(
        description="GPU product (" + ", ".join(GPU_PRODUCT_NAMES) + "); pods are placed on nodes whose "
        "`nvidia.com/gpu.product` label names it.", json_schema_extra={"enum": list(GPU_PRODUCT_NAMES)},
    )

    @field_validator("product")
    @classmethod
    def _known_product(cls, product: str) -> str:
        return known_product(product)


class SloSpec(ApiModel):
    """Latency objectives the autoscaler keeps."""

    ttft_milliseconds: int = Field(2000, ge=1, description="Time to first token target, ms.")
    inter_token_latency_milliseconds: int = Field(100, ge=1, description="Inter-token latency "
                                                  "target, ms.")
    percentile: float = Field(0.95, gt=0.5, lt=1.0, description="Percentile at which the "
                              "targets apply, e.g. 0.95.")
    attainment: float = Field(0.99, ge=0.5, le=0.9999, description="Share of requests that should "
                              "meet both targets, e.g. 0.99: the autoscaler keeps headroom for the "
                              "bursts it has seen within its start-up lead, more for a higher share.")


class ActivationSpec(ApiModel):
    """What wakes a deployment scaled to zero: at zero pods no pod exports a series, so the signal has
    to come from outside them (a gateway's queue, the Service's request count)."""

    query: str = Field(min_length=1, max_length=4096, description="PromQL returning one number for "
                       "this ModelDeployment, e.g. requests waiting at the gateway or arriving at the "
                       "Service; above the threshold at zero replicas, one replica is started.")
    threshold: float = Field(0.0, ge=0, description="Activate when the query's value is above this.")


class AutoscalingSpec(ApiModel):
    """SLO-aware autoscaling. When enabled, the operator owns the replica count."""

    # Static messages: a messageExpression that builds strings blows the CRD's CEL cost budget.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule(
        "self.minReplicas <= self.maxReplicas",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        reason="FieldValueInvalid",
    ), rule(
        "self.minReplicas > 0 || has(self.activation)",
        "autoscaling.minReplicas 0 needs autoscaling.activation: at zero pods no pod exports a metric, "
        "so a signal outside the pods (a gateway queue or the Service's request count) must say when "
        "to start one",
        reason="FieldValueRequired",
    )]})

    enabled: bool = Field(False, description="Scale on the SLO and throughput signals.")
    min_replicas: int = Field(1, ge=0, le=1024, description="Fewest replicas (0 allows scale to "
                              "zero).")
    max_replicas: int = Field(8, ge=1, le=1024, description="Most replicas.")
    advisory: bool = Field(False, description="Compute and record decisions without applying "
                           "them.")
    slo: SloSpec = Field(default_factory=SloSpec, description="Latency objectives.")
    tokens_per_second_per_replica: float | None = Field(
        None, gt=0, description="Output tokens per second one replica should carry; unset: taken "
        "from the performance model at the SLO.",
    )
    queue_per_replica: float = Field(4, gt=0, description="Waiting requests per replica above "
                                     "which to scale up.")
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600, description="Scale down "
                                                  "only to the highest recommendation of this "
                                                  "window.")
    tick_seconds: int = Field(15, ge=1, le=600, description="How often decisions are made.")
    activation: ActivationSpec | None = Field(None, description="The signal that starts the first "
                                              "replica from zero; required when minReplicas is 0.")
    missing_metrics_replicas: int | None = Field(
        None, ge=0, le=1024, description="When no signal can be read: unset holds the current count; a "
        "number scales up to it as a safe fallback (never down: missing data never scales down).",
    )

    @model_validator(mode="after")
    def _zero_needs_activation(self) -> AutoscalingSpec:
        # The same rule as the CRD's CEL, for manifests read outside the API server (simulate, plan).
        if self.min_replicas == 0 and self.activation is None:
            raise ValueError("autoscaling.minReplicas 0 needs autoscaling.activation: at zero pods no pod "
                             "exports a metric, so a signal outside the pods (a gateway queue or the "
                             "Service's request count) must say when to start one")
        return self


class ScheduleSpec(ApiModel):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels "
                                          "the pods require.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Pod tolerations "
                                              "(core/v1 Toleration).")
    priority_class_name: str | None = Field(None, description="PriorityClass of the pods.")


class ModelCacheSpec(ApiModel):
    claim_name: str | None = Field(None, description="PersistentVolumeClaim caching downloaded "
                                   "weights and built engines; unset: an emptyDir.")
    size_limit: str = Field("200Gi", description="Size limit of the emptyDir when no claim is "
                            "given.")


class PortsSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule(
        "self.http != self.grpc && self.http != self.metrics && self.grpc != self.metrics && "
        "self.openai != self.http && self.openai != self.grpc && self.openai != self.metrics",
        "ports.http, ports.grpc, ports.metrics and ports.openai must differ",
    )]})

    http: int = Field(8000, ge=1, le=65535, description="HTTP/REST port: the KServe v2 protocol with "
                      "Triton's generate and generate_stream extensions (tritonserver serves no OpenAI "
                      "routes; the OpenAI frontend's are on ports.openai).")
    grpc: int = Field(8001, ge=1, le=65535, description="gRPC (KServe v2) port.")
    metrics: int = Field(8002, ge=1, le=65535, description="Prometheus metrics port of tritonserver "
                         "(serving.frontend triton); the OpenAI frontend serves /metrics on ports.openai.")
    openai: int = Field(9000, ge=1, le=65535, description="OpenAI-compatible port (/v1/completions, "
                        "/v1/chat/completions, /v1/models, /health/ready, /metrics) when serving.frontend is "
                        "openai; main.py's --openai-port, default 9000.")


class ServingSpec(ApiModel):
    """The pod's server process and the protocols it speaks."""

    frontend: Frontend = Field(
        "triton", description="`triton`: tritonserver as NVIDIA's launcher starts it, KServe v2 HTTP and "
        "gRPC only (ports.http, ports.grpc, metrics on ports.metrics). `openai`: Triton's OpenAI-compatible "
        "frontend (openai_frontend/main.py) on ports.openai, with the KServe v2 frontends kept on ports.http "
        "and ports.grpc; one process, TensorRT-LLM in orchestrator mode (TRTLLM_ORCHESTRATOR=1); needs "
        "engine.backend tensorrt-engine and an engine.image that ships the frontend at "
        f"{OPENAI_FRONTEND_DIR}.",
    )


class EndpointPickerSpec(ApiModel):
    """The Gateway API Inference Extension endpoint picker (EPP) the pool's Gateway asks which pod
    serves a request; the user deploys it, the operator only names it."""

    name: str = Field(min_length=1, max_length=253, description="Service of the endpoint picker, in "
                      "the ModelDeployment's namespace.")
    port: int = Field(9002, ge=1, le=65535, description="Service port of the endpoint picker's ext-proc "
                      "gRPC server (the Inference Extension's default is 9002).")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        "FailOpen", description="What the Gateway does when the endpoint picker does not answer: "
        "`FailOpen` sends the request to a pod of the pool anyway (the model keeps serving, without "
        "load-aware picking); `FailClose` refuses it.",
    )


class InferencePoolSpec(ApiModel):
    endpoint_picker: EndpointPickerSpec = Field(description="The endpoint picker the pool refers to.")


class RoutingSpec(ApiModel):
    """How Gateways reach the model (opt-in)."""

    inference_pool: InferencePoolSpec | None = Field(
        None, description="Create a Gateway API InferencePool (inference.networking.k8s.io/v1) named "
        "after the ModelDeployment, selecting its pods on ports.openai, for an HTTPRoute to send requests "
        "to; needs serving.frontend openai. Where the API is not installed, RoutingReady says so and the "
        "rest is applied as usual.",
    )


OPENAI_NEEDS_ENGINE = (
    "serving.frontend openai needs engine.backend tensorrt-engine: the OpenAI frontend sends the "
    "inflight-batcher request (text_input, stream, max_tokens), which the llmapi model does not take "
    "(streaming, sampling_param_*), and Triton refuses an input a model does not declare")
OPENAI_NEEDS_IMAGE = (
    "serving.frontend openai needs engine.image: NVIDIA's TensorRT-LLM images do not ship the OpenAI "
    f"frontend; name an image built from the pinned one with it at {OPENAI_FRONTEND_DIR} "
    "(docs/design/serving-path.md)")
POOL_NEEDS_OPENAI = (
    "routing.inferencePool needs serving.frontend openai: the pool's endpoints are the pods' OpenAI port, "
    "which tritonserver does not serve")


FP4_NEEDS_BLACKWELL = ("engine.precision fp4 (NVFP4) needs a GPU with FP4 tensor cores: one of "
                       + ", ".join(FP4_PRODUCTS) + "; Hopper and older GPUs serve fp8 or bf16")
HEADS_DIVIDE_TENSOR = ("parallelism.tensor must divide the model's attention heads: each tensor-parallel rank "
                       "runs a whole number of heads (or set parallelism.attentionDataParallel)")


class ModelDeploymentSpec(ApiModel):
    """A model served by Triton + TensorRT-LLM on GPUs."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        rule(
            "self.engine.precision != 'fp4' || self.gpu.product in [" + ", ".join(f"'{p}'" for p in FP4_PRODUCTS)
            + "]", FP4_NEEDS_BLACKWELL, reason="FieldValueInvalid", field_path=".engine.precision",
        ),
        rule(
            "self.parallelism.attentionDataParallel || (has(self.model.architecture) ? "
            "self.model.architecture.attentionHeads : "
            + "{" + ", ".join(f"'{k}': {a.attention_heads}" for k, a in CATALOGUE.items()) + "}"
            + "[self.model.profile]) % self.parallelism.tensor == 0",
            HEADS_DIVIDE_TENSOR, reason="FieldValueInvalid", field_path=".parallelism.tensor",
        ),
        rule(
            "self.serving.frontend != 'openai' || self.engine.backend == 'tensorrt-engine'",
            OPENAI_NEEDS_ENGINE, reason="FieldValueInvalid", field_path=".serving.frontend",
        ),
        rule(
            "self.serving.frontend != 'openai' || has(self.engine.image)",
            OPENAI_NEEDS_IMAGE, reason="FieldValueRequired", field_path=".engine.image",
        ),
        rule(
            "!has(self.routing) || !has(self.routing.inferencePool) || self.serving.frontend == 'openai'",
            POOL_NEEDS_OPENAI, reason="FieldValueInvalid", field_path=".routing.inferencePool",
        ),
        rule(
            "!self.autoscaling.enabled || self.autoscaling.advisory || self.replicas == oldSelf.replicas",
            "spec.replicas cannot be changed while spec.autoscaling.enabled is true: the "
            "autoscaler owns the replica count; change autoscaling.minReplicas/maxReplicas, "
            "or set autoscaling.enabled=false (or advisory=true) to scale by hand",
            reason="FieldValueForbidden",
        ),
    ]})

    model: ModelSpec = Field(description="The model to serve and where its weights come from.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="TensorRT-LLM engine "
                               "settings.")
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec,
                                         description="Tensor and pipeline parallelism.")
    gpu: GpuSpec = Field(description="GPU product the replicas run on.")
    replicas: int = Field(1, ge=0, le=1024, description="Replica count when autoscaling is off "
                          "(target of the scale subresource, `kubectl scale`).")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec,
                                         description="SLO-aware autoscaling.")
    scheduling: ScheduleSpec = Field(default_factory=ScheduleSpec, description="Placement.")
    model_cache: ModelCacheSpec = Field(default_factory=ModelCacheSpec, description="Where "
                                        "weights and engines are cached.")
    ports: PortsSpec = Field(default_factory=PortsSpec, description="Container and Service "
                             "ports.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="The pod's server process and "
                                 "protocols.")
    routing: RoutingSpec = Field(default_factory=RoutingSpec, description="Gateway routing (opt-in).")

    @model_validator(mode="after")
    def _frontend_fits(self) -> ModelDeploymentSpec:
        # The CRD's CEL rules, for manifests read outside the API server (plan, simulate) and objects
        # admitted before them.
        if self.serving.frontend == "openai" and self.engine.backend != "tensorrt-engine":
            raise ValueError(OPENAI_NEEDS_ENGINE)
        if self.serving.frontend == "openai" and self.engine.image is None:
            raise ValueError(OPENAI_NEEDS_IMAGE)
        if self.routing.inference_pool is not None and self.serving.frontend != "openai":
            raise ValueError(POOL_NEEDS_OPENAI)
        return self

    @model_validator(mode="after")
    def _shape_fits(self) -> ModelDeploymentSpec:
        """What the CEL rules check, and what they cannot (KV heads, experts of an inline architecture), so a
        spec that slips past an older CRD is Degraded with the same words rather than served wrongly."""
        shape, tensor = self.model.shape, self.parallelism.tensor
        if self.engine.precision == "fp4" and self.gpu.product not in FP4_PRODUCTS:
            raise ValueError(FP4_NEEDS_BLACKWELL)
        if not self.parallelism.attention_data_parallel:
            if shape.attention_heads % tensor:
                raise ValueError(f"{HEADS_DIVIDE_TENSOR}: {shape.attention_heads} heads over {tensor} ranks")
            if shape.mla is None and shape.kv_heads % tensor and tensor % shape.kv_heads:
                raise ValueError(f"parallelism.tensor ({tensor}) and the model's KV heads ({shape.kv_heads}) must "
                                 "divide one another: TensorRT-LLM splits KV heads over the ranks, or copies each "
                                 "to a whole number of them")
        if self.parallelism.expert > 1 and shape.moe is None:
            raise ValueError("parallelism.expert is above 1, but the model has no experts (architecture.moe)")
        if shape.moe is not None and shape.moe.routed_experts % self.parallelism.expert:
            raise ValueError(f"parallelism.expert ({self.parallelism.expert}) must divide the model's "
                             f"{shape.moe.routed_experts} routed experts")
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.parallelism.gpus_per_replica


class Condition(ApiModel):
    type: str = Field(description="Ready, Progressing, Degraded, ModelPrepared, GPUCapacity, OptionalAPIs, "
                      "RoutingReady (with routing.inferencePool), or an autoscaler condition.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for machines.")
    message: str = Field("", description="What happened, for a person.")
    last_transition_time: str | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(None, description="Generation the condition is about.")


class AutoscalerStatus(ApiModel):
    """The autoscaler's saved state, so a restart neither forgets windows nor scales down."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True})

    desired_replicas: int | None = Field(None, description="Replicas the autoscaler decided.")
    generation: int | None = Field(None, description="metadata.generation the decision was made under; a "
                                   "decision of another generation is stale and not applied.")


class ScalingDecisionStatus(ApiModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True})

    time: str | None = Field(None, description="When the decision was made.")
    replicas: int | None = Field(None, description="Replicas decided.")
    reason: str | None = Field(None, description="Which rule decided, and why.")


class ReplicaSourceStatus(ApiModel):
    """Who set the replica count at the last reconcile: how the operator sees autoscaling switched off."""

    owner: Literal["autoscaler", "spec"] = Field(description="`autoscaler` (autoscaling on, not advisory) or "
                                                 "`spec` (spec.replicas).")
    spec_replicas: int = Field(description="spec.replicas then.")


class ModelDeploymentStatus(ApiModel):
    observed_generation: int | None = Field(None, description="Spec generation last reconciled.")
    replicas: int = Field(0, description="Pods that exist.")
    ready_replicas: int = Field(0, description="Pods ready to serve.")
    updated_replicas: int = Field(0, description="Pods on the current spec.")
    desired_replicas: int = Field(0, description="Replicas the operator wants now.")
    gpus: int = Field(0, description="GPUs requested by existing pods.")
    endpoint: str | None = Field(None, description="In-cluster HTTP endpoint of the model.")
    selector: str | None = Field(None, description="Label selector of the pods (scale "
                                 "subresource).")
    replica_source: ReplicaSourceStatus | None = Field(None, description="Who set the replica count at "
                                                       "the last reconcile.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Current conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    autoscaler: AutoscalerStatus | None = Field(None, description="Autoscaler state.")
    last_scaling_decision: ScalingDecisionStatus | None = Field(
        None, description="The autoscaler's last decision.")


# The CRD's schema of metadata.name (a CRD may restrict no other metadata field).
NAME_SCHEMA: JsonDict = {"type": "string", "x-kubernetes-validations": [rule(
    f"self.size() <= {NAME_MAX_LENGTH} && self.matches('{NAME_PATTERN}')", NAME_MESSAGE, reason="FieldValueInvalid",
)]}


class ModelDeployment(ApiModel):
    api_version: Literal["tokenworks.dev/v1alpha1"] = "tokenworks.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _name_fits_the_children(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        # The CRD's NAME_SCHEMA, for the reconciler (objects admitted before the rule) and manifests
        # read outside the API server (plan, simulate). No name yet is generateName's case: not ours.
        name = metadata.get("name")
        if name is not None and not (isinstance(name, str) and valid_name(name)):
            raise PydanticCustomError("model_deployment_name", NAME_MESSAGE)
        return metadata

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))
