"""The requests one reconcile makes, against a fake API server: none written at rest, a dry run only after a change."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from controllers.kube import ManifestT
from controllers.reconcile import Reconciler
from crds.models import API_VERSION, KIND
from tests.support.fake_kube import GPU_NODE, FakeKube


def model_deployment(replicas: int = 2, autoscaling: dict[str, Any] | None = None,
                     status: dict[str, Any] | None = None) -> ManifestT:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                     "gpu": {"product": "H100-SXM"}, "replicas": replicas, "autoscaling": autoscaling or {}},
            "status": status or {}}


def reconcile(kube: FakeKube, reconciler: Reconciler) -> Counter[str]:
    """The writes of one reconcile."""
    kube.requests.clear()
    reconciler.reconcile("ns", "m")
    return kube.writes()


def test_writes_only_what_changed_and_nothing_at_rest() -> None:
    kube = FakeKube(model_deployment(), copy.deepcopy(GPU_NODE))
    reconciler = Reconciler(kube, image_registry="")
    created = reconcile(kube, reconciler)
    assert created == Counter({"apply ConfigMap": 1, "apply Deployment": 1, "apply Service": 1,
                               "apply PodDisruptionBudget": 1, "patch_status ModelDeployment": 1,
                               "event Created": 1})

    # At rest: reads only, no dry run (nobody wrote a child since it was verified).
    assert reconcile(kube, reconciler) == Counter()
    assert [verb for verb, _ in kube.requests] == ["get", "get", "get", "get", "get", "get", "list"]

    # The Deployment controller writes the Deployment's status: one dry run, equal, nothing written.
    deployment = kube.objects[("Deployment", "ns", "m")]
    deployment["status"] = {"replicas": 2, "observedGeneration": 1}
    kube.store(deployment)
    assert reconcile(kube, reconciler) == Counter({"dry-run Deployment": 1, "patch_status ModelDeployment": 1})
    assert reconcile(kube, reconciler) == Counter()

    # A new intent: applied without a dry run's verdict being drift, and without a Warning.
    model = kube.objects[(KIND, "ns", "m")]
    model["spec"]["replicas"] = 3
    model["metadata"]["generation"] = 2
    kube.store(model)
    changed = reconcile(kube, reconciler)
    assert changed["apply Deployment"] == 1 and changed["apply PodDisruptionBudget"] == 0
    assert not [e for e in kube.events if e[0] == "ForeignWriteReverted"]
    assert reconcile(kube, reconciler) == Counter()


def test_a_replica_count_written_through_scale_is_reverted_with_one_warning() -> None:
    kube = FakeKube(model_deployment(), copy.deepcopy(GPU_NODE))
    reconciler = Reconciler(kube, image_registry="")
    reconcile(kube, reconciler)
    reconcile(kube, reconciler)

    # An HPA on the Deployment: the controller manager writes /scale and takes spec.replicas.
    deployment = kube.objects[("Deployment", "ns", "m")]
    deployment["spec"]["replicas"] = 7
    ours = deployment["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    del ours["f:replicas"]
    deployment["metadata"]["managedFields"].append({
        "manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
        "fieldsV1": {"f:spec": {"f:replicas": {}}}})
    kube.store(deployment)
    kube.events.clear()
    assert reconcile(kube, reconciler) == Counter({"dry-run Deployment": 1, "apply Deployment": 1,
                                                   "event ForeignWriteReverted": 1, "event Updated": 1})
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 2
    ((_, message, type_),) = [e for e in kube.events if e[0] == "ForeignWriteReverted"]
    assert type_ == "Warning"
    assert "Deployment/m: spec.replicas changed by kube-controller-manager (through /scale)" in message
    assert reconcile(kube, reconciler) == Counter()


def test_switching_autoscaling_off_hands_the_count_over() -> None:
    on = {"enabled": True, "minReplicas": 1, "maxReplicas": 5}
    kube = FakeKube(model_deployment(1, on, {"autoscaler": {"desiredReplicas": 3, "generation": 1}}),
                    copy.deepcopy(GPU_NODE))
    reconciler = Reconciler(kube, image_registry="")
    reconcile(kube, reconciler)
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 3
    assert kube.objects[(KIND, "ns", "m")]["status"]["replicaSource"] == {"owner": "autoscaler", "specReplicas": 1}

    model = kube.objects[(KIND, "ns", "m")]
    model["spec"]["autoscaling"] = {**on, "enabled": False}
    model["metadata"]["generation"] = 2
    kube.store(model)
    kube.events.clear()
    writes = reconcile(kube, reconciler)
    assert writes == Counter({"apply ModelDeployment": 1, "event AutoscalingHandedOver": 1,
                              "patch_status ModelDeployment": 1}), "the Deployment keeps its 3"
    model = kube.objects[(KIND, "ns", "m")]
    assert model["spec"]["replicas"] == 3
    assert model["status"]["replicaSource"] == {"owner": "spec", "specReplicas": 3}
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 3
    ((_, message, type_),) = kube.events
    assert type_ == "Normal" and "autoscaling off; keeping 3 replicas" in message

    # From here spec.replicas is the count: the user's 1 is applied, and nothing is handed over again.
    model["spec"]["replicas"] = 1
    model["metadata"]["generation"] += 1
    kube.store(model)
    assert reconcile(kube, reconciler)["apply ModelDeployment"] == 0
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 1


def test_a_spec_that_does_not_parse_changes_only_degraded() -> None:
    kube = FakeKube(model_deployment(), copy.deepcopy(GPU_NODE))
    reconciler = Reconciler(kube, image_registry="")
    reconcile(kube, reconciler)
    before = copy.deepcopy(kube.objects[(KIND, "ns", "m")]["status"])

    # What an older, looser schema let in.
    model = kube.objects[(KIND, "ns", "m")]
    model["spec"]["engine"] = {"precision": "fp4"}
    model["metadata"]["generation"] = 2
    kube.store(model)
    assert reconcile(kube, reconciler) == Counter({"patch_status ModelDeployment": 1, "event InvalidSpec": 1})
    status = kube.objects[(KIND, "ns", "m")]["status"]
    for field in ("endpoint", "selector", "desiredReplicas", "replicaSource", "gpus"):
        assert status[field] == before[field], field
    kinds = {c["type"]: c["reason"] for c in status["conditions"]}
    assert kinds == {"Ready": "ReplicasNotReady", "Progressing": "RollingOut", "ModelPrepared": "NotPreparedYet",
                     "GPUCapacity": "Sufficient", "OptionalAPIs": "APINotServed", "Degraded": "InvalidSpec"}
    assert status["observedGeneration"] == 2
    assert reconcile(kube, reconciler) == Counter(), "said once"
