"""The operator starts, leads and reconciles with no writable temporary directory, as in its image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.operator import OperatorProcess, install_api_and_rbac, service_account_kubeconfig
from tests.support.waiting import eventually

# operator/manager.yaml sets readOnlyRootFilesystem; its emptyDir at /tmp is the only writable place.
# Here no place is: in a private mount namespace every directory `tempfile` would try (TMPDIR and its
# kin unset, /tmp, /var/tmp, /usr/tmp, then the working directory, /tmp) is bound read-only. Read-only
# mounts stop root too, where file modes would not.
SANDBOX = """
set -e
for dir in /tmp /var/tmp /usr/tmp; do
  if [ -d "$dir" ]; then mount --bind "$dir" "$dir"; mount -o remount,bind,ro "$dir"; fi
done
cd /tmp
exec "$@"
"""
LAUNCHER = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "read-only-tmp"]


def sandbox_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    # The working directory is /tmp, so the repository must be found through the path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_sandboxed(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAUNCHER, *argv], capture_output=True, text=True, timeout=60, env=sandbox_env(),
                          check=False)


@pytest.fixture
def read_only_tmp() -> None:
    """Skip where a mount namespace cannot be made (not root, no CAP_SYS_ADMIN, no unshare): CI may
    run unprivileged. Fail if the sandbox leaves a usable temporary directory: the test would prove
    nothing."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = run_sandboxed("true")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount /tmp read-only in a private mount namespace (needs root or "
                    f"CAP_SYS_ADMIN): {probe.stderr.strip()}")
    python = run_sandboxed(sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())")
    assert python.returncode != 0 and "No usable temporary directory" in python.stderr, (
        f"the sandbox left a writable temporary directory: {python.stdout.strip() or python.stderr}")


@pytest.fixture
def sandboxed_operator(full_control_plane: ControlPlane, read_only_tmp: None) -> Iterator[OperatorProcess]:
    install_api_and_rbac(full_control_plane)
    kubeconfig = service_account_kubeconfig(full_control_plane,
                                            full_control_plane.workdir / "read-only.kubeconfig")
    process = OperatorProcess(full_control_plane, kubeconfig, "read-only-tmp", launcher=LAUNCHER,
                              env=sandbox_env())
    try:
        yield process
    finally:
        process.stop()


def test_the_operator_leads_and_reconciles_without_a_writable_temp_dir(
    full_control_plane: ControlPlane, sandboxed_operator: OperatorProcess, namespace: str
) -> None:
    sandboxed_operator.start()  # the operator used to exit here: "No usable temporary directory"
    # A dead leader of an earlier test may hold the Lease until it expires.
    eventually(sandboxed_operator.is_leader, timeout=30)
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "fixed-replicas.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    full_control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    apps = client.AppsV1Api(full_control_plane.api_client())
    eventually(lambda: apps.read_namespaced_deployment("llama-8b-fixed", namespace).spec.replicas == 2, timeout=30)
    custom = client.CustomObjectsApi(full_control_plane.api_client())

    def status_written() -> bool:
        obj = custom.get_namespaced_custom_object("tokenworks.dev", "v1alpha1", namespace, "modeldeployments",
                                                  "llama-8b-fixed")
        return bool((obj.get("status") or {}).get("observedGeneration"))

    eventually(status_written, timeout=30)
    assert sandboxed_operator.process is not None and sandboxed_operator.process.poll() is None
    log = sandboxed_operator.log_path.read_text()
    assert "Traceback" not in log and "error=" not in log, sandboxed_operator.log_tail()
