"""The rules of grafana/dashboard-linter, applied to Tokenworks' dashboards, plus the house rules (every metric a
real exporter has, no lifetime averages). ``python -m dashboards.lint`` prints every problem and exits 1 if
there is one; tests/unit/test_dashboards.py runs each rule.

The linter's rules (grafana/dashboard-linter ``lint/rules.go``@00c7113c and the ``lint/rule_*.go`` files) and
what stands here for each:

- template-datasource-rule: one data source variable of type prometheus. The linter wants it named
  ``datasource``; ours is ``DS_PROMETHEUS``, the name Grafana's export/import and the Helm chart's ConfigMaps
  use, and the rule checks that name instead.
- template-job-rule, template-instance-rule, target-job-rule, target-instance-rule: do not fit. ``job`` is one
  per PodMonitor and ``instance`` one per pod address; a deployment is ``namespace`` plus
  ``tokenworks_dev_model_deployment`` (pods) or ``name`` (operator), and panels sum over its pods. Replaced by
  ``required_matchers``: every per-deployment selector filters on the dashboard's namespace (and deployment)
  variables, every pod selector on ``model="tensorrt_llm"``, and no process-level operator series on a
  namespace (theirs is the operator pod's, from the scrape target).
- template-label-promql-rule, template-on-time-change-reload-rule, template-unused-rule: as in the linter.
- panel-datasource-rule, panel-title-description-rule, panel-no-targets-rule: as in the linter, for every panel
  type rather than the linter's six.
- panel-units-rule: every panel type; the linter's unit list, plus Grafana's custom units (``suffix:tok/s``):
  no built-in unit counts tokens or GPU-hours
  (https://grafana.com/docs/grafana/latest/panels-visualizations/configure-standard-options/#unit).
- target-promql-rule: every query parses once the variables are expanded (as the linter expands them).
- target-rate-interval-rule: every rate/irate window is ``$__rate_interval``; increase may also span ``$__range``.
- target-counter-agg-rule: counters, which here include Triton's counters without ``_total`` and every
  histogram ``_sum``/``_count``/``_bucket``, are only read through rate/irate/increase (or tested for being
  new with ``unless``): no lifetime averages.
- target-histogram-rule: ``_bucket`` series only under histogram_quantile, or joined on ``le`` (the share
  within the TTFT target reads one bucket, docs/monitoring.md).
- uneditable-dashboard-rule: ``editable`` false (provisioned from ConfigMaps, edits could not be saved).
- and: every series read is one the pods (``../shared/triton-trtllm-facts.md`` section 5) or the operator
  (its prometheus_client registry) exports.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser as pp

from dashboards import NAMES, json_text
from dashboards.grafana import legend_labels, variable_query
from inference_pods.emulator.metrics import CORE_COUNTERS

Raw = dict[str, Any]

# Stand-ins that parse (the linter uses the same idea, lint/variables.go): a window no query uses for real.
RATE_INTERVAL = timedelta(seconds=11_277_964)
RANGE = timedelta(seconds=11_277_965)
INTERVAL = timedelta(seconds=11_277_966)
_DURATIONS = {"__rate_interval": RATE_INTERVAL, "__range": RANGE, "__interval": INTERVAL}
_NUMBERS = {"__range_s", "__range_ms", "__interval_ms"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
PROMETHEUS_UID = "${DS_PROMETHEUS}"
TRTLLM_MATCHER = ("model", "tensorrt_llm")

# Unit ids of grafana/dashboard-linter lint/rule_panel_units.go@48a3e666 (Grafana's valueFormats categories).
_UNITS = """
none string short percent percentunit humidity dB hex0x hex sci locale pixel accMS2 accFS2 accG degree radian
grad arcmin arcsec areaM2 areaF2 areaMI2 flops mflops gflops tflops pflops eflops zflops yflops ppm conppb
conngm3 conngNm3 conμgm3 conμgNm3 conmgm3 conmgNm3 congm3 congNm3 conmgdL conmmolL currencyUSD currencyGBP
currencyEUR currencyJPY currencyRUB currencyUAH currencyBRL currencyDKK currencyISK currencyNOK currencySEK
currencyCZK currencyCHF currencyPLN currencyBTC currencymBTC currencyμBTC currencyZAR currencyINR currencyKRW
currencyIDR currencyPHP currencyVND bytes decbytes bits decbits kbytes deckbytes mbytes decmbytes gbytes
decgbytes tbytes dectbytes pbytes decpbytes pps binBps Bps binbps bps KiBs Kibits KBs Kbits MiBs Mibits MBs
Mbits GiBs Gibits GBs Gbits TiBs Tibits TBs Tbits PiBs Pibits PBs Pbits dateTimeAsIso dateTimeAsIsoNoDateIfToday
dateTimeAsUS dateTimeAsUSNoDateIfToday dateTimeAsLocal dateTimeAsLocalNoDateIfToday dateTimeAsSystem
dateTimeFromNow watt kwatt megwatt gwatt mwatt Wm2 voltamp kvoltamp voltampreact kvoltampreact watth watthperkg
kwatth kwattm amph kamph mamph joule ev amp kamp mamp volt kvolt mvolt dBm ohm kohm Mohm farad µfarad nfarad
pfarad ffarad henry mhenry µhenry lumens flowgpm flowcms flowcfs flowcfm litreh flowlpm flowmlpm lux forceNm
forcekNm forceN forcekN Hs KHs MHs GHs THs PHs EHs massmg massg masslb masskg masst lengthmm lengthin lengthft
lengthm lengthkm lengthmi pressurembar pressurebar pressurekbar pressurepa pressurehpa pressurekpa pressurehg
pressurepsi radbq radci radgy radrad radsv radmsv radusv radrem radexpckg radr radsvh radmsvh radusvh rotrpm
rothz rotrads rotdegs celsius fahrenheit kelvin hertz ns µs ms s m h d dtdurationms dtdurations dthms dtdhms
timeticks clockms clocks cps ops reqps rps wps iops cpm opm rpm wpm mps mpm velocityms velocitykmh velocitymph
velocityknot mlitre litre m3 Nm3 dm3 gallons bool bool_yes_no bool_on_off
"""
VALID_UNITS = frozenset(_UNITS.split())
CUSTOM_UNIT = re.compile(r"^(suffix|prefix|si|count|currency|time):\S.*$")

# What a pod exports (../shared/triton-trtllm-facts.md 5.2 and 5.3): Triton core on every backend; the
# TensorRT-LLM C++ backend's families on tensorrt-engine only.
TRITON_COUNTERS = frozenset({name for name, _ in CORE_COUNTERS} | {"nv_energy_consumption"})
TRITON_GAUGES = frozenset({
    "nv_inference_pending_request_count", "nv_model_load_duration_secs", "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage", "nv_gpu_power_limit",
    "nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
    "nv_pinned_memory_pool_total_bytes", "nv_pinned_memory_pool_used_bytes"})
TRTLLM_GAUGES = frozenset({
    "nv_trt_llm_request_metrics", "nv_trt_llm_runtime_memory_metrics", "nv_trt_llm_kv_cache_block_metrics",
    "nv_trt_llm_inflight_batcher_metrics", "nv_trt_llm_v1_metrics", "nv_trt_llm_general_metrics"})
TRTLLM_COUNTERS = frozenset({"nv_trt_llm_disaggregated_serving_metrics"})
POD_HISTOGRAMS = frozenset({"nv_inference_first_response_histogram_ms", "nv_llm_input_token_len",
                            "nv_llm_output_token_len"})
ENGINE_ONLY_PREFIXES = ("nv_trt_llm_", "nv_llm_")
POD_PREFIX = "nv_"
PER_DEPLOYMENT_PREFIXES = ("tokenworks_modeldeployment_", "tokenworks_autoscaler_")
PROCESS_LEVEL = ("tokenworks_autoscaler_tick_duration_seconds", "tokenworks_autoscaler_last_tick_timestamp_seconds")
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def operator_series() -> dict[str, str]:
    """Every series name the operator exports, with its kind (counter, gauge, histogram part), from its
    prometheus_client registry and its collector of per-ModelDeployment series."""
    from prometheus_client import REGISTRY

    import controllers.autoscaling.loop
    import controllers.kube
    import controllers.manager  # registers the telemetry collector
    import controllers.reconcile
    import controllers.watches  # noqa: F401  - each registers its families on import

    out: dict[str, str] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("tokenworks_"):
            continue
        if family.type == "counter":
            out[family.name + "_total"] = "counter"
        elif family.type == "histogram":
            out.update({family.name + part: "histogram" for part in HISTOGRAM_PARTS})
        else:
            out[family.name] = family.type
    return out


def pod_series() -> dict[str, str]:
    out = {name: "counter" for name in TRITON_COUNTERS | TRTLLM_COUNTERS}
    out.update({name: "gauge" for name in TRITON_GAUGES | TRTLLM_GAUGES})
    out.update({h + part: "histogram" for h in POD_HISTOGRAMS for part in HISTOGRAM_PARTS})
    return out


def known_series() -> dict[str, str]:
    return {**pod_series(), **operator_series()}


# -- the dashboard JSON ---------------------------------------------------------------------------------
def load_raw(name: str) -> Raw:
    raw: Raw = json.loads(json_text(name))
    return raw


def panels(raw: Raw) -> list[Raw]:
    """Every panel but rows, a collapsed row's panels included."""
    out: list[Raw] = []
    for panel in raw.get("panels", []):
        if panel.get("type") != "row":
            out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variables(raw: Raw) -> list[Raw]:
    found: list[Raw] = raw.get("templating", {}).get("list", [])
    return found


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel's target or an annotation."""

    where: str  # "panel title / refId" or "annotation name"
    expr: str
    legend: str
    panel: Raw | None  # None for an annotation
    instant: bool = False  # Grafana runs it as an instant query
    step: str | None = None  # an annotation's own step


def queries(raw: Raw) -> list[Query]:
    out = [Query(f"{p.get('title')} / {t.get('refId')}", t.get("expr", ""), t.get("legendFormat", ""), p,
                 bool(t.get("instant")) and not t.get("range"))
           for p in panels(raw) for t in p.get("targets", [])]
    for annotation in raw.get("annotations", {}).get("list", []):
        if annotation.get("expr") is not None:
            out.append(Query(f"annotation {annotation.get('name')}", annotation["expr"],
                             annotation.get("titleFormat", "") + annotation.get("textFormat", ""), None,
                             step=annotation.get("step")))
    return out


# -- PromQL ---------------------------------------------------------------------------------------------
def _in_string(expr: str, position: int) -> bool:
    quote: str | None = None
    i = 0
    while i < position:
        char = expr[i]
        if quote and char == "\\":
            i += 2
            continue
        if char in "\"'`":
            quote = None if quote == char else (quote or char)
        i += 1
    return quote is not None


def placeholder(name: str) -> str:
    return f"var_{name}"


def expand(expr: str, names: Sequence[str]) -> str:
    """``expr`` with variables replaced by stand-ins that parse: Grafana's windows by the durations above,
    a variable inside a string by ``var_<name>``, elsewhere (``$gpu_price``, ``$percentile``) by 1."""
    known = set(names)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in _DURATIONS:
            return f"{int(_DURATIONS[name].total_seconds())}s"
        if name in _NUMBERS:
            return "1"
        if name not in known:
            return match.group(0)
        return placeholder(name) if _in_string(expr, match.start()) else "1"

    return _VARIABLE.sub(replace, expr)


def parse(expr: str, names: Sequence[str]) -> pp.Expr:
    return pp.parse(expand(expr, names))


def children(node: pp.Expr) -> list[pp.Expr]:
    if isinstance(node, pp.AggregateExpr):
        return [node.expr, *([node.param] if isinstance(node.param, pp.Expr) else [])]
    if isinstance(node, (pp.UnaryExpr, pp.ParenExpr, pp.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, pp.Call):
        return [a for a in node.args if isinstance(a, pp.Expr)]
    return []


def walk(node: pp.Expr, parents: tuple[pp.Expr, ...] = ()) -> Iterator[tuple[pp.Expr, tuple[pp.Expr, ...]]]:
    yield node, parents
    for child in children(node):
        yield from walk(child, (*parents, node))


def selectors(node: pp.Expr) -> Iterator[tuple[pp.VectorSelector, tuple[pp.Expr, ...]]]:
    for found, parents in walk(node):
        if isinstance(found, pp.VectorSelector):
            yield found, parents


def matchers(selector: pp.VectorSelector) -> dict[str, tuple[str, str]]:
    """label -> (operator, value) of the selector's matchers (the metric name excluded)."""
    ops = ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="), (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~"))
    return {m.name: (next(text for op, text in ops if m.op == op), m.value)
            for m in selector.matchers.matchers if m.name != "__name__"}


def is_engine_only(metric: str) -> bool:
    return metric.startswith(ENGINE_ONLY_PREFIXES)


def is_per_deployment(metric: str) -> bool:
    return metric.startswith(POD_PREFIX) or (metric.startswith(PER_DEPLOYMENT_PREFIXES)
                                             and not metric.startswith(PROCESS_LEVEL))


def _call_name(node: pp.Expr) -> str | None:
    return node.func.name if isinstance(node, pp.Call) else None


# -- rules ------------------------------------------------------------------------------------------------
Problems = list[str]


def _names(raw: Raw) -> list[str]:
    return [str(v.get("name")) for v in variables(raw)]


def template_datasource(raw: Raw) -> Problems:
    sources = [v for v in variables(raw) if v.get("type") == "datasource"]
    if len(sources) != 1:
        return [f"{len(sources)} data source variables, want exactly one"]
    (source,) = sources
    problems = []
    if source.get("name") != "DS_PROMETHEUS" or source.get("query") != "prometheus":
        problems.append(f"data source variable {source.get('name')!r} of {source.get('query')!r}, want "
                        "DS_PROMETHEUS of prometheus")
    if source.get("label") != "Data source":
        problems.append(f"data source variable labelled {source.get('label')!r}, want 'Data source'")
    return problems


def datasources(raw: Raw) -> Problems:
    """panel-datasource-rule, for panels, targets, variables and annotations: every data source is the
    variable (Grafana's own built-in annotation aside)."""
    problems = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and source.get("uid") != PROMETHEUS_UID and node.get("builtIn") != 1:
                problems.append(f"{where}: data source {source!r}")
            if isinstance(source, str):
                problems.append(f"{where}: data source by name {source!r}")
            for key, value in node.items():
                visit(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")

    visit({k: v for k, v in raw.items() if k != "templating"}, raw["uid"])
    for variable in variables(raw):
        if variable.get("type") == "query" and (variable.get("datasource") or {}).get("uid") != PROMETHEUS_UID:
            problems.append(f"variable {variable.get('name')}: data source {variable.get('datasource')!r}")
    for panel in panels(raw):
        if (panel.get("datasource") or {}).get("uid") != PROMETHEUS_UID:
            problems.append(f"panel {panel.get('title')!r} has no data source of its own")
    return problems


def template_variables(raw: Raw) -> Problems:
    """What replaces template-job/instance-rule: the deployment's identity as variables, each a Prometheus
    query on the data source variable, labelled in title case; multi-select with allValue ``.+`` where the
    dashboard aggregates deployments, single-select on the one-deployment dashboard (its SLO lines and
    percentile are one deployment's)."""
    by_name = {v.get("name"): v for v in variables(raw)}
    wanted = ["namespace", "deployment"] if "deployment" in by_name else ["namespace"]
    problems = []
    for name in wanted:
        variable = by_name.get(name)
        if variable is None:
            problems.append(f"no {name} variable")
            continue
        if variable.get("type") != "query":
            problems.append(f"{name}: type {variable.get('type')!r}, want query")
        if variable.get("label") != name.title():
            problems.append(f"{name}: label {variable.get('label')!r}, want {name.title()!r}")
        one_deployment = "deployment" in by_name
        if one_deployment and (variable.get("multi") or variable.get("includeAll")):
            problems.append(f"{name}: the one-deployment dashboard selects one")
        if not one_deployment and not (variable.get("multi") and variable.get("includeAll")
                                       and variable.get("allValue") == ".+"):
            problems.append(f"{name}: want multi-select with All as '.+'")
    return problems


def template_label_promql(raw: Raw) -> Problems:
    problems = []
    for variable in variables(raw):
        if variable.get("type") != "query":
            continue
        text = variable.get("query")
        text = text.get("query") if isinstance(text, dict) else text
        try:
            function, body, label = variable_query(str(text))
            if function == "label_values":
                if label is None or not LABEL_NAME.match(label):
                    raise ValueError(f"bad label {label!r}")
                if body:
                    node = parse(body, _names(raw))
                    if not isinstance(node, pp.VectorSelector):
                        raise ValueError("label_values needs a series selector")
            elif function == "query_result":
                parse(body, _names(raw))
        except ValueError as error:
            problems.append(f"variable {variable.get('name')}: {text!r}: {error}")
    return problems


def template_refresh(raw: Raw) -> Problems:
    """template-on-time-change-reload-rule: query variables refresh when the time range changes (2)."""
    return [f"variable {v.get('name')}: refresh {v.get('refresh')!r}, want 2" for v in variables(raw)
            if v.get("type") == "query" and v.get("refresh") != 2]


def template_unused(raw: Raw) -> Problems:
    texts = [q.expr for q in queries(raw)] + [str(v.get("query")) for v in variables(raw)]
    problems = []
    for variable in variables(raw):
        name = variable.get("name")
        if variable.get("type") == "datasource":
            continue
        pattern = re.compile(rf"\$\{{{name}(:\w+)?\}}|\${name}\b|\[\[{name}\]\]")
        if not any(pattern.search(text) for text in texts):
            problems.append(f"variable {name} is not used")
    return problems


def panel_title_description(raw: Raw) -> Problems:
    return [f"panel {p.get('id')} {p.get('title')!r}: title or description missing" for p in panels(raw)
            if not p.get("title") or not p.get("description")]


def panel_units(raw: Raw) -> Problems:
    problems = []
    for panel in panels(raw):
        config = panel.get("fieldConfig") or {}
        units = [("defaults", (config.get("defaults") or {}).get("unit"))]
        for override in config.get("overrides") or []:
            units += [(f"override {override.get('matcher')}", p.get("value"))
                      for p in override.get("properties") or [] if p.get("id") == "unit"]
        for where, unit in units:
            if not isinstance(unit, str) or not (unit in VALID_UNITS or CUSTOM_UNIT.match(unit)):
                problems.append(f"panel {panel.get('title')!r} {where}: unit {unit!r}")
    return problems


def panel_no_targets(raw: Raw) -> Problems:
    return [f"panel {p.get('title')!r} has no targets" for p in panels(raw) if not p.get("targets")]


def target_promql(raw: Raw) -> Problems:
    problems = []
    for q in queries(raw):
        try:
            parse(q.expr, _names(raw))
        except ValueError as error:
            problems.append(f"{q.where}: {q.expr!r} does not parse: {error}")
    return problems


def _parsed(raw: Raw) -> Iterator[tuple[Query, pp.Expr]]:
    for q in queries(raw):
        try:
            yield q, parse(q.expr, _names(raw))
        except ValueError:
            continue  # target_promql reports it


def target_rate_interval(raw: Raw) -> Problems:
    problems = []
    for q, node in _parsed(raw):
        for found, parents in walk(node):
            if not isinstance(found, pp.MatrixSelector) or not parents:
                continue
            function = _call_name(parents[-1])
            allowed = {"rate": {RATE_INTERVAL}, "irate": {RATE_INTERVAL},
                       "increase": {RATE_INTERVAL, RANGE}}.get(function or "")
            if allowed is not None and found.range not in allowed:
                problems.append(f"{q.where}: {function}() over {found.range}, want $__rate_interval")
    return problems


def counter_kind(metric: str, known: dict[str, str]) -> bool:
    return known.get(metric) in ("counter", "histogram") or metric.endswith("_total")


def target_counter_agg(raw: Raw, known: dict[str, str] | None = None) -> Problems:
    """Counters (and histogram parts) only through rate/irate/increase over a range: a counter read as a
    gauge is a lifetime total, and ``x_sum / x_count`` without rate a lifetime average."""
    known = known_series() if known is None else known
    problems = []
    for q, node in _parsed(raw):
        for selector, parents in selectors(node):
            metric = selector.name or ""
            if not counter_kind(metric, known):
                continue
            ok = (len(parents) >= 2 and isinstance(parents[-1], pp.MatrixSelector)
                  and _call_name(parents[-2]) in ("rate", "irate", "increase"))
            # ``x unless x offset w``: which series are new in the window, their values not read as rates.
            ok |= any(isinstance(p, pp.BinaryExpr) and str(p.op) == "unless" for p in parents)
            if not ok:
                problems.append(f"{q.where}: counter {metric} read without rate/irate/increase")
    return problems


def target_histogram(raw: Raw) -> Problems:
    problems = []
    for q, node in _parsed(raw):
        for selector, parents in selectors(node):
            if not (selector.name or "").endswith("_bucket"):
                continue
            quantile = any(_call_name(p) == "histogram_quantile" for p in parents)
            on_le = any(isinstance(p, pp.BinaryExpr) and p.modifier is not None and p.modifier.matching is not None
                        and "le" in p.modifier.matching.labels for p in parents)
            if not (quantile or on_le):
                problems.append(f"{q.where}: {selector.name} neither in histogram_quantile nor joined on le")
    return problems


def series_exist(raw: Raw, known: dict[str, str] | None = None) -> Problems:
    known = known_series() if known is None else known
    problems = []
    for q, node in _parsed(raw):
        for selector, _ in selectors(node):
            if selector.name not in known:
                problems.append(f"{q.where}: {selector.name} is exported by neither the pods nor the operator")
    return problems


def required_matchers(raw: Raw) -> Problems:
    one = any(v.get("name") == "deployment" for v in variables(raw))
    ns_op = "=" if one else "=~"
    problems = []
    for q, node in _parsed(raw):
        for selector, _ in selectors(node):
            metric, found = selector.name or "", matchers(selector)
            if metric.startswith(POD_PREFIX) and found.get(TRTLLM_MATCHER[0]) != ("=", TRTLLM_MATCHER[1]):
                problems.append(f"{q.where}: {metric} without model=\"tensorrt_llm\" (counts a request per model)")
            if is_per_deployment(metric):
                want = {"namespace": (ns_op, placeholder("namespace"))}
                if one:
                    key = "tokenworks_dev_model_deployment" if metric.startswith(POD_PREFIX) else "name"
                    want[key] = ("=", placeholder("deployment"))
                for label, matcher in want.items():
                    if found.get(label) != matcher:
                        problems.append(f"{q.where}: {metric} has {label} {found.get(label)}, want {matcher}")
            elif metric.startswith("tokenworks_") and "namespace" in found:
                problems.append(f"{q.where}: {metric} is process-level: its namespace is the operator pod's")
    return problems


def engine_only_described(raw: Raw) -> Problems:
    """A panel reading a family only the tensorrt-engine backend exports says what llmapi shows."""
    problems = []
    for q, node in _parsed(raw):
        engine = [s.name for s, _ in selectors(node) if is_engine_only(s.name or "")]
        if engine and q.panel is not None and "llmapi" not in q.panel.get("description", ""):
            problems.append(f"{q.where}: reads {engine[0]} (tensorrt-engine only), description silent on llmapi")
    return problems


def legends(raw: Raw) -> Problems:
    """Every label a legend prints survives the query's aggregation (by (...) of the outermost aggregate)."""
    problems = []
    for q, node in _parsed(raw):
        printed = legend_labels(q.legend)
        inner = node.expr if isinstance(node, pp.ParenExpr) else node
        if isinstance(inner, pp.AggregateExpr) and inner.modifier is not None and \
                inner.modifier.type == pp.AggModifierType.By:
            missing = printed - set(inner.modifier.labels)
            if missing:
                problems.append(f"{q.where}: legend prints {sorted(missing)}, aggregated away")
    return problems


def uneditable(raw: Raw) -> Problems:
    return [] if raw.get("editable") is False else ["editable, want editable: false"]


RULES = {
    "template-datasource-rule": template_datasource,
    "panel-datasource-rule": datasources,
    "template-job-instance (replaced)": template_variables,
    "template-label-promql-rule": template_label_promql,
    "template-on-time-change-reload-rule": template_refresh,
    "template-unused-rule": template_unused,
    "panel-title-description-rule": panel_title_description,
    "panel-units-rule": panel_units,
    "panel-no-targets-rule": panel_no_targets,
    "target-promql-rule": target_promql,
    "target-rate-interval-rule": target_rate_interval,
    "target-counter-agg-rule": target_counter_agg,
    "target-histogram-rule": target_histogram,
    "target-job-instance (replaced)": required_matchers,
    "series-exist": series_exist,
    "engine-only-described": engine_only_described,
    "legend-labels": legends,
    "uneditable-dashboard-rule": uneditable,
}


def lint(raw: Raw) -> list[str]:
    return [f"{rule}: {problem}" for rule, check in RULES.items() for problem in check(raw)]


def main() -> int:
    problems = [f"{name}: {p}" for name in NAMES for p in lint(load_raw(name))]
    print("\n".join(problems) or "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
