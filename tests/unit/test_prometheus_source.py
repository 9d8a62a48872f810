"""The Prometheus metric source: one query per signal for all targets, and honest readings (empty,
error, NaN, stale) rather than zeros. HTTP is answered by httpx's MockTransport."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx

from controllers.autoscaling.signals import Quality
from controllers.metrics import EPP_SIGNALS, SIGNALS, Target
from controllers.metrics.prometheus import PrometheusConfig, PrometheusSource

A, B = Target("ns", "a", 0.95), Target("ns", "b", 0.95)
C = Target("ns", "c", 0.99)


def vector(*series: tuple[str, str]) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"namespace": "ns", "tokenworks_dev_model_deployment": name}, "value": [0, value]}
        for name, value in series]}}


def source(answer: dict[str, dict[str, object] | int]) -> tuple[PrometheusSource, list[str]]:
    """``answer`` maps a substring of the PromQL to a JSON body, or to an HTTP status for errors."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = parse_qs(urlparse(str(request.url)).query)["query"][0]
        seen.append(query)
        for fragment, body in answer.items():
            if fragment in query:
                return httpx.Response(body, json={}) if isinstance(body, int) else httpx.Response(200, json=body)
        return httpx.Response(200, json=vector())

    client = httpx.Client(base_url="http://prometheus", transport=httpx.MockTransport(handler))
    return PrometheusSource(PrometheusConfig(url="http://prometheus"), client), seen


def test_one_query_per_signal_for_all_targets_and_per_percentile_for_latency() -> None:
    prometheus, seen = source({})
    prometheus.observe([A, B, C], now=100)
    shared = [q for q in seen if "histogram_quantile" not in q]
    latency = [q for q in seen if "histogram_quantile" in q]
    assert len(shared) == 13  # 12 rate/gauge signals + the sample age, for every target at once
    assert len(latency) == 3  # the TTFT median once, and the TTFT at each of the two percentiles
    # Only the TensorRT-LLM model's series: an ensemble's would count each request again.
    assert all('model="tensorrt_llm"' in q for q in seen)
    assert any("histogram_quantile(0.99" in q for q in latency)


def test_values_empty_nan_and_errors_are_told_apart() -> None:
    prometheus, _ = source({
        "nv_llm_output_token_len_sum{model=\"tensorrt_llm\"}[2m]": vector(("a", "1500"), ("b", "NaN")),
        "nv_inference_first_response_histogram_ms_bucket": 503,
        "timestamp(": vector(("a", "3"), ("b", "2")),
    })
    readings = prometheus.observe([A, B], now=100)
    a, b = readings[A], readings[B]
    assert a.get("outputTokensPerSecond").value == 1500
    assert b.get("outputTokensPerSecond").quality is Quality.NAN
    assert a.get("ttftSeconds").quality is Quality.ERROR
    assert a.get("kvCacheUtilization").quality is Quality.EMPTY
    assert set(a.readings) == set(SIGNALS) - set(EPP_SIGNALS), "the picker's only where a pool fronts the pods"


def test_old_samples_are_stale() -> None:
    prometheus, _ = source({
        "nv_llm_output_token_len_sum{model=\"tensorrt_llm\"}[2m]": vector(("a", "1500")),
        "timestamp(": vector(("a", "600")),
    })
    assert prometheus.observe([A], now=100)[A].get("outputTokensPerSecond").quality is Quality.STALE


def test_an_unreachable_server_is_an_error_for_every_signal() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(base_url="http://prometheus", transport=httpx.MockTransport(refuse))
    readings = PrometheusSource(PrometheusConfig(url="http://prometheus"), client).observe([A], now=1)[A]
    assert {r.quality for r in readings.readings.values()} == {Quality.ERROR}


def test_the_activation_query_is_read_per_target_from_outside_the_pods() -> None:
    # A deployment at zero pods: every pod series is empty, the user's gateway query is not.
    gateway = Target("ns", "a", 0.95, activation_query='sum(rate(my_gateway_requests_total{route="a"}[1m]))')
    quiet = Target("ns", "b", 0.95, activation_query='sum(rate(my_gateway_requests_total{route="b"}[1m]))')
    prometheus, seen = source({
        'route="a"': {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [0, "2.5"]}]}},
        'route="b"': 500,
    })
    readings = prometheus.observe([gateway, quiet, A], now=100)
    assert readings[gateway].get("activation").value == 2.5
    assert readings[gateway].get("outputTokensPerSecond").quality is Quality.EMPTY
    assert readings[quiet].get("activation").quality is Quality.ERROR, "an error is never read as no traffic"
    assert readings[A].get("activation").quality is Quality.EMPTY, "no query configured, none sent"
    assert sum('route="a"' in q for q in seen) == 1


def test_two_series_for_one_deployment_are_an_error_not_a_guess() -> None:
    prom, _ = source({"nv_llm_output_token_len_sum": vector(("a", "100"), ("a", "40"), ("b", "7"))})
    readings = prom.observe([A, B], now=1000.0)
    reading = readings[A].readings["outputTokensPerSecond"]
    assert reading.quality is Quality.ERROR and "more than one series for ns/a" in reading.detail
    assert readings[B].readings["outputTokensPerSecond"].quality is Quality.ERROR, \
        "the whole answer is suspect: a relabelling fault rarely hits one deployment only"


def pool_vector(*series: tuple[str, str]) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"namespace": "ns", "inference_pool": pool}, "value": [0, value]} for pool, value in series]}}


def test_the_endpoint_pickers_signals_are_read_per_pool_only_for_targets_behind_one() -> None:
    pooled = Target("ns", "a", 0.95, inference_pool="pool-a")
    prometheus, seen = source({
        "inference_objective_request_ttft_seconds_bucket": pool_vector(("pool-a", "1.5"), ("pool-b", "9")),
        "inference_objective_request_tpot_seconds_bucket": pool_vector(("pool-a", "NaN")),
        "inference_extension_flow_control_queue_size": pool_vector(("pool-a", "12")),
    })
    readings = prometheus.observe([pooled, B], now=100)
    epp = [q for q in seen if "inference_objective" in q or "inference_extension" in q]
    assert len(epp) == 3, "TTFT, ITL and queue once for every pool"
    # The per-model histograms carry no pool: joined to the scrape target's inference_pool_ready_pods.
    assert all("group_left (inference_pool)" in q and "inference_pool_ready_pods" in q for q in epp[1:])
    assert readings[pooled].get("eppTtftSeconds").value == 1.5
    assert readings[pooled].get("eppItlSeconds").quality is Quality.NAN
    assert readings[pooled].get("eppQueue").value == 12
    assert not set(EPP_SIGNALS) & set(readings[B].readings)
    prometheus2, seen2 = source({})
    prometheus2.observe([A, B], now=100)
    assert not any("inference_objective" in q or "inference_extension" in q for q in seen2), \
        "no picker queries without a pool"


def rules_body(config: PrometheusConfig, **overrides: str) -> dict[str, object]:
    """The rules API's answer for the committed rules (for ``config``'s windows), a rule's query replaced."""
    from controllers.metrics.rules import groups

    answer = []
    for group in groups(config)["groups"]:
        answer.append({"name": group["name"], "rules": [
            {"name": r["record"], "query": overrides.get(r["record"], r["expr"]), "labels": r.get("labels", {}),
             "health": "ok", "type": "recording"} for r in group["rules"]]})
    return {"status": "success", "data": {"groups": answer}}


def recording_source(rules: dict[str, object] | int, window: str = "2m"
                     ) -> tuple[PrometheusSource, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/rules":
            return httpx.Response(rules, json={}) if isinstance(rules, int) else httpx.Response(200, json=rules)
        seen.append(parse_qs(urlparse(str(request.url)).query)["query"][0])
        return httpx.Response(200, json=vector())

    client = httpx.Client(base_url="http://prometheus", transport=httpx.MockTransport(handler))
    config = PrometheusConfig(url="http://prometheus", recording_rules=True, window=window)
    return PrometheusSource(config, client), seen


def test_recorded_series_are_read_where_the_rule_is_loaded_with_the_same_expression() -> None:
    loaded = rules_body(PrometheusConfig(url=""))
    prometheus, seen = recording_source(loaded)
    prometheus.observe([A, Target("ns", "p", 0.95, inference_pool="pool")], now=100)
    assert "namespace_model_deployment:nv_inference_request_success:rate2m" in seen
    assert 'namespace_model_deployment_quantile:nv_inference_first_response_histogram_ms:histogram_quantile_rate2m' \
           '{quantile="0.95"} / 1e3' in seen
    assert "namespace_model_deployment:nv_inference_request_duration_us:rate30s / 1e6" in seen
    assert 'namespace_inference_pool_quantile:inference_objective_request_ttft_seconds:histogram_quantile_rate2m' \
           '{quantile="0.95"}' in seen
    assert not any("rate(" in q for q in seen), "every windowed signal recorded"
    assert prometheus.read_raw == {}
    # The recorded series' own age counts: a rule that stopped evaluating reads stale.
    assert any(q.startswith("time() - max by") and "timestamp(namespace_model_deployment:" in q for q in seen)


def test_a_percentile_an_expression_or_a_window_the_rules_do_not_record_is_read_raw() -> None:
    changed = "namespace_model_deployment:nv_llm_output_token_len_sum:rate2m"
    prometheus, seen = recording_source(rules_body(PrometheusConfig(url=""), **{changed: "sum(up)"}))
    prometheus.observe([Target("ns", "a", 0.97)], now=100)
    assert prometheus.read_raw["outputTokensPerSecond"] == f"rule {changed} is loaded with another expression"
    assert "histogram_quantile_rate2m{quantile=\"0.97\"}" in prometheus.read_raw["ttftSeconds"]
    assert any(q.startswith("histogram_quantile(0.97") for q in seen)
    assert "namespace_model_deployment:nv_inference_request_success:rate2m" in seen

    # The operator runs a 10 s window against rules recorded at 2 m: every windowed signal reads raw.
    prometheus, seen = recording_source(rules_body(PrometheusConfig(url="")), window="10s")
    prometheus.observe([A], now=100)
    assert "requestsPerSecond" in prometheus.read_raw and "[10s]" in next(q for q in seen if "request_success" in q)
    assert "requestsPerSecondShort" not in prometheus.read_raw, "the 30 s panic window is still recorded"
    assert not any(":rate2m" in q for q in seen)


def test_no_rules_api_reads_everything_raw() -> None:
    prometheus, seen = recording_source(404)
    readings = prometheus.observe([A], now=100)
    assert all(":" not in q.split("{")[0] for q in seen), seen
    assert readings[A].get("requestsPerSecond").quality is Quality.EMPTY
