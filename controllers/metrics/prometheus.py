"""The Prometheus metric source: PromQL over the HTTP API with httpx, one query per signal per tick
for every ModelDeployment at once, grouped by (namespace, model deployment) labels.

Series are expected to carry ``namespace`` and the ModelDeployment's name in ``deployment_label``
(the PodMonitor the operator creates copies the pod label ``tokenworks.dev/model-deployment`` there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from controllers.autoscaling.signals import Reading
from controllers.metrics import SIGNALS, SignalReadings, Target
from inference_pods.repository import TRTLLM_MODEL

DEFAULT_DEPLOYMENT_LABEL = "tokenworks_dev_model_deployment"
LATENCY_SIGNALS = ("ttftSeconds",)
MAX_SERIES = 20_000


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
        """PromQL per signal; every one returns one series per (namespace, model deployment) and reads
        only the ``tensorrt_llm`` model's series (an ensemble's, BLS' and pre/postprocessing's would count
        every request up to four times)."""
        by, w, s = self._by(), self.config.window, self.config.short_window
        m = f'model="{TRTLLM_MODEL}"'

        def rate(family: str, window: str, scale: str = "") -> str:
            return f"sum by ({by}) (rate({family}{{{m}}}[{window}])){scale}"

        def gauge(family: str, selector: str) -> str:
            return f"sum by ({by}) ({family}{{{m},{selector}}})"

        return {
            "requestsPerSecond": rate("nv_inference_request_success", w),
            "requestsPerSecondShort": rate("nv_inference_request_success", s),
            "requestSeconds": rate("nv_inference_request_duration_us", w, " / 1e6"),
            "requestSecondsShort": rate("nv_inference_request_duration_us", s, " / 1e6"),
            "firstResponseSeconds": rate("nv_inference_first_response_histogram_ms_sum", w, " / 1e3"),
            "firstResponseSecondsShort": rate("nv_inference_first_response_histogram_ms_sum", s, " / 1e3"),
            "ttftSeconds": f"histogram_quantile({percentile}, sum by ({by}, le) "
                           f"(rate(nv_inference_first_response_histogram_ms_bucket{{{m}}}[{w}]))) / 1e3",
            "ttftMedianSeconds": f"histogram_quantile(0.5, sum by ({by}, le) "
                                 f"(rate(nv_inference_first_response_histogram_ms_bucket{{{m}}}[{w}]))) / 1e3",
            "outputTokensPerSecond": rate("nv_llm_output_token_len_sum", w),
            "outputTokensPerSecondShort": rate("nv_llm_output_token_len_sum", s),
            "inputTokensPerSecond": rate("nv_llm_input_token_len_sum", w),
            "inputTokensPerSecondShort": rate("nv_llm_input_token_len_sum", s),
            "kvCacheUtilization": gauge("nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="used"')
            + " / " + gauge("nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="max"'),
            "age": f"time() - max by ({by}) (timestamp(nv_inference_request_success{{{m}}}))",
        }

    def _data(self, promql: str, now: float) -> dict[str, Any]:
        """One instant query's ``data``: the result type and the result."""
        self.queries += 1
        response = self.client.get("/api/v1/query", params={"query": promql, "time": f"{now:.3f}"})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
        data: dict[str, Any] = body["data"]
        return data

    def _query(self, promql: str, now: float) -> dict[tuple[str, str], float]:
        result = self._data(promql, now)["result"]
        if len(result) > MAX_SERIES:
            raise ValueError(f"{len(result)} series, more than the {MAX_SERIES} ModelDeployments one query serves: "
                             "is a relabelling rule missing?")
        out: dict[tuple[str, str], float] = {}
        for series in result:
            labels = series["metric"]
            key = (labels.get("namespace", ""), labels.get(self.config.deployment_label, ""))
            if key in out:
                # Two series for one ModelDeployment (a second scrape job, a label the sum does not drop):
                # neither can be trusted, and picking one could scale down on half the load.
                raise ValueError(f"more than one series for {key[0]}/{key[1]}: {labels}")
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
            if target.activation_query:
                readings.readings["activation"] = self._activation(target.activation_query, at)
            result[target] = readings
        return result

    def _activation(self, promql: str, at: float) -> Reading:
        """The user's activation query (a gateway queue, the Service's request rate): one number, read
        where no pod exists; an empty result is no traffic (the gateway has seen none)."""
        try:
            values = self._query_values(promql, at)
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as error:
            return Reading.error(f"{type(error).__name__}: {error}")
        return Reading.of(sum(values)) if values else Reading.of(0.0)

    def _query_values(self, promql: str, now: float) -> list[float]:
        data = self._data(promql, now)
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(series["value"][1]) for series in data["result"]]
