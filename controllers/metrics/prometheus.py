"""The Prometheus metric source: PromQL over the HTTP API with httpx, one query per signal per tick
for every ModelDeployment at once, grouped by (namespace, model deployment) labels.

Series are expected to carry ``namespace`` and the ModelDeployment's name in ``deployment_label``
(the PodMonitor the operator creates copies the pod label ``tokenworks.dev/model-deployment`` there).

Each signal is a ``Query``: the aggregate a recording rule can store (``controllers.metrics.rules`` writes
``dashboards/rules/recording.yaml`` from these same queries) and a scale applied when it is read. With
``recording_rules`` the source reads the recorded series instead, but only for the rules Prometheus has
loaded with exactly this expression (asked of its rules API): a window, a percentile or a selector the
loaded rules do not record is read from the raw expression, so a mismatch never reads another window.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from controllers.autoscaling.signals import Reading
from controllers.metrics import EPP_SIGNALS, SIGNALS, SignalReadings, Target, epp
from inference_pods.repository import TRTLLM_MODEL

log = logging.getLogger("tokenworks.metrics")

DEFAULT_DEPLOYMENT_LABEL = "tokenworks_dev_model_deployment"
POOL_LABEL = "inference_pool"
LATENCY_SIGNALS = ("ttftSeconds",)
EPP_LATENCY_SIGNALS = ("eppTtftSeconds", "eppItlSeconds")
MAX_SERIES = 20_000
# The percentiles the recording rules store; a spec asking for another reads the raw quantile.
RECORDED_PERCENTILES = (0.5, 0.9, 0.95, 0.99)
# Recording-rule levels (docs/monitoring.md, "Recording rules"): the labels each output keeps.
LEVEL = "namespace_model_deployment"
POOL_LEVEL = "namespace_inference_pool"


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
    recording_rules: bool = False  # read recorded series where Prometheus has the matching rule loaded
    rules_refresh_seconds: float = 300.0  # how often the loaded rules are asked for again


@dataclass(frozen=True)
class Query:
    """One signal's PromQL. ``expr`` is the aggregate (one series per key), which a recording rule may
    store as ``record`` with ``labels``; ``scale`` is applied when read (a unit conversion), so the raw
    and the recorded readings are the same floating-point operations on the same numbers."""

    expr: str
    record: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    scale: str = ""

    @property
    def raw(self) -> str:
        return self.expr + self.scale

    @property
    def selector(self) -> str:
        assert self.record is not None
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.record}{{{inner}}}" if inner else self.record

    @property
    def recorded(self) -> str:
        return self.selector + self.scale


def _quantile_label(p: float) -> tuple[tuple[str, str], ...]:
    return (("quantile", str(p)),)


def pod_queries(config: PrometheusConfig, percentile: float) -> dict[str, Query]:
    """Per signal, over the pods' Triton series; each returns one series per (namespace, model deployment)
    and reads only the ``tensorrt_llm`` model's series (an ensemble's, BLS' and pre/postprocessing's would
    count every request up to four times)."""
    by, w, s = f"namespace, {config.deployment_label}", config.window, config.short_window
    m = f'model="{TRTLLM_MODEL}"'

    def rate(family: str, window: str, scale: str = "") -> Query:
        return Query(f"sum by ({by}) (rate({family}{{{m}}}[{window}]))", f"{LEVEL}:{family}:rate{window}",
                     scale=scale)

    def gauge(family: str, selector: str) -> str:
        # Matchers in name order, as Prometheus prints a loaded rule: the rules API's text then equals this.
        return f"sum by ({by}) ({family}{{{selector},{m}}})"

    def quantile(p: float) -> Query:
        family = "nv_inference_first_response_histogram_ms"
        return Query(f"histogram_quantile({p}, sum by ({by}, le) (rate({family}_bucket{{{m}}}[{w}])))",
                     f"{LEVEL}_quantile:{family}:histogram_quantile_rate{w}", _quantile_label(p), " / 1e3")

    kv = "nv_trt_llm_kv_cache_block_metrics"
    return {
        "requestsPerSecond": rate("nv_inference_request_success", w),
        "requestsPerSecondShort": rate("nv_inference_request_success", s),
        "requestSeconds": rate("nv_inference_request_duration_us", w, " / 1e6"),
        "requestSecondsShort": rate("nv_inference_request_duration_us", s, " / 1e6"),
        "firstResponseSeconds": rate("nv_inference_first_response_histogram_ms_sum", w, " / 1e3"),
        "firstResponseSecondsShort": rate("nv_inference_first_response_histogram_ms_sum", s, " / 1e3"),
        # Squared per series (one per pod) before the sum: the wait's spread over the pods (observer.awaiting_pods).
        "firstResponsePodSquaresShort": Query(
            f"sum by ({by}) (rate(nv_inference_first_response_histogram_ms_sum{{{m}}}[{s}]) ^ 2)",
            f"{LEVEL}:nv_inference_first_response_histogram_ms_sum:pow2_rate{s}", scale=" / 1e6"),
        "ttftSeconds": quantile(percentile),
        "ttftMedianSeconds": quantile(0.5),
        "outputTokensPerSecond": rate("nv_llm_output_token_len_sum", w),
        "outputTokensPerSecondShort": rate("nv_llm_output_token_len_sum", s),
        "inputTokensPerSecond": rate("nv_llm_input_token_len_sum", w),
        "inputTokensPerSecondShort": rate("nv_llm_input_token_len_sum", s),
        "kvCacheUtilization": Query(gauge(kv, 'kv_cache_block_type="used"') + " / "
                                    + gauge(kv, 'kv_cache_block_type="max"'),
                                    f"{LEVEL}:nv_trt_llm_kv_cache_blocks_used_per_max:ratio"),
        # Never recorded: the age of the newest sample is the freshness of the data itself.
        "age": Query(f"time() - max by ({by}) (timestamp(nv_inference_request_success{{{m}}}))"),
    }


def epp_queries(config: PrometheusConfig, percentile: float) -> dict[str, Query]:
    """Per signal, over the endpoint pickers' series, one series per (namespace, InferencePool). The
    per-model histograms carry no pool label, and one EPP serves one pool: they are joined, per scrape
    target, to that target's ``inference_pool_ready_pods{name=...}`` (``group`` reads 1, so the product
    leaves the rates as they are)."""
    by, w = f"namespace, {POOL_LABEL}", config.window
    target = "namespace, job, instance"
    pool = (f'* on ({target}) group_left ({POOL_LABEL}) label_replace(group by ({target}, name) '
            f'({epp.READY_PODS.name}), "{POOL_LABEL}", "$1", "name", "(.*)")')

    def quantile(family: str, p: float) -> Query:
        return Query(f"histogram_quantile({p}, sum by ({by}, le) (rate({family}_bucket[{w}]) {pool}))",
                     f"{POOL_LEVEL}_quantile:{family}:histogram_quantile_rate{w}", _quantile_label(p))

    queue = epp.FLOW_CONTROL_QUEUE.name
    return {
        "eppTtftSeconds": quantile(epp.TTFT.name, percentile),
        "eppItlSeconds": quantile(epp.TPOT.name, percentile),
        "eppQueue": Query(f"sum by ({by}) ({queue})", f"{POOL_LEVEL}:{queue}:sum"),
    }


def normalise(promql: str) -> str:
    return " ".join(promql.split())


class PrometheusSource:
    def __init__(self, config: PrometheusConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.bearer_token}"} if config.bearer_token else {}
        self.client = client or httpx.Client(
            base_url=config.url, headers=headers, timeout=config.timeout_seconds,
            verify=config.ca_file if config.ca_file else True,
        )
        self.queries = 0
        # (record, labels) -> the expression Prometheus has loaded for it (healthy rules only).
        self._loaded: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._loaded_at: float | None = None
        self._reported: frozenset[str] | None = None
        self.read_raw: dict[str, str] = {}  # the last tick's signals read from the raw expression, and why

    def close(self) -> None:
        self.client.close()

    def queries_for(self, percentile: float) -> dict[str, str]:
        """The raw PromQL per pod signal (the autoscaler's reading without recording rules)."""
        return {k: q.raw for k, q in pod_queries(self.config, percentile).items()}

    # -- recording rules ---------------------------------------------------------------------------
    def _refresh_rules(self) -> None:
        """Ask which recording rules Prometheus evaluates, every ``rules_refresh_seconds``. A failed
        answer (no rules API behind a proxy, an error) reads everything raw until the next try."""
        now = time.monotonic()
        if self._loaded_at is not None and now - self._loaded_at < self.config.rules_refresh_seconds:
            return
        self._loaded_at = now
        try:
            response = self.client.get("/api/v1/rules", params={"type": "record"})
            response.raise_for_status()
            groups = response.json()["data"]["groups"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            log.warning("reading the recording rules failed; reading raw expressions error=%s", error)
            self._loaded = {}
            return
        loaded = {}
        for group in groups:
            for rule in group.get("rules") or []:
                if rule.get("type", "recording") == "recording" and rule.get("health", "ok") == "ok":
                    labels = tuple(sorted((rule.get("labels") or {}).items()))
                    loaded[(rule["name"], labels)] = normalise(rule.get("query", ""))
        self._loaded = loaded

    def _text(self, signal: str, query: Query) -> str:
        """The recorded series when its rule is loaded with this very expression, else the raw one."""
        if not self.config.recording_rules:
            return query.raw
        if query.record is None:
            return query.raw
        loaded = self._loaded.get((query.record, tuple(sorted(query.labels))))
        if loaded is None:
            self.read_raw[signal] = f"no rule {query.selector} loaded"
            return query.raw
        if loaded != normalise(query.expr):
            self.read_raw[signal] = f"rule {query.selector} is loaded with another expression"
            return query.raw
        return query.recorded

    def _report(self) -> None:
        said = frozenset(f"{s}: {why}" for s, why in self.read_raw.items())
        if said != self._reported:
            self._reported = said
            if said:
                log.warning("recording rules: reading raw expressions for %s", "; ".join(sorted(said)))
            else:
                log.info("recording rules: every recorded signal is read from its recorded series")

    # -- queries -----------------------------------------------------------------------------------
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

    def _query(self, promql: str, now: float, key_label: str) -> dict[tuple[str, str], float]:
        result = self._data(promql, now)["result"]
        if len(result) > MAX_SERIES:
            raise ValueError(f"{len(result)} series, more than the {MAX_SERIES} ModelDeployments one query serves: "
                             "is a relabelling rule missing?")
        out: dict[tuple[str, str], float] = {}
        for series in result:
            labels = series["metric"]
            key = (labels.get("namespace", ""), labels.get(key_label, ""))
            if key in out:
                # Two series for one ModelDeployment (a second scrape job, a label the sum does not drop):
                # neither can be trusted, and picking one could scale down on half the load.
                raise ValueError(f"more than one series for {key[0]}/{key[1]}: {labels}")
            out[key] = float(series["value"][1])  # "NaN" and "+Inf" parse to float too
        return out

    def _run(self, queries: dict[str, Query], at: float, key_label: str
             ) -> tuple[dict[str, dict[tuple[str, str], float]], dict[str, str]]:
        values: dict[str, dict[tuple[str, str], float]] = {}
        errors: dict[str, str] = {}
        for signal, query in queries.items():
            try:
                values[signal] = self._query(self._text(signal, query), at, key_label)
            except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as error:
                errors[signal] = f"{type(error).__name__}: {error}"
        return values, errors

    def observe(self, targets: list[Target], now: float | None = None) -> dict[Target, SignalReadings]:
        """One query per signal for all targets; latency quantiles once per distinct percentile; the
        endpoint pickers' signals only when some target has an InferencePool."""
        if not targets:
            return {}
        at = time.time() if now is None else now
        self.read_raw = {}
        if self.config.recording_rules:
            self._refresh_rules()
        label = self.config.deployment_label
        percentiles = sorted({t.percentile for t in targets})
        shared = {k: q for k, q in pod_queries(self.config, percentiles[0]).items() if k not in LATENCY_SIGNALS}
        if self.config.recording_rules and self._text("requestsPerSecond", shared["requestsPerSecond"]) != \
                shared["requestsPerSecond"].raw:
            # A recorded series is as old as the rule's last evaluation: that age counts as well.
            shared["recordedAge"] = Query(f"time() - max by (namespace, {label}) "
                                          f"(timestamp({shared['requestsPerSecond'].selector}))")
        values, errors = self._run(shared, at, label)
        by_percentile = {p: self._run({k: q for k, q in pod_queries(self.config, p).items()
                                       if k in LATENCY_SIGNALS}, at, label) for p in percentiles}
        pooled = [t for t in targets if t.inference_pool]
        pool_percentiles = sorted({t.percentile for t in pooled})
        pool_values: dict[str, dict[tuple[str, str], float]] = {}
        pool_errors: dict[str, str] = {}
        pool_by_percentile: dict[float, tuple[dict[str, dict[tuple[str, str], float]], dict[str, str]]] = {}
        if pooled:
            pool_values, pool_errors = self._run({k: q for k, q in epp_queries(self.config, pool_percentiles[0])
                                                  .items() if k not in EPP_LATENCY_SIGNALS}, at, POOL_LABEL)
            pool_by_percentile = {p: self._run({k: q for k, q in epp_queries(self.config, p).items()
                                                if k in EPP_LATENCY_SIGNALS}, at, POOL_LABEL)
                                  for p in pool_percentiles}
        if self.config.recording_rules:
            self._report()
        result: dict[Target, SignalReadings] = {}
        for target in targets:
            key = (target.namespace, target.name)
            latency_values, latency_errors = by_percentile[target.percentile]
            merged_values, merged_errors = {**values, **latency_values}, {**errors, **latency_errors}
            ages = [a for a in (merged_values.get("age", {}).get(key), merged_values.get("recordedAge", {}).get(key))
                    if a is not None and not math.isnan(a)]
            sample_age = max(ages, default=0.0)
            readings = SignalReadings()
            for signal in SIGNALS:
                if signal in EPP_SIGNALS:
                    continue
                readings.readings[signal] = self._reading(merged_values.get(signal, {}).get(key),
                                                          merged_errors.get(signal), sample_age)
            if target.inference_pool:
                pool_key = (target.namespace, target.inference_pool)
                p_values, p_errors = pool_by_percentile[target.percentile]
                epp_values, epp_errors = {**pool_values, **p_values}, {**pool_errors, **p_errors}
                for signal in EPP_SIGNALS:
                    readings.readings[signal] = self._reading(
                        epp_values.get(signal, {}).get(pool_key), epp_errors.get(signal), 0.0,
                        f"no series for InferencePool {target.inference_pool} (its endpoint picker not scraped, "
                        "or not exporting this family)")
            if target.activation_query:
                readings.readings["activation"] = self._activation(target.activation_query, at)
            result[target] = readings
        return result

    def _reading(self, raw: float | None, error: str | None, age: float,
                 missing: str = "no series for this ModelDeployment") -> Reading:
        if error is not None:
            return Reading.error(error)
        if raw is None:
            return Reading.empty(missing)
        return Reading.of(raw, age, self.config.stale_after_seconds)

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
