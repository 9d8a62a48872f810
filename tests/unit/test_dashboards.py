"""The Grafana dashboards: the committed JSON is what dashboards.build makes, standard Grafana JSON, and it passes
the dashboard-linter's rules and the house rules (dashboards.lint), each of which catches what it is for."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards import NAMES, build, json_text, lint, load
from dashboards.lint import Raw

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.fixture(params=NAMES)
def raw(request: pytest.FixtureRequest) -> Raw:
    return lint.load_raw(request.param)


@pytest.mark.parametrize("name", NAMES)
def test_committed_json_is_what_the_generator_makes(name: str) -> None:
    assert json_text(name) == build.render(name), "run: python -m dashboards.build"


def test_check_fails_on_stale_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "JSON_DIR", tmp_path)
    assert build.main([]) == 0 and build.main(["--check"]) == 0
    (tmp_path / "fleet.json").write_text(json_text("fleet").replace("Tokenworks / Fleet", "edited by hand"))
    assert build.main(["--check"]) == 1


def test_standard_grafana_json(raw: Raw) -> None:
    name = raw["uid"].removeprefix("tokenworks-")
    assert name in NAMES, "uid is tokenworks-<name>, stable across builds"
    assert raw["schemaVersion"] == 41  # Grafana 11.6 and 12's current schema
    assert "__inputs" not in raw and "__requires" not in raw and raw.get("id") is None
    assert raw["tags"] == ["tokenworks"] and raw["time"]["to"] == "now"
    ids = [p["id"] for p in raw["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    cells: set[tuple[int, int]] = set()
    for panel in raw["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    model = load(name)  # what a process reading the JSON at run time gets
    assert model.uid == raw["uid"] and len(model.all_panels()) == len(lint.panels(raw))
    assert all(t.datasource is not None and t.datasource.uid == DS["uid"] for p in model.all_panels()
               for t in p.targets)


def test_uids_are_distinct() -> None:
    assert len({lint.load_raw(n)["uid"] for n in NAMES}) == len(NAMES)


def test_unknown_dashboard_is_refused() -> None:
    with pytest.raises(KeyError, match="fleet"):
        json_text("missing")


@pytest.mark.parametrize("rule", list(lint.RULES))
def test_lint_rule(raw: Raw, rule: str) -> None:
    assert lint.RULES[rule](raw) == []


def test_gpu_price_is_a_variable_and_cost_panels_are_dollars() -> None:
    raw = lint.load_raw("fleet")
    (price,) = [v for v in lint.variables(raw) if v["name"] == "gpu_price"]
    assert price["type"] == "textbox" and price["query"] == build.DEFAULT_GPU_PRICE
    costed = 0
    for panel in lint.panels(raw):
        for target in panel["targets"]:
            if "$gpu_price" not in target["expr"]:
                continue
            costed += 1
            units = {panel["fieldConfig"]["defaults"]["unit"]} | {
                p["value"] for o in panel["fieldConfig"]["overrides"] for p in o["properties"] if p["id"] == "unit"}
            assert "currencyUSD" in units, panel["title"]
    assert costed >= 3  # the range's cost, the table's cost column, the spend rate


def _panel(raw: Raw, title: str) -> Raw:
    return next(p for p in lint.panels(raw) if p["title"] == title)


def test_slo_targets_are_series_and_thresholds_sit_at_the_slo() -> None:
    raw = lint.load_raw("deployment")
    for title, objective in (("TTFT percentiles against the SLO target", "ttft"),
                             ("ITL against the SLO target", "itl")):
        panel = _panel(raw, title)
        (target,) = [t for t in panel["targets"] if "tokenworks_modeldeployment_slo_target_seconds" in t["expr"]]
        assert f'objective="{objective}"' in target["expr"] and 'name="$deployment"' in target["expr"]
        dashed = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"] == {
            "id": "byFrameRefID", "options": target["refId"]}]
        assert dashed and any(p["id"] == "custom.lineStyle" for p in dashed[0]["properties"])
    for title, boundary, colour_above in (("TTFT over target", 1.0, "red"), ("ITL over target", 1.0, "red"),
                                          ("TTFT attainment margin", 0.0, "green")):
        steps = _panel(raw, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert {"value": boundary, "color": colour_above} in steps, title
    fleet = lint.load_raw("fleet")
    worst = _panel(fleet, "Worst offenders (range)")
    assert {"value": 0.0, "color": "green"} in worst["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_scale_events_are_an_annotation() -> None:
    raw = lint.load_raw("deployment")
    (events,) = [a for a in raw["annotations"]["list"] if a.get("expr")]
    assert events["datasource"] == DS and events["enable"] is True
    assert 'direction!="hold"' in events["expr"] and "tokenworks_autoscaler_decisions_total" in events["expr"]
    assert "{{direction}}" in events["titleFormat"] and events["tagKeys"] == "direction,rule"


# -- each rule catches what it is for -------------------------------------------------------------------
def dashboard(expr: str, *, unit: str | Any = "short", description: str = "what it answers", legend: str = "",
              variables: list[Raw] | None = None, source: Raw | None = None, **extra: Any) -> Raw:
    """A one-panel dashboard around ``expr``, valid unless the arguments make it not."""
    base: Raw = {
        "uid": "t", "title": "t", "schemaVersion": 41, "editable": False,
        "templating": {"list": [
            {"type": "datasource", "name": "DS_PROMETHEUS", "label": "Data source", "query": "prometheus"},
            {"type": "query", "name": "namespace", "label": "Namespace", "datasource": DS, "refresh": 2,
             "query": "label_values(tokenworks_modeldeployment_info, namespace)", "multi": True,
             "includeAll": True, "allValue": ".+"},
            *(variables or [])]},
        "panels": [{"id": 1, "type": "timeseries", "title": "p", "description": description,
                    "datasource": source or DS, "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "targets": [{"refId": "A", "expr": expr, "legendFormat": legend, "datasource": DS}]}],
        "annotations": {"list": []},
    }
    return {**base, **extra}


POD = 'model="tensorrt_llm", namespace=~"$namespace"'
GOOD = f"sum(rate(nv_inference_request_success{{{POD}}}[$__rate_interval]))"


def test_the_valid_example_passes() -> None:
    assert lint.lint(dashboard(GOOD)) == []


@pytest.mark.parametrize(("rule", "changes"), [
    ("target-rate-interval-rule", {"expr": GOOD.replace("$__rate_interval", "5m")}),
    ("target-rate-interval-rule", {"expr": GOOD.replace("$__rate_interval", "$__range")}),
    ("target-counter-agg-rule", {"expr": f"sum(nv_inference_request_success{{{POD}}})"}),  # no _total, a counter
    ("target-counter-agg-rule", {  # a lifetime average
        "expr": f"sum(nv_inference_first_response_histogram_ms_sum{{{POD}}}) / "
                f"sum(nv_inference_first_response_histogram_ms_count{{{POD}}})"}),
    ("target-counter-agg-rule", {"expr": "sum(tokenworks_reconcile_total)"}),
    ("target-histogram-rule", {
        "expr": f"sum by (le) (rate(nv_inference_first_response_histogram_ms_bucket{{{POD}}}[$__rate_interval]))"}),
    ("series-exist", {"expr": f"sum(rate(nv_inference_tokens_total{{{POD}}}[$__rate_interval]))"}),
    ("target-promql-rule", {"expr": f"sum(rate(nv_inference_request_success{{{POD}}}[$__rate_interval])"}),
    ("target-job-instance (replaced)", {"expr": GOOD.replace('model="tensorrt_llm", ', "")}),
    ("target-job-instance (replaced)", {"expr": GOOD.replace(', namespace=~"$namespace"', "")}),
    ("target-job-instance (replaced)", {"expr": 'max(tokenworks_leader{namespace=~"$namespace"})'}),
    ("panel-units-rule", {"unit": None}),
    ("panel-units-rule", {"unit": "tokens"}),
    ("panel-title-description-rule", {"description": ""}),
    ("panel-datasource-rule", {"source": {"type": "prometheus", "uid": "prometheus-prod"}}),
    ("engine-only-described", {
        "expr": f"sum(rate(nv_llm_output_token_len_sum{{{POD}}}[$__rate_interval]))"}),
    ("legend-labels", {"expr": f"sum by (namespace) (rate(nv_inference_request_success{{{POD}}}"
                               "[$__rate_interval]))", "legend": "{{pod}}"}),
    ("uneditable-dashboard-rule", {"editable": True}),
    ("template-unused-rule", {"variables": [{"type": "textbox", "name": "gpu_price", "query": "2.50"}]}),
    ("template-on-time-change-reload-rule", {"variables": [
        {"type": "query", "name": "pod", "label": "Pod", "datasource": DS, "refresh": 1,
         "query": "label_values(nv_inference_count, pod)"}]}),
    ("template-label-promql-rule", {"variables": [
        {"type": "query", "name": "pod", "label": "Pod", "datasource": DS, "refresh": 2,
         "query": "label_values(nv_inference_count{, pod)"}]}),
])
def test_rule_catches(rule: str, changes: dict[str, Any]) -> None:
    bad = dashboard(changes.pop("expr", GOOD), **changes)
    assert lint.RULES[rule](bad), f"{rule} let it through"


def test_custom_units_pass_and_each_override_is_checked() -> None:
    assert lint.panel_units(dashboard(GOOD, unit="suffix:tok/s")) == []
    bad = dashboard(GOOD)
    bad["panels"][0]["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": "x"}, "properties": [{"id": "unit", "value": "GPUs"}]}]
    assert lint.panel_units(bad)


def test_one_datasource_variable_named_ds_prometheus() -> None:
    raw = dashboard(GOOD)
    twice = copy.deepcopy(raw)
    twice["templating"]["list"].append(dict(raw["templating"]["list"][0], name="datasource"))
    renamed = copy.deepcopy(raw)
    renamed["templating"]["list"][0]["name"] = "datasource"
    assert lint.template_datasource(twice) and lint.template_datasource(renamed)


def test_one_deployment_dashboard_requires_both_variables_on_every_selector() -> None:
    variables = [{"type": "query", "name": "deployment", "label": "Deployment", "datasource": DS, "refresh": 2,
                  "query": 'label_values(tokenworks_modeldeployment_info{namespace="$namespace"}, name)'}]
    raw = dashboard('max(tokenworks_autoscaler_desired_replicas{namespace="$namespace", name="$deployment"})',
                    variables=variables)
    raw["templating"]["list"][1].update(multi=False, includeAll=False, allValue=None)
    assert lint.required_matchers(raw) == [] and lint.template_variables(raw) == []
    raw["panels"][0]["targets"][0]["expr"] = 'max(tokenworks_autoscaler_desired_replicas{namespace="$namespace"})'
    assert lint.required_matchers(raw)
    raw["templating"]["list"][1]["multi"] = True
    assert lint.template_variables(raw)


def test_every_series_name_is_one_an_exporter_has() -> None:
    known = lint.known_series()
    # The operator's registry, not a list kept by hand: a renamed family would show here.
    assert known["tokenworks_modeldeployment_gpus"] == "gauge"
    assert known["tokenworks_autoscaler_decisions_total"] == "counter"
    assert known["nv_inference_first_response_histogram_ms_bucket"] == "histogram"
    assert "nv_inference_request_success_total" not in known  # Triton's counters have no _total


def test_lint_command_reports_and_fails(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert lint.main() == 0
    monkeypatch.setattr(lint, "load_raw", lambda name: dashboard(GOOD.replace("$__rate_interval", "5m")))
    assert lint.main() == 1
    assert "target-rate-interval-rule" in capsys.readouterr().out


def test_json_round_trips() -> None:
    for name in NAMES:
        assert json.loads(build.render(name)) == lint.load_raw(name)


def test_a_counter_may_be_tested_for_being_new() -> None:
    """``x unless x offset w`` reads which series appeared in the window (a rule's first decision), not a
    lifetime total, so the counter rule lets it through; the same counter read bare does not pass."""
    series = 'tokenworks_autoscaler_decisions_total{namespace=~"$namespace"}'
    new = f"sum by (rule) ({series} unless {series} offset $__rate_interval)"
    assert lint.target_counter_agg(dashboard(new)) == []
    assert lint.target_counter_agg(dashboard(f"sum by (rule) ({series})"))


def test_thresholds_are_where_the_descriptions_say(raw: Raw) -> None:
    """"Orange from 90 %", "red from 120 s": a threshold step of that colour at that value."""
    said = 0
    for panel in lint.panels(raw):
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for colour, number, unit in re.findall(r"(orange|red) from (\d+(?:\.\d+)?) ?(%|s\b)",
                                               panel["description"], re.IGNORECASE):
            value = float(number) / 100 if unit == "%" else float(number)
            said += 1
            assert any(s["color"] == colour.lower() and s["value"] == pytest.approx(value) for s in steps), (
                panel["title"], colour, value, steps)
    assert said  # every dashboard promises at least one
