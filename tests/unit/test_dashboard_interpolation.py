"""Grafana's substitution of a Prometheus query's variables (dashboards.grafana), as Grafana's backend does it."""

from __future__ import annotations

import pytest

from dashboards.grafana import go_duration, interpolate, legend_labels, rate_interval, referenced, variable_query


@pytest.mark.parametrize(("seconds", "printed"), [
    (0.25, "250ms"), (4, "4s"), (75, "1m15s"), (60, "1m0s"), (3600, "1h0m0s"), (4.5, "4.5s")])
def test_durations_print_as_go_prints_them(seconds: float, printed: str) -> None:
    assert go_duration(seconds) == printed


def test_rate_interval_is_the_larger_of_step_plus_scrape_and_four_scrapes() -> None:
    assert rate_interval(60, 15) == 75  # a 1 h range at 1 m steps: step + scrape
    assert rate_interval(10, 15) == 60  # a short range: 4 x scrape, room for a missed scrape
    assert rate_interval(2, 1) == 4


def test_interpolate_substitutes_builtins_and_variables() -> None:
    expr = ('sum(rate(x{namespace=~"$namespace", name="${deployment}"}[$__rate_interval])) * $gpu_price '
            '+ sum_over_time(y[$__range:1m]) / $__range_s')
    out = interpolate(expr, {"namespace": ".+", "deployment": "llama", "gpu_price": "2.50"},
                      range_seconds=3600.4, step_seconds=60, scrape_interval_seconds=15)
    assert out == ('sum(rate(x{namespace=~".+", name="llama"}[1m15s])) * 2.50 '
                   '+ sum_over_time(y[3600s:1m]) / 3600')


def test_several_values_become_an_escaped_alternation() -> None:
    out = interpolate('x{namespace=~"$namespace"}', {"namespace": ["team.a", "team-b"]}, range_seconds=60,
                      step_seconds=1, scrape_interval_seconds=1)
    assert out == 'x{namespace=~"(team\\\\.a|team-b)"}'


def test_names_that_are_no_variable_stay() -> None:
    expr = 'label_replace(x, "name", "$1", "pod", "(.+)") * $unknown'
    assert interpolate(expr, {}, range_seconds=60, step_seconds=1, scrape_interval_seconds=1) == expr
    assert referenced(expr) == {"1", "unknown"}


def test_variable_queries_split_into_function_selector_and_label() -> None:
    assert variable_query('label_values(up{job="a"}, instance)') == ("label_values", 'up{job="a"}', "instance")
    assert variable_query("label_values(namespace)") == ("label_values", "", "namespace")
    assert variable_query("query_result(max by (a) (b))") == ("query_result", "max by (a) (b)", None)
    with pytest.raises(ValueError, match="not a Prometheus variable query"):
        variable_query("up")


def test_legend_labels() -> None:
    assert legend_labels("{{namespace}}/{{ name }} target") == {"namespace", "name"}
    assert legend_labels("__auto") == set()
