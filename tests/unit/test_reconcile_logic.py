"""The reconcile's logic: who owns the replica count and its hand-over, status derivation and carry-forward,
drift by content (dry run, fields taken and kept), what blocks an apply and what only warns, and the
requests a reconcile makes, against a fake API."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from controllers.kube import KindNotServed
from controllers.reconcile import (
    GPU_CAPACITY,
    OPTIONAL_APIS,
    RECONCILER_STATUS_FIELDS,
    Problem,
    Reconciler,
    cache_bytes_needed,
    comparable,
    degraded_only_status,
    derive_status,
    desired_replicas,
    engine_limit_problems,
    field_name,
    fields_kept,
    fields_taken,
    handover_replicas,
    merge_transition_times,
    owned_fields,
    prepared_condition,
    quantity_bytes,
    status_changed,
)
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods.repository import cache_key
from inference_pods.templates import CACHE_KEY_ANNOTATION

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def md(replicas: int = 2, autoscaling: dict[str, Any] | None = None,
       status: dict[str, Any] | None = None, generation: int = 3) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {"model": {"name": "m", "profile": "Llama-3.1-8B", "huggingFace": "x/y"},
                 "gpu": {"product": "H100-SXM"}, "parallelism": {"tensor": 2},
                 "replicas": replicas, "autoscaling": autoscaling or {}},
        "status": status,
    })


ON = {"enabled": True, "minReplicas": 1, "maxReplicas": 5}


@pytest.mark.parametrize(("name", "model", "live", "expected"), [
    ("autoscaling off: spec.replicas rules", md(replicas=3), 5, 3),
    ("autoscaling on, no decision yet, no Deployment: spec.replicas clamped up to min",
     md(replicas=1, autoscaling={**ON, "minReplicas": 2}), None, 2),
    ("autoscaling on: the decision of this generation",
     md(replicas=1, autoscaling=ON, status={"autoscaler": {"desiredReplicas": 4, "generation": 3}}), 2, 4),
    ("a decision above a lowered max is clamped",
     md(autoscaling={**ON, "maxReplicas": 3}, status={"autoscaler": {"desiredReplicas": 7, "generation": 3}}),
     3, 3),
    ("a stale decision (another generation) is ignored: the live count holds",
     md(replicas=1, autoscaling=ON, status={"autoscaler": {"desiredReplicas": 5, "generation": 1}}), 2, 2),
    ("a stale decision, the live count clamped to the bounds",
     md(replicas=1, autoscaling={**ON, "maxReplicas": 3}, status={"autoscaler": {"desiredReplicas": 5,
                                                                                 "generation": 1}}), 4, 3),
    ("a decision without a generation (an older operator's) is stale",
     md(replicas=1, autoscaling=ON, status={"autoscaler": {"desiredReplicas": 5}}), 2, 2),
    ("advisory: decisions are recorded, spec.replicas rules",
     md(replicas=2, autoscaling={"enabled": True, "advisory": True},
        status={"autoscaler": {"desiredReplicas": 6, "generation": 3}}), 6, 2),
])
def test_replica_owner(name: str, model: ModelDeployment, live: int | None, expected: int) -> None:
    assert desired_replicas(model, live) == expected, name


AUTOSCALED = {"replicaSource": {"owner": "autoscaler", "specReplicas": 1}}


@pytest.mark.parametrize(("name", "model", "live", "expected"), [
    ("switched off: the live count is handed over",
     md(replicas=1, autoscaling={"enabled": False}, status=AUTOSCALED), 3, 3),
    ("switched to advisory: handed over too",
     md(replicas=1, autoscaling={"enabled": True, "advisory": True}, status=AUTOSCALED), 3, 3),
    ("still on: nothing to hand over", md(replicas=1, autoscaling=ON, status=AUTOSCALED), 3, None),
    ("off at the last reconcile too: spec.replicas is the user's",
     md(replicas=1, status={"replicaSource": {"owner": "spec", "specReplicas": 1}}), 3, None),
    ("the user set spec.replicas in the same edit: their number wins",
     md(replicas=2, status=AUTOSCALED), 3, None),
    ("the live count is spec.replicas already", md(replicas=1, status=AUTOSCALED), 1, None),
    ("no Deployment: nothing is running to keep", md(replicas=1, status=AUTOSCALED), None, None),
    ("no record (an older operator's status): no hand-over", md(replicas=1, status={}), 3, None),
])
def test_handover(name: str, model: ModelDeployment, live: int | None, expected: int | None) -> None:
    assert handover_replicas(model, live) == expected, name


def test_the_handover_in_a_worked_example() -> None:
    """docs/operator.md, row by row: on at generation 3, the autoscaler left 4; spec.replicas says 1."""
    on = md(replicas=1, autoscaling=ON, status={"autoscaler": {"desiredReplicas": 4, "generation": 3}})
    assert desired_replicas(on, 4) == 4
    recorded = derive_status(on, deployment(4, 4, 4), 4, [])["replicaSource"]
    assert recorded == {"owner": "autoscaler", "specReplicas": 1}
    # Switched off (generation 4): the operator writes 4 into spec.replicas before anything else.
    off = md(replicas=1, generation=4,
             status={"replicaSource": recorded, "autoscaler": {"desiredReplicas": 4, "generation": 3}})
    assert handover_replicas(off, 4) == 4
    handed = md(replicas=4, generation=5, status={"replicaSource": {"owner": "spec", "specReplicas": 4}})
    assert desired_replicas(handed, 4) == 4 and handover_replicas(handed, 4) is None
    # A week later at 2 (kubectl scale, generation 6), switched on again (7): last week's 4 is stale; 2 holds.
    again = md(replicas=2, autoscaling={**ON, "maxReplicas": 8}, generation=7,
               status={"replicaSource": {"owner": "spec", "specReplicas": 2},
                       "autoscaler": {"desiredReplicas": 4, "generation": 3}})
    assert handover_replicas(again, 2) is None
    assert desired_replicas(again, 2) == 2


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
                                  "ModelPrepared": ("Unknown", "NotPreparedYet"),
                                  "GPUCapacity": ("True", "Sufficient"),
                                  "OptionalAPIs": ("True", "AllServed")}


def test_status_while_rolling_out_and_when_stuck() -> None:
    rolling = derive_status(md(), deployment(2, 1, 1), 2, [])
    assert conditions(rolling)["Ready"] == ("False", "ReplicasNotReady")
    assert conditions(rolling)["Progressing"] == ("True", "RollingOut")
    stuck = derive_status(md(), deployment(2, 1, 1, progressing_reason="ProgressDeadlineExceeded"), 2, [])
    assert conditions(stuck)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_blocking_problems_make_it_degraded_and_ready_and_progressing_say_why() -> None:
    # Weights that cannot fit: nothing was applied, so not "ScaledToZero" but the problem itself.
    status = derive_status(md(), None, 0, [Problem("ModelDoesNotFit", "too big"), Problem("X", "y")])
    assert conditions(status)["Degraded"] == ("True", "ModelDoesNotFit")
    assert status["conditions"][2]["message"] == "too big; y"
    assert conditions(status)["Ready"] == ("False", "ModelDoesNotFit")
    assert conditions(status)["Progressing"] == ("False", "ModelDoesNotFit")
    # An edit that cannot work leaves the running pods serving: Ready says so, Progressing does not move.
    running = derive_status(md(), deployment(2, 2, 2), 2, [Problem("ModelDoesNotFit", "too big")])
    assert conditions(running)["Ready"] == ("True", "AllReplicasReady")
    progressing = next(c for c in running["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ModelDoesNotFit")
    assert progressing["message"] == "generation 3 is not applied (see Degraded); the running pods are left as they are"


def test_warnings_leave_degraded_alone_and_name_the_gpu_shortfall() -> None:
    short = Problem("GPUCapacityExhausted", "12 of 20 replicas pending: need 24 more nvidia.com/gpu", GPU_CAPACITY)
    missing = Problem("APINotServed", "monitoring.coreos.com/v1 PodMonitor is not served", OPTIONAL_APIS)
    assert not short.blocking and not missing.blocking and Problem("X", "y").blocking
    status = derive_status(md(replicas=20), deployment(20, 8, 8), 20, [short, missing])
    by_type = {c["type"]: c for c in status["conditions"]}
    assert conditions(status)["Degraded"] == ("False", "AsExpected")
    assert conditions(status)["GPUCapacity"] == ("False", "GPUCapacityExhausted")
    assert by_type["GPUCapacity"]["message"] == short.message
    assert conditions(status)["OptionalAPIs"] == ("False", "APINotServed")
    assert by_type["Ready"]["reason"] == "GPUCapacityExhausted"
    assert by_type["Ready"]["message"] == "8/20 replicas ready (GPUCapacity: GPUCapacityExhausted)"
    assert by_type["Progressing"]["message"] == f"8/20 updated, 8/20 ready; {short.message}"
    stuck = derive_status(md(replicas=20), deployment(20, 8, 8, progressing_reason="ProgressDeadlineExceeded"),
                          20, [short])
    assert next(c for c in stuck["conditions"] if c["type"] == "Progressing")["message"] == f"m; {short.message}"


def test_transition_times_survive_unchanged_conditions() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
           {"type": "Degraded", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    new = merge_transition_times(derive_status(md(), deployment(2, 2, 2), 2, []), old, NOW)
    stamps = {c["type"]: c["lastTransitionTime"] for c in new["conditions"]}
    assert stamps == {"Ready": "2026-01-01T00:00:00Z", "Progressing": "2026-11-28T12:00:00Z",
                      "Degraded": "2026-11-28T12:00:00Z", "ModelPrepared": "2026-11-28T12:00:00Z",
                      "GPUCapacity": "2026-11-28T12:00:00Z", "OptionalAPIs": "2026-11-28T12:00:00Z"}


def test_status_changed_ignores_other_owners_conditions() -> None:
    new = derive_status(md(), deployment(2, 2, 2), 2, [])
    current = {**new, "conditions": [*new["conditions"],
                                     {"type": "ScalingActive", "status": "True", "reason": "x"}]}
    assert not status_changed(new, current)
    assert status_changed(new, {**current, "readyReplicas": 1})
    stamped = merge_transition_times(derive_status(md(), deployment(2, 2, 2), 2, []), [], NOW)
    assert not status_changed(new, stamped), "timestamps alone are no change"


def test_every_reconciler_status_write_sends_the_whole_intent() -> None:
    assert tuple(derive_status(md(), deployment(2, 2, 2), 2, [])) == RECONCILER_STATUS_FIELDS


def test_a_degraded_only_status_carries_the_other_fields_forward() -> None:
    current = merge_transition_times(derive_status(md(), deployment(2, 2, 2), 2, []), [], NOW)
    current["conditions"].append({"type": "ScalingActive", "status": "True", "reason": "x"})  # the autoscaler's
    current["autoscaler"] = {"desiredReplicas": 2}
    status = degraded_only_status(current, Problem("InvalidSpec", "spec.engine.precision: bad"), 4)
    assert status["observedGeneration"] == 4
    for key in ("endpoint", "selector", "desiredReplicas", "replicas", "readyReplicas", "gpus", "replicaSource"):
        assert status[key] == current[key], key
    assert "autoscaler" not in status, "another manager's fields are not the reconciler's to send"
    assert conditions(status) == {"Ready": ("True", "AllReplicasReady"), "Progressing": ("False", "Complete"),
                                  "ModelPrepared": ("Unknown", "NotPreparedYet"),
                                  "GPUCapacity": ("True", "Sufficient"), "OptionalAPIs": ("True", "AllServed"),
                                  "Degraded": ("True", "InvalidSpec")}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-11-28T12:00:00Z"


# managedFields as the API server wrote them for a Deployment after `kubectl scale`, `kubectl set env`
# and `kubectl rollout restart` (recorded from kube-apiserver v1.36), less fields of no interest here.
def ours(replicas: bool = True, env: bool = True) -> dict[str, Any]:
    """The operator's own fieldsV1, with or without spec.replicas and its env var A."""
    container: dict[str, Any] = {".": {}, "f:image": {}, "f:name": {}}
    if env:
        container["f:env"] = {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}}
    return {"f:metadata": {"f:annotations": {"f:tokenworks.dev/applied-hash": {}}},
            "f:spec": {**({"f:replicas": {}} if replicas else {}), "f:selector": {}, "f:template": {
                "f:metadata": {"f:annotations": {"f:tokenworks.dev/engine-config-hash": {}}},
                "f:spec": {"f:containers": {'k:{"name":"triton"}': container}}}}}


OURS = ours()
EXTRA_ENV = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"triton"}': {
    "f:env": {'k:{"name":"EXTRA"}': {".": {}, "f:name": {}, "f:value": {}}}}}}}}}
RESTARTED = {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
    ".": {}, "f:kubectl.kubernetes.io/restartedAt": {}}}}}}
REPLICAS = {"f:spec": {"f:replicas": {}}}
WITHOUT_REPLICAS = ours(replicas=False)


def entry(manager: str, fields: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    return {"manager": manager, "operation": "Apply" if manager == "tokenworks" else "Update",
            "fieldsV1": fields, **({"subresource": subresource} if subresource else {})}


def child(replicas: int, env: list[dict[str, str]], entries: list[dict[str, Any]], rv: str = "7",
          restarted: bool = False) -> dict[str, Any]:
    annotations = {"tokenworks.dev/engine-config-hash": "h"} | (
        {"kubectl.kubernetes.io/restartedAt": "2026-11-28T12:00:00Z"} if restarted else {})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m", "namespace": "ns", "resourceVersion": rv, "generation": int(rv),
                         "uid": "u", "creationTimestamp": "2026-11-28T11:00:00Z",
                         "annotations": {"tokenworks.dev/applied-hash": "a"}, "managedFields": entries},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "triton", "image": "img", "env": env}]}}},
            "status": {"replicas": replicas}}


def test_owned_fields_are_leaves_and_list_elements() -> None:
    assert owned_fields(EXTRA_ENV) == {
        ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"triton"}', "f:env", 'k:{"name":"EXTRA"}'),
        ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"triton"}', "f:env", 'k:{"name":"EXTRA"}',
         "f:name"),
        ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"triton"}', "f:env", 'k:{"name":"EXTRA"}',
         "f:value")}
    # The "." of a map only says the map exists: the annotation is the field.
    assert owned_fields(RESTARTED) == {("f:spec", "f:template", "f:metadata", "f:annotations",
                                        "f:kubectl.kubernetes.io/restartedAt")}
    assert field_name(("f:spec", "f:template", "f:metadata", "f:annotations",
                       "f:kubectl.kubernetes.io/restartedAt")) == \
        "spec.template.metadata.annotations[kubectl.kubernetes.io/restartedAt]"
    assert field_name(("f:spec", "f:ports", 'k:{"containerPort":8000,"protocol":"TCP"}')) == \
        "spec.ports[containerPort=8000,protocol=TCP]"


def test_content_is_compared_without_what_the_server_maintains() -> None:
    live = child(2, [{"name": "A", "value": "1"}], [entry("tokenworks", OURS)])
    dry = child(2, [{"name": "A", "value": "1"}], [entry("tokenworks", OURS)], rv="9")
    dry["status"] = {"replicas": 0}
    dry["metadata"].update(uid="other", creationTimestamp="later")
    assert comparable(live) == comparable(dry)
    assert comparable(live) != comparable(child(5, [{"name": "A", "value": "1"}], [entry("tokenworks", OURS)]))


@pytest.mark.parametrize(("name", "writer", "subresource"), [
    ("kubectl scale deployment", "kubectl", "scale"),
    ("an HPA through /scale: the controller manager is not trusted", "kube-controller-manager", "scale"),
    ("kubectl edit", "kubectl-edit", None),
])
def test_a_taken_replica_count_is_named_after_its_writer(name: str, writer: str, subresource: str | None) -> None:
    env = [{"name": "A", "value": "1"}]
    live = child(5, env, [entry("tokenworks", WITHOUT_REPLICAS), entry(writer, REPLICAS, subresource)])
    dry = child(2, env, [entry("tokenworks", OURS)], rv="8")
    label = f"{writer} (through /scale)" if subresource else writer
    assert fields_taken(live, dry, intent_changed=False) == {label: ["spec.replicas"]}, name


def test_what_is_not_taken() -> None:
    env = [{"name": "A", "value": "1"}]
    # Another owner, but scaled back to the operator's own number: nothing was changed.
    same = child(2, env, [entry("tokenworks", WITHOUT_REPLICAS), entry("kubectl", REPLICAS, "scale")])
    assert fields_taken(same, child(2, env, [entry("tokenworks", OURS)]), intent_changed=False) == {}
    # A field new in the intent is missing from the live object too: not a removal.
    older = child(2, [], [entry("tokenworks", ours(env=False))])
    newer = child(2, env, [entry("tokenworks", OURS)])
    assert fields_taken(older, newer, intent_changed=True) == {}
    # The same, with an unchanged intent: somebody removed it.
    assert fields_taken(older, newer, intent_changed=False) == {
        "a writer that removed it": ["spec.template.spec.containers[name=triton].env[name=A]"]}


def test_fields_another_writer_added_are_kept_and_named() -> None:
    env = [{"name": "A", "value": "1"}, {"name": "EXTRA", "value": "1"}]
    applied = child(2, env, [entry("tokenworks", OURS), entry("kubectl-edit", EXTRA_ENV),
                             entry("kubectl-rollout", RESTARTED),
                             entry("kube-controller-manager", {"f:status": {"f:replicas": {}}}, "status")],
                    restarted=True)
    assert fields_kept(applied) == {"kubectl-edit": ["spec.template.spec.containers[name=triton].env[name=EXTRA]"]}
    # `kubectl rollout restart` alone: kept, and nothing to say.
    restarted = child(2, env[:1], [entry("tokenworks", OURS), entry("kubectl-rollout", RESTARTED)], restarted=True)
    assert fields_kept(restarted) == {}


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


class FakeKube:
    """Just enough of ``KubeApi`` for one reconcile: objects by (kind, namespace, name); Deployments get
    no status (no controller runs). ``unserved``: kinds whose writes fail as after a CRD deletion."""

    def __init__(self, nodes: list[dict[str, Any]], unserved: tuple[str, ...] = ()) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {
            ("Node", None, n["metadata"]["name"]): n for n in nodes}
        self.unserved = set(unserved)
        self.events: list[tuple[str, str, str]] = []
        self.applied: list[str] = []

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return None if found is None else dict(found)

    def list(self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        return [dict(o) for (k, ns, _), o in self.objects.items() if k == kind and namespace in (None, ns)]

    def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        if manifest["kind"] in self.unserved:
            raise KindNotServed(manifest["apiVersion"], manifest["kind"])
        if dry_run:
            return manifest
        self.applied.append(manifest["kind"])
        self.objects[(manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"])] = manifest
        return manifest

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any],
                     field_manager: str = "tokenworks") -> dict[str, Any]:
        self.objects[(kind, namespace, name)]["status"] = status
        return self.objects[(kind, namespace, name)]

    def has_kind(self, api_version: str, kind: str, recheck_seconds: float = 20, fresh: bool = False) -> bool:
        return True  # discovery's cached "yes"; the write is what fails

    def event(self, regarding: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append((type_, reason, message))

    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        raise AssertionError("no test here scales through /scale")

    def add(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj


def gpu_node(name: str, product: str = "NVIDIA-H100-80GB-HBM3", ready: str = "True") -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": ready}]}}


def reconcile_md(kube: FakeKube, replicas: int = 2) -> tuple[Any, dict[str, dict[str, Any]]]:
    if kube.get(API_VERSION, KIND, "ns", "m") is None:
        kube.add({"apiVersion": API_VERSION, "kind": KIND, **md(replicas=replicas).model_dump(
            by_alias=True, exclude_none=True)})
    result = Reconciler(kube, node_cache_seconds=0).reconcile("ns", "m")
    status = kube.get(API_VERSION, KIND, "ns", "m")["status"]  # type: ignore[index]
    return result, {c["type"]: c for c in status["conditions"]}


def test_no_matching_node_still_applies_the_deployment_for_an_autoscaler_to_see() -> None:
    kube = FakeKube([gpu_node("h200", product="NVIDIA-H200")])
    result, by_type = reconcile_md(kube)
    assert kube.applied == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor"]
    assert [p.reason for p in result.problems] == ["NoMatchingGPUNodes"] and not result.problems[0].blocking
    assert (by_type["Degraded"]["status"], by_type["GPUCapacity"]["status"]) == ("False", "False")
    assert by_type["GPUCapacity"]["message"].startswith("2 of 2 replicas pending: no node labelled")
    assert ("Warning", "NoMatchingGPUNodes", by_type["GPUCapacity"]["message"]) in kube.events


def test_an_optional_kind_that_stopped_being_served_is_skipped_and_said() -> None:
    kube = FakeKube([gpu_node("h100")], unserved=("PodMonitor",))
    result, by_type = reconcile_md(kube)
    assert kube.applied == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    assert (by_type["OptionalAPIs"]["status"], by_type["OptionalAPIs"]["reason"]) == ("False", "APINotServed")
    assert by_type["OptionalAPIs"]["message"] == ("monitoring.coreos.com/v1 PodMonitor is not served; metrics are "
                                                  "not scraped by the Prometheus Operator")
    assert by_type["Degraded"]["status"] == "False"
    assert result.requeue_after is None, "the kind's watch notices its return, not a poll per object"


def test_a_required_kind_that_is_not_served_fails_the_reconcile() -> None:
    with pytest.raises(KindNotServed):
        reconcile_md(FakeKube([gpu_node("h100")], unserved=("PodDisruptionBudget",)))


def test_a_lost_node_is_a_condition_and_one_warning_naming_it() -> None:
    kube = FakeKube([gpu_node("h100-0"), gpu_node("h100-1", ready="Unknown")])
    for index, on in enumerate(("h100-0", "h100-1")):
        kube.add({"kind": "Pod", "metadata": {"name": f"m-{index}", "namespace": "ns"},
                  "spec": {"nodeName": on}, "status": {"phase": "Running"}})
    _, by_type = reconcile_md(kube)
    assert (by_type["GPUCapacity"]["status"], by_type["GPUCapacity"]["reason"]) == ("False", "NodeLost")
    assert 'pod m-1 on node "h100-1" (NotReady: Ready=Unknown)' in by_type["GPUCapacity"]["message"]
    reconcile_md(kube)  # the next reconcile sees the same loss: no second Event
    lost = [e for e in kube.events if e[1] == "NodeLost"]
    assert lost == [("Warning", "NodeLost", 'replica pod m-1 on node "h100-1" no longer serves: the node is '
                                            "NotReady: Ready=Unknown")]


def test_a_404_about_a_gone_namespace_is_not_a_missing_kind() -> None:
    from kubernetes.client.rest import ApiException

    from controllers.kube import _not_found_kind

    gone = ApiException(status=404)
    gone.body = '{"kind":"Status","reason":"NotFound","details":{"name":"t-x","kind":"namespaces"},"code":404}'
    assert _not_found_kind(gone) == "namespaces"
    unserved = ApiException(status=404)
    unserved.body = "404 page not found"
    assert _not_found_kind(unserved) is None
