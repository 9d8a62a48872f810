"""Start emulator processes on free loopback ports for tests and benchmarks: either a twin of a rendered
pod (its own command line and model repository) or quick mode from flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from crds.models import ModelDeployment
from inference_pods.emulator.pod import lay_out, materialize, server_env
from tests.support.controlplane import REPO_ROOT, free_port


def pod_deployment(backend: str = "llmapi", **spec: Any) -> ModelDeployment:
    """A ModelDeployment on free loopback ports (an 8B model on one H100 unless ``spec`` says else)."""
    body: dict[str, Any] = {
        "model": {"name": "llama-3-1-8b", "profile": "Llama-3.1-8B", "huggingFace": "meta-llama/Llama-3.1-8B"},
        "engine": {"backend": backend},
        "gpu": {"product": "H100-SXM"},
        "ports": {"http": free_port(), "grpc": free_port(), "metrics": free_port(), "openai": free_port()},
        **spec,
    }
    return ModelDeployment.model_validate({"metadata": {"name": "twin", "namespace": "test", "uid": "u"},
                                           "spec": body})


@dataclass
class EmulatorProcess:
    args: list[str] = field(default_factory=list)  # emulator flags (time scale, load seconds, quick mode)
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    command: list[str] | None = None  # the pod's container command line (twin mode)
    root: Path | None = None
    host: str = "127.0.0.1"  # a pod's own loopback address, as a node agent would give it
    process: subprocess.Popen[bytes] | None = None
    openai_port: int = 0  # the OpenAI frontend's port, where the pod runs it (metrics are served there)
    env: dict[str, str] = field(default_factory=dict)  # the server container's own environment

    @classmethod
    def twin(cls, md: ModelDeployment, args: list[str] | None = None, log_path: Path | None = None
             ) -> EmulatorProcess:
        """The emulator started from ``md``'s rendered pod: the operator's prepare script lays out the
        repository, then the Triton container's command line starts it."""
        root = Path(tempfile.mkdtemp(prefix="tokenworks-pod-"))
        command, prepared = materialize(md, root)
        if prepared.returncode:
            raise RuntimeError(f"prepare failed: {prepared.termination_message or prepared.output}")
        ports = md.spec.ports
        openai = ports.openai if md.spec.serving.frontend == "openai" else 0
        return cls(list(args or []), log_path, ports.http, ports.grpc, 0 if openai else ports.metrics, command, root,
                   openai_port=openai, env=server_env(md))

    @classmethod
    def from_pod(cls, pod_template: dict[str, Any], config_data: dict[str, str], host: str,
                 args: list[str] | None = None, log_path: Path | None = None) -> EmulatorProcess:
        """A twin of a pod as the API server holds it: the ConfigMap's files where the pod template's
        volume mounts them, the prepare step run as its init container, then its Triton container's
        own command line, on the pod's own address."""
        spec = pod_template["spec"]
        (container,) = [c for c in spec["containers"] if c["name"] == "triton"]
        volume = next(v for v in spec["volumes"] if v["name"] == "engine-config")
        root = Path(tempfile.mkdtemp(prefix="tokenworks-pod-"))
        prepared = lay_out(root, config_data, volume["configMap"]["items"])
        if prepared.returncode:
            raise RuntimeError(f"prepare failed: {prepared.termination_message or prepared.output}")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        return cls(list(args or []), log_path, ports["http"], ports["grpc"], ports.get("metrics", 0),
                   list(container["command"]), root, host, openai_port=ports.get("openai", 0), env=env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.openai_port}"

    @property
    def metrics_target(self) -> str:
        return f"{self.host}:{self.openai_port or self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_target}/metrics"

    def argv(self) -> list[str]:
        base = [sys.executable, "-m", "inference_pods.emulator", f"--host={self.host}", *self.args]
        if self.command is not None:
            return [*base, f"--root={self.root}", "--", *self.command]
        return [*base, f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                f"--metrics-port={self.metrics_port}"]

    def start(self, wait_ready: bool = True) -> EmulatorProcess:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        finally:
            if self.log_path and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.process.returncode}")
            try:
                response = httpx.get(f"{self.url}/v2/health/live", timeout=1)
                if response.status_code == 200 and (not wait_ready or httpx.get(
                        f"{self.url}/v2/health/ready", timeout=1).status_code == 200):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("emulator did not start")

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
