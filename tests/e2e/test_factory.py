"""The factory headless on a short scenario: pods Running on the node agent's nodes and serving, Prometheus
scraping them and the operator, the autoscaler scaling up under the trace, the summary, nothing left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import tritonclient.http as triton_http
import yaml

from controllers.factory.run import DEMO_NAMESPACE, Factory, up
from controllers.factory.traffic import ready_endpoints
from tests.support.controlplane import REPO_ROOT
from tests.support.traces import synthetic_trace


def test_a_short_scenario_serves_scales_draws_its_dashboards_and_leaves_nothing(tmp_path: Path) -> None:
    synthetic_trace(tmp_path / "trace.csv", seconds=900, rate=5)
    base = yaml.safe_load((REPO_ROOT / "examples" / "factory" / "llama-8b-chat.yaml").read_text())
    # "chat": the engine path behind tritonserver, so every family a dashboard reads exists. "gw": Triton's
    # OpenAI frontend (engine path) with the KServe frontends beside it: both protocols answer.
    chat = {**base, "metadata": {"name": "chat"}}
    chat["spec"] = {**base["spec"], "engine": {"backend": "tensorrt-engine"},
                    "autoscaling": {**base["spec"]["autoscaling"], "maxReplicas": 3}}
    gw = {**base, "metadata": {"name": "gw"}}
    gw["spec"] = {**base["spec"], "serving": {"frontend": "openai"}, "autoscaling": {
        **base["spec"]["autoscaling"], "maxReplicas": 2}, "engine": {
        "backend": "tensorrt-engine", "image": "registry.example/platform/tritonserver-openai:25.12-trtllm-python-py3"}}
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(chat))
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(gw))
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "compression": 10, "duration": 60,
        "nodes": [{"name": "gpu-h200-0", "product": "H200-SXM"}],
        "deployments": [
            {"manifest": "chat.yaml", "traffic": {"trace": "trace.csv", "shape": [{"at": 0, "rate": 1},
                                                                                  {"at": 10, "rate": 5}]}},
            {"manifest": "gw.yaml", "traffic": {"trace": "trace.csv", "shape": [{"at": 0, "rate": 0.3}]}}],
    }))
    seen: dict[str, Any] = {"pids": set()}

    def watch(factory: Factory, elapsed: float) -> None:
        state = json.loads((factory.workdir / "factory.json").read_text())
        seen["pids"] |= set(state["children"])
        if "served" in seen or elapsed < 8:
            return
        assert factory.plane is not None and factory.agent is not None
        pods = factory.pods(DEMO_NAMESPACE)
        endpoints = {e.pod.rsplit("-", 2)[0]: e for e in ready_endpoints(pods)}
        if set(endpoints) != {"chat", "gw"}:
            return
        assert all(p["spec"]["nodeName"] in factory.agent.nodes for p in pods)
        assert endpoints["chat"].protocol == "triton" and endpoints["gw"].protocol == "openai"
        triton = triton_http.InferenceServerClient(endpoints["chat"].url.removeprefix("http://"))
        with httpx.stream("POST", f"{endpoints['gw'].url}/v1/chat/completions", timeout=30, json={
                "model": "ensemble", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                "stream": True}) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        content = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
        seen["served"] = (triton.is_server_ready(), triton.is_model_ready("ensemble"), len([c for c in content if c]))
        seen["jobs"] = {s["metric"]["job"] for s in factory.query("up == 1")}

    report = up(scenario, tmp_path / "out", keep=False, headless=True, workdir=tmp_path / "work", watch=watch)

    assert seen.get("served") == (True, True, 3)
    assert {"tokenworks-operator", f"{DEMO_NAMESPACE}/chat", f"{DEMO_NAMESPACE}/gw"} <= seen["jobs"]
    rows = {row["name"]: row for row in report["deployments"]}
    assert rows["chat"]["scale_ups"] >= 1, rows["chat"]
    assert rows["chat"]["requests"] > 100 and rows["chat"]["slo_attainment"] is not None
    assert rows["gw"]["requests"] > 0 and rows["gw"]["errors"] < rows["gw"]["requests"]
    # What Grafana would show: every panel of the fleet and of chat's deployment dashboard has data (gw's
    # lacks the first-response histogram: main.py starts Triton without histograms, docs/design/serving-path.md).
    for board in ("fleet", "deployment-chat"):
        drawn = report["dashboards"][board]
        assert Path(drawn["png"]).stat().st_size > 10_000
        empty = [p["title"] for p in drawn["panels"] if not p["series"] or p["errors"]]
        assert empty == [], f"{board}: {empty}"
    written = json.loads((tmp_path / "out" / "factory.json").read_text())
    assert {d["name"] for d in written["deployments"]} == {"chat", "gw"}
    # Nothing left: every process the factory recorded has ended, and so has its state file.
    assert seen["pids"]
    for pid in seen["pids"]:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", pid
    assert not (tmp_path / "work" / "factory.json").exists()
