"""Run the real operator as a subprocess, as its own ServiceAccount with the Helm chart's RBAC."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from kubernetes import client

from tests.support.chart import operator_rbac_and_crd
from tests.support.controlplane import REPO_ROOT, ControlPlane, free_port

OPERATOR_NAMESPACE = "tokenworks-system"
OPERATOR_ACCOUNT = "tokenworks-operator"


def install_api_and_rbac(plane: ControlPlane) -> None:
    """The namespace, and the CRD, ServiceAccount and RBAC as the Helm chart renders them by default
    (cluster-wide, release `tokenworks` in tokenworks-system; idempotent): every suite that runs the
    operator as its ServiceAccount exercises the chart's RBAC, which tests/unit/test_chart.py holds equal
    to operator/rbac.yaml."""
    plane.kubectl("apply", "-f", str(REPO_ROOT / "operator" / "namespace.yaml"))
    plane.kubectl("apply", "-f", "-", input=operator_rbac_and_crd())
    plane.kubectl("wait", "--for=condition=Established",
                  "crd/modeldeployments.tokenworks.dev", "--timeout=30s")


def service_account_token(plane: ControlPlane, account: str = OPERATOR_ACCOUNT,
                          namespace: str = OPERATOR_NAMESPACE) -> str:
    token: str = client.CoreV1Api(plane.api_client()).create_namespaced_service_account_token(
        account, namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=24 * 3600)),
    ).status.token
    return token


def service_account_kubeconfig(plane: ControlPlane, path: Path) -> Path:
    return plane.kubeconfig_for_token(service_account_token(plane), path,
                                      user=f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}")


class OperatorProcess:
    """`tokenworks operator run` in a subprocess with its own log, metrics and health ports."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path, name: str, lease_duration: int = 6,
                 resync_seconds: float = 30, launcher: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, cwd: Path = REPO_ROOT,
                 extra_args: tuple[str, ...] = ()) -> None:
        """``launcher`` goes before the command (e.g. a sandbox that execs its arguments); ``env``
        replaces the inherited environment; ``extra_args`` go after it."""
        self.name = name
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.log_path = plane.logs / f"operator-{name}.log"
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.argv = [
            *launcher, sys.executable, "-m", "controllers.cli", "operator", "run",
            f"--kubeconfig={kubeconfig}", f"--identity={name}",
            f"--lease-duration={lease_duration}", f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}", f"--resync-seconds={resync_seconds}", *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.cwd, start_new_session=True,
                                            env={**self.env, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator {self.name} exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).is_success:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"operator {self.name} did not serve /healthz: {self.log_tail()}")

    def is_leader(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1)
        except httpx.HTTPError:
            return False
        return bool(response.json()["leader"])

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a metric's samples from the operator's /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#") and labels in line:
                sample = line.split("{")[0].split(" ")[0]
                if sample == name:
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def user_agent(self) -> str:
        """What its requests carry (the audit log's userAgent)."""
        return f"tokenworks-operator/{self.name}"

    def pause(self, paused: bool) -> None:
        """SIGSTOP/SIGCONT: a process that hangs (a frozen VM, a long GC pause) and comes back."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def health(self) -> tuple[int, dict[str, object]]:
        response = httpx.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2)
        return response.status_code, response.json()

    def kill(self) -> None:
        """SIGKILL: no lease release, no cleanup, like a node dying."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
