"""The CRD generated from the pydantic models: up to date, structural, described, with CEL rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from crds import generate


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


def spec_schema() -> dict[str, Any]:
    version = generate.crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_checked_in_crd_matches_the_models() -> None:
    assert generate.CRD_PATH.read_text() == generate.render(), (
        "crds/modeldeployment.yaml is stale: run `tokenworks crds generate`"
    )


def test_the_charts_copy_is_current_and_is_the_same_crd() -> None:
    assert generate.CHART_CRD_PATH.read_text() == generate.render_chart(), (
        "charts/tokenworks/templates/crd-modeldeployments.yaml is stale: run `tokenworks crds generate`")
    assert generate.stale() == []
    lines = generate.render_chart().splitlines()
    # Behind the chart's switch; without its two template lines, the CRD itself.
    assert lines[0] == "{{- if .Values.crds.install }}" and lines[-1] == "{{- end }}"
    plain = yaml.safe_load("\n".join(line for line in lines[1:-1] if "{{" not in line))
    assert plain["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert plain["spec"] == generate.crd()["spec"] and plain["metadata"]["name"] == generate.crd()["metadata"]["name"]


def test_a_stale_chart_copy_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "templates" / "crd-modeldeployments.yaml"
    copy.parent.mkdir()
    copy.write_text(generate.render_chart().replace("maxBatchSize", "maxBatchSise"))
    monkeypatch.setattr(generate, "CHART_CRD_PATH", copy)
    monkeypatch.setattr(generate, "CRD_PATH", tmp_path / "modeldeployment.yaml")
    assert generate.stale() == [tmp_path / "modeldeployment.yaml", copy]
    generate.write_all()
    assert generate.stale() == [] and copy.read_text() == generate.render_chart()


def test_schema_is_structural() -> None:
    text = generate.render()
    assert "$ref" not in text and "anyOf" not in text and "$defs" not in text
    for path, node in walk(spec_schema(), "spec"):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and isinstance(node["minimum"], int | float), path


def test_every_spec_field_is_described_for_kubectl_explain() -> None:
    undescribed = [path for path, node in walk(spec_schema(), "spec")
                   if path.count(".") >= 1 and not path.endswith("[]") and not node.get("description")]
    assert undescribed == []


def test_defaults_enums_and_bounds_reach_the_schema() -> None:
    engine = spec_schema()["properties"]["engine"]
    # The whole defaulted object, so CEL rules can be checked against the default as written.
    assert engine["default"]["precision"] == "bf16" and engine["default"]["maxBatchSize"] == 256
    assert spec_schema()["properties"]["autoscaling"]["default"]["slo"]["ttftMilliseconds"] == 2000
    precision = engine["properties"]["precision"]
    assert precision["description"].startswith("Weight precision.")
    assert {k: v for k, v in precision.items() if k != "description"} == {
        "default": "bf16", "enum": ["fp4", "fp8", "bf16", "fp16"], "type": "string"}
    assert engine["properties"]["backend"]["enum"] == ["llmapi", "tensorrt-engine"]
    assert engine["default"]["backend"] == "llmapi"
    tensor = spec_schema()["properties"]["parallelism"]["properties"]["tensor"]
    assert tensor["enum"] == [1, 2, 4, 8, 16, 32, 64] and tensor["type"] == "integer"
    assert spec_schema()["properties"]["replicas"]["minimum"] == 0


def test_cross_field_rules_are_cel_validations() -> None:
    spec_rules = [r["rule"] for r in spec_schema()["x-kubernetes-validations"]]
    assert any("self.engine.precision != 'fp4'" in r for r in spec_rules)
    assert any("% self.parallelism.tensor == 0" in r for r in spec_rules)
    assert any("oldSelf.replicas" in r for r in spec_rules)
    autoscaling = spec_schema()["properties"]["autoscaling"]
    assert autoscaling["x-kubernetes-validations"][0]["rule"] == "self.minReplicas <= self.maxReplicas"


def test_scale_subresource_and_printer_columns() -> None:
    version = generate.crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    # Counts side by side (a column is one value, so "ready/desired" cannot be one), then why.
    assert list(columns)[:3] == ["Desired", "Ready", "Status"]
    assert columns["Desired"] == ".status.desiredReplicas" and columns["Ready"] == ".status.readyReplicas"
    assert columns["Status"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert {"GPUs", "Model", "Age"} <= set(columns)


def test_conditions_are_a_map_keyed_by_type() -> None:
    # So the reconciler and the autoscaler can each own their conditions under server-side apply.
    version = generate.crd()["spec"]["versions"][0]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_rendered_yaml_round_trips() -> None:
    assert yaml.safe_load(generate.render()) == generate.crd()
