"""ModelDeployment names: only those every child can carry, in the CRD, the model and the reconciler."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from controllers.reconcile import Reconciler
from crds import generate
from crds.models import NAME_MAX_LENGTH, NAME_MESSAGE, NAME_SCHEMA, ModelDeployment, valid_name
from inference_pods.templates import render_children

LONGEST = ("llama-8b-" + "0123456789" * 6)[:NAME_MAX_LENGTH]
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_1123_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def manifest(name: str | None) -> dict[str, Any]:
    metadata = {"namespace": "ns", "uid": "u", "generation": 1} | ({"name": name} if name is not None else {})
    return {"apiVersion": "tokenworks.dev/v1alpha1", "kind": "ModelDeployment", "metadata": metadata,
            "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                     "gpu": {"product": "H100-SXM"}}}


@pytest.mark.parametrize("name", ["a", "llama-8b", "l40s-2", LONGEST])
def test_valid_names(name: str) -> None:
    assert valid_name(name)
    assert ModelDeployment.model_validate(manifest(name)).name == name


@pytest.mark.parametrize("name", ["llama.8b", LONGEST + "x", "8b", "Llama", "llama-", "-llama", "llama_8b", ""])
def test_names_a_child_cannot_carry_are_refused_with_the_reason(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(ValidationError) as refused:
        ModelDeployment.model_validate(manifest(name))
    (error,) = refused.value.errors()
    assert error["loc"] == ("metadata",) and error["msg"] == NAME_MESSAGE


def test_a_manifest_without_a_name_still_parses() -> None:
    # generateName, or `tokenworks plan` on a file that names nothing: the name is not ours to check.
    assert ModelDeployment.model_validate(manifest(None)).metadata.get("name") is None


def test_the_longest_name_fits_every_child_name_and_label() -> None:
    for child in render_children(ModelDeployment.model_validate(manifest(LONGEST)), 2, pod_monitor_api=True):
        name = child["metadata"]["name"]
        # Services are DNS-1035 labels; the other kinds are DNS-1123 subdomains.
        pattern = DNS_1035_LABEL if child["kind"] == "Service" else DNS_1123_SUBDOMAIN
        assert pattern.fullmatch(name), (child["kind"], name)
        pod_labels = child.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        for value in [*child["metadata"]["labels"].values(), *pod_labels.values()]:
            assert LABEL_VALUE.fullmatch(value), (child["kind"], value)
    # One character more and the Service name (the tightest limit) is invalid.
    assert not DNS_1035_LABEL.fullmatch(LONGEST + "x")


def test_the_crd_carries_the_same_rule_on_metadata_name() -> None:
    schema = generate.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"]["properties"] == {"name": NAME_SCHEMA}
    (cel,) = NAME_SCHEMA["x-kubernetes-validations"]
    assert f"self.size() <= {NAME_MAX_LENGTH}" in cel["rule"] and cel["message"] == NAME_MESSAGE


class OneObjectKube:
    """A KubeApi holding one ModelDeployment; records what the reconciler writes."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.applied: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.obj if kind == "ModelDeployment" else None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        return []

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest)
        return manifest

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any],
                     field_manager: str = "tokenworks") -> dict[str, Any]:
        self.statuses.append(status)
        return self.obj

    def has_kind(self, api_version: str, kind: str) -> bool:
        return False

    def event(self, regarding: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append((type_, reason, message))

    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        raise AssertionError("no test here scales through /scale")


def test_an_object_admitted_before_the_rule_is_degraded_with_an_event_and_gets_no_children() -> None:
    kube = OneObjectKube(manifest("llama.8b"))
    result = Reconciler(kube).reconcile("ns", "llama.8b")
    assert kube.applied == []
    ((condition,),) = [s["conditions"] for s in kube.statuses]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Degraded", "True", "InvalidSpec")
    assert NAME_MESSAGE in condition["message"]
    assert kube.events == [("Warning", "InvalidSpec", condition["message"])]
    # Returned, not raised: the work queue forgets the key instead of retrying it forever.
    assert [p.reason for p in result.problems] == ["InvalidSpec"]
