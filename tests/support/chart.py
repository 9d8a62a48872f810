"""The Helm chart for tests: `helm` (the binary scripts/build-control-plane.sh builds) with its own homes,
rendering, and the vendored prometheus-operator CRDs."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import KUBE_VERSION, REPO_ROOT, ControlPlane, binary

CHART = REPO_ROOT / "charts" / "tokenworks"
MONITORING_CRDS = REPO_ROOT / "tests" / "fixtures" / "crds" / "monitoring.coreos.com"
# The release the component suites install the operator's RBAC as: the names operator/ uses.
RELEASE = "tokenworks"
RELEASE_NAMESPACE = "tokenworks-system"

Manifest = dict[str, Any]


@functools.cache
def _helm_home() -> Path:
    """Helm's cache, config and data in a directory of their own: a test never reads or writes the user's."""
    home = Path(tempfile.mkdtemp(prefix="tokenworks-helm-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    home = _helm_home()
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    env.pop("KUBECONFIG", None)
    argv = [str(binary("helm")), *args, *([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def values_file(values: Mapping[str, Any], directory: Path | None = None) -> Path:
    handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=directory)
    with os.fdopen(handle, "w") as out:
        yaml.safe_dump(dict(values), out)
    return Path(name)


def template(values: Mapping[str, Any] | None = None, *, chart: Path = CHART, release: str = RELEASE,
             namespace: str = RELEASE_NAMESPACE, show_only: Sequence[str] = (),
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """`helm template` against the Kubernetes version the tests run (the chart's kubeVersion is checked)."""
    args = ["template", release, str(chart), f"--namespace={namespace}", f"--kube-version={KUBE_VERSION}"]
    path = values_file(values) if values else None
    try:
        if path:
            args.append(f"--values={path}")
        args += [f"--show-only={name}" for name in show_only]
        return helm(*args, check=check)
    finally:
        if path:
            path.unlink()


def render(values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(template(values, **kwargs).stdout) if d]


@functools.cache
def operator_rbac_and_crd() -> str:
    """The ServiceAccount, RBAC and CRD of the chart's default rendering (cluster-wide), as YAML: what
    the component suites run the operator with. The Deployment is left out: no kubelet runs pods here."""
    return template(show_only=("templates/serviceaccount.yaml", "templates/rbac.yaml",
                               "templates/crd-modeldeployments.yaml")).stdout


def install_monitoring_crds(plane: ControlPlane, plurals: Sequence[str] = (
        "podmonitors", "servicemonitors", "prometheusrules")) -> None:
    """The vendored prometheus-operator CRDs (idempotent), by plural. Server-side: the CRDs are too large
    for client-side apply's last-applied annotation."""
    paths = [MONITORING_CRDS / f"monitoring.coreos.com_{plural}.yaml" for plural in plurals]
    for path in paths:
        plane.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tokenworks-tests",
                      "-f", str(path))
    for plural in plurals:
        plane.kubectl("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com",
                      "--timeout=30s")
