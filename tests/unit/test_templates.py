"""Pure rendering of a ModelDeployment's children: Triton pod spec field by field, Service, PDB, ConfigMap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from crds.models import ModelDeployment
from inference_pods import templates

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str, **spec_overrides: Any) -> ModelDeployment:
    raw = next(d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d["kind"] == "ModelDeployment")
    raw["metadata"].update(namespace="ns", uid="1234", generation=1)
    raw["spec"].update(spec_overrides)
    return ModelDeployment.model_validate(raw)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_children_of_the_70b_tp4_example() -> None:
    md = load("llama-70b-h200-tp4.yaml")
    children = by_kind(templates.render_children(md, 2, pod_monitor_api=False))
    assert set(children) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    for child in children.values():
        assert child["metadata"]["namespace"] == "ns"
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "tokenworks.dev/v1alpha1", "kind": "ModelDeployment", "name": "llama-70b",
            "uid": "1234", "controller": True, "blockOwnerDeletion": True}]

    deployment = children["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (prepare,) = pod["initContainers"]
    # The image pinned for the llmapi backend; no registry host unless the operator names one.
    assert container["image"] == prepare["image"] == "nvidia/tritonserver:26.07-trtllm-python-py3"
    assert by_kind(templates.render_children(md, 2, pod_monitor_api=False, image_registry="registry.example"))[
        "Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/nvidia/tritonserver:26.07-trtllm-python-py3"
    command = container["command"]
    assert command[:4] == ["mpirun", "--allow-run-as-root", "-n", "1"] and ":" not in command  # world size 1
    assert "--metrics-config=histogram_latencies=true" in command
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(command)
    assert prepare["command"] == ["bash", "/etc/tokenworks/prepare.sh"]
    assert prepare["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # 70B BF16 TP4 loads in ~68.5 s: the startup probe allows (2 x 68.5 + 60) s.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * 68 + 60
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": templates.PRESTOP_SLEEP_SECONDS}}
    assert pod["terminationGracePeriodSeconds"] > templates.PRESTOP_SLEEP_SECONDS + templates.DRAIN_SECONDS
    assert f"--exit-timeout-secs={templates.DRAIN_SECONDS}" in command
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression["key"] == "nvidia.com/gpu.product" and "NVIDIA-H200" in expression["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    data = children["ConfigMap"]["data"]
    engine = json.loads(data["engine.json"])
    assert engine["tensorParallelSize"] == 4 and engine["precision"] == "bf16" and engine["backend"] == "llmapi"
    assert "tensor_parallel_size: 4" in data["repository.tensorrt_llm.1.model.yaml"]
    # Every ConfigMap key reaches the pod at its path in the repository.
    config = next(v for v in pod["volumes"] if v["name"] == "engine-config")["configMap"]
    assert {i["key"] for i in config["items"]} == set(data)
    assert engine["model"]["ngc"] == "nvidia/llama-3.3-70b-instruct:1.0"
    assert children["Service"]["spec"]["selector"] == {templates.INSTANCE_LABEL: "llama-70b"}
    assert children["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_pvc_sources_and_cache_claims_are_mounted() -> None:
    md = load("llama-8b-from-pvc.yaml")
    pod = templates.deployment(md, 2, "h")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "engine-cache"}


def test_pod_monitor_only_when_the_api_exists() -> None:
    md = load("llama-8b-h100.yaml")
    assert "PodMonitor" not in by_kind(templates.render_children(md, 1, pod_monitor_api=False))
    monitor = by_kind(templates.render_children(md, 1, pod_monitor_api=True))["PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_engine_config_change_rolls_the_pods_and_replicas_do_not() -> None:
    md = load("llama-8b-h100.yaml")
    changed = load("llama-8b-h100.yaml", engine={"precision": "fp8", "maxBatchSize": 64})

    def pod_hash(model: ModelDeployment, replicas: int) -> str:
        deployment = by_kind(templates.render_children(model, replicas, pod_monitor_api=False))["Deployment"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"][templates.CONFIG_HASH_ANNOTATION])

    assert pod_hash(md, 1) == pod_hash(md, 3)
    assert pod_hash(md, 1) != pod_hash(changed, 1)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_rendering_is_deterministic(example: str) -> None:
    md = load(example)
    first = templates.render_children(md, 2, pod_monitor_api=True)
    assert first == templates.render_children(md, 2, pod_monitor_api=True)


def test_token_secret_reaches_only_the_prepare_step() -> None:
    md = load("llama-8b-h100.yaml")
    raw = md.model_dump(by_alias=True, exclude_none=True)
    raw["spec"]["model"]["tokenSecret"] = {"name": "hf"}
    pod = templates.deployment(ModelDeployment.model_validate(raw), 1, "h")["spec"]["template"]["spec"]
    (prepare,) = pod["initContainers"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in prepare["env"]
    assert all(e["name"] != "HF_TOKEN" for e in pod["containers"][0]["env"])


def test_a_new_cache_key_rolls_the_pods() -> None:
    md = load("llama-8b-h100.yaml")
    other = load("llama-8b-h100.yaml", model={**md.spec.model.model_dump(by_alias=True, exclude_none=True),
                                               "revision": "abc123"})

    def key(model: ModelDeployment) -> str:
        deployment = templates.deployment(model, 1, "h")
        return str(deployment["spec"]["template"]["metadata"]["annotations"][templates.CACHE_KEY_ANNOTATION])

    assert key(md) != key(other)


@pytest.mark.parametrize(("replicas", "max_unavailable"), [(0, 0), (1, 0), (2, 1), (5, 1)])
def test_a_drain_never_takes_the_whole_model_down(replicas: int, max_unavailable: int) -> None:
    # One replica: no voluntary eviction at all; two or more: one at a time.
    pdb = by_kind(templates.render_children(load("llama-8b-h100.yaml"), replicas, pod_monitor_api=False))[
        "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == max_unavailable
    assert pdb["spec"]["selector"] == {"matchLabels": {templates.INSTANCE_LABEL: "llama-8b"}}
