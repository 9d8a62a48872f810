"""Operator at scale: apply 200 ModelDeployments at once against the full control plane (KWOK GPU
nodes) and report time to convergence, API requests per reconcile, writes per minute at rest and the
operator's peak memory.

    .venv/bin/python bench/operator_scale.py [--count 200] [--rest-seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.controlplane import ControlPlane, GpuNodeSpec
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig


def model_deployment(i: int) -> dict[str, object]:
    return {
        "apiVersion": "tokenworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"model-{i:03d}", "namespace": "bench"},
        "spec": {
            "model": {"name": f"model-{i:03d}", "profile": "Llama-3.1-8B",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rest-seconds", type=float, default=60)
    args = parser.parse_args()

    nodes = [GpuNodeSpec(f"gpu-h100-{i}") for i in range((args.count + 7) // 8)]
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="tokenworks-bench-"))).start()
    try:
        plane.start_full(nodes)
        install_api_and_rbac(plane)
        kubeconfig = service_account_kubeconfig(plane, plane.workdir / "operator.kubeconfig")
        operator = OperatorProcess(plane, kubeconfig, "bench", resync_seconds=300).start()
        while not operator.is_leader():
            time.sleep(0.2)
        plane.kubectl("create", "namespace", "bench")
        manifests = "---\n".join(yaml.safe_dump(model_deployment(i)) for i in range(args.count))
        custom = client.CustomObjectsApi(plane.api_client())

        started = time.monotonic()
        plane.kubectl("apply", "--server-side", "-f", "-", input=manifests)
        while True:
            items = custom.list_namespaced_custom_object(
                "tokenworks.dev", "v1alpha1", "bench", "modeldeployments")["items"]
            done = [o for o in items if (o.get("status") or {}).get("observedGeneration")
                    == o["metadata"]["generation"] and (o.get("status") or {}).get("desiredReplicas") == 1]
            if len(done) == args.count:
                break
            time.sleep(0.5)
        converged = time.monotonic() - started
        deployments = client.AppsV1Api(plane.api_client()).list_namespaced_deployment("bench").items
        assert len(deployments) == args.count, len(deployments)

        reconciles = operator.metric("tokenworks_reconcile_total")
        requests = operator.metric("tokenworks_api_requests_total")
        # Pods keep becoming Ready for a while after the children exist: wait for a quiet minute-long
        # baseline only once every status says Ready.
        while True:
            items = custom.list_namespaced_custom_object(
                "tokenworks.dev", "v1alpha1", "bench", "modeldeployments")["items"]
            ready = [o for o in items if any(c["type"] == "Ready" and c["status"] == "True"
                                             for c in (o.get("status") or {}).get("conditions", []))]
            if len(ready) == args.count:
                break
            time.sleep(1)
        ready_after = time.monotonic() - started
        time.sleep(5)
        writes_before = operator.metric("tokenworks_api_requests_total", 'verb="write"')
        time.sleep(args.rest_seconds)
        writes_at_rest = operator.metric("tokenworks_api_requests_total", 'verb="write"') - writes_before
        assert operator.process is not None
        rss = peak_rss_mib(operator.process.pid)

        print(f"model deployments:                 {args.count} on {len(nodes)} KWOK nodes x 8 GPUs")
        print(f"children + observedGeneration:     {converged:.1f} s after apply")
        print(f"every one Ready (pods Running):    {ready_after:.1f} s after apply")
        print(f"reconciles until converged:        {reconciles:.0f}")
        print(f"API requests per reconcile:        {requests / reconciles:.1f} (reads and writes, watches excluded)")
        print(f"writes per minute at rest:         {writes_at_rest * 60 / args.rest_seconds:.1f}")
        print(f"operator peak memory (VmHWM):      {rss:.0f} MiB")
        operator.stop()
    finally:
        plane.stop()
        plane.keep_or_remove(keep=False)


if __name__ == "__main__":
    main()
