"""Pure parts of the reconcile: who owns the replica count, status derivation, change detection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controllers.reconcile import (
    Problem,
    derive_status,
    desired_replicas,
    foreign_spec_writer,
    merge_transition_times,
    status_changed,
)
from crds.models import ModelDeployment

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def md(replicas: int = 2, autoscaling: dict[str, Any] | None = None,
       status: dict[str, Any] | None = None) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                 "gpu": {"product": "H100-SXM"}, "parallelism": {"tensor": 2},
                 "replicas": replicas, "autoscaling": autoscaling or {}},
        "status": status,
    })


@pytest.mark.parametrize(("name", "model", "expected"), [
    ("autoscaling off: spec.replicas rules", md(replicas=3), 3),
    ("autoscaling on, no decision yet: spec.replicas clamped up to min",
     md(replicas=1, autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5}), 2),
    ("autoscaling on: the autoscaler's decision",
     md(replicas=1, autoscaling={"enabled": True, "maxReplicas": 5},
        status={"autoscaler": {"desiredReplicas": 4}}), 4),
    ("a decision above a lowered max is clamped",
     md(autoscaling={"enabled": True, "maxReplicas": 3}, status={"autoscaler": {"desiredReplicas": 7}}), 3),
    ("advisory: decisions are recorded, spec.replicas rules",
     md(replicas=2, autoscaling={"enabled": True, "advisory": True},
        status={"autoscaler": {"desiredReplicas": 6}}), 2),
])
def test_replica_owner(name: str, model: ModelDeployment, expected: int) -> None:
    assert desired_replicas(model) == expected, name


def deployment(replicas: int, ready: int, updated: int, generation: int = 1,
               observed: int = 1, progressing_reason: str = "NewReplicaSetAvailable") -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                       "observedGeneration": observed,
                       "conditions": [{"type": "Progressing", "reason": progressing_reason,
                                       "message": "m"}]}}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_of_a_rolled_out_deployment() -> None:
    status = derive_status(md(), deployment(2, 2, 2), 2, [])
    assert status["observedGeneration"] == 3
    assert status["gpus"] == 4  # 2 pods x TP2
    assert status["endpoint"] == "http://m.ns.svc:8000"
    assert status["selector"] == "tokenworks.dev/model-deployment=m"
    assert conditions(status) == {"Ready": ("True", "AllReplicasReady"),
                                  "Progressing": ("False", "Complete"),
                                  "Degraded": ("False", "AsExpected")}


def test_status_while_rolling_out_and_when_stuck() -> None:
    rolling = derive_status(md(), deployment(2, 1, 1), 2, [])
    assert conditions(rolling)["Ready"] == ("False", "ReplicasNotReady")
    assert conditions(rolling)["Progressing"] == ("True", "RollingOut")
    stuck = derive_status(md(), deployment(2, 1, 1, progressing_reason="ProgressDeadlineExceeded"), 2, [])
    assert conditions(stuck)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_problems_make_it_degraded_and_no_deployment_is_not_ready() -> None:
    status = derive_status(md(), None, 2, [Problem("NoMatchingGPUNodes", "none"), Problem("X", "y")])
    assert conditions(status)["Degraded"] == ("True", "NoMatchingGPUNodes")
    assert status["conditions"][2]["message"] == "none; y"
    assert conditions(status)["Ready"] == ("False", "ReplicasNotReady")


def test_transition_times_survive_unchanged_conditions() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
           {"type": "Degraded", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    new = merge_transition_times(derive_status(md(), deployment(2, 2, 2), 2, []), old, NOW)
    stamps = {c["type"]: c["lastTransitionTime"] for c in new["conditions"]}
    assert stamps == {"Ready": "2026-01-01T00:00:00Z", "Progressing": "2026-11-28T12:00:00Z",
                      "Degraded": "2026-11-28T12:00:00Z"}


def test_status_changed_ignores_other_owners_conditions() -> None:
    new = derive_status(md(), deployment(2, 2, 2), 2, [])
    current = {**new, "conditions": [*new["conditions"],
                                     {"type": "ScalingActive", "status": "True", "reason": "x"}]}
    assert not status_changed(new, current)
    assert status_changed(new, {**current, "readyReplicas": 1})
    stamped = merge_transition_times(derive_status(md(), deployment(2, 2, 2), 2, []), [], NOW)
    assert not status_changed(new, stamped), "timestamps alone are no change"


@pytest.mark.parametrize(("managed_fields", "expected"), [
    ([{"manager": "tokenworks", "operation": "Apply", "fieldsV1": {"f:spec": {}}}], None),
    ([{"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
       "fieldsV1": {"f:status": {}}}], None),
    ([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {}}}], None),
    ([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
     "kubectl-edit"),
    ([{"manager": "kubectl", "operation": "Update", "subresource": "scale",
       "fieldsV1": {"f:spec": {"f:replicas": {}}}}], "kubectl"),
])
def test_foreign_spec_writer(managed_fields: list[dict[str, Any]], expected: str | None) -> None:
    assert foreign_spec_writer({"metadata": {"managedFields": managed_fields}}) == expected
