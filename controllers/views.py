"""What `tokenworks get` and `tokenworks describe` show: pure formatting of API objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from controllers.kube import KubeApi, ManifestT
from crds.models import ModelDeployment
from inference_pods.performance import ReplicaModel, prepare_seconds, spec_fit
from inference_pods.repository import CachePaths, cache_key, model_repository
from inference_pods.templates import CHILD_KINDS


def _condition(obj: ManifestT, type_: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return {}


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return "-"
    created = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def row(obj: ManifestT, now: dt.datetime | None = None) -> list[str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    parallel = spec.get("parallelism") or {}
    gpus_per_replica = int(parallel.get("tensor", 1)) * int(parallel.get("pipeline", 1))
    ready = _condition(obj, "Ready").get("status", "Unknown")
    if _condition(obj, "Degraded").get("status") == "True":
        ready = f"{ready} (Degraded: {_condition(obj, 'Degraded').get('reason')})"
    return [
        obj["metadata"]["name"],
        ready,
        f"{status.get('readyReplicas', 0)}/{status.get('desiredReplicas', 0)}",
        str(status.get("gpus", 0)),
        f"{(spec.get('model') or {}).get('name', '?')}",
        f"{(spec.get('gpu') or {}).get('product', '?')} x{gpus_per_replica}",
        "on" if (spec.get("autoscaling") or {}).get("enabled") else "off",
        age(obj["metadata"].get("creationTimestamp"), now),
    ]


def table(items: list[ManifestT], with_namespace: bool = False) -> Table:
    grid = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAME", "READY", "REPLICAS", "GPUS", "MODEL", "GPU", "AUTOSCALING", "AGE"]
    for column in (["NAMESPACE"] if with_namespace else []) + columns:
        grid.add_column(column)
    for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        grid.add_row(*([obj["metadata"]["namespace"]] if with_namespace else []), *row(obj))
    return grid


def children_of(kube: KubeApi, obj: ManifestT) -> list[ManifestT]:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    found = []
    for kind in CHILD_KINDS:
        try:
            if kind.optional and not kube.has_kind(kind.api_version, kind.kind):
                continue
            child = kube.get(kind.api_version, kind.kind, namespace, name + kind.name_suffix)
        except Exception:
            if not kind.optional:
                raise
            continue  # an optional child is best effort here: the viewer may not be allowed to read it
        if child is not None:
            found.append(child)
    return found


def describe(obj: ManifestT, children: list[ManifestT], events: list[dict[str, Any]]) -> Group:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    model, engine = spec.get("model") or {}, spec.get("engine") or {}
    parallel, scaling = spec.get("parallelism") or {}, spec.get("autoscaling") or {}
    source = model.get("huggingFace") or model.get("ngc") or (model.get("pvc") or {}).get("claimName")
    lines = [
        f"[bold]Name:[/]        {meta['namespace']}/{meta['name']}",
        f"[bold]Model:[/]       {model.get('name')} ({model.get('profile')}) from {source}",
        f"[bold]Engine:[/]      TensorRT-LLM {engine.get('precision')}, max batch "
        f"{engine.get('maxBatchSize')}, max tokens {engine.get('maxNumTokens')}",
        f"[bold]GPUs:[/]        {(spec.get('gpu') or {}).get('product')} x "
        f"{int(parallel.get('tensor', 1)) * int(parallel.get('pipeline', 1))} per replica "
        f"(TP{parallel.get('tensor')} PP{parallel.get('pipeline')})",
        f"[bold]Replicas:[/]    {status.get('readyReplicas', 0)} ready / "
        f"{status.get('desiredReplicas', 0)} desired; autoscaling "
        + (f"on [{scaling.get('minReplicas')}..{scaling.get('maxReplicas')}]"
           if scaling.get("enabled") else f"off (spec.replicas={spec.get('replicas')})"),
        f"[bold]Endpoint:[/]    {status.get('endpoint', '-')}",
        f"[bold]Generation:[/]  {meta.get('generation')} (observed {status.get('observedGeneration')})",
    ]
    conditions = Table("TYPE", "STATUS", "REASON", "MESSAGE", box=None, header_style="bold",
                       title="Conditions", title_justify="left")
    for condition in status.get("conditions") or []:
        conditions.add_row(condition.get("type", ""), condition.get("status", ""),
                           condition.get("reason", ""), condition.get("message", ""))
    kids = Table("KIND", "NAME", "STATE", box=None, header_style="bold", title="Children",
                 title_justify="left")
    for child in children:
        child_status = child.get("status") or {}
        state = (f"{child_status.get('readyReplicas', 0)}/{(child.get('spec') or {}).get('replicas')}"
                 " ready" if child["kind"] == "Deployment" else "present")
        kids.add_row(child["kind"], child["metadata"]["name"], state)
    recent = Table("TYPE", "REASON", "AGE", "MESSAGE", box=None, header_style="bold",
                   title="Events", title_justify="left")
    ordered = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    for event in ordered[-10:]:
        recent.add_row(event.get("type", ""), event.get("reason", ""),
                       age(event.get("lastTimestamp") or event.get("eventTime")),
                       Text(event.get("message", "")))
    return Group(*lines, "", conditions, "", kids, "", recent)


# Request shapes a plan reports capacity for: the Azure 2023 traces' means (conv, code) and a long one.
PLAN_SHAPES = ((1155, 211, "chat (Azure conv mean)"), (2048, 28, "code (Azure code mean)"),
               (8000, 500, "long context"))


def plan(md: ModelDeployment, children: list[ManifestT], replicas: int) -> Group:
    """A dry run: the children, and what one replica of this engine can serve per the model."""
    spec = md.spec
    replica = ReplicaModel.for_spec(spec)
    fit = spec_fit(spec)
    load = replica.load_seconds()
    prepare = prepare_seconds(replica.model, spec.engine.precision, spec.engine.backend)
    first_start = prepare + load
    lines = [
        f"[bold]{md.name}[/]: {spec.model.shape_name} {spec.engine.precision} on {replica.gpus} x {spec.gpu.product} "
        f"per replica (TP{spec.parallelism.tensor} PP{spec.parallelism.pipeline}), {replicas} replica(s), "
        f"{replicas * replica.gpus} GPUs",
        f"weights per GPU {fit.weight_bytes_per_gpu / 1e9:.1f} GB of {fit.usable_bytes_per_gpu / 1e9:.1f} GB usable"
        + ("" if fit.fits else "  [red]does not fit[/]"),
        f"KV cache {replica.kv_capacity_tokens:,} tokens; decode step at batch 1 "
        f"{replica.decode_seconds(1, 1000) * 1e3:.1f} ms",
        f"{spec.engine.backend} backend; start with the model cache empty about "
        f"{first_start:.0f} s (prepare {prepare:.0f} s, estimated, + engine load {load:.0f} s); with the cache "
        f"key complete {load:.0f} s (key {cache_key(spec)})",
    ]
    capacity = Table("REQUEST SHAPE", "IN/OUT TOKENS", "CONCURRENT", "OUTPUT TOKENS/S AT SATURATION",
                     box=None, header_style="bold", title="One replica, per the performance model",
                     title_justify="left")
    for isl, osl, label in PLAN_SHAPES:
        capacity.add_row(label, f"{isl}/{osl}", str(replica.max_concurrency(isl, osl)),
                         f"{replica.saturation_throughput(isl, osl):,.0f}")
    kids = Table("KIND", "NAME", "DETAIL", box=None, header_style="bold", title="Children", title_justify="left")
    for child in children:
        detail = ""
        if child["kind"] == "Deployment":
            container = child["spec"]["template"]["spec"]["containers"][0]
            probe = container["startupProbe"]
            detail = (f"replicas {child['spec']['replicas']}, {container['image']}, nvidia.com/gpu "
                      f"{container['resources']['limits']['nvidia.com/gpu']}, startup allowance "
                      f"{probe['periodSeconds'] * probe['failureThreshold']} s")
        elif child["kind"] == "Service":
            detail = ", ".join(f"{p['name']} {p['port']}" for p in child["spec"]["ports"])
        kids.add_row(child["kind"], child["metadata"]["name"], detail)
    return Group(*lines, "", capacity, "", kids)


def pod_details(md: ModelDeployment, children: list[ManifestT]) -> Group:
    """`plan --show`: the pod's init step and launch, and every file of the model repository it writes."""
    deployment = next(c for c in children if c["kind"] == "Deployment")
    config = next(c for c in children if c["kind"] == "ConfigMap")["data"]
    pod = deployment["spec"]["template"]["spec"]
    parts: list[Any] = ["[bold]Init container[/] prepare: " + " ".join(pod["initContainers"][0]["command"]),
                        Syntax(config["prepare.sh"], "bash", word_wrap=True), "",
                        "[bold]Container[/] triton: " + " ".join(pod["containers"][0]["command"]), "",
                        f"[bold]Model repository[/] ({CachePaths.of(md.spec).repository})"]
    for path, text in model_repository(md.spec).items():
        parts += [f"[bold]{path}[/]", Syntax(text, "yaml" if path.endswith(".yaml") else "protobuf",
                                             word_wrap=True)]
    return Group(*parts)


def explain(obj: ManifestT) -> Group:
    """`tokenworks explain`: the last decision as a person wants it."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    scaling = spec.get("autoscaling") or {}
    if not scaling.get("enabled"):
        return Group(f"{meta['namespace']}/{meta['name']}: autoscaling is off; spec.replicas="
                     f"{spec.get('replicas')} rules the count.")
    autoscaler = status.get("autoscaler") or {}
    last = autoscaler.get("lastDecision")
    if not last:
        return Group(f"{meta['namespace']}/{meta['name']}: no decision yet (is the operator running with "
                     "--prometheus-url?)")
    mode = " (advisory: recorded, not applied)" if scaling.get("advisory") else ""
    lines: list[Any] = [
        f"[bold]{meta['namespace']}/{meta['name']}[/]: {last['replicas']} replicas{mode}, decided {last['time']} "
        f"by [bold]{last['rule']}[/]",
        f"  {last['reason']}",
        f"  bounds [{scaling.get('minReplicas')}..{scaling.get('maxReplicas')}], SLO TTFT "
        f"{(scaling.get('slo') or {}).get('ttftMilliseconds')} ms, ITL "
        f"{(scaling.get('slo') or {}).get('interTokenLatencyMilliseconds')} ms at "
        f"p{100 * float((scaling.get('slo') or {}).get('percentile', 0.95)):.0f}",
        "",
    ]
    signals = Table("SIGNAL", "VALUE", "TARGET", "RECOMMENDS", "WHY", box=None, header_style="bold")
    for signal in last.get("signals", []):
        value = signal.get("value")
        target = signal.get("target")
        signals.add_row(
            signal["signal"] + (" [bold]<- won[/]" if signal["signal"] == last["rule"] else ""),
            "-" if value is None else f"{value:.4g}", "-" if target is None else f"{target:.4g}",
            "-" if signal.get("replicas") is None else str(signal["replicas"]), Text(signal.get("note", "")))
    lines.append(signals)
    if last.get("stages"):
        stages = Table("STAGE", "REPLICAS", "RULE", "WHY", box=None, header_style="bold")
        for stage in last["stages"]:
            stages.add_row(stage["stage"], str(stage["replicas"]), stage["rule"], Text(stage.get("note", "")))
        lines += ["", "[bold]Stages that changed the count:[/]", stages]
    if last.get("latencyInfeasible"):
        lines += ["", "Latency is over target at any count (requests slow even alone): the throughput signal "
                  "sizes the fleet."]
    conditions = Table("CONDITION", "STATUS", "REASON", "MESSAGE", box=None, header_style="bold")
    for condition in status.get("conditions") or []:
        if condition["type"] in ("AbleToScale", "ScalingActive", "ScalingLimited", "MetricsAvailable"):
            conditions.add_row(condition["type"], condition["status"], condition["reason"],
                               Text(condition.get("message", "")))
    lines += ["", conditions]
    if last.get("whatWouldChange"):
        lines += ["", "[bold]What would change the outcome:[/]",
                  *[f"  - {change}" for change in last["whatWouldChange"]]]
    return Group(*lines)
