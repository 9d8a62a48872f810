"""Multi-node replicas: LeaderWorkerSet rendering (sizes, leader and worker launch, labels, policies), the
LLM-API keys of the new parallelism, and the reconcile against a fake API server (Degraded without the
LeaderWorkerSet API, nothing applied; with it, the group count through /scale and status from its groups), and
the autoscaler's count of groups."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
import yaml

from controllers.autoscaling.loop import AutoscalerLoop
from controllers.capacity import Placement, shortfall
from controllers.kube import ManifestT
from controllers.metrics import FakeMetricSource, Target
from controllers.reconcile import Reconciler, derive_status, engine_limit_problems, multi_node_problems
from crds.gpus import GPU_PRODUCTS
from crds.models import API_VERSION, KIND, ModelDeployment
from inference_pods import groups, templates
from inference_pods.performance import profiles_for, weights_fit
from inference_pods.repository import engine_build_commands
from tests.support.fake_kube import GPU_NODE, FakeKube


def raw(product: str = "H100-SXM", tensor: int = 16, pipeline: int = 1, profile: str = "Llama-3.1-405B",
        **spec: Any) -> ManifestT:
    body: ManifestT = {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"name": "m", "profile": profile, "huggingFace": "x/y"},
                 "engine": {"precision": "fp8" if product != "GB200" else "fp4"},
                 "parallelism": {"tensor": tensor, "pipeline": pipeline},
                 "modelCache": {"sizeLimit": "2Ti"},
                 "gpu": {"product": product}, "replicas": 2},
        "status": {}}
    body["spec"].update(spec)
    return body


def md_of(body: ManifestT) -> ModelDeployment:
    return ModelDeployment.model_validate(body)


def lws_of(md: ModelDeployment, replicas: int = 2) -> ManifestT:
    children = {c["kind"]: c for c in templates.render_children(md, replicas)}
    assert "Deployment" not in children
    return children["LeaderWorkerSet"]


@pytest.mark.parametrize(("product", "tensor", "pipeline", "pods", "gpus"), [
    ("H100-SXM", 16, 1, 2, 8),   # TP16 on 8-GPU nodes
    ("H100-SXM", 8, 2, 2, 8),    # TP8 x PP2: DeepSeek-R1's layout
    ("H100-SXM", 8, 4, 4, 8),
    ("GB200", 8, 1, 2, 4),       # TP8 over two 4-GPU compute trays
    ("GB200", 16, 2, 8, 4),
    # Pods of whole tensor-parallel groups: 12 GPUs as 2 x 6 would put ranks 4-7 (one TP group) on two pods.
    ("H100-SXM", 4, 3, 3, 4),
    ("GB200", 2, 4, 2, 4),       # two pipeline stages per tray
    ("H100-SXM", 1, 9, 3, 3),    # no tensor parallelism: three stages per pod
])
def test_a_replica_larger_than_a_node_is_a_group_of_pods_of_whole_tensor_groups(
        product: str, tensor: int, pipeline: int, pods: int, gpus: int) -> None:
    md = md_of(raw(product, tensor, pipeline))
    assert templates.needs_multi_node(md.spec)
    lws = lws_of(md)
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == pods
    assert pods * gpus == tensor * pipeline
    for role in ("leaderTemplate", "workerTemplate"):
        (container,) = template[role]["spec"]["containers"]
        assert container["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert lws["spec"]["replicas"] == 2


@pytest.mark.parametrize(("product", "tensor"), [("H100-SXM", 8), ("H100-SXM", 1), ("GB200", 4), ("L40S", 8)])
def test_a_replica_that_fits_a_node_renders_what_it_always_did(product: str, tensor: int) -> None:
    md = md_of(raw(product, tensor, profile="Llama-3.1-8B", engine={"precision": "bf16"}))
    assert not templates.needs_multi_node(md.spec)
    children = templates.render_children(md, 2)
    assert [c["kind"] for c in children] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor"]
    deployment = children[1]
    assert deployment == templates.deployment(md, 2, templates.digest(children[0]["data"]))
    pod = deployment["spec"]["template"]
    assert templates.GROUP_LABEL not in pod["metadata"]["labels"]
    assert "podAffinity" not in pod["spec"]["affinity"]
    assert children[3]["spec"]["selector"] == {"matchLabels": templates.selector_labels("m")}


def test_the_leader_launches_the_mpi_world_and_the_workers_host_its_ranks() -> None:
    md = md_of(raw("H100-SXM", 8, 2, profile="DeepSeek-R1"))
    template = lws_of(md)["spec"]["leaderWorkerTemplate"]
    leader, worker = template["leaderTemplate"], template["workerTemplate"]
    (lead,), (work,) = leader["spec"]["containers"], worker["spec"]["containers"]
    script = lead["command"][2]
    assert lead["command"][:2] == ["bash", "-c"]
    # One rank per GPU of the group, 8 slots on each of the two pods, Triton only under trtllm-llmapi-launch.
    assert "-n 16 trtllm-llmapi-launch tritonserver" in script
    assert 'hosts="$LWS_LEADER_ADDRESS:8"' in script and "$leader-$i.$domain:8" in script
    assert "--mca plm_rsh_agent ssh" in script and "-p 2222" in script
    assert "--http-port=8000" in script and "--metrics-port=8002" in script
    assert "sshd" in work["command"][2] and "mpirun" not in work["command"][2]
    assert "tritonserver" not in work["command"][2]
    # The leader is probed as the single-node pod is; a worker only on its sshd port.
    assert lead["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "startupProbe" in lead and "livenessProbe" in lead
    # Its budget also covers the workers' first download (671 GB at 1 GB/s, twice: 135 probes of 10 s).
    single_probe = templates.pod_template(md, "h", gpus=8)["spec"]["containers"][0]["startupProbe"]
    assert lead["startupProbe"]["failureThreshold"] == single_probe["failureThreshold"] + 135
    assert work["readinessProbe"] == {"tcpSocket": {"port": "mpi-ssh"}, "periodSeconds": 5, "failureThreshold": 3}
    assert "startupProbe" not in work and "livenessProbe" not in work
    assert [p["name"] for p in work["ports"]] == ["mpi-ssh"]
    # Same ConfigMap, model cache and prepare step as the single-node pod; the group's key pair on both.
    single = templates.pod_template(md, "h", gpus=8)["spec"]
    for pod in (leader["spec"], worker["spec"]):
        assert pod["initContainers"] == single["initContainers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["engine-config"] == {v["name"]: v for v in single["volumes"]}["engine-config"]
        assert volumes["mpi-ssh"]["secret"]["secretName"] == templates.MPI_SSH_SECRET
        assert pod["securityContext"] == single["securityContext"]


def test_only_leaders_are_selected_by_the_service_and_every_pod_by_the_budget() -> None:
    md = md_of(raw())
    children = {c["kind"]: c for c in templates.render_children(md, 3)}
    template = children["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    leader = template["leaderTemplate"]["metadata"]["labels"]
    worker = template["workerTemplate"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    service, budget = children["Service"]["spec"]["selector"], children["PodDisruptionBudget"]["spec"]
    monitor = children["PodMonitor"]["spec"]["selector"]["matchLabels"]
    assert selects(service, leader) and not selects(service, worker)
    assert selects(monitor, leader) and not selects(monitor, worker)
    assert selects(budget["selector"]["matchLabels"], leader) and selects(budget["selector"]["matchLabels"], worker)
    assert budget["maxUnavailable"] == 1  # one pod, so one group, at a time
    assert "prometheus.io/scrape" not in template["workerTemplate"]["metadata"]["annotations"]


def test_group_policies_are_spelled_out() -> None:
    spec = lws_of(md_of(raw()))["spec"]
    assert spec["startupPolicy"] == "LeaderCreated"
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert spec["rolloutStrategy"] == {"type": "RollingUpdate",
                                       "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1}}
    assert spec["networkConfig"] == {"subdomainPolicy": "UniquePerReplica"}


def test_an_nvl72_group_is_kept_in_one_nvlink_domain() -> None:
    gb200 = lws_of(md_of(raw("GB200", 8)))["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        (term,) = gb200[role]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "nvidia.com/gpu.clique"
        assert term["matchLabelKeys"] == ["leaderworkerset.sigs.k8s.io/group-key"]
        assert term["labelSelector"] == {"matchLabels": {"leaderworkerset.sigs.k8s.io/name": "m"}}
    h100 = lws_of(md_of(raw("H100-SXM", 16)))["spec"]["leaderWorkerTemplate"]
    assert "podAffinity" not in h100["leaderTemplate"]["spec"]["affinity"]
    assert GPU_PRODUCTS["GB200"].nvlink_domain == 72


def model_yaml(md: ModelDeployment) -> dict[str, Any]:
    config = templates.config_map(md)
    loaded: dict[str, Any] = yaml.safe_load(config["data"]["repository.tensorrt_llm.1.model.yaml"])
    return loaded


def test_model_yaml_carries_the_parallelism() -> None:
    moe = md_of(raw("H100-SXM", 8, 2, profile="DeepSeek-R1", parallelism={
        "tensor": 8, "pipeline": 2, "expert": 8, "attentionDataParallel": True},
        engine={"precision": "fp8", "kvCachePrecision": "fp8"}))
    args = model_yaml(moe)
    assert (args["tensor_parallel_size"], args["pipeline_parallel_size"]) == (8, 2)
    assert args["moe_expert_parallel_size"] == 8
    assert args["enable_attention_dp"] is True
    assert args["gpus_per_node"] == 8
    assert args["kv_cache_config"]["dtype"] == "fp8"
    dense = model_yaml(md_of(raw("H100-SXM", 4, profile="Llama-3.3-70B", engine={"precision": "bf16"})))
    assert {"moe_expert_parallel_size", "enable_attention_dp", "gpus_per_node"}.isdisjoint(dense)
    assert "dtype" not in dense["kv_cache_config"]
    tray = model_yaml(md_of(raw("GB200", 8)))
    assert tray["gpus_per_node"] == 4 and tray["dtype"] == "auto"  # an NVFP4 checkpoint carries its format


def test_fp4_engines_are_quantised_to_nvfp4() -> None:
    md = md_of(raw("B200", 8, profile="Llama-3.3-70B", engine={"precision": "fp4", "backend": "tensorrt-engine"}))
    convert = engine_build_commands(md.spec)[0]
    assert "--qformat nvfp4" in convert and "--kv_cache_dtype fp8" in convert
    bf16_cache = md_of(raw("B200", 8, profile="Llama-3.3-70B", engine={
        "precision": "fp4", "backend": "tensorrt-engine", "kvCachePrecision": "bf16"}))
    assert "--kv_cache_dtype" not in engine_build_commands(bf16_cache.spec)[0]


# -- reconcile ------------------------------------------------------------------------------------------
def reconcile(kube: FakeKube, reconciler: Reconciler) -> Counter[str]:
    kube.requests.clear()
    reconciler.reconcile("ns", "m")
    return kube.writes()


def conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.objects[(KIND, "ns", "m")]["status"]["conditions"]}


def test_without_the_leader_worker_set_api_nothing_is_applied() -> None:
    kube = FakeKube(raw(), copy.deepcopy(GPU_NODE))
    writes = reconcile(kube, Reconciler(kube, image_registry=""))
    assert not [w for w in writes if w.startswith("apply") or w.startswith("scale")]
    assert {k for k, _, _ in kube.objects} == {KIND, "Node"}
    degraded = conditions(kube)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "LeaderWorkerSetAPINotServed")
    assert "kubernetes-sigs/lws" in degraded["message"] and templates.LWS_VERSION in degraded["message"]
    assert "2 pods" in degraded["message"]
    assert conditions(kube)["Ready"]["message"].startswith("nothing is deployed")


def test_with_the_api_the_group_is_applied_and_counted_through_scale() -> None:
    kube = FakeKube(raw(), copy.deepcopy(GPU_NODE), served=("LeaderWorkerSet", "PodMonitor"))
    reconciler = Reconciler(kube, image_registry="")
    created = reconcile(kube, reconciler)
    assert created["apply LeaderWorkerSet"] == 1 and created["apply Deployment"] == 0
    assert created["scale LeaderWorkerSet"] == 0  # created at its count
    lws = kube.objects[("LeaderWorkerSet", "ns", "m")]
    assert lws["spec"]["replicas"] == 2
    assert "Degraded" in conditions(kube) and conditions(kube)["Degraded"]["status"] == "False"

    # A new count: written through /scale, and the apply restates it.
    model = kube.objects[(KIND, "ns", "m")]
    model["spec"]["replicas"] = 3
    model["metadata"]["generation"] = 2
    kube.store(model)
    scaled = reconcile(kube, reconciler)
    assert scaled["scale LeaderWorkerSet"] == 1
    assert kube.objects[("LeaderWorkerSet", "ns", "m")]["spec"]["replicas"] == 3

    # Status counts groups: the LeaderWorkerSet's ready groups are the ready replicas.
    lws = kube.objects[("LeaderWorkerSet", "ns", "m")]
    # As the LWS controller writes it: its conditions carry no observedGeneration.
    lws["status"] = {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
                     "conditions": [{"type": "Available", "status": "True"}]}
    kube.store(lws)
    reconcile(kube, reconciler)
    status = kube.objects[(KIND, "ns", "m")]["status"]
    assert (status["readyReplicas"], status["gpus"]) == (3, 48)
    assert conditions(kube)["Ready"]["status"] == "True"
    assert conditions(kube)["Progressing"]["reason"] == "Complete"
    # No pod exists here (no LeaderWorkerSet controller): GPUCapacity counts the group's missing pods.
    assert conditions(kube)["GPUCapacity"]["message"].startswith("6 of 6 pods pending (3 replicas of 2 pods")
    assert reconcile(kube, reconciler) == Counter(), "nothing written at rest: no scale, no apply"
    placed = {c["type"]: c for c in derive_status(md_of(model), lws, 3, [])["conditions"]}["GPUCapacity"]
    assert placed["message"] == "every replica has its 2 nodes with 8 GPUs each"


def test_an_lws_with_groups_on_an_older_revision_is_not_rolled_out() -> None:
    # No observedGeneration anywhere in a LeaderWorkerSet's status: its updatedReplicas says the rollout.
    md = md_of(raw())
    lws = {"kind": "LeaderWorkerSet", "metadata": {"generation": 4}, "spec": {"replicas": 2},
           "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 1,
                      "conditions": [{"type": "Available", "status": "True"}]}}
    assert derive_status(md, lws, 2, [])["conditions"][1]["reason"] == "RollingOut"
    lws["status"]["updatedReplicas"] = 2
    assert derive_status(md, lws, 2, [])["conditions"][1]["reason"] == "Complete"


@pytest.mark.parametrize(("spec", "reason"), [
    ({"serving": {"frontend": "openai"}, "engine": {"precision": "fp8", "backend": "tensorrt-engine",
                                                "image": "tokenworks/triton-openai:1"}},
     "MultiNodeFrontendUnsupported"),
])
def test_multi_node_specs_that_cannot_work_are_degraded(spec: dict[str, Any], reason: str) -> None:
    kube = FakeKube(raw(**spec), copy.deepcopy(GPU_NODE), served=("LeaderWorkerSet",))
    reconcile(kube, Reconciler(kube, image_registry=""))
    assert conditions(kube)["Degraded"]["reason"] == reason
    assert ("LeaderWorkerSet", "ns", "m") not in kube.objects


@pytest.mark.parametrize(("tensor", "pipeline", "per_node", "split"), [
    (4, 3, 8, (3, 4)), (8, 2, 8, (2, 8)), (2, 4, 4, (2, 4)), (16, 1, 8, (2, 8)), (8, 1, 4, (2, 4)),
    (2, 5, 8, (5, 2)),  # 4, 6 and 8 do not divide 10: a pod per tensor group
    (4, 2, 8, (1, 8)),  # one node
    (12, 1, 8, None), (12, 2, 8, None),  # a tensor group over one and a half nodes
])
def test_a_split_follows_the_parallelism(tensor: int, pipeline: int, per_node: int,
                                         split: tuple[int, int] | None) -> None:
    assert groups.replica_split(tensor, pipeline, per_node) == split
    if split is not None:
        pods, per_pod = split
        assert pods * per_pod == tensor * pipeline and per_pod <= per_node
        # Each pod holds whole tensor-parallel groups, or is a whole node of a larger one.
        assert per_pod % tensor == 0 or (per_pod == per_node and tensor % per_node == 0)


def test_a_tensor_group_over_part_of_a_node_is_degraded_with_the_values_that_work() -> None:
    # The API takes powers of two only; a spec from before that rule (or an older CRD) is still refused.
    md = md_of(raw("H100-SXM", 8))
    bad = md.model_copy(update={"spec": md.spec.model_copy(update={
        "parallelism": md.spec.parallelism.model_copy(update={"tensor": 12})})})
    assert not templates.group_splits(bad.spec)
    (problem,) = multi_node_problems(bad, lws_served=True)
    assert problem.reason == "ReplicaDoesNotSplit"
    assert "parallelism.tensor at most 8" in problem.message and "or a multiple of 8" in problem.message
    assert "tensor 8 x pipeline 2" in problem.message


def test_pods_of_part_of_a_node_launch_and_count_their_own_gpus() -> None:
    # TP4 x PP3 on H100: 3 pods of 4 GPUs, and everything sized per pod follows (slots, LLM-API mapping,
    # build workers, capacity).
    md = md_of(raw("H100-SXM", 4, 3, profile="Llama-3.3-70B", engine={"precision": "bf16"}))
    template = lws_of(md)["spec"]["leaderWorkerTemplate"]
    script = template["leaderTemplate"]["spec"]["containers"][0]["command"][2]
    assert 'hosts="$LWS_LEADER_ADDRESS:4"' in script and "$leader-$i.$domain:4" in script
    assert "-n 12 trtllm-llmapi-launch" in script
    assert model_yaml(md)["gpus_per_node"] == 4
    engine = md_of(raw("H100-SXM", 4, 3, profile="Llama-3.3-70B", engine={
        "precision": "bf16", "backend": "tensorrt-engine"}))
    assert engine_build_commands(engine.spec)[1].endswith("--workers 4")
    placement = Placement.of(md)
    assert (placement.gpus, placement.pods_per_replica, placement.whole_nodes) == (4, 3, False)
    found = shortfall(placement, 1, [], [], [])
    assert found is not None and found.message.startswith("3 of 3 pods pending (1 replicas of 3 pods, 4 GPUs each)")
    placed = {c["type"]: c for c in derive_status(md, None, 1, [])["conditions"]}["GPUCapacity"]
    assert placed["message"] == "every replica has room for its 3 pods of 4 GPUs each"


def test_a_model_that_fits_no_node_says_how_many_nodes_and_what_is_missing() -> None:
    # DeepSeek-R1 in BF16 (1.3 TB) on one 8 x H100 node, in a cluster without the LeaderWorkerSet API.
    body = raw("H100-SXM", 8, profile="DeepSeek-R1", engine={"precision": "bf16"})
    kube = FakeKube(body, copy.deepcopy(GPU_NODE))
    reconcile(kube, Reconciler(kube, image_registry=""))
    degraded = conditions(kube)["Degraded"]
    assert degraded["reason"] == "ModelDoesNotFit"
    assert "no single H100-SXM node (8 GPUs) holds it" in degraded["message"]
    assert "LeaderWorkerSet is not served" in degraded["message"]
    fewest = int(degraded["message"].split("at least ")[1].split(" GPUs")[0])
    model, gpu = profiles_for(md_of(body).spec.model, "H100-SXM")
    assert weights_fit(model, gpu, "bf16", fewest).fits and not weights_fit(model, gpu, "bf16", fewest // 2).fits
    assert not [k for k, _, _ in kube.objects if k not in (KIND, "Node")]


def test_attention_dp_copies_count_against_the_fit() -> None:
    # DeepSeek-R1 BF16 on 8 x B200 fits split eight ways (167.8 GB per GPU), not with attention DP (197.7 GB).
    body = raw("B200", 8, profile="DeepSeek-R1", engine={"precision": "bf16"},
               parallelism={"tensor": 8, "expert": 8, "attentionDataParallel": True})
    kube = FakeKube(body, copy.deepcopy(GPU_NODE))
    reconcile(kube, Reconciler(kube, image_registry=""))
    degraded = conditions(kube)["Degraded"]
    assert degraded["reason"] == "ModelDoesNotFit"
    assert "197.7 GB of weights per GPU" in degraded["message"] and "attention DP" in degraded["message"]


def test_with_attention_dp_a_request_must_fit_one_ranks_kv_cache() -> None:
    # DeepSeek-R1 FP8, DEP8 on H200 with a 10% KV fraction: the group holds ~474k tokens, one rank ~59k; a
    # 160k-token request lives on one rank, so it cannot be admitted.
    engine = {"precision": "fp8", "maxNumTokens": 4096, "maxInputLength": 100_000, "maxOutputLength": 60_000,
              "kvCacheFreeGpuMemFraction": 0.1}
    parallelism = {"tensor": 8, "expert": 8, "attentionDataParallel": True}
    md = md_of(raw("H200-SXM", 8, profile="DeepSeek-R1", engine=engine, parallelism=parallelism))
    (problem,) = [p for p in engine_limit_problems(md) if "KV" in p.message]
    assert problem.reason == "EngineLimitTooLarge"
    assert "each attention-DP rank" in problem.message and "160000 tokens" in problem.message
    # Without attention DP it fits: MLA's KV is copied to every TP rank either way, but each rank then holds
    # an eighth of the attention weights too (83.9 GB per GPU, not 98.9), leaving ~166k tokens of cache.
    split = md_of(raw("H200-SXM", 8, profile="DeepSeek-R1", engine=engine,
                      parallelism={"tensor": 8, "expert": 8}))
    assert not [p for p in engine_limit_problems(split) if "KV" in p.message]


def test_pending_groups_are_counted_in_pods_of_one_node_each() -> None:
    placement = Placement.of(md_of(raw()))
    assert (placement.gpus, placement.pods_per_replica) == (8, 2)
    node = copy.deepcopy(GPU_NODE)
    found = shortfall(placement, 1, [], [node], [])
    assert found is not None and found.reason == "GPUCapacityExhausted"
    # One free 8-GPU node holds one of the group's two pods: 8 more GPUs are needed, on another node.
    assert found.message.startswith("2 of 2 pods pending (1 replicas of 2 pods, one per node)")
    assert "need 8 more nvidia.com/gpu" in found.message and "room for 1 pod" in found.message


def test_the_autoscaler_counts_a_multi_node_model_from_its_groups() -> None:
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "tokensPerSecondPerReplica": 1000.0,
                   "scaleDownStabilizationSeconds": 120}
    kube = FakeKube(raw(replicas=1, autoscaling=autoscaling), served=("LeaderWorkerSet",))
    # Three groups running, no decision saved (a restarted operator): the live count is the groups'.
    kube.store({"apiVersion": templates.LWS_API_VERSION, "kind": "LeaderWorkerSet",
                "metadata": {"name": "m", "namespace": "ns"}, "spec": {"replicas": 3}})
    for i in range(3):
        kube.store({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"m-{i}", "namespace": "ns", "labels": {templates.INSTANCE_LABEL: "m"}},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    # A first look holds the current count for one window: 3 groups, not spec.replicas' 1.
    assert first_decision(kube, tokens=500, requests=2.5, kv=0.2) == 3


def first_decision(kube: FakeKube, *, tokens: float, requests: float, kv: float) -> int:
    """The autoscaler's first decision for ns/m, with a fresh state, under a steady load."""
    source = FakeMetricSource()
    source.set(Target("ns", "m", 0.95), outputTokensPerSecond=tokens, outputTokensPerSecondShort=tokens,
               inputTokensPerSecond=tokens, requestsPerSecond=requests, requestSeconds=15.5, firstResponseSeconds=0.5,
               ttftSeconds=0.4, kvCacheUtilization=kv)
    return AutoscalerLoop(kube, source, clock=lambda: 1_000_000.0, namespaces=["ns"]).tick()[("ns", "m")].replicas


def serving_deployment(replicas: int) -> dict[str, Any]:
    """The single-node Deployment a ModelDeployment ran before a spec edit made it multi-node."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m", "namespace": "ns", "ownerReferences": [{"uid": "u", "name": "m"}]},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas, "readyReplicas": replicas}}


def test_a_switch_to_multi_node_retires_the_deployment_only_once_the_groups_are_ready() -> None:
    old = serving_deployment(2)
    kube = FakeKube(raw(), copy.deepcopy(GPU_NODE), old, served=("LeaderWorkerSet",))
    reconciler = Reconciler(kube, image_registry="")
    first = reconcile(kube, reconciler)
    assert first["apply LeaderWorkerSet"] == 1 and first["scale Deployment"] == 0
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 2, "still serving meanwhile"

    lws = kube.objects[("LeaderWorkerSet", "ns", "m")]
    lws["status"] = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    kube.store(lws)
    assert reconcile(kube, reconciler)["scale Deployment"] == 1
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 0
    assert ("Deployment", "ns", "m") in kube.objects, "scaled to zero, never deleted"
    (event,) = [e for e in kube.events if e[0] == "WorkloadReplaced"]
    assert "kubectl delete deployment m -n ns" in event[1]
    assert reconcile(kube, reconciler)["scale Deployment"] == 0


def test_a_switch_to_multi_node_under_the_autoscaler_starts_at_the_count_being_served() -> None:
    # Five single-node replicas under the autoscaler; a spec edit (generation 2) makes each one multi-node.
    # spec.replicas is frozen at 1 and the decision (generation 1) is stale: the groups must start at 5.
    autoscaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "tokensPerSecondPerReplica": 1000.0,
                   "scaleDownStabilizationSeconds": 120}
    body = raw(replicas=1, autoscaling=autoscaling)
    body["metadata"]["generation"] = 2
    body["status"] = {"autoscaler": {"desiredReplicas": 5, "generation": 1}}
    old = serving_deployment(5)
    kube = FakeKube(body, copy.deepcopy(GPU_NODE), old, served=("LeaderWorkerSet",))
    reconciler = Reconciler(kube, image_registry="")
    reconcile(kube, reconciler)
    assert kube.objects[("LeaderWorkerSet", "ns", "m")]["spec"]["replicas"] == 5

    # The autoscaler now reads the groups' count: it holds 5, not spec.replicas' 1.
    assert first_decision(kube, tokens=4000, requests=20, kv=0.5) == 5

    # One group ready is not five: the Deployment keeps serving until all are.
    lws = kube.objects[("LeaderWorkerSet", "ns", "m")]
    lws["status"] = {"replicas": 5, "readyReplicas": 1, "updatedReplicas": 5}
    kube.store(lws)
    assert reconcile(kube, reconciler)["scale Deployment"] == 0
    assert kube.objects[("Deployment", "ns", "m")]["spec"]["replicas"] == 5


def test_an_fp8_kv_cache_on_a_gpu_without_fp8_is_refused() -> None:
    body = raw("A100-80GB", 8, profile="Llama-3.1-8B", engine={"precision": "bf16", "kvCachePrecision": "fp8"})
    problems = Reconciler(FakeKube(body), image_registry="").problems(md_of(body))
    (problem,) = [p for p in problems if p.reason == "PrecisionUnsupported"]
    assert "FP8 KV cache" in problem.message and "kvCachePrecision auto" in problem.message
