"""Pure parts of the reconcile: who owns the replica count, status derivation, change detection."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from controllers.reconcile import (
    Problem,
    cache_bytes_needed,
    derive_status,
    desired_replicas,
    engine_limit_problems,
    foreign_spec_writer,
    merge_transition_times,
    prepared_condition,
    quantity_bytes,
    status_changed,
)
from crds.models import ModelDeployment
from inference_pods.repository import cache_key
from inference_pods.templates import CACHE_KEY_ANNOTATION

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
                                  "Degraded": ("False", "AsExpected"),
                                  "ModelPrepared": ("Unknown", "NotPreparedYet")}


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
                      "Degraded": "2026-11-28T12:00:00Z", "ModelPrepared": "2026-11-28T12:00:00Z"}


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


def pod(key: str, init: dict[str, Any], main: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"annotations": {CACHE_KEY_ANNOTATION: key}},
            "status": {"initContainerStatuses": [{"name": "prepare", **init}],
                       "containerStatuses": [{"name": "triton", "state": main or {"waiting": {}}}]}}


@pytest.mark.parametrize(("name", "init", "main", "expected"), [
    ("the prepare step's own reason", {"state": {"terminated": {
        "exitCode": 1, "message": "RevisionNotFound: revision v9 does not exist for x/y\n"}}}, None,
     ("False", "RevisionNotFound", "revision v9 does not exist for x/y")),
    ("a crash loop keeps the last failure", {"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                             "lastState": {"terminated": {"exitCode": 1, "message":
                                                 "GatedModel: x/y is gated: give spec.model.tokenSecret a token"}}},
     None, ("False", "GatedModel", "x/y is gated: give spec.model.tokenSecret a token")),
    ("the kubelet cannot find the token Secret", {"state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}}}, None,
     ("False", "TokenSecretMissing", 'secret "hf" not found')),
    ("an unknown message is kept", {"state": {"terminated": {"exitCode": 2, "message": "Killed"}}}, None,
     ("False", "PrepareFailed", "Killed")),
    ("the server started, so the cache is ready", {"state": {"terminated": {"exitCode": 0}}},
     {"running": {}}, ("True", "Prepared", None)),
])
def test_model_prepared_condition(name: str, init: dict[str, Any], main: dict[str, Any] | None,
                                  expected: tuple[str, str, str | None]) -> None:
    key = cache_key(md().spec)
    condition = prepared_condition([pod(key, init, main)], key, 3)
    assert (condition["status"], condition["reason"]) == expected[:2], name
    if expected[2]:
        assert condition["message"] == expected[2], name


def test_pods_of_an_older_cache_key_do_not_count() -> None:
    failed = pod("old-key", {"state": {"terminated": {"exitCode": 1, "message": "ModelNotFound: gone"}}})
    assert prepared_condition([failed], cache_key(md().spec), 3)["status"] == "Unknown"


def test_quantities() -> None:
    assert quantity_bytes("200Gi") == 200 * 2**30
    assert quantity_bytes("1.5T") == 1.5e12
    assert quantity_bytes("1000") == 1000
    assert quantity_bytes("1Ei") == 2**60
    assert math.isnan(quantity_bytes("lots"))


def test_cache_need_counts_the_engine_build() -> None:
    llmapi = md()
    raw = llmapi.model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["engine"] = {"backend": "tensorrt-engine"}
    engine = ModelDeployment.model_validate(raw)
    # Llama-3.1-8B BF16: 16.06 GB of weights, +10%; the engine path keeps checkpoint and engine too.
    assert cache_bytes_needed(llmapi) == pytest.approx(1.1 * 16.06e9)
    assert cache_bytes_needed(engine) == pytest.approx(3 * 1.1 * 16.06e9)
    raw["spec"]["engine"] = {}
    raw["spec"]["model"] = {"name": "m", "profile": "Llama-3.1-8B", "pvc": {"claimName": "weights"}}
    assert cache_bytes_needed(ModelDeployment.model_validate(raw)) == 0  # linked from the claim, not copied


@pytest.mark.parametrize(("engine", "fragment"), [
    ({"maxInputLength": 131072, "maxOutputLength": 4096}, "exceeds Llama-3.1-8B's context of 131072"),
    ({"maxInputLength": 120000, "maxOutputLength": 8000, "kvCacheFreeGpuMemFraction": 0.06},
     "needs 16.8 GB of KV cache"),
    ({"maxInputLength": 16384, "maxNumTokens": 8192, "enableChunkedPrefill": False}, "without enableChunkedPrefill"),
])
def test_engine_limits_the_gpu_or_model_cannot_hold(engine: dict[str, Any], fragment: str) -> None:
    raw = md().model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["engine"] = engine
    problems = engine_limit_problems(ModelDeployment.model_validate(raw))
    assert problems and all(p.reason == "EngineLimitTooLarge" for p in problems)
    assert any(fragment in p.message for p in problems), [p.message for p in problems]


def test_default_limits_fit() -> None:
    assert engine_limit_problems(md()) == []
