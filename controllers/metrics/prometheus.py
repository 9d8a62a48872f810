"""The Prometheus metric source: PromQL over the HTTP API with httpx, one query per signal per tick
for every ModelDeployment at once, grouped by (namespace, model deployment) labels.

Series are expected to carry ``namespace`` and the ModelDeployment's name in ``deployment_label``
(the PodMonitor the operator creates copies the pod label ``tokenworks.dev/model-deployment`` there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import httpx

from controllers.autoscaling.signals import Reading
from controllers.metrics import SIGNALS, SignalReadings, Target

DEFAULT_DEPLOYMENT_LABEL = "tokenworks_dev_model_deployment"
LATENCY_SIGNALS = ("ttftSeconds", "interTokenLatencySeconds")


@dataclass(frozen=True)
class PrometheusConfig:
    url: str
    bearer_token: str | None = None
    ca_file: str | None = None
    timeout_seconds: float = 5.0
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL
    window: str = "2m"  # the stable window
    short_window: str = "30s"  # the panic window
    stale_after_seconds: float = 120.0


class PrometheusSource:
    def __init__(self, config: PrometheusConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.bearer_token}"} if config.bearer_token else {}
        self.client = client or httpx.Client(
            base_url=config.url, headers=headers, timeout=config.timeout_seconds,
            verify=config.ca_file if config.ca_file else True,
        )
        self.queries = 0

    def _by(self) -> str:
        return f"namespace, {self.config.deployment_label}"

    def queries_for(self, percentile: float) -> dict[str, str]:
        """PromQL per signal; every one returns one series per (namespace, model deployment)."""
        by, w, s = self._by(), self.config.window, self.config.short_window

        def output_rate(window: str) -> str:
            # The per-token counter where pods export it (the emulator); else the TensorRT-LLM
            # backend's output-length histogram, counted as requests finish.
            return (f"sum by ({by}) (rate(nv_llm_output_tokens_total[{window}])) or "
                    f"sum by ({by}) (rate(nv_llm_output_token_len_sum[{window}]))")

        # Where no ITL histogram is exported (stock Triton), the mean ITL over the window: time after
        # the first token divided by the tokens after the first.
        mean_itl = (f"(sum by ({by}) (rate(nv_inference_request_duration_us[{w}])) / 1e6 - sum by ({by}) "
                    f"(rate(nv_inference_first_response_histogram_ms_sum[{w}])) / 1e3) / (sum by ({by}) "
                    f"(rate(nv_llm_output_token_len_sum[{w}])) - sum by ({by}) "
                    f"(rate(nv_llm_output_token_len_count[{w}])))")
        return {
            "outputTokensPerSecond": output_rate(w),
            "outputTokensPerSecondShort": output_rate(s),
            "inputTokensPerSecond": f"sum by ({by}) (rate(nv_llm_input_token_len_sum[{w}]))",
            "inputTokensPerSecondShort": f"sum by ({by}) (rate(nv_llm_input_token_len_sum[{s}]))",
            "ttftSeconds": f"histogram_quantile({percentile}, sum by ({by}, le) "
                           f"(rate(nv_inference_first_response_histogram_ms_bucket[{w}]))) / 1000",
            "interTokenLatencySeconds": f"histogram_quantile({percentile}, sum by ({by}, le) "
                                        f"(rate(nv_llm_inter_token_latency_ms_bucket[{w}]))) / 1000 or {mean_itl}",
            "queue": f'sum by ({by}) (nv_trt_llm_request_metrics{{request_type="waiting"}})',
            "inFlight": f'sum by ({by}) (nv_trt_llm_request_metrics{{request_type="active"}})',
            "kvCacheUtilization": f'sum by ({by}) (nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type="used"}})'
                                  f' / sum by ({by}) (nv_trt_llm_kv_cache_block_metrics'
                                  f'{{kv_cache_block_type="max"}})',
            "age": f'time() - max by ({by}) (timestamp(nv_trt_llm_request_metrics{{request_type="active"}}))',
        }

    def _query(self, promql: str, now: float) -> dict[tuple[str, str], float]:
        self.queries += 1
        response = self.client.get("/api/v1/query", params={"query": promql, "time": f"{now:.3f}"})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
        out: dict[tuple[str, str], float] = {}
        for series in body["data"]["result"]:
            labels = series["metric"]
            key = (labels.get("namespace", ""), labels.get(self.config.deployment_label, ""))
            out[key] = float(series["value"][1])  # "NaN" and "+Inf" parse to float too
        return out

    def _run(self, queries: dict[str, str], at: float) -> tuple[dict[str, dict[tuple[str, str], float]],
                                                               dict[str, str]]:
        values: dict[str, dict[tuple[str, str], float]] = {}
        errors: dict[str, str] = {}
        for signal, promql in queries.items():
            try:
                values[signal] = self._query(promql, at)
            except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as error:
                errors[signal] = f"{type(error).__name__}: {error}"
        return values, errors

    def observe(self, targets: list[Target], now: float | None = None) -> dict[Target, SignalReadings]:
        """One query per signal for all targets; latency quantiles once per distinct percentile."""
        if not targets:
            return {}
        at = time.time() if now is None else now
        percentiles = sorted({t.percentile for t in targets})
        shared = {k: v for k, v in self.queries_for(percentiles[0]).items() if k not in LATENCY_SIGNALS}
        values, errors = self._run(shared, at)
        by_percentile = {p: self._run({k: v for k, v in self.queries_for(p).items() if k in LATENCY_SIGNALS}, at)
                         for p in percentiles}
        result: dict[Target, SignalReadings] = {}
        for target in targets:
            key = (target.namespace, target.name)
            latency_values, latency_errors = by_percentile[target.percentile]
            merged_values, merged_errors = {**values, **latency_values}, {**errors, **latency_errors}
            age = merged_values.get("age", {}).get(key)
            readings = SignalReadings()
            for signal in SIGNALS:
                raw = merged_values.get(signal, {}).get(key)
                if signal in merged_errors:
                    readings.readings[signal] = Reading.error(merged_errors[signal])
                elif raw is None:
                    readings.readings[signal] = Reading.empty("no series for this ModelDeployment")
                else:
                    sample_age = age if age is not None and not math.isnan(age) else 0.0
                    readings.readings[signal] = Reading.of(raw, sample_age, self.config.stale_after_seconds)
            result[target] = readings
        return result
