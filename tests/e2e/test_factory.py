"""The factory headless on a short scenario: pods Running on the node agent's nodes and serving, Prometheus
scraping them and the operator, the autoscaler scaling up under the trace, the summary, nothing left."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import tritonclient.http as triton_http
import yaml
from kubernetes import client

from controllers.factory.run import DEMO_NAMESPACE, Factory, up
from controllers.factory.traffic import ready_endpoints
from tests.support.controlplane import REPO_ROOT


def synthetic_trace(path: Path, seconds: float, rate: float) -> Path:
    """An Azure-format trace (TIMESTAMP, ContextTokens, GeneratedTokens) at a steady ``rate``."""
    start = dt.datetime(2023, 11, 16, 18, 0, 0)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(int(seconds * rate)):
        at = start + dt.timedelta(seconds=i / rate)
        lines.append(f"{at:%Y-%m-%d %H:%M:%S.%f}0,{600 + (i * 37) % 800},{120 + (i * 53) % 160}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_short_scenario_serves_scales_and_leaves_nothing(tmp_path: Path) -> None:
    synthetic_trace(tmp_path / "trace.csv", seconds=900, rate=5)
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "factory" / "llama-8b-chat.yaml").read_text())
    manifest["spec"]["autoscaling"]["maxReplicas"] = 3
    # Triton's OpenAI frontend (engine path) with the KServe frontends beside it: both protocols answer.
    manifest["spec"]["engine"] = {"backend": "tensorrt-engine",
                                  "image": "registry.example/platform/tritonserver-openai:25.12-trtllm-python-py3"}
    manifest["spec"]["serving"] = {"frontend": "openai"}
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(manifest))
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "compression": 10, "duration": 60,
        "nodes": [{"name": "gpu-h200-0", "product_label": "NVIDIA-H200", "gpus": 8}],
        "deployments": [{"manifest": "model.yaml", "traffic": {
            "trace": "trace.csv", "shape": [{"at": 0, "rate": 1}, {"at": 10, "rate": 5}]}}],
    }))
    seen: dict[str, Any] = {"pids": set()}

    def watch(factory: Factory, elapsed: float) -> None:
        state = json.loads((factory.workdir / "factory.json").read_text())
        seen["pids"] |= set(state["children"])
        if "served" in seen or elapsed < 8:
            return
        assert factory.plane is not None and factory.agent is not None
        api = factory.plane.api_client()
        pods = api.sanitize_for_serialization(client.CoreV1Api(api).list_namespaced_pod(DEMO_NAMESPACE))["items"]
        endpoints = ready_endpoints(pods)
        if not endpoints:
            return
        assert all(p["spec"]["nodeName"] in factory.agent.nodes for p in pods)
        assert endpoints[0].protocol == "openai"
        pod = next(p for p in pods if p["metadata"]["name"] == endpoints[0].pod)
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        triton = triton_http.InferenceServerClient(f"{pod['status']['podIP']}:{ports['http']}")
        with httpx.stream("POST", f"{endpoints[0].url}/v1/chat/completions", timeout=30, json={
                "model": "ensemble", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                "stream": True}) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        content = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
        seen["served"] = (triton.is_server_ready(), triton.is_model_ready("ensemble"), len([c for c in content if c]))
        up_series = factory.query("up == 1")
        seen["jobs"] = {s["metric"]["job"] for s in up_series}
        seen["pod_series"] = factory.query(
            'sum by (namespace, tokenworks_dev_model_deployment) (nv_inference_request_success)')

    report = up(scenario, tmp_path / "out", keep=False, headless=True, workdir=tmp_path / "work", watch=watch)

    assert seen.get("served") == (True, True, 3)
    assert {"tokenworks-operator", f"{DEMO_NAMESPACE}/llama-8b-chat"} <= seen["jobs"]
    assert [s["metric"] for s in seen["pod_series"]] == [
        {"namespace": DEMO_NAMESPACE, "tokenworks_dev_model_deployment": "llama-8b-chat"}]
    (row,) = report["deployments"]
    assert row["scale_ups"] >= 1, row
    assert row["requests"] > 100 and row["slo_attainment"] is not None
    written = json.loads((tmp_path / "out" / "factory.json").read_text())
    assert written["deployments"][0]["name"] == "llama-8b-chat"
    # Nothing left: every process the factory recorded has ended, and so has its state file.
    assert seen["pids"]
    for pid in seen["pids"]:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", pid
    assert not (tmp_path / "work" / "factory.json").exists()
