"""The node agent's pod lifecycle without a cluster: a container that ignores SIGTERM is killed when its grace
period ends, and a status write that failed is written again on the next pass."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controllers.nodeagent import AgentNode, NodeAgent, PodRuntime


class Core:
    """Records what the agent writes; ``fail`` status writes are refused first."""

    def __init__(self, fail: int = 0) -> None:
        self.deleted: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.fail = fail

    def delete_namespaced_pod(self, name: str, namespace: str, body: Any) -> None:
        self.deleted.append((namespace, name))

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ApiException(status=500, reason="etcdserver: request timed out")
        self.statuses.append(body["status"])


def agent(core: Core) -> tuple[NodeAgent, AgentNode]:
    node = AgentNode("n", "NVIDIA-H100-80GB-HBM3")
    running = NodeAgent(client.ApiClient(), [node], Path(tempfile.mkdtemp()))
    running.core = core  # type: ignore[assignment]
    return running, node


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
       "spec": {"nodeName": "n", "containers": [{"name": "triton",
                                                 "lifecycle": {"preStop": {"sleep": {"seconds": 0}}}}]},
       "status": {"phase": "Running"}}


def test_a_container_ignoring_sigterm_is_killed_at_the_end_of_its_grace() -> None:
    core = Core()
    running, node = agent(core)
    # SIGTERM ignored, and the disposition survives the exec; "ready" once it is in place.
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; echo ready; exec sleep 60"], start_new_session=True,
                                stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    runtime = PodRuntime("u", "ns", "p", node, "127.64.0.2", Path(tempfile.mkdtemp()), process=stubborn)
    started = time.monotonic()
    running._terminate(runtime, POD, grace=1.5)
    elapsed = time.monotonic() - started
    assert stubborn.stdout is not None
    stubborn.stdout.close()
    assert stubborn.returncode == -9 and 1.4 <= elapsed < 4, elapsed
    assert core.deleted == [("ns", "p")]


def test_a_failed_status_write_is_retried_until_it_lands() -> None:
    core = Core(fail=2)
    running, node = agent(core)
    exited = subprocess.Popen(["true"])
    exited.wait()
    runtime = PodRuntime("u", "ns", "p", node, "127.64.0.2", Path(tempfile.mkdtemp()), process=exited,
                         start_pending=False, started=True, ready=True, phase="Running")
    running.pods["u"] = runtime
    for _ in range(3):  # two refused writes, then the third lands: the pod is Failed, not Ready
        with contextlib.suppress(ApiException):
            running._sync_pod("u", POD)
    assert len(core.statuses) == 1
    status = core.statuses[0]
    assert status["phase"] == "Failed"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"
