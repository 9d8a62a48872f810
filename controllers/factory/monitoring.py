"""Prometheus for the factory: scrape configs written from the PodMonitors in the cluster, as the
Prometheus Operator writes them, so the factory's Prometheus discovers pods through
``kubernetes_sd_configs`` from the same intent a cluster's Prometheus Operator reads.

Per PodMonitor endpoint, the job the operators generate (prometheus-operator `pkg/prometheus/promcfg.go`;
the same scheme is spelled out in VictoriaMetrics/operator
`internal/controller/operator/factory/vmagent/podscrape_test.go@bb39c86d`): pod role discovery in the
PodMonitor's namespace; drop Failed and Succeeded pods; keep the selector's labels and the endpoint's
named port; `namespace`, `container`, `pod`, `job` (`<namespace>/<name>`) and `endpoint` labels; each of
`podTargetLabels` copied under its sanitised name (``tokenworks.dev/model-deployment`` becomes
``tokenworks_dev_model_deployment``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]


def sanitise(label: str) -> str:
    """A Kubernetes label key as Prometheus' service discovery names it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_monitor_jobs(monitor: Manifest, kubeconfig: Path, interval: str | None = None) -> list[Manifest]:
    """One scrape config per endpoint of ``monitor``; ``interval`` overrides the endpoints' own (the
    factory compresses time)."""
    meta, spec = monitor["metadata"], monitor.get("spec") or {}
    namespace, name = meta["namespace"], meta["name"]
    names = (spec.get("namespaceSelector") or {}).get("matchNames") or [namespace]
    selector_relabels: list[Manifest] = []
    for key, value in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()):
        selector_relabels += [
            {"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{sanitise(key)}",
                                                 f"__meta_kubernetes_pod_labelpresent_{sanitise(key)}"],
             "regex": f"({re.escape(value)});true"}]
    jobs = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        relabels: list[Manifest] = [
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            *selector_relabels,
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": endpoint["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            *({"source_labels": [f"__meta_kubernetes_pod_label_{sanitise(label)}"], "target_label": sanitise(label),
               "regex": "(.+)", "replacement": "${1}"} for label in spec.get("podTargetLabels") or []),
            {"target_label": "job", "replacement": f"{namespace}/{name}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
        jobs.append({
            "job_name": f"podMonitor/{namespace}/{name}/{index}",
            "honor_labels": False,
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig),
                                       "namespaces": {"names": names}}],
            "scrape_interval": interval or endpoint.get("interval", "30s"),
            "metrics_path": endpoint.get("path", "/metrics"),
            "relabel_configs": relabels,
        })
    return jobs


def prometheus_config(monitors: list[Manifest], kubeconfig: Path, interval: str,
                      operator_targets: list[str], rule_files: list[Path] | None = None) -> Manifest:
    """The whole config: the operator's own job (``honor_labels``: its series name the ModelDeployments
    they describe with ``namespace``) and every PodMonitor's."""
    jobs: list[Manifest] = [{
        "job_name": "tokenworks-operator", "honor_labels": True, "scrape_interval": interval,
        "static_configs": [{"targets": operator_targets}],
    }]
    for monitor in sorted(monitors, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"])):
        jobs += pod_monitor_jobs(monitor, kubeconfig, interval)
    config: Manifest = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                        "scrape_configs": jobs}
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    return config
