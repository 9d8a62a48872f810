"""How Kube.apply names the API server's refusals: a gone namespace, a deleted or terminating CRD."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controllers.kube import KindNotServed, Kube, NamespaceTerminating

MANIFEST = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": "llama", "namespace": "models"}}


def refusal(status: int, body: dict[str, Any]) -> ApiException:
    error = ApiException(status=status, reason="refused")
    error.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status, **body})
    return error


class Refusing:
    """A dynamic-client resource whose every apply is refused with ``error``."""

    def __init__(self, error: ApiException) -> None:
        self.error = error

    def server_side_apply(self, **_: Any) -> Any:
        raise self.error


def kube_refusing(monkeypatch: pytest.MonkeyPatch, error: ApiException, served: bool) -> Kube:
    # No API server: the dynamic client (which asks /version when made) and discovery are stubbed.
    monkeypatch.setattr("controllers.kube.dynamic.DynamicClient", lambda *_, **__: None)
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    monkeypatch.setattr(kube, "_resource", lambda api_version, kind: Refusing(error))
    monkeypatch.setattr(kube, "has_kind", lambda api_version, kind, **_: served)
    return kube


def test_a_write_into_a_namespace_that_is_gone_is_namespace_terminating(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refusal(404, {"message": 'namespaces "models" not found', "reason": "NotFound",
                          "details": {"name": "models", "kind": "namespaces"}})
    with pytest.raises(NamespaceTerminating):
        kube_refusing(monkeypatch, error, served=True).apply(dict(MANIFEST))


def test_a_create_in_a_terminating_namespace_is_namespace_terminating(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refusal(403, {"message": "unable to create new content in namespace models because it is being "
                          "terminated", "reason": "Forbidden", "details": {"causes": [
                              {"reason": "NamespaceTerminating", "field": "metadata.namespace"}]}})
    with pytest.raises(NamespaceTerminating):
        kube_refusing(monkeypatch, error, served=True).apply(dict(MANIFEST))


def test_a_create_of_a_kind_whose_crd_is_terminating_is_kind_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    # The API server's words (v1.36) while the CRD's objects are being removed.
    error = refusal(403, {"message": 'podmonitors.monitoring.coreos.com "llama" is forbidden: create not allowed '
                          "while custom resource definition is terminating", "reason": "Forbidden",
                          "details": {"name": "llama", "group": "monitoring.coreos.com", "kind": "podmonitors"}})
    with pytest.raises(KindNotServed):
        kube_refusing(monkeypatch, error, served=True).apply(dict(MANIFEST))


def test_a_404_for_a_kind_discovery_no_longer_serves_is_kind_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refusal(404, {"message": "the server could not find the requested resource", "reason": "NotFound",
                          "details": {}})
    with pytest.raises(KindNotServed):
        kube_refusing(monkeypatch, error, served=False).apply(dict(MANIFEST))


def test_a_404_for_a_kind_still_served_is_raised_as_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refusal(404, {"message": "not found", "reason": "NotFound", "details": {}})
    with pytest.raises(ApiException) as raised:
        kube_refusing(monkeypatch, error, served=True).apply(dict(MANIFEST))
    assert raised.value is error
