"""Generate the ModelDeployment CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no ``$ref``, no ``anyOf``
carrying types, ``exclusiveMinimum`` as a boolean. Pydantic emits JSON Schema 2020-12, so this module
inlines references, collapses ``Optional[X]`` to ``X``, and rewrites the few keywords that differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crds import models

CRD_PATH = Path(__file__).with_name("modeldeployment.yaml")
# The Helm chart's copy: the same CRD, templated so `helm upgrade` upgrades it (docs/install.md). Absent
# from an installed distribution, which has no chart.
CHART_CRD_PATH = (Path(__file__).resolve().parents[1] / "charts" / "tokenworks" / "templates"
                  / "crd-modeldeployments.yaml")
_DROP = {"title", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union of {variants} in a structural schema")
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if node.get("default") is not None:
            rest["default"] = node["default"]
        return _structural({**variants[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "additionalProperties" and isinstance(value, bool):
            # Pruning already drops unknown fields; `false` is not allowed next to `properties`.
            if value:
                out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out[key] = _structural(value, defs)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    # Objects defaulted by a factory get their fields' defaults spelled out: the apiserver checks
    # CEL rules against a default as written, before it applies the nested defaults.
    required = set(node.get("required", []))
    for name, prop in out.get("properties", {}).items():
        raw = node.get("properties", {}).get(name, {})
        if name not in required and "$ref" in raw and prop.get("type") == "object":
            prop.setdefault("default", _materialized_default(prop))
    return out


def _materialized_default(schema: dict[str, Any]) -> dict[str, Any]:
    return {name: prop["default"] for name, prop in (schema.get("properties") or {}).items()
            if "default" in prop}


def openapi_schema(model: type[models.ApiModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(models.ModelDeploymentSpec)
    status_schema = openapi_schema(models.ModelDeploymentStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{models.PLURAL}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": models.SHORT_NAMES,
                "categories": ["tokenworks", "ai"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "ModelDeployment serves one LLM with Triton and "
                            "TensorRT-LLM on GPUs and scales it on token throughput and latency "
                            "SLOs.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object", "properties": {"name": models.NAME_SCHEMA}},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": models.PRINTER_COLUMNS,
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `tokenworks crds generate` from crds/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def render_chart() -> str:
    """The chart's template: the same CRD behind ``crds.install``, kept by ``helm uninstall``, with the
    chart's labels."""
    document = crd()
    body = yaml.safe_dump({"spec": document["spec"]}, sort_keys=False, width=100)
    if "{{" in body or "}}" in body:
        raise ValueError("the CRD's text would be read as a Helm template: it contains {{ or }}")
    return "".join([
        "{{- if .Values.crds.install }}\n",
        "# Generated by `tokenworks crds generate` from crds/models.py: crds/modeldeployment.yaml as a chart\n",
        "# template. Do not edit.\n",
        yaml.safe_dump({"apiVersion": document["apiVersion"], "kind": document["kind"]}, sort_keys=False),
        "metadata:\n",
        f"  name: {document['metadata']['name']}\n",
        "  annotations:\n",
        "    # Kept by `helm uninstall`: deleting a CRD deletes every object of its kind, here every\n",
        "    # ModelDeployment and, through their owner references, every model's pods.\n",
        "    helm.sh/resource-policy: keep\n",
        "  labels:\n",
        '    {{- include "tokenworks.labels" . | nindent 4 }}\n',
        body,
        "{{- end }}\n",
    ])


def outputs() -> dict[Path, str]:
    """Every generated file and its content; the chart's copy only where the chart is."""
    files = {CRD_PATH: render()}
    if CHART_CRD_PATH.parent.is_dir():
        files[CHART_CRD_PATH] = render_chart()
    return files


def stale() -> list[Path]:
    return [path for path, text in outputs().items() if not path.exists() or path.read_text() != text]


def write(path: Path = CRD_PATH) -> Path:
    path.write_text(render())
    return path


def write_all() -> list[Path]:
    for path, text in outputs().items():
        path.write_text(text)
    return list(outputs())
