"""The rule files as a whole: the recording rules are the autoscaler's queries and current, names follow
level:metric:operations, every alert carries a severity, annotations naming what it is about and a runbook
that exists, reads only recorded series that exist, and has promtool tests that fire and stay quiet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from controllers.metrics.prometheus import RECORDED_PERCENTILES, PrometheusConfig, epp_queries, pod_queries
from controllers.metrics.rules import RECORDING_PATH, RULES_DIR, render

ALERTS = yaml.safe_load((RULES_DIR / "alerts.yaml").read_text())["groups"]
RECORDING = yaml.safe_load(RECORDING_PATH.read_text())["groups"]
MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"
NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
ALERT_RULES = [rule for group in ALERTS for rule in group["rules"]]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_the_committed_recording_rules_are_current() -> None:
    assert RECORDING_PATH.read_text() == render(), "run `tokenworks rules generate`"


def test_every_recordable_signal_has_its_rule_at_every_recorded_percentile() -> None:
    recorded = {(r["record"], tuple((r.get("labels") or {}).items())): r["expr"] for g in RECORDING for r in g["rules"]}
    config = PrometheusConfig(url="")
    for p in RECORDED_PERCENTILES:
        for signal, query in {**pod_queries(config, p), **epp_queries(config, p)}.items():
            if query.record is not None:
                assert recorded.get((query.record, query.labels)) == query.expr, f"{signal} at {p}"


def test_recording_rule_names_are_level_metric_operations() -> None:
    names = [r["record"] for g in RECORDING for r in g["rules"]]
    assert names and all(NAME.match(n) for n in names), [n for n in names if not NAME.match(n)]
    assert all(n.split(":")[0].startswith(("namespace_model_deployment", "namespace_inference_pool"))
               for n in names)


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda r: f"{r['alert']}-{r['for']}")
def test_every_alert_has_severity_annotations_and_a_runbook_that_exists(rule: dict[str, object]) -> None:
    labels, notes = rule["labels"], rule["annotations"]
    assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning")
    assert isinstance(notes, dict) and {"summary", "description", "runbook_url"} <= set(notes)
    path, _, anchor = str(notes["runbook_url"]).partition("#")
    assert path == "docs/monitoring.md" and anchor == str(rule["alert"]).lower()
    assert anchor in anchors(MONITORING.read_text()), f"no section {rule['alert']} in docs/monitoring.md"
    # What it is about is named: the ModelDeployment, or for the operator's alerts the operator.
    summary = str(notes["summary"])
    assert "$labels.name" in summary or "$labels.tokenworks_dev_model_deployment" in summary or \
        "operator" in summary.lower() or "autoscaler" in summary.lower()


def test_alerts_read_only_recorded_series_that_exist() -> None:
    recorded = {r["record"] for g in RECORDING for r in g["rules"]}
    used = {name for rule in ALERT_RULES for name in re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", str(rule["expr"]))}
    assert used and used <= recorded, used - recorded


def test_every_alert_has_promtool_tests_that_fire_and_that_stay_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in sorted((RULES_DIR / "tests").glob("*_test.yaml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test") or []:
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {str(rule["alert"]) for rule in ALERT_RULES}
    assert names <= fired, f"never fired in a test: {names - fired}"
    # The no-leader alert's quiet case is the hand-over; every other alert has an exp_alerts: [] case too.
    assert names <= quiet, f"never asserted quiet: {names - quiet}"
