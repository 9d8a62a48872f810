"""Generate the Grafana dashboards with grafana-foundation-sdk: ``python -m dashboards.build`` writes
``dashboards/json/*.json``; ``--check`` exits 1 when the committed JSON differs from what this builds.

Every query reads raw series (docs/monitoring.md lists them): the pods' Triton families, always on the model
``tensorrt_llm`` (the ensemble, BLS and pre/postprocessing models see each request too, up to four times),
and the operator's ``tokenworks_*`` series. Pods' series name the ModelDeployment in
``tokenworks_dev_model_deployment``, the operator's in ``name``; where the two meet, ``label_replace`` copies
the first into ``name``. Panels that a recording rule could serve later say so in a comment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from controllers.metrics.prometheus import DEFAULT_DEPLOYMENT_LABEL
from inference_pods.repository import TRTLLM_MODEL

JSON_DIR = Path(__file__).parent / "json"
RULES_DIR = Path(__file__).parent / "rules"
CHART_FILES = Path(__file__).resolve().parents[1] / "charts" / "tokenworks" / "files"
DS = gm.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
POD_LABEL = DEFAULT_DEPLOYMENT_LABEL
TAGS = ["tokenworks"]
DEFAULT_GPU_PRICE = "2.50"  # $ per GPU-hour: an on-demand H100 order of magnitude; set yours in the variable
# The GPU-hours integrate at Grafana's own step: a fixed step (1m) left a range of a minute or two with one
# step, before the series existed, and the panel empty (docs/monitoring.md, GPU-hours and cost).
GPU_HOURS_STEP = "$__interval"
# How many steps the subquery took: dividing by it makes the integral the mean over the range (a missing
# series counts 0) times the range, whatever step Grafana picked and however it printed it.
_STEPS = f"scalar(count_over_time(vector(1)[$__range:{GPU_HOURS_STEP}]))"
TOKENS = "suffix:tok/s"  # Grafana custom unit ("suffix:<unit>"): no built-in unit counts tokens
GPU_HOURS = "suffix:GPU-h"
ENGINE_ONLY = ("Only the tensorrt-engine backend exports this family; on the llmapi backend (Triton core "
               "families only) the query returns nothing.")

Builder = cogbuilder.Builder[gm.Panel]
Row = tuple[str, Sequence[Builder]]


@dataclass(frozen=True)
class Scope:
    """How a dashboard selects ModelDeployments: matchers for the pods' series and for the operator's."""

    pods: str
    md: str


FLEET = Scope(pods=f'model="{TRTLLM_MODEL}", namespace=~"$namespace"', md='namespace=~"$namespace"')
ONE = Scope(pods=f'model="{TRTLLM_MODEL}", namespace="$namespace", {POD_LABEL}="$deployment"',
            md='namespace="$namespace", name="$deployment"')


# -- PromQL ---------------------------------------------------------------------------------------------
def eq(label: str, value: str, op: str = "=") -> str:
    return f'{label}{op}"{value}"'


def sel(family: str, matchers: str, *extra: str) -> str:
    return f"{family}{{{', '.join([matchers, *extra])}}}"


def rate(family: str, matchers: str, *extra: str, window: str = "$__rate_interval", fn: str = "rate") -> str:
    return f"{fn}({sel(family, matchers, *extra)}[{window}])"


def by_md(expr: str) -> str:
    """Pods' series keyed like the operator's: the ModelDeployment's name copied into ``name``."""
    return f'label_replace({expr}, "name", "$1", "{POD_LABEL}", "(.+)")'


def within_ttft(scope: Scope, window: str = "$__rate_interval", fn: str = "rate") -> str:
    """Share of first responses within the TTFT target, per (namespace, name): the bucket the operator names
    in ``tokenworks_modeldeployment_ttft_slo_bucket_info`` over the count (docs/monitoring.md)."""
    # Prometheus 3 stores a classic histogram's le as a float ("2000.0"), not as exposed ("2000", which the
    # operator's info series keeps): strip the ".0" so that the join holds on 2.x and 3.x alike.
    buckets = by_md(rate("nv_inference_first_response_histogram_ms_bucket", scope.pods, window=window, fn=fn))
    buckets = f'label_replace({buckets}, "le", "$1", "le", "(.+)\\\\.0")'
    counts = by_md(rate("nv_inference_first_response_histogram_ms_count", scope.pods, window=window, fn=fn))
    target = sel("tokenworks_modeldeployment_ttft_slo_bucket_info", scope.md)
    return (f"sum by (namespace, name) ({buckets} * on (namespace, name, le) group_left () {target})"
            f" / sum by (namespace, name) ({counts})")


def attainment_margin(scope: Scope, window: str = "$__rate_interval", fn: str = "rate") -> str:
    return (f"({within_ttft(scope, window, fn)}) - on (namespace, name) "
            f"{sel('tokenworks_modeldeployment_slo_attainment_target', scope.md)}")


def output_tokens_by_md(scope: Scope) -> str:
    """Output tokens/s per ModelDeployment: measured from the token-length histogram where the backend exports
    it (tensorrt-engine), else the autoscaler's figure (on llmapi modelled from the decoding concurrency,
    docs/autoscaling.md); NaN readings are dropped by ``>= 0``."""
    measured = f"sum by (namespace, name) ({by_md(rate('nv_llm_output_token_len_sum', scope.pods))})"
    reading = sel("tokenworks_autoscaler_signal", scope.md, eq("signal", "outputTokensPerSecond"))
    modelled = f"sum by (namespace, name) ({reading}) >= 0"
    return f"{measured} or on (namespace, name) ({modelled})"


def decisions(matchers: str, by: str, *extra: str) -> str:
    """Decisions per $__rate_interval by ``by``. The autoscaler creates a (rule, direction) series at its first
    decision, already at 1, and increase() cannot see an increment before a series' first sample: so a series
    that is new in the window counts too (``x unless x offset w``), or a rule's first use, and most scale
    events, would show nothing. The new-series test groups away the operator pod, so a new leader's series
    are not new."""
    series = sel("tokenworks_autoscaler_decisions_total", matchers, *extra)
    keys = "namespace, name, rule, direction"
    return (f"sum by ({by}) (increase({series}[$__rate_interval]) > 0 or on ({keys}) (sum by ({keys}) ({series}) "
            f"unless sum by ({keys}) ({series} offset $__rate_interval)))")


def gpus(scope: Scope, state: str = "requested", by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({sel('tokenworks_modeldeployment_gpus', scope.md, eq('state', state))})"


def gpu_hours(scope: Scope, by: str = "") -> str:
    """GPU-hours over the dashboard range: the GPUs held at every step of the range, summed, over the number
    of steps (the mean, a missing series counting 0), times the range in hours. A deployment that existed
    for part of the range counts for that part only (``avg_over_time`` of its series times the range would
    count it for all of it)."""
    if by:
        series = sel("tokenworks_modeldeployment_gpus", scope.md, 'state="requested"')
        return f"sum by ({by}) (sum_over_time({series}[$__range:{GPU_HOURS_STEP}])) / {_STEPS} * $__range_s / 3600"
    return f"sum_over_time({gpus(scope)}[$__range:{GPU_HOURS_STEP}]) / {_STEPS} * $__range_s / 3600"


def ttft_quantile(quantile: str) -> str:
    buckets = rate("nv_inference_first_response_histogram_ms_bucket", ONE.pods)
    return f"histogram_quantile({quantile}, sum by (le) ({buckets})) / 1e3"


def target_seconds(objective: str) -> str:
    return (f"max by (percentile) "
            f"({sel('tokenworks_modeldeployment_slo_target_seconds', ONE.md, eq('objective', objective))})")


def signal(name: str, scope: Scope = ONE) -> str:
    return f"max ({sel('tokenworks_autoscaler_signal', scope.md, eq('signal', name))}) >= 0"


def quantiles(family: str, matchers: str = "") -> list[tuple[str, str, str]]:
    """p50, p99 and the mean of a Prometheus histogram, as (expr, legend, refId)."""
    def bucket_rate(suffix: str) -> str:
        selector = f"{family}_{suffix}{{{matchers}}}" if matchers else f"{family}_{suffix}"
        return f"rate({selector}[$__rate_interval])"

    out = [(f"histogram_quantile({q}, sum by (le) ({bucket_rate('bucket')}))", f"p{round(q * 100)}",
            f"p{round(q * 100)}") for q in (0.5, 0.99)]
    out.append((f"sum({bucket_rate('sum')}) / sum({bucket_rate('count')})", "mean", "mean"))
    return out


# -- panels ---------------------------------------------------------------------------------------------
def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
          as_table: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DS)
    q = q.instant() if instant else q.range()
    return q.format(PromQueryFormat.TABLE) if as_table else q


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    return gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE).steps(
        [gm.Threshold(value=value, color=color) for value, color in steps])


NEUTRAL = thresholds((None, "green"))
# At exactly the SLO: a ratio to the target over 1, a margin to the attainment target under 0.
OVER_ONE = thresholds((None, "green"), (1.0, "red"))
UNDER_ZERO = thresholds((None, "red"), (0.0, "green"))

TARGET_LINE = [gm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
               gm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"}),
               gm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]


def ts(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery], *, width: int = 12,
       height: int = 8, target_refs: Sequence[str] = (), minimum: float | None = 0, maximum: float | None = None,
       stacked: bool = False, steps: gd.ThresholdsConfig | None = None) -> timeseries.Panel:
    """A time series panel; ``steps`` draws thresholds as dashed lines, ``target_refs`` names the queries drawn
    as dashed red targets."""
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DS)
             .span(width).height(height).thresholds(steps or NEUTRAL).fill_opacity(10).line_width(1)
             .legend(common_legend()).tooltip(common_tooltip()))
    if steps is not None:
        panel = panel.thresholds_style(GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if stacked:
        panel = panel.stacking(stacking_normal())
    for target in targets:
        panel = panel.with_target(target)
    for ref in target_refs:  # SLO targets as dashed red series
        panel = panel.override_by_query(ref, TARGET_LINE)
    return panel


def common_legend() -> VizLegendOptions:
    return (VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))


def common_tooltip() -> VizTooltipOptions:
    return VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def stacking_normal() -> StackingConfig:
    return StackingConfig().mode(common.StackingMode.NORMAL)


def single(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery], *,
           steps: gd.ThresholdsConfig = NEUTRAL, width: int = 4, height: int = 4,
           calc: str = "lastNotNull") -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DS).span(width)
             .height(height).thresholds(steps).color_mode(common.BigValueColorMode.VALUE)
             .graph_mode(common.BigValueGraphMode.AREA)
             .reduce_options(ReduceDataOptions().calcs([calc]).values(False)))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def timeline(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery], *,
             mappings: dict[str, tuple[str, str]] | None = None, steps: gd.ThresholdsConfig = NEUTRAL,
             width: int = 12, height: int = 8) -> statetimeline.Panel:
    panel = (statetimeline.Panel().title(title).description(description).unit(unit).datasource(DS)
             .span(width).height(height).thresholds(steps).show_value(common.VisibilityMode.NEVER)
             .merge_values(True).fill_opacity(80))
    if mappings:
        panel = panel.mappings([gm.ValueMap(options={
            value: gm.ValueMappingResult(text=text, color=color, index=i)
            for i, (value, (text, color)) in enumerate(mappings.items())})])
    for target in targets:
        panel = panel.with_target(target)
    return panel


def grid(title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery], *,
         rename: dict[str, str], units: dict[str, str] | None = None, link: bool = False,
         width: int = 12, height: int = 8, sort_by: str | None = None,
         steps: gd.ThresholdsConfig = NEUTRAL, coloured: Sequence[str] = ()) -> table.Panel:
    """A table of instant queries merged on their labels; ``rename`` names the columns to keep, ``coloured``
    the columns whose text takes the thresholds' colour."""
    panel = (table.Panel().title(title).description(description).unit(unit).datasource(DS).span(width)
             .height(height).thresholds(steps))
    for target in targets:
        panel = panel.with_target(target)
    panel = panel.with_transformation(gm.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(gm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": {"Time": True}, "renameByName": rename,
        "indexByName": {name: i for i, name in enumerate(rename)}}))
    for column, column_unit in (units or {}).items():
        panel = panel.override_by_name(column, [gm.DynamicConfigValue(id_val="unit", value=column_unit)])
    if link:
        url = ("/d/tokenworks-deployment/tokenworks-deployment?var-namespace=${__data.fields.namespace}"
               "&var-deployment=${__data.fields.name}&${__url_time_range}")
        panel = panel.override_by_name("name", [gm.DynamicConfigValue(id_val="links", value=[
            {"title": "Open the deployment's dashboard", "url": url}])])
    for column in coloured:
        panel = panel.override_by_name(column, [gm.DynamicConfigValue(id_val="custom.cellOptions",
                                                                      value={"type": "color-text"})])
    if sort_by:
        panel = panel.sort_by([TableSortByFieldState().display_name(sort_by).desc(False)])
    return panel


# -- variables ------------------------------------------------------------------------------------------
def datasource_variable() -> gd.DatasourceVariable:
    return gd.DatasourceVariable("DS_PROMETHEUS").label("Data source").type("prometheus")


def query_variable(name: str, label: str, query_text: str, *, multi: bool = False,
                   hide: gm.VariableHide = gm.VariableHide.DONT_HIDE) -> gd.QueryVariable:
    variable = (gd.QueryVariable(name).label(label).query(query_text).datasource(DS)
                .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(gm.VariableSort.ALPHABETICAL_ASC)
                .hide(hide).multi(multi).include_all(multi))
    if multi:
        variable = variable.all_value(".+").current(gm.VariableOption(selected=True, text="All", value="$__all"))
    return variable


NAMESPACES = "label_values(tokenworks_modeldeployment_info, namespace)"


def gpu_price_variable() -> gd.TextBoxVariable:
    return (gd.TextBoxVariable("gpu_price").label("GPU price ($ per GPU-hour)").default_value(DEFAULT_GPU_PRICE)
            .description("What one GPU costs per hour; the cost panels multiply GPU-hours by it."))


# -- dashboards -----------------------------------------------------------------------------------------
def fleet() -> tuple[gd.Dashboard, list[Row]]:
    f = FLEET
    # Recording-rule candidates: output_tokens_by_md and within_ttft at a fixed window.
    now = [
        single("Output tokens/s", "Output tokens per second of every selected deployment: measured from "
               "nv_llm_output_token_len on the tensorrt-engine backend, the autoscaler's figure on llmapi "
               "(Triton core families only: no token counts; modelled, and only for autoscaled deployments).",
               TOKENS, [query(f"sum({output_tokens_by_md(f)})", "tokens/s")]),
        single("GPUs in use", "GPUs requested by the pods of the selected deployments "
               "(tokenworks_modeldeployment_gpus, state requested).", "short",
               [query(gpus(f), "GPUs")]),
        single("GPU capacity in use", "GPUs the selected deployments request over the cluster's allocatable "
               "GPUs (every product). Orange from 80 %, red from 95 %: new replicas may stay Pending.",
               "percentunit", [query(f"{gpus(f)} / sum(tokenworks_gpu_allocatable)", "in use")],
               steps=thresholds((None, "green"), (0.8, "orange"), (0.95, "red"))),
        single("GPU-hours (range)", "GPU-hours held over the dashboard's time range: the GPUs requested, "
               "sampled at every step of the range, their mean times the range in hours.", GPU_HOURS,
               [query(gpu_hours(f), "GPU-hours", instant=True)]),
        single("GPU cost (range)", "GPU-hours over the range times the GPU price variable ($ per GPU-hour).",
               "currencyUSD", [query(f"({gpu_hours(f)}) * $gpu_price", "cost", instant=True)]),
        single("Latency infeasible", "Deployments whose latency SLO no replica count meets "
               "(tokenworks_autoscaler_latency_infeasible): scaling cannot help, throughput decides.",
               "short", [query(f"sum({sel('tokenworks_autoscaler_latency_infeasible', f.md)})", "deployments")],
               steps=thresholds((None, "green"), (1.0, "red"))),
    ]
    usage = [
        ts("Tokens/s produced, by deployment", "Output tokens per second per deployment: measured on the "
           "tensorrt-engine backend (nv_llm_output_token_len), the autoscaler's modelled figure on llmapi, "
           "which exports no token counts (only for autoscaled deployments).", TOKENS,
           [query(output_tokens_by_md(f), "{{namespace}}/{{name}}")], stacked=True),
        ts("GPUs in use of capacity, by product", "GPUs requested and held by ready pods of the selected "
           "deployments, against the allocatable GPUs of Ready, schedulable nodes (cluster-wide), per GPU "
           "product.", "short",
           [query(gpus(f, "requested", "gpu_product"), "{{gpu_product}} requested", "requested"),
            query(gpus(f, "ready", "gpu_product"), "{{gpu_product}} ready", "ready"),
            query("sum by (gpu_product) (tokenworks_gpu_allocatable)", "{{gpu_product}} allocatable",
                  "allocatable")], target_refs=["allocatable"]),
    ]
    cost = [
        grid("GPU-hours and cost by deployment (range)", "GPU-hours each deployment held over the dashboard "
             "range and their cost at the GPU price variable; click a name for its dashboard.", GPU_HOURS,
             [query(gpu_hours(f, "namespace, name"), ref="hours", instant=True, as_table=True),
              query(f"({gpu_hours(f, 'namespace, name')}) * $gpu_price", ref="cost", instant=True,
                    as_table=True)],
             rename={"namespace": "namespace", "name": "name", "Value #hours": "GPU-hours",
                     "Value #cost": "cost"}, units={"cost": "currencyUSD"}, link=True),
        ts("GPU spend rate", "What the GPUs held cost per hour at the GPU price variable "
           "(GPUs requested x $ per GPU-hour), per GPU product.", "currencyUSD",
           [query(f"{gpus(f, 'requested', 'gpu_product')} * $gpu_price", "{{gpu_product}}")], stacked=True),
    ]
    slo = [
        ts("SLO attainment (TTFT), by deployment", "Share of requests whose first token came within the TTFT "
           "target (the first-response bucket at the target, tokenworks_modeldeployment_ttft_slo_bucket_info), "
           "against each deployment's attainment target (dashed). Triton exports no per-request inter-token "
           "latency, so the ITL half of the SLO is on the deployment dashboard as a mean.", "percentunit",
           [query(within_ttft(f), "{{namespace}}/{{name}}", "share"),
            query(sel("tokenworks_modeldeployment_slo_attainment_target", f.md), "{{namespace}}/{{name}} target",
                  "target")], target_refs=["target"], minimum=None, maximum=1),
        grid("Worst offenders (range)", "The ten deployments furthest below their TTFT attainment target over "
             "the dashboard range: margin = share within the TTFT target - attainment target (red below 0). "
             "Click a name for its dashboard.", "percentunit",
             [query(f"sort(bottomk(10, {attainment_margin(f, '$__range', 'increase')}))", ref="margin",
                    instant=True, as_table=True),
              query(within_ttft(f, "$__range", "increase"), ref="share", instant=True, as_table=True)],
             rename={"namespace": "namespace", "name": "name", "Value #margin": "margin to target",
                     "Value #share": "within TTFT target"}, link=True, sort_by="margin to target",
             steps=UNDER_ZERO, coloured=["margin to target"]),
    ]
    board = (gd.Dashboard("Tokenworks / Fleet").uid("tokenworks-fleet").tags(TAGS).readonly()
             .description("Tokens produced, GPUs in use and what they cost, SLO attainment across ModelDeployments.")
             .time("now-24h", "now").refresh("1m").timezone("browser")
             .tooltip(gm.DashboardCursorSync.CROSSHAIR)
             .with_variable(datasource_variable())
             .with_variable(query_variable("namespace", "Namespace", NAMESPACES, multi=True))
             .with_variable(gpu_price_variable()))
    return board, [("Now", now), ("Throughput and GPUs", usage), ("Cost", cost), ("SLO", slo)]


def deployment() -> tuple[gd.Dashboard, list[Row]]:
    o = ONE
    slo_target = sel("tokenworks_modeldeployment_slo_target_seconds", o.md, 'objective="ttft"')
    states = sel("tokenworks_modeldeployment_replicas", o.md, eq("state", "desired|ready|loading|pending", "=~"))

    def kv(block_type: str) -> str:
        return sel("nv_trt_llm_kv_cache_block_metrics", o.pods, eq("kv_cache_block_type", block_type))

    now = [
        single("TTFT over target", "TTFT at the SLO's percentile over the TTFT target: under 100 % meets it "
               "(red from 100 %).", "percentunit",
               [query(f"{ttft_quantile('$percentile')} / max({slo_target})", "p$percentile / target")],
               steps=OVER_ONE),
        single("ITL over target", "The mean inter-token latency the autoscaler reads (measured on "
               "tensorrt-engine, modelled on llmapi) over the ITL target; red from 100 %. Only for autoscaled "
               "deployments.", "percentunit",
               [query(f"({signal('interTokenLatencySeconds')}) / max("
                      f"{sel('tokenworks_modeldeployment_slo_target_seconds', o.md, eq('objective', 'itl'))})",
                      "ITL / target")], steps=OVER_ONE),
        single("TTFT attainment margin", "Share of requests within the TTFT target minus the attainment "
               "target: at or above 0 the SLO holds (red below 0).", "percentunit",
               [query(attainment_margin(o), "margin")], steps=UNDER_ZERO),
        single("Replicas ready / desired", "Ready replicas and the operator's target "
               "(tokenworks_modeldeployment_replicas).", "short",
               [query(f"sum({sel('tokenworks_modeldeployment_replicas', o.md, eq('state', 'ready'))})", "ready",
                      "ready"),
                query(f"sum({sel('tokenworks_modeldeployment_replicas', o.md, eq('state', 'desired'))})",
                      "desired", "desired")]),
        single("GPUs held", "GPUs requested by the deployment's pods.", "short", [query(gpus(o), "GPUs")]),
        single("Latency infeasible (range)", "Share of the dashboard range during which the autoscaler found "
               "the latency SLO unreachable at any replica count.", "percentunit",
               [query(f"max(avg_over_time({sel('tokenworks_autoscaler_latency_infeasible', o.md)}[$__range]))",
                      "infeasible", instant=True)], steps=thresholds((None, "green"), (0.0001, "orange"))),
    ]
    latency = [
        ts("TTFT percentiles against the SLO target", "Time to first token from "
           "nv_inference_first_response_histogram_ms (buckets set around the target, so the percentile at the "
           "target is exact), at the median, the SLO's percentile and p99, against the TTFT target (dashed).",
           "s", [query(ttft_quantile("0.5"), "p50", "p50"),
                 query(ttft_quantile("$percentile"), "SLO percentile", "slo"),
                 query(ttft_quantile("0.99"), "p99", "p99"),
                 query(target_seconds("ttft"), "target (p{{percentile}})", "target")], target_refs=["target"]),
        ts("ITL against the SLO target", "Inter-token latency, a mean: Triton exports no per-token latency "
           "histogram, so ITL percentiles are not observable. Measured = time after the first token over "
           "tokens after the first (tensorrt-engine only: on llmapi the token counts do not exist); the "
           "autoscaler's reading (tokenworks_autoscaler_signal) is modelled on llmapi. Target dashed.", "s",
           [query(f"(sum({rate('nv_inference_request_duration_us', o.pods)}) / 1e6 - "
                  f"sum({rate('nv_inference_first_response_histogram_ms_sum', o.pods)}) / 1e3) / "
                  f"(sum({rate('nv_llm_output_token_len_sum', o.pods)}) - "
                  f"sum({rate('nv_inference_request_success', o.pods)}))", "measured mean", "measured"),
            query(signal("interTokenLatencySeconds"), "autoscaler's reading", "autoscaler"),
            query(target_seconds("itl"), "target (p{{percentile}})", "target")], target_refs=["target"]),
        ts("TTFT SLO attainment", "Share of requests whose first token came within the TTFT target, against "
           "the attainment target (dashed).", "percentunit",
           [query(within_ttft(o), "within target", "share"),
            query(f"max({sel('tokenworks_modeldeployment_slo_attainment_target', o.md)})", "attainment target",
                  "target")], target_refs=["target"], minimum=None, maximum=1, width=24),
    ]
    traffic = [
        ts("Output and input tokens/s", "Output tokens/s measured from nv_llm_output_token_len on "
           "tensorrt-engine, else the autoscaler's modelled figure (llmapi exports no token counts). Input "
           f"tokens/s: {ENGINE_ONLY}", TOKENS,
           [query(f"sum({rate('nv_llm_output_token_len_sum', o.pods)}) or {signal('outputTokensPerSecond')}",
                  "output", "output"),
            query(f"sum({rate('nv_llm_input_token_len_sum', o.pods)})", "input (prompt)", "input")]),
        ts("Requests/s", "Successful and failed requests per second (nv_inference_request_success, "
           "nv_inference_request_failure by reason).", "reqps",
           [query(f"sum({rate('nv_inference_request_success', o.pods)})", "success", "success"),
            query(f"sum by (reason) ({rate('nv_inference_request_failure', o.pods)})", "failed {{reason}}",
                  "failure")]),
        ts("Queue and in flight", "Requests in flight (request time per second, Little's law) and awaiting "
           "their first token (first-response time per second), both backends; the queue beyond what the TTFT "
           "target allows (the autoscaler's reading); the executor's active requests and batch limit "
           f"(nv_trt_llm_request_metrics). {ENGINE_ONLY.replace('this family', 'the executor gauges')}",
           "short",
           [query(f"sum({rate('nv_inference_request_duration_us', o.pods)}) / 1e6", "in flight", "inflight"),
            query(f"sum({rate('nv_inference_first_response_histogram_ms_sum', o.pods)}) / 1e3",
                  "awaiting first token", "awaiting"),
            query(signal("queue"), "queue beyond TTFT target", "queue"),
            query(f"sum({sel('nv_trt_llm_request_metrics', o.pods, eq('request_type', 'active'))})",
                  "executor active", "active"),
            query(f"sum({sel('nv_trt_llm_request_metrics', o.pods, eq('request_type', 'max'))})",
                  "executor max batch", "max")], target_refs=["max"]),
        ts("KV-cache utilisation", "Used over max KV-cache blocks, per deployment and per replica "
           f"(nv_trt_llm_kv_cache_block_metrics). {ENGINE_ONLY} Orange from 90 %: preemption near.",
           "percentunit",
           [query(f"sum({kv('used')}) / sum({kv('max')})", "deployment", "deployment"),
            query(f"max by (pod) ({kv('fraction')})", "{{pod}}", "pod")], maximum=1,
           steps=thresholds((None, "green"), (0.9, "orange"))),
    ]
    scaling = [
        ts("Replicas: desired, ready, loading, pending", "The operator's replica counts by state and the "
           "autoscaler's last decision; scale events are annotations.", "short",
           [query(f"sum by (state) ({states})", "{{state}}", "replicas"),
            query(f"max({sel('tokenworks_autoscaler_desired_replicas', o.md)})", "autoscaler's decision",
                  "decision")]),
        timeline("Decision rule over time", "Which rule of the autoscaler's policy decided, per "
                 "$__rate_interval (decisions in the window; docs/autoscaling.md explains each rule).", "short",
                 [query(decisions(o.md, "rule"), "{{rule}}")]),
        timeline("Latency infeasible", "1 while the autoscaler finds the latency SLO unreachable at any replica "
                 "count (tokenworks_autoscaler_latency_infeasible).", "none",
                 [query(f"max({sel('tokenworks_autoscaler_latency_infeasible', o.md)})", "infeasible")],
                 mappings={"0": ("feasible", "green"), "1": ("infeasible", "red")}, width=24, height=4),
    ]
    percentile = ("label_values(tokenworks_modeldeployment_slo_target_seconds{namespace=\"$namespace\", "
                  "name=\"$deployment\", objective=\"ttft\"}, percentile)")
    board = (gd.Dashboard("Tokenworks / Deployment").uid("tokenworks-deployment").tags(TAGS).readonly()
             .description("One ModelDeployment: latency against its SLO, traffic, KV cache, replicas and the "
                          "autoscaler's decisions.")
             .time("now-1h", "now").refresh("30s").timezone("browser")
             .tooltip(gm.DashboardCursorSync.CROSSHAIR)
             .with_variable(datasource_variable())
             .with_variable(query_variable("namespace", "Namespace", NAMESPACES))
             .with_variable(query_variable(
                 "deployment", "Deployment",
                 'label_values(tokenworks_modeldeployment_info{namespace="$namespace"}, name)'))
             .with_variable(query_variable("percentile", "SLO percentile", percentile,
                                           hide=gm.VariableHide.HIDE_VARIABLE)))
    return board, [("Now", now), ("Latency", latency), ("Traffic and engine", traffic),
                   ("Replicas and decisions", scaling)]


def operator() -> tuple[gd.Dashboard, list[Row]]:
    md = 'namespace=~"$namespace"'
    control = [
        timeline("Leader", "Which operator pod holds the lease (tokenworks_leader): only the leader "
                 "reconciles, autoscales and exports the per-ModelDeployment series.", "none",
                 [query("max by (pod) (tokenworks_leader)", "{{pod}}")],
                 mappings={"0": ("standby", "blue"), "1": ("leader", "green")}, width=8),
        ts("Reconciles by result", "Reconciles per second by result (success, error, conflict, skipped, "
           "not_leader).", "ops",
           [query("sum by (result) (rate(tokenworks_reconcile_total[$__rate_interval]))", "{{result}}")], width=8),
        single("Reconcile errors", "Share of reconciles that failed (result error) over $__rate_interval; "
               "red from 5 %. No error series yet counts as none.", "percentunit",
               [query('(sum(rate(tokenworks_reconcile_total{result="error"}[$__rate_interval])) or vector(0)) / '
                      "sum(rate(tokenworks_reconcile_total[$__rate_interval]))", "errors")],
               steps=thresholds((None, "green"), (0.05, "red")), width=8, height=8),
        ts("Reconcile duration", "Reconcile duration p50, p99 and mean (tokenworks_reconcile_duration_seconds).",
           "s", [query(e, legend, ref) for e, legend, ref in quantiles("tokenworks_reconcile_duration_seconds")],
           width=8),
        ts("Work queue depth", "Keys waiting to be reconciled, per operator pod (tokenworks_workqueue_depth).",
           "short", [query("max by (pod) (tokenworks_workqueue_depth)", "{{pod}}")], width=8),
        ts("API requests", "Kubernetes API requests by verb (reads, writes; watches excluded), server-side "
           "applies of children by kind and status writes, per second.", "reqps",
           [query("sum by (verb) (rate(tokenworks_api_requests_total[$__rate_interval]))", "{{verb}}", "verb"),
            query("sum by (kind) (rate(tokenworks_child_applies_total[$__rate_interval]))", "apply {{kind}}",
                  "applies"),
            query("sum(rate(tokenworks_status_writes_total[$__rate_interval]))", "status writes", "status")],
           width=8),
        ts("Watch relists", "Lists that (re)started a watch, by kind and cause: a steady rate means watches "
           "keep breaking.", "ops",
           [query("sum by (kind, cause) (rate(tokenworks_watch_relists_total[$__rate_interval]))",
                  "{{kind}} {{cause}}")], width=24, height=6),
    ]
    autoscaler = [
        ts("Decisions by rule and direction", "Autoscaler decisions per second by the rule that decided and "
           "their direction (up, down, hold).", "ops",
           [query(f"sum by (rule, direction) ({rate('tokenworks_autoscaler_decisions_total', md)})",
                  "{{rule}} {{direction}}")], stacked=True),
        timeline("Signal freshness", "Per deployment and signal, whether the autoscaler's last read was fresh "
                 "(tokenworks_autoscaler_signal_ok). On llmapi the token and KV signals are never read (not "
                 "exported); activation is read only where spec.autoscaling.activation sets a query.", "none",
                 [query(f"min by (namespace, name, signal) ({sel('tokenworks_autoscaler_signal_ok', md)})",
                        "{{namespace}}/{{name}} {{signal}}")],
                 mappings={"0": ("missing or stale", "red"), "1": ("fresh", "green")}, height=12),
        ts("Fresh share by signal", "Share of autoscaled deployments whose signal was read and fresh at the "
           "last tick, per signal.", "percentunit",
           [query(f"avg by (signal) ({sel('tokenworks_autoscaler_signal_ok', md)})", "{{signal}}")], maximum=1),
        ts("Loop duration", "One autoscaler tick (the metric queries, the lists and every decision): p50, p99, "
           "mean.", "s",
           [query(e, legend, ref) for e, legend, ref in quantiles("tokenworks_autoscaler_tick_duration_seconds")]),
        single("Since the last tick", "Seconds since the leader's autoscaler last finished a tick "
               "(tokenworks_autoscaler_last_tick_timestamp_seconds); orange from 30 s, red from 120 s.", "s",
               [query("time() - max(tokenworks_autoscaler_last_tick_timestamp_seconds)", "age")],
               steps=thresholds((None, "green"), (30.0, "orange"), (120.0, "red")), width=6, height=8),
        single("Deployments missing a signal", "Autoscaled deployments not every one of whose signals was read "
               "at the last tick (tokenworks_autoscaler_metrics_available 0).", "short",
               [query(f"sum(1 - {sel('tokenworks_autoscaler_metrics_available', md)})", "deployments")],
               width=6, height=8),
    ]
    board = (gd.Dashboard("Tokenworks / Operator").uid("tokenworks-operator").tags(TAGS).readonly()
             .description("The operator's control loop and the autoscaler's: leader, reconciles, API requests, "
                          "decisions and the freshness of what they read.")
             .time("now-1h", "now").refresh("30s").timezone("browser")
             .tooltip(gm.DashboardCursorSync.CROSSHAIR)
             .with_variable(datasource_variable())
             .with_variable(query_variable("namespace", "Namespace", NAMESPACES, multi=True)))
    return board, [("Operator", control), ("Autoscaler", autoscaler)]


def scale_events() -> dict[str, Any]:
    """Scale events as an annotation: each up or down decision (``decisions``). The SDK's annotation
    model has no ``step``/``titleFormat``/``tagKeys``, which Grafana's Prometheus annotations use, so this one
    is written as JSON."""
    return {
        "name": "Scale events", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "enable": True, "iconColor": "orange",
        "expr": decisions(ONE.md, "direction, rule", 'direction!="hold"'),
        "step": "30s", "titleFormat": "Scaled {{direction}}", "textFormat": "rule {{rule}}",
        "tagKeys": "direction,rule", "useValueForTime": False,
    }


BUILT_IN = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}
DASHBOARDS: dict[str, Callable[[], tuple[gd.Dashboard, list[Row]]]] = {
    "fleet": fleet, "deployment": deployment, "operator": operator}


def build(name: str) -> dict[str, Any]:
    board, rows = DASHBOARDS[name]()
    board = board.link(gd.DashboardLink("Tokenworks").type(gm.DashboardLinkType.DASHBOARDS).tags(TAGS)
                       .as_dropdown(True).include_vars(True).keep_time(True))
    for title, panels in rows:
        board = board.with_row(gd.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    raw: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(raw["panels"], start=1):  # stable ids: Grafana links and state use them
        panel["id"] = number
        panel.pop("repeatDirection", None)  # the SDK's default for panels that do not repeat
        if panel["type"] != "row":
            panel["datasource"] = dict(panel["datasource"])
    raw["annotations"] = {"list": [BUILT_IN, *([scale_events()] if name == "deployment" else [])]}
    return raw


def render(name: str) -> str:
    return json.dumps(build(name), indent=2, ensure_ascii=False) + "\n"


def chart_files() -> dict[Path, str]:
    """What the Helm chart ships (``charts/tokenworks/files/``): each dashboard's JSON for a ConfigMap, and
    each rule file for a PrometheusRule. Helm reads files only inside the chart, so these are copies of
    ``dashboards/json`` and ``dashboards/rules``; ``--check`` keeps them equal."""
    files = {CHART_FILES / "dashboards" / f"{name}.json": render(name) for name in DASHBOARDS}
    files |= {CHART_FILES / "rules" / path.name: path.read_text() for path in sorted(RULES_DIR.glob("*.yaml"))}
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON (or the chart's "
                        "copies of the dashboards and rules) is not current")
    args = parser.parse_args(argv)
    stale = []
    wanted = {JSON_DIR / f"{name}.json": render(name) for name in DASHBOARDS} | chart_files()
    for path, text in wanted.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python -m dashboards.build): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
