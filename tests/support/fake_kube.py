"""A fake API server for unit tests: objects in a dict, server-side apply for the operator's field manager,
status written per field manager as server-side apply does (a manager's fields it stops sending are
gone), and every request recorded as (verb, kind)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from controllers.kube import FIELD_MANAGER, ManifestT
from controllers.reconcile import comparable
from crds.models import KIND

GPU_NODE = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}
WRITES = ("apply", "dry-run", "patch_status", "event", "scale")


def fields_of(node: Any) -> dict[str, Any]:
    """fieldsV1 of an applied manifest, lists taken as atomic (enough for these tests)."""
    if not isinstance(node, dict):
        return {}
    return {f"f:{k}": fields_of(v) for k, v in node.items()}


def without(fields: dict[str, Any], taken: dict[str, Any]) -> dict[str, Any]:
    """``fields`` less the leaves ``taken`` holds: what a forced apply leaves another manager."""
    kept = {}
    for key, sub in fields.items():
        if key not in taken:
            kept[key] = sub
        elif sub and taken[key]:
            rest = without(sub, taken[key])
            if rest:
                kept[key] = rest
    return kept


class FakeKube:
    """Objects by (kind, namespace, name); server-side apply with force for one manager, the
    operator's; every request recorded as (verb, kind)."""

    def __init__(self, *objects: ManifestT, served: tuple[str, ...] = ()) -> None:
        self.served = set(served)  # optional kinds the API serves (none unless named)
        self.objects: dict[tuple[str, str, str], ManifestT] = {}
        self.requests: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.status_intents: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self.version = 100
        for obj in objects:
            self.store(obj)
            if obj.get("status"):  # as if written by some other manager
                self.status_intents[self.key(obj)] = {"seed": copy.deepcopy(obj["status"])}

    @staticmethod
    def key(obj: ManifestT) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    def store(self, obj: ManifestT) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[self.key(obj)] = obj

    def writes(self) -> Counter[str]:
        return Counter(f"{verb} {kind}" for verb, kind in self.requests if verb in WRITES)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> ManifestT | None:
        self.requests.append(("get", kind))
        return copy.deepcopy(self.objects.get((kind, namespace or "", name)))

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[ManifestT]:
        self.requests.append(("list", kind))
        return [copy.deepcopy(o) for (k, _, _), o in self.objects.items() if k == kind]

    def apply(self, manifest: ManifestT, dry_run: bool = False) -> ManifestT:
        self.requests.append(("dry-run" if dry_run else "apply", manifest["kind"]))
        key = (manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        live = self.objects.get(key)
        if manifest["kind"] == KIND:  # the hand-over: one field of the user's object
            assert live is not None
            result = copy.deepcopy(live)
            result["spec"].update(manifest["spec"])
            result["metadata"]["generation"] += result["spec"] != live["spec"]
        else:
            mine = fields_of({k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")})
            others = [{**e, "fieldsV1": without(e["fieldsV1"], mine)}
                      for e in (live or {}).get("metadata", {}).get("managedFields", [])
                      if e["manager"] != FIELD_MANAGER]
            result = copy.deepcopy(manifest)
            result["metadata"].update(
                uid="uid", generation=(live or {}).get("metadata", {}).get("generation", 0),
                resourceVersion=(live or {}).get("metadata", {}).get("resourceVersion", ""),
                managedFields=[{"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": mine},
                               *(e for e in others if e["fieldsV1"])])
            if live is None or result.get("spec") != live.get("spec"):
                result["metadata"]["generation"] += 1
            result["status"] = copy.deepcopy((live or {}).get("status", {}))
        if not dry_run and (live is None or comparable(result) != comparable(live)
                            or result["metadata"].get("managedFields") != live["metadata"].get("managedFields")):
            self.store(result)
        return copy.deepcopy(result)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                     status: dict[str, Any], field_manager: str = FIELD_MANAGER) -> ManifestT:
        """Each manager's status intent replaces its previous one; the status is all of them,
        conditions merged by type (a list map)."""
        self.requests.append(("patch_status", kind))
        key = (kind, namespace, name)
        intents = self.status_intents.setdefault(key, {})
        intents[field_manager] = copy.deepcopy(status)
        merged: dict[str, Any] = {}
        conditions: dict[str, Any] = {}
        for intent in intents.values():
            for field, value in intent.items():
                if field == "conditions":
                    conditions.update({c["type"]: c for c in value})
                else:
                    merged[field] = value
        if conditions:
            merged["conditions"] = list(conditions.values())
        obj = self.objects[key]
        obj["status"] = merged
        self.store(obj)
        return copy.deepcopy(obj)

    def has_kind(self, api_version: str, kind: str, recheck_seconds: float = 20, fresh: bool = False) -> bool:
        return kind in self.served

    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> ManifestT:
        """The scale subresource: spec.replicas only, owned by the operator through /scale."""
        self.requests.append(("scale", kind))
        obj = self.objects[(kind, namespace, name)]
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 0) + 1
        self.store(obj)
        return {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": replicas}}

    def event(self, regarding: ManifestT, reason: str, message: str, type_: str = "Normal") -> None:
        self.requests.append(("event", reason))
        self.events.append((reason, message, type_))
