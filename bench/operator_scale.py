"""Operator at scale: 1,000 ModelDeployments across 50 namespaces on 100 KWOK GPU nodes.

    .venv/bin/python bench/operator_scale.py [--count 1000] [--namespaces 50] [--nodes 100] [--rest-seconds 130]

First the baseline: ``kubectl apply --server-side`` of the same ModelDeployments and then of their
rendered children (what the operator would write), with no operator running; its namespaces are then
deleted. Then the operator (its ServiceAccount, leader election on) converges the same ModelDeployments
applied in one ``kubectl apply --server-side``. Prints: time to converge against the baseline (target
within 2x), API requests per reconcile, writes at rest over ``--rest-seconds`` after every ModelDeployment
is settled, and the operator's peak memory (target below 300 MiB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crds.models import GROUP, PLURAL, VERSION, ModelDeployment
from inference_pods.templates import render_children
from tests.support.controlplane import ControlPlane, GpuNodeSpec
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig


def model_deployment(i: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{i:04d}", "namespace": namespace},
        "spec": {
            "model": {"name": f"model-{i:04d}", "profile": "Llama-3.1-8B",
                      "huggingFace": "meta-llama/Llama-3.1-8B-Instruct"},
            "gpu": {"product": "H100-SXM"},
            "replicas": 1,
        },
    }


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(check: Any, what: str, timeout: float = 1800, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def all_items(plane: ControlPlane) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(plane.api_client()).list_cluster_custom_object(
        GROUP, VERSION, PLURAL)["items"]
    return items


def kubectl_apply(plane: ControlPlane, documents: list[dict[str, Any]], chunk: int = 500) -> None:
    for start in range(0, len(documents), chunk):
        plane.kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-",
                      input=yaml.safe_dump_all(documents[start:start + chunk]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--settle-seconds", type=float, default=90)
    parser.add_argument("--rest-seconds", type=float, default=130)  # two resync passes
    args = parser.parse_args()

    nodes = [GpuNodeSpec(f"gpu-h100-{i:03d}") for i in range(args.nodes)]
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="tokenworks-bench-"))).start()
    try:
        plane.start_full(nodes)
        install_api_and_rbac(plane)

        # -- the baseline: kubectl creates the same objects and their children --------------
        base = [f"base-{n:02d}" for n in range(args.namespaces)]
        for namespace in base:
            plane.kubectl("create", "namespace", namespace)
        manifests = [model_deployment(i, base[i % len(base)]) for i in range(args.count)]
        started = time.monotonic()
        kubectl_apply(plane, manifests)
        created = [ModelDeployment.model_validate(o) for o in all_items(plane)]
        kubectl_apply(plane, [c for md in created for c in render_children(md, 1, pod_monitor_api=False)])
        baseline = time.monotonic() - started
        children = sum(len(render_children(md, 1, pod_monitor_api=False)) for md in created)
        plane.kubectl("delete", "namespace", *base, "--wait=true", "--timeout=30m")

        # -- the operator ---------------------------------------------------------------------
        kubeconfig = service_account_kubeconfig(plane, plane.workdir / "operator.kubeconfig")
        operator = OperatorProcess(plane, kubeconfig, "bench", resync_seconds=60).start()
        wait(operator.is_leader, "leadership", 60, 0.2)
        spaces = [f"fleet-{n:02d}" for n in range(args.namespaces)]
        for namespace in spaces:
            plane.kubectl("create", "namespace", namespace)
        manifests = [model_deployment(i, spaces[i % len(spaces)]) for i in range(args.count)]

        def reconciled() -> bool:
            items = all_items(plane)
            return len(items) == args.count and all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"] for o in items)

        started = time.monotonic()
        kubectl_apply(plane, manifests)
        wait(reconciled, "every ModelDeployment reconciled", interval=0.5)
        converged = time.monotonic() - started
        deployments = client.AppsV1Api(plane.api_client()).list_deployment_for_all_namespaces(
            label_selector="app.kubernetes.io/managed-by=tokenworks").items
        assert len(deployments) == args.count, len(deployments)
        reconciles = operator.metric("tokenworks_reconcile_total")
        requests = operator.metric("tokenworks_api_requests_total")

        def settled() -> bool:
            # Statuses keep changing while pods start (and 800 GPUs hold 800 of 1,000 replicas): at
            # rest means every rollout is as far as it will get and the operator has said so.
            items = all_items(plane)
            return all(any((c["type"] == "Progressing" and c["reason"] in ("Complete", "ProgressDeadlineExceeded"))
                           or (c["type"] == "GPUCapacity" and c["status"] == "False")
                           for c in (o.get("status") or {}).get("conditions", [])) for o in items)

        wait(settled, "every rollout settled", timeout=1800, interval=5)
        settled_after = time.monotonic() - started
        # The GPU shortfall messages of pending replicas are computed from a 30 s cache of bound pods and
        # looked at again every 60 s: one more pass lets them reach their final numbers.
        time.sleep(args.settle_seconds)
        rest_started = time.time()
        writes_before = operator.metric("tokenworks_api_requests_total", 'verb="write"')
        reconciles_before = operator.metric("tokenworks_reconcile_total")
        time.sleep(args.rest_seconds)
        writes_at_rest = operator.metric("tokenworks_api_requests_total", 'verb="write"') - writes_before
        rest_reconciles = operator.metric("tokenworks_reconcile_total") - reconciles_before
        assert operator.process is not None
        rss = peak_rss_mib(operator.process.pid)

        print(f"model deployments:                  {args.count} in {args.namespaces} namespaces, "
              f"{args.nodes} KWOK nodes x 8 GPUs")
        print(f"baseline kubectl apply --server-side: {baseline:.1f} s ({args.count} objects + {children} children)")
        print(f"operator: children + status:        {converged:.1f} s after apply "
              f"({converged / baseline:.2f}x the baseline; target <= 2x)")
        print(f"every rollout settled:              {settled_after:.1f} s after apply")
        print(f"reconciles until converged:         {reconciles:.0f}")
        print(f"API requests per reconcile:         {requests / reconciles:.1f} (reads and writes, watches excluded)")
        print(f"writes at rest:                     {writes_at_rest:.0f} in {args.rest_seconds:.0f} s "
              f"({rest_reconciles:.0f} reconciles in that window)")
        print(f"operator peak memory (VmHWM):       {rss:.0f} MiB (target < 300)")
        rest_writes = Counter(
            f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource') or '-'}"
            for e in plane.audit_writes() if e.get("userAgent", "").startswith(operator.user_agent)
            and e["objectRef"].get("resource") != "leases"
            and dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            > rest_started)
        if rest_writes:
            print(f"writes at rest, by kind:            {dict(rest_writes)}")
        operator.stop()
    finally:
        plane.stop()
        plane.keep_or_remove(keep=False)


if __name__ == "__main__":
    main()
