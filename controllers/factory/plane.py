"""A real Kubernetes control plane on loopback, for the tests and the factory: etcd + kube-apiserver,
optionally the controller manager, the scheduler and KWOK with fake GPU nodes (the equivalent of
controller-runtime's envtest).

Binaries come from ``scripts/build-control-plane.sh`` (cached outside the repository). Every
component listens on loopback only, on free ports, under a temporary directory; each one's log is
kept in ``<workdir>/logs/<component>.log``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KUBE_VERSION = os.environ.get("TOKENWORKS_KUBE_VERSION", "v1.36.3")
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-control-plane.sh"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ControlPlaneError(RuntimeError):
    """A component could not be started; the message names it and quotes its log."""


def default_bin_dir() -> Path:
    cache = os.environ.get("TOKENWORKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tokenworks"
    )
    return Path(cache) / "bin" / f"k8s-{KUBE_VERSION}"


def binary(name: str, bin_dir: Path | None = None) -> Path:
    path = (bin_dir or default_bin_dir()) / name
    if not os.access(path, os.X_OK):
        raise ControlPlaneError(
            f"{name}: binary not found at {path}; build the control plane with "
            f"`{BUILD_SCRIPT.relative_to(REPO_ROOT)}` (or `./dev test`, which runs it)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class GpuNodeSpec:
    """One KWOK node; ``gpus`` is both capacity and allocatable of ``nvidia.com/gpu``."""

    name: str
    gpus: int = 8
    product: str = "NVIDIA-H100-80GB-HBM3"
    cpu: str = "192"
    memory: str = "2Ti"
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            GPU_RESOURCE: str(self.gpus),
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    GPU_PRODUCT_LABEL: self.product,
                    "nvidia.com/gpu.count": str(self.gpus),
                    **self.labels,
                },
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }


def default_gpu_nodes() -> list[GpuNodeSpec]:
    return [
        GpuNodeSpec("gpu-h100-0"),
        GpuNodeSpec("gpu-h100-1"),
        GpuNodeSpec("gpu-h200-0", product="NVIDIA-H200"),
    ]


class Component:
    """One control-plane process in its own process group, so teardown leaves nothing behind."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # a restarted component keeps its earlier log
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; fail fast (naming the component) if the process exits."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{self.name} exited with code {code} while starting "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except Exception as error:  # not up yet: connection refused, 503...
                last_error = error
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{self.name} did not become {what} within {timeout:.0f}s (last check: {last_error!r}; "
            f"log {self.log_path}):\n{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Pki:
    """A throwaway CA, an apiserver serving certificate and the service-account signing key."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_pub: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)

        def key() -> rsa.RSAPrivateKey:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def write_key(k: rsa.RSAPrivateKey, path: Path) -> None:
            path.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )

        ca_key = key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenworks-test-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        serving_key = key()
        serving = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(serving_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        pki = cls(
            ca_cert=directory / "ca.crt",
            serving_cert=directory / "apiserver.crt",
            serving_key=directory / "apiserver.key",
            service_account_key=directory / "sa.key",
            service_account_pub=directory / "sa.pub",
        )
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
        write_key(serving_key, pki.serving_key)
        sa_key = key()
        write_key(sa_key, pki.service_account_key)
        pki.service_account_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pki


class ControlPlane:
    """etcd + kube-apiserver (RBAC on); ``start_full`` adds controller manager, scheduler, KWOK."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir or default_bin_dir()
        self.components: list[Component] = []
        self.admin_token = secrets.token_hex(16)
        self.scheduler_token = secrets.token_hex(16)
        self.api_port = 0
        self.pki: Pki | None = None
        self.full = False

    # -- paths -----------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    def audit_writes(self) -> list[dict[str, Any]]:
        """Successful, persisted writes from the audit log (dry runs excluded), oldest first."""
        writes = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open() as log:
            for line in log:
                event = json.loads(line)
                code = (event.get("responseStatus") or {}).get("code", 0)
                if event.get("stage") == "ResponseComplete" and 200 <= code < 300 \
                        and "dryRun=" not in event.get("requestURI", ""):
                    writes.append(event)
        return writes

    def apiserver(self) -> Component:
        return next(c for c in self.components if c.name == "kube-apiserver")

    def stop_apiserver(self) -> None:
        """Kill the API server (SIGKILL: connections are cut, not drained)."""
        process = self.apiserver().process
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def start_apiserver(self) -> None:
        """Start it again on the same port, certificates and etcd."""
        apiserver = self.apiserver()
        apiserver.start()
        apiserver.wait_until(self._apiserver_ready, timeout=90, what="ready again (/readyz)")

    def outage(self, seconds: float) -> None:
        """The API server down for ``seconds``: the fault's length is the point, so this one waits."""
        self.stop_apiserver()
        try:
            time.sleep(seconds)
        finally:
            self.start_apiserver()

    def pause_apiserver(self, paused: bool) -> None:
        """SIGSTOP/SIGCONT: a hung API server (or load balancer) that accepts and never answers."""
        process = self.apiserver().process
        assert process is not None
        os.killpg(process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def bin(self, name: str) -> Path:
        return binary(name, self.bin_dir)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        try:
            self._start_etcd_and_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd_and_apiserver(self) -> None:
        # Resolve every binary first so a missing one fails before anything starts.
        etcd_bin, apiserver_bin = self.bin("etcd"), self.bin("kube-apiserver")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki = Pki.create(self.workdir / "pki")
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        etcd = self._component(
            "etcd",
            [
                str(etcd_bin),
                "--name=tokenworks-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=tokenworks-test=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",  # a test cluster: speed over durability
                "--log-level=warn",
            ],
        )
        etcd.wait_until(lambda: httpx.get(f"{etcd_url}/health", timeout=1).status_code == 200,
                        timeout=30, what="healthy")

        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},tokenworks-admin,uid-admin,"system:masters"\n'
            f"{self.scheduler_token},system:kube-scheduler,uid-scheduler\n"
        )
        self.api_port = free_port()
        audit_policy = self.workdir / "audit-policy.yaml"
        # Writes only (reads and watches are most requests): the chaos tests ask who wrote what, when.
        audit_policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
                      {"level": "None"}]}))
        apiserver = self._component(
            "kube-apiserver",
            [
                str(apiserver_bin),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                # As on OpenShift: setting blockOwnerDeletion needs update on the owner's finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--service-cluster-ip-range=10.0.0.0/16",  # room for a 1,000-model bench
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--v=1",
            ],
        )
        apiserver.wait_until(self._apiserver_ready, timeout=90, what="ready (/readyz)")
        self._write_kubeconfig(self.kubeconfig, self.admin_token, "tokenworks-admin")

    def _apiserver_ready(self) -> bool:
        assert self.pki is not None
        response = httpx.get(
            f"{self.server}/readyz",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            verify=ssl.create_default_context(cafile=str(self.pki.ca_cert)),
            timeout=2,
        )
        return response.status_code == 200

    def start_full(self, nodes: Iterable[GpuNodeSpec] | None = None, kwok: bool = True) -> None:
        """Add the controller manager, the scheduler and KWOK; register GPU nodes. Without ``kwok``
        (the factory, whose node agent runs the nodes) neither KWOK nor its nodes."""
        if self.full:
            return
        assert self.pki is not None
        manager_bin, scheduler_bin = self.bin("kube-controller-manager"), self.bin("kube-scheduler")
        manager_port = free_port()
        # The controller manager runs as cluster admin: with per-controller service-account
        # credentials it would also need the token machinery, which tests do not exercise.
        manager = self._component(
            "kube-controller-manager",
            [
                str(manager_bin),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={manager_port}",
                f"--service-account-private-key-file={self.pki.service_account_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--controllers=*,-nodeipam",  # nodelifecycle lifts the not-ready taint
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        manager_healthz = f"https://127.0.0.1:{manager_port}/healthz"
        manager.wait_until(lambda: httpx.get(manager_healthz, verify=False, timeout=2).status_code
                           == 200, timeout=60, what="healthy")

        scheduler_kubeconfig = self.workdir / "scheduler.kubeconfig"
        self._write_kubeconfig(scheduler_kubeconfig, self.scheduler_token, "system:kube-scheduler")
        scheduler_port = free_port()
        scheduler = self._component(
            "kube-scheduler",
            [
                str(scheduler_bin),
                f"--kubeconfig={scheduler_kubeconfig}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                "--v=1",
            ],
        )
        scheduler_healthz = f"https://127.0.0.1:{scheduler_port}/healthz"
        scheduler.wait_until(lambda: httpx.get(scheduler_healthz, verify=False, timeout=2)
                             .status_code == 200, timeout=60, what="healthy")
        if not kwok:
            self.full = True
            return

        fake_nodes = self._component(
            "kwok",
            [
                str(self.bin("kwok")),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--manage-nodes-with-label-selector=",
                "--cidr=10.128.0.1/16",  # pod IPs for a 1,000-model bench, apart from the Service range
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self.full = True
        self.add_nodes(nodes if nodes is not None else default_gpu_nodes(), fake_nodes)

    def add_nodes(self, nodes: Iterable[GpuNodeSpec], kwok: Component | None = None) -> None:
        kwok = kwok or next(c for c in self.components if c.name == "kwok")
        names = []
        for node in nodes:
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump(node.manifest()))
            names.append(node.name)

        def all_ready() -> bool:
            # All nodes, not `get nodes NAME...`: one name returns the object, not a list with items.
            out = self.kubectl(
                "get", "nodes",
                "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=='Ready')].status}"
                " {end}",
            )
            ready = dict(pair.split("=", 1) for pair in out.split())
            return all(ready.get(name) == "True" for name in names)

        kwok.wait_until(all_ready, timeout=60, what=f"ready on nodes {names}")

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self.logs / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    # -- clients ---------------------------------------------------------------------------
    def _write_kubeconfig(self, path: Path, token: str, user: str) -> None:
        assert self.pki is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tokenworks-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki.ca_cert)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "tokenworks-test", "context": {
                "cluster": "tokenworks-test", "user": user}}],
            "current-context": "tokenworks-test",
        }
        path.write_text(yaml.safe_dump(config))

    def kubeconfig_for_token(self, token: str, path: Path, user: str = "token-user") -> Path:
        self._write_kubeconfig(path, token, user)
        return path

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` as admin, or as the bearer of ``token``."""
        from kubernetes import client

        assert self.pki is not None
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.pki.ca_cert)
        configuration.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(configuration)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> str:
        result = subprocess.run(
            [str(self.bin("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def keep_or_remove(self, keep: bool) -> None:
        """Keep the work directory (logs, etcd data) for a post-mortem, else delete it."""
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
