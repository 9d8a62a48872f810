"""What Grafana does to a Prometheus query before sending it, so that the dashboards' queries can be run
(by tests, or by a process that draws them) exactly as Grafana would run them.

- ``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 x scrape interval), ``$__interval`` being the
  query step, printed as Go prints a duration (``1m15s``); ``$__interval`` itself in its largest whole unit
  (``1m``);
- ``$__range`` = the dashboard range in whole seconds with an ``s`` (``3600s``), ``$__range_s`` without it,
  ``$__range_ms`` in milliseconds.

Sources: grafana/grafana:pkg/promlib/models/query.go@00aaabde125fbad1f9fc6028549f2aa3559751fe
(``calculateRateInterval``, ``interpolateVariables``) and
https://grafana.com/blog/2020/09/28/new-in-grafana-7.2-__rate_interval-for-prometheus-rate-queries-that-just-work/

And what the data source does with the dashboard's own variables:
- a template variable is replaced by its value; several values, or "All" without an ``allValue``, become a
  regex alternation of the escaped values; names that are no variable (``$1`` in ``label_replace``) stay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|{}\[\]/]")


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it, at millisecond precision: ``4s``, ``1m0s``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_interval(seconds: float) -> str:
    """A duration in its largest whole unit, as Grafana's ``gtime.FormatInterval`` prints ``$__interval``."""
    ms = round(seconds * 1000)
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{max(ms, 1)}ms"


def rate_interval(step_seconds: float, scrape_interval_seconds: float) -> float:
    return max(step_seconds + scrape_interval_seconds, 4 * scrape_interval_seconds)


def variable_value(values: str | Sequence[str]) -> str:
    """One value as is; several as Grafana's Prometheus data source formats them for a regex matcher."""
    if isinstance(values, str):
        return values
    if len(values) == 1:
        return values[0]
    return "(" + "|".join(_REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), v) for v in values) + ")"


def builtins(range_seconds: float, step_seconds: float, scrape_interval_seconds: float) -> dict[str, str]:
    whole = round(range_seconds)
    return {
        "__rate_interval": go_duration(rate_interval(step_seconds, scrape_interval_seconds)),
        "__interval": format_interval(step_seconds),
        "__interval_ms": str(round(step_seconds * 1000)),
        "__range": f"{whole}s",
        "__range_s": str(whole),
        "__range_ms": str(round(range_seconds * 1000)),
    }


def interpolate(expr: str, variables: Mapping[str, str | Sequence[str]], *, range_seconds: float,
                step_seconds: float, scrape_interval_seconds: float) -> str:
    """``expr`` with Grafana's built-in and the dashboard's variables substituted."""
    values = {**{k: variable_value(v) for k, v in variables.items()},
              **builtins(range_seconds, step_seconds, scrape_interval_seconds)}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


def referenced(expr: str) -> set[str]:
    """Names of the variables ``expr`` uses (built-ins included)."""
    return {m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(expr)}


_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend_labels(legend_format: str) -> set[str]:
    """The labels a legend format (``{{namespace}}/{{name}}``) prints."""
    return set(_LEGEND.findall(legend_format))


_VARIABLE_QUERY = re.compile(r"^\s*(label_values|label_names|metrics|query_result)\((.*)\)\s*$", re.S)


def variable_query(query: str) -> tuple[str, str, str | None]:
    """A Prometheus query variable's query as (function, PromQL or metric selector, label): ``label_values(
    up{job="x"}, instance)`` is ("label_values", 'up{job="x"}', "instance"). ValueError for anything else."""
    match = _VARIABLE_QUERY.match(query)
    if not match:
        raise ValueError(f"not a Prometheus variable query: {query!r}")
    function, body = match.group(1), match.group(2).strip()
    if function == "label_values":
        selector, _, label = body.rpartition(",")
        if not selector:  # label_values(label): every series
            return function, "", body
        return function, selector.strip(), label.strip()
    return function, body, None
