"""The InferencePool of a ModelDeployment: rendering, the RoutingReady condition in every state, and what a
reconcile applies with and without the API, and after routing is switched off."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controllers.kube import ManifestT
from controllers.reconcile import ROUTING_READY, Problem, Reconciler, routing_condition
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods import templates
from tests.support.fake_kube import GPU_NODE, FakeKube

IMAGE = "registry.example/team/tritonserver-openai:25.12"
POOL = {"endpointPicker": {"name": "llama-epp"}}


def spec(routing: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"}, "gpu": {"product": "H100-SXM"},
            "engine": {"backend": "tensorrt-engine", "image": IMAGE}, "serving": {"frontend": "openai"},
            "routing": {"inferencePool": routing} if routing is not None else {}}


def manifest(routing: dict[str, Any] | None = POOL, status: dict[str, Any] | None = None) -> ManifestT:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": spec(routing), "status": status or {}}


def md(routing: dict[str, Any] | None = POOL) -> ModelDeployment:
    return ModelDeployment.model_validate(manifest(routing))


def test_the_pool_selects_the_pods_on_the_openai_port_and_names_the_picker() -> None:
    model = md({"endpointPicker": {"name": "llama-epp", "port": 9102, "failureMode": "FailClose"}})
    pool = templates.inference_pool(model)
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1" and pool["kind"] == "InferencePool"
    assert pool["metadata"]["name"] == "m" and pool["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert pool["spec"] == {
        "selector": {"matchLabels": {templates.INSTANCE_LABEL: "m"}},
        "targetPorts": [{"number": 9000}],
        "endpointPickerRef": {"group": "", "kind": "Service", "name": "llama-epp", "port": {"number": 9102},
                              "failureMode": "FailClose"}}
    # The pool's selector is the Deployment's: its endpoints are exactly the model's pods.
    deployment = templates.deployment(model, 1, "h")
    assert pool["spec"]["selector"] == deployment["spec"]["selector"]
    # Defaults: the Inference Extension's picker port, and fail open so the model keeps serving.
    picker = templates.inference_pool(md())["spec"]["endpointPickerRef"]
    assert (picker["port"], picker["failureMode"]) == ({"number": 9002}, "FailOpen")


def test_the_pool_is_rendered_only_when_asked_for_and_served() -> None:
    def kinds(model: ModelDeployment, api: bool) -> list[str]:
        return [c["kind"] for c in templates.render_children(model, 1, inference_pool_api=api)]

    assert kinds(md(), True)[-1] == "InferencePool"
    assert "InferencePool" not in kinds(md(), False)
    assert "InferencePool" not in kinds(md(None), True)


def parent(name: str, **conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name, "namespace": "gw"},
            "conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "x"}
                           for t, (s, r, m) in conditions.items()]}


def applied(*parents: dict[str, Any]) -> dict[str, Any]:
    return {**templates.inference_pool(md()), "status": {"parents": list(parents)}}


DEGRADED = Problem("ModelDoesNotFit", "too big")


@pytest.mark.parametrize(("name", "model", "kwargs", "expected"), [
    ("never asked for: no condition", md(None), {"pool": None, "api_served": True}, None),
    ("switched off with the pool left", md(None), {"pool": None, "api_served": True, "leftover": applied()},
     ("False", "RoutingNotRequested")),
    ("no API: said, nothing else blocked", md(), {"pool": None, "api_served": False},
     ("False", "InferencePoolAPINotServed")),
    ("degraded: not applied", md(), {"pool": None, "api_served": True, "blocking": [DEGRADED]},
     ("False", "ModelDoesNotFit")),
    ("applied, no Gateway yet", md(), {"pool": applied(), "api_served": True}, ("True", "InferencePoolApplied")),
    ("accepted", md(), {"pool": applied(parent("inference", Accepted=("True", "Accepted", ""),
                                                ResolvedRefs=("True", "ResolvedRefs", ""))), "api_served": True},
     ("True", "Accepted")),
    ("a Gateway refuses it", md(), {"pool": applied(parent("a", Accepted=("True", "Accepted", "")), parent(
        "b", Accepted=("False", "NotSupportedByParent", "no inference support"))), "api_served": True},
     ("False", "ParentNotAccepted")),
    ("its picker does not resolve", md(), {"pool": applied(parent("inference", Accepted=("True", "Accepted", ""),
                                                                  ResolvedRefs=("False", "InvalidExtensionRef",
                                                                                "Service llama-epp not found"))),
                                          "api_served": True},
     ("False", "ParentRefsNotResolved")),
    ("pending (the schema's Unknown): applied, not accepted yet", md(),
     {"pool": applied(parent("inference", Accepted=("Unknown", "Pending", "Waiting for controller"))),
      "api_served": True}, ("True", "InferencePoolApplied")),
])
def test_routing_ready(name: str, model: ModelDeployment, kwargs: dict[str, Any],
                       expected: tuple[str, str] | None) -> None:
    condition = routing_condition(model, **{"blocking": [], **kwargs})
    got = None if condition is None else (condition["status"], condition["reason"])
    assert got == expected, name


def test_routing_messages_name_the_gateway_and_what_to_do() -> None:
    refused = routing_condition(md(), pool=applied(parent("b", Accepted=("False", "NotSupportedByParent",
                                                                          "no inference support"))),
                                api_served=True, blocking=[])
    assert refused is not None and refused["message"] == (
        "InferencePool ns/m: Gateway gw/b reports Accepted=False (NotSupportedByParent): no inference support")
    accepted = routing_condition(md(), pool=applied(parent("inference", Accepted=("True", "Accepted", ""))),
                                 api_served=True, blocking=[])
    assert accepted is not None and accepted["message"] == (
        "InferencePool ns/m (pods on port 9000, endpoint picker Service llama-epp:9002 (FailOpen)) is accepted by "
        "Gateway gw/inference")
    left = routing_condition(md(None), pool=None, api_served=True, blocking=[], leftover=applied())
    assert left is not None and "kubectl delete inferencepool m -n ns" in left["message"]


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.objects[(KIND, "ns", "m")]["status"]["conditions"]}


def test_with_the_api_the_pool_is_applied_and_routing_is_ready() -> None:
    kube = FakeKube(manifest(), copy.deepcopy(GPU_NODE), served=("PodMonitor", "InferencePool"))
    reconciler = Reconciler(kube, image_registry="")
    result = reconciler.reconcile("ns", "m")
    assert result.applied[-1] == "InferencePool/m"
    routing = conditions(kube)[ROUTING_READY]
    assert (routing["status"], routing["reason"]) == ("True", "InferencePoolApplied")
    assert kube.objects[(KIND, "ns", "m")]["status"]["endpoint"] == "http://m.ns.svc:9000"

    # A Gateway's controller reports on the pool: the next reconcile passes it on, and says it once.
    pool = kube.objects[("InferencePool", "ns", "m")]
    pool["status"] = {"parents": [parent("inference", Accepted=("False", "NotSupportedByParent", "no"))]}
    kube.store(pool)
    reconciler.reconcile("ns", "m")
    assert conditions(kube)[ROUTING_READY]["reason"] == "ParentNotAccepted"
    assert [e for e in kube.events if e[0] == "ParentNotAccepted" and e[2] == "Warning"]


def test_without_the_api_everything_else_is_applied_and_routing_says_why() -> None:
    kube = FakeKube(manifest(), copy.deepcopy(GPU_NODE), served=("PodMonitor",))
    result = Reconciler(kube, image_registry="").reconcile("ns", "m")
    assert [a.split("/")[0] for a in result.applied] == [
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor"]
    by_type = conditions(kube)
    assert (by_type[ROUTING_READY]["status"], by_type[ROUTING_READY]["reason"]) == (
        "False", "InferencePoolAPINotServed")
    assert by_type["Degraded"]["status"] == "False"
    assert by_type["OptionalAPIs"]["message"].startswith("inference.networking.k8s.io/v1 InferencePool is not served")


def test_a_model_without_routing_asks_nothing_about_pools() -> None:
    kube = FakeKube(manifest(routing=None), copy.deepcopy(GPU_NODE), served=("PodMonitor", "InferencePool"))
    Reconciler(kube, image_registry="").reconcile("ns", "m")
    assert ROUTING_READY not in conditions(kube)
    assert "OptionalAPIs" in conditions(kube) and conditions(kube)["OptionalAPIs"]["status"] == "True"
    assert not [r for r in kube.requests if r[1] == "InferencePool"]


def test_routing_switched_off_leaves_the_pool_and_says_so_until_it_is_deleted() -> None:
    kube = FakeKube(manifest(), copy.deepcopy(GPU_NODE), served=("PodMonitor", "InferencePool"))
    reconciler = Reconciler(kube, image_registry="")
    reconciler.reconcile("ns", "m")
    model = kube.objects[(KIND, "ns", "m")]
    model["spec"]["routing"] = {}
    model["metadata"]["generation"] = 2
    kube.store(model)
    reconciler.reconcile("ns", "m")
    assert ("InferencePool", "ns", "m") in kube.objects, "the operator deletes nothing"
    left = conditions(kube)[ROUTING_READY]
    assert (left["status"], left["reason"]) == ("False", "RoutingNotRequested")
    assert [e for e in kube.events if e[0] == "RoutingNotRequested"]

    del kube.objects[("InferencePool", "ns", "m")]  # a person deletes it (or its owner goes)
    reconciler.reconcile("ns", "m")
    assert ROUTING_READY not in conditions(kube)


def test_the_autoscaler_asks_for_the_pools_picker_signals_only_with_a_pool() -> None:
    from controllers.autoscaling.loop import target_for

    assert target_for(md()).inference_pool == md().name  # the pool is named after the ModelDeployment
    assert target_for(md(routing=None)).inference_pool is None
