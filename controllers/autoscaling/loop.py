"""The autoscaler loop: one batched read per tick, a decision for every autoscaled ModelDeployment,
and a status write only where the decision changed.

The decision state (recommendation history, throughput trend, panic and idle timers) lives in
``status.autoscaler`` so a restarted operator neither forgets its windows nor scales down: on its first
tick for a ModelDeployment it also records the current count in the history, so nothing scales down
within one stabilization window of a restart.

A decision carries the ``metadata.generation`` it was made under; one of another generation is stale
(made before autoscaling was switched off and on again, or before a spec edit): it is not resumed, and
the loop starts from the Deployment's current count. Every status write sends the autoscaler's whole
intent, since server-side apply removes the fields a manager stops sending.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from controllers.autoscaling.observer import DEFAULT_SHAPE, count_pods, observe
from controllers.autoscaling.policy import Decision, decide
from controllers.autoscaling.signals import Observations, Reading
from controllers.autoscaling.state import PolicyState
from controllers.kube import KubeApi, ManifestT
from controllers.metrics import SIGNALS, MetricSource, SignalReadings, Target
from controllers.reconcile import desired_replicas
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods.performance import ReplicaModel
from inference_pods.templates import (
    INSTANCE_LABEL,
    LEADER_WORKER_SET,
    LWS_API_VERSION,
    MANAGED_BY,
    needs_multi_node,
)

log = logging.getLogger("tokenworks.autoscaler")
FIELD_MANAGER = "tokenworks-autoscaler"

SIGNAL_VALUE = Gauge("tokenworks_autoscaler_signal", "Signal value read for a ModelDeployment (NaN: missing).",
                     ["namespace", "name", "signal"])
RECOMMENDATION = Gauge("tokenworks_autoscaler_recommendation", "Replicas each signal recommends (NaN: none).",
                       ["namespace", "name", "signal"])
TARGET = Gauge("tokenworks_autoscaler_target", "Per-replica target of each signal.", ["namespace", "name", "signal"])
DESIRED = Gauge("tokenworks_autoscaler_desired_replicas", "Replicas decided.", ["namespace", "name"])
DECISIONS = Counter("tokenworks_autoscaler_decisions_total", "Decisions by the rule that decided and their "
                    "direction (up, down, hold: against the count before the decision).",
                    ["namespace", "name", "rule", "direction"])
METRICS_AVAILABLE = Gauge("tokenworks_autoscaler_metrics_available", "1 when every signal was read.",
                          ["namespace", "name"])
SIGNAL_OK = Gauge("tokenworks_autoscaler_signal_ok", "1 when the signal was read and fresh; 0 when it was empty, "
                  "an error, NaN or stale (status.autoscaler.lastDecision says which).",
                  ["namespace", "name", "signal"])
INFEASIBLE = Gauge("tokenworks_autoscaler_latency_infeasible", "1 while latency is over target at any replica "
                   "count (the SLO cannot be met by scaling; throughput decides).", ["namespace", "name"])
TICK_SECONDS = Histogram("tokenworks_autoscaler_tick_duration_seconds", "One autoscaler tick: the metric "
                         "queries, the lists and every decision.",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAST_TICK = Gauge("tokenworks_autoscaler_last_tick_timestamp_seconds", "When the last tick that did not fail "
                  "ended (Unix time).")

Family = Gauge | Counter



def _stamp(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def capacity_for(md: ModelDeployment, observations: Observations | None = None) -> float:
    """Output tokens/s per replica within the SLO: the spec's figure, or the performance model's at the
    observed input/output ratio (the default shape where prompts are not counted, as on llmapi)."""
    scaling = md.spec.autoscaling
    if scaling.tokens_per_second_per_replica:
        return scaling.tokens_per_second_per_replica
    replica = ReplicaModel.for_spec(md.spec)
    isl, osl = DEFAULT_SHAPE
    if observations is None:
        return replica.capacity_at_slo(scaling.slo.inter_token_latency_milliseconds / 1e3, isl, osl)
    inputs, outputs = observations.input_tokens_per_second, observations.output_tokens_per_second
    if inputs.ok and outputs.ok and inputs.value and outputs.value:
        isl = max(16, min(16000, round(osl * inputs.value / outputs.value)))
    return replica.capacity_at_slo(scaling.slo.inter_token_latency_milliseconds / 1e3, isl, osl)


def inference_pool_of(md: ModelDeployment) -> str | None:
    """The InferencePool whose endpoint picker fronts ``md``'s pods, or None. Its TTFT, ITL and queue are
    then read and preferred to the pods' (docs/monitoring.md, "The endpoint picker's signals"). The
    operator names the pool after the ModelDeployment (inference_pods/templates.py)."""
    return md.name if md.spec.routing.inference_pool is not None else None


def target_for(md: ModelDeployment) -> Target:
    """What the metric source is asked about one autoscaled ModelDeployment."""
    scaling = md.spec.autoscaling
    return Target(md.namespace, md.name, scaling.slo.percentile,
                  scaling.activation.query if scaling.activation else None, inference_pool_of(md))


def decision_record(decision: Decision, now: float) -> dict[str, Any]:
    """What `tokenworks explain` shows: every signal, its target and recommendation, the rule."""
    return {
        "time": _stamp(now),
        "replicas": decision.replicas,
        "rule": decision.rule,
        "reason": decision.reason,
        "signals": [{"signal": r.signal, "value": r.value, "target": r.target, "replicas": r.replicas,
                     "note": r.note} for r in decision.recommendations],
        "stages": [{"stage": t.stage, "replicas": t.replicas, "rule": t.rule, "note": t.note}
                   for t in decision.stages],
        "capacityTokensPerSecond": round(decision.capacity, 1),
        "latencyInfeasible": decision.infeasible,
        "whatWouldChange": decision.what_would_change,
    }


def fingerprint(decision: Decision) -> str:
    """The parts of a decision worth a write: not the readings, which move every tick. Condition
    messages count: they name the metric source, which a restart with other flags changes."""
    return json.dumps([decision.replicas, decision.rule, [r.replicas for r in decision.recommendations],
                       [(c.type, c.status, c.reason, c.message) for c in decision.conditions]])


class AutoscalerLoop:
    def __init__(self, kube: KubeApi, source: MetricSource, clock: Callable[[], float] = time.time,
                 namespaces: list[str] | None = None) -> None:
        self.kube = kube
        self.source = source
        self.clock = clock
        self.namespaces = namespaces or []
        # Decision state per ModelDeployment, authoritative while this process lives; status holds the
        # copy written with the last changed decision, for the next process.
        self._states: dict[tuple[str, str], PolicyState] = {}
        # The label sets exported per ModelDeployment: one no longer autoscaled (or gone) stops being
        # exported rather than staying frozen at its last values.
        self._series: dict[tuple[str, str], set[tuple[Family, tuple[str, ...]]]] = {}

    def _child(self, family: Family, *labels: str) -> Any:
        self._series.setdefault((labels[0], labels[1]), set()).add((family, labels))
        return family.labels(*labels)

    def _drop_series(self, key: tuple[str, str]) -> None:
        for family, labels in self._series.pop(key, set()):
            family.remove(*labels)

    def _list(self, api_version: str, kind: str, selector: str | None = None) -> list[ManifestT]:
        scopes: list[str | None] = list(self.namespaces) or [None]
        return [item for ns in scopes for item in self.kube.list(api_version, kind, ns, selector)]

    def tick(self) -> dict[tuple[str, str], Decision]:
        started = time.monotonic()
        try:
            decisions = self._tick()
        finally:
            TICK_SECONDS.observe(time.monotonic() - started)
        # Only a tick that ran through: one failing every time must look stalled to the alert.
        LAST_TICK.set(time.time())
        return decisions

    def _tick(self) -> dict[tuple[str, str], Decision]:
        now = self.clock()
        models = []
        for obj in self._list(API_VERSION, KIND):
            try:
                md = ModelDeployment.model_validate(obj)
            except ValueError:
                continue  # the reconciler reports it as Degraded
            if md.spec.autoscaling.enabled and not obj["metadata"].get("deletionTimestamp"):
                models.append((md, obj))
        # A ModelDeployment no longer autoscaled (or gone) loses its in-process state: switched on
        # again, it starts from the current count, not from the windows of before.
        autoscaled = {(md.namespace, md.name) for md, _ in models}
        for key in [k for k in self._states if k not in autoscaled]:
            del self._states[key]
        for key in [k for k in self._series if k not in autoscaled]:
            self._drop_series(key)
        if not models:
            return {}
        # Each ModelDeployment decides on its own spec.autoscaling.tickSeconds; the loop runs at the
        # shortest of them and skips those not due.
        due = []
        for md, obj in models:
            state = self._states.get((md.namespace, md.name))
            last = state.last_decision if state is not None else None
            if last is None or now - last >= md.spec.autoscaling.tick_seconds - 0.5:
                due.append((md, obj))
        models = due
        if not models:
            return {}
        targets = {(md.namespace, md.name): target_for(md) for md, _ in models}
        try:
            readings = self.source.observe(list(targets.values()), now)
        except Exception as error:  # the source is broken: every signal is an error, never a zero
            log.warning("metric source failed error=%s", error)
            readings = {t: SignalReadings({s: Reading.error(str(error)) for s in SIGNALS})
                        for t in targets.values()}
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                       for d in self._list("apps/v1", "Deployment", selector)}
        if any(needs_multi_node(md.spec) for md, _ in models) and self.kube.has_kind(LWS_API_VERSION,
                                                                                       LEADER_WORKER_SET):
            # A multi-node model's workload is its LeaderWorkerSet (spec.replicas: groups), not a Deployment.
            groups = {(w["metadata"]["namespace"], w["metadata"]["name"]): w
                      for w in self._list(LWS_API_VERSION, LEADER_WORKER_SET, selector)}
            deployments.update({key: groups[key] for md, _ in models
                                if needs_multi_node(md.spec) and (key := (md.namespace, md.name)) in groups})
        pods: dict[tuple[str, str], list[ManifestT]] = {}
        for pod in self._list("v1", "Pod", selector):
            owner = (pod["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
            if owner:
                pods.setdefault((pod["metadata"]["namespace"], owner), []).append(pod)

        decisions = {}
        for md, obj in models:
            key = (md.namespace, md.name)
            try:
                decisions[key] = self._decide(md, obj, readings[targets[key]], deployments.get(key),
                                              pods.get(key, []), now)
            except Exception:
                log.exception("autoscaling failed object=%s/%s", *key)
        return decisions

    def _decide(self, md: ModelDeployment, obj: ManifestT, readings: SignalReadings, deployment: ManifestT | None,
                pods: list[ManifestT], now: float) -> Decision:
        key = (md.namespace, md.name)
        saved = ((obj.get("status") or {}).get("autoscaler") or {})
        fresh = saved.get("generation") == obj["metadata"].get("generation")
        # The count the system is moving to: the last decision of this generation, unless advisory.
        # The Deployment's spec lags a reconcile behind it; holding "the Deployment's count" right
        # after a decision would undo that decision. A stale decision is not the count: the
        # Deployment's is.
        applied = saved.get("desiredReplicas")
        current = int(applied) if isinstance(applied, int) and fresh and not md.spec.autoscaling.advisory \
            else int(((deployment or {}).get("spec") or {}).get("replicas", desired_replicas(md)))
        replica_model = ReplicaModel.for_spec(md.spec)
        observations = observe(readings, md.spec.engine.backend, replica_model, count_pods(pods, current),
                               md.spec.autoscaling.slo.ttft_milliseconds / 1e3)
        state = self._states.get(key)
        if state is None:
            # First look since this process started: resume the saved windows, and nothing scales down
            # within one window.
            state = PolicyState.restore(saved.get("state") if fresh else None, current, now)
        spec = md.spec
        capacity = capacity_for(md, observations)
        decision = decide(observations, spec.autoscaling, capacity, replica_model.load_seconds(), state, now,
                          prefill_tokens_per_second=replica_model.prefill_capacity())
        self._states[key] = decision.state
        self._export(md, decision, observations, current)
        if fingerprint(decision) != saved.get("fingerprint") or saved.get("desiredReplicas") != decision.replicas \
                or not fresh:
            self._write(md, obj, decision, now, current)
        return decision

    def _export(self, md: ModelDeployment, decision: Decision, observations: Observations, current: int) -> None:
        labels = (md.namespace, md.name)
        for signal, reading in observations.metric_readings().items():
            self._child(SIGNAL_VALUE, *labels, signal).set(
                reading.value if reading.ok and reading.value is not None else math.nan)
            self._child(SIGNAL_OK, *labels, signal).set(1 if reading.ok else 0)
        for rec in decision.recommendations:
            self._child(RECOMMENDATION, *labels, rec.signal).set(math.nan if rec.replicas is None else rec.replicas)
            self._child(TARGET, *labels, rec.signal).set(math.nan if rec.target is None else rec.target)
        self._child(DESIRED, *labels).set(decision.replicas)
        direction = "up" if decision.replicas > current else "down" if decision.replicas < current else "hold"
        self._child(DECISIONS, *labels, decision.rule, direction).inc()
        self._child(METRICS_AVAILABLE, *labels).set(1 if decision.metrics_available else 0)
        self._child(INFEASIBLE, *labels).set(1 if decision.infeasible else 0)

    def _write(self, md: ModelDeployment, obj: ManifestT, decision: Decision, now: float, current: int) -> None:
        advisory = md.spec.autoscaling.advisory
        status = autoscaler_status(obj, decision, now, current, advisory)
        self.kube.patch_status(API_VERSION, KIND, md.namespace, md.name, status, field_manager=FIELD_MANAGER)
        if decision.replicas != current:
            verb = "would scale" if advisory else "scaled"
            self.kube.event(obj, "Scaled" if not advisory else "ScaleAdvised",
                            f"{verb} from {current} to {decision.replicas}: {decision.reason}")
            log.info("%s object=%s/%s from=%d to=%d rule=%s", verb.replace(" ", "_"), md.namespace, md.name,
                     current, decision.replicas, decision.rule)


def autoscaler_status(obj: ManifestT, decision: Decision, now: float, current: int, advisory: bool) -> dict[str, Any]:
    """The autoscaler's whole status intent (field manager ``tokenworks-autoscaler``): the decision
    stamped with the generation it was made under, its conditions, and ``lastScalingDecision``: a new
    one when the count changes, else the live one carried forward (server-side apply would drop it).
    Pure."""
    live = obj.get("status") or {}
    previous = {c["type"]: c for c in live.get("conditions") or []}
    conditions = []
    for c in decision.conditions:
        truth = "True" if c.status else "False"
        before = previous.get(c.type, {})
        conditions.append({
            "type": c.type, "status": truth, "reason": c.reason, "message": c.message,
            "lastTransitionTime": before.get("lastTransitionTime", _stamp(now))
            if before.get("status") == truth else _stamp(now),
        })
    status: dict[str, Any] = {
        "autoscaler": {"desiredReplicas": decision.replicas, "advisory": advisory,
                       "generation": obj["metadata"].get("generation"), "state": decision.state.dump(),
                       "fingerprint": fingerprint(decision), "lastDecision": decision_record(decision, now)},
        "conditions": conditions,
    }
    if decision.replicas != current:
        status["lastScalingDecision"] = {"time": _stamp(now), "replicas": decision.replicas,
                                         "reason": decision.reason}
    elif live.get("lastScalingDecision"):
        status["lastScalingDecision"] = live["lastScalingDecision"]
    return status
