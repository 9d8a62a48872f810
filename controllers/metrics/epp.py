"""The endpoint picker's (EPP's) families the autoscaler reads: one table, each entry cited.

The Gateway API Inference Extension's endpoint picker fronts one InferencePool and measures every request
it routes: time to the first token, and time per output token after the first (ITL), which Triton cannot
(it has no inter-token family; ``../shared/triton-trtllm-facts.md`` section 5.3). docs/monitoring.md, "The
endpoint picker's signals", has what each measures and why the others are not read.

Sources (``kubernetes-sigs/gateway-api-inference-extension``):

- ``site-src/guides/metrics-and-observability.md@03f9741b43c0fbe9f15a45f4f31f2765348b3520``: the EPP's
  families, their types and labels (``inference_objective_*``, ``inference_pool_*``, the flow-control
  ``inference_extension_flow_control_queue_size``).
- ``site-src/guides/latency-based-predictor.md@2b9e6c0ff221e2c5aae05385b410110f91f4e2a5``: the TTFT and TPOT
  histograms, "TPOT is equivalent to vLLM's ITL (Inter Token Latency) ... This is commonly known as NTPOT in
  other contexts, and we don't capture that metric here".
- ``pkg/epp/metrics/metrics.go@8c7067f3cb96a9828c6308a0f3ec760ef2376f43``: the histograms' definitions
  (labels ``model_name``, ``target_model_name``; buckets; HELP) under the subsystem's earlier name
  ``inference_model``, which ``pkg/epp/metrics/metrics.go@04a97e67f7807b7daa14f220c25884eabfd80ea6`` renames
  ``InferenceObjectiveComponent = "inference_objective"`` with the v1 API.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EppFamily:
    name: str
    type: str
    labels: tuple[str, ...]
    help: str  # as the EPP prints it: metricsutil.HelpMsgWithStability prefixes "[ALPHA] "
    buckets: tuple[float, ...] = ()


# metrics.go: GeneralLatencyBuckets (requestTTFT) and TPOTBuckets (requestTPOT).
TTFT_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45,
                60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
TPOT_BUCKETS = (0.0005, 0.00205, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6,
                0.8, 1, 1.5, 2, 3, 4.5, 6, 12, 18, 24, 30, 36, 48, 60, 90, 120, 180, 270, 360)

TTFT = EppFamily("inference_objective_request_ttft_seconds", "histogram", ("model_name", "target_model_name"),
                 "[ALPHA] Inference model TTFT distribution in seconds for each model and target model.",
                 TTFT_BUCKETS)
# Per request: (end to end - TTFT) / (output tokens - 1), the request's mean inter-token latency.
TPOT = EppFamily("inference_objective_request_tpot_seconds", "histogram", ("model_name", "target_model_name"),
                 "[ALPHA] Inference model TPOT distribution in seconds for each model and target model.",
                 TPOT_BUCKETS)
# Requests the EPP's flow control holds (from EnqueueAndWait until dispatched, rejected or evicted): the
# gateway's own backlog, which no pod sees; at zero pods, the demand waiting for one.
FLOW_CONTROL_QUEUE = EppFamily(
    "inference_extension_flow_control_queue_size", "gauge",
    ("fairness_id", "priority", "inference_pool", "model_name", "target_model_name"),
    "[ALPHA] Current number of requests being actively managed by the EPP flow control layer, from the start "
    "of the EnqueueAndWait call until a final outcome is reached.")
# Labelled with the pool's name only: the one series that says which pool a scrape target serves, so the
# per-model histograms above (which carry no pool) are joined to it on the target's labels.
READY_PODS = EppFamily("inference_pool_ready_pods", "gauge", ("name",),
                       "[ALPHA] The number of ready pods in the inference server pool.")

READ = (TTFT, TPOT, FLOW_CONTROL_QUEUE, READY_PODS)

# Exported and not read (docs/monitoring.md says why): NTPOT folds the TTFT into every token; the pool's
# average queue is the pods' own waiting gauge as the EPP scraped it (on Triton
# nv_trt_llm_request_metrics{request_type="waiting"}: engine backend only, and not the backlog); running
# requests are the pods' in-flight count again.
NOT_READ = ("inference_objective_normalized_time_per_output_token_seconds", "inference_pool_average_queue_size",
            "inference_objective_running_requests")
